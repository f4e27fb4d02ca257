"""Touching objects split by the seeded watershed, and the Otsu floor, on drawn discs."""

from __future__ import annotations

import numpy as np

from medseg.evaluation.instances import instance_scores
from medseg.inference.instances import grey, otsu_instances, split_touching, typical_radius


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
