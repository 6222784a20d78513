"""Numerical phantoms and MR signal simulation with known ground truth.

:func:`head_phantom` builds a head with brain tissues, deep grey nuclei, veins and lesions;
:func:`simulate_gre` turns any such phantom into multi-echo gradient-echo magnitude and phase.
"""

from qsmkit.phantom.gre import GRESimulation, dipole_fields_ppm, simulate_gre
from qsmkit.phantom.head import HeadPhantom, head_phantom

__all__ = ["GRESimulation", "HeadPhantom", "dipole_fields_ppm", "head_phantom", "simulate_gre"]
