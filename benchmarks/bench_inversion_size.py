"""Time and peak memory of dipole inversions at a clinical matrix (default 256 x 256 x 66).

    python benchmarks/bench_inversion_size.py [--shape 256 256 66] [--only tv,tgv]

Each method runs in a fresh process that builds the same synthetic local field (an
ellipsoidal brain of smooth random susceptibility with a few spheres, field from the unit
dipole kernel, 1 x 1 x 2 mm voxels, 0.01 ppm noise); the process reports its wall time, its
CPU time (user + system, all threads: steadier than wall time on a shared machine) and its
peak resident memory (VmHWM), which includes the Python/NumPy baseline and the input
arrays. Used for the TGV budget of issue 12 (within 3x TV's time and 2 GB).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

VOXEL_MM = (1.0, 1.0, 2.0)


def local_field(shape, seed=0):
    """Synthetic local field (Hz at 3 T) and mask for timing (not for accuracy)."""
    import scipy.ndimage as ndi

    from qsmkit import fft
    from qsmkit.kernels import dipole_kernel

    rng = np.random.default_rng(seed)
    axes = [(np.arange(n) - (n - 1) / 2) * h for n, h in zip(shape, VOXEL_MM, strict=True)]
    x, y, z = np.meshgrid(*axes, indexing="ij", sparse=True)
    semi = [0.42 * n * h for n, h in zip(shape, VOXEL_MM, strict=True)]
    mask = (x / semi[0]) ** 2 + (y / semi[1]) ** 2 + (z / semi[2]) ** 2 <= 1.0
    chi = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 3.0) * 0.3
    for _ in range(12):
        c = [rng.uniform(-0.5, 0.5) * s for s in semi]
        r = rng.uniform(3.0, 10.0)
        chi[((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) <= r * r] += rng.uniform(
            -0.1, 0.3)
    chi *= mask
    field_ppm = fft.irfftn(fft.rfftn(chi) * dipole_kernel(shape, VOXEL_MM, (0, 0, 1),
                                                          half=True), shape)
    field_ppm += 0.01 * rng.standard_normal(shape)
    return (field_ppm * 3.0 * 42.577478518 * mask).astype(np.float32), mask


def _peak_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def child(method: str, shape) -> None:
    from qsmkit.inversion import METHODS

    field, mask = local_field(shape)
    centre = tuple(slice(n // 2 - 12, n // 2 + 12) for n in shape)
    METHODS[method](field[centre], mask[centre], VOXEL_MM, max_iter=2)  # compile numba first
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    METHODS[method](field, mask, VOXEL_MM, b0_tesla=3.0)
    seconds = time.perf_counter() - start
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    print(json.dumps({"method": method, "seconds": seconds, "cpu_s": cpu, "peak_mb": _peak_mb()}))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[256, 256, 66])
    parser.add_argument("--only", default="tv,tgv")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, tuple(args.shape))
        return 0
    print(f"| method | wall time (s) | CPU time (s) | peak memory (MB) | shape "
          f"{tuple(args.shape)}")
    print("|---|---:|---:|---:|")
    for method in args.only.split(","):
        out = subprocess.run([sys.executable, __file__, "--child", method, "--shape",
                              *map(str, args.shape)], capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {method} | {row['seconds']:.1f} | {row['cpu_s']:.1f} | {row['peak_mb']:.0f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
