"""Ferritin-buffer + Fenton model: mass balance, limits, and the amplification near saturation."""

import json

import numpy as np
import pytest

from qsmkit.analysis import labile_iron as li
from qsmkit.errors import InputError


def test_mass_balance_holds_everywhere():
    total = np.array([0.0, 1.0, 100.0, 3000.0, 3999.0, 4000.0, 4001.0, 8000.0])
    for bmax in (10.0, 4000.0, 40000.0):
        labile = li.labile_iron_uM(total, bmax, kd_uM=1.0)
        assert np.all(labile >= 0) and np.all(labile <= total + 1e-12)
        bound = li.bound_iron_uM(labile, bmax, kd_uM=1.0)
        np.testing.assert_allclose(labile + bound, total, rtol=1e-10, atol=1e-9)


def test_linear_and_saturated_limits():
    # Spare capacity: L = T Kd / (Kd + Bmax) to first order.
    t, bmax, kd = 10.0, 1e5, 1.0
    assert li.labile_iron_uM(t, bmax, kd) == pytest.approx(t * kd / (kd + bmax), rel=1e-3)
    # Far beyond capacity: everything above Bmax is labile.
    assert li.labile_iron_uM(1e5, 1e3, kd) == pytest.approx(1e5 - 1e3, rel=1e-4)
    assert li.elasticity(t, bmax, kd) == pytest.approx(1.0, abs=1e-3)


def test_elasticity_matches_finite_difference():
    t, bmax, kd = 3000.0, 3600.0, 1.0
    h = 1e-4 * t
    numeric = (np.log(li.labile_iron_uM(t + h, bmax, kd))
               - np.log(li.labile_iron_uM(t - h, bmax, kd))) / (np.log(t + h) - np.log(t - h))
    assert li.elasticity(t, bmax, kd) == pytest.approx(numeric, rel=1e-4)
    assert li.elasticity(t, bmax, kd) > 3


def test_fenton_rate_constant_and_units():
    assert li.FENTON_K_PER_M_PER_S == 76.0
    # 1 uM Fe2+ and 10 nM H2O2: 76 * 1e-6 * 1e-8 M/s = 7.6e-13 M/s = 0.76 pM/s
    assert li.hydroxyl_rate_pM_per_s(1.0, h2o2_uM=0.01) == pytest.approx(0.76)
    assert li.hydroxyl_rate_pM_per_s(1.0, h2o2_uM=0.01, ferrous_fraction=0.5) == \
        pytest.approx(0.38)


def test_rise_is_amplified_only_near_saturation():
    res = li.iron_rise_scenarios(184.6, rise=0.33, capacity_ratios=(1.25, 1.5, 4.0, 10.0))
    rows = {r["capacity_ratio"]: r for r in res.rows}
    # Nearly full buffer: +33 % total iron multiplies the labile pool many times.
    assert rows[1.25]["labile_ratio"] > 10 and rows[1.25]["disproportionate"]
    assert rows[1.25]["oh_ratio"] == pytest.approx(rows[1.25]["labile_ratio"])
    # Spare capacity: close to proportional (1.33), not amplified.
    assert 1.33 <= rows[10.0]["labile_ratio"] < 1.45 and not rows[10.0]["disproportionate"]
    ratios = [r["labile_ratio"] for r in res.rows]
    assert all(a > b for a, b in zip(ratios, ratios[1:], strict=False))
    assert res.summary["disproportionate_when_capacity_ratio_at_most"] == 1.5
    assert res.summary["proportional_when_capacity_ratio_at_least"] == 4.0
    assert "not a measurement" in res.summary["model_statement"]
    assert res.rows[0]["total_before_uM"] == pytest.approx(184.6 * 1.04 / 55.845 * 1000)


def test_bad_parameters():
    with pytest.raises(InputError):
        li.iron_rise_scenarios(-1.0)
    with pytest.raises(InputError):
        li.iron_rise_scenarios(100.0, capacity_ratios=(0.0,))
    with pytest.raises(InputError):
        li.hydroxyl_rate_pM_per_s(1.0, ferrous_fraction=1.5)
    with pytest.raises(InputError):
        li.labile_iron_uM(1.0, 1.0, kd_uM=0.0)


def test_cli_iron_model(tmp_path, capsys):
    from qsmkit.cli.main import main

    out = tmp_path / "model.tsv"
    assert main(["iron-model", "--chi", "0.18", "--capacity-ratios", "1.2,10",
                 "-o", str(out)]) == 0
    assert "MODEL" in capsys.readouterr().out
    header = out.read_text().splitlines()[0].split("\t")
    assert header == list(li.MODEL_COLUMNS)
    payload = json.loads(out.with_suffix(".json").read_text())
    assert payload["summary"]["total_iron_mg_per_kg"] == pytest.approx(0.18 / 0.00097)
    assert payload["parameters"]["fenton_k_per_M_per_s"] == 76.0
    assert out.with_suffix(".png").exists()
    assert main(["iron-model", "--region", "hippocampus", "-o", str(tmp_path / "y.tsv")]) == 2
