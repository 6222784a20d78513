"""Body imaging: fat–water separation, R2*, proton-density fat fraction and liver iron.

- :mod:`qsmkit.body.fatwater`: multi-peak chemical-shift-encoded fat–water separation with a
  joint field map and shared R2* (``FatWaterModel(echo_times_s, b0_tesla).fit(mag, phase)``).
- :mod:`qsmkit.body.liver_qsm`: liver QSM (air-aware total-field model, slab continued).
- :mod:`qsmkit.body.segment`: body, subcutaneous-fat and automatic liver masks.
- :mod:`qsmkit.body.liver`: fat-corrected and mono-exponential R2*, published R2*→LIC
  calibrations at 1.5 T and 3 T with their measurable range, the liver QSM chain and the
  per-region table written by ``qsmkit liver``.
"""

from qsmkit.body.fatwater import (
    FAT_PEAK_AMPLITUDES,
    FAT_PEAKS_PPM,
    FatWaterFit,
    FatWaterModel,
    chemical_shift_signal,
    fat_basis,
    pdff_percent,
)

__all__ = [
    "FAT_PEAKS_PPM",
    "FAT_PEAK_AMPLITUDES",
    "FatWaterFit",
    "FatWaterModel",
    "chemical_shift_signal",
    "fat_basis",
    "pdff_percent",
]
