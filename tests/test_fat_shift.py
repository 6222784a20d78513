"""A wrong field strength or a phase of the opposite sign is read from the fat and refused."""

import numpy as np
import pytest

import liver_encodings as enc
from independent_abdomen import make_abdomen_phantom
from qsmkit.body.fat_shift import RESIDUAL_RATIO_LIMIT, check_fat_shift
from qsmkit.cli.main import main
from qsmkit.errors import InputError

GEOMETRY = dict(shape=(32, 32, 6), voxel_mm=(8.0, 8.0, 64.0 / 6), snr=60.0)


@pytest.fixture(scope="module")
def abdomens():
    # the independent abdomen (its own six-peak fat of ndb 2.9, fine grid, continuous kernel)
    return {b0: make_abdomen_phantom(b0_tesla=b0, **GEOMETRY) for b0 in (1.5, 3.0)}


def _support(ph):
    first = ph.magnitude[..., 0]
    return first > 0.05 * np.percentile(first, 99)


@pytest.mark.parametrize("b0", [1.5, 3.0])
def test_the_true_field_and_sign_pass_and_every_rival_fits_worse(abdomens, b0):
    ph = abdomens[b0]
    record = check_fat_shift(ph.magnitude, ph.phase, ph.echo_times_s, b0, _support(ph))
    ratios = record["residual_ratio"]
    assert f"{b0:g} T, phase negated" in ratios
    # nothing explains the data better than the truth (the limit leaves room for model error)
    assert min(ratios.values()) > 1.0, ratios


@pytest.mark.parametrize("true_b0, stated", [(3.0, 1.5), (1.5, 3.0)])
def test_a_wrong_field_strength_is_refused_naming_the_right_one(abdomens, true_b0, stated):
    ph = abdomens[true_b0]
    with pytest.raises(InputError, match=f"fits a field strength of {true_b0:g} T, not the "
                                         f"{stated:g} T stated"):
        check_fat_shift(ph.magnitude, ph.phase, ph.echo_times_s, stated, _support(ph))


@pytest.mark.parametrize("b0", [1.5, 3.0])
def test_phase_of_the_opposite_sign_is_refused(abdomens, b0):
    ph = abdomens[b0]
    with pytest.raises(InputError, match="phase runs against qsmkit's convention"):
        check_fat_shift(ph.magnitude, -ph.phase, ph.echo_times_s, b0, _support(ph))


def test_water_alone_says_nothing_of_field_or_sign():
    # no fat: every field and sign explains the signal alike, so nothing is refused
    rng = np.random.default_rng(3)
    te = 1.2e-3 * np.arange(1, 7)
    shape = (24, 24, 4)
    field_hz = rng.normal(0.0, 40.0, shape)
    r2 = rng.uniform(20.0, 80.0, shape)
    clean = np.exp((2j * np.pi * field_hz[..., None] - r2[..., None]) * te)
    for noise in (0.02, 0.005):  # SNR 50 and 200
        s = clean + noise * (rng.normal(size=clean.shape) + 1j * rng.normal(size=clean.shape))
        for b0 in (1.5, 3.0):
            for sign in (1, -1):
                record = check_fat_shift(np.abs(s), sign * np.angle(s), te, b0,
                                         np.ones(shape, bool))
                assert all(q * RESIDUAL_RATIO_LIMIT > 1.0
                           for q in record["residual_ratio"].values()), (noise, b0, sign)


def test_cli_refuses_a_mistyped_b0_in_one_line_and_writes_nothing(abdomens, tmp_path, capsys):
    ph = abdomens[3.0]
    argv = enc.write_reference(ph, tmp_path / "data")
    te = ",".join(f"{t:.6f}" for t in ph.echo_times_s)
    out = tmp_path / "out"
    assert main(["liver", *argv, "--echo-times", te, "--b0", "1.5", "--phase-unit", "rad",
                 "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fits a field strength of 3 T" in err[0], err
    assert not (out / "liver.tsv").exists()



def test_a_b0_that_overrides_the_sidecars_is_noted(abdomens, tmp_path):
    from independent_abdomen import write_nifti
    from qsmkit.io.load import load_acquisition

    paths = write_nifti(abdomens[3.0], tmp_path / "data")  # sidecars: MagneticFieldStrength 3
    acq = load_acquisition(mag=paths["mag"], phase=paths["phase"], b0_tesla=1.5,
                           phase_unit="rad")
    assert acq.b0_tesla == 1.5
    assert any("1.5 T from the command line replaces 3 T from the sidecars" in n
               for n in acq.notes), acq.notes
    same = load_acquisition(mag=paths["mag"], phase=paths["phase"], b0_tesla=2.89,
                            phase_unit="rad")
    assert not any("field strength" in n for n in same.notes), same.notes
