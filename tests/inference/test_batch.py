"""Batch inference over several processes: each case written exactly once, outputs equal to one process's, a failed
case costing no other, and a re-run skipping what is already written."""

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.data import synthetic
from medseg.engine.train import train
from medseg.errors import MedsegError
from medseg.inference.batch import balanced_shares
from medseg.inference.cases import Case
from medseg.inference.infer import infer
from tests.conftest import blob_3d_config, schema_valid

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model3d(tmp_path_factory):
    """A real 3D U-Net after a few epochs on synthetic blobs: the tests compare outputs, not their quality."""
    root = tmp_path_factory.mktemp("batch3d")
    data = synthetic.make_nifti_folder(root / "data", n=4, shape=(24, 24, 16), seed=2)
    train(blob_3d_config("train.epochs=2", "train.val_every=2"), data, root / "run", progress=False)
    return root / "run" / "best.pt"


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    """Five volumes of different sizes, and one file that is no volume at all."""
    folder = tmp_path_factory.mktemp("scans")
    for i, shape in enumerate([(30, 26, 18), (20, 20, 12), (34, 30, 20), (22, 26, 14), (26, 22, 16)]):
        rng = np.random.default_rng(i)
        img = synthetic.mri_from_mask(rng, synthetic.blob_3d(rng, shape, (0.2, 0.3)))
        affine = np.diag([1.2, 1.0, 2.0, 1.0])
        affine[:3, 3] = [-10.0 * i, 4.0, 7.5]
        nib.save(nib.Nifti1Image(img.astype(np.float32), affine), folder / f"case{i}.nii.gz")
    (folder / "broken.nii.gz").write_bytes(b"not a volume")
    return folder


def _batch(scans, model, out, nproc, **kw):
    """Run a batch that has one bad input; return its summary from the error, after checking the error names it."""
    with pytest.raises(MedsegError, match=r"1 of 6 inputs failed.*broken.nii.gz") as err:
        infer([str(scans)], model=[str(model)], out=out, progress=False, nproc=nproc, **kw)
    return err.value.summary


def _written(out: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {p.name: (np.asarray(nib.load(p).dataobj), nib.load(p).affine) for p in sorted(out.glob("*_seg.nii.gz"))}


@pytest.mark.slow
def test_two_cpu_processes_write_each_case_once_as_one_process_does(model3d, scans, tmp_path):
    one = _batch(scans, model3d, tmp_path / "one", nproc=1)
    two = _batch(scans, model3d, tmp_path / "two", nproc=2)
    assert sorted(o["case_id"] for o in two.outputs) == [f"case{i}" for i in range(5)]

    record = schema_valid("infer_summary", tmp_path / "two" / "infer_summary.json")
    assert record["processes"] == 2 and record["backend"] == "gloo"
    assert record["counts"] == {"written": 5, "skipped": 0, "failed": 1, "not_run": 0}
    ranks = [c["rank"] for c in record["cases"]]
    assert sorted(set(ranks)) == [0, 1]  # both processes had work
    assert len({c["case_id"] for c in record["cases"]}) == 5  # and no case was written twice

    a, b = _written(tmp_path / "one"), _written(tmp_path / "two")
    assert list(a) == list(b) and len(a) == 5
    for name in a:
        np.testing.assert_array_equal(a[name][0], b[name][0], err_msg=name)
        np.testing.assert_array_equal(a[name][1], b[name][1], err_msg=name)
    for name in ("case2_findings.json", "case4_findings.json"):  # the findings agree too, timings and paths aside
        fa, fb = (schema_valid("findings", tmp_path / d / name) for d in ("one", "two"))
        assert fa["classes"] == fb["classes"] and fa["geometry"] == fb["geometry"]
    assert len(one.outputs) == 5

    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "two").iterdir() if p.name.startswith("case")}
    good = [str(scans / f"case{i}.nii.gz") for i in range(5)]
    again = infer(good, model=[str(model3d)], out=tmp_path / "two", progress=False, nproc=2)  # a re-run skips them
    assert again.outputs == [] and len(again.skipped) == 5 and again.failures == []
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "two").iterdir() if p.name in stamps} == stamps
    record = schema_valid("infer_summary", tmp_path / "two" / "infer_summary.json")
    assert record["counts"] == {"written": 0, "skipped": 5, "failed": 0, "not_run": 0}
    assert record["processes"] == 1 and record["backend"] == "none"  # nothing left to segment: no process started


def test_a_case_that_crashes_costs_no_other_case(model3d, scans, tmp_path, monkeypatch):
    from medseg.inference import batch

    real = batch.segment_case

    def crash_on_case1(predictor, case, out_dir, force=False):
        if case.case_id == "case1":
            raise RuntimeError("CUDA out of\nmemory")  # not a MedsegError: a fault the batch did not foresee
        return real(predictor, case, out_dir, force=force)

    monkeypatch.setattr(batch, "segment_case", crash_on_case1)
    inputs = [str(scans / f"case{i}.nii.gz") for i in range(3)]
    with pytest.raises(
        MedsegError, match=r"1 of 3 inputs failed \(first: .*case1.nii.gz: failed \(RuntimeError: CUDA out of memory\)"
    ):
        infer(inputs, model=[str(model3d)], out=tmp_path / "o", progress=False)
    assert sorted(p.name for p in (tmp_path / "o").glob("*_seg.nii.gz")) == ["case0_seg.nii.gz", "case2_seg.nii.gz"]


def test_shares_balance_bytes_then_counts(tmp_path):
    sizes = [50, 10, 40, 30, 20, 10]
    cases = []
    for i, size in enumerate(sizes):
        (tmp_path / f"c{i}.nii").write_bytes(b"x" * size)
        cases.append(Case(f"c{i}", [str(tmp_path / f"c{i}.nii")], ""))
    # largest first, each to the lighter process: c0 (50) -> 0, c2 (40) -> 1, c3 (30) -> 1 as 40 < 50, c4 (20) -> 0
    # as 50 < 70, c1 (10) -> 0 (70 = 70 bytes and 2 = 2 cases: the lower rank), c5 (10) -> 1 as 70 < 80
    assert balanced_shares(cases, 2) == [[0, 1, 4], [2, 3, 5]]
    assert balanced_shares(cases, 1) == [[0, 1, 2, 3, 4, 5]]
    assert balanced_shares(cases[:1], 3) == [[0], [], []]  # a process with nothing to do is fine


def test_nproc_is_refused_when_it_cannot_work(model3d, scans, tmp_path, monkeypatch):
    with pytest.raises(MedsegError, match=r"--nproc 0: needs at least 1 process"):
        infer([str(scans)], model=[str(model3d)], out=tmp_path / "o", nproc=0)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(MedsegError, match=r"--nproc starts its own processes; under torchrun"):
        infer([str(scans)], model=[str(model3d)], out=tmp_path / "o", nproc=2)


@pytest.mark.slow
def test_torchrun_launches_the_same_command(model3d, scans, tmp_path):
    """``torchrun --nproc-per-node 2 -m medseg infer``: the processes find each other from torchrun's environment."""
    inputs = [str(scans / f"case{i}.nii.gz") for i in (0, 2, 4)]
    out = tmp_path / "tr"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "medseg", "infer", *inputs, "--model", str(model3d), "--out", str(out), "--quiet"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    record = json.loads((out / "infer_summary.json").read_text())
    assert record["processes"] == 2 and record["counts"]["written"] == 3
    assert sorted({c["rank"] for c in record["cases"]}) == [0, 1]
    assert "[rank 1] case" in done.stdout  # every process names the cases it wrote
    assert done.stdout.count("batch summary") == 1  # and rank 0 alone speaks for the batch
