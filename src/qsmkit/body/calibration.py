"""Published calibrations from liver R2* and liver susceptibility to liver iron (LIC).

Every calibration here comes from in-vivo literature and states its citation, field strength,
units and the range over which it was established. LIC is in mg Fe per g dry liver (mg/g dw),
R2* in s^-1, susceptibility in SI ppm relative to water (or to fat-referenced water-like
tissue, see :func:`qsmkit.body.liver.liver_qsm`).

R2* → LIC (:data:`R2STAR_CALIBRATIONS`)
    Linear fits ``LIC = slope * R2* + intercept`` against biopsy or FerriScan-R2 LIC. R2*
    depends on field strength (at 3 T about twice its 1.5 T value: Storey 2007, Hernando
    2023), so each calibration holds at its own field only. Outside the LIC range the
    calibration was established on, the value is an extrapolation: :meth:`R2starCalibration.
    flag` says so, and :func:`lic_from_r2star_checked` returns the flag with the LIC.
    Defaults: Hernando 2023 at 1.5 T and at 3 T (multicentre, confounder-corrected R2*).

χ → LIC (:data:`CHI_LIC_CALIBRATIONS`)
    ``LIC = (χ - 0.6 ppm × PDFF) / slope``. The default is the in-vivo multicentre liver-QSM
    calibration against FerriScan-R2 LIC (Buelo 2025: 0.102–0.123 ppm per mg/g dw across
    centres at 1.5 T; the midpoint 0.112 is used), already expressed per g **dry** weight,
    so no wet-to-dry factor enters it. The "physical" slope derived from SQUID
    susceptometry (1.6 ppm per mg Fe/g **wet** tissue, Brittenham 1982) divided by the
    wet-to-dry ratio 3.33 of liver (70 % water; Fischer & Harmatz 2009) is 0.48 ppm per mg/g
    dw, about 4× steeper: in-vivo QSM underestimates susceptibility (QSM ≈ 0.49 × SQUID,
    Sharma 2017), and the physical slope would read 2.1 mg/g where the in-vivo calibration
    reads 8.9 mg/g for χ = 1.0 ppm, across the 3/7/15 mg/g thresholds. It is kept as an
    option (``"physical"``) for reconstructions of simulated data that use it.

Clinical thresholds (:data:`LIC_THRESHOLDS_MG_PER_G`): 1.8 mg/g upper normal, 3 mg/g
(mild overload), 7 mg/g (moderate; raised risk of complications, chelation intensified), 15 mg/g
(severe; risk of cardiac disease and early death), as used by Olivieri & Brittenham 1997
and the FerriScan reporting categories; :func:`lic_category` classifies a value.

References
----------
Wood JC, Enriquez C, Ghugre N, et al. MRI R2 and R2* mapping accurately estimates hepatic iron
concentration in transfusion-dependent thalassemia and sickle cell disease patients. Blood
2005;106:1460-1465.
Hankins JS, McCarville MB, Loeffler RB, et al. R2* magnetic resonance imaging of the liver in
patients with iron overload. Blood 2009;113:4853-4855.
Storey P, Thompson AA, Carqueville CL, et al. R2* imaging of transfusional iron burden at 3T
and comparison with 1.5T. J Magn Reson Imaging 2007;25:540-547.
Hernando D, Zhao R, Yuan Q, et al. Multicenter reproducibility of liver iron quantification
with 1.5-T and 3.0-T MRI. Radiology 2023;306:e213256.
Hernando D, Cook RJ, Diamond C, Reeder SB. Magnetic susceptibility as a B0 field strength
independent MRI biomarker of liver iron overload. Magn Reson Med 2013;70:648-656.
Sharma SD, Fischer R, Schoennagel BP, et al. MRI-based quantitative susceptibility mapping
(QSM) and R2* mapping of liver iron overload: comparison with SQUID-based biomagnetic liver
susceptometry. Magn Reson Med 2017;78:264-270.
Buelo CJ, Velikina J, Mao L, et al. Multicenter, multivendor validation of liver quantitative
susceptibility mapping in patients with iron overload at 1.5 T and 3 T. Magn Reson Med
2025;93:330-340.
Brittenham GM, Farrell DE, Harris JW, et al. Magnetic-susceptibility measurement of human
iron stores. N Engl J Med 1982;307:1671-1675.
Fischer R, Harmatz PR. Non-invasive assessment of tissue iron overload. Hematology Am Soc
Hematol Educ Program 2009:215-221.
Olivieri NF, Brittenham GM. Iron-chelating therapy and the treatment of thalassemia. Blood
1997;89:739-761.
Hopkins JA, Wehrli FW. Magnetic susceptibility measurement of insoluble solids by NMR:
magnetic susceptibility of bone. Magn Reson Med 1997;37:494-500.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from qsmkit.errors import InputError

CHI_FAT_PPM = 0.6
"""Susceptibility of fat relative to water (SI ppm); Hopkins & Wehrli 1997, Hernando 2013."""

CHI_PER_LIC_WET_PPM = 1.6
"""Susceptibility (SI ppm) per mg storage iron per g wet liver (SQUID susceptometry,
Brittenham 1982)."""

LIC_DRY_PER_WET = 3.33
"""Dry-to-wet LIC ratio of liver (mg/g dw = 3.33 × mg/g ww; 70 % water; Fischer & Harmatz
2009). Used only to derive the physical slope; the in-vivo default is calibrated per dry
weight directly."""

CHI_PER_LIC_PHYSICAL_PPM = CHI_PER_LIC_WET_PPM / LIC_DRY_PER_WET
"""Physical susceptibility per mg Fe/g dry weight (SI ppm): 1.6 / 3.33 = 0.48."""

CHI_PER_LIC_INVIVO_PPM = 0.112
"""In-vivo liver-QSM slope (SI ppm per mg Fe/g dw) against FerriScan-R2 LIC, 1.5 T,
multicentre (Buelo 2025; centres 0.102-0.123, midpoint)."""

CHI_PER_LIC_PPM = CHI_PER_LIC_INVIVO_PPM
"""Default χ–LIC slope (SI ppm per mg Fe/g dw): the in-vivo calibration."""

LIC_THRESHOLDS_MG_PER_G = {"normal": 1.8, "mild": 3.0, "moderate": 7.0, "severe": 15.0}
"""Clinical LIC thresholds (mg Fe/g dw; Olivieri & Brittenham 1997): a value at or above a
threshold belongs to that category (below 1.8 normal, 1.8–3 upper normal/borderline)."""


@dataclasses.dataclass(frozen=True)
class ChiLicCalibration:
    """A linear susceptibility→LIC calibration ``LIC = (χ - χ_fat PDFF) / slope_ppm``.

    Attributes
    ----------
    name : str
    slope_ppm : float
        SI ppm per mg Fe/g dry weight.
    b0_tesla : tuple of float
        Field strengths at which it was established (χ is field independent in principle).
    lic_range : (float, float)
        LIC (mg/g dw) of the calibration cohort.
    source, notes : str
    """

    name: str
    slope_ppm: float
    b0_tesla: tuple[float, ...]
    lic_range: tuple[float, float]
    source: str
    notes: str = ""


CHI_LIC_CALIBRATIONS: dict[str, ChiLicCalibration] = {
    c.name: c
    for c in (
        ChiLicCalibration(
            "buelo2025", CHI_PER_LIC_INVIVO_PPM, (1.5,), (0.3, 43.0),
            "Buelo CJ et al. Magn Reson Med 2025;93:330-340",
            "in-vivo, 4 centres, 3 vendors, 155 data sets at 1.5 T: liver QSM vs FerriScan-R2 "
            "LIC (its calibrated range 0.3-43 mg/g dw); slope 0.102-0.123 ppm per mg/g across "
            "centres at 1.5 T, midpoint; chi reproducible between 1.5 T and 3 T (CCC 0.862). "
            "Default.",
        ),
        ChiLicCalibration(
            "physical", CHI_PER_LIC_PHYSICAL_PPM, (), (0.0, 43.0),
            "Brittenham GM et al. N Engl J Med 1982;307:1671; Fischer & Harmatz 2009",
            "1.6 ppm per mg Fe/g wet (SQUID) / 3.33 (dry/wet); not an in-vivo QSM "
            "calibration: reads about 4x lower LIC than buelo2025 on in-vivo QSM.",
        ),
    )
}
"""Published χ→LIC calibrations, by name."""

CHI_LIC_SLOPES = {name: c.slope_ppm for name, c in CHI_LIC_CALIBRATIONS.items()}
"""χ–LIC slopes (ppm per mg Fe/g dw) by name."""

DEFAULT_CHI_LIC = "buelo2025"
"""Name of the default χ→LIC calibration."""


def chi_lic_slope(name_or_ppm: str | float = DEFAULT_CHI_LIC) -> float:
    """The χ–LIC slope (ppm per mg Fe/g dw) of a named calibration, or a positive number."""
    if isinstance(name_or_ppm, str):
        if name_or_ppm not in CHI_LIC_SLOPES:
            raise InputError(
                f"unknown χ–LIC slope {name_or_ppm!r}; choose one of "
                f"{', '.join(CHI_LIC_SLOPES)} or give a number in ppm per mg Fe/g dw"
            )
        return float(CHI_LIC_SLOPES[name_or_ppm])
    slope = float(name_or_ppm)
    if not slope > 0:
        raise InputError(f"the χ–LIC slope must be positive, got {name_or_ppm}")
    return slope


@dataclasses.dataclass(frozen=True)
class R2starCalibration:
    """A linear R2*→LIC calibration ``LIC = slope * R2* + intercept`` (mg Fe/g dry weight).

    Attributes
    ----------
    name : str
    b0_tesla : float
        Field strength of the calibration (T); R2* at another field does not apply.
    slope : float
        mg Fe/g dw per s^-1.
    intercept : float
        mg Fe/g dw.
    lic_range : (float, float)
        LIC (mg/g dw) over which the calibration was established; :attr:`r2star_range`
        is the R2* (s^-1) it maps to. Outside it the value is an extrapolation.
    source, notes : str
    """

    name: str
    b0_tesla: float
    slope: float
    intercept: float
    lic_range: tuple[float, float]
    source: str
    notes: str = ""

    @property
    def r2star_range(self) -> tuple[float, float]:
        """R2* (s^-1) at the ends of :attr:`lic_range`."""
        return tuple(float(self.r2star(v)) for v in self.lic_range)

    def lic(self, r2star_per_s):
        """LIC (mg Fe/g dw) from R2* (s^-1); no range check (see :meth:`flag`)."""
        return self.slope * np.asarray(r2star_per_s, dtype=float) + self.intercept

    def r2star(self, lic_mg_per_g):
        """R2* (s^-1) that this calibration maps to ``lic_mg_per_g``."""
        return (np.asarray(lic_mg_per_g, dtype=float) - self.intercept) / self.slope

    def flag(self, r2star_per_s):
        """-1 below, 0 within, +1 above :attr:`r2star_range` (int8 array; NaN gives +1)."""
        r2 = np.asarray(r2star_per_s, dtype=float)
        lo, hi = self.r2star_range
        out = np.where(r2 < lo, -1, 0)
        out = np.where((r2 > hi) | ~np.isfinite(r2), 1, out)
        return out.astype(np.int8)

    def in_range(self, r2star_per_s):
        """Whether the R2* lies within the range the calibration was established on."""
        return self.flag(r2star_per_s) == 0


R2STAR_CALIBRATIONS: dict[str, R2starCalibration] = {
    c.name: c
    for c in (
        R2starCalibration(
            "hernando2023_1.5T", 1.5, 2.603e-2, -0.16, (0.3, 43.0),
            "Hernando D et al. Radiology 2023;306:e213256",
            "207 patients, 4 centres, 3 vendors; confounder-corrected (fat, noise) R2*; "
            "reference LIC by FerriScan R2 (calibrated 0.3-43 mg/g). Default at 1.5 T.",
        ),
        R2starCalibration(
            "hernando2023_3T", 3.0, 1.349e-2, -0.03, (0.3, 43.0),
            "Hernando D et al. Radiology 2023;306:e213256",
            "same cohort at 3.0 T (a separate 2.89 T calibration is very close); "
            "coefficients as reported in the abstract. Default at 3 T.",
        ),
        R2starCalibration(
            "wood2005", 1.5, 0.0254, 0.202, (1.33, 32.9),
            "Wood JC et al. Blood 2005;106:1460-1465",
            "22 biopsies (HIC 1.33-32.9 mg/g) in thalassemia/sickle-cell patients; "
            "mono-exponential R2* with offset, minimum TE 0.8 ms.",
        ),
        R2starCalibration(
            "hankins2009", 1.5, 0.028, -0.45, (0.5, 35.0),
            "Hankins JS et al. Blood 2009;113:4853-4855",
            "biopsy-calibrated (transfusional overload); the stated range is approximate "
            "(the biopsy range of that cohort).",
        ),
    )
}
"""Published R2*→LIC calibrations, by name."""


def select_calibration(b0_tesla: float, name: str | None = None) -> R2starCalibration:
    """The named calibration, or the default (Hernando 2023) nearest to ``b0_tesla``.

    Raises :class:`InputError` when the field strength is more than 0.25 T away from every
    calibration (none is valid there) or when the named calibration was made at another field.
    """
    b0 = float(b0_tesla)
    if name:
        if name not in R2STAR_CALIBRATIONS:
            raise InputError(
                f"unknown R2* calibration {name!r}; choose one of "
                + ", ".join(sorted(R2STAR_CALIBRATIONS))
            )
        cal = R2STAR_CALIBRATIONS[name]
        if abs(cal.b0_tesla - b0) > 0.25:
            raise InputError(
                f"calibration {name} was made at {cal.b0_tesla} T but the data are at {b0} T; "
                "R2* depends on field strength, choose a calibration for this field"
            )
        return cal
    defaults = [R2STAR_CALIBRATIONS["hernando2023_1.5T"], R2STAR_CALIBRATIONS["hernando2023_3T"]]
    cal = min(defaults, key=lambda c: abs(c.b0_tesla - b0))
    if abs(cal.b0_tesla - b0) > 0.25:
        raise InputError(
            f"no published R2*→LIC calibration for {b0} T (available at 1.5 T and 3 T); "
            "LIC by R2* cannot be given at this field strength"
        )
    return cal


def lic_from_r2star(r2star_per_s, b0_tesla: float, calibration: str | None = None):
    """LIC (mg Fe/g dw) from R2* (s^-1) with the calibration for ``b0_tesla`` (unchecked)."""
    return select_calibration(b0_tesla, calibration).lic(r2star_per_s)


def lic_from_r2star_checked(r2star_per_s, b0_tesla: float, calibration: str | None = None):
    """LIC (mg Fe/g dw) and its range flag from R2* (s^-1).

    Returns
    -------
    lic : ndarray, mg Fe/g dw
        NaN where R2* lies above the calibrated range (no silent extrapolation); below the
        range the calibration's value is kept (a near-normal LIC) and flagged.
    flag : ndarray of int8
        -1 below, 0 within, +1 above the R2* range of the calibration.
    """
    cal = select_calibration(b0_tesla, calibration)
    flag = cal.flag(r2star_per_s)
    lic = np.where(flag > 0, np.nan, cal.lic(r2star_per_s))
    return lic, flag


def calibration_spread(r2star_per_s, b0_tesla: float) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest LIC (mg Fe/g dw) that the published calibrations give for
    ``r2star_per_s`` measured at ``b0_tesla``.

    At normal and near-normal iron the calibrations differ most (their intercepts hold the
    R2* of iron-free tissue): at 1.5 T, R2* = 31 s^-1 reads 0.42 (Hankins 2009), 0.65
    (Hernando 2023) and 0.99 mg/g (Wood 2005); at 268 s^-1 they agree within 4 %.

    Calibrations made at the other field (1.5 T for 3 T data and the reverse) count too, with
    the R2* carried to their field by the two Hernando 2023 calibrations (the R2* that gives
    the same LIC there; R2* nearly doubles from 1.5 T to 3 T, Storey 2007): at 3 T, where
    only Hernando 2023 is biopsy- or R2-calibrated, sites apply Wood 2005 to R2*/2, and the
    spread between those choices is what a reader of the LIC faces. At 1.5 T this adds
    nothing (Hernando's 3 T calibration carried back is its 1.5 T one).
    """
    r2 = np.asarray(r2star_per_s, dtype=float)
    b0 = float(b0_tesla)
    try:
        here = select_calibration(b0)
    except InputError:
        nan = np.full(r2.shape, np.nan)
        return nan, nan
    values = []
    for cal in R2STAR_CALIBRATIONS.values():
        if abs(cal.b0_tesla - b0) <= 0.25:
            values.append(cal.lic(r2))
        else:  # the R2* this LIC has at the calibration's own field
            there = select_calibration(cal.b0_tesla)
            values.append(cal.lic(there.r2star(here.lic(r2))))
    values = np.stack(values)
    return values.min(axis=0), values.max(axis=0)


def r2star_from_lic(lic_mg_per_g, b0_tesla: float, *, floor_per_s: float | None = None):
    """Forward model of the simulator: R2* (s^-1) of liver at ``lic_mg_per_g`` and ``b0_tesla``.

    The inverse of the Hernando 2023 calibrations at 1.5 T and 3 T, interpolated linearly in
    B0 between them (and extrapolated in proportion to B0 outside), which reproduces the
    near-doubling of R2* from 1.5 T to 3 T (Storey 2007). Values are floored at the R2* of
    iron-free tissue (``floor_per_s``, default ``20 + 10 * B0`` s^-1).
    """
    b0 = float(b0_tesla)
    lo = R2STAR_CALIBRATIONS["hernando2023_1.5T"]
    hi = R2STAR_CALIBRATIONS["hernando2023_3T"]
    r_lo, r_hi = lo.r2star(lic_mg_per_g), hi.r2star(lic_mg_per_g)
    if 1.5 <= b0 <= 3.0:
        t = (b0 - 1.5) / 1.5
        r2 = (1 - t) * r_lo + t * r_hi
    elif b0 < 1.5:
        r2 = r_lo * b0 / 1.5
    else:
        r2 = r_hi * b0 / 3.0
    floor = 20.0 + 10.0 * b0 if floor_per_s is None else float(floor_per_s)
    return np.maximum(r2, floor)


def chi_from_lic(lic_mg_per_g, pdff_percent=0.0, *, slope_ppm: float = CHI_PER_LIC_PPM,
                 chi_fat_ppm: float = CHI_FAT_PPM, chi_tissue_ppm: float = 0.0):
    """Susceptibility (ppm, relative to water) of liver with given iron (mg/g dw) and fat (%)."""
    fat = np.asarray(pdff_percent, dtype=float) / 100.0
    return chi_tissue_ppm + slope_ppm * np.asarray(lic_mg_per_g, dtype=float) + chi_fat_ppm * fat


def lic_from_chi(chi_ppm, pdff_percent=0.0, *, slope_ppm: float = CHI_PER_LIC_PPM,
                 chi_fat_ppm: float = CHI_FAT_PPM, chi_tissue_ppm: float = 0.0):
    """LIC (mg Fe/g dw) from referenced susceptibility (ppm) after removing the fat part.

    ``chi_ppm`` must be referenced to water-like tissue (see :func:`liver_qsm`);
    ``chi_tissue_ppm`` is the susceptibility of iron-free, fat-free liver relative to the
    same reference (0 by default). The default slope is the in-vivo calibration
    (:data:`CHI_PER_LIC_INVIVO_PPM`, Buelo 2025).
    """
    if not slope_ppm > 0:
        raise InputError(f"the χ–LIC slope must be positive, got {slope_ppm}")
    fat = np.asarray(pdff_percent, dtype=float) / 100.0
    return (np.asarray(chi_ppm, dtype=float) - chi_tissue_ppm - chi_fat_ppm * fat) / slope_ppm


def lic_category(lic_mg_per_g) -> np.ndarray:
    """Clinical category of LIC (mg Fe/g dw): "normal" (< 1.8), "borderline" (1.8–3),
    "mild" (3–7), "moderate" (7–15), "severe" (>= 15); "unknown" for NaN."""
    lic = np.asarray(lic_mg_per_g, dtype=float)
    t = LIC_THRESHOLDS_MG_PER_G
    out = np.full(lic.shape, "unknown", dtype=object)
    out[lic < t["normal"]] = "normal"
    out[(lic >= t["normal"]) & (lic < t["mild"])] = "borderline"
    out[(lic >= t["mild"]) & (lic < t["moderate"])] = "mild"
    out[(lic >= t["moderate"]) & (lic < t["severe"])] = "moderate"
    out[lic >= t["severe"]] = "severe"
    return out
