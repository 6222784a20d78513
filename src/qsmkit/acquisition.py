"""The in-memory form of a multi-echo GRE scan, as every reader returns it."""

from __future__ import annotations

import dataclasses

import numpy as np

from qsmkit.errors import InputError
from qsmkit.geometry import b0_dir_from_affine, voxel_size_from_affine


@dataclasses.dataclass
class Acquisition:
    """Multi-echo GRE data on its native grid.

    Attributes
    ----------
    magnitude : (X, Y, Z, E) float32 array
    phase : (X, Y, Z, E) float32 array, radians in [-pi, pi)
    echo_times_s : (E,) float array, seconds, strictly increasing
    b0_tesla : float
    affine : (4, 4) array, voxel indices -> world (RAS, mm)
    """

    magnitude: np.ndarray
    phase: np.ndarray
    echo_times_s: np.ndarray
    b0_tesla: float
    affine: np.ndarray
    manufacturer: str = ""
    series_description: str = ""
    notes: list[str] = dataclasses.field(default_factory=list)

    def __post_init__(self):
        self.magnitude = np.asarray(self.magnitude, dtype=np.float32)
        self.phase = np.asarray(self.phase, dtype=np.float32)
        if self.magnitude.ndim == 3:
            self.magnitude = self.magnitude[..., None]
        if self.phase.ndim == 3:
            self.phase = self.phase[..., None]
        self.echo_times_s = np.atleast_1d(np.asarray(self.echo_times_s, dtype=float))
        self.affine = np.asarray(self.affine, dtype=float)
        self.validate()

    @property
    def voxel_size(self) -> tuple[float, float, float]:
        return voxel_size_from_affine(self.affine)

    @property
    def b0_dir(self) -> np.ndarray:
        return b0_dir_from_affine(self.affine)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.magnitude.shape[:3])

    @property
    def n_echoes(self) -> int:
        return int(self.magnitude.shape[3])

    def validate(self) -> None:
        """Raise :class:`InputError` for data no QSM stage can use."""
        mag, phase, tes = self.magnitude, self.phase, self.echo_times_s
        if mag.ndim != 4 or min(mag.shape[:3]) < 2:
            raise InputError(
                f"magnitude must be a 3D volume per echo (X, Y, Z[, echo]); got shape {mag.shape}"
            )
        if phase.shape != mag.shape:
            raise InputError(
                f"magnitude shape {mag.shape} and phase shape {phase.shape} differ; "
                "give matching magnitude and phase series"
            )
        if tes.size != mag.shape[3]:
            raise InputError(
                f"{tes.size} echo time(s) given for {mag.shape[3]} echoes; give one echo time "
                "per echo (in seconds)"
            )
        if not np.all(np.isfinite(tes)) or np.any(tes <= 0):
            raise InputError(f"echo times must be positive seconds, got {tes.tolist()}")
        if np.any(tes > 1.0):
            raise InputError(
                f"echo times {tes.tolist()} look like milliseconds; give them in seconds "
                f"(e.g. {', '.join(f'{t / 1000:g}' for t in tes)})"
            )
        if np.any(np.diff(tes) <= 0):
            raise InputError(
                f"echo times must be strictly increasing without duplicates, got {tes.tolist()}"
            )
        if not (0.05 <= float(self.b0_tesla) <= 21.2):
            raise InputError(f"field strength {self.b0_tesla} T is outside 0.05-21.1 T")
        for name, data in (("magnitude", mag), ("phase", phase)):
            if not np.all(np.isfinite(data)):
                raise InputError(f"{name} contains NaN or Inf values")
        if not np.any(mag > 0):
            raise InputError("magnitude is empty (all zero)")
        if np.nanmax(np.abs(phase)) > np.pi + 1e-3:
            raise InputError(
                f"phase spans {float(phase.min()):.4g}..{float(phase.max()):.4g}, not radians in "
                "[-pi, pi); rescale it or let the reader detect the vendor units"
            )
