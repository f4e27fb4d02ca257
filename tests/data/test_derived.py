"""Derived masks: scaled copies brought to their image's size, foreground values picked, one cached file each."""

import os

import numpy as np
import pytest
from PIL import Image

from medseg.data import load_samples, synthetic
from medseg.data.derived import cache_root, derive_masks, derived_mask, foreground_values, scale_only
from medseg.data.loading import LoadImage2Dd
from medseg.errors import MedsegError


def _png(path, arr):
    Image.fromarray(np.asarray(arr, np.uint8)).save(path)
    return path


def test_scale_only_worked_by_hand():
    """A 612x408 mask for a 1100x734 photo, as (H, W): 734 * 612 / 1100 = 408.35, within a pixel of 408."""
    assert scale_only((408, 612), (734, 1100))
    assert scale_only((734, 1100), (408, 612))  # a larger copy is one too
    # 408x600: 734 * 600 / 1100 = 400.4 (7.6 from 408) and 1100 * 408 / 734 = 611.5 (11.5 from 600)
    assert not scale_only((408, 600), (734, 1100))
    assert not scale_only((734, 1100), (734, 1100))  # equal sizes are no copy to rescale
    assert not scale_only((612, 408), (734, 1100))  # the mask turned a quarter: other proportions


def _pair(folder, name, image_hw, mask):
    _png(folder / f"{name}.png", np.full((*image_hw, 3), 90))
    return {"image": str(folder / f"{name}.png"), "label": str(_png(folder / f"{name}_mask.png", mask))}


def test_derive_masks_rescales_with_nearest_neighbour_and_counts(tmp_path):
    small = np.zeros((20, 30), np.uint8)
    small[5:10, 6:18] = 255
    same = np.zeros((40, 60), np.uint8)
    same[1, 1] = 255
    samples = [_pair(tmp_path, "a", (40, 60), small), _pair(tmp_path, "b", (40, 60), same)]
    out, warnings = derive_masks(samples, {}, "test data")
    derived = np.asarray(Image.open(out[0]["label"]))
    assert derived.shape == (40, 60) and set(np.unique(derived)) == {0, 255}
    assert (derived == np.repeat(np.repeat(small, 2, axis=0), 2, axis=1)).all()  # each pixel became a 2x2 block
    assert out[0]["label_source"] == samples[0]["label"]
    assert out[0]["label"].startswith(str(cache_root())) and not out[0]["label"].startswith(str(tmp_path))
    assert out[1] == samples[1]  # a mask at its image's size is read as it is
    assert warnings == [
        (
            f"{tmp_path}: 1 of 2 masks are a smaller copy of their image, in the same proportions (e.g. a_mask.png is "
            "20x30 for a 40x60 image): brought to the image's size with nearest neighbour"
        )
    ]


def test_foreground_values_pick_the_mask_values_that_are_foreground(tmp_path):
    mask = np.array([[0, 1, 2], [2, 255, 0]], np.uint8)
    samples = [_pair(tmp_path, "m", (2, 3), mask)]
    out, warnings = derive_masks(samples, {"foreground_values": [2, 255]}, "test data")
    assert np.asarray(Image.open(out[0]["label"])).tolist() == [[0, 0, 255], [255, 255, 0]]
    assert warnings == [] and out[0]["label_source"] == samples[0]["label"]
    assert foreground_values({"foreground_values": 255}, "w") == [255] and foreground_values({}, "w") is None
    with pytest.raises(MedsegError, match=r"where: data.options.foreground_values .* got \[0.5\]; fix:"):
        foreground_values({"foreground_values": [0.5]}, "where")


def test_cache_returns_one_file_until_the_mask_is_edited(tmp_path):
    source = _png(tmp_path / "m.png", np.zeros((4, 6)))
    built = []

    def build():
        built.append(1)
        return np.asarray(Image.open(source))

    first = derived_mask("masks", [source], {"size": [8, 12]}, build)
    assert derived_mask("masks", [source], {"size": [8, 12]}, build) == first and len(built) == 1
    assert derived_mask("masks", [source], {"size": [4, 6]}, build) != first  # another rule, another file
    _png(source, np.full((4, 6), 255))
    os.utime(source, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns + 10**9))
    edited = derived_mask("masks", [source], {"size": [8, 12]}, build)
    assert edited != first and first.is_file() and len(built) == 3
    assert np.asarray(Image.open(edited)).max() == 255


def test_loader_refuses_a_mask_of_other_proportions_naming_it(tmp_path):
    root = synthetic.make_humanseg(tmp_path / "h", n=9, odd_mask=True)
    samples = load_samples("humanseg", root).samples
    odd = next(s for s in samples if s["case_id"] == "17")
    assert "label_source" not in odd  # not a scaled copy: left as it is, for the loader to refuse
    with pytest.raises(MedsegError, match=r"Ground_Truth/17\.png: mask is 44x49 but its image 17\.jpg is 73x110; fix:"):
        LoadImage2Dd(3, 2)({"image": odd["image"], "label": odd["label"]})
