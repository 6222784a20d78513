"""Choose the brain-mask method from the field of view, and the mask stage of the pipeline.

``auto`` looks at the head (the voxels above the log-Otsu background level, holes filled,
largest component) and decides:

* **cropped field of view** -> ``robust``: the head covers more than ``CROP_FACE_COVER`` of
  at least ``CROP_FACES`` of the six faces of the grid (a crop inside the brain covers all
  six; a whole head leaves the grid only through the neck, one face). A surface model needs
  a head it can close around; the threshold mask needs no skull.
* **no skull** -> ``robust``: fewer than ``SKULL_DARK_FRACTION`` of the head voxels in its
  outer ``SKULL_LAYER_MM`` are darker than ``SKULL_DARK_LEVEL`` times the median head
  intensity. A head has a dark shell of bone (and air in the sinuses) under the scalp; a
  phantom of brain tissue in air has none, and its edge is the brain edge.
* otherwise (a whole head with skull) -> ``bet`` (:func:`qsmkit.masking.bet`).

:func:`brain_mask` is the mask stage as :func:`qsmkit.pipeline.run_qsm` runs it: the chosen
method on the echo-combined magnitude, then, for whole heads, the phase-quality trim
(:func:`qsmkit.masking.phase_quality`) that removes voxels with unreliable phase near air,
bone and at low SNR, as the consensus on clinical QSM recommends (the mask should exclude
regions of unreliable phase, not only extra-cerebral tissue).

References
----------
QSM Consensus Organization Committee. Recommended implementation of quantitative
susceptibility mapping for clinical research in the brain: a consensus of the ISMRM
electro-magnetic tissue properties study group. Magn Reson Med 2024;91:1834-1862.
Smith SM. Fast robust automated brain extraction. Hum Brain Mapp 2002;17:143-155.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.ndimage as ndi

from qsmkit.errors import InputError
from qsmkit.masking.bet import bet
from qsmkit.masking.phase_quality import phase_quality
from qsmkit.masking.robust import (
    check_voxel_size,
    combine_echoes,
    fill_holes,
    largest_component,
    log_otsu,
    robust,
)

CROP_FACE_COVER = 0.25
"""Share of a face of the grid that the head must cover for that face to count as cut."""
CROP_FACES = 3
"""Number of cut faces from which the field of view counts as a crop (a neck cuts one)."""
SKULL_LAYER_MM = 20.0
"""Depth (mm) below the head surface searched for the dark skull."""
SKULL_DARK_LEVEL = 0.3
"""Fraction of the median head intensity below which a voxel counts as dark (bone, air)."""
SKULL_DARK_FRACTION = 0.05
"""Share of dark voxels in the outer layer from which a skull counts as present."""


def describe_head(magnitude, voxel_size: Sequence[float]) -> dict:
    """Measures of the head in the field of view that :func:`choose_method` decides on.

    Returns
    -------
    dict
        ``face_cover``: share of each of the six grid faces covered by the head (x0, x1,
        y0, y1, z0, z1); ``cut_faces``: how many exceed ``CROP_FACE_COVER``;
        ``dark_shell_fraction``: share of dark voxels in the head's outer ``SKULL_LAYER_MM``.
    """
    vs = check_voxel_size(voxel_size)
    image = combine_echoes(magnitude)
    if not np.any(image > 0):
        raise InputError("magnitude is all zero; no mask can be found")
    head = largest_component(fill_holes(image > log_otsu(image)))
    cover = [float(np.take(head, i, axis=a).mean()) for a in range(3) for i in (0, -1)]
    depth = ndi.distance_transform_edt(np.pad(head, 1), sampling=vs)[1:-1, 1:-1, 1:-1]
    layer = head & (depth <= SKULL_LAYER_MM)
    level = float(np.median(image[head])) if head.any() else 0.0
    dark = float(np.mean(image[layer] < SKULL_DARK_LEVEL * level)) if layer.any() else 0.0
    return {"face_cover": [round(c, 4) for c in cover],
            "cut_faces": int(sum(c > CROP_FACE_COVER for c in cover)),
            "dark_shell_fraction": round(dark, 4)}


def choose_method(magnitude, voxel_size: Sequence[float]) -> tuple[str, dict]:
    """``("robust" | "bet", measures)``: BET for a whole head with skull, else robust."""
    measures = describe_head(magnitude, voxel_size)
    if measures["cut_faces"] >= CROP_FACES:
        reason = f"cropped field of view: the head fills {measures['cut_faces']} faces"
        name = "robust"
    elif measures["dark_shell_fraction"] < SKULL_DARK_FRACTION:
        reason = "no dark skull under the head surface (a phantom or a skull-stripped image)"
        name = "robust"
    else:
        reason = "whole head with skull in the field of view"
        name = "bet"
    return name, {**measures, "reason": reason}


def auto(magnitude, voxel_size: Sequence[float], **options) -> np.ndarray:
    """Brain mask by the method :func:`choose_method` picks; ``options`` go to that method.

    Parameters
    ----------
    magnitude : (X, Y, Z) or (X, Y, Z, E) array
    voxel_size : 3 floats, mm
    **options
        Keyword options of :func:`qsmkit.masking.bet` or :func:`qsmkit.masking.robust`.

    Returns
    -------
    mask : (X, Y, Z) bool array
    """
    name, _ = choose_method(magnitude, voxel_size)
    return (bet if name == "bet" else robust)(magnitude, voxel_size, **options)


def brain_mask(
    magnitude,
    voxel_size: Sequence[float],
    *,
    method: str = "auto",
    phase_rad=None,
    phase_threshold: float | None = None,
    **options,
) -> tuple[np.ndarray, dict]:
    """The pipeline's mask stage: a magnitude mask, trimmed by phase quality for whole heads.

    Parameters
    ----------
    magnitude : (X, Y, Z, E) or (X, Y, Z) array
        Per-echo magnitude (combined by root-sum-of-squares for the magnitude mask, used per
        echo for the phase quality).
    voxel_size : 3 floats, mm
    method : {"auto", "bet", "robust"}
    phase_rad : (X, Y, Z, E) array, radians, optional
        Wrapped phase of the same echoes; without it no phase-quality trim is made.
    phase_threshold : float in (0, 1) or 0, optional
        Minimum phase quality kept (:func:`qsmkit.masking.phase_quality`). Default 0.5 when
        the magnitude mask is ``bet`` (a whole head, whose edge meets air and bone) and no
        trim for ``robust`` (crops and phantoms); 0 disables the trim.
    **options
        Keyword options of the magnitude-mask method.

    Returns
    -------
    mask : (X, Y, Z) bool array
    info : dict
        ``method`` (the method used), ``choice`` (the measures behind an ``auto`` choice),
        ``magnitude_mask_voxels``, ``phase_threshold`` and ``phase_quality_removed_voxels``.
    """
    from qsmkit.masking import METHODS

    if method not in METHODS:
        raise InputError(f"unknown mask method {method!r}; choose one of {', '.join(METHODS)}")
    info: dict = {"requested": method}
    if method == "auto":
        method, info["choice"] = choose_method(magnitude, voxel_size)
    mask = METHODS[method](magnitude, voxel_size, **options)
    info.update(method=method, magnitude_mask_voxels=int(mask.sum()))
    if phase_threshold is None:
        phase_threshold = 0.5 if method == "bet" else 0.0
    if phase_rad is not None and phase_threshold > 0 and mask.any():
        trimmed = phase_quality(phase_rad, magnitude, mask, voxel_size,
                                threshold=phase_threshold)
        info["phase_quality_removed_voxels"] = int(mask.sum() - trimmed.sum())
        mask = trimmed
    info["phase_threshold"] = float(phase_threshold) if phase_rad is not None else None
    return mask, info
