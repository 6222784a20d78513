"""The QSM pipeline: mask -> multi-echo field fit -> unwrap -> background removal ->
dipole inversion -> referencing, plus R2*. Plain functions on arrays; no file I/O.

``run_qsm(acquisition, QSMConfig.preset("default"))`` returns a :class:`QSMResult` holding
every intermediate map. Methods are chosen by the names registered in each stage package.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

import numpy as np

from qsmkit.acquisition import Acquisition
from qsmkit.errors import InputError

log = logging.getLogger(__name__)

PRESETS: dict[str, dict] = {
    # Background removal is PDF in every preset: it keeps the whole mask (the cortex), where
    # V-SHARP erodes 10-15 % of a 1 mm brain (docs/bgremove.md, "Keeping the cortex").
    # Seconds on a laptop: Laplacian unwrapping, PDF, closed-form Tikhonov.
    "fast": dict(unwrap="laplacian", bgremove="pdf", invert="tikhonov"),
    # The recommended pipeline: complex fit, ROMEO-style unwrapping, PDF, weak-harmonic TV
    # (WH-QSM absorbs what PDF leaves or takes near the mask edge; docs/inversion.md,
    # "Choosing the default on realistic data"), with the weight chosen by GCV.
    "default": dict(unwrap="romeo", bgremove="pdf", invert="whtv"),
    # Slower, most accurate: MEDI with magnitude-derived edges (about 4 NRMSE points better
    # than TV on the phantom at any B0 direction; see docs/methods.md).
    "accurate": dict(unwrap="romeo", bgremove="pdf", invert="medi"),
    # For paramagnetic rim lesions (MS): iLSQR keeps rims about 1 mm thick, which the
    # total-variation penalties of whtv/tv/medi flatten into the lesion core (independent MS
    # head: rims 18/18 with iLSQR, 9/18 with whtv; docs/applications.md). Streaks are
    # estimated on the cone |D| < 0.15 (RTS's ill-conditioned region, Kames 2018), which lowers
    # the white-matter noise of thick oblique slices by a quarter (docs/applications.md).
    "rims": dict(unwrap="romeo", bgremove="pdf", invert="ilsqr",
                 invert_options={"threshold": 0.15}),
}


@dataclasses.dataclass
class QSMConfig:
    """Every choice of the pipeline; method names are those of the stage registries."""

    mask: str = "auto"
    mask_options: dict = dataclasses.field(default_factory=dict)
    fieldmap: str = "complex"
    unwrap: str = "romeo"
    unwrap_options: dict = dataclasses.field(default_factory=dict)
    bgremove: str = "pdf"
    bgremove_options: dict = dataclasses.field(default_factory=dict)
    invert: str = "whtv"
    invert_options: dict = dataclasses.field(default_factory=dict)
    reference: str = "brain"
    r2star: str = "loglinear"
    preset: str = "custom"

    @classmethod
    def preset_names(cls) -> list[str]:
        return list(PRESETS)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> QSMConfig:
        if name not in PRESETS:
            raise InputError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        given = {k: v for k, v in overrides.items() if v is not None}
        preset = {k: dict(v) if isinstance(v, dict) else v for k, v in PRESETS[name].items()}
        if given.get("invert", preset.get("invert")) != preset.get("invert"):
            preset.pop("invert_options", None)  # the preset's options are its method's
        values = {**preset, **given}
        return cls(preset=name, **values)

    preset_config = from_preset

    def validate(self) -> None:
        """Check every method name against the registries."""
        from qsmkit import bgremove, echo, inversion, masking, unwrap

        checks = [
            ("mask", self.mask, masking.METHODS, {"user"}),
            ("fieldmap", self.fieldmap, echo.FIELD_METHODS, set()),
            ("unwrap", self.unwrap, unwrap.METHODS, set()),
            ("bgremove", self.bgremove, bgremove.METHODS, set()),
            ("invert", self.invert, inversion.METHODS, set()),
            ("r2star", self.r2star, echo.R2STAR_METHODS, set()),
            ("reference", self.reference, {"brain": 0, "csf": 0, "none": 0}, set()),
        ]
        for stage, name, registry, extra in checks:
            if name not in registry and name not in extra:
                choices = ", ".join(sorted(set(registry) | extra))
                raise InputError(f"unknown {stage} method {name!r}; choose one of {choices}")


@dataclasses.dataclass
class QSMResult:
    """All maps of one reconstruction, on the acquisition grid."""

    chi_ppm: np.ndarray
    field_hz: np.ndarray
    local_field_hz: np.ndarray
    mask: np.ndarray
    local_mask: np.ndarray
    r2star_per_s: np.ndarray
    magnitude: np.ndarray
    fit_residual: np.ndarray | None
    config: QSMConfig
    timings_s: dict
    info: dict
    warnings: list = dataclasses.field(default_factory=list)
    """Findings of the quality gates (:class:`qsmkit.qc.QCWarning`), see :mod:`qsmkit.qc`."""


def combined_magnitude(magnitude: np.ndarray) -> np.ndarray:
    """Root-sum-of-squares over echoes (the SNR-optimal combination for similar noise)."""
    return np.sqrt(np.sum(np.square(magnitude, dtype=np.float32), axis=-1)).astype(np.float32)


def _stage(timings: dict, name: str, progress: Callable[[str], None] | None):
    class _Timer:
        def __enter__(self):
            if progress:
                progress(name)
            self.start = time.perf_counter()

        def __exit__(self, *exc):
            timings[name] = round(time.perf_counter() - self.start, 3)
            log.info("%s: %.2f s", name, timings[name])

    return _Timer()


def _normalised_weight(weight, mask):
    """Scale a data weight to mean 1 in the mask (keeps regularisation defaults meaningful)."""
    if weight is None:
        return None
    weight = np.where(mask, np.nan_to_num(weight, nan=0.0, posinf=0.0), 0).astype(np.float32)
    mean = float(weight[mask].mean()) if mask.any() else 0.0
    return weight / mean if mean > 0 else None


def estimate_field(acq: Acquisition, mask: np.ndarray, config: QSMConfig):
    """Total field (Hz, spatially unwrapped), a data weight and the fit residual."""
    from qsmkit import echo

    fit = echo.FIELD_METHODS[config.fieldmap](
        acq.magnitude, acq.phase, acq.echo_times_s, mask=mask, unwrap=config.unwrap,
        voxel_size=acq.voxel_size, unwrap_options=config.unwrap_options,
    )
    return fit.field_hz, fit.weight, fit.residual


def run_qsm(
    acq: Acquisition,
    config: QSMConfig | None = None,
    *,
    mask: np.ndarray | None = None,
    progress: Callable[[str], None] | None = None,
) -> QSMResult:
    """Reconstruct a susceptibility map (ppm) from a multi-echo GRE acquisition.

    Parameters
    ----------
    acq : Acquisition
    config : QSMConfig, default ``QSMConfig.from_preset("default")``
    mask : (X, Y, Z) bool, optional
        A user brain mask; replaces the automatic one.
    progress : callable, optional
        Called with each stage name as it starts.
    """
    from qsmkit import bgremove, echo, inversion, masking
    from qsmkit.reference import reference as reference_chi

    config = config or QSMConfig.from_preset("default")
    config.validate()
    voxel_size, b0_dir, b0 = acq.voxel_size, acq.b0_dir, float(acq.b0_tesla)
    timings: dict[str, float] = {}
    info: dict = {"voxel_size_mm": list(voxel_size), "b0_dir_voxel": b0_dir.tolist(),
                  "b0_tesla": b0, "echo_times_s": acq.echo_times_s.tolist(),
                  "notes": list(acq.notes)}
    magnitude = combined_magnitude(acq.magnitude)

    with _stage(timings, "mask", progress):
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != acq.shape:
                raise InputError(f"mask shape {mask.shape} does not match data {acq.shape}")
            config = dataclasses.replace(config, mask="user")
        else:
            # auto: BET for a whole head with skull, robust for crops and skull-less phantoms;
            # whole-head masks are trimmed where the phase is unreliable (docs/masking.md)
            mask, info["mask"] = masking.brain_mask(
                acq.magnitude, voxel_size, method=config.mask, phase_rad=acq.phase,
                **config.mask_options,
            )
        if not mask.any():
            raise InputError("the brain mask is empty; check the magnitude or give --mask")
        info["mask_voxels"] = int(mask.sum())

    with _stage(timings, "field", progress):
        field_hz, weight, residual = estimate_field(acq, mask, config)
        weight = _normalised_weight(weight, mask)

    with _stage(timings, "bgremove", progress):
        local = bgremove.METHODS[config.bgremove](
            field_hz, mask, voxel_size, b0_dir=b0_dir, weight=weight, **config.bgremove_options
        )
        if not local.mask.any():
            raise InputError(
                f"background removal ({config.bgremove}) eroded the whole mask; the brain is too "
                "small for its kernel radius: use --bgremove pdf or lbv"
            )

    with _stage(timings, "invert", progress):
        options = dict(config.invert_options)
        if config.invert == "medi":
            options.setdefault("magnitude", magnitude)
        if config.invert == "nltv":
            # phase scale of the nonlinear data term: the effective TE of the multi-echo fit
            from qsmkit.inversion.nltv import effective_echo_time

            options.setdefault("echo_time_s", effective_echo_time(
                acq.magnitude, acq.echo_times_s, mask))
            info["nltv_echo_time_s"] = float(options["echo_time_s"])
        # lam="auto" unless the user set it: chosen from the local field (docs/inversion.md)
        inv_weight = None if weight is None else weight * local.mask
        options, info["inversion"] = inversion.resolve_lambda(
            config.invert, options, local.field_hz, local.mask, voxel_size, b0_dir=b0_dir,
            b0_tesla=b0, weight=inv_weight,
        )
        chi = inversion.METHODS[config.invert](
            local.field_hz, local.mask, voxel_size, b0_dir=b0_dir, b0_tesla=b0,
            weight=inv_weight, **options,
        )

    with _stage(timings, "r2star", progress):
        if acq.n_echoes >= 2:
            r2 = echo.R2STAR_METHODS[config.r2star](acq.magnitude, acq.echo_times_s, mask=mask)
            r2star = np.where(mask, r2.r2star_per_s, 0).astype(np.float32)
        else:
            r2star = np.zeros(acq.shape, np.float32)
            info["notes"].append("single echo: no R2* map (zeros written); CSF referencing "
                                 "falls back to the magnitude")

    with _stage(timings, "reference", progress):
        # a single echo has no R2* (zeros): CSF is then found from the magnitude
        r2_for_csf = r2star if acq.n_echoes >= 2 else None
        ref_info = None
        if config.reference != "none":
            chi, ref_info = reference_chi(
                chi, local.mask, method=config.reference, r2star_per_s=r2_for_csf,
                magnitude=magnitude, voxel_size=voxel_size,
            )
            info["reference"] = ref_info
        chi = np.where(local.mask, chi, 0).astype(np.float32)
        # how chi is referenced, with the CSF and brain levels that convert it (ChiReference)
        from qsmkit.reference import reference_record

        info["chi_reference"] = reference_record(
            chi, local.mask, ref_info, voxel_size=voxel_size, r2star_per_s=r2_for_csf,
            magnitude=magnitude)

    from qsmkit import qc

    warnings = qc.judge_reconstruction(
        chi_ppm=chi, local_field_hz=np.where(local.mask, local.field_hz, 0), local_mask=local.mask,
        mask=mask, voxel_size=voxel_size, phase_rad=acq.phase, notes=acq.notes, weight=weight,
        fit_residual=residual, fieldmap=config.fieldmap,
    )
    return QSMResult(
        chi_ppm=chi,
        field_hz=np.where(mask, field_hz, 0).astype(np.float32),
        local_field_hz=np.where(local.mask, local.field_hz, 0).astype(np.float32),
        mask=mask,
        local_mask=local.mask,
        r2star_per_s=r2star,
        magnitude=magnitude,
        fit_residual=None if residual is None else np.asarray(residual, np.float32),
        config=config,
        timings_s=timings,
        info=info,
        warnings=warnings,
    )
