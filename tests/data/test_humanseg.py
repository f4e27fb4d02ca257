"""The humanseg recipe on its synthetic twin and, when present, on the real Human-Segmentation-Dataset."""

import shutil

import numpy as np
import pytest
from PIL import Image

from medseg.config import load_config
from medseg.data import load_samples, synthetic
from medseg.data.check import check_dataset, format_report
from medseg.data.loading import LoadImage2Dd
from medseg.errors import MedsegError

from ..conftest import run_cli, shared

PERSON = ["data.labels=[background,person]", "data.channels=[red,green,blue]"]


@pytest.fixture(scope="module")
def humanseg_dir(tmp_path_factory):
    return synthetic.make_humanseg(tmp_path_factory.mktemp("humanseg"), n=9)


def _channel_warnings(report):
    return [w for w in report["warnings"] if "greyscale" in w or "the config expects" in w]


def _config(*extra):
    return load_config("humanseg", [*PERSON, *extra])  # the shipped YAML when there is one, else the defaults


def test_twin_pairs_by_number_and_brings_scaled_masks_to_size(humanseg_dir):
    res = load_samples("humanseg", humanseg_dir)
    assert [s["case_id"] for s in res.samples] == ["1", "3", "5", "7", "9", "11", "13", "15", "17"]
    assert res.warnings == [
        (
            f"{humanseg_dir / 'Ground_Truth'}: 6 of 9 masks are a smaller copy of their image, in the same proportions "
            "(e.g. 3.png is 66x44 for a 110x73 image): brought to the image's size with nearest neighbour"
        )
    ]
    scaled = [s for s in res.samples if "label_source" in s]
    assert len(scaled) == 6 and all(s["label_source"].startswith(str(humanseg_dir / "Ground_Truth")) for s in scaled)
    loader = LoadImage2Dd(3, 2)
    for s in scaled:
        out = loader({"image": s["image"], "label": s["label"]})
        assert out["label"].shape[1:] == out["image"].shape[1:] and set(np.unique(out["label"])) == {0, 1}


def test_grey_photos_are_repeated_into_the_configured_channels(humanseg_dir):
    grey = humanseg_dir / "Training_Images" / "1.jpg"
    assert Image.open(grey).mode == "L"
    img = LoadImage2Dd(3, 2)({"image": str(grey)})["image"]
    assert img.shape == (3, 73, 110) and (img[0] == img[1]).all() and (img[0] == img[2]).all() and img.std() > 0


@pytest.mark.parametrize("layout", ["lower-case folders", "jpeg and png images", "parent folder"])
def test_real_world_variations(tmp_path, layout):
    if layout == "lower-case folders":
        root = data = synthetic.make_humanseg(tmp_path, n=4, dirs=("training_images", "ground_truth"))
    elif layout == "jpeg and png images":
        root = data = synthetic.make_humanseg(tmp_path, n=4, image_exts=(".jpeg", ".png"))
    else:
        data = synthetic.make_humanseg(tmp_path / "Human-Segmentation-Dataset-master", n=4)
        root = tmp_path
    res = load_samples("humanseg", root)
    assert [s["case_id"] for s in res.samples] == ["1", "3", "5", "7"]
    assert all(s["image"].startswith(str(data)) for s in res.samples)
    if layout == "jpeg and png images":
        assert [s["image"].rsplit(".", 1)[1] for s in res.samples] == ["jpeg", "png", "jpeg", "png"]


def test_wrong_layout_and_a_missing_mask_name_the_fix(tmp_path):
    (tmp_path / "photos").mkdir()
    with pytest.raises(MedsegError, match=r"no humanseg cases found; fix: expected Training_Images/<n>\.jpg"):
        load_samples("humanseg", tmp_path)
    root = synthetic.make_humanseg(tmp_path / "h", n=3)
    (root / "Ground_Truth" / "5.png").unlink()
    with pytest.raises(MedsegError, match=r"Training_Images/5\.jpg: image has no mask; fix: add Ground_Truth/5\.png"):
        load_samples("humanseg", root)


def test_check_reports_masks_and_grey_photos_in_plain_words(humanseg_dir):
    report = check_dataset(_config(), humanseg_dir)
    assert report["n_cases"] == 9 and report["problems"] == [] and report["channels_found"] == {"1": 2, "3": 7}
    assert report["label_values_found"] == [0, 255]
    assert report["mask_summary"] == "values 0 and 255 on disk, foreground = 255"
    grey = _channel_warnings(report)
    assert grey == [
        (
            "2 images are greyscale (1 channel) among 9: expanded to the configured 3 channels (red, green, blue) "
            "by repeating their grey"
        )
    ]
    text = format_report(report)
    assert "  classes: background, person\n  masks: values 0 and 255 on disk, foreground = 255\n" in text
    assert "set data.channels to one name" not in text and text.endswith("  OK")


def test_check_advises_one_channel_only_when_most_photos_are_grey(tmp_path):
    root = synthetic.make_humanseg(tmp_path, n=4, grey=3)
    grey = _channel_warnings(check_dataset(_config(), root))
    assert grey == [
        (
            "3 images have 1 channel but the config expects 3 (red, green, blue): they will be repeated into 3 "
            "identical channels; set data.channels to one name, e.g. [image]"
        )
    ]


def test_check_lists_the_mask_of_other_proportions(tmp_path):
    root = synthetic.make_humanseg(tmp_path, n=9, odd_mask=True)
    report = check_dataset(_config(), root)
    assert report["n_cases"] == 9 and report["problems"] == [
        (
            f"{root / 'Ground_Truth' / '17.png'}: mask is 44x49 but its image 17.jpg is 73x110; "
            "fix: re-export the mask at the image's size or remove the case"
        )
    ]


def test_cli_check_with_a_config_naming_the_recipe(humanseg_dir, tmp_path):
    cfg = tmp_path / "people.yaml"
    cfg.write_text("data:\n  recipe: humanseg\n  labels: [background, person]\n  channels: [red, green, blue]\n")
    r = run_cli("datasets", "check", cfg, "--data-dir", humanseg_dir)
    assert r.exit_code == 0, r.output
    assert "humanseg data in" in r.output and "masks: values 0 and 255 on disk, foreground = 255" in r.output
    assert _config().data.recipe == "humanseg"  # `medseg train humanseg` resolves the name


def test_a_copy_beside_another_data_set_is_not_guessed(tmp_path):
    synthetic.make_humanseg(tmp_path / "a", n=2)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    with pytest.raises(MedsegError, match=r"2 sub-folders hold them \(a, b\): pass one of them as --data-dir"):
        load_samples("humanseg", tmp_path)


# -- the real data set ------------------------------------------------------------------------------------------


@pytest.mark.realdata
def test_real_humanseg_rescales_two_thirds_of_the_masks():
    root = shared("humanseg")
    res = load_samples("humanseg", root)
    assert len(res.samples) == 230 and res.problems == []
    assert sum("label_source" in s for s in res.samples) == 155
    assert next(w for w in res.warnings if "smaller copy" in w).startswith(
        f"{root / 'Ground_Truth'}: 155 of 230 masks are a smaller copy of their image"
    )


@pytest.mark.realdata
def test_real_humanseg_check_has_no_problems():
    report = check_dataset(_config(), shared("humanseg"))
    assert report["n_cases"] == 230 and report["problems"] == [] and report["empty_masks"] == 0
    assert report["mask_summary"] == "values 0 and 255 on disk, foreground = 255"
    assert report["channels_found"] == {"3": 229, "1": 1}
    assert any(w.startswith("1 image is greyscale (1 channel) among 230: expanded") for w in report["warnings"])
