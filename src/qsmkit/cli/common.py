"""Helpers shared by command modules: argument parsing of physics values, loading, saving."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from qsmkit.errors import InputError


def parse_floats(text: str, name: str) -> list[float]:
    """Parse ``"0.004,0.008"`` or ``"0.004 0.008"`` into floats with a clear error."""
    try:
        values = [float(v) for v in str(text).replace(",", " ").split()]
    except ValueError:
        raise InputError(f"{name} must be numbers separated by commas, got {text!r}") from None
    if not values:
        raise InputError(f"{name} is empty")
    return values


def parse_vector3(text: str, name: str) -> tuple[float, float, float]:
    values = parse_floats(text, name)
    if len(values) != 3:
        raise InputError(f"{name} needs three numbers, got {text!r}")
    return tuple(values)


def parse_echo_times(text: str) -> np.ndarray:
    """Echo times in seconds; values > 1 are taken as milliseconds only if all are > 1."""
    values = np.asarray(parse_floats(text, "--echo-times"))
    if np.all(values > 1.0):
        raise InputError(
            f"--echo-times {text} look like milliseconds; give seconds, e.g. "
            + ",".join(f"{v / 1000:g}" for v in values)
        )
    return values


def add_force(parser) -> None:
    parser.add_argument(
        "--force", action="store_true", help="replace existing outputs in the output folder"
    )


def load_mask(path, shape=None) -> np.ndarray:
    from qsmkit.io.nifti import load_nifti

    data, _, _ = load_nifti(path)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(f"mask {path} must be 3D, got shape {data.shape}")
    if shape is not None and tuple(data.shape) != tuple(shape[:3]):
        raise InputError(f"mask {path} has shape {data.shape}, expected {tuple(shape[:3])}")
    mask = data > 0.5
    if not mask.any():
        raise InputError(f"mask {path} is empty")
    return mask


class Timer:
    """Collect wall time per named stage: ``with timer("unwrap"): ...``."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str):
        timer = self

        class _Stage:
            def __enter__(self):
                self.start = time.perf_counter()

            def __exit__(self, *exc):
                timer.seconds[name] = round(time.perf_counter() - self.start, 3)

        return _Stage()


def write_json(path, payload) -> None:
    from qsmkit.io.provenance import to_json

    Path(path).write_text(to_json(payload) + "\n")


def read_json(path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"cannot read JSON {path}: {err}") from None
