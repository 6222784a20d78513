"""Echo trains that cannot separate water from fat are noticed and said (Pineda 2005 NSA)."""

import csv
import json

import numpy as np

import liver_encodings as enc
from independent_abdomen import make_abdomen_phantom
from qsmkit.body.echo_train import NSA_LIMIT, fat_water_nsa
from qsmkit.cli.main import main


def _train(te1_ms, dte_ms, n=6):
    return (te1_ms + dte_ms * np.arange(n)) * 1e-3


def test_nsa_of_common_and_in_phase_echo_trains():
    # vendor-like chemical-shift-encoded trains are well conditioned at both fields
    for b0, te1, dte in ((3.0, 1.2, 1.2), (3.0, 0.9, 0.7), (1.5, 1.2, 1.2), (1.5, 1.2, 2.0)):
        assert fat_water_nsa(_train(te1, dte), b0) > 0.8, (b0, te1, dte)
    # a spacing of one period of the methylene peak (-3.4 ppm: 2.30 ms at 3 T, 4.60 ms at
    # 1.5 T; written out here) leaves fat and water in phase at every echo
    for b0, dte in ((3.0, 1e3 / (3.4 * 42.577 * 3.0)), (1.5, 1e3 / (3.4 * 42.577 * 1.5))):
        assert fat_water_nsa(_train(1.1, dte), b0) < NSA_LIMIT / 2
    # and the conditioning worsens continuously as the spacing nears it
    values = [fat_water_nsa(_train(1.2, d), 3.0) for d in (1.2, 1.6, 2.0, 2.2)]
    assert values[-1] < values[-2] < values[1]
    assert values[2] < NSA_LIMIT < values[1]


def test_an_in_phase_echo_train_is_flagged_on_every_row_and_warned(tmp_path, capsys):
    rows = {}
    for name, dte in (("good", 1.2e-3), ("in_phase", 2.2e-3)):
        ph = make_abdomen_phantom(shape=(32, 32, 6), voxel_mm=(8.0, 8.0, 64.0 / 6),
                                  b0_tesla=3.0, snr=60.0,
                                  echo_times_s=tuple(1.2e-3 + dte * k for k in range(6)))
        argv = enc.write_reference(ph, tmp_path / name)
        te = ",".join(f"{t:.6f}" for t in ph.echo_times_s)
        out = tmp_path / name / "out"
        assert main(["liver", *argv, "--echo-times", te, "--b0", "3", "--phase-unit", "rad",
                     "-o", str(out)]) == 0
        printed = capsys.readouterr().err
        with open(out / "liver.tsv") as fh:
            rows[name] = list(csv.DictReader(fh, delimiter="\t"))
        assert ("warning [ECHO_TRAIN]: the echo train separates water from fat poorly"
                in printed) == (name == "in_phase"), printed
        codes = [w["code"] for w in json.loads((out / "qsmkit.json").read_text())["warnings"]]
        assert ("ECHO_TRAIN" in codes) == (name == "in_phase"), codes
    assert rows["good"] and all("fat_water_ill_conditioned" not in r["flags"]
                                for r in rows["good"])
    assert rows["in_phase"] and all("fat_water_ill_conditioned" in r["flags"]
                                    for r in rows["in_phase"])
