"""Numerical phantoms and MR signal simulation with known ground truth.

:func:`head_phantom` builds a head with brain tissues, deep grey nuclei, veins and lesions;
:func:`simulate_gre` turns any such phantom into multi-echo gradient-echo magnitude and phase;
:func:`liver_phantom` and :func:`simulate_liver_gre` do the same for an abdomen slab with
chemical-shift-encoded (fat-water) signal.
"""

from qsmkit.phantom.gre import GRESimulation, dipole_fields_ppm, simulate_gre
from qsmkit.phantom.head import HeadPhantom, head_phantom
from qsmkit.phantom.liver import liver_phantom, simulate_liver_gre, write_liver_simulation

__all__ = [
    "GRESimulation",
    "HeadPhantom",
    "dipole_fields_ppm",
    "head_phantom",
    "liver_phantom",
    "simulate_gre",
    "simulate_liver_gre",
    "write_liver_simulation",
]
