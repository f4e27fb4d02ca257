"""Shift, shear and padding of the random affine (the Keras U-Net's augmentation): what RandAffined receives, the
rules on the keys, and that configs without them augment exactly as before."""

from __future__ import annotations

import math

import pytest
import torch
from monai.transforms import RandAffined

from medseg.config import load_config
from medseg.data.keys import IMAGE, LABEL
from medseg.data.transforms import random_affine, random_transforms
from medseg.errors import MedsegError

BASE = ["augment.affine_prob=1.0", "preprocess.spatial_size=[64, 80]"]


def _affines(cfg) -> list[RandAffined]:
    return [t for t in random_transforms(cfg).transforms if isinstance(t, RandAffined)]


def test_shift_is_a_fraction_of_the_image_size_and_shear_one_factor_per_axis_pair():
    cfg = load_config("demo", [*BASE, "augment.shift_range=0.05", "augment.shear_range=0.1"])
    (affine,) = _affines(cfg)
    grid = affine.rand_affine.rand_affine_grid
    assert grid.translate_range == pytest.approx((3.2, 4.0))  # 5% of 64 rows and of 80 columns
    assert grid.shear_range == pytest.approx((0.1, 0.1))


def test_3d_shift_follows_the_patch_size():
    cfg = load_config("brats", ["augment.affine_prob=1.0", "augment.shift_range=0.1", "augment.shear_range=0.02"])
    grid = _affines(cfg)[0].rand_affine.rand_affine_grid
    assert grid.translate_range == pytest.approx(tuple(0.1 * s for s in cfg.train.patch_size))
    assert grid.shear_range == pytest.approx((0.02,) * 6)


def test_border_padding_is_passed_for_image_and_label():
    cfg = load_config("demo", [*BASE, "augment.affine_padding=border"])
    assert _affines(cfg)[0].padding_mode == ("border", "border")


def test_defaults_pass_no_shift_or_shear_and_pad_with_zeros():
    cfg = load_config("demo", BASE)
    (affine,) = _affines(cfg)
    grid = affine.rand_affine.rand_affine_grid
    assert grid.translate_range == (None,) and grid.shear_range == (None,)  # nothing drawn for them
    assert affine.padding_mode == ("zeros", "zeros")


def _old_affine(cfg) -> RandAffined:
    """The random affine as it was built before shift, shear and padding were keys."""
    rot = math.radians(cfg.augment.rotate_deg)
    return RandAffined(
        keys=[IMAGE, LABEL],
        prob=cfg.augment.affine_prob,
        rotate_range=[rot],
        scale_range=[cfg.augment.scale_range] * 2,
        mode=("bilinear", "nearest"),
        padding_mode="zeros",
    )


def _draw(transform, seed: int) -> dict:
    gen = torch.Generator().manual_seed(1)
    sample = {IMAGE: torch.rand(3, 64, 80, generator=gen), LABEL: (torch.rand(1, 64, 80, generator=gen) > 0.5).float()}
    transform.set_random_state(seed)
    return transform(sample)


@pytest.mark.parametrize("seed", [0, 3])
def test_defaults_augment_exactly_as_before(seed):
    cfg = load_config("demo", BASE)
    new, old = _draw(random_affine(cfg, [IMAGE, LABEL]), seed), _draw(_old_affine(cfg), seed)
    assert torch.equal(new[IMAGE], old[IMAGE]) and torch.equal(new[LABEL], old[LABEL])
    shifted = _draw(random_affine(load_config("demo", [*BASE, "augment.shift_range=0.05"]), [IMAGE, LABEL]), seed)
    assert not torch.equal(shifted[IMAGE], old[IMAGE])  # a shift does change the draw: the comparison can fail


@pytest.mark.parametrize(
    "override, message",
    [
        ("augment.shift_range=1.0", "augment.shift_range 1.0 must be a fraction"),
        ("augment.shear_range=-0.1", "augment.shear_range -0.1 must be a fraction"),
        ("augment.affine_padding=nearest", "augment.affine_padding 'nearest' is unknown.*fix: use zeros, border"),
    ],
)
def test_out_of_range_keys_are_one_line(override, message):
    with pytest.raises(MedsegError, match=message):
        load_config("demo", [*BASE, override])


def test_a_shift_needs_the_image_size():
    with pytest.raises(MedsegError, match="preprocess.spatial_size is not set.*fix: set preprocess.spatial_size"):
        load_config("folder", ["augment.shift_range=0.05", "preprocess.spatial_size=null"])


def test_flip_axes_pick_the_axes_of_training_flips_and_test_time_flips():
    from monai.transforms import RandFlipd

    from medseg.inference.predictor import flip_dims

    every = load_config("demo", [])
    upright = load_config("demo", ["augment.flip_axes=[1]"])
    axes = [
        [t.flipper.spatial_axis for t in random_transforms(c).transforms if isinstance(t, RandFlipd)]
        for c in (every, upright)
    ]
    assert axes == [[0, 1], [1]]
    assert flip_dims([1], tta=True) == [(), (3,)]  # no flip, then the batch's width axis
    assert flip_dims([0, 1], tta=False) == [()]


def test_flip_axes_beyond_the_image_are_refused():
    from medseg.data.transforms import flip_axes

    with pytest.raises(MedsegError, match=r"augment.flip_axes \[2\] names an axis a 2D image lacks"):
        flip_axes(load_config("demo", ["augment.flip_axes=[2]"]))
    with pytest.raises(MedsegError, match="distinct spatial axes"):
        load_config("demo", ["augment.flip_axes=[1, 1]"])
