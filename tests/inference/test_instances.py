"""Touching objects split by the seeded watershed, and the Otsu floor, on drawn discs."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.evaluation.instances import instance_scores
from medseg.objects import grey, otsu_instances, split_touching, typical_radius


def discs(centres, radius=8, shape=(40, 60)):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    truth = np.zeros(shape, np.uint16)
    for k, (cy, cx) in enumerate(centres, start=1):
        truth[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = k
    return truth


TOUCHING = [(20, 20), (20, 34)]  # 14 apart with radius 8: they overlap in a neck


def test_two_touching_discs_become_two_objects():
    truth = discs(TOUCHING)
    pred = split_touching(truth > 0)
    assert pred.max() == 2 and instance_scores(truth, pred)["rq"] == 1.0


def test_seeds_decide_the_objects():
    mask = discs(TOUCHING) > 0
    seeds = np.zeros(mask.shape, bool)
    seeds[19:22, 19:22] = True
    assert split_touching(mask, seeds).max() == 1  # one seed: the pair stays one object
    seeds[19:22, 33:36] = True
    pred = split_touching(mask, seeds)
    assert pred.max() == 2 and instance_scores(discs(TOUCHING), pred)["rq"] == 1.0


def test_thin_objects_without_a_distance_peak_survive_and_specks_go():
    mask = np.zeros((20, 30), bool)
    mask[5, 2:25] = True  # a line: a plateau of distance 1
    mask[15, 15] = True  # a speck
    assert split_touching(mask, min_distance=3).max() == 2
    assert split_touching(mask, min_distance=3, min_size=5).max() == 1
    assert split_touching(np.zeros((4, 4), bool)).max() == 0


def test_typical_radius_is_that_of_the_median_blob():
    blobs = np.zeros((30, 30), np.int32)
    blobs[0:10, 0:10], blobs[20:22, 20:22], blobs[12:18, 12:18] = 1, 2, 3  # areas 100, 4, 36
    assert typical_radius(blobs) == np.sqrt(36 / np.pi)
    assert typical_radius(blobs, min_size=10) == np.sqrt(68 / np.pi)  # median of 100 and 36


def test_otsu_finds_bright_nuclei_on_dark_and_dark_nuclei_on_bright():
    truth = discs([(12, 12), (28, 45)], radius=6)
    rng = np.random.default_rng(0)
    fluorescence = np.where(truth > 0, 200.0, 20.0) + rng.normal(0, 5, truth.shape)
    for image in (fluorescence, 255 - fluorescence):
        pred, confidence = otsu_instances(np.stack([image] * 3, axis=-1))
        assert instance_scores(truth, pred)["pq"] > 0.9
        assert sorted(confidence) == [1, 2] and all(c > 1 for c in confidence.values())
    empty, none = otsu_instances(np.full((10, 10), 7.0))
    assert empty.max() == 0 and none == {}


def test_grey_takes_channels_first_or_last():
    hwc = np.zeros((8, 10, 3))
    hwc[..., 0] = 3
    assert np.allclose(grey(hwc), 1) and np.allclose(grey(np.moveaxis(hwc, -1, 0)), 1)


def test_a_blob_no_seed_reaches_is_an_object_of_its_own():
    mask = discs([(20, 12), (20, 45)]) > 0  # two separate discs
    seeds = np.zeros(mask.shape, bool)
    seeds[19:22, 11:14] = True  # only the left one is seeded
    pred = split_touching(mask, seeds)
    assert pred.max() == 2 and pred[20, 45] != pred[20, 12] and pred[20, 45] > 0


def three_class_probabilities(truth: np.ndarray) -> np.ndarray:
    """Background / interior / boundary probabilities that a perfect network would give for ``truth``."""
    import torch

    from medseg.tasks import instance_classes

    classes = instance_classes(torch.as_tensor(truth, dtype=torch.float32)[None, None])[0, 0].numpy()
    return np.stack([(classes == k).astype(np.float32) for k in range(3)])


def test_probabilities_of_touching_nuclei_become_the_nuclei_again():
    from medseg.objects import instances_from_probabilities

    truth = discs(TOUCHING)
    pred = instances_from_probabilities(three_class_probabilities(truth))
    scores = instance_scores(truth, pred)
    assert pred.max() == 2 and scores["rq"] == 1.0 and scores["sq"] > 0.95  # the seam is given back to them
    assert pred.dtype == np.uint16


def test_probabilities_work_in_3d_and_need_three_channels():
    import pytest

    from medseg.objects import instances_from_probabilities

    truth = np.zeros((12, 12, 12), np.uint16)
    truth[2:6, 2:6, 2:6], truth[6:10, 2:6, 2:6] = 1, 2  # two cubes face to face
    assert instances_from_probabilities(three_class_probabilities(truth)).max() == 2
    with pytest.raises(ValueError, match="3 channels"):
        instances_from_probabilities(np.zeros((2, 4, 4)))


def test_small_objects_are_dropped_and_scores_are_the_mean_object_probability():
    from medseg.objects import drop_small_objects, object_scores

    labels = np.zeros((6, 6), np.uint16)
    labels[0, 0] = 1  # one pixel
    labels[2:4, 2:5] = 2  # six pixels
    kept = drop_small_objects(labels, 2)
    assert kept.max() == 1 and kept[2, 2] == 1 and kept[0, 0] == 0
    probs = np.zeros((3, 6, 6), np.float32)
    probs[0] = 0.4  # object probability 0.6 everywhere ...
    probs[0, 2, 2] = 0.0  # ... and 1.0 on one of the six pixels of object 2
    assert object_scores(labels, probs) == {1: 0.6, 2: round((5 * 0.6 + 1.0) / 6, 4)}


def test_holes_go_to_the_object_around_them():
    from medseg.objects import fill_object_holes

    labels = np.zeros((7, 7), np.uint16)
    labels[1:6, 1:6] = 3
    labels[3, 3] = 0  # a hole in object 3
    labels[0, 6] = 0
    filled = fill_object_holes(labels)
    assert filled[3, 3] == 3 and filled[0, 6] == 0 and filled[0, 0] == 0  # open background stays background


def test_more_objects_than_a_16_bit_png_numbers_are_refused_with_the_fix(tmp_path):
    from medseg.errors import MedsegError
    from medseg.inference.outputs import CaseOutputs, write_masks
    from medseg.io import geometry_2d

    labels = np.arange(300 * 300, dtype=np.int32).reshape(300, 300)  # 89,999 objects
    paths = CaseOutputs(tmp_path / "a_seg.png", tmp_path / "a_findings.json", None)
    with pytest.raises(MedsegError, match="a_seg.png: would hold 89999 objects.*fix: raise infer.min_size"):
        write_masks(paths, labels, np.zeros((3, 300, 300)), geometry_2d("a.png", (300, 300)), binary=False)
    assert not paths.seg.exists()
