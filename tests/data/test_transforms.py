import gzip

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from medseg.config import load_config
from medseg.data import IMAGE, LABEL
from medseg.data.transforms import (
    Guarded,
    LoadImage2Dd,
    LoadVolumed,
    adapt_channels_2d,
    binarise_mask_2d,
    deterministic_transforms,
    labels_to_classes,
    random_transforms,
    train_transforms,
    val_transforms,
)
from medseg.errors import MedsegError


def test_binarise_handles_real_mask_styles():
    m = np.zeros((4, 4), np.uint8)
    m[1:3, 1:3] = 255
    expected = (m > 0).astype(np.uint8)
    assert (binarise_mask_2d(m) == expected).all()  # 0/255
    assert (binarise_mask_2d(m // 255) == expected).all()  # 0/1
    assert (binarise_mask_2d(np.stack([m] * 3, -1)) == expected).all()  # 3-channel
    assert (binarise_mask_2d(m.astype(bool)) == expected).all()  # 1-bit
    jpeg_like = m.copy()
    jpeg_like[0, 0] = 9  # compression noise near black stays background
    jpeg_like[1, 1] = 240
    assert (binarise_mask_2d(jpeg_like) == expected).all()
    assert (binarise_mask_2d((m // 255) * 100) == expected).all()  # 0/100: foreground below half of 255
    assert (binarise_mask_2d((m // 255) * 2) == expected).all()  # palette index 2
    two_kinds = expected.copy()
    two_kinds[1, 1] = 2  # palette indices 1 and 2 (two lesion types) in a binary task: both are lesion
    assert (binarise_mask_2d(two_kinds) == expected).all()
    assert (binarise_mask_2d(expected.astype(np.uint16) * 65535) == expected).all()  # 16-bit
    soft = expected.astype(np.float32) * 0.9
    soft[0, 0] = 0.2  # anti-aliased float mask
    assert (binarise_mask_2d(soft) == expected).all()
    assert not binarise_mask_2d(np.zeros((4, 4), np.float32)).any()


def test_labels_to_classes_rejects_unknown_values(tmp_path):
    with pytest.raises(MedsegError, match=r"label values \[7\] are outside"):
        labels_to_classes(np.array([0, 1, 7], np.float32), 5, tmp_path / "seg.nii.gz")
    assert labels_to_classes(np.array([0.0, 4.0, 2.0]), 5, "x").tolist() == [0, 4, 2]
    assert labels_to_classes(np.array([0.0, 4.0]), 2, "x").tolist() == [0, 1]
    with pytest.raises(MedsegError, match="one foreground class"):
        labels_to_classes(np.array([0.0, 1.0, 2.0]), 2, "x")


def test_adapt_channels():
    grey = np.full((3, 5), 7, np.uint8)
    assert adapt_channels_2d(grey, 3, "g").shape == (3, 3, 5)
    rgba = np.zeros((3, 5, 4), np.uint8)
    assert adapt_channels_2d(rgba, 3, "a").shape == (3, 3, 5)
    with pytest.raises(MedsegError, match="has 2 channels but the model expects 3"):
        adapt_channels_2d(np.zeros((3, 5, 2)), 3, "two.tif")


def _pair(tmp_path, img_size=(20, 30), mask_size=(20, 30)):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (*img_size, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros(mask_size, np.uint8)).save(tmp_path / "a_mask.png")
    return {IMAGE: str(tmp_path / "a.png"), LABEL: str(tmp_path / "a_mask.png")}


def test_size_mismatch_names_mask(tmp_path):
    with pytest.raises(MedsegError, match=r"a_mask.png: mask is 10x30 but its image a.png is 20x30"):
        LoadImage2Dd(3, 2)(_pair(tmp_path, mask_size=(10, 30)))


def _exif_photo(path, rgb, orientation):
    """Save ``rgb`` as stored pixels with an EXIF orientation tag, as a phone camera does."""
    exif = Image.Exif()
    exif[274] = orientation
    Image.fromarray(rgb).save(path, quality=98, exif=exif)


def test_exif_orientation_is_applied_to_images_and_masks_fit_either_way(tmp_path):
    """A photo whose camera set EXIF orientation 6 (shown turned 90 degrees clockwise) is read upright, as viewers
    and annotation tools show it: a mask drawn on the upright picture fits it; a mask made from the stored pixel
    array (a different size) makes the loader fall back to the stored pixels; orientation 3 (180 degrees, same
    size) is read upright too."""
    from medseg.io import exif_orientation, read_image_2d

    rgb = np.full((30, 40, 3), 40, np.uint8)
    rgb[2:10, 3:12] = 250  # a bright patch near the stored top-left corner
    mask_stored = (rgb[..., 0] > 128).astype(np.uint8) * 255
    _exif_photo(tmp_path / "p6.jpg", rgb, 6)
    _exif_photo(tmp_path / "p3.jpg", rgb, 3)
    assert exif_orientation(tmp_path / "p6.jpg") == 6 and exif_orientation(tmp_path / "p3.jpg") == 3
    up6 = read_image_2d(tmp_path / "p6.jpg")
    assert up6.shape == (40, 30, 3) and up6[2:10, -10:-3].mean() > 200  # the patch is now top-right
    assert read_image_2d(tmp_path / "p6.jpg", upright=False).shape == (30, 40, 3)
    up3 = read_image_2d(tmp_path / "p3.jpg")
    assert up3.shape == (30, 40, 3) and up3[-10:-2, -12:-3].mean() > 200  # turned half a circle

    load = LoadImage2Dd(3, 2)
    Image.fromarray(np.rot90(mask_stored, k=-1).copy()).save(tmp_path / "m6_upright.png")
    out = load({IMAGE: str(tmp_path / "p6.jpg"), LABEL: str(tmp_path / "m6_upright.png")})
    assert out[IMAGE].shape == (3, 40, 30) and out["image_meta"]["exif"] == "upright"
    assert out[IMAGE][:, out[LABEL][0] > 0].mean() > out[IMAGE][:, out[LABEL][0] == 0].mean() + 1.5  # z-scored
    Image.fromarray(mask_stored).save(tmp_path / "m6_stored.png")
    out = load({IMAGE: str(tmp_path / "p6.jpg"), LABEL: str(tmp_path / "m6_stored.png")})
    assert out[IMAGE].shape == (3, 30, 40) and out["image_meta"]["exif"] == "as_stored"
    assert out[IMAGE][:, out[LABEL][0] > 0].mean() > out[IMAGE][:, out[LABEL][0] == 0].mean() + 1.5
    Image.fromarray(np.rot90(mask_stored, k=2).copy()).save(tmp_path / "m3_upright.png")
    out = load({IMAGE: str(tmp_path / "p3.jpg"), LABEL: str(tmp_path / "m3_upright.png")})
    assert out[IMAGE][:, out[LABEL][0] > 0].mean() > out[IMAGE][:, out[LABEL][0] == 0].mean() + 1.5
    plain = tmp_path / "plain.jpg"
    Image.fromarray(rgb).save(plain, quality=98)
    assert exif_orientation(plain) == 1 and load({IMAGE: str(plain)})["image_meta"]["exif"] == "none"


def test_stored_channels_pick_modalities_by_name(lgg_dir):
    """LGG slices hold pre-contrast, FLAIR and post-contrast in one TIFF: data.channels=[flair] takes the FLAIR
    channel itself (not a grey mix of the three), for per-slice and per-volume normalisation alike; a name that is
    not stored stops with the fix."""
    from medseg.data import load_samples
    from medseg.io import read_image_2d

    sample = next(s for s in load_samples("lgg", lgg_dir).samples if s["slice_index"] == 5)
    raw = read_image_2d(sample[IMAGE]).astype(np.float32)
    for intensity in ("none", "volume"):
        cfg = load_config(
            "lgg",
            [
                "data.channels=[flair, pre_contrast]",
                f"preprocess.intensity={intensity}",
                "preprocess.spatial_size=null",
                "preprocess.volume_percentiles=[0,100]",
            ],
        )
        assert cfg.channel_select == [1, 0] and cfg.in_channels == 2
        out = deterministic_transforms(cfg, with_label=False, for_training=False)({IMAGE: sample[IMAGE]})[IMAGE]
        out = np.asarray(out)
        assert out.shape == (2,) + raw.shape[:2]
        if intensity == "none":
            np.testing.assert_array_equal(out[0], raw[..., 1])
            np.testing.assert_array_equal(out[1], raw[..., 0])
        else:  # z-scored with the patient's statistics, channel by channel: the order of the picked channels holds
            assert np.corrcoef(out[0].ravel(), raw[..., 1].ravel())[0, 1] > 0.999
            assert np.corrcoef(out[1].ravel(), raw[..., 0].ravel())[0, 1] > 0.999
    with pytest.raises(MedsegError, match=r"data.channels \['t2'\] are not among data.stored_channels"):
        deterministic_transforms(load_config("lgg", ["data.channels=[t2]"]))


def test_truncated_image(tmp_path):
    d = _pair(tmp_path)
    Image.fromarray(np.zeros((200, 200, 3), np.uint8) + 50).save(tmp_path / "b.jpg", quality=90)
    data = (tmp_path / "b.jpg").read_bytes()
    (tmp_path / "b.jpg").write_bytes(data[: len(data) // 2])
    d[IMAGE] = str(tmp_path / "b.jpg")
    with pytest.raises(MedsegError, match="b.jpg: cannot be read as an image"):
        LoadImage2Dd(3, 2)(d)


def test_2d_pipeline_shapes(tmp_path):
    cfg = load_config("ph2", ["preprocess.spatial_size=[32,48]", "preprocess.intensity=zscore"])
    out = deterministic_transforms(cfg)(_pair(tmp_path))
    assert tuple(out[IMAGE].shape) == (3, 32, 48) and tuple(out[LABEL].shape) == (1, 32, 48)
    assert abs(float(out[IMAGE].mean())) < 0.05 and 0.8 < float(out[IMAGE].std()) < 1.2  # z-scored
    aug = train_transforms(cfg)(_pair(tmp_path))
    assert set(aug) == {IMAGE, LABEL}


def test_2d_patches_are_drawn_at_the_images_own_resolution(tmp_path):
    """With train.patch_size and no spatial_size a 2D image keeps its pixels: patches of the asked size are cut from
    it, centred on foreground at pos_fraction 1; an image smaller than a patch is padded up to one."""
    rgb = np.random.default_rng(0).integers(0, 255, (60, 90, 3), dtype=np.uint8)
    mask = np.zeros((60, 90), np.uint8)
    mask[40:44, 70:75] = 255  # one small lesion far from the centre
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(mask).save(tmp_path / "a_mask.png")
    pair = {IMAGE: str(tmp_path / "a.png"), LABEL: str(tmp_path / "a_mask.png")}
    sets = ["preprocess.spatial_size=null", "preprocess.intensity=zscore", "train.patch_size=[16,24]"]
    sets += ["train.samples_per_volume=3", "train.pos_fraction=1.0", "augment.affine_prob=0", "augment.flip_prob=0"]
    sets += ["augment.rot90_prob=0", "augment.intensity_prob=0", "augment.contrast_prob=0"]
    patches = train_transforms(load_config("ph2", sets))(pair)
    assert len(patches) == 3
    for p in patches:
        assert tuple(p[IMAGE].shape) == (3, 16, 24) and tuple(p[LABEL].shape) == (1, 16, 24)
        assert p[LABEL][0, 8, 12] == 1  # the patch's centre is on the lesion
    cfg = load_config("ph2", [*sets, "train.patch_size=[64,96]"])
    padded = train_transforms(cfg)(pair)[0]
    assert tuple(padded[IMAGE].shape) == (3, 64, 96)
    whole = deterministic_transforms(cfg, for_training=False)(pair)
    assert tuple(whole[IMAGE].shape) == (3, 60, 90)  # inference sees the image as it is, windows slide over it
    scored = val_transforms(cfg)(pair)  # validation too: unpadded, and no foreground index kept in its cache
    assert tuple(scored[LABEL].shape) == (1, 60, 90) and not any(k.endswith(("_fg", "_bg")) for k in scored)


def _nifti(path, arr, affine=None):
    nib.save(nib.Nifti1Image(arr, np.eye(4) if affine is None else affine), str(path))
    return str(path)


def test_nan_voxels_rejected(tmp_path):
    img = np.ones((8, 8, 4), np.float32)
    img[2, 2, 2] = np.nan
    d = {
        IMAGE: [_nifti(tmp_path / "f.nii.gz", img)],
        LABEL: _nifti(tmp_path / "l.nii.gz", np.zeros((8, 8, 4), np.uint8)),
    }
    with pytest.raises(MedsegError, match="f.nii.gz: contains 1 NaN/infinite voxels"):
        LoadVolumed(1, 2)(d)


def test_volume_modality_count_and_grid_checks(tmp_path):
    a = _nifti(tmp_path / "a.nii.gz", np.ones((8, 8, 4), np.float32))
    b = _nifti(tmp_path / "b.nii.gz", np.ones((8, 8, 5), np.float32))
    lab = _nifti(tmp_path / "l.nii.gz", np.zeros((8, 8, 4), np.uint8))
    with pytest.raises(MedsegError, match="has 1 modalities but 2 are expected"):
        LoadVolumed(2, 2)({IMAGE: [a], LABEL: lab})
    with pytest.raises(MedsegError, match="b.nii.gz: grid"):
        LoadVolumed(2, 2)({IMAGE: [a, b], LABEL: lab})
    out = LoadVolumed(2, 2)({IMAGE: [a, a], LABEL: lab})
    assert tuple(out[IMAGE].shape) == (2, 8, 8, 4)


def test_truncated_nifti(tmp_path):
    p = tmp_path / "t.nii.gz"
    _nifti(p, np.random.default_rng(0).random((30, 30, 30)).astype(np.float32))
    raw = gzip.decompress(p.read_bytes())
    p.write_bytes(gzip.compress(raw[: len(raw) // 3]))
    with pytest.raises(MedsegError, match="t.nii.gz: cannot be read as NIfTI"):
        LoadVolumed(1, 2)({IMAGE: str(p)})


def test_fixed_intensity_keeps_absolute_brightness(tmp_path):
    from PIL import Image

    cfg = load_config("ph2", ["preprocess.spatial_size=[8,8]", "preprocess.intensity=fixed"])
    means = []
    for v in (51, 204):  # a dark and a bright image: z-score would map both to mean 0
        Image.fromarray(np.full((16, 16, 3), v, np.uint8)).save(tmp_path / f"i{v}.png")
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / f"m{v}.png")
        out = deterministic_transforms(cfg)({IMAGE: str(tmp_path / f"i{v}.png"), LABEL: str(tmp_path / f"m{v}.png")})
        means.append(float(out[IMAGE].mean()))
    assert means == pytest.approx([51 / 255 * 2 - 1, 204 / 255 * 2 - 1], abs=1e-4)
    with pytest.raises(MedsegError, match="intensity_range"):
        deterministic_transforms(load_config("ph2", ["preprocess.intensity=fixed", "preprocess.intensity_range=[5,5]"]))
    # a 16-bit image under an 8-bit range is refused by name instead of being scaled to values in the hundreds
    Image.fromarray(np.full((16, 16), 40000, np.uint16)).save(tmp_path / "deep.png")
    with pytest.raises(MedsegError, match=r"deep\.png.*40000.*intensity_range \[0, 255\]"):
        Guarded(deterministic_transforms(cfg))({IMAGE: str(tmp_path / "deep.png"), LABEL: str(tmp_path / "m51.png")})


def test_joint_zscore_keeps_the_colour_balance(tmp_path):
    from PIL import Image

    # left half (100, 50, 50), right half (200, 50, 150): per-channel z-score erases the green channel (constant) and
    # puts red and blue on the same scale; one mean/std over all channels keeps how the channels differ
    img = np.zeros((8, 8, 3), np.uint8)
    img[:, :4] = (100, 50, 50)
    img[:, 4:] = (200, 50, 150)
    Image.fromarray(img).save(tmp_path / "i.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "m.png")
    d = {IMAGE: str(tmp_path / "i.png"), LABEL: str(tmp_path / "m.png")}
    zscore = ["preprocess.spatial_size=[8,8]", "preprocess.intensity=zscore"]
    per = deterministic_transforms(load_config("ph2", zscore))(dict(d))[IMAGE]
    joint = deterministic_transforms(load_config("ph2", [*zscore, "preprocess.channel_wise=false"]))(dict(d))[IMAGE]
    assert torch.allclose(per[1], torch.zeros(8, 8)) and torch.allclose(per[0], per[2])
    values = np.array([100, 50, 50, 200, 50, 150], float)  # each value covers half of one channel
    mean, std = values.mean(), values.std()
    for c, (left, right) in enumerate([(100, 200), (50, 50), (50, 150)]):
        assert float(joint[c, 0, 0]) == pytest.approx((left - mean) / std, abs=1e-4)
        assert float(joint[c, 0, 7]) == pytest.approx((right - mean) / std, abs=1e-4)


@pytest.mark.parametrize("dims", [2, 3])
def test_blur_and_low_resolution_change_the_image_only(dims):
    name = "ph2" if dims == 2 else "brats"
    shape = (2,) + (32,) * dims
    rng = np.random.default_rng(0)
    image = torch.as_tensor(rng.normal(size=shape).astype(np.float32))
    label = torch.as_tensor((rng.random((1,) + shape[1:]) > 0.7).astype(np.float32))
    for override, check in (("augment.blur_prob=1", "smoother"), ("augment.lowres_prob=1", "blocky")):
        cfg = load_config(
            name,
            [
                "augment.flip_prob=0",
                "augment.affine_prob=0",
                "augment.intensity_prob=0",
                "augment.contrast_prob=0",
                "augment.noise_prob=0",
                "augment.rot90_prob=0",
                "train.patch_size=null",
                override,
            ],
        )
        t = random_transforms(cfg)
        assert len(t.transforms) == 1, [type(x).__name__ for x in t.transforms]
        t.set_random_state(1)
        out = t({IMAGE: image.clone(), LABEL: label.clone()})
        assert torch.equal(torch.as_tensor(out[LABEL]), label)  # the mask is never blurred or resampled
        new = torch.as_tensor(out[IMAGE])
        assert new.shape == image.shape and not torch.allclose(new, image)
        # white noise loses high-frequency energy under both: neighbouring voxels become alike
        diff = lambda x: float((x[:, 1:] - x[:, :-1]).abs().mean())
        assert diff(new) < 0.8 * diff(image), check
