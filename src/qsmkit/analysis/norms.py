"""Age-dependent normative chi of deep grey nuclei from in-vivo QSM cohorts, and z-scores.

A norm says what chi a healthy nucleus has at a given age, *relative to a stated reference
region* (ventricular CSF or the whole-brain mean), with the between-subject SD of the
cohort and the standard error of the fitted mean. A regional value is scored only against
norms whose reference it can be expressed in::

    z = (x - mu(age)) / sqrt(sigma^2 + se_mu^2)

with ``x`` the regional mean chi relative to the norm's reference, ``mu(age)`` the cohort's
age model, ``sigma`` the between-subject SD (the spread of healthy people, not an error) and
``se_mu`` the standard error of ``mu`` (for a mean of n subjects, ``sigma / sqrt(n)``), so a
norm from a small cohort widens the interval rather than inflating z.

Age models (``model`` column; ``p1, p2, p3`` are its parameters, chi in ppm, age in years):

``constant``     ``mu = p1``
``linear``       ``mu = p1 + p2 * age``
``exponential``  ``mu = p1 * (1 - exp(-age / p2)) + p3`` (monotonic growth to a plateau, the
                 form Li et al. 2014 fitted to deep grey matter over the lifespan)

A norm holds only within its cohort's ages ``[age_min, age_max]``: outside it, or for a
nucleus the table lacks, no z is computed and the reason is given (nothing is extrapolated).

Table format (TSV, one row per structure and age band; ``#`` lines are comments):
``structure, aliases (;-separated), reference (csf | brain), model, p1, p2, p3, sd_ppm,
se_mean_ppm, age_min, age_max, n, method, source``. ``source`` must name the paper and the
table or figure the numbers come from, and ``method`` the field strength, inversion and
segmentation; rows without them are refused.

References
----------
Li W, Wu B, Batrachenko A, et al. Differential developmental trajectories of magnetic
susceptibility in human brain gray and white matter over the lifespan. Hum Brain Mapp
2014;35:2698-2713 (exponential growth of deep-nuclei chi with age).
Treit S, Naji N, Seres P, et al. R2* and quantitative susceptibility mapping in deep gray
matter of 498 healthy controls from 5 to 90 years. Hum Brain Mapp 2021;42:4597-4610
(between-subject variability grows with age).
QSM Consensus Organization Committee. Recommended implementation of quantitative
susceptibility mapping for clinical research in the brain. Magn Reson Med 2024;91:1834-1862
(report the reference region; compare values only on the same reference).
"""

from __future__ import annotations

import dataclasses
import math
from importlib import resources

from qsmkit.analysis.iron import normalise_name
from qsmkit.errors import InputError

NORMS_RESOURCE = "normative_chi_invivo.tsv"
MODELS = {"constant": 1, "linear": 2, "exponential": 3}
REFERENCES = ("csf", "brain")
COLUMNS = ("structure", "aliases", "reference", "model", "p1", "p2", "p3", "sd_ppm",
           "se_mean_ppm", "age_min", "age_max", "n", "method", "source")


@dataclasses.dataclass(frozen=True)
class ChiNorm:
    """One normative row: a structure's healthy chi over an age band, on one reference."""

    structure: str
    aliases: tuple[str, ...]
    reference: str
    model: str
    params: tuple[float, ...]
    sd_ppm: float
    se_mean_ppm: float
    age_min: float
    age_max: float
    n: int
    method: str
    source: str

    def covers(self, age_years: float) -> bool:
        return self.age_min <= float(age_years) <= self.age_max

    def mean_at(self, age_years: float) -> float:
        """Normative mean chi (ppm, relative to ``reference``) at ``age_years``."""
        if not self.covers(age_years):
            raise InputError(f"the {self.structure} norm covers ages {self.age_min:g}-"
                             f"{self.age_max:g} years, not {age_years:g}")
        age = float(age_years)
        p = self.params
        if self.model == "constant":
            return p[0]
        if self.model == "linear":
            return p[0] + p[1] * age
        return p[0] * (1.0 - math.exp(-age / p[1])) + p[2]

    def zscore(self, value_ppm: float, age_years: float) -> float:
        """``(x - mu(age)) / sqrt(sd^2 + se_mu^2)``."""
        scale = math.hypot(self.sd_ppm, self.se_mean_ppm)
        return (float(value_ppm) - self.mean_at(age_years)) / scale

    def names(self) -> tuple[str, ...]:
        return (self.structure, *self.aliases)


def _number(cells: dict, key: str, origin: str, number: int, *, required=True):
    text = cells.get(key, "").strip()
    if not text or text.lower() in ("n/a", "na", "nan"):
        if required:
            raise InputError(f"{origin} line {number}: column {key} is empty")
        return None
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{origin} line {number}: {key} must be a number, got {text!r}") \
            from None
    if not math.isfinite(value):
        raise InputError(f"{origin} line {number}: {key} must be finite, got {text!r}")
    return value


def parse_norms(text: str, *, origin: str = "normative table") -> list[ChiNorm]:
    """Parse a normative chi table (see the module notes for the columns)."""
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        return []
    header = [h.strip().lower() for h in lines[0].split("\t")]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise InputError(f"{origin} lacks the column(s) {', '.join(missing)}; a normative chi "
                         f"table has the tab-separated columns {', '.join(COLUMNS)}")
    norms = []
    for number, line in enumerate(lines[1:], start=2):
        cells = dict(zip(header, (c.strip() for c in line.split("\t")), strict=False))
        reference = cells.get("reference", "").lower()
        if reference not in REFERENCES:
            raise InputError(f"{origin} line {number}: reference {reference!r} must be one of "
                             f"{', '.join(REFERENCES)} (the region chi is relative to)")
        model = cells.get("model", "").lower()
        if model not in MODELS:
            raise InputError(f"{origin} line {number}: model {model!r} must be one of "
                             f"{', '.join(MODELS)}")
        params = tuple(_number(cells, f"p{i}", origin, number) for i in range(1, 1 + MODELS[model]))
        if model == "exponential" and not params[1] > 0:
            raise InputError(f"{origin} line {number}: the exponential time constant p2 must "
                             f"be positive (years)")
        sd = _number(cells, "sd_ppm", origin, number)
        se = _number(cells, "se_mean_ppm", origin, number, required=False)
        n = _number(cells, "n", origin, number)
        if not sd > 0 or not n >= 2:
            raise InputError(f"{origin} line {number}: sd_ppm must be positive and n at least 2")
        if se is None:
            se = sd / math.sqrt(n)
        age_min = _number(cells, "age_min", origin, number)
        age_max = _number(cells, "age_max", origin, number)
        if not 0 <= age_min < age_max:
            raise InputError(f"{origin} line {number}: need 0 <= age_min < age_max")
        for key in ("structure", "method", "source"):
            if not cells.get(key):
                raise InputError(f"{origin} line {number}: column {key} is empty; every norm "
                                 "names its structure, method and source (paper and table)")
        aliases = tuple(a.strip() for a in cells.get("aliases", "").split(";") if a.strip())
        norms.append(ChiNorm(cells["structure"], aliases, reference, model, params, sd, se,
                             age_min, age_max, int(n), cells["method"], cells["source"]))
    return norms


def load_norms(text: str | None = None) -> list[ChiNorm]:
    """The normative chi table shipped with qsmkit, or the ``text`` of a user table."""
    if text is None:
        text = resources.files("qsmkit").joinpath("data", NORMS_RESOURCE).read_text()
        return parse_norms(text, origin=f"qsmkit/data/{NORMS_RESOURCE}")
    return parse_norms(text)


def read_norms(path) -> list[ChiNorm]:
    """A user normative chi table from a file."""
    from pathlib import Path

    try:
        text = Path(path).read_text()
    except OSError as err:
        raise InputError(f"cannot read the normative table {path}: {err}") from None
    return parse_norms(text, origin=str(path))


def matching_norms(name: str, norms) -> list[ChiNorm]:
    """The norms whose structure or alias is the label ``name`` (hemisphere ignored)."""
    key = normalise_name(name)
    if not key:
        return []
    return [n for n in norms if any(normalise_name(a) == key for a in n.names())]


def score_region(name: str, values_ppm: dict, age_years: float | None, norms) -> dict:
    """z of one region against the first norm that fits it, or why there is none.

    Parameters
    ----------
    name : label name (e.g. ``Left-Putamen``)
    values_ppm : dict reference -> regional mean chi relative to it (ppm) or None when the
        map cannot be expressed on that reference (see
        :func:`qsmkit.reference.offset_to_reference`)
    age_years : the subject's age; None gives no z (norms are age-dependent)
    norms : list of :class:`ChiNorm`

    Returns
    -------
    dict with ``z``, ``norm_mean_ppm``, ``norm_sd_ppm``, ``norm_se_ppm``, ``norm_reference``,
    ``norm_source`` and ``z_note`` (why no z, else None).
    """
    out = {"z": None, "norm_mean_ppm": None, "norm_sd_ppm": None, "norm_se_ppm": None,
           "norm_reference": None, "norm_source": None, "z_note": None}
    norms = list(norms)
    if not norms:
        out["z_note"] = ("the in-vivo norm table has no rows (qsmkit ships none: no published "
                         "table could be transcribed); pass --norms TABLE of matched controls")
        return out
    candidates = matching_norms(name, norms)
    if not candidates:
        out["z_note"] = "no normative value for this structure"
        return out
    if age_years is None:
        out["z_note"] = "age not given (norms are age-dependent: pass --age)"
        return out
    in_age = [n for n in candidates if n.covers(age_years)]
    if not in_age:
        ranges = ", ".join(f"{n.age_min:g}-{n.age_max:g}" for n in candidates)
        out["z_note"] = f"no norm at age {age_years:g} (cohort ages {ranges}); not extrapolated"
        return out
    usable = [n for n in in_age if values_ppm.get(n.reference) is not None]
    if not usable:
        refs = ", ".join(sorted({n.reference for n in in_age}))
        out["z_note"] = (f"the norm is relative to {refs}, and this map cannot be expressed on "
                         "that reference (no CSF/brain level known)")
        return out
    norm = usable[0]
    out.update(z=norm.zscore(values_ppm[norm.reference], age_years),
               norm_mean_ppm=norm.mean_at(age_years), norm_sd_ppm=norm.sd_ppm,
               norm_se_ppm=norm.se_mean_ppm, norm_reference=norm.reference,
               norm_source=norm.source)
    return out
