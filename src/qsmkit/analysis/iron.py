"""Susceptibility <-> iron concentration, and the normative table used for z-scores.

In deep grey matter the bulk susceptibility is dominated by ferritin-bound iron and is close to
linear in the non-haem iron concentration. We use the slope measured post mortem in situ by
Langkammer et al. (2012) against inductively coupled plasma mass spectrometry in grey matter::

    iron (mg/kg wet tissue) = (chi - chi_reference) / IRON_PPM_PER_MG_PER_KG

with ``IRON_PPM_PER_MG_PER_KG = 0.00097`` ppm per mg Fe / kg wet tissue (0.97 ppb per ug/g).
The conversion assumes that ``chi`` is referenced to a region of negligible iron (CSF, or a
whole-brain mean treated as such) and that iron is the only source of the difference; it does
not hold in white matter, where myelin is diamagnetic and anisotropic (Langkammer 2012 found a
much weaker correlation there), nor for haem iron (blood, bleeds) or calcium.

References
----------
Langkammer C, Schweser F, Krebs N, Deistung A, Goessler W, Scheurer E, Sommer K, Reishofer G,
Yen K, Fazekas F, Ropele S, Reichenbach JR. Quantitative susceptibility mapping (QSM) as a means
to measure brain iron? A post mortem validation study. NeuroImage 2012;62:1593-1599.
doi:10.1016/j.neuroimage.2012.05.049 (grey matter r = 0.84; slope 0.00097 ppm per ug/g).
Hallgren B, Sourander P. The effect of age on the non-haemin iron in the human brain.
J Neurochem 1958;3:41-51 (normative iron, Table 1, adults 30-100 years).
"""

from __future__ import annotations

import dataclasses
import re
from importlib import resources

import numpy as np

from qsmkit.errors import InputError

IRON_PPM_PER_MG_PER_KG = 0.00097
"""Susceptibility per iron concentration (SI ppm per mg Fe / kg wet tissue), Langkammer 2012."""

IRON_MOLAR_MASS_G_PER_MOL = 55.845
"""Standard atomic weight of iron (IUPAC)."""

BRAIN_DENSITY_KG_PER_L = 1.04
"""Density of brain tissue (kg/L), ICRP Publication 23 Reference Man (1975): 1.03-1.04."""

NORMATIVE_RESOURCE = "normative_dgm.tsv"
_QUANTITIES = ("iron_mg_per_kg", "chi_ppm")


def iron_from_chi(chi_ppm, *, ppm_per_mg_per_kg: float = IRON_PPM_PER_MG_PER_KG,
                  chi_offset_ppm: float = 0.0):
    """Iron concentration (mg Fe / kg wet tissue) of a (referenced) susceptibility in ppm."""
    if not ppm_per_mg_per_kg > 0:
        raise InputError(f"the chi-iron factor must be positive, got {ppm_per_mg_per_kg}")
    return (np.asarray(chi_ppm, dtype=float) - chi_offset_ppm) / ppm_per_mg_per_kg


def chi_from_iron(iron_mg_per_kg, *, ppm_per_mg_per_kg: float = IRON_PPM_PER_MG_PER_KG,
                  chi_offset_ppm: float = 0.0):
    """Susceptibility (ppm, relative to the reference) of an iron concentration in mg/kg."""
    return np.asarray(iron_mg_per_kg, dtype=float) * ppm_per_mg_per_kg + chi_offset_ppm


def iron_mmol_per_l(iron_mg_per_kg, *, density_kg_per_l: float = BRAIN_DENSITY_KG_PER_L):
    """Molar iron concentration (mmol/L tissue = mM) of a mass fraction in mg/kg."""
    return np.asarray(iron_mg_per_kg, dtype=float) * density_kg_per_l / IRON_MOLAR_MASS_G_PER_MOL


@dataclasses.dataclass(frozen=True)
class NormativeEntry:
    """One row of a normative table."""

    name: str
    aliases: tuple[str, ...]
    quantity: str
    mean: float
    sd: float
    age_years: str = ""
    source: str = ""

    def zscore(self, value: float) -> float:
        return (float(value) - self.mean) / self.sd


def normalise_name(name: str) -> str:
    """Compare structure names: lower case, no hemisphere prefix/suffix, no separators."""
    text = str(name).strip().lower()
    text = re.sub(r"[\s_\-\.]+", " ", text)
    text = re.sub(r"^(left|right|lh|rh|l|r|ctx lh|ctx rh)\s+", "", text)
    text = re.sub(r"\s+(left|right|lh|rh|l|r)$", "", text)
    text = text.replace(" proper", "")
    return text.replace(" ", "")


def parse_normative(text: str, *, origin: str = "normative table") -> list[NormativeEntry]:
    """Parse a normative TSV (columns name, aliases, quantity, mean, sd[, age_years, source])."""
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise InputError(f"{origin} is empty")
    header = [h.strip().lower() for h in lines[0].split("\t")]
    missing = {"name", "quantity", "mean", "sd"} - set(header)
    if missing:
        raise InputError(
            f"{origin} lacks the column(s) {', '.join(sorted(missing))}; it needs a tab-separated "
            "header with name, aliases, quantity, mean, sd (see qsmkit/data/README.md)"
        )
    entries = []
    for number, line in enumerate(lines[1:], start=2):
        cells = dict(zip(header, (c.strip() for c in line.split("\t")), strict=False))
        quantity = cells.get("quantity", "")
        if quantity not in _QUANTITIES:
            raise InputError(
                f"{origin} line {number}: quantity {quantity!r} is not one of {_QUANTITIES}"
            )
        try:
            mean, sd = float(cells["mean"]), float(cells["sd"])
        except (KeyError, ValueError):
            raise InputError(f"{origin} line {number}: mean and sd must be numbers") from None
        if not sd > 0:
            raise InputError(f"{origin} line {number}: sd must be positive, got {sd}")
        aliases = tuple(a.strip() for a in cells.get("aliases", "").split(";") if a.strip())
        entries.append(NormativeEntry(cells["name"], aliases, quantity, mean, sd,
                                      cells.get("age_years", ""), cells.get("source", "")))
    return entries


def load_normative(text: str | None = None) -> list[NormativeEntry]:
    """The shipped normative table (Hallgren & Sourander 1958), or ``text`` of a user table."""
    if text is None:
        text = resources.files("qsmkit").joinpath("data", NORMATIVE_RESOURCE).read_text()
        return parse_normative(text, origin=f"qsmkit/data/{NORMATIVE_RESOURCE}")
    return parse_normative(text)


def match_normative(name: str, table) -> NormativeEntry | None:
    """The entry whose name or alias matches a label name (hemisphere ignored), else None."""
    key = normalise_name(name)
    if not key:
        return None
    for entry in table:
        names = (entry.name, *entry.aliases)
        if any(normalise_name(n) == key for n in names):
            return entry
    return None
