"""A model (not a measurement) of labile iron and hydroxyl-radical production from total iron.

QSM measures total tissue iron, nearly all of it stored in ferritin. What damages cells is the
small labile (chelatable, redox-active) pool, which feeds the Fenton reaction
``Fe2+ + H2O2 -> Fe3+ + OH. + OH-``. This module asks: for a given total iron, and a given rise
of it (e.g. +33 % in the Parkinsonian substantia nigra), how much does the labile pool and the
hydroxyl-radical production rise?

Model
-----
Ferritin buffering with saturable binding: total = labile + bound, and the bound iron is in
fast equilibrium with the labile pool through an effective dissociation constant ``Kd`` and a
binding capacity ``Bmax``::

    T = L + Bmax * L / (Kd + L)          (all concentrations in uM)

whose positive root is ``L = (-b + sqrt(b^2 + 4 T Kd)) / 2`` with ``b = Kd + Bmax - T``.
Fenton kinetics give the hydroxyl-radical production rate::

    R = k_F * [Fe2+] * [H2O2],  [Fe2+] = f_ferrous * L,  k_F = 76 M^-1 s^-1

Behaviour: while ferritin has spare capacity (``T << Bmax``) the labile pool is proportional to
total iron, ``L ~ T Kd / (Kd + Bmax)``, so +33 % total iron gives +33 % labile iron and +33 %
radical production. As the loading ``T / Bmax`` approaches 1 the buffer saturates and the
labile pool rises steeply: the same +33 % can multiply the labile pool several-fold. The
elasticity ``d ln L / d ln T = (T / L) / (1 + Bmax Kd / (Kd + L)^2)`` is 1 in the linear regime
and large near saturation.

Parameters (defaults, sources)
------------------------------
k_F = 76 M^-1 s^-1: Walling C. Fenton's reagent revisited. Acc Chem Res 1975;8:125-131
    (second-order rate constant of Fe2+ + H2O2, after Rigg, Taylor & Weiss 1954).
Kd = 1 uM: an effective constant chosen so that the labile pool is ~1 uM when ferritin is half
    loaded, matching the cytosolic labile iron pool of 0.2-1.5 uM measured with calcein
    (Epsztejn S et al. Anal Biochem 1997;248:31-40; Kakhlon O, Cabantchik ZI. Free Radic Biol
    Med 2002;33:1037-1046). It is a calibration assumption, not a measured binding constant.
[H2O2] = 0.01 uM (10 nM): intracellular steady state of the order of 1-10 nM (Sies H. Redox
    Biol 2017;11:613-619).
f_ferrous = 1: the labile pool treated as all Fe2+ (an upper bound; it is mostly ferrous in
    the reducing cytosol, Kakhlon & Cabantchik 2002).
Bmax: ferritin's capacity, given as ``capacity_ratio = Bmax / T0`` (how far the normal iron is
    below saturation). A ferritin shell holds up to ~4500 Fe atoms and is typically loaded to
    well below that (Harrison PM, Arosio P. Biochim Biophys Acta 1996;1275:161-203), so
    ratios between ~1.2 (nearly full) and 10 (mostly empty) are explored.
Total iron: mg/kg from chi via :mod:`qsmkit.analysis.iron`, converted to uM with a tissue
    density of 1.04 kg/L and 55.845 g/mol.

Limits: a single well-mixed compartment at equilibrium; no iron import/export, no regulation of
ferritin synthesis by iron-regulatory proteins, no neuromelanin binding, no compartments
(lysosomes, mitochondria) and no radical scavenging. It illustrates a mechanism; it predicts no
patient's labile iron.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from qsmkit.analysis import iron as iron_mod
from qsmkit.analysis import new_figure
from qsmkit.errors import InputError

FENTON_K_PER_M_PER_S = 76.0
"""Fe2+ + H2O2 second-order rate constant (M^-1 s^-1), Walling 1975."""

DEFAULT_KD_UM = 1.0
DEFAULT_H2O2_UM = 0.01
DEFAULT_FERROUS_FRACTION = 1.0
DEFAULT_CAPACITY_RATIOS = (1.1, 1.25, 1.5, 2.0, 4.0, 10.0)

MODEL_COLUMNS = (
    "capacity_ratio", "bmax_uM", "total_before_uM", "total_after_uM", "loading_before",
    "loading_after", "labile_before_uM", "labile_after_uM", "labile_ratio",
    "oh_rate_before_pM_per_s", "oh_rate_after_pM_per_s", "oh_ratio", "elasticity_before",
    "disproportionate",
)


def labile_iron_uM(total_uM, bmax_uM, kd_uM: float = DEFAULT_KD_UM):
    """Labile iron (uM) in equilibrium with a saturable ferritin buffer (see module doc)."""
    t = np.asarray(total_uM, dtype=float)
    bmax = np.asarray(bmax_uM, dtype=float)
    if np.any(t < 0) or np.any(bmax < 0) or not kd_uM > 0:
        raise InputError("total iron and Bmax must be >= 0 and Kd > 0 (uM)")
    b = kd_uM + bmax - t
    disc = np.sqrt(b * b + 4.0 * t * kd_uM)
    # Two algebraically equal forms of the positive root, each stable for one sign of b.
    with np.errstate(divide="ignore", invalid="ignore"):
        stable_pos = np.where(b + disc > 0, 2.0 * t * kd_uM / (b + disc), 0.0)
    return np.where(b > 0, stable_pos, 0.5 * (disc - b))


def bound_iron_uM(labile_uM, bmax_uM, kd_uM: float = DEFAULT_KD_UM):
    """Ferritin-bound iron (uM) for a labile concentration."""
    labile = np.asarray(labile_uM, dtype=float)
    return np.asarray(bmax_uM, dtype=float) * labile / (kd_uM + labile)


def elasticity(total_uM, bmax_uM, kd_uM: float = DEFAULT_KD_UM):
    """d ln(labile) / d ln(total): 1 = proportional response, >1 = amplified."""
    t = np.asarray(total_uM, dtype=float)
    labile = labile_iron_uM(t, bmax_uM, kd_uM)
    dldt = 1.0 / (1.0 + np.asarray(bmax_uM) * kd_uM / (kd_uM + labile) ** 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(labile > 0, t / labile * dldt, 1.0)


def hydroxyl_rate_pM_per_s(labile_uM, *, h2o2_uM: float = DEFAULT_H2O2_UM,
                           ferrous_fraction: float = DEFAULT_FERROUS_FRACTION,
                           k_per_m_per_s: float = FENTON_K_PER_M_PER_S):
    """Fenton OH. production rate k [Fe2+][H2O2] in pmol/L/s."""
    if not 0 < ferrous_fraction <= 1:
        raise InputError(f"ferrous fraction must be in (0, 1], got {ferrous_fraction}")
    if h2o2_uM < 0:
        raise InputError(f"H2O2 concentration must be >= 0 uM, got {h2o2_uM}")
    fe2_m = ferrous_fraction * np.asarray(labile_uM, dtype=float) * 1e-6
    return k_per_m_per_s * fe2_m * (h2o2_uM * 1e-6) * 1e12


@dataclasses.dataclass
class LabileIronResult:
    rows: list[dict]
    summary: dict
    parameters: dict
    curves: dict


def iron_rise_scenarios(
    total_iron_mg_per_kg: float,
    *,
    rise: float = 0.33,
    capacity_ratios=DEFAULT_CAPACITY_RATIOS,
    kd_uM: float = DEFAULT_KD_UM,
    h2o2_uM: float = DEFAULT_H2O2_UM,
    ferrous_fraction: float = DEFAULT_FERROUS_FRACTION,
    k_per_m_per_s: float = FENTON_K_PER_M_PER_S,
    amplification_threshold: float = 2.0,
    density_kg_per_l: float = iron_mod.BRAIN_DENSITY_KG_PER_L,
) -> LabileIronResult:
    """Labile iron and OH. production before and after a relative rise of total iron.

    One row per buffer capacity (``Bmax = capacity_ratio * T0``). A rise is called
    ``disproportionate`` when the relative rise of labile iron exceeds
    ``amplification_threshold`` times the relative rise of total iron.
    """
    if not total_iron_mg_per_kg > 0:
        raise InputError(f"total iron must be positive (mg/kg), got {total_iron_mg_per_kg}")
    if not -1 < rise:
        raise InputError(f"the relative rise must be > -1, got {rise}")
    ratios = [float(r) for r in np.atleast_1d(capacity_ratios)]
    if not ratios or any(r <= 0 for r in ratios):
        raise InputError("capacity ratios must be positive numbers")
    t0 = float(iron_mod.iron_mmol_per_l(total_iron_mg_per_kg,
                                        density_kg_per_l=density_kg_per_l)) * 1000.0
    t1 = t0 * (1.0 + rise)
    rate = dict(h2o2_uM=h2o2_uM, ferrous_fraction=ferrous_fraction,
                k_per_m_per_s=k_per_m_per_s)
    rows, curves = [], {"total_uM": np.linspace(0.0, 2.0 * t0, 400).tolist()}
    for ratio in ratios:
        bmax = ratio * t0
        l0 = float(labile_iron_uM(t0, bmax, kd_uM))
        l1 = float(labile_iron_uM(t1, bmax, kd_uM))
        r0 = float(hydroxyl_rate_pM_per_s(l0, **rate))
        r1 = float(hydroxyl_rate_pM_per_s(l1, **rate))
        labile_ratio = l1 / l0
        rows.append({
            "capacity_ratio": ratio, "bmax_uM": bmax, "total_before_uM": t0,
            "total_after_uM": t1, "loading_before": (t0 - l0) / bmax,
            "loading_after": (t1 - l1) / bmax, "labile_before_uM": l0, "labile_after_uM": l1,
            "labile_ratio": labile_ratio, "oh_rate_before_pM_per_s": r0,
            "oh_rate_after_pM_per_s": r1, "oh_ratio": r1 / r0,
            "elasticity_before": float(elasticity(t0, bmax, kd_uM)),
            "disproportionate": bool(labile_ratio - 1.0 > amplification_threshold * rise),
        })
        curves[f"labile_uM_ratio_{ratio:g}"] = labile_iron_uM(
            np.asarray(curves["total_uM"]), bmax, kd_uM).tolist()
    summary = {
        "model_statement": "A model, not a measurement: labile iron and hydroxyl-radical "
        "production are computed from a ferritin-buffer + Fenton model with assumed "
        "parameters; QSM measures only total iron.",
        "total_iron_mg_per_kg": float(total_iron_mg_per_kg), "total_iron_uM": t0,
        "rise": float(rise),
        "disproportionate_when_capacity_ratio_at_most": max(
            (r["capacity_ratio"] for r in rows if r["disproportionate"]), default=None),
        "proportional_when_capacity_ratio_at_least": min(
            (r["capacity_ratio"] for r in rows if not r["disproportionate"]), default=None),
    }
    parameters = {
        "kd_uM": kd_uM, "h2o2_uM": h2o2_uM, "ferrous_fraction": ferrous_fraction,
        "fenton_k_per_M_per_s": k_per_m_per_s, "capacity_ratios": ratios,
        "amplification_threshold": amplification_threshold,
        "density_kg_per_l": density_kg_per_l,
        "sources": {
            "fenton_k": "Walling C. Acc Chem Res 1975;8:125-131",
            "kd": "calibrated to a ~1 uM labile pool at half loading (Epsztejn 1997; "
                  "Kakhlon & Cabantchik 2002)",
            "h2o2": "Sies H. Redox Biol 2017;11:613-619 (intracellular ~1-10 nM)",
            "ferritin_capacity": "Harrison PM, Arosio P. BBA 1996;1275:161-203 (~4500 Fe "
                                 "per ferritin)",
        },
    }
    return LabileIronResult(rows, summary, parameters, curves)


def plot_scenarios(result: LabileIronResult):
    """Labile iron against total iron for each buffer capacity, and the rise it gives."""
    fig = new_figure(11.0, 4.2)
    ax = fig.add_subplot(1, 2, 1)
    total = np.asarray(result.curves["total_uM"])
    t0 = result.summary["total_iron_uM"]
    for row in result.rows:
        key = f"labile_uM_ratio_{row['capacity_ratio']:g}"
        ax.semilogy(total / t0, np.maximum(result.curves[key], 1e-6),
                    label=f"Bmax = {row['capacity_ratio']:g} x T0")
    ax.axvline(1.0, color="k", lw=0.6, ls=":")
    ax.axvline(1.0 + result.summary["rise"], color="r", lw=0.6, ls=":")
    ax.set_xlabel("total iron / T0")
    ax.set_ylabel("labile iron (uM)")
    ax.set_title("MODEL: ferritin buffer saturation")
    ax.legend(fontsize=7)
    ax2 = fig.add_subplot(1, 2, 2)
    ratios = [r["capacity_ratio"] for r in result.rows]
    ax2.loglog(ratios, [r["labile_ratio"] for r in result.rows], "o-",
                 label="labile (and OH.) ratio")
    ax2.axhline(1.0 + result.summary["rise"], color="k", ls="--", lw=0.8,
                label="proportional (total ratio)")
    ax2.set_xlabel("buffer capacity Bmax / T0")
    ax2.set_ylabel("after / before")
    ax2.set_title(f"+{100 * result.summary['rise']:.0f} % total iron")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    return fig
