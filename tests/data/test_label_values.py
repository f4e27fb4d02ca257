"""``data.label_values``: several values on disk merged into one class (BraTS' whole tumour), others dropped into
background, checked when the config loads, and applied wherever a ground truth is read (training, evaluation,
overlays, the case report)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.config import load_config
from medseg.data.loading import labels_to_classes
from medseg.errors import MedsegError

WHOLE_TUMOUR = ["data.labels=[background,tumour]", "data.label_values={tumour: [1, 2, 3, 4]}"]


def test_values_merge_into_their_class_and_background_takes_what_it_lists():
    label = np.array([0, 1, 2, 3, 4, 2], np.float32)
    whole = load_config("brats", WHOLE_TUMOUR).value_classes
    assert labels_to_classes(label, 2, "seg.nii.gz", whole).tolist() == [0, 1, 1, 1, 1, 1]
    core = load_config(
        "brats", ["data.labels=[background,core]", "data.label_values={background: [2], core: [1, 3, 4]}"]
    ).value_classes
    assert labels_to_classes(label, 2, "seg.nii.gz", core).tolist() == [0, 1, 0, 1, 1, 0]
    regions = load_config(
        "brats",
        ["data.labels=[background,oedema,core]", "data.label_values={oedema: [2], core: [1, 3, 4]}"],
    ).value_classes
    assert labels_to_classes(label, 3, "seg.nii.gz", regions).tolist() == [0, 2, 1, 2, 2, 1]


def test_a_value_the_mapping_does_not_list_is_refused_with_the_file_and_the_fix(tmp_path):
    values = load_config("brats", WHOLE_TUMOUR).value_classes
    with pytest.raises(MedsegError, match=r"seg.nii.gz.*label values \[7\] are not in data.label_values.*background"):
        labels_to_classes(np.array([0, 1, 7], np.float32), 2, tmp_path / "seg.nii.gz", values)
    with pytest.raises(MedsegError, match="non-integer"):
        labels_to_classes(np.array([0, 1.5], np.float32), 2, tmp_path / "seg.nii.gz", values)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.label_values={tumor: [1, 2]}"], r"names \['tumor'\], which are not in data.labels"),
        (["data.labels=[background,a,b]", "data.label_values={a: [1, 2], b: [2]}"], "value 2 to both a and b"),
        (["data.labels=[background,a,b]", "data.label_values={a: [1]}"], r"no values for \['b'\]"),
        (["data.labels=[background,a]", "data.label_values={a: [1.5]}"], "whole label values"),
        (["data.labels=[background,a]", "data.label_values=[1, 2]"], "label_values.* is not a valid dict"),
    ],
)
def test_a_bad_mapping_stops_when_the_config_loads(overrides, message):
    with pytest.raises(MedsegError, match=message):
        load_config("brats", overrides)


def test_without_a_mapping_several_values_in_a_binary_task_are_still_refused(brats_dir):
    from medseg.data.check import check_dataset

    plain = check_dataset(load_config("brats", ["data.labels=[background,tumour]"]), brats_dir)
    assert plain["problems"] and all("one foreground class" in p for p in plain["problems"])
    merged = check_dataset(load_config("brats", WHOLE_TUMOUR), brats_dir)
    assert merged["problems"] == [] and merged["n_cases"] == 4


@pytest.fixture(scope="module")
def whole_tumour_run(tmp_path_factory, brats_dir):
    """Otsu fitted on the synthetic BraTS cases' whole tumour: seconds, and a checkpoint like a network's."""
    from medseg.engine.train import train

    cfg = load_config(
        "brats",
        [*WHOLE_TUMOUR, "model.name=otsu", "data.channels=[flair]", "preprocess.spacing=[2,2,2]"],
    )
    run = tmp_path_factory.mktemp("wt") / "run"
    train(cfg, brats_dir, run, progress=False)
    return run / "best.pt"


def test_training_evaluation_and_overlays_read_the_whole_tumour(whole_tumour_run, brats_dir, tmp_path):
    from medseg.checkpoint import load_checkpoint
    from medseg.evaluation.evaluate import evaluate_model
    from medseg.reporting.figures import EvaluationFigures

    ckpt = load_checkpoint(whole_tumour_run)
    assert ckpt["config"]["data"]["label_values"] == {"tumour": [1, 2, 3, 4]}
    ev = evaluate_model(whole_tumour_run, "brats", brats_dir, tmp_path / "ev", figures=EvaluationFigures())
    assert set(ev.metrics["class"]) == {"tumour"}
    dice = ev.metrics["dice"].astype(float)
    assert (dice > 0.5).all(), dice.tolist()  # the bright FLAIR blob is the whole tumour: Otsu finds it
    info = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert info["label_values"] == {"tumour": [1, 2, 3, 4]}
    assert all(Path(c["overlay"]).is_file() for c in info["cases"].values())


def test_folder_evaluation_and_the_case_report_merge_the_ground_truth(whole_tumour_run, brats_dir, tmp_path):
    from medseg.api import evaluate_from_cli
    from medseg.inference.infer import infer
    from medseg.reporting.case_report import case_report

    case = brats_dir / "validation" / "brats_2013_pat0004_1"
    flair = case / "Flair_subtrMeanDivStd.nii.gz"
    res = infer([str(flair)], model=[str(whole_tumour_run)], out=tmp_path / "pred", progress=False).outputs[0]
    findings = json.loads(Path(res["findings_json"]).read_text())
    assert findings["label_values"] == {"tumour": [1, 2, 3, 4]}
    truth = case / "OTMultiClass.nii.gz"
    gt_dir = tmp_path / "gt"
    gt_dir.mkdir()
    (gt_dir / f"{findings['case_id']}.nii.gz").write_bytes(truth.read_bytes())
    assert len(np.unique(nib.load(truth).get_fdata())) > 2  # several tumour values on disk
    ev = evaluate_from_cli(
        pred=tmp_path / "pred",
        gt=gt_dir,
        out=tmp_path / "ev",
        labels=["background", "tumour"],
        label_values={"tumour": [1, 2, 3, 4]},
        progress=False,
        log=lambda *_: None,
    )
    assert float(ev.metrics["dice"].iloc[0]) > 0.5
    with pytest.raises(MedsegError, match="label values"):  # the raw map without the mapping: refused
        evaluate_from_cli(pred=tmp_path / "pred", gt=gt_dir, out=tmp_path / "ev2", labels=["background", "tumour"])
    pdf = case_report(res["findings_json"], out=tmp_path / "case.pdf", gt=truth)
    assert pdf.is_file()


def test_the_command_line_parses_and_places_label_values(tmp_path):
    from medseg.api import evaluate_from_cli, parse_label_values

    assert parse_label_values(["tumour=1,2,3,4", "background=0, 5"]) == {"tumour": [1, 2, 3, 4], "background": [0, 5]}
    assert parse_label_values([]) is None
    for bad in ("tumour=", "tumour=a,b", "=1"):
        with pytest.raises(MedsegError, match="--label-values"):
            parse_label_values([bad])
    with pytest.raises(MedsegError, match="--labels"):
        evaluate_from_cli(pred=tmp_path, gt=tmp_path, out=tmp_path / "o", label_values={"tumour": [1]})
    with pytest.raises(MedsegError, match="drop --label-values"):
        evaluate_from_cli(model=[tmp_path / "m.pt"], data="brats", out=tmp_path / "o", label_values={"t": [1]})


def test_a_slice_whose_only_value_is_dropped_is_not_drawn_as_foreground(tmp_path):
    from PIL import Image

    from medseg.engine.loading import _has_foreground

    for name, value in (("oedema_only.png", 2), ("core.png", 1), ("empty.png", 0)):
        mask = np.zeros((8, 8), np.uint8)
        mask[2:5, 2:5] = value
        Image.fromarray(mask).save(tmp_path / name)
    samples = [{"label": str(tmp_path / n)} for n in ("oedema_only.png", "core.png", "empty.png")]
    core = load_config("ph2", ["data.labels=[background,core]", "data.label_values={background: [2], core: [1]}"])
    assert _has_foreground(None, samples, 2, core.value_classes) == [False, True, False]
    assert _has_foreground(None, samples) == [True, True, False]  # without the mapping any value is foreground
