"""Liver iron and fat: R2*, published R2*→LIC calibrations, liver QSM and the region table.

Two independent routes to the liver iron concentration (LIC, mg Fe per g dry liver):

* **R2***: the fat-corrected R2* of :class:`qsmkit.body.fatwater.FatWaterModel` through an
  empirical, field-specific calibration (:data:`R2STAR_CALIBRATIONS`). Beyond the R2* that the
  echo times can measure (:func:`r2star_limit_per_s`) the signal has gone before enough echoes
  and the value is flagged, not trusted.
* **QSM**: the chemical-shift-free field map of the fat–water fit → a joint, air-aware model
  of the total field (tissue susceptibility inside the body, air of known or fitted
  susceptibility in every signal-free region, a frequency offset and harmonic terms;
  :func:`liver_qsm`) weighted by the Cramér–Rao precision of the field (fat- and
  decay-aware, near zero where the liver signal has vanished, so that the liver's
  susceptibility is then carried by the field it produces around it) → one susceptibility
  per analysed region, as in susceptometry → referencing to subcutaneous fat (or air) → LIC
  by the iron susceptibility slope after removing the fat contribution (:func:`lic_from_chi`).
  PDF or LBV followed by any inversion of :mod:`qsmkit.inversion` remain selectable; on the
  abdomen they remove much of the liver's own, spatially extended field (``docs/liver.md``).

Calibrations
------------
The R2*→LIC and χ→LIC calibrations, their citations, field strengths and valid ranges, and
the susceptibility of fat live in :mod:`qsmkit.body.calibration` (re-exported here). The
default χ→LIC slope is the in-vivo liver-QSM calibration (0.112 ppm per mg Fe/g dw, Buelo
2025); the physical slope 0.48 ppm per mg/g (SQUID, per wet weight / 3.33) is the option
``chi_slope="physical"``.

References
----------
Wood JC, Enriquez C, Ghugre N, et al. MRI R2 and R2* mapping accurately estimates hepatic iron
concentration in transfusion-dependent thalassemia and sickle cell disease patients. Blood
2005;106:1460-1465.
Hankins JS, McCarville MB, Loeffler RB, et al. R2* magnetic resonance imaging of the liver in
patients with iron overload. Blood 2009;113:4853-4855.
Hernando D, Zhao R, Yuan Q, et al. Multicenter reproducibility of liver iron quantification
with 1.5-T and 3.0-T MRI. Radiology 2023;306:e213256.
Storey P, Thompson AA, Carqueville CL, et al. R2* imaging of transfusional iron burden at 3T
and comparison with 1.5T. J Magn Reson Imaging 2007;25:540-547.
Hernando D, Cook RJ, Diamond C, Reeder SB. Magnetic susceptibility as a B0 field
strength independent MRI biomarker of liver iron overload. Magn Reson Med 2013;70:648-656.
Sharma SD, Fischer R, Schoennagel BP, et al. MRI-based quantitative susceptibility mapping
(QSM) and R2* mapping of liver iron overload: comparison with SQUID-based biomagnetic liver
susceptometry. Magn Reson Med 2017;78:264-270.
Buelo CJ, Velikina J, Mao L, et al. Multicenter, multivendor validation of liver quantitative
susceptibility mapping in patients with iron overload at 1.5 T and 3 T. Magn Reson Med
2025;93:330-340.
Brittenham GM, Farrell DE, Harris JW, et al. Magnetic-susceptibility measurement of human
iron stores. N Engl J Med 1982;307:1671-1675.
Bauman JH, Harris JW. Estimation of hepatic iron stores by in vivo measurement of magnetic
susceptibility. J Lab Clin Med 1967;70:246-257.
Fischer R, Harmatz PR. Non-invasive assessment of tissue iron overload. Hematology Am Soc
Hematol Educ Program 2009:215-221.
Hopkins JA, Wehrli FW. Magnetic susceptibility measurement of insoluble solids by NMR:
magnetic susceptibility of bone. Magn Reson Med 1997;37:494-500.
Liu T, Khalidov I, de Rochefort L, et al. A novel background field removal method for MRI
using projection onto dipole fields (PDF). NMR Biomed 2011;24:1129-1136.
Reeder SB, Hu HH, Sirlin CB. Proton density fat-fraction: a standardized MR-based biomarker of
tissue fat concentration. J Magn Reson Imaging 2012;36:1011-1014.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from qsmkit.body.calibration import (  # noqa: F401  (re-exported: public names of this module)
    CHI_FAT_PPM,
    CHI_LIC_CALIBRATIONS,
    CHI_LIC_SLOPES,
    CHI_PER_LIC_INVIVO_PPM,
    CHI_PER_LIC_PHYSICAL_PPM,
    CHI_PER_LIC_PPM,
    CHI_PER_LIC_WET_PPM,
    DEFAULT_CHI_LIC,
    LIC_DRY_PER_WET,
    R2STAR_CALIBRATIONS,
    R2starCalibration,
    calibration_spread,
    chi_from_lic,
    chi_lic_slope,
    lic_from_chi,
    lic_from_r2star,
    lic_from_r2star_checked,
    r2star_from_lic,
    select_calibration,
)
from qsmkit.body.liver_qsm import (  # noqa: F401  (re-exported)
    BEYOND_MM,
    CHI_AIR_PPM,
    FACE_GUARD_MM,
    LiverQSM,
    air_field_ppm,
    air_padding,
    liver_qsm,
)
from qsmkit.body.segment import (  # noqa: F401
    body_mask,
    decayed_tissue,
    find_liver,
    subcutaneous_fat_mask,
)
from qsmkit.errors import InputError
from qsmkit.qc import QCWarning


# -- R2* ---------------------------------------------------------------------------------------
def r2star_monoexp(magnitude, echo_times_s, mask=None) -> tuple[np.ndarray, np.ndarray]:
    """Uncorrected mono-exponential R2* (s^-1) and S0 by weighted log-linear least squares.

    ``log|s(t)| = log S0 - R2* t`` fitted with weights ``|s|^2`` (the variance of
    ``log|s|`` is ~``sigma^2/|s|^2``). This is the clinical "simple" R2*: it ignores fat, whose
    chemical shift modulates the magnitude, and the noise floor; it is provided to show those
    biases next to the fat-corrected R2* of the fat–water fit.
    """
    mag = np.asarray(magnitude, dtype=np.float64)
    tes = np.atleast_1d(np.asarray(echo_times_s, dtype=float))
    if mag.ndim != 4 or mag.shape[3] != tes.size or tes.size < 2:
        raise InputError(
            f"mono-exponential R2* needs (X, Y, Z, E) magnitude with E >= 2 matching the echo "
            f"times; got {mag.shape} and {tes.size} echo times"
        )
    mask = np.ones(mag.shape[:3], bool) if mask is None else np.asarray(mask, bool)
    s = np.maximum(mag[mask], 1e-12)
    w = s**2
    y = np.log(s)
    sw = w.sum(axis=1)
    st = (w * tes).sum(axis=1)
    stt = (w * tes**2).sum(axis=1)
    sy = (w * y).sum(axis=1)
    sty = (w * tes * y).sum(axis=1)
    det = sw * stt - st**2
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = np.where(det > 0, (sw * sty - st * sy) / det, 0.0)
        icpt = np.where(sw > 0, (sy - slope * st) / sw, 0.0)
    r2 = np.zeros(mag.shape[:3], np.float32)
    s0 = np.zeros(mag.shape[:3], np.float32)
    r2[mask] = -slope
    s0[mask] = np.exp(icpt)
    return r2, s0


def r2star_limit_per_s(echo_times_s, snr0, *, min_echoes: int = 3, snr_floor: float = 3.0):
    """Largest R2* (s^-1) that the echo times can measure at signal-to-noise ``snr0``.

    R2* is measurable while the signal ``S0 exp(-R2* TE_k)`` stays at least ``snr_floor`` times
    the noise up to the ``min_echoes``-th echo: ``R2*_max = ln(snr0 / snr_floor) / TE_k``.
    Beyond it fewer than ``min_echoes`` echoes carry signal and the decay (hence the LIC by
    R2*) is not determined. ``snr0`` is ``S0 / sigma`` (sigma: per-channel noise SD).
    """
    tes = np.atleast_1d(np.asarray(echo_times_s, dtype=float))
    if not 2 <= min_echoes <= tes.size:
        raise InputError(
            f"min_echoes must be between 2 and the number of echoes ({tes.size}), got {min_echoes}"
        )
    ratio = np.maximum(np.asarray(snr0, dtype=float) / snr_floor, 1.0)
    return np.log(ratio) / tes[min_echoes - 1]


# -- the analysis and its table ---------------------------------------------------------------
TABLE_COLUMNS = (
    "label", "n_voxels", "pdff_percent", "r2star_per_s", "r2star_in_range", "chi_ppm",
    "lic_r2star", "lic_qsm", "pdff_sd_percent", "estimate", "flags", "chi_se_ppm",
)
"""Columns of ``liver.tsv``. PDFF and its SD always come from the region's pooled complex fit
(:func:`qsmkit.body.region_fit.region_fatwater_fit`: unbiased where voxel PDFFs are not).
``estimate`` says where R2* comes from: "voxels" (median of the voxel fits) or "pooled" (the
pooled fit, where the signal has decayed before the third echo); ``flags`` lists, separated
by ";", ``low_signal`` (pooled estimate),
``pdff_uncertain`` (SD of PDFF above :data:`PDFF_SD_LIMIT_PERCENT`), ``r2star_out_of_range``
(LIC by R2* not trustworthy), ``chi_from_surroundings`` (the region's own field does not
measure its χ: standard error above
:data:`~qsmkit.body.liver_qsm.OWN_FIELD_SE_LIMIT_PPM`, or, without that refit, mean weight
below :data:`CHI_WEIGHT_FLAG`, or a median weight below it in a silent area larger than
:data:`LARGE_REGION_ML`: :func:`silent_area_ml`),
``chi_low_snr`` (the region's first echo is within
:data:`CHI_LOW_SNR` noise SDs: its field comes from the phase of that echo alone, which is
biased towards the surroundings there, and ``chi_se_ppm`` does not cover that),
``chi_first_echo_decayed`` (less than :data:`CHI_DECAYED_FRACTION` of the region's signal
is left at the first echo: biased towards the surroundings by partial volume at any SNR) and
``no_r2star_calibration`` (no published R2*→LIC calibration near the data's field: LIC by
R2* is NaN, the rest of the row stands), ``lic_r2star_calibration_spread`` (published
calibrations, those of the other field applied
to the R2* of the same LIC there, disagree by more than :data:`LIC_CALIBRATION_SPREAD` of the
value: near-normal iron; :func:`~qsmkit.body.calibration.calibration_spread`),
``fat_water_ill_conditioned`` (on every row when the echo spacing is too close to fat–water
in phase: effective NSA below :data:`~qsmkit.body.echo_train.NSA_LIMIT`, Pineda 2005),
``chi_implausible`` (χ less its fat part below :data:`CHI_IMPLAUSIBLE_PPM`: iron-free liver
is near the reference's zero and iron only raises χ, so the map's level is wrong there) and
``no_signal`` (nothing measurable). ``chi_se_ppm`` is the
standard error of the region's χ from its own field (noise only; NaN when not refitted)."""

MIN_ECHOES = 4
"""Echoes that :func:`analyse_liver` needs: one more than the three complex unknowns per voxel
(water, fat, field + i R2*/2π), so that noise and misfit can be measured; confounder-corrected
PDFF and R2* protocols use six (Reeder 2012; Hernando 2023)."""

CHI_WEIGHT_FLAG = 0.05
"""A region whose mean QSM data weight is below 5 % of the body's median is flagged
``chi_from_surroundings``: its own field says almost nothing, so its χ rests on the field
it produces around it, which depends on the model of the anatomy outside the region
(``docs/liver.md``)."""

LARGE_REGION_ML = 50.0
"""A region whose median QSM data weight is below :data:`CHI_WEIGHT_FLAG` of the body's median
and which lies in a silent area larger than 50 mL (a sphere of 4.6 cm) is flagged
``chi_from_surroundings`` even where its refit to its own field looks precise. A small
region (a nodule, a 10 mm patch, a drawn ROI in normal liver) is measured by the field it
makes in the tissue around it; a large one, a whole liver whose iron has taken its signal,
makes its field mostly inside itself, and the organs around it have a χ of their own that
the fit can move instead. Measured on the independent abdomen (full slab, 1.5 T, SNR 60,
whole liver at LIC 30 mg/g, R2* 1130 1/s, median weight 1.3 % of the body's): the automatic
liver read χ 0.08 ppm for 3.0 (LIC by QSM 0.1 for 30) with no flag; the wall, spleen and
kidneys sat 1 ppm low. The rule counts the silent area a region lies in
(:func:`silent_area_ml`), so that an ROI drawn inside such a liver is flagged whatever its
size; ROIs of 1, 6 and 27 mL there were also refused by their own-field refit (standard
error 1.9, 0.71, 0.25 ppm), which the whole liver passes (0.002 ppm). Open: measuring such a
liver (docs/liver.md, Limitations)."""


def silent_area_ml(weight, qsm_mask, region, voxel_size, body_median_weight: float) -> float:
    """Volume (mL) of the silent area that ``region`` lies in, 0 where it is measured.

    Silent voxels are those of ``qsm_mask`` whose QSM weight is below :data:`CHI_WEIGHT_FLAG`
    of ``body_median_weight``. A region whose median voxel is silent lies in the connected
    silent components it touches, and their volume, with the region's own, is returned:
    more than :data:`LARGE_REGION_ML` means that neither the region nor the tissue around it
    measures its χ. On the independent abdomen the iron-rich 10 mm patches are silent
    islands of at most 6.4 mL; a whole liver of LIC 30 at 1.5 T is one of about 200 mL.
    """
    from scipy import ndimage

    weight = np.asarray(weight, dtype=float)
    region = np.asarray(region, dtype=bool)
    silent = np.asarray(qsm_mask, dtype=bool) & (weight < CHI_WEIGHT_FLAG * body_median_weight)
    if not region.any() or not silent[region].sum() * 2 > region.sum():
        return 0.0
    lab, _ = ndimage.label(silent)
    touched = np.unique(lab[region & silent])
    area = np.isin(lab, touched[touched > 0]) | region
    return float(area.sum() * np.prod(np.asarray(voxel_size, dtype=float)) / 1000.0)


LIC_CALIBRATION_SPREAD = 0.15
"""Where the published R2*→LIC calibrations disagree by more than 15 % of the value (normal
and near-normal iron, where their intercepts differ: below about 2.7 mg/g at 1.5 T and at 3 T,
where the 1.5 T calibrations count with the R2* carried to 1.5 T),
``lic_r2star_calibration_spread`` is flagged: LIC by R2* is known there only to the choice of
calibration (15 %: the accuracy asked of LIC by R2* in docs/liver.md)."""

CHI_LOW_SNR = 5.0
"""First-echo amplitude SNR (amplitude over the per-channel noise SD, from the region's mean
power less the noise) below which ``chi_low_snr`` is flagged: 5, the Rose criterion for a
signal to be told from noise with certainty (Rose 1948; the echo's phase SD is then 0.2 rad).
Below it the region's field comes from the phase of a first echo close to the noise; its χ is
biased towards the surroundings, and ``chi_se_ppm`` does not cover that. Measured on the
independent abdomen at 3 T with the noise SD estimated within 5 % (LIC 35 mg/g, R2* 2740 1/s,
first echo at TE 1.2 ms ≈ 4 % of the signal): at SNR 60 first-echo SNRs 1.9–4.2 and χ within
−13…+6 %; at SNR 30 SNRs 0.9–2.1 and χ −8…−20 %; the LIC ≤ 20 rows (SNR ≥ 8 at SNR 60) within
0.09 ppm.

Rose A. The sensitivity performance of the human eye on an absolute scale. J Opt Soc Am
1948;38:196-208."""

CHI_DECAYED_FRACTION = 0.1
"""A region whose signal at the first echo is below 10 % of its own at TE = 0
(``exp(-R2* TE1)``, from the region's R2*) is flagged ``chi_first_echo_decayed``, whatever
its SNR: its field comes from that echo's phase, and signal from brighter tissue in the same
voxels (partial volume at its border, the point-spread function of the acquisition) pulls that
phase towards the surroundings' — a bias that more averaging does not remove. Measured on the
independent abdomen at 3 T (LIC 35 mg/g, 4 % of the signal left at 1.2 ms): χ −8…−21 % at SNR
120 on the 4 × 4 × 8 mm slab, where ``chi_low_snr`` no longer fires but on one row, and
−15…+5 % at SNR 60 on the 2 × 2 × 4 mm one; the LIC 20 rows at 3 T (15 % left) within 6 %."""

CHI_IMPLAUSIBLE_PPM = -0.3
"""A region whose χ less its fat part (``0.6 ppm × PDFF``) is below −0.3 ppm is flagged
``chi_implausible``: liver without iron is near water (the reference's zero) and iron only
raises χ, so a value that far below says that the level of the map is wrong there, not the
iron; its LIC by QSM (−2.7 mg/g or less with the in-vivo slope) is then meaningless. The
margin is three times the level error measured on the standard independent abdomen (≤ 0.1
ppm) and covers the fat-susceptibility convention (0.05 ppm). Measured on the independent
cirrhotic liver (LIC 5, χ 0.44 ppm) with ``--nodules``: the liver row read −0.97 ppm (LIC by
QSM −8.7 mg/g) with no flag (docs/liver.md, Limitations: the χ of a large organ)."""

PDFF_NOT_MEASURED_SD_PERCENT = 10.0
"""Above this SD (points) a pooled PDFF is reported as NaN (flag ``pdff_uncertain`` kept)."""

PDFF_SD_LIMIT_PERCENT = 1.0
"""PDFF is flagged uncertain when its SD exceeds 1 point (its 95 % interval then exceeds the
±2 points within which PDFF methods agree with MR spectroscopy; Yokoo 2018)."""


def region_measurable(magnitude, s0, region, r2star_roi: float, echo_times_s, noise_sd: float,
                      limit_map=None, *, min_echoes: int = 3, snr_floor: float = 3.0) -> bool:
    """Whether voxel fits can measure the R2* of ``region`` (see
    :meth:`LiverAnalysis.r2star_measurable`)."""
    region = np.asarray(region, dtype=bool)
    sigma = noise_sd
    if not np.isfinite(sigma) or sigma <= 0:
        if limit_map is None:
            return True
        return bool(r2star_roi <= float(np.median(limit_map[region])))
    snr0 = float(np.median(s0[region])) / sigma
    limit = float(r2star_limit_per_s(echo_times_s, snr0, min_echoes=min_echoes,
                                     snr_floor=snr_floor))
    late = float(np.mean(magnitude[..., min_echoes - 1][region]))
    return bool(r2star_roi <= limit and late > 2.0 * 1.2533 * sigma)


@dataclasses.dataclass
class LiverAnalysis:
    """Every map of :func:`analyse_liver` (all (X, Y, Z), float32 unless stated) and the
    regions analysed (``regions``: label -> bool mask; ``rows``: :data:`TABLE_COLUMNS`)."""

    water: np.ndarray
    fat: np.ndarray
    pdff_percent: np.ndarray
    field_hz: np.ndarray
    fit_field_hz: np.ndarray
    r2star_per_s: np.ndarray
    r2star_monoexp_per_s: np.ndarray
    r2star_limit_per_s: np.ndarray
    r2star_in_range: np.ndarray
    chi_ppm: np.ndarray
    local_field_hz: np.ndarray
    lic_r2star: np.ndarray
    lic_qsm: np.ndarray
    body_mask: np.ndarray
    qsm_mask: np.ndarray
    reference_mask: np.ndarray
    weight: np.ndarray
    s0: np.ndarray
    magnitude: np.ndarray
    phase: np.ndarray
    echo_times_s: np.ndarray
    b0_tesla: float
    noise_sd: float
    calibration: R2starCalibration | None
    chi_slope_ppm: float
    regions: dict
    rows: list
    info: dict
    pooled: dict = dataclasses.field(default_factory=dict)
    field_sd_hz: np.ndarray | None = None
    voxel_size_mm: tuple = (1.0, 1.0, 1.0)
    region_fits: dict = dataclasses.field(default_factory=dict)
    initial_signal: np.ndarray | None = None  # complex64, water + fat at TE = 0
    initial_phase_good: np.ndarray | None = None  # bool, where its phase is well measured

    def region_row(self, label, region, *, min_echoes: int = 3, snr_floor: float = 3.0) -> dict:
        """One row of the table for a boolean ``region`` (see :data:`TABLE_COLUMNS`).

        PDFF is the region's pooled complex fit (:meth:`pooled_fit`) with its Cramér–Rao SD:
        the mean of voxel PDFFs is biased upwards near 0 % wherever single voxels are noisy
        (each voxel's ratio is clipped at 0; Liu 2007), the pooled fit eliminates each voxel's
        complex amplitude and has no such floor. R2* is the region median of the voxel fits
        (robust to partial volume) while the echoes measure it, the pooled R2* beyond; χ is
        the region mean; both LICs are computed from those region values.
        """
        region = np.asarray(region, dtype=bool) & self.body_mask
        n = int(region.sum())
        if n == 0:
            return {"label": label, "n_voxels": 0, "pdff_percent": float("nan"),
                    "r2star_per_s": float("nan"), "r2star_in_range": False,
                    "chi_ppm": float("nan"), "lic_r2star": float("nan"),
                    "lic_qsm": float("nan"), "pdff_sd_percent": float("nan"),
                    "estimate": "none", "flags": "no_signal",
                    "chi_se_ppm": float("nan")}
        flags = []
        pooled = self.pooled.get(label)
        r2 = float(np.median(self.r2star_per_s[region]))
        # voxel fits serve while the echoes measure the region's R2*; beyond, the pooled fit
        measured = pooled is None and self.r2star_measurable(
            region, r2, min_echoes=min_echoes, snr_floor=snr_floor)
        if pooled is None and not measured:
            pooled = self.pooled_fit(region)
        if pooled is None:
            whole = self.region_fits.get(label)
            if whole is None:
                whole = self.region_fits[label] = self.pooled_fit(region)
            if np.isfinite(whole.pdff_percent):
                pdff, pdff_sd = float(whole.pdff_percent), float(whole.pdff_sd_percent)
            else:  # nothing detected by the pooled fit: the voxel mean, as the map shows
                pdff = float(np.mean(self.pdff_percent[region]))
                pdff_sd = float(np.std(self.pdff_percent[region]) / np.sqrt(n))
            estimate = "voxels"
        else:
            flags.append("low_signal")
            pdff, pdff_sd, r2 = pooled.pdff_percent, pooled.pdff_sd_percent, pooled.r2star_per_s
            # the pooled R2* counts as measured when its own precision is 5 % or better (a
            # third of the 15 % within which calibrations agree with biopsy) and the fat
            # fraction it is coupled with is known to 2 points: with one or two echoes left,
            # R2* and fat trade off and the Cramér–Rao SD misses the model's bias
            measured = bool(np.isfinite(r2) and pooled.r2star_sd_per_s <= 0.05 * r2
                            and pooled.pdff_sd_percent <= 2.0 * PDFF_SD_LIMIT_PERCENT)
            estimate = "pooled"
            if not np.isfinite(pdff):
                flags.append("no_signal")
            elif not (pdff_sd <= PDFF_NOT_MEASURED_SD_PERCENT):
                pdff = float("nan")  # a number the data cannot support is not reported
        cal = self.calibration
        in_range = bool(measured and cal is not None and int(cal.flag(r2)) <= 0)
        if not (pdff_sd <= PDFF_SD_LIMIT_PERCENT):
            flags.append("pdff_uncertain")
        if cal is None:
            flags.append("no_r2star_calibration")
            if not measured:
                flags.append("r2star_out_of_range")
        elif not in_range:
            flags.append("r2star_out_of_range")
        else:
            lo, hi = calibration_spread(r2, cal.b0_tesla)
            lic_r2 = float(cal.lic(r2))
            if float(hi - lo) > LIC_CALIBRATION_SPREAD * max(abs(lic_r2), 1e-6):
                flags.append("lic_r2star_calibration_spread")
        qregion = region & self.qsm_mask
        chi = float(np.mean(self.chi_ppm[qregion])) if qregion.any() else float("nan")
        own = self.info.get("qsm", {}).get("own_field", {}).get(_roi_key(label))
        chi_se = float(own["se_ppm"]) if own else float("nan")
        body_w = self.weight[self.body_mask]
        if own is not None:
            silent = not own["applied"]
        else:  # no refit to the region's own field (a region not fitted as one value)
            silent = bool(qregion.any() and body_w.size and float(np.mean(
                self.weight[qregion])) < CHI_WEIGHT_FLAG * float(np.median(body_w)))
        if not silent and qregion.any() and body_w.size:
            # a large region's field is mostly its own (the field it makes around it falls
            # on other organs, whose χ the fit is free to move): without weight of its own
            # (at the median: patches of less iron inside it do not measure the rest) its χ
            # is not measured. Nor is that of a small region inside such a silent area (an
            # ROI drawn in a liver whose iron has taken its signal): it has no measured
            # tissue around it either
            silent = silent_area_ml(self.weight, self.qsm_mask, qregion, self.voxel_size_mm,
                                    float(np.median(body_w))) > LARGE_REGION_ML
        if silent:
            flags.append("chi_from_surroundings")
        elif np.isfinite(self.noise_sd) and self.noise_sd > 0 and qregion.any():
            power = float(np.mean(self.magnitude[..., 0][qregion].astype(float) ** 2))
            amp = np.sqrt(max(power - 2.0 * self.noise_sd**2, 0.0))
            if amp < CHI_LOW_SNR * self.noise_sd:
                flags.append("chi_low_snr")
        if not silent and np.isfinite(r2) and qregion.any() and (
                np.exp(-r2 * float(np.min(self.echo_times_s))) < CHI_DECAYED_FRACTION):
            flags.append("chi_first_echo_decayed")
        pdff_for_lic = pdff if np.isfinite(pdff) else 0.0
        if not silent and chi - CHI_FAT_PPM * pdff_for_lic / 100.0 < CHI_IMPLAUSIBLE_PPM:
            flags.append("chi_implausible")
        if self.info.get("echo_train", {}).get("ill_conditioned"):
            flags.append("fat_water_ill_conditioned")
        return {
            "label": label,
            "n_voxels": n,
            "pdff_percent": pdff,
            "r2star_per_s": r2,
            "r2star_in_range": in_range,
            "chi_ppm": chi,
            "lic_r2star": float(cal.lic(r2)) if cal is not None else float("nan"),
            "lic_qsm": float(lic_from_chi(chi, pdff_for_lic, slope_ppm=self.chi_slope_ppm)),
            "pdff_sd_percent": pdff_sd,
            "estimate": estimate,
            "flags": ";".join(flags),
            "chi_se_ppm": chi_se,
        }

    def pooled_fit(self, region):
        """:func:`~qsmkit.body.region_fit.region_fatwater_fit` of the voxels of ``region``,
        each demodulated by the regularised field map
        (:func:`~qsmkit.body.region_fit.region_field_hz`) when its precision is known."""
        region = np.asarray(region, dtype=bool) & self.body_mask
        res, known = _region_fit(self.magnitude, self.phase, self.fit_field_hz,
                                 self.field_sd_hz, region, self.echo_times_s, self.b0_tesla,
                                 self.noise_sd, self.voxel_size_mm)
        if self.initial_signal is None or self.initial_phase_good is None:
            return res
        return _with_initial_phase(res, known, self.magnitude, self.phase,
                                   self.initial_signal, self.initial_phase_good, region,
                                   self.echo_times_s, self.b0_tesla, self.noise_sd,
                                   self.voxel_size_mm)

    def r2star_measurable(self, region, r2star_roi: float, *, min_echoes: int = 3,
                          snr_floor: float = 3.0) -> bool:
        """Whether the R2* of ``region`` lies within what the echo times can measure.

        Two conditions: the region's R2* is below :func:`r2star_limit_per_s` at the region's
        median ``S0 / sigma``, and the mean magnitude of the ``min_echoes``-th echo is clearly
        above the noise floor (twice the Rayleigh mean ``1.25 sigma``), which catches decay so
        fast that the fit itself has failed.
        """
        return region_measurable(self.magnitude, self.s0, region, r2star_roi,
                                 self.echo_times_s, self.noise_sd,
                                 self.r2star_limit_per_s, min_echoes=min_echoes,
                                 snr_floor=snr_floor)

    def table(self, regions: Mapping[object, np.ndarray] | None = None) -> list[dict]:
        """Rows for each named region (default: the regions of the analysis)."""
        regions = self.regions if regions is None else regions
        return [self.region_row(label, mask) for label, mask in regions.items()]


def analyse_liver(
    magnitude,
    phase,
    echo_times_s,
    b0_tesla: float,
    voxel_size: Sequence[float],
    *,
    b0_dir: Sequence[float] = (0.0, 0.0, 1.0),
    affine=None,
    mask=None,
    labels=None,
    reference: str = "sat",
    reference_mask=None,
    reference_chi_ppm: float | None = None,
    calibration: str | None = None,
    chi_slope: str | float = DEFAULT_CHI_LIC,
    background: str = "air",
    invert: str = "wls",
    air: str = "free",
    harmonic_order: int = 2,
    lam: float = 1e-2,
    roi_constant: bool = True,
    bgremove_options: Mapping | None = None,
    invert_options: Mapping | None = None,
    continue_body: bool = False,
    continue_mm: float | None = None,
    face_guard_mm: float = FACE_GUARD_MM,
    beyond_mm: float = BEYOND_MM,
) -> LiverAnalysis:
    """Fat–water separation, PDFF, R2*, liver QSM and both LIC maps from multi-echo GRE.

    Parameters
    ----------
    magnitude, phase : (X, Y, Z, E) — chemical-shift-encoded multi-echo GRE (phase in rad)
    echo_times_s : (E,) s
    b0_tesla : float, T
    voxel_size : 3 floats, mm
    b0_dir : B0 direction in voxel coordinates
    affine : (4, 4), optional — used only to find the subject's right for the automatic liver
    mask : (X, Y, Z) bool, optional — body mask without air (default: from the fitted proton
        density)
    labels : (X, Y, Z) int, optional — analysis regions (liver segments, nodules); one table
        row per positive label. Default: one automatically found liver (:func:`find_liver`)
    reference : "sat" (subcutaneous fat, χ = 0.6 ppm × its mean PDFF; Hernando 2013; where
        the body runs through the slab, the fat within half its thickness of the regions),
        "air" (air fixed at +9.4 ppm: needs the body's whole cross-section and the air around
        it in the field of view), "region" (``reference_mask`` set to ``reference_chi_ppm``)
        or "mask" (mean over the body set to ``reference_chi_ppm``, default 0)
    calibration : R2*→LIC calibration name (default: Hernando 2023 at the data's field; at a
        field with no published calibration, none: LIC by R2* is NaN and flagged)
    chi_slope : name in :data:`CHI_LIC_SLOPES` or a slope in ppm per mg Fe/g dw (default
        "buelo2025", the in-vivo calibration; "physical" is 0.48 ppm per mg/g)
    background, invert, air, harmonic_order, lam : see :func:`liver_qsm`
    roi_constant : estimate one susceptibility per region (default) instead of per voxel
    face_guard_mm : data within this distance of the faces of the field of view that the body
        runs through are not fitted (there a model that ends the body at the slab is wrong;
        default :data:`~qsmkit.body.liver_qsm.FACE_GUARD_MM`, 0 to fit them). Each region is
        then refitted to its own field (:func:`~qsmkit.body.liver_qsm.own_field_estimates`);
        regions whose own field does not measure them (``chi_from_surroundings``) take their
        χ from a second fit without the guard, since only the field they make around them,
        up to the faces, says anything of them
    beyond_mm : depth of the layer of free sources fitted beyond those faces (default
        :data:`~qsmkit.body.liver_qsm.BEYOND_MM`; see :func:`~qsmkit.body.liver_qsm.liver_qsm`)
    continue_body, continue_mm : continue the body beyond the faces of the field of view
        that cut it, over ``continue_mm`` (default: the whole padding); see
        :func:`qsmkit.body.liver_qsm.liver_qsm`
    """
    from qsmkit.body.bipolar import check_bipolar
    from qsmkit.body.echo_train import check_echo_train, fat_water_nsa
    from qsmkit.body.fat_shift import check_fat_shift
    from qsmkit.body.fatwater import FatWaterModel

    mag = np.asarray(magnitude, dtype=np.float32)
    if mag.ndim != 4:
        raise InputError(f"magnitude must be (X, Y, Z, echo), got shape {mag.shape}")
    tes = np.atleast_1d(np.asarray(echo_times_s, dtype=float))
    if tes.size < MIN_ECHOES:
        # water, fat and the complex field (field and R2*) are three complex unknowns per
        # voxel: three echoes leave nothing to measure the noise or a misfit with, and on the
        # independent abdomen they gave chi 1-3 ppm off and PDFF up to 33 points off
        raise InputError(
            f"the liver analysis needs at least {MIN_ECHOES} echoes (6 recommended) to separate "
            f"water, fat, field and R2*; got {tes.size}")
    cal = _calibration_for(b0_tesla, calibration)
    echo_warning = check_echo_train(tes, b0_tesla)
    warnings = [] if echo_warning is None else [echo_warning]
    slope = chi_lic_slope(chi_slope)
    if reference not in ("sat", "air", "mask", "region"):
        raise InputError(f"unknown QSM reference {reference!r}; use sat, air, mask or region")
    if reference == "air" and (background != "air" or air != "fixed"):
        air = "fixed"
        if background != "air":
            raise InputError("reference 'air' needs the air background model (background 'air')")

    model = FatWaterModel(tes, b0_tesla)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != mag.shape[:3]:
            raise InputError(f"mask shape {mask.shape} does not match the data {mag.shape[:3]}")
        if not mask.any():
            raise InputError("the body mask is empty")
        support = mask
    else:
        first = mag[..., 0]
        support = first > 0.05 * np.percentile(first, 99)
    if labels is not None and mask is None and np.shape(labels) == support.shape:
        # labelled tissue whose signal is near the noise at the first echo (iron) is fitted
        # too: with the initial phase of its neighbourhood its first echo still gives a field
        from qsmkit.body.liver_qsm import _filled

        support = support | ((np.rint(np.asarray(labels)) > 0) & _filled(support))
    # bipolar readouts leave the even-numbered echoes a phase error that the fat-water model
    # reads as fat and field (body/bipolar.py): estimated from the data and removed first,
    # since uncorrected it makes 1.5 T data look like 3 T to the check below
    phase, bipolar, bipolar_warning = check_bipolar(mag, phase, tes, b0_tesla, support)
    if bipolar_warning is not None:
        warnings.append(bipolar_warning)
    # a wrong --b0 or MagneticFieldStrength, or phase of the opposite sign, puts fat at the
    # wrong frequencies: every map would be wrong with nothing to show it, so the fat's
    # chemical shift is asked first
    fat_shift = check_fat_shift(mag, phase, tes, b0_tesla, support)
    fit = model.fit(mag, phase, mask=support)
    s0 = fit.s0
    body = mask if mask is not None else body_mask(mag[..., 0], fit.noise_sd) & support
    if labels is not None and mask is None:
        # a labelled region stays whole even where iron has taken its signal away: its
        # voxels inside the body outline are tissue (weight ~0), not air
        from qsmkit.body.liver_qsm import _filled

        lab = np.asarray(labels)
        if lab.shape == body.shape:
            body = body | ((np.rint(lab) > 0) & _filled(body))
    pdff = np.where(body, fit.pdff_percent, 0).astype(np.float32)
    r2 = np.where(body, fit.r2star_per_s, 0).astype(np.float32)
    r2_mono, _ = r2star_monoexp(mag, tes, mask=body)

    sigma = fit.noise_sd
    if np.isfinite(sigma) and sigma > 0:
        limit = r2star_limit_per_s(tes, s0 / sigma).astype(np.float32)
    else:
        limit = np.full(body.shape, np.inf, np.float32)
    limit = np.where(body, limit, 0).astype(np.float32)
    in_range = body & (r2 <= limit)

    # analysis regions
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != body.shape:
            raise InputError(f"labels shape {labels.shape} does not match the data {body.shape}")
        drawn = [int(v) for v in np.unique(np.rint(labels)) if v > 0]
        labels = np.where(body, np.rint(labels).astype(np.int64), 0)
        ids = [int(v) for v in np.unique(labels) if v > 0]
        if not ids:
            raise InputError("the labels have no region inside the body")
        outside = sorted(set(drawn) - set(ids))
        if outside:  # nothing to measure: said, not silently missing from the table
            warnings.append(QCWarning(
                "LABELS_OUTSIDE",
                f"label(s) {outside} have no voxel inside the body outline (air or no "
                "signal), so liver.tsv has no row for them",
                float(len(outside)), 0.0,
                "check that the labels were drawn on these data"))
        regions = {i: labels == i for i in ids}
        rois = labels
    else:
        liver = find_liver(s0, pdff, r2, body, voxel_size, affine=affine)
        regions = {"liver": liver}
        rois = liver.astype(np.int64)
    decayed_ml = 0.0
    if mask is None:
        # an organ whose iron has taken its signal before the first echo is left out of the
        # body outline as if it were air: the automatic liver cannot find it, and the field
        # model takes it for air
        decayed = decayed_tissue(mag[..., 0] * np.exp(1j * np.asarray(phase[..., 0])), body,
                                 fit.noise_sd, voxel_size)
        decayed_ml = float(decayed.sum() * np.prod(np.asarray(voxel_size, float)) / 1000.0)
        if decayed_ml > 0:
            warnings.append(QCWarning(
                "DECAYED_TISSUE",
                f"{decayed_ml:.0f} mL inside the body outline has a first echo above the noise "
                "with a coherent phase but too weak for the body mask: tissue whose signal "
                "had almost gone by the first echo (an organ loaded with iron, or lung), "
                "analysed as air" + ("; the automatic liver leaves it out" if labels is None
                                     else ""),
                decayed_ml, 0.0,
                "if it is liver, give its outline (--labels) or a body mask (--mask); "
                "a liver this loaded is measured only by QSM, and only in part"))

    if reference == "sat":
        ref_mask = subcutaneous_fat_mask(pdff, body, voxel_size=voxel_size)
        if ref_mask.sum() < 10:
            raise InputError(
                "no subcutaneous fat found to reference χ; use reference 'air', 'mask' or a region"
            )
        ref_mask = _nearby_reference(ref_mask, regions, body, voxel_size)
        ref_chi = CHI_FAT_PPM * float(np.mean(pdff[ref_mask])) / 100.0
        if reference_chi_ppm is not None:
            ref_chi = float(reference_chi_ppm)
    elif reference == "region":
        if reference_mask is None:
            raise InputError("reference 'region' needs a reference mask")
        ref_mask = np.asarray(reference_mask, dtype=bool) & body
        ref_chi = 0.0 if reference_chi_ppm is None else float(reference_chi_ppm)
    elif reference == "mask":
        ref_mask = body.copy()
        ref_chi = 0.0 if reference_chi_ppm is None else float(reference_chi_ppm)
    else:
        ref_mask = np.zeros_like(body)
        ref_chi = CHI_AIR_PPM

    weight = np.where(body, fit.field_weight(), 0).astype(np.float32)
    field_hz = np.where(body, fit.field_hz, 0).astype(np.float32)
    phase = np.asarray(phase, dtype=np.float32)
    # the signal at TE = 0 and where its phase is well measured, carried into decayed regions
    initial = np.where(body, fit.water + fit.fat, 0).astype(np.complex64)
    initial_good = _initial_phase_good(fit.water, fit.fat, fit.field_sd_hz, body)
    pooled = _pooled_regions(mag, phase, fit, s0, body, regions, tes, b0_tesla, field_hz,
                             weight, voxel_size, initial, initial_good)
    qsm_args = dict(
        b0_dir=b0_dir, b0_tesla=b0_tesla, weight=weight,
        rois=rois if roi_constant else None, background=background, invert=invert, air=air,
        harmonic_order=harmonic_order, lam=lam,
        reference_mask=None if reference == "air" else ref_mask, reference_chi_ppm=ref_chi,
        bgremove_options=bgremove_options, invert_options=invert_options,
        continue_body=continue_body, continue_mm=continue_mm,
        weight_sd_hz=_unit_weight_sd_hz(fit), beyond_mm=beyond_mm,
    )
    qsm = liver_qsm(field_hz, body, voxel_size, face_guard_mm=face_guard_mm, **qsm_args)
    silent = _silent_regions(regions, qsm.info) if face_guard_mm > 0 else []
    if silent and roi_constant:
        # a region without signal is known only by the field it makes around it, which
        # reaches the slab's faces: its value comes from a fit of all the data with no
        # sources beyond the faces (which would explain that field away), brought to the
        # level of the main fit by the regions both fits measure
        unguarded = liver_qsm(field_hz, body, voxel_size,
                              **{**qsm_args, "face_guard_mm": 0.0, "beyond_mm": 0.0})
        chi_map = qsm.chi_ppm.copy()
        shifts = [float(np.mean(qsm.chi_ppm[reg]) - np.mean(unguarded.chi_ppm[reg]))
                  for label, region in regions.items() if label not in silent
                  for reg in [np.asarray(region, bool) & qsm.mask] if reg.any()]
        shift = float(np.median(shifts)) if shifts else 0.0
        # the region's own (imprecise) estimate on the map's level, from the applied regions
        own = qsm.info.get("own_field", {})
        own_shifts = [float(np.mean(qsm.chi_ppm[reg]) - own[_roi_key(label)]["own_ppm"])
                      for label, region in regions.items() if label not in silent
                      and own.get(_roi_key(label), {}).get("applied")
                      for reg in [np.asarray(region, bool) & qsm.mask] if reg.any()]
        own_shift = float(np.median(own_shifts)) if own_shifts else 0.0
        kept_own = []
        for label in silent:
            reg = np.asarray(regions[label], bool) & qsm.mask
            value = unguarded.chi_ppm[reg] + np.float32(shift)
            est = own.get(_roi_key(label), {})
            own_value = float(est.get("own_ppm", np.nan)) + own_shift
            se = float(est.get("se_ppm", np.nan))
            if (np.isfinite(own_value) and np.isfinite(se)
                    and abs(float(np.mean(value)) - own_value) > 3.0 * se):
                # the surroundings contradict what the region's own field does say (more than
                # 3 standard errors): the region's own estimate, imprecise but not refuted
                value = np.full(value.shape, own_value, np.float32)
                kept_own.append(str(label))
            chi_map[reg] = value
        qsm = dataclasses.replace(qsm, chi_ppm=chi_map, info={
            **qsm.info, "regions_from_unguarded_fit": [str(s) for s in silent
                                                       if str(s) not in kept_own],
            "regions_own_field_kept": kept_own, "unguarded_fit_shift_ppm": shift})
    # without a calibration at this field LIC by R2* is not a number (NaN), not zero
    lic_r2 = np.where(body, cal.lic(r2) if cal is not None else np.nan, 0).astype(np.float32)
    lic_q = np.where(qsm.mask, lic_from_chi(qsm.chi_ppm, pdff, slope_ppm=slope), 0)
    analysis = LiverAnalysis(
        water=np.abs(fit.water).astype(np.float32) * body,
        fat=np.abs(fit.fat).astype(np.float32) * body,
        pdff_percent=pdff,
        field_hz=field_hz,
        fit_field_hz=np.where(body, fit.field_hz, 0).astype(np.float32),
        r2star_per_s=r2,
        r2star_monoexp_per_s=r2_mono,
        r2star_limit_per_s=limit,
        r2star_in_range=in_range,
        chi_ppm=qsm.chi_ppm,
        local_field_hz=qsm.local_field_hz,
        lic_r2star=lic_r2,
        lic_qsm=lic_q.astype(np.float32),
        body_mask=body,
        qsm_mask=qsm.mask,
        reference_mask=ref_mask,
        weight=weight,
        s0=s0,
        magnitude=mag,
        phase=phase,
        echo_times_s=tes,
        b0_tesla=float(b0_tesla),
        noise_sd=float(sigma),
        calibration=cal,
        chi_slope_ppm=float(slope),
        regions=regions,
        rows=[],
        info={
            "fatwater": fit.info,
            "qsm": qsm.info,
            "qsm_reference": qsm.reference,
            "reference": reference,
            "reference_chi_ppm": float(ref_chi),
            "roi_constant": bool(roi_constant),
            "r2star_calibration": dataclasses.asdict(cal) if cal is not None else None,
            "chi_lic_slope_ppm_per_mg_g": float(slope),
            "noise_sd": float(sigma),
            "regions": "labels" if labels is not None else "automatic liver",
            "pooled_regions": {str(k): dataclasses.asdict(v) for k, v in pooled.items()},
            "echo_train": {"nsa": round(fat_water_nsa(tes, b0_tesla), 3),
                           "ill_conditioned": echo_warning is not None},
            "fat_shift": fat_shift,
            "bipolar": bipolar,
            "decayed_tissue_ml": round(decayed_ml, 1),
            "warnings": [w.as_dict() for w in warnings],
        },
        pooled=pooled,
        field_sd_hz=np.where(body, fit.field_sd_hz, np.inf).astype(np.float32),
        voxel_size_mm=tuple(float(v) for v in voxel_size),
        initial_signal=initial,
        initial_phase_good=initial_good,
    )
    analysis.rows = analysis.table()
    return analysis


def _calibration_for(b0_tesla: float, name: str | None) -> R2starCalibration | None:
    """The R2*→LIC calibration for the data, or ``None`` where none was made near their field.

    A calibration asked for by name must suit the field (:func:`select_calibration` refuses
    otherwise). Without a name, data at a field with no published calibration (0.55 T, 1 T,
    7 T) are still analysed: PDFF, R2*, χ and LIC by QSM do not need one (χ does not depend on
    the field strength; Hernando 2013); only LIC by R2* is then NaN, flagged
    ``no_r2star_calibration``.
    """
    if name:
        return select_calibration(b0_tesla, name)
    try:
        return select_calibration(b0_tesla)
    except InputError:
        return None


def _nearby_reference(ref_mask, regions, body, voxel_size, *, min_voxels: int = 10):
    """The part of ``ref_mask`` within half the slab's thickness of the analysed regions.

    Through a slab of a longer body, the field difference between two points far apart
    in-plane depends on the unknown anatomy beyond the slab's faces: in-plane contrasts on
    scales beyond the distance to those faces (half the thickness) are not determined by the
    field inside. The reference is therefore the subcutaneous fat nearest the regions; with
    no face that the body runs through (the whole body in view) it is all of it.
    """
    from scipy import ndimage

    from qsmkit.body.liver_qsm import continuing_faces

    axes = {axis for axis, _ in continuing_faces(body)}
    if not axes:
        return ref_mask
    reach_mm = min(0.5 * body.shape[a] * float(voxel_size[a]) for a in axes)
    analysed = np.zeros(body.shape, bool)
    for region in regions.values():
        analysed |= np.asarray(region, bool)
    if not analysed.any():
        return ref_mask
    distance = ndimage.distance_transform_edt(~analysed, sampling=voxel_size)
    near = ref_mask & (distance <= reach_mm)
    return near if near.sum() >= min_voxels else ref_mask


def _roi_key(label) -> str:
    """Key of a region in ``info["own_field"]`` (the automatic liver is ROI 1)."""
    return "1" if label == "liver" else str(label)


def _silent_regions(regions, qsm_info) -> list:
    """Labels of the regions whose own field does not measure their χ (standard error above
    :data:`~qsmkit.body.liver_qsm.OWN_FIELD_SE_LIMIT_PPM`; ``qsm_info["own_field"]``)."""
    own = qsm_info.get("own_field", {})
    return [label for label in regions
            if not own.get(_roi_key(label), {}).get("applied", True)]


def _unit_weight_sd_hz(fit) -> float | None:
    """Field SD (Hz) of a voxel of weight 1 in :meth:`FatWaterFit.field_weight`."""
    sd = np.where(fit.mask, fit.field_sd_hz, np.inf)
    finite = np.isfinite(sd) & fit.mask
    return float(np.percentile(sd[finite], 10)) if finite.any() else None


def _pooled_regions(mag, phase, fit, s0, body, regions, echo_times_s, b0_tesla, field_hz,
                    weight, voxel_size, initial, initial_good, *,
                    min_echoes: int = 3) -> dict:
    """Pooled fits of the regions whose signal has decayed before the ``min_echoes``-th echo.

    The field map of such a region is replaced by its pooled estimate (the regularised field
    of :func:`_region_fit` plus the fitted offset: the voxel fits are noise there and the field
    map only interpolates the surroundings), and its data weight
    by the pooled precision shared among its voxels, so that liver QSM uses what the region's
    few echoes do say about its field (``field_hz`` and ``weight`` are changed in place) —
    unless the voxel map is the more precise: the fat–water fit measures decayed voxels with
    the initial phase of their neighbourhood, which the pooled fit (free amplitude and phase
    per voxel) does not use.
    """
    sigma = fit.noise_sd
    if not (np.isfinite(sigma) and sigma > 0):
        return {}
    sd_map = np.where(body, fit.field_sd_hz, np.inf)
    finite = np.isfinite(sd_map) & body
    sd_ref = float(np.percentile(sd_map[finite], 10)) if finite.any() else np.nan
    r2 = fit.r2star_per_s
    out = {}
    for label, region in regions.items():
        region = np.asarray(region, bool) & body
        n = int(region.sum())
        if n == 0 or region_measurable(mag, s0, region, float(np.median(r2[region])),
                                       echo_times_s, sigma, min_echoes=min_echoes):
            continue
        res, known = _region_fit(mag, phase, fit.field_hz, fit.field_sd_hz, region,
                                 echo_times_s, b0_tesla, sigma, voxel_size)
        # the reported PDFF and R2* may use the neighbourhood's initial phase; the field
        # handed to QSM stays that of the free fit
        out[label] = _with_initial_phase(res, known, mag, phase, initial, initial_good, region,
                                         echo_times_s, b0_tesla, sigma, voxel_size)
        sd_v = sd_map[region]
        map_sd = (1.0 / np.sqrt(np.sum(1.0 / sd_v[np.isfinite(sd_v)] ** 2))
                  if np.isfinite(sd_v).any() else np.inf)
        if not res.field_offset_sd_hz < map_sd:
            continue  # the voxel map (phase-constrained where decayed) measures it better
        if np.isfinite(res.field_offset_hz) and np.isfinite(res.field_offset_sd_hz):
            field_hz[region] = (known + res.field_offset_hz).astype(np.float32)
            w = sd_ref / (res.field_offset_sd_hz * np.sqrt(n)) if np.isfinite(sd_ref) else 0
            weight[region] = np.float32(min(max(w, 0.0), 1.0))
        else:
            weight[region] = 0.0
    return out


def _region_fit(mag, phase, field_hz, field_sd_hz, region, echo_times_s, b0_tesla, noise_sd,
                voxel_size_mm=(1.0, 1.0, 1.0)):
    """Pooled fit of the voxels of ``region`` and the per-voxel field it demodulated by.

    Two fields are tried, each with one fitted offset: the voxel-wise map regularised by its
    Cramér–Rao SD (:func:`~qsmkit.body.region_fit.region_field_hz`) and one field for the whole
    region (the map's precision-weighted mean). Where the region's signal has decayed, the
    voxel fields are noise, or the smoothed field of the surroundings, and demodulating by a
    wrong field is read as fat and decay; the field that leaves the smaller residual is kept
    (both fits have the same free parameters). Without SDs the map itself is used.
    """
    from qsmkit.body.region_fit import region_fatwater_fit, region_field_hz

    region = np.asarray(region, dtype=bool)
    known = np.asarray(field_hz[region], dtype=np.float64)
    signal = mag[region] * np.exp(1j * phase[region])
    if field_sd_hz is None:
        return region_fatwater_fit(signal, known, echo_times_s, b0_tesla, noise_sd), known
    sd = np.asarray(field_sd_hz[region], dtype=np.float64)
    good = np.isfinite(sd) & (sd > 0)
    candidates = [region_field_hz(known, sd, np.argwhere(region), voxel_size_mm=voxel_size_mm)]
    if good.any():
        w = 1.0 / np.maximum(sd[good], 1e-3) ** 2
        candidates.append(np.full(known.shape, float(np.sum(w * known[good]) / np.sum(w))))
    best = None
    for cand in candidates:
        res = region_fatwater_fit(signal, cand, echo_times_s, b0_tesla, noise_sd)
        if best is None or (np.isfinite(res.misfit_ratio)
                            and not res.misfit_ratio >= best[0].misfit_ratio):
            best = (res, cand)
    return best


PHASE_CONSTRAINT_GAIN = 0.5
"""The pooled fit with real amplitudes at the neighbourhood's initial phase replaces the free
one only where the free PDFF SD exceeds :data:`PDFF_SD_LIMIT_PERCENT` and the constrained SD
(its carried phase's uncertainty included) is at most this fraction of it and at most twice
:data:`PDFF_SD_LIMIT_PERCENT`: the constraint is an assumption, taken only where it turns
an unmeasured PDFF into a measured one (on 3 T data with one echo of signal it was adopted
at an SD of 10 points with R2* at its bound)."""


def _with_initial_phase(res, known, mag, phase, initial, good, region, echo_times_s,
                        b0_tesla, noise_sd, voxel_size_mm):
    """The pooled fit to report for ``region``: ``res`` (voxel amplitudes complex), or the
    fit with real amplitudes at the initial phase carried in from the tissue around the
    region (:func:`~qsmkit.body.region_fit.neighbourhood_initial_phase`) where that measures
    PDFF clearly better (:data:`PHASE_CONSTRAINT_GAIN`)."""
    from qsmkit.body.region_fit import neighbourhood_initial_phase, region_fatwater_fit

    if initial is None or not (res.pdff_sd_percent > PDFF_SD_LIMIT_PERCENT):
        return res
    phase0, phase0_sd = neighbourhood_initial_phase(initial, good, region, voxel_size_mm)
    if phase0 is None:
        return res
    signal = mag[region] * np.exp(1j * phase[region])
    constrained = region_fatwater_fit(signal, known, echo_times_s, b0_tesla, noise_sd,
                                      initial_phase=phase0, initial_phase_sd=phase0_sd)
    if (constrained.pdff_sd_percent <= PHASE_CONSTRAINT_GAIN * res.pdff_sd_percent
            and constrained.pdff_sd_percent <= 2.0 * PDFF_SD_LIMIT_PERCENT):
        return constrained
    return res


def _initial_phase_good(water, fat, field_sd_hz, body):
    """Where the phase of the signal at TE = 0 is well measured: water-dominant voxels of the
    body whose field SD is within three times the best tenth's (fat-dominant voxels carry
    the fat model's extrapolation to TE = 0 in their phase)."""
    sd = np.where(body, field_sd_hz, np.inf)
    finite = np.isfinite(sd) & body
    if not finite.any():
        return np.zeros(body.shape, bool)
    return finite & (sd <= 3.0 * float(np.percentile(sd[finite], 10))) & (
        np.abs(water) > np.abs(fat))


def compare_regions(row_a: Mapping, row_b: Mapping) -> dict:
    """Differences between two table rows (e.g. a siderotic and a non-siderotic nodule).

    Returns the differences ``a - b`` of χ, LIC by QSM and by R2* (the latter only when both
    R2* values are measurable) and which region holds more iron by each route.
    """
    both_in_range = bool(row_a["r2star_in_range"] and row_b["r2star_in_range"])
    d_chi = float(row_a["chi_ppm"] - row_b["chi_ppm"])
    d_r2 = (float(row_a["lic_r2star"] - row_b["lic_r2star"]) if both_in_range
            else float("nan"))
    return {
        "a": row_a["label"],
        "b": row_b["label"],
        "delta_chi_ppm": d_chi,
        "delta_lic_qsm": float(row_a["lic_qsm"] - row_b["lic_qsm"]),
        "delta_lic_r2star": d_r2,
        "more_iron_by_qsm": row_a["label"] if d_chi > 0 else row_b["label"],
        "r2star_comparable": both_in_range,
    }


def write_table(path, rows: Sequence[Mapping]) -> None:
    """Write rows as a tab-separated file with :data:`TABLE_COLUMNS` (booleans true/false)."""

    def fmt(value):
        if isinstance(value, (bool, np.bool_)):
            return "true" if value else "false"
        if isinstance(value, (float, np.floating)):
            return f"{float(value):.4f}" if np.isfinite(value) else str(float(value))
        return str(value)

    lines = ["\t".join(TABLE_COLUMNS)]
    for row in rows:
        lines.append("\t".join(fmt(row[c]) for c in TABLE_COLUMNS))
    from pathlib import Path

    Path(path).write_text("\n".join(lines) + "\n")
