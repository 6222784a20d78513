"""``qsmkit.json``: what made an output folder (version, command, config, inputs, timings)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

PROVENANCE_NAME = "qsmkit.json"


def sha256_file(path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file (or of every file of a folder, sorted by name)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with open(file, "rb") as handle:
            while block := handle.read(chunk):
                digest.update(block)
    return digest.hexdigest()


def _jsonable(value):
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def to_json(value) -> str:
    """JSON text of nested dicts/dataclasses/arrays."""
    return json.dumps(_jsonable(value), indent=2, sort_keys=False)


def write_provenance(folder, *, command: str, config=None, inputs=(), extra=None) -> Path:
    """Write ``qsmkit.json`` into ``folder``; ``inputs`` are paths to checksum."""
    from qsmkit import __version__

    record = {
        "qsmkit_version": __version__,
        "command": command,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "config": config,
        "inputs": {str(p): sha256_file(p) for p in inputs if Path(p).exists()},
    }
    record.update(extra or {})
    path = Path(folder) / PROVENANCE_NAME
    path.write_text(to_json(record) + "\n")
    return path


def read_provenance(folder) -> dict:
    """Read ``qsmkit.json`` of a folder (empty dict if absent)."""
    path = Path(folder) / PROVENANCE_NAME
    return json.loads(path.read_text()) if path.exists() else {}
