"""Cohorts on a real dask.distributed LocalCluster: isolation, resume, worker loss."""

import csv
import json
import os
import signal
import threading
import time

import numpy as np
import pytest

pytest.importorskip("qsmkit.phantom")
pytest.importorskip("distributed")

from qsmkit.cli.main import main  # noqa: E402
from qsmkit.io.nifti import save_nifti  # noqa: E402

SUBJECTS = {"01": "control", "02": "pd", "03": "control"}


def _write_subject(root, subject, seed, *, n_echoes=3):
    from qsmkit.io.bids import write_megre_subject
    from qsmkit.phantom import head_phantom, simulate_gre

    ph = head_phantom(shape=(48, 48, 48), voxel_size=(4.0, 4.0, 4.0), seed=seed)
    sim = simulate_gre(ph, echo_times_s=(0.005, 0.010, 0.015)[:n_echoes], b0_tesla=3.0,
                       snr=80.0, seed=seed)
    write_megre_subject(root, subject, sim.magnitude, sim.phase, sim.affine, sim.echo_times_s,
                        sim.b0_tesla)
    anat = root / "derivatives" / "seg" / f"sub-{subject}" / "anat"
    anat.mkdir(parents=True, exist_ok=True)
    save_nifti(anat / f"sub-{subject}_dseg.nii.gz", ph.labels.astype(np.int16), sim.affine)
    with open(anat / f"sub-{subject}_dseg.tsv", "w") as handle:
        handle.write("index\tname\n")
        for index, name in sorted(ph.label_names.items()):
            handle.write(f"{index}\t{name}\n")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("bids")
    for i, subject in enumerate(SUBJECTS):
        _write_subject(root, subject, seed=i)
    # A broken subject: its second phase echo is a truncated file.
    _write_subject(root, "99", seed=9)
    broken = sorted((root / "sub-99" / "anat").glob("*echo-2_part-phase*.nii.gz"))[0]
    broken.write_bytes(broken.read_bytes()[:300])
    with open(root / "participants.tsv", "w") as handle:
        handle.write("participant_id\tgroup\tage\n")
        for subject, group in {**SUBJECTS, "99": "control"}.items():
            handle.write(f"sub-{subject}\t{group}\t60\n")
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": "test", "BIDSVersion": "1.9.0"}))
    return root


def _read_tsv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


@pytest.mark.slow
def test_cohort_isolates_failure_and_resumes(dataset, tmp_path, capsys):
    out = tmp_path / "derivatives"
    code = main(["bids", str(dataset), str(out), "--workers", "2", "--preset", "fast",
                 "--no-progress"])
    assert code == 1  # the broken subject fails the run...
    text = capsys.readouterr().out
    assert "sub-99" in text and "failed" in text
    summary = {r["label"]: r["status"] for r in _read_tsv(out / "group" / "summary.tsv")}
    assert summary == {"sub-01": "done", "sub-02": "done", "sub-03": "done", "sub-99": "failed"}
    for subject in SUBJECTS:  # ...but every other subject is complete, with BIDS derivatives
        anat = out / f"sub-{subject}" / "anat"
        for suffix in ("Chimap", "R2starmap", "T2starmap", "mask", "desc-brain_mask"):
            assert (anat / f"sub-{subject}_{suffix}.nii.gz").exists()
            sidecar = json.loads((anat / f"sub-{subject}_{suffix}.json").read_text())
            # BIDS derivatives: maps carry Units, masks their Type; both their Sources
            assert ("Type" if suffix.endswith("mask") else "Units") in sidecar
            source = (f"bids::sub-{subject}/anat/sub-{subject}_R2starmap.nii.gz"
                      if suffix == "T2starmap" else
                      f"bids:raw:sub-{subject}/anat/sub-{subject}_echo-1_part-mag_MEGRE.nii.gz")
            assert sidecar["Sources"][0] == source
    assert not (out / "sub-99" / "anat").exists()
    roi = _read_tsv(out / "group" / "roi_stats.tsv")
    assert {r["subject"] for r in roi} == set(SUBJECTS)
    assert {r["group"] for r in roi} == {"control", "pd"}  # participants.tsv joined
    assert len(_read_tsv(out / "group" / "qc.tsv")) == 3
    assert (out / "index.html").exists()
    assert json.loads((out / "dataset_description.json").read_text())["DatasetType"] == "derivative"

    stamp = (out / "sub-01" / "anat" / "sub-01_Chimap.nii.gz").stat().st_mtime_ns
    code = main(["bids", str(dataset), str(out), "--workers", "2", "--preset", "fast",
                 "--no-progress"])
    assert code == 1
    summary = {r["label"]: r["status"] for r in _read_tsv(out / "group" / "summary.tsv")}
    assert summary["sub-01"] == summary["sub-02"] == summary["sub-03"] == "skipped"
    assert (out / "sub-01" / "anat" / "sub-01_Chimap.nii.gz").stat().st_mtime_ns == stamp
    # Group tables stay whole on a rerun that skips everything.
    assert {r["subject"] for r in _read_tsv(out / "group" / "roi_stats.tsv")} == set(SUBJECTS)


@pytest.mark.slow
def test_partial_output_is_not_complete(dataset, tmp_path):
    from qsmkit.cohort.derivatives import config_hash, is_complete

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "qsmkit.json").write_text(json.dumps({"status": "running"}))
    assert not is_complete(run_dir, tmp_path, "sub-01", config_hash({}), {})


@pytest.mark.slow
def test_cohort_survives_a_killed_worker(dataset, tmp_path):
    from distributed import Client, LocalCluster

    from qsmkit.cohort import run_cohort

    out = tmp_path / "derivatives"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        result = {}

        def work():
            result["summary"] = run_cohort(dataset, out, participant_label=list(SUBJECTS),
                                           preset="fast", scheduler=cluster.scheduler_address,
                                           progress=False)

        thread = threading.Thread(target=work)
        thread.start()
        deadline = time.time() + 120
        killed = False
        while time.time() < deadline and not killed:
            busy = {w for w, tasks in client.processing().items() if tasks}
            for nanny in cluster.workers.values():
                if nanny.worker_address in busy and nanny.process is not None:
                    # SIGKILL the worker mid-task; its nanny restarts it and the scheduler
                    # reschedules the lost task.
                    os.kill(nanny.process.pid, signal.SIGKILL)
                    killed = True
                    break
            time.sleep(0.05)
        thread.join(timeout=600)
    assert killed
    summary = result["summary"]
    assert sorted(r["status"] for r in summary.results) == ["done"] * 3
