"""The nuclei recipe: Data Science Bowl 2018 per-nucleus masks and generic instance label maps, on synthetic twins
and, when present, on the real stage-1 training images."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medseg.api import check_from_cli
from medseg.config import load_config
from medseg.data import load_samples, nuclei, synthetic
from medseg.data.check import check_dataset, format_report
from medseg.data.loading import LoadImage2Dd
from medseg.data.nuclei import Blob, instance_map, paint_instances
from medseg.errors import MedsegError

from ..conftest import shared


@pytest.fixture(scope="module")
def dsb_dir(tmp_path_factory):
    return synthetic.make_nuclei(tmp_path_factory.mktemp("nuclei"), n=6)


@pytest.fixture(scope="module")
def instance_dir(tmp_path_factory):
    return synthetic.make_instance_folder(tmp_path_factory.mktemp("instances"), n=4)


def _masks_of(sample) -> list[np.ndarray]:
    return [np.array(Image.open(p)) > 0 for p in sorted(Path(sample["label_source"]).iterdir())]


def _write_case(root: Path, case: str, shape, masks: dict[str, np.ndarray]) -> Path:
    """One Data Science Bowl case folder with an RGBA image of ``shape`` and the named 0/255 masks."""
    (root / case / "images").mkdir(parents=True)
    (root / case / "masks").mkdir()
    Image.fromarray(np.full((*shape, 4), 200, np.uint8)).save(root / case / "images" / f"{case}.png")
    for name, m in masks.items():
        Image.fromarray(m.astype(np.uint8) * 255).save(root / case / "masks" / f"{name}.png")
    return root / case


def _box(shape, rows, cols) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[rows[0] : rows[1], cols[0] : cols[1]] = True
    return m


# -- overlap rule -----------------------------------------------------------------------------------------------


def test_overlaps_go_to_the_smallest_nucleus_whichever_file_comes_first(tmp_path):
    shape = (12, 14)
    big = _box(shape, (1, 9), (1, 11))  # 80 pixels, file "b": between the two small ones in name order
    small_first = _box(shape, (0, 3), (0, 3))  # "a": 9 pixels, 4 of them inside the big one
    small_last = _box(shape, (7, 11), (9, 13))  # "c": 16 pixels, 4 inside the big one
    _write_case(tmp_path / "stage1_train", "case", shape, {"a": small_first, "b": big, "c": small_last})
    [sample] = load_samples("nuclei", tmp_path).samples
    got = instance_map(sample)
    assert got.dtype == np.uint16 and sample["meta"]["objects"] == 3
    assert (got[small_first] == 1).all()  # a "first file wins" rule would fail here...
    assert (got[small_last] == 3).all()  # ... and a "last file wins" rule here
    assert (got[big & ~small_first & ~small_last] == 2).all()
    assert (got[~(big | small_first | small_last)] == 0).all()


def test_equal_sizes_go_to_the_later_object_and_swallowed_values_close_up():
    a = Blob(0, 0, np.ones((2, 2), bool))
    b = Blob(1, 1, np.ones((2, 2), bool))
    assert paint_instances([a, b], (3, 3)).tolist() == [[1, 1, 0], [1, 2, 2], [0, 2, 2]]
    inner = Blob(0, 0, np.ones((2, 2), bool))  # wholly under two smaller objects...
    cover = [Blob(0, 0, np.ones((1, 2), bool)), Blob(1, 0, np.ones((1, 2), bool))]
    assert paint_instances([inner, *cover], (2, 2)).tolist() == [[1, 1], [2, 2]]  # ...leaves no value, no gap


# -- the Data Science Bowl twin -----------------------------------------------------------------------------------


def test_twin_counts_one_object_per_mask_file_and_reads_stage1_train_from_either_folder(dsb_dir):
    above = load_samples("nuclei", dsb_dir)
    inside = load_samples("nuclei", dsb_dir / "stage1_train")
    ids = sorted(p.name for p in (dsb_dir / "stage1_train").iterdir())
    assert [s["case_id"] for s in above.samples] == [s["case_id"] for s in inside.samples] == ids
    assert not {p.name for p in (dsb_dir / "stage1_test").iterdir()} & {s["case_id"] for s in above.samples}
    for s in above.samples:
        n_files = len(list(Path(s["label_source"]).iterdir()))
        got = instance_map(s)
        assert s["meta"]["objects"] == n_files == got.max() == len(np.unique(got)) - 1
        assert s["instances"] == s["label"]
    total = sum(s["meta"]["objects"] for s in above.samples)
    assert above.info["summary"].startswith(f"6 images, {total} nuclei (3 to 7 per image")


def test_binary_label_is_the_union_of_the_nuclei(dsb_dir):
    sample = load_samples("nuclei", dsb_dir).samples[0]  # the twin's first image has two overlapping nuclei
    masks = _masks_of(sample)
    assert (np.sum(masks, axis=0) > 1).any()
    out = LoadImage2Dd(3, 2)({"image": sample["image"], "label": sample["label"]})
    assert np.array_equal(out["label"][0].astype(bool), np.any(masks, axis=0))


def test_alpha_is_dropped_for_a_three_channel_model(dsb_dir):
    sample = load_samples("nuclei", dsb_dir).samples[1]
    rgba = np.array(Image.open(sample["image"]))
    assert rgba.shape[2] == 4 and (rgba[..., 3] != rgba[..., 0]).any()
    out = LoadImage2Dd(3, 2)({"image": sample["image"], "label": sample["label"]})
    assert np.array_equal(out["image"], np.moveaxis(rgba[..., :3], -1, 0).astype(np.float32))


def test_datasets_check_of_the_twin_reads_clean_with_the_shipped_config(dsb_dir):
    report = check_from_cli("nuclei", data_dir=dsb_dir)
    assert report["n_cases"] == 6 and report["problems"] == []
    assert report["channels_found"] == {"4": 6} and report["classes"] == ["background", "nucleus"]
    assert not [w for w in report["warnings"] if "channel" in w]
    assert report["empty_masks"] == 0
    total = sum(len(list(c.glob("masks/*.png"))) for c in (dsb_dir / "stage1_train").iterdir())
    assert [line for line in format_report(report).splitlines() if line.startswith("  contents:")] == [
        f"  contents: {load_samples('nuclei', dsb_dir).info['summary']}"
    ]
    assert report["contents"].startswith(f"6 images, {total} nuclei (")


def test_derived_maps_are_cached_and_made_again_when_a_mask_changes(tmp_path, dsb_dir):
    root = shutil.copytree(dsb_dir / "stage1_train", tmp_path / "stage1_train")
    first = load_samples("nuclei", root).samples[2]
    assert load_samples("nuclei", root).samples[2]["label"] == first["label"]
    mask = min(Path(first["label_source"]).iterdir())
    Image.fromarray(np.zeros_like(np.array(Image.open(mask)))).save(mask)  # a nucleus erased
    again = load_samples("nuclei", root).samples[2]
    assert again["label"] != first["label"] and again["meta"]["objects"] == first["meta"]["objects"] - 1


# -- problems ---------------------------------------------------------------------------------------------------


def test_a_case_without_masks_is_a_problem_line_naming_it(tmp_path, dsb_dir):
    root = shutil.copytree(dsb_dir / "stage1_train", tmp_path / "stage1_train")
    test_case = next((dsb_dir / "stage1_test").iterdir())
    shutil.copytree(test_case, root / test_case.name)
    res = load_samples("nuclei", tmp_path, collect_problems=True)
    assert len(res.samples) == 6
    assert res.problems == [
        (
            f"{root / test_case.name}: case has no masks/ (a test-set case has no ground truth); fix: add "
            "masks/<one file per nucleus>.png, or move the folder out and run medseg infer on its image"
        )
    ]
    with pytest.raises(MedsegError, match="case has no masks/"):
        load_samples("nuclei", tmp_path)


def test_a_mask_of_another_size_is_a_problem_line_naming_the_file(tmp_path):
    case = _write_case(tmp_path, "c1", (10, 12), {"m1": _box((10, 12), (1, 4), (1, 4))})
    _write_case(tmp_path, "c2", (10, 12), {"m1": _box((10, 12), (2, 5), (2, 5))})
    wrong = case / "masks" / "m2.png"
    Image.fromarray(np.zeros((12, 10), np.uint8)).save(wrong)
    res = load_samples("nuclei", tmp_path, collect_problems=True)
    assert [s["case_id"] for s in res.samples] == ["c2"]
    assert res.problems == [
        f"{wrong}: mask is 12x10 but its image c1.png is 10x12; fix: re-export the mask at the image's size or "
        + "remove it"
    ]


def test_more_objects_than_a_16_bit_map_holds_are_refused(tmp_path, monkeypatch):
    case = _write_case(tmp_path, "c1", (8, 8), {f"m{k}": _box((8, 8), (k, k + 1), (0, 2)) for k in range(3)})
    monkeypatch.setattr(nuclei, "MAX_OBJECTS", 2)
    res = load_samples("nuclei", tmp_path, collect_problems=True)
    assert res.samples == []
    assert res.problems == [
        (
            f"{case / 'masks'}: 3 mask files: more objects than a 16-bit label map holds (2); fix: split the image "
            "into tiles with fewer objects each"
        )
    ]


def test_an_unknown_layout_option_is_refused(dsb_dir):
    with pytest.raises(MedsegError, match="data.options.layout is 'kaggle'; fix: use one of auto, dsb, instances"):
        load_samples("nuclei", dsb_dir, {"layout": "kaggle"})


# -- generic instance label maps ----------------------------------------------------------------------------------


def test_instance_maps_png_and_tiff_are_renumbered_one_to_n(instance_dir):
    res = load_samples("nuclei", instance_dir)
    assert [s["case_id"] for s in res.samples] == ["cells_0", "cells_1", "cells_2", "cells_3"]
    assert {Path(s["label_source"]).suffix for s in res.samples} == {".png", ".tif"}
    for s in res.samples:
        source = np.array(Image.open(s["label_source"])).astype(np.int64)
        got = instance_map(s).astype(np.int64)
        n = len(np.unique(source)) - 1
        assert s["meta"]["objects"] == n and sorted(np.unique(got)) == list(range(n + 1))
        pairs = set(zip(source.ravel().tolist(), got.ravel().tolist()))  # one new value per old one, 0 kept
        assert len(pairs) == n + 1 and (0, 0) in pairs
    assert res.info["summary"].startswith("4 images, ")


def test_an_8_bit_instance_map_trains_as_the_union_of_all_its_objects(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()  # labels/ is read like instances/
    Image.fromarray(np.full((6, 9, 3), 90, np.uint8)).save(tmp_path / "images" / "a.png")
    label = np.zeros((6, 9), np.uint8)
    label[0:2, 0:2], label[3:5, 3:5], label[0:2, 6:9] = 10, 20, 200  # read as is, 10 and 20 would be background
    Image.fromarray(label).save(tmp_path / "labels" / "a.png")
    [s] = load_samples("nuclei", tmp_path).samples
    out = LoadImage2Dd(3, 2)({"image": s["image"], "label": s["label"]})
    assert s["meta"]["objects"] == 3
    assert np.array_equal(out["label"][0], (label > 0).astype(np.uint8))


def test_instance_layout_problems_are_named(tmp_path, instance_dir):
    root = shutil.copytree(instance_dir, tmp_path / "set")
    (root / "instances" / "cells_1.tif").unlink()
    Image.fromarray(np.zeros((5, 5), np.uint16)).save(root / "instances" / "cells_2.png")
    res = load_samples("nuclei", root, collect_problems=True)
    assert [s["case_id"] for s in res.samples] == ["cells_0", "cells_3"]
    assert res.problems == [
        f"{root / 'images' / 'cells_1.png'}: image has no instance map; fix: add instances/cells_1.png",
        (
            f"{root / 'instances' / 'cells_2.png'}: mask is 5x5 but its image cells_2.png is 40x48; fix: re-export "
            "the mask at the image's size or remove it"
        ),
    ]


def test_the_layout_option_picks_one_layout(dsb_dir, instance_dir):
    with pytest.raises(MedsegError, match="no nuclei cases found"):
        load_samples("nuclei", instance_dir, {"layout": "dsb"})
    with pytest.raises(MedsegError, match="no nuclei cases found"):
        load_samples("nuclei", dsb_dir, {"layout": "instances"})


# -- real data ------------------------------------------------------------------------------------------------------


@pytest.mark.realdata
@pytest.mark.slow
def test_real_stage1_train_has_400_images_and_17720_nuclei():
    root = shared("nuclei")
    res = load_samples("nuclei", root)
    assert len(res.samples) == 400 and res.problems == []
    assert sum(s["meta"]["objects"] for s in res.samples) == 17720
    assert res.info["summary"].startswith("400 images, 17,720 nuclei (1 to 375 per image, median 28);")
    report = check_dataset(load_config("nuclei"), root)
    assert report["n_cases"] == 400 and report["problems"] == [] and report["empty_masks"] == 0
    assert report["channels_found"] == {"4": 400} and not [w for w in report["warnings"] if "channel" in w]
