"""Quality-guided region-growing phase unwrapping in the spirit of ROMEO.

Every pair of face-neighbouring voxels inside the mask is joined by an edge whose weight in
[0, 1] says how safe it is to unwrap one voxel from the other (Dymerska et al. 2021):

* phase coherence ``1 - |wrap(phi_j - phi_i)| / pi`` (small steps are trustworthy);
* phase-gradient coherence, when a second echo is available (4D input with
  ``echo_times_s``): ``max(0, 1 - |wrap(dphi) - wrap(dpsi) TE_phi / TE_psi|)``, the
  agreement of the spatial phase step with the one of the neighbouring echo scaled to the
  same echo time;
* magnitude coherence ``(min(m_i, m_j) / max(m_i, m_j))^2``;
* magnitude level ``0.5 + 0.5 min(1, min(m_i, m_j) / (0.5 median(m)))`` which halves the
  weight of edges in the noise floor (below half the median magnitude of the mask).

The product is quantised to integer costs 1..255 (``cost = 1 + round(254 (1 - weight))``).
Growing starts at the voxel with the largest summed edge weight and repeatedly takes the
cheapest edge from the unwrapped region to a new voxel (a bucket priority queue with one
LIFO list per cost, compiled with numba); the new voxel gets the multiple of 2 pi that puts
it within pi of its unwrapped neighbour. ``result - phase`` is therefore an exact multiple
of 2 pi (integers are tracked, not floats).

Disconnected components of the mask (6-connectivity) are grown one after another, each from
its own best voxel. No edge links them, so their relative 2 pi multiple is undetermined; with
``component_alignment="median"`` (default) every component is shifted by the multiple of 2 pi
that brings its median unwrapped phase into (-pi, pi] (for the field of a head this puts
the brain, where the field is near its centre frequency, on the k = 0 sheet); with
``"seed"`` each component keeps its seed voxel at its input value.

References
----------
Dymerska B, Eckstein K, Bachrata B, Siow B, Trattnig S, Shmueli K, Robinson SD. Phase
unwrapping with a rapid opensource minimum spanning tree algorithm (ROMEO). Magn Reson Med
2021;85:2294-2308.
Abdul-Rahman HS, Gdeisat MA, Burton DR, Lalor MJ, Lilley F, Moore CJ. Fast and robust
three-dimensional best path phase unwrapping algorithm. Appl Opt 2007;46:6623-6635
(quality-guided 3D unwrapping with edge reliabilities).
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.ndimage

from qsmkit.errors import InputError
from qsmkit.unwrap._common import check_unwrap_inputs

TWO_PI = 2.0 * np.pi
N_BINS = 256


def region_growing(
    phase_rad,
    magnitude=None,
    mask=None,
    voxel_size=(1.0, 1.0, 1.0),
    *,
    echo_times_s=None,
    component_alignment: str = "median",
) -> np.ndarray:
    """Unwrap phase by quality-guided region growing (ROMEO-like).

    Parameters
    ----------
    phase_rad : (X, Y, Z) or (X, Y, Z, E) array, rad
        Phase to unwrap (wrapped or partly unwrapped); a 4D array is unwrapped echo by echo.
    magnitude : (X, Y, Z) or matching (X, Y, Z, E) array, optional
        Enables the magnitude weights (strongly recommended).
    mask : (X, Y, Z) bool, optional
        Voxels to unwrap (default all). Outside it the input is returned unchanged.
    voxel_size : 3 floats, mm
        Checked for the uniform stage signature; the ROMEO weights are dimensionless and
        do not use it.
    echo_times_s : (E,) floats, seconds, optional
        With 4D phase, enables the phase-gradient coherence between each echo and the next
        one (the previous one for the last echo).
    component_alignment : {"median", "seed"}
        How disconnected mask components are placed relative to each other (see module).

    Returns
    -------
    Same shape as ``phase_rad``, float32, rad; ``result - phase_rad`` is in ``2 pi Z``.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.linspace(-1, 1, 20)
    >>> true = 15.0 * x[:, None, None] ** 2 + 6.0 * x[None, :, None] * np.ones((1, 1, 5))
    >>> wrapped = np.angle(np.exp(1j * true))
    >>> out = region_growing(wrapped)
    >>> shift = (out - true) / (2 * np.pi)
    >>> bool(np.allclose(shift, np.round(shift.flat[0]), atol=1e-4))
    True
    """
    if component_alignment not in ("median", "seed"):
        raise InputError(
            f"unknown component_alignment {component_alignment!r}; use 'median' or 'seed'"
        )
    phase, mask, _, mag = check_unwrap_inputs(phase_rad, mask, voxel_size, magnitude)
    if phase.ndim == 3:
        m = None if mag is None else (mag if mag.ndim == 3 else mag[..., 0])
        return _unwrap_3d(phase, m, mask, None, 1.0, component_alignment)
    n_echoes = phase.shape[3]
    tes = None
    if echo_times_s is not None:
        tes = np.atleast_1d(np.asarray(echo_times_s, dtype=float))
        if tes.shape != (n_echoes,) or np.any(tes <= 0) or not np.all(np.isfinite(tes)):
            raise InputError(
                f"echo_times_s must hold {n_echoes} positive times (s), got {echo_times_s}"
            )
    out = np.empty(phase.shape, dtype=np.float32)
    for e in range(n_echoes):
        m = None if mag is None else (mag if mag.ndim == 3 else mag[..., e])
        other, ratio = None, 1.0
        if tes is not None and n_echoes > 1:
            o = e + 1 if e + 1 < n_echoes else e - 1
            other, ratio = phase[..., o], tes[e] / tes[o]
        out[..., e] = _unwrap_3d(phase[..., e], m, mask, other, ratio, component_alignment)
    return out


def edge_weights(phase, magnitude, mask, other_phase=None, te_ratio=1.0) -> np.ndarray:
    """ROMEO-like edge weights in [0, 1], shape (3, X, Y, Z); edge ``[a, x, y, z]`` joins a
    voxel to its +1 neighbour along axis ``a``; 0 where either end is outside ``mask`` or
    past the last index."""
    phase = np.asarray(phase, dtype=np.float32)
    weights = np.zeros((3, *phase.shape), dtype=np.float32)
    m_ref = None
    if magnitude is not None:
        inside = magnitude[mask]
        m_ref = 0.5 * float(np.median(inside)) if inside.size else 0.0
        if m_ref <= 0:
            m_ref = float(inside.max()) if inside.size and inside.max() > 0 else 1.0
    for axis in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis] = slice(None, -1)
        hi[axis] = slice(1, None)
        lo, hi = tuple(lo), tuple(hi)
        step = _wrap(phase[hi] - phase[lo])
        w = 1.0 - np.abs(step) / np.float32(np.pi)
        if other_phase is not None:
            other = np.asarray(other_phase, dtype=np.float32)
            step2 = _wrap(other[hi] - other[lo]) * np.float32(te_ratio)
            w *= np.maximum(0.0, 1.0 - np.abs(step - step2))
        if magnitude is not None:
            small = np.minimum(magnitude[lo], magnitude[hi])
            large = np.maximum(magnitude[lo], magnitude[hi])
            with np.errstate(divide="ignore", invalid="ignore"):
                coherence = np.where(large > 0, small / large, 0.0)
            w *= coherence * coherence
            w *= 0.5 + 0.5 * np.minimum(1.0, small / np.float32(m_ref))
        w *= mask[lo] & mask[hi]
        weights[axis][lo] = np.clip(w, 0.0, 1.0)
    return weights


def _wrap(x):
    return (x + np.float32(np.pi)) % np.float32(TWO_PI) - np.float32(np.pi)


def _unwrap_3d(phase, magnitude, mask, other_phase, te_ratio, alignment):
    if not mask.any():
        return phase.astype(np.float32, copy=True)
    weights = edge_weights(phase, magnitude, mask, other_phase, te_ratio)
    valid = np.zeros(weights.shape, dtype=bool)
    quality = weights.sum(axis=0)
    for axis in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis] = slice(None, -1)
        hi[axis] = slice(1, None)
        lo, hi = tuple(lo), tuple(hi)
        valid[axis][lo] = mask[lo] & mask[hi]
        quality[hi] += weights[axis][lo]  # the edge to the -1 neighbour is stored there
    cost = np.where(valid, 1 + np.rint((1.0 - weights) * (N_BINS - 2)), 0).astype(np.uint8)
    del weights, valid
    cost = cost.reshape(-1)
    n = phase.size
    n_edges = int(np.count_nonzero(cost))
    stack = np.empty(max(n_edges, 1), dtype=np.int32 if 3 * n < 2**31 else np.int64)
    turns = np.zeros(n, dtype=np.int32)
    labels = np.zeros(n, dtype=np.int32)
    flat_phase = phase.astype(np.float64).ravel()
    flat_quality = np.where(mask, quality, -np.inf).ravel()
    nx, ny, nz = phase.shape
    # the best voxel seeds the first component; usually it is the only one
    seeds = np.array([int(np.argmax(flat_quality))], dtype=np.int64)
    n_comp = _grow(cost, flat_phase, seeds, turns, labels, stack, nx, ny, nz, N_BINS, 0)
    rest = np.flatnonzero(mask.ravel() & (labels == 0))
    if rest.size:  # other components, best seeds first
        seeds = rest[np.argsort(-flat_quality[rest], kind="stable")].astype(np.int64)
        n_comp = _grow(cost, flat_phase, seeds, turns, labels, stack, nx, ny, nz, N_BINS, n_comp)
    turns = turns.reshape(phase.shape)
    labels = labels.reshape(phase.shape)
    if alignment == "median":
        unwrapped = phase.astype(np.float64) + TWO_PI * turns
        if n_comp == 1:
            medians = np.array([np.median(unwrapped[mask])])
        else:
            medians = np.asarray(
                scipy.ndimage.median(unwrapped, labels=labels, index=np.arange(1, n_comp + 1))
            )
        shifts = np.concatenate([[0], -np.round(medians / TWO_PI)]).astype(np.int32)
        turns = turns + shifts[labels]
    return (phase + (TWO_PI * turns).astype(np.float32)).astype(np.float32)


@numba.njit(cache=True)
def _grow(
    cost, phase, seeds, turns, labels, stack, nx, ny, nz, n_bins, n_comp
):  # pragma: no cover - compiled
    """Grow a component from each still unvisited voxel of ``seeds`` (in order).

    ``cost`` (3N uint8, 0 = no edge) holds edge ``a * N + v`` between voxel ``v`` and its +1
    neighbour along axis ``a``. The priority queue keeps one LIFO stack per cost inside
    ``stack``, each with room for every edge of that cost (an edge is pushed at most once:
    when the first of its ends is reached). ``turns`` and ``labels`` (N int32) are filled
    in place; returns the number of components so far.
    """
    n = nx * ny * nz
    strides = np.array([ny * nz, nz, 1], dtype=np.int64)
    first = np.zeros(n_bins + 1, dtype=np.int64)
    for e in range(3 * n):
        first[cost[e] + 1] += 1
    first[1] = 0  # cost 0 is not an edge
    for c in range(1, n_bins + 1):
        first[c] += first[c - 1]
    top = first[:n_bins].copy()
    two_pi = 2.0 * np.pi
    comp = n_comp
    for seed in seeds:
        if labels[seed] != 0:
            continue
        comp += 1
        labels[seed] = comp
        current = n_bins
        v = seed
        while True:
            # push the edges from v to its unvisited neighbours
            for a in range(3):
                e = a * n + v
                c = cost[e]
                if c > 0 and labels[v + strides[a]] == 0:
                    stack[top[c]] = e
                    top[c] += 1
                    if c < current:
                        current = c
                u = v - strides[a]
                if u >= 0:
                    e = a * n + u
                    c = cost[e]
                    if c > 0 and labels[u] == 0:
                        stack[top[c]] = e
                        top[c] += 1
                        if c < current:
                            current = c
            # pop the cheapest edge that reaches a new voxel
            v = -1
            while current < n_bins:
                if top[current] == first[current]:
                    current += 1
                    continue
                top[current] -= 1
                e = stack[top[current]]
                a = e // n
                lo = e - a * n
                hi = lo + strides[a]
                if labels[lo] != 0 and labels[hi] != 0:
                    continue
                if labels[lo] != 0:
                    src, dst = lo, hi
                else:
                    src, dst = hi, lo
                reference = phase[src] + two_pi * turns[src]
                turns[dst] = np.int32(np.floor((reference - phase[dst]) / two_pi + 0.5))
                labels[dst] = comp
                v = dst
                break
            if v < 0:
                break
    return comp
