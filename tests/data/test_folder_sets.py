"""Public 2D sets the folder recipe reads with no option (Kaggle's full-body MADS, Kvasir-SEG), and the words
`datasets check` finds for the masks it read."""

from collections import Counter

import numpy as np
import pytest

from medseg.config import load_config
from medseg.data import load_samples, synthetic
from medseg.data.check import _mask_summary, check_dataset
from medseg.data.loading import LoadImage2Dd
from medseg.errors import MedsegError

SETS = {
    "mads": (synthetic.make_mads, synthetic.MADS_DIR, ".png"),
    "kvasir": (synthetic.make_kvasir, "Kvasir-SEG", ".jpg"),
}


@pytest.mark.parametrize("name", sorted(SETS))
@pytest.mark.parametrize("level", ["dataset folder", "folder above"])
def test_folder_reads_the_set_with_no_option(tmp_path, name, level):
    make, folder, ext = SETS[name]
    make(tmp_path, n=6)
    data_dir = tmp_path / folder if level == "dataset folder" else tmp_path
    res = load_samples("folder", data_dir)
    assert len(res.samples) == 6 and res.problems == [] and res.warnings == []
    for s in res.samples:
        assert s["image"].startswith(str(tmp_path / folder / "images")) and s["image"].endswith(ext)
        assert s["label"] == s["image"].replace("/images/", "/masks/")  # same file names in masks/
    out = LoadImage2Dd(3, 2)({"image": res.samples[0]["image"], "label": res.samples[0]["label"]})
    assert set(np.unique(out["label"])) == {0, 1} and 0.02 < out["label"].mean() < 0.6


def test_kvasir_check_says_what_it_made_of_the_jpeg_masks(tmp_path):
    synthetic.make_kvasir(tmp_path, n=6)
    report = check_dataset(load_config("folder"), tmp_path)
    assert report["problems"] == [] and len(report["label_values_found"]) > 10  # JPEG noise around 0 and 255
    values = report["label_values_found"]
    assert report["mask_summary"] == (
        f"{len(values)} values {values[0]}..{values[-1]} on disk (lossy JPEG): foreground = above 127, as 0/1"
    )


def test_mads_check_reads_three_channel_masks_as_0_255(tmp_path):
    synthetic.make_mads(tmp_path, n=4)
    report = check_dataset(load_config("folder"), tmp_path)
    assert report["problems"] == [] and report["label_values_found"] == [0, 255]
    assert report["mask_summary"] == "values 0 and 255 on disk, foreground = 255"


def test_two_data_sets_in_the_folder_above_are_not_guessed(tmp_path):
    synthetic.make_mads(tmp_path, n=2)
    synthetic.make_kvasir(tmp_path, n=2)
    with pytest.raises(MedsegError, match=r"2 sub-folders hold them \(Kvasir-SEG, segmentation_full_body_mads"):
        load_samples("folder", tmp_path)


@pytest.mark.parametrize(
    "values, thresholds, lossy, classes, chosen, text",
    [
        ([0, 1, 255], {0.0: 3}, 0, ["bg", "fg"], None, "values 0, 1 and 255 on disk, foreground = any of 1, 255"),
        ([0], {0.0: 2}, 0, ["bg", "fg"], None, "value 0 on disk, foreground = none (every mask is empty)"),
        (
            list(range(0, 256, 5)),
            {127.5: 2, 0.0: 1},
            0,
            ["bg", "fg"],
            None,
            (
                "52 values 0..255 on disk (a range of values: anti-aliased or lossy): foreground = not 0 in 1 mask, "
                "above 127 in 2, as 0/1"
            ),
        ),
        (
            list(range(0, 256, 5)),
            {127.5: 2, 100.0: 1},
            3,
            ["bg", "fg"],
            None,
            (
                "52 values 0..255 on disk (lossy JPEG): foreground = above half each mask's maximum (above 127 for "
                "most), as 0/1"
            ),
        ),
        (
            [0, 255],
            {0.0: 2},
            0,
            ["bg", "fg"],
            [2, 255],
            "foreground = any of 2, 255 (data.options.foreground_values), as 0/1",
        ),
        (
            [0, 1, 2, 3, 4],
            {},
            0,
            ["a", "b", "c", "d", "e"],
            None,
            "5 values 0..4 on disk, read as classes 0..4 (a, b, c, d, e)",
        ),
        ([], {}, 0, ["bg", "fg"], None, "no mask could be read"),
        (
            [0, 3, 254, 255],
            {127.5: 1, 127.0: 1},
            2,
            ["bg", "fg"],
            None,
            ("values 0, 3, 254 and 255 on disk (lossy JPEG): foreground = above 127, as 0/1"),
        ),
    ],
)
def test_mask_summary_wording(values, thresholds, lossy, classes, chosen, text):
    assert _mask_summary(values, Counter(thresholds), lossy, classes, chosen) == text
