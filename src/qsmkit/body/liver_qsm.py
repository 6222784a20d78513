"""Liver QSM: the field of a chemical-shift-encoded fit to one susceptibility per region.

The abdomen's background field comes mostly from large air volumes of known susceptibility
that touch the liver (outside the body, lungs, bowel gas), and a clinical acquisition is a slab
through a body that continues beyond it along B0. :func:`liver_qsm` therefore fits the total
field inside the body jointly: tissue susceptibility (one value per analysed region), air in
every signal-free region, harmonic terms for shims and far sources — with the body and its
tissue continued beyond the faces of the field of view that cut through it
(:func:`continuing_faces`).

References
----------
Liu Z, Kee Y, Zhou D, Wang Y, Spincemaille P. Preconditioned total field inversion (TFI)
method for quantitative susceptibility mapping. Magn Reson Med 2017;78:303-315.
Hernando D, Cook RJ, Diamond C, Reeder SB. Magnetic susceptibility as a B0 field strength
independent MRI biomarker of liver iron overload. Magn Reson Med 2013;70:648-656.
Schenck JF. The role of magnetic susceptibility in magnetic resonance imaging: MRI magnetic
compatibility of the first and second kinds. Med Phys 1996;23:815-850.
Liu T, Khalidov I, de Rochefort L, Spincemaille P, Liu J, Tsiouris AJ, Wang Y. A novel
background field removal method for MRI using projection onto dipole fields (PDF). NMR Biomed
2011;24:1129-1136.
Birge RT. The calculation of errors by the method of least squares. Phys Rev 1932;40:207-227
(scaling a standard error by the square root of the reduced chi-square).
Hanke M. Conjugate Gradient Type Methods for Ill-Posed Problems. Harlow: Longman; 1995
(early-stopped conjugate gradients as a regularisation).
Liu J, Liu T, de Rochefort L, et al. Morphology enabled dipole inversion for quantitative
susceptibility mapping using structural consistency between the magnitude image and the
susceptibility map. NeuroImage 2012;59:2560-2568 (no smoothness penalty across edges).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from qsmkit.errors import InputError

CHI_AIR_PPM = 9.4
"""Air relative to water (SI ppm): +0.36 - (-9.05)."""

OWN_FIELD_SE_LIMIT_PPM = 0.05
"""A region's refit to its own field (:func:`own_field_estimates`) replaces its joint-fit
value when its standard error is at most 0.05 ppm (about 0.4 mg Fe/g dw with the in-vivo
χ→LIC slope) or :data:`OWN_FIELD_SE_FRACTION` of the value: the region's own signal then
measures it better than the surroundings do."""

FACE_GUARD_MM = 8.0
"""Default guard band (mm) at the faces of the field of view that the body runs through:
there the field of tissue beyond the slab (a longer liver, the lung bases above its dome)
is not modelled. 8 mm is about one and a half radii of a 1 cm region, where the field of
a column's cut end has fallen to a tenth; measured on the independent abdomen phantom
(``docs/liver.md``)."""

BEYOND_MM = 40.0
"""Default depth (mm) of the layer of unknown sources fitted beyond each face the body runs
through (:func:`liver_qsm` ``beyond_mm``): the organs that continue past a slab and the lung
bases over the liver dome lie there; sources further away make fields inside the slab that
are smooth enough for the harmonic terms."""

EDGE_FRACTION = 0.1
"""Fraction of the neighbour pairs of free tissue left out of the gradient penalty: those with
the largest jumps in the log of the data weight (:func:`_structural_edges`). The weight is the
field's precision, so its edges are those of iron (R2*) and fat — tissue boundaries, where χ
may jump, as MEDI assumes at the edges of the magnitude image (Liu J 2012). 10 % is the one
value tried (measured in docs/liver.md, Limitations), not tuned."""

EDGE_MIN_JUMP = 0.5
"""A jump of the log weight below 0.5 (field SD changing by less than a factor 1.65 between
neighbours) is never an edge: noise and smooth fat or iron gradients stay penalised."""

PRECONDITIONER_FLOOR = 1e-3
"""Floor of the Fourier preconditioner's denominator, relative to its largest value."""

OWN_FIELD_SE_FRACTION = 0.1
"""Relative standard error (10 %) up to which a region's own-field χ is kept: iron-rich
regions keep few echoes, but 10 % of a high χ is still well inside the spread of the
published χ–LIC calibrations and far from any clinical threshold."""


@dataclasses.dataclass
class LiverQSM:
    """Result of :func:`liver_qsm`.

    Attributes
    ----------
    chi_ppm : (X, Y, Z) float32, ppm, referenced (zero outside ``mask``)
    local_field_hz : (X, Y, Z) float32, Hz — the field of the tissue susceptibility alone
        (total field minus the fitted background)
    mask : (X, Y, Z) bool — where ``chi_ppm`` is defined
    reference : str — what ``chi_ppm`` is referenced to
    info : dict — method, parameters, iterations, background coefficients
    """

    chi_ppm: np.ndarray
    local_field_hz: np.ndarray
    mask: np.ndarray
    reference: str
    info: dict


def _pads(shape, voxel_size) -> tuple[int, int, int]:
    """Zero padding per side for the tissue dipole convolution: a quarter of each axis (at
    least 8 voxels) and, along a short axis (a slab), enough for the padded extent to reach
    1.2 times the longest side, which keeps the periodic replicas of a flat slab far apart."""
    extent = np.asarray(shape, float) * np.asarray(voxel_size, float)
    longest = 1.2 * extent.max()
    return tuple(
        max(8, int(np.ceil(0.25 * n)), int(np.ceil((longest - e) / (2 * v))))
        for n, e, v in zip(shape, extent, voxel_size, strict=True)
    )


def _filled(body: np.ndarray) -> np.ndarray:
    """The body with its internal air (lungs, bowel gas) filled, in 3D and slice by slice
    across the grid's shortest axis (the slab's; the last of equals), whatever the storage
    order: air open to a slab's face is enclosed in each slice of the slab."""
    from scipy import ndimage

    filled = ndimage.binary_fill_holes(body)
    shape = body.shape
    axis = len(shape) - 1 - int(np.argmin(shape[::-1]))
    for k in range(shape[axis]):
        index = (slice(None),) * axis + (k,)
        filled[index] |= ndimage.binary_fill_holes(body[index])
    return filled


def air_padding(shape, voxel_size, *, in_plane: float = 0.25) -> tuple[int, int, int]:
    """Padding per side for fields of air around a body: ``in_plane`` of each axis (at least
    16 voxels) and, along a short axis (a slab), enough for the padded extent to reach 1.2
    times the longest side, so that the periodic replicas of the body stay far away."""
    extent = np.asarray(shape, float) * np.asarray(voxel_size, float)
    longest = 1.2 * extent.max()
    return tuple(
        max(16, int(np.ceil(in_plane * n)), int(np.ceil((longest - e) / (2 * v))))
        for n, e, v in zip(shape, extent, voxel_size, strict=True)
    )


def continuing_faces(body, *, min_fraction: float = 0.3) -> list[tuple[int, int]]:
    """Faces of the grid that the body runs through, as ``(axis, side)`` (side 0: low end).

    A face counts when the body (internal air filled) covers at least ``min_fraction`` of its
    largest cross-section normal to that axis in the outermost slice: the anatomy is cut by
    the field of view there — typically both ends of an abdominal slab along B0 — and the
    body continues beyond it. Faces with air around the body (the usual in-plane case) do not
    count.
    """
    filled = _filled(np.asarray(body, dtype=bool))
    faces = []
    for axis in range(filled.ndim):
        areas = filled.sum(axis=tuple(a for a in range(filled.ndim) if a != axis))
        largest = float(areas.max()) if areas.size else 0.0
        for side, edge in ((0, 0), (1, -1)):
            if largest > 0 and areas[edge] >= min_fraction * largest:
                faces.append((axis, side))
    return faces


def face_band(body, voxel_size, width_mm: float) -> np.ndarray:
    """Voxels within ``width_mm`` of a face of the grid that the body runs through
    (:func:`continuing_faces`): where a model that ends the body at the field of view differs
    most from a body that continues."""
    band = np.zeros(np.shape(body), bool)
    for axis, side in continuing_faces(body):
        n = min(band.shape[axis], int(np.ceil(width_mm / float(voxel_size[axis]))))
        idx = [slice(None)] * band.ndim
        idx[axis] = slice(0, n) if side == 0 else slice(band.shape[axis] - n, None)
        band[tuple(idx)] = True
    return band


def _beyond(sl: slice, side: int, depth: int | None) -> slice:
    if side == 0:
        return slice(0 if depth is None else max(0, sl.start - depth), sl.start)
    return slice(sl.stop, None if depth is None else sl.stop + depth)


def _continue_beyond(padded: np.ndarray, inner: tuple[slice, ...], faces,
                     depth=None) -> np.ndarray:
    """Copy the outermost inner slice across the padding beyond each face (in place), over
    ``depth[axis]`` voxels (default: the whole padding)."""
    for axis, side in faces:
        sl = inner[axis]
        edge = sl.start if side == 0 else sl.stop - 1
        beyond = _beyond(sl, side, None if depth is None else depth[axis])
        src = [slice(None)] * padded.ndim
        dst = [slice(None)] * padded.ndim
        src[axis] = slice(edge, edge + 1)
        dst[axis] = beyond
        padded[tuple(dst)] = padded[tuple(src)]
    return padded


def _continue_adjoint(padded: np.ndarray, inner: tuple[slice, ...], faces,
                      depth=None) -> np.ndarray:
    """Adjoint of :func:`_continue_beyond`: the padding beyond a face is summed onto its
    outermost inner slice (faces processed in reverse order)."""
    out = padded.copy()
    for axis, side in reversed(list(faces)):
        sl = inner[axis]
        edge = sl.start if side == 0 else sl.stop - 1
        beyond = _beyond(sl, side, None if depth is None else depth[axis])
        src = [slice(None)] * padded.ndim
        dst = [slice(None)] * padded.ndim
        src[axis] = beyond
        dst[axis] = slice(edge, edge + 1)
        out[tuple(dst)] += out[tuple(src)].sum(axis=axis, keepdims=True)
        out[tuple(src)] = 0
    return out


def _beyond_layer(grid, inner: tuple[slice, ...], faces, depth) -> np.ndarray:
    """Voxels of the padded ``grid`` within ``depth[axis]`` voxels beyond each of ``faces``,
    over the field of view's extent along the other axes."""
    layer = np.zeros(grid, bool)
    if depth is None:
        return layer
    for axis, side in faces:
        idx = list(inner)
        idx[axis] = _beyond(inner[axis], side, depth[axis])
        layer[tuple(idx)] = True
    return layer


def _depth_voxels(depth_mm, voxel_size):
    if depth_mm is None:
        return None
    return tuple(int(np.ceil(float(depth_mm) / float(v))) for v in voxel_size)


def air_field_ppm(body, voxel_size: Sequence[float], b0_dir=(0.0, 0.0, 1.0), *,
                  separate: bool = False, faces=(), depth_mm: float | None = None
                  ) -> list[np.ndarray]:
    """Field (ppm per ppm of air susceptibility) inside the grid of unit-susceptibility air.

    Air is every voxel outside ``body`` — around the body and inside it (lungs, bowel gas).
    The field is computed on a grid padded by :func:`air_padding`; the padding is air, except
    beyond the ``faces`` (see :func:`continuing_faces`) where the outermost slice — body, its
    internal air and the air around it — is continued across the padding, as the anatomy of a
    slab continues beyond it. With ``separate`` the field of each connected air region is
    returned (the outside first); otherwise one field for all air.
    """
    from scipy import ndimage

    from qsmkit import fft
    from qsmkit.geometry import crop, fast_shape, pad_to
    from qsmkit.kernels import dipole_kernel

    body = np.asarray(body, dtype=bool)
    filled = _filled(body)
    big = fast_shape(body.shape, air_padding(body.shape, voxel_size))
    kernel = dipole_kernel(big, voxel_size, b0_dir, half=True)
    depth = _depth_voxels(depth_mm, voxel_size)
    filled_p, sl = pad_to(filled.astype(np.float32), big)
    outside = 1.0 - _continue_beyond(filled_p, sl, faces, depth)  # elsewhere the padding is air
    holes = filled & ~body
    if separate:
        lab, n = ndimage.label(holes)
        lab_p = _continue_beyond(pad_to(lab.astype(np.int32), big)[0], sl, faces, depth)
        sources = [outside] + [(lab_p == i).astype(np.float32) for i in range(1, n + 1)]
    else:
        sources = [outside + _continue_beyond(pad_to(holes.astype(np.float32), big)[0], sl,
                                              faces, depth)]
    return [crop(fft.irfftn(fft.rfftn(src) * kernel, big), sl).astype(np.float32)
            for src in sources]


def _harmonics(shape, voxel_size, order: int) -> list[np.ndarray]:
    axes = [(np.arange(n) - (n - 1) / 2.0) * d / 100.0 for n, d in zip(shape, voxel_size,
                                                                    strict=True)]
    x, y, z = np.meshgrid(*axes, indexing="ij", sparse=True)
    terms = [np.ones(shape)]
    if order >= 1:
        terms += [x + 0 * y * z, y + 0 * x * z, z + 0 * x * y]
    if order >= 2:
        terms += [x * y + 0 * z, x * z + 0 * y, y * z + 0 * x, x**2 - y**2 + 0 * z,
                  2 * z**2 - x**2 - y**2]
    return [np.broadcast_to(t, shape).astype(np.float32) for t in terms]


def _fourier_preconditioner(kernel, grid, voxel_size, lam, data_weight, free):
    """``r -> free · F⁻¹[F(free · r) / (c |D(k)|² + lam L(k) + ε)]``: the inverse of the
    normal operator of a uniformly weighted, unmasked problem (``c`` the mean squared data
    weight, ``L`` the symbol of the discrete Laplacian), which evens out the dipole kernel's
    spectrum (as in preconditioned TFI, Liu 2017). On the liver problem, whose weights span
    two decades, it does not reach the tolerance within 400 iterations either, but brings the
    result nearer the converged one (3 T, decayed LIC 20 patches of the independent abdomen:
    −0.08…−0.14 ppm from truth against −0.17…−0.20 plain and −0.01…+0.02 converged). ``ε``
    (:data:`PRECONDITIONER_FLOOR` of the largest term) keeps the magic cone and k = 0 from
    being amplified without bound."""
    from qsmkit import fft
    from qsmkit.kernels import frequency_grid

    freqs = frequency_grid(grid, voxel_size, half=True)
    laplacian = sum((2.0 - 2.0 * np.cos(2.0 * np.pi * f * h)) / h**2
                    for f, h in zip(freqs, np.asarray(voxel_size, float), strict=True))
    den = data_weight * np.asarray(kernel, np.float64) ** 2 + lam * laplacian
    den = (den + PRECONDITIONER_FLOOR * float(den.max())).astype(np.float32)

    def apply(r):
        return fft.irfftn(fft.rfftn(r * free) / den, grid).astype(np.float32) * free

    return apply


def _structural_edges(log_weight, pairs, *, fraction=None, min_jump=None):
    """``pairs`` (per axis, 1 where a voxel and its next neighbour are penalised) without the
    pairs across the largest jumps of ``log_weight``: the top ``fraction``
    (:data:`EDGE_FRACTION`) of the jumps over the penalised pairs, and none below ``min_jump``
    (:data:`EDGE_MIN_JUMP`).

    Without this, tissue whose signal iron has taken (weight ~0.03) cannot hold its χ against
    the penalty that ties it to the liver around it: a small label inside such tissue read
    LIC 12 and LIC 20 patches of the independent abdomen 1–2 ppm low (3 T, 40-voxel labels),
    as its unlabelled neighbours were smoothed to the surrounding liver. Voxels without data
    (weight 0, taken as 10⁻³: the guard band at the slab's faces, tissue with no signal) are
    thereby also cut off from the penalty where they meet tissue with data; their χ is then
    set by the field they make there, like the sources beyond the faces.
    """
    fraction = EDGE_FRACTION if fraction is None else fraction
    min_jump = EDGE_MIN_JUMP if min_jump is None else min_jump
    jumps = [np.abs(np.roll(log_weight, -1, axis=a) - log_weight) for a in range(3)]
    penalised = np.concatenate([j[p > 0] for j, p in zip(jumps, pairs, strict=True)])
    if fraction <= 0 or not penalised.size:
        return pairs
    limit = max(float(np.quantile(penalised, 1.0 - fraction)), float(min_jump))
    return [p * (j <= limit).astype(np.float32) for p, j in zip(pairs, jumps, strict=True)]


def _solve_susceptibility(field_ppm, mask, voxel_size, b0_dir, weight, rois, columns, *,
                          lam, tol, max_iter, faces=(), depth_mm=None, beyond=(),
                          beyond_mm=0.0, precondition=True):
    """Weighted least squares ``||W (D chi + C a - f)||^2 + lam ||grad chi||^2`` over the mask.

    ``chi`` is supported on the mask (zero outside), constant within each positive label of
    ``rois``; the gradient penalty acts only between voxels that are not in a region.
    ``C`` (fields of background terms, e.g. air regions and harmonics) and the field of each
    region (one unknown each, unpenalised) are eliminated exactly by variable projection;
    conjugate gradients solve for the free voxels. Eliminating the regions matters: where a
    region's signal has gone its weight is ~0 and, as an unknown of the iteration, its
    susceptibility would converge far more slowly than the rest (it would stay biased
    towards 0). Beyond each of ``faces`` the tissue of the outermost slice continues with
    its susceptibility across the padding (a slab through a longer body;
    :func:`continuing_faces`). Returns ``(chi (X, Y, Z), a (n_columns,), iterations)``.
    """
    from qsmkit import fft
    from qsmkit.geometry import crop, fast_shape, pad_to
    from qsmkit.kernels import dipole_kernel
    from qsmkit.ops.gradient import adjoint_gradient, forward_gradient

    shape = mask.shape
    grid = fast_shape(shape, _pads(shape, voxel_size))
    kernel = dipole_kernel(grid, voxel_size, b0_dir, half=True)
    mp, sl = pad_to(mask.astype(np.float32), grid)
    mp = mp > 0.5

    def dip(x):
        return fft.irfftn(fft.rfftn(x) * kernel, grid).astype(np.float32)

    depth = _depth_voxels(depth_mm, voxel_size)

    def dip_continued(x):  # tissue continued beyond the faces, then its field
        return dip(_continue_beyond(x.copy(), sl, faces, depth)) if faces else dip(x)

    def dip_continued_adjoint(y):
        return _continue_adjoint(dip(y), sl, faces, depth) if faces else dip(y)

    f = pad_to(np.where(mask, field_ppm, 0).astype(np.float32), grid)[0][mp].astype(np.float64)
    w = np.ones(int(mask.sum())) if weight is None else np.asarray(weight, float)[mask]
    w = np.where(np.isfinite(w) & (w > 0), w, 0.0)
    if not np.any(w > 0):
        raise InputError("the data weight is zero everywhere in the mask")
    w = w / np.sqrt(np.mean(w**2))

    labels = np.zeros(grid, np.int64)
    if rois is not None:
        labels[sl] = np.where(mask, np.asarray(rois, dtype=np.int64), 0)
    ids = [int(i) for i in np.unique(labels) if i > 0]
    regions = [(labels == i).astype(np.float32) for i in ids]
    # all eliminated terms: background columns, then the field of each region
    fields = [c[mask].astype(np.float64) for c in columns]
    fields += [dip_continued(reg)[mp].astype(np.float64) for reg in regions]
    if fields:
        cmat = np.stack(fields, axis=1) * w[:, None]
        q, r = np.linalg.qr(cmat)
    else:
        q = np.zeros((w.size, 0))
        r = np.zeros((0, 0))

    def project(v):
        return v - q @ (q.T @ v)

    outer = _beyond_layer(grid, sl, beyond, _depth_voxels(beyond_mm, voxel_size))
    free = (mp & (labels == 0)) | outer
    # no penalty across a face: the sources beyond it are not the tissue inside
    edges = [(free & np.roll(free, -1, axis=a) & (outer == np.roll(outer, -1, axis=a))
              ).astype(np.float32) for a in range(3)]
    for a in range(3):  # no periodic edge
        idx = [slice(None)] * 3
        idx[a] = -1
        edges[a][tuple(idx)] = 0.0
    if weight is not None:
        logw = np.zeros(grid, np.float32)
        logw[sl] = np.log(np.maximum(np.where(mask, np.asarray(weight, float), 0.0), 1e-3))
        edges = _structural_edges(logw, edges)

    def penalty(x):
        g = forward_gradient(x, voxel_size)
        for a in range(3):
            g[a] *= edges[a]
        return adjoint_gradient(g, voxel_size)

    def residual_side(y):
        out = np.zeros(grid, np.float32)
        out[mp] = y
        return dip_continued_adjoint(out) * free

    def normal(xf):
        y = project(dip_continued(xf * free)[mp] * w) * w
        return residual_side(y) + np.float32(lam) * free * penalty(xf * free)

    b = residual_side(project(w * f) * w)
    if precondition:
        prec = _fourier_preconditioner(kernel, grid, voxel_size, lam,
                                       float(np.mean(w**2)), free.astype(np.float32))
    else:
        def prec(r):
            return r.copy()
    x = np.zeros(grid, np.float32)
    res = b.copy()
    z = prec(res)
    direction = z.copy()
    rz = float(np.vdot(res, z).real)
    bnorm = float(np.linalg.norm(b))
    iterations = 0
    if bnorm > 0:
        for iterations in range(1, max_iter + 1):  # noqa: B007 - reported
            ad = normal(direction)
            pap = float(np.vdot(direction, ad).real)
            if pap <= 0:
                break
            alpha = rz / pap
            x += np.float32(alpha) * direction
            res -= np.float32(alpha) * ad
            if float(np.linalg.norm(res)) <= tol * bnorm:
                break
            z = prec(res)
            rz_new = float(np.vdot(res, z).real)
            direction = z + np.float32(rz_new / rz) * direction
            rz = rz_new
    x *= free
    model = dip_continued(x)[mp].astype(np.float64)
    coef = (np.linalg.lstsq(r, q.T @ (w * (f - model)), rcond=None)[0] if fields
            else np.zeros(0))
    n_bg = len(columns)
    for reg, value in zip(regions, coef[n_bg:], strict=True):
        x += reg * np.float32(value)
    chi = crop(x, sl).astype(np.float32)
    outer_field = (crop(dip(x * outer), sl).astype(np.float32) if outer.any()
                   else np.zeros(shape, np.float32))
    return np.where(mask, chi, 0.0).astype(np.float32), coef[:n_bg], iterations, outer_field


def _tissue_field_operator(shape, voxel_size, b0_dir):
    """``field(chi, faces=(), depth_mm=None)``: the dipole field (ppm) inside the grid of
    ``chi`` (ppm), zero-padded as in :func:`_solve_susceptibility`, with ``chi`` continued
    beyond ``faces`` when given; the padded grid and kernel are built once."""
    from qsmkit import fft
    from qsmkit.geometry import crop, fast_shape, pad_to
    from qsmkit.kernels import dipole_kernel

    grid = fast_shape(tuple(shape), _pads(tuple(shape), voxel_size))
    kernel = dipole_kernel(grid, voxel_size, b0_dir, half=True)

    def field(chi, faces=(), depth_mm=None):
        padded, sl = pad_to(np.asarray(chi, np.float32), grid)
        if faces:
            padded = _continue_beyond(padded, sl, faces, _depth_voxels(depth_mm, voxel_size))
        return crop(fft.irfftn(fft.rfftn(padded) * kernel, grid), sl).astype(np.float32)

    return field


def own_field_estimates(local_ppm, chi, weight, rois, used, voxel_size, b0_dir, *,
                        model_faces=(), depth_mm=None, region_faces=(),
                        sd_ppm: float | None = None) -> dict:
    """Each region's susceptibility from its own field alone.

    In the joint fit a region of low weight (iron has taken its signal) is steered by the
    misfit of the well-measured tissue around it, through the field it makes there; that
    misfit is largest where the model of the anatomy is wrong (the slab's faces, air). Here
    each region is refitted to its own voxels only (``used``, e.g. without a guard band at the
    faces), the field of everything else held at the joint fit ``chi`` (model of
    :func:`_solve_susceptibility`: continued beyond ``model_faces``):
    ``chi_R = sum(w^2 (f - f_rest) g) / sum(w^2 g^2)``, where ``g`` is the field of the region
    at unit susceptibility, continued beyond the ``region_faces`` it reaches (the joint fit's
    own model of the slab by default, so that both estimates read the same geometry).
    ``sd_ppm`` is the field SD (ppm) of a voxel of weight 1: the standard error is
    ``sd_ppm / sqrt(sum(w^2 g^2))``, times the Birge ratio ``sqrt(chi2 / (n - 1))`` of the
    region's weighted residual where that exceeds 1 (Birge 1932).

    Returns ``{label: (chi_ppm, se_ppm)}`` (``se_ppm`` NaN without ``sd_ppm``).
    """
    rois = np.asarray(rois)
    field = _tissue_field_operator(rois.shape, voxel_size, b0_dir)
    model = field(chi, model_faces, depth_mm)
    w2 = np.where(used, np.asarray(weight, float), 0.0) ** 2
    out = {}
    for label in [int(v) for v in np.unique(rois) if v > 0]:
        region = rois == label
        use = region & used
        if not use.any():
            out[label] = (float("nan"), float("nan"))
            continue
        unit = region.astype(np.float32)
        chi_r = float(np.mean(np.asarray(chi)[region]))
        g_model = field(unit, model_faces, depth_mm)[use]
        rest = model[use] - chi_r * g_model
        g = (g_model if list(region_faces) == list(model_faces)
             else field(unit, region_faces)[use]).astype(float)
        info = float(np.sum(w2[use] * g**2))
        if not info > 0:
            out[label] = (float("nan"), float("inf"))
            continue
        value = float(np.sum(w2[use] * (local_ppm[use] - rest) * g)) / info
        se = float("nan")
        if sd_ppm is not None:
            se = float(sd_ppm) / np.sqrt(info)
            # Birge ratio: where the region's field scatters more than its weights say (the
            # Cramér–Rao SD of a voxel with one echo near the noise is optimistic; tissue not
            # uniform), the standard error grows with the reduced chi-square of its residual
            n_used = int(np.count_nonzero(w2[use] > 0))
            if n_used > 1:
                resid = local_ppm[use] - rest - value * g
                chi2 = float(np.sum(w2[use] * resid**2)) / float(sd_ppm) ** 2
                se *= float(np.sqrt(max(1.0, chi2 / (n_used - 1))))
        out[label] = (value, se)
    return out


def _refit_regions_to_own_field(chi, local_ppm, mask, weight, rois, voxel_size, b0_dir, faces,
                                depth_mm, *, guard, sd_ppm, se_limit_ppm, level_shift=0.0):
    """Apply :func:`own_field_estimates` to the regions of ``chi`` (returns chi, info)."""
    used = mask & ~guard & (np.asarray(weight) > 0)
    estimates = own_field_estimates(local_ppm, chi, weight, rois, used, voxel_size, b0_dir,
                                    model_faces=faces, depth_mm=depth_mm,
                                    region_faces=faces, sd_ppm=sd_ppm)
    chi = np.array(chi, dtype=np.float64)
    info = {}
    for label, (value, se) in estimates.items():
        applied = bool(np.isfinite(value)
                       and se <= max(se_limit_ppm,
                                     OWN_FIELD_SE_FRACTION * abs(value + level_shift)))
        region = np.asarray(rois) == label
        joint = float(np.mean(chi[region]))
        if applied:
            chi[region] = value
        info[str(label)] = {"joint_ppm": joint, "own_ppm": value, "se_ppm": se,
                            "applied": applied}
    return chi, info


def _with_reference_region(rois, reference_mask, mask, voxel_size, face_guard_mm):
    """``rois`` with the reference region (outside every region and the guard band) as one
    more region of constant susceptibility; returns ``(rois, n_voxels)``.

    The reference sets the level of every reported χ. Solved voxel by voxel it is the least
    determined part of the map: subcutaneous fat lies at the body's surface, next to the air
    whose field the model explains least well (partial volume, skin), and run to convergence
    its voxels absorb that misfit — on the independent abdomen the fat ring drifted −0.3 ppm
    against the tissue inside, reading every liver patch 0.3 ppm high. Subcutaneous fat is
    one tissue of nearly uniform susceptibility; one value fitted to all its voxels' fields
    cannot follow the misfit of a few."""
    region = np.asarray(reference_mask, bool) & mask
    if face_guard_mm > 0:
        region &= ~face_band(mask, voxel_size, face_guard_mm)
    out = np.zeros(mask.shape, np.int64) if rois is None else np.array(rois, np.int64)
    region &= out == 0
    if not region.any():
        return rois, 0
    out[region] = int(out.max()) + 1
    return out, int(region.sum())


def _reference_shift(chi, reference_mask, mask, voxel_size, face_guard_mm, reference_chi_ppm):
    """``(shift, n_voxels)``: the constant that sets the mean of ``chi`` over the reference
    region (inside ``mask``; outside the guard band, where χ is not fitted to data, when
    any of it lies inside) to ``reference_chi_ppm``."""
    ref = np.asarray(reference_mask, dtype=bool) & mask
    if face_guard_mm > 0 and (ref & ~face_band(mask, voxel_size, face_guard_mm)).any():
        ref &= ~face_band(mask, voxel_size, face_guard_mm)
    if not ref.any():
        raise InputError(
            "the QSM reference region has no voxel inside the analysed mask; choose "
            "another reference"
        )
    return float(reference_chi_ppm - np.asarray(chi)[ref].mean()), int(ref.sum())


def _registered(package, name: str, what: str, own: str):
    """The method ``name`` of ``package.METHODS``, or an InputError naming the choices."""
    methods = getattr(package, "METHODS", {})
    if name not in methods:
        raise InputError(f"unknown {what} {name!r}; choose {own!r} or one of "
                         + ", ".join(methods))
    return methods[name]


def liver_qsm(
    field_hz,
    mask,
    voxel_size: Sequence[float],
    *,
    b0_dir: Sequence[float] = (0.0, 0.0, 1.0),
    b0_tesla: float,
    weight=None,
    rois=None,
    background: str = "air",
    invert: str = "wls",
    air: str = "fixed",
    harmonic_order: int = 0,
    lam: float = 1e-2,
    tol: float = 1e-4,
    max_iter: int = 400,
    reference_mask=None,
    reference_chi_ppm: float = 0.0,
    bgremove_options: Mapping | None = None,
    invert_options: Mapping | None = None,
    continue_body: bool = False,
    continue_mm: float | None = None,
    face_guard_mm: float = 0.0,
    beyond_mm: float = 0.0,
    own_field: bool = True,
    weight_sd_hz: float | None = None,
    own_field_se_limit_ppm: float = OWN_FIELD_SE_LIMIT_PPM,
    constant_reference: bool = True,
) -> LiverQSM:
    """Liver susceptibility from a chemical-shift-free field map.

    The default, ``background="air"``, fits the total field inside the body jointly as the
    dipole field of (i) the tissue susceptibility, voxel by voxel, constant within each region
    of ``rois``; (ii) air in every signal-free region — around the body and in the lungs and
    bowel — with the susceptibility of air, +9.4 ppm relative to water (``air="fixed"``), or
    one free value per air region (``air="free"``); and (iii) a constant frequency offset plus,
    with ``harmonic_order`` 1 or 2, harmonic terms for shims and sources far outside the field
    of view. This is a total-field formulation (in the spirit of Liu 2018's TFI) adapted to the
    abdomen, where the background comes from large air volumes of known susceptibility that
    touch the liver, and where projection methods (PDF) remove much of the liver's own,
    spatially extended field. Fixing air's susceptibility references χ to water. The
    minimisation is weighted least squares (``weight``, e.g. the fat- and decay-aware
    :meth:`FatWaterFit.field_weight`) with a gradient penalty ``lam`` (ppm^2 mm^2 per ppm^2)
    between voxels outside the regions, except across the largest jumps of the data weight
    (:func:`_structural_edges`: tissue boundaries, where χ may jump); a region of vanished
    signal (weight ~0) then gets its susceptibility from the field it produces in the tissue
    around it.

    A slab through the abdomen cuts the body: the liver, spleen and body wall continue beyond
    it along B0. Modelling them as ending at the slab's faces puts fictitious sources (the
    ends of every column of tissue) next to the data, which the fit then absorbs into the
    regions' susceptibilities — a bias that grows with χ. With ``continue_body`` (default) the
    body, its air and its tissue susceptibility are continued beyond every face the body runs
    through (:func:`continuing_faces`), for the whole padding: the outermost slice is the best
    available estimate of the anatomy just outside the field of view.

    ``background`` may instead name a method of :data:`qsmkit.bgremove.METHODS` ("pdf",
    "lbv", ...), whose local field is then inverted by ``invert``: "wls" (the same weighted
    least squares, regions constant) or a method of :data:`qsmkit.inversion.METHODS`.
    Without fixed air the result is referenced by ``reference_mask`` (mean set to
    ``reference_chi_ppm``) or, if none is given, to the mean over the mask.

    Parameters
    ----------
    field_hz : (X, Y, Z) float, Hz — total field (e.g. :attr:`FatWaterFit.field_hz`)
    mask : (X, Y, Z) bool — the body without air, including the liver where its signal has
        gone (its weight is then ~0)
    voxel_size : 3 floats, mm
    b0_dir : B0 direction in voxel coordinates
    b0_tesla : float, T
    weight : (X, Y, Z) float, optional — data weight
    rois : (X, Y, Z) int, optional — regions of constant susceptibility (e.g. liver labels)
    face_guard_mm : data within this distance of the faces the body runs through are left
        out of the fit (:func:`face_band`) and of the reference mean
    own_field : with ``background="air"`` and ``rois``, refit each region to its own field
        (:func:`own_field_estimates`) and keep that value where its standard error is at
        most ``own_field_se_limit_ppm``; ``info["own_field"]`` lists every region's
        correction, standard error and whether it was applied
    weight_sd_hz : field SD (Hz) of a voxel of weight 1, for those standard errors (without
        it no region is refitted)
    max_iter : conjugate-gradient iterations (400; preconditioned by
        :func:`_fourier_preconditioner`). The solve usually stops here rather than at
        ``tol``; early stopping also regularises (Hanke 1995). Run on to 3000 iterations the
        level of the liver moves by up to 0.08 ppm on the independent abdomen
        (``docs/liver.md`` Limitations)
    constant_reference : with ``background="air"``, solve the ``reference_mask`` (outside
        ``rois``) as one region of constant χ (:func:`_with_reference_region`). Voxel by voxel,
        subcutaneous fat at the body's surface takes up the misfit there as the iterations go
        on: +0.3 ppm on every liver patch at 3000 iterations against +0.05 as one region
    beyond_mm : with ``background="air"``, also fit free sources in a layer this deep beyond
        each face the body runs through (:func:`continuing_faces`), as PDF does outside a
        brain (Liu 2011): the continuation of the slab's tissue and the lung bases over the
        liver dome. Their field is harmonic inside the slab, so it cannot mimic a region's
        own field away from the faces; it is part of the background

    References
    ----------
    Liu Z, Kee Y, Zhou D, Wang Y, Spincemaille P. Preconditioned total field inversion (TFI)
    method for quantitative susceptibility mapping. Magn Reson Med 2017;78:303-315.
    Hernando D, Cook RJ, Diamond C, Reeder SB. Magnetic susceptibility as a B0 field strength
    independent MRI biomarker of liver iron overload. Magn Reson Med 2013;70:648-656.
    Liu T, Khalidov I, de Rochefort L, et al. A novel background field removal method for MRI
    using projection onto dipole fields (PDF). NMR Biomed 2011;24:1129-1136.
    """
    from qsmkit.units import hz_to_ppm

    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 3 or not mask.any():
        raise InputError("liver QSM needs a non-empty 3D body mask")
    field = np.asarray(field_hz, dtype=np.float64)
    if field.shape != mask.shape:
        raise InputError(f"field shape {field.shape} differs from mask shape {mask.shape}")
    if not np.all(np.isfinite(field[mask])):
        raise InputError("the field map has NaN or Inf values inside the mask")
    if air not in ("fixed", "free"):
        raise InputError(f"air must be 'fixed' or 'free', got {air!r}")
    if harmonic_order not in (0, 1, 2):
        raise InputError(f"harmonic_order must be 0, 1 or 2, got {harmonic_order}")
    if not lam >= 0:
        raise InputError(f"lam must be non-negative, got {lam}")
    bdir = np.asarray(b0_dir, dtype=float)
    bdir = bdir / np.linalg.norm(bdir)
    w = None if weight is None else np.where(mask, np.asarray(weight, dtype=np.float64), 0.0)
    if rois is not None:
        rois = np.where(mask, np.asarray(rois), 0).astype(np.int64)
    field_ppm = np.where(mask, hz_to_ppm(field, b0_tesla), 0.0)
    faces = continuing_faces(mask) if continue_body else []
    if face_guard_mm > 0 and w is not None:
        w = w * ~face_band(mask, voxel_size, face_guard_mm)
    info = {"background": background, "invert": invert, "lam": lam,
            "face_guard_mm": float(face_guard_mm), "beyond_mm": float(beyond_mm),
            "continued_faces": [[int(a), int(s)] for a, s in faces],
            "roi_labels": [] if rois is None else [int(v) for v in np.unique(rois) if v > 0]}
    referenced_to = None

    if background == "air":
        columns = _harmonics(mask.shape, voxel_size, harmonic_order)
        n_harm = len(columns)
        if air == "fixed":
            (air_field,) = air_field_ppm(mask, voxel_size, bdir, faces=faces,
                                         depth_mm=continue_mm)
            data = field_ppm - CHI_AIR_PPM * air_field
        else:
            columns = air_field_ppm(mask, voxel_size, bdir, separate=True,
                                    faces=faces, depth_mm=continue_mm) + columns
            data = field_ppm
        solve_rois = rois
        if reference_mask is not None and constant_reference:
            solve_rois, info["reference_solved_as_region"] = _with_reference_region(
                rois, reference_mask, mask, voxel_size, face_guard_mm)
        chi, coef, its, outer_field = _solve_susceptibility(
            data, mask, voxel_size, bdir, w, solve_rois, columns, lam=lam, tol=tol,
            max_iter=max_iter, faces=faces, depth_mm=continue_mm,
            beyond=continuing_faces(mask) if beyond_mm > 0 else (), beyond_mm=beyond_mm,
        )
        background_ppm = field_ppm - data + outer_field + sum(
            c * col for c, col in zip(coef, columns, strict=True))
        local_ppm = np.where(mask, field_ppm - background_ppm, 0.0)
        if own_field and rois is not None and weight_sd_hz is not None and w is not None:
            chi, info["own_field"] = _refit_regions_to_own_field(
                chi, local_ppm, mask, w, rois, voxel_size, bdir, faces,
                continue_mm, guard=face_band(mask, voxel_size, face_guard_mm)
                if face_guard_mm > 0 else np.zeros(mask.shape, bool),
                sd_ppm=float(hz_to_ppm(weight_sd_hz, b0_tesla)),
                se_limit_ppm=own_field_se_limit_ppm,
                # the relative limit applies to χ as it will be reported (referenced)
                level_shift=0.0 if reference_mask is None else _reference_shift(
                    chi, reference_mask, mask, voxel_size, face_guard_mm,
                    reference_chi_ppm)[0])
        info.update(air=air, harmonic_order=harmonic_order, iterations=int(its),
                    background_coefficients=[float(c) for c in coef])
        if air == "free":
            info["air_chi_ppm_fitted"] = [float(c) for c in coef[: len(columns) - n_harm]]
        qmask = mask
        if air == "fixed":
            referenced_to = f"air (+{CHI_AIR_PPM} ppm relative to water)"
    else:
        import qsmkit.bgremove as bgremove_pkg

        bg = _registered(bgremove_pkg, background, "background removal", "air")(
            np.where(mask, field, 0.0), mask, voxel_size, b0_dir=bdir, weight=w,
            **dict(bgremove_options or {})
        )
        qmask = np.asarray(bg.mask, dtype=bool)
        local_ppm = np.where(qmask, hz_to_ppm(np.asarray(bg.field_hz, float), b0_tesla), 0.0)
        w_q = None if w is None else np.where(qmask, w, 0.0)
        if invert == "wls":
            chi, _, its, _ = _solve_susceptibility(
                local_ppm, qmask, voxel_size, bdir, w_q, rois, _harmonics(qmask.shape,
                                                                          voxel_size, 0),
                lam=lam, tol=tol, max_iter=max_iter, faces=faces,
                depth_mm=continue_mm,
            )
            info["iterations"] = int(its)
        else:
            import qsmkit.inversion as inversion_pkg

            chi = _registered(inversion_pkg, invert, "inversion", "wls")(
                np.asarray(bg.field_hz, np.float32), qmask, voxel_size, b0_dir=bdir,
                b0_tesla=b0_tesla, weight=w_q, **dict(invert_options or {}),
            )
        info["bgremove_info"] = getattr(bg, "info", {})

    chi = np.asarray(chi, dtype=np.float64)
    if reference_mask is not None:
        shift, n_ref = _reference_shift(chi, reference_mask, qmask, voxel_size, face_guard_mm,
                                        reference_chi_ppm)
        chi = chi + shift
        referenced_to = f"reference region set to {reference_chi_ppm:+.3f} ppm"
        info["reference_voxels"] = n_ref
    elif referenced_to is None:
        chi = chi + (reference_chi_ppm - chi[qmask].mean())
        referenced_to = f"mean over the mask set to {reference_chi_ppm:+.3f} ppm"
    from qsmkit.units import ppm_to_hz

    return LiverQSM(
        chi_ppm=np.where(qmask, chi, 0.0).astype(np.float32),
        local_field_hz=np.asarray(ppm_to_hz(local_ppm, b0_tesla), dtype=np.float32),
        mask=qmask,
        reference=referenced_to,
        info=info,
    )


