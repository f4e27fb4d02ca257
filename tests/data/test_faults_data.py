"""The bad-input matrix of the data loaders: every case refused in one line naming the file and the fix, nothing a
user owns overwritten, no case left out without a word."""

from __future__ import annotations

import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from medseg.cli import app
from medseg.config import load_config
from medseg.data import load_samples, synthetic
from medseg.data.check import check_dataset
from medseg.errors import MedsegError, find_user_error
from medseg.io import read_image_2d, read_volume
from tests.conftest import shared

runner = CliRunner()


def one_line_error(result) -> str:
    """The CLI's whole output for a refused command: exit 2 and a single 'error: PATH: PROBLEM; fix: FIX' line."""
    out = result.output.strip()
    assert result.exit_code == 2, out
    assert "Traceback" not in out and "\n" not in out, out
    assert out.startswith("error: ") and "; fix: " in out, out
    return out


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------------------------
# 1. the demo recipe writes only into a folder it created and marked
# ---------------------------------------------------------------------------------------------------------------


def _user_folder(root: Path) -> Path:
    """A user's own images/ + masks/ data set, the layout the 2D demo writes."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    Image.fromarray(np.full((20, 24, 3), 7, np.uint8)).save(root / "images" / "case_000.png")
    Image.fromarray(np.zeros((20, 24), np.uint8)).save(root / "masks" / "case_000_mask.png")
    return root


def test_demo_check_refuses_a_folder_it_did_not_write(tmp_path):
    """q1-demo-check-user-folder: `medseg datasets check demo --data-dir MINE` leaves MINE as it was."""
    user = _user_folder(tmp_path / "mine")
    before = snapshot(user)
    out = one_line_error(runner.invoke(app, ["datasets", "check", "demo", "--data-dir", str(user)]))
    assert f"{user}: is not a medseg demo folder" in out and "fix: pass an empty or new --data-dir" in out
    assert snapshot(user) == before  # not one byte of the user's files changed, nothing added


@pytest.mark.parametrize(
    "content", ["own-data", "one-stray-file"], ids=["q1-demo-load-user-data", "q1-demo-load-stray-file"]
)
def test_demo_recipe_refuses_a_folder_it_did_not_write(tmp_path, content):
    """The recipe itself refuses, so train and `evaluate --data demo --data-dir X` (which load through it) do."""
    if content == "own-data":
        user = _user_folder(tmp_path / "mine")
    else:
        user = tmp_path / "mine"
        user.mkdir()
        (user / "notes.txt").write_text("mine")
    before = snapshot(user)
    with pytest.raises(MedsegError, match="is not a medseg demo folder"):
        load_samples("demo", user, {"n_cases": 3, "size": [16, 20]})
    assert snapshot(user) == before


def test_demo_generates_into_new_and_empty_folders_only(tmp_path):
    """q1-demo-new-and-empty: a new or empty folder is filled and marked, and read again as it is next time."""
    opts = {"n_cases": 3, "size": [16, 20]}
    (tmp_path / "empty").mkdir()
    for where in (tmp_path / "new", tmp_path / "empty"):
        assert len(load_samples("demo", where, opts).samples) == 3
        assert (where / ".medseg-demo").is_file()
        first = snapshot(where)
        assert len(load_samples("demo", where, opts).samples) == 3
        assert snapshot(where) == first


def test_demo_finishes_its_own_interrupted_generation(tmp_path):
    """q1-demo-interrupted: a folder the demo marked but did not finish writing is the demo's to complete."""
    where = tmp_path / "d"
    where.mkdir()
    (where / ".medseg-demo").write_text("generating synthetic medseg demo data, dims=2, n=3\n")
    (where / "images").mkdir()
    assert len(load_samples("demo", where, {"n_cases": 3, "size": [16, 20]}).samples) == 3


# ---------------------------------------------------------------------------------------------------------------
# 4. zero, negative and singular voxel geometry
# ---------------------------------------------------------------------------------------------------------------

VOXELS = np.zeros((4, 4, 4), np.float32)


def _raw_nifti(path: Path, pixdim=(1, 1, 1), srows=None) -> Path:
    """A .nii written byte for byte from a header, so that the header keeps what nibabel would 'repair'."""
    import nibabel as nib

    hdr = nib.Nifti1Image(VOXELS, np.eye(4)).header
    hdr["pixdim"][1:4] = pixdim
    if srows is not None:
        hdr["srow_x"], hdr["srow_y"], hdr["srow_z"] = srows
        hdr["qform_code"], hdr["sform_code"] = 0, 1
    else:
        hdr["sform_code"] = 0
    with open(path, "wb") as fh:
        fh.write(hdr.binaryblock + b"\0" * 4 + VOXELS.tobytes())
    return path


def _raw_nrrd(path: Path, directions: str) -> Path:
    head = (
        "NRRD0004\ntype: float\ndimension: 3\nspace: left-posterior-superior\nsizes: 4 4 4\n"
        f"space directions: {directions}\nkinds: domain domain domain\nendian: little\nencoding: raw\n"
        "space origin: (0,0,0)\n\n"
    )
    path.write_bytes(head.encode() + VOXELS.tobytes())
    return path


def _raw_mha(path: Path, spacing: str) -> Path:
    head = (
        f"ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\nElementSpacing = {spacing}\nElementType = MET_FLOAT\n"
        "ElementDataFile = LOCAL\n"
    )
    path.write_bytes(head.encode() + VOXELS.tobytes())
    return path


BAD_GEOMETRY = {
    "q4-nifti-pixdim-zero": (lambda p: _raw_nifti(p / "v.nii", pixdim=(1, 1, 0)), r"pixdim\[3\] = 0"),
    "q4-nifti-pixdim-negative": (lambda p: _raw_nifti(p / "v.nii", pixdim=(1, -2, 1)), r"pixdim\[2\] = -2"),
    "q4-nifti-sform-singular": (
        lambda p: _raw_nifti(p / "v.nii", srows=([1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0])),
        r"affine is singular \(its sform",
    ),
    "q4-nrrd-space-directions-zero": (
        lambda p: _raw_nrrd(p / "v.nrrd", "(1,0,0) (0,1,0) (0,0,0)"),
        r"space directions \(axis 3\) = 0",
    ),
    "q4-nrrd-space-directions-singular": (
        lambda p: _raw_nrrd(p / "v.nrrd", "(1,0,0) (0,1,0) (1,0,0)"),
        r"affine is singular \(its space directions",
    ),
    "q4-mha-spacing-zero": (lambda p: _raw_mha(p / "v.mha", "1 0 1"), r"ElementSpacing\[2\] = 0"),
    "q4-mha-spacing-negative": (lambda p: _raw_mha(p / "v.mha", "1 -1 1"), r"ElementSpacing\[2\] = -1"),
}


@pytest.mark.parametrize("case", list(BAD_GEOMETRY), ids=list(BAD_GEOMETRY))
def test_bad_voxel_geometry_is_refused_at_read_time(tmp_path, case):
    make, field = BAD_GEOMETRY[case]
    path = make(tmp_path)
    with pytest.raises(MedsegError, match=field) as err:
        read_volume(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: ") and "; fix: " in msg and "\n" not in msg


def test_zero_spacing_volume_is_a_problem_in_datasets_check(tmp_path, capfd):
    """q4-check-zero-spacing: `datasets check` lists the volume (and the header field) instead of passing it."""
    root = synthetic.make_nifti_folder(tmp_path / "n", n=2, shape=(12, 12, 8))
    victim = min((root / "images").iterdir())
    victim.unlink()
    _raw_nifti(victim.with_name(victim.name.replace(".nii.gz", ".nii")), pixdim=(1, 1, 0))
    label = min((root / "labels").iterdir())
    _raw_nifti(label.with_name(label.name.replace(".nii.gz", ".nii")), pixdim=(1, 1, 1))
    label.unlink()
    report = check_dataset(load_config("nifti"), root)
    assert report["n_cases"] == 2
    assert any("pixdim[3] = 0" in p and p.startswith(str(victim.with_suffix(""))) for p in report["problems"])
    assert "pixdim" not in capfd.readouterr().err  # nibabel's own 'setting 0 dims to 1' note is not printed


# ---------------------------------------------------------------------------------------------------------------
# 13. truncated TIFFs
# ---------------------------------------------------------------------------------------------------------------


def _tiff_directory_last(path: Path, arr: np.ndarray) -> Path:
    """An uncompressed TIFF with its image directory after the pixels, as the Kaggle LGG files are written: cut
    in half, it keeps a valid header whose directory offset points past the end."""
    h, w = arr.shape[:2]
    spp = 1 if arr.ndim == 2 else arr.shape[2]
    pixels = np.ascontiguousarray(arr, dtype=np.uint8).tobytes()
    ifd_at = 8 + len(pixels)
    bits_at = ifd_at + 2 + 9 * 12 + 4
    tags = [
        (256, 3, 1, w),
        (257, 3, 1, h),
        (258, 3, spp, 8 if spp == 1 else bits_at),
        (259, 3, 1, 1),
        (262, 3, 1, 1 if spp == 1 else 2),
        (273, 4, 1, 8),
        (277, 3, 1, spp),
        (278, 3, 1, h),
        (279, 4, 1, len(pixels)),
    ]
    ifd = struct.pack("<H", len(tags)) + b"".join(struct.pack("<HHII", *t) for t in tags) + struct.pack("<I", 0)
    path.write_bytes(
        b"II*\0" + struct.pack("<I", ifd_at) + pixels + ifd + (struct.pack("<3H", 8, 8, 8) if spp > 1 else b"")
    )
    return path


def _truncate(path: Path) -> Path:
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size // 2)
    return path


def test_directory_last_tiff_helper_writes_a_valid_file(tmp_path):
    arr = np.arange(48 * 40 * 3, dtype=np.uint8).reshape(48, 40, 3)
    assert np.array_equal(read_image_2d(_tiff_directory_last(tmp_path / "a.tif", arr)), arr)


@pytest.mark.parametrize("kind", ["image", "mask"], ids=["q13-truncated-tiff-image", "q13-truncated-tiff-mask"])
def test_truncated_tiff_is_refused_naming_the_file(tmp_path, kind):
    arr = np.full((48, 48, 3), 9, np.uint8) if kind == "image" else np.full((48, 48), 255, np.uint8)
    path = _truncate(_tiff_directory_last(tmp_path / f"s_1{'_mask' if kind == 'mask' else ''}.tif", arr))
    with pytest.raises(MedsegError, match=r"is truncated or unreadable .*; fix: re-export or remove it") as err:
        read_image_2d(path, kind=kind)
    assert str(err.value).startswith(f"{path}: ")


@pytest.mark.parametrize("kind", ["image", "mask"], ids=["q13-check-truncated-image", "q13-check-truncated-mask"])
def test_truncated_lgg_slice_is_a_problem_naming_the_right_file(tmp_path, kind):
    root = synthetic.make_lgg(tmp_path / "lgg", n_patients=2, n_slices=3, size=32)
    image = min(root.rglob("*_2.tif"))
    victim = image.with_name(image.stem + "_mask.tif") if kind == "mask" else image
    arr = read_image_2d(victim, kind=kind)
    _truncate(_tiff_directory_last(victim, arr))
    report = check_dataset(load_config("lgg"), root)
    assert report["problems"] == [
        (f"{victim}: is truncated or unreadable (no image directory in the TIFF); fix: re-export or remove it")
    ]


def test_truncated_real_lgg_tiffs(tmp_path):
    """q13-real-lgg: the real Kaggle files cut in half (their directory is at the end)."""
    src = sorted(shared("lgg/kaggle_3m").glob("TCGA_*/*_1*.tif"))[:2]
    for f in src:
        dst = _truncate(Path(shutil.copy(f, tmp_path / f.name)))
        with pytest.raises(MedsegError, match="is truncated or unreadable"):
            read_image_2d(dst, kind="mask" if "_mask" in f.name else "image")


# ---------------------------------------------------------------------------------------------------------------
# 14. decompression bombs: refused from the header, before decoding, with the limit and its override
# ---------------------------------------------------------------------------------------------------------------


def _png_claiming(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (its pixel data is a 1x1 image's)."""
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("size", [(30000, 30000), (12000, 12000)], ids=["q14-bomb-30000", "q14-bomb-12000"])
def test_huge_png_is_refused_from_its_header(tmp_path, size, monkeypatch):
    monkeypatch.delenv("MEDSEG_MAX_IMAGE_PIXELS", raising=False)
    path = _png_claiming(tmp_path / "bomb.png", *size)
    with pytest.raises(MedsegError) as err:
        read_image_2d(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: is {size[0]}x{size[1]} pixels") and "limit of 100 megapixels" in msg
    assert "MEDSEG_MAX_IMAGE_PIXELS=" in msg.split("; fix: ")[1]


def test_bomb_is_a_problem_in_datasets_check(tmp_path, monkeypatch):
    """q14-check-bomb: `datasets check` lists it as a problem (it raised DecompressionBombError)."""
    monkeypatch.delenv("MEDSEG_MAX_IMAGE_PIXELS", raising=False)
    root = synthetic.make_folder_2d(tmp_path / "f", n=2, size=(16, 20))
    bomb = _png_claiming(root / "images" / "case_000.png", 30000, 30000)
    report = check_dataset(load_config("folder"), root)
    assert len(report["problems"]) == 1 and report["problems"][0].startswith(f"{bomb}: is 30000x30000 pixels")


def test_pixel_limit_override(tmp_path, monkeypatch):
    """q14-limit-override: MEDSEG_MAX_IMAGE_PIXELS lowers (or raises) the limit; a bad value is named."""
    path = tmp_path / "wide.png"
    Image.fromarray(np.zeros((10, 300), np.uint8)).save(path)
    monkeypatch.setenv("MEDSEG_MAX_IMAGE_PIXELS", "2000")
    with pytest.raises(
        MedsegError,
        match=r"wide.png: is 300x10 pixels \(0.003 megapixels\), over medseg's limit of "
        r"0.002 megapixels",
    ):
        read_image_2d(path)
    monkeypatch.setenv("MEDSEG_MAX_IMAGE_PIXELS", "3000")
    assert read_image_2d(path).shape == (10, 300)
    monkeypatch.setenv("MEDSEG_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(MedsegError, match="MEDSEG_MAX_IMAGE_PIXELS: is 'lots'"):
        read_image_2d(path)
    assert os.environ["MEDSEG_MAX_IMAGE_PIXELS"] == "lots"


# ---------------------------------------------------------------------------------------------------------------
# 3. a case without its mask is counted and named, in every recipe
# ---------------------------------------------------------------------------------------------------------------


def _brats_without_label(root: Path) -> tuple[Path, str]:
    synthetic.make_brats(root, n_train=2, n_val=1, shape=(8, 8, 8))
    case = min(root.glob("train/*"))
    next(case.glob("OT*")).unlink()
    return case, "no label map (looked for otmulticlass*"


def _lgg_folder_without_masks(root: Path) -> tuple[Path, str]:
    synthetic.make_lgg(root, n_patients=2, n_slices=3, size=16)
    patient = min(p for p in root.rglob("TCGA_*") if p.is_dir())
    for m in patient.glob("*_mask.tif"):
        m.unlink()
    return patient, "3 slices without any mask"


def _nifti_flat_unpaired(root: Path) -> tuple[Path, str]:
    root.mkdir()
    for case in ("a", "b"):
        synthetic.write_itk(VOXELS, np.eye(4), root / f"{case}_image.nrrd")
    synthetic.write_itk(VOXELS.astype(np.uint8), np.eye(4), root / "a_label.nrrd")
    return root / "b_image.nrrd", "volume has no label map"


def _nnunet_image_without_label(root: Path) -> tuple[Path, str]:
    synthetic.make_nnunet(root, n=3)
    label = min((root / "labelsTr").iterdir())
    label.unlink()
    return root / "imagesTr" / label.name.replace(".nii.gz", "_0000.nii.gz"), "image has no label map"


def _ph2_without_lesion(root: Path) -> tuple[Path, str]:
    synthetic.make_ph2(root, n=3)
    case = min((root / "PH2 Dataset images").glob("IMD*"))
    next(case.glob("*_lesion/*")).unlink()
    return case / f"{case.name}_lesion", "lesion mask missing"


def _folder_without_mask(root: Path) -> tuple[Path, str]:
    synthetic.make_folder_2d(root, n=3, size=(16, 20))
    mask = min((root / "masks").iterdir())
    mask.unlink()
    return root / "images" / mask.name.replace("_mask", ""), "image has no mask"


UNPAIRED = {
    "q3-brats-case-without-label": ("brats", _brats_without_label),
    "q3-lgg-folder-without-masks": ("lgg", _lgg_folder_without_masks),
    "q3-nifti-flat-volume-without-label": ("nifti", _nifti_flat_unpaired),
    "q3-nnunet-image-without-label": ("nifti", _nnunet_image_without_label),
    "q3-ph2-case-without-lesion": ("ph2", _ph2_without_lesion),
    "q3-folder-image-without-mask": ("folder", _folder_without_mask),
}


@pytest.mark.parametrize("case", list(UNPAIRED), ids=list(UNPAIRED))
def test_case_without_mask_is_named_by_datasets_check(tmp_path, case):
    recipe, make = UNPAIRED[case]
    missing, what = make(tmp_path / "d")
    res = load_samples(recipe, tmp_path / "d", collect_problems=True)
    named = [line for line in res.problems + res.warnings if line.startswith(f"{missing}: ") and what in line]
    assert len(named) == 1 and "; fix: " in named[0] and "\n" not in named[0], res.problems + res.warnings
    assert str(missing) not in {str(s["image"]) for s in res.samples}


def test_brats_unlabelled_case_is_shown_by_the_cli(tmp_path):
    """q3-brats-cli: `medseg datasets check brats` prints the unlabelled case folder."""
    case, _ = _brats_without_label(tmp_path / "b")
    result = runner.invoke(
        app,
        ["datasets", "check", "brats", "--data-dir", str(tmp_path / "b"), "--set", "preprocess.spatial_size=[8,8,8]"],
    )
    assert f"warning: {case}: no label map" in result.output, result.output
    assert "cases: 2 " in result.output


# ---------------------------------------------------------------------------------------------------------------
# 12. symlinked case folders are followed, each real file once, links back up the tree end
# ---------------------------------------------------------------------------------------------------------------


def _linked_split(source: Path, folders: list[Path], split: Path) -> Path:
    split.mkdir()
    for f in folders:
        os.symlink(f, split / f.name)
    os.symlink(f, split / f"second_link_to_{f.name}")  # the same patient twice: read once
    os.symlink(split, split / "loop")  # a link back up the tree
    return split


def test_lgg_split_of_symlinked_patients(tmp_path):
    """q12-lgg-symlinked-patients"""
    src = synthetic.make_lgg(tmp_path / "src", n_patients=3, n_slices=4, size=16)
    patients = sorted(p for p in src.rglob("TCGA_*") if p.is_dir())
    split = _linked_split(src, patients[:2], tmp_path / "split")
    res = load_samples("lgg", split)
    assert len(res.samples) == 2 * 4
    assert sorted({s["volume_id"] for s in res.samples}) == [p.name for p in patients[:2]]
    assert len({os.path.realpath(s["image"]) for s in res.samples}) == 8


def test_brats_split_of_symlinked_cases(tmp_path):
    """q12-brats-symlinked-cases"""
    src = synthetic.make_brats(tmp_path / "src", n_train=3, n_val=0, shape=(8, 8, 8))
    cases = sorted(src.glob("train/*"))
    res = load_samples("brats", _linked_split(src, cases[:2], tmp_path / "split"))
    assert sorted(s["case_id"] for s in res.samples) == sorted(c.name for c in cases[:2])


def test_ph2_flat_copy_in_symlinked_folders(tmp_path):
    """q12-ph2-flat-symlinked: a flattened PH2 copy whose images/ and masks/ are links."""
    src = synthetic.make_ph2(tmp_path / "src", n=3)
    flat = tmp_path / "flat"
    for sub, pattern in (("images", "IMD*/IMD*_Dermoscopic_Image/*"), ("masks", "IMD*/IMD*_lesion/*")):
        (tmp_path / sub).mkdir()
        for f in (src / "PH2 Dataset images").glob(pattern):
            shutil.copy(f, tmp_path / sub / f.name)
    flat.mkdir()
    os.symlink(tmp_path / "images", flat / "images")
    os.symlink(tmp_path / "masks", flat / "masks")
    res = load_samples("ph2", flat)
    assert len(res.samples) == 3


# ---------------------------------------------------------------------------------------------------------------
# not listed, same rules: nothing read silently wrong
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(5, 16, 16), (4, 16, 16, 3)], ids=["x-multipage-tiff", "x-multipage-tiff-rgb"])
def test_multipage_tiff_is_refused_not_cut_to_its_first_page(tmp_path, shape):
    import tifffile

    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, np.zeros(shape, np.uint8))
    with pytest.raises(MedsegError, match=rf"stack.tif: holds {shape[0]} pages .*; fix: save each page as its own"):
        read_image_2d(path, kind="mask")


def test_nan_in_a_float_mask_is_refused(tmp_path):
    """x-nan-mask-2d: a float mask with one NaN was binarised to an empty mask (all background), without a word."""
    import tifffile

    from medseg.data.transforms import LoadImage2Dd

    tifffile.imwrite(tmp_path / "a.tif", np.ones((16, 16), np.float32))
    mask = np.zeros((16, 16), np.float32)
    mask[4:8, 4:8] = 1
    mask[0, 0] = np.nan
    tifffile.imwrite(tmp_path / "a_mask.tif", mask)
    with pytest.raises(MedsegError, match=r"a_mask.tif: contains 1 NaN/infinite"):
        LoadImage2Dd(1, 2)({"image": str(tmp_path / "a.tif"), "label": str(tmp_path / "a_mask.tif")})


def test_orientation_probe_of_a_bomb_is_quiet(tmp_path, recwarn, monkeypatch):
    """x-bomb-exif: reading a huge file's EXIF orientation gives no PIL DecompressionBombWarning."""
    from medseg.io import exif_orientation

    monkeypatch.delenv("MEDSEG_MAX_IMAGE_PIXELS", raising=False)
    assert exif_orientation(_png_claiming(tmp_path / "b.png", 12000, 12000)) == 1
    assert not [w for w in recwarn if "DecompressionBomb" in type(w.message).__name__]


def test_unexpected_loader_failure_is_one_problem_not_a_crash(tmp_path, monkeypatch):
    """x-check-unexpected-error: a loader failure without a medseg message is listed for its case, and the other
    cases are still checked (it ended `datasets check` with a traceback, as the IndexError of q13 did)."""
    import medseg.data.loading as tr

    root = synthetic.make_folder_2d(tmp_path / "f", n=3, size=(16, 20))
    victim = sorted((root / "images").iterdir())[1]
    real = tr.read_image_2d

    def flaky(path, *args, **kwargs):
        if Path(path) == victim:
            raise IndexError("tuple index out of range")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(tr, "read_image_2d", flaky)
    report = check_dataset(load_config("folder"), root)
    assert report["n_cases"] == 3 and sum(report["image_sizes"].values()) == 2
    assert report["problems"] == [
        (
            f"{victim}: could not be read with its mask case_001_mask.png (IndexError: tuple "
            "index out of range); fix: open both files in a viewer and re-export them, or "
            "remove the case (and report the message)"
        )
    ]


@pytest.mark.slow
def test_train_on_a_truncated_mask_names_the_mask(tmp_path):
    """q13-train-truncated-mask: `medseg train` stops in one line naming the mask (it aborted with rc 134, or named
    the image). Run as a process of its own: the old failure was an abort that would take pytest down with it."""
    import subprocess
    import sys

    root = synthetic.make_lgg(tmp_path / "lgg", n_patients=3, n_slices=4, size=32)
    image = min(root.rglob("*_2.tif"))
    mask = image.with_name(image.stem + "_mask.tif")
    _truncate(_tiff_directory_last(mask, read_image_2d(mask, kind="mask")))
    cmd = [
        sys.executable,
        "-m",
        "medseg",
        "train",
        "lgg",
        "--data-dir",
        str(root),
        "--out",
        str(tmp_path / "run"),
        "--epochs",
        "1",
        "--quiet",
        "-s",
        "model.channels=[4,8,16]",
        "-s",
        "model.strides=[2,2]",
        "-s",
        "model.num_res_units=1",
        "-s",
        "preprocess.spatial_size=[32,32]",
        "-s",
        "train.batch_size=4",
        "-s",
        "train.num_workers=0",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert (
        proc.stderr.strip() == f"error: {mask}: is truncated or unreadable (no image directory in the TIFF); fix: "
        "re-export or remove it"
    )


def test_masks_linked_to_one_empty_mask_stay_one_per_slice(tmp_path):
    """q12-shared-empty-mask: following links must not merge two names of one file (slices whose masks are links
    to one empty mask keep their masks)."""
    root = synthetic.make_lgg(tmp_path / "lgg", n_patients=1, n_slices=3, size=16)
    masks = sorted(root.rglob("*_mask.tif"))
    empty = tmp_path / "empty_mask.tif"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(empty)
    for m in masks:
        m.unlink()
        os.symlink(empty, m)
    assert len(load_samples("lgg", root).samples) == 3


def test_demo_data_dir_that_is_a_file(tmp_path):
    """x-demo-data-dir-file: a --data-dir that is a file is refused in one line (FileExistsError traceback)."""
    (tmp_path / "f").write_text("x")
    with pytest.raises(MedsegError, match=r"f: is not a directory"):
        load_samples("demo", tmp_path / "f")


@pytest.mark.parametrize("recipe", ["brats", "lgg"], ids=["q3-brats-no-label-anywhere", "q3-lgg-no-mask-anywhere"])
def test_no_cases_found_says_the_masks_are_missing(tmp_path, recipe):
    """When every case lacks its mask, 'no cases found' says so (and names a folder) instead of only the layout."""
    if recipe == "brats":
        root = synthetic.make_brats(tmp_path / "d", n_train=2, n_val=0, shape=(8, 8, 8))
        pattern, folder = "OT*", min(root.glob("train/*"))
    else:
        root = synthetic.make_lgg(tmp_path / "d", n_patients=2, n_slices=2, size=16)
        pattern, folder = "*_mask.tif", min(p for p in root.rglob("TCGA_*") if p.is_dir())
    for f in root.rglob(pattern):
        f.unlink()
    with pytest.raises(MedsegError) as err:
        load_samples(recipe, root)
    msg = str(err.value)
    assert msg.startswith(f"{root}: no {recipe} cases found; fix: {folder} ") or f"(e.g. {folder})" in msg, msg
    assert ("no label map" if recipe == "brats" else "1 more folder hold slices without any mask") in msg


@pytest.mark.parametrize("ext", [".nii.gz", ".nii"], ids=["x-nifti-gz-claims-500MB", "x-nifti-claims-500MB"])
def test_nifti_claiming_more_voxels_than_it_holds(tmp_path, ext):
    """A few kB whose header claims 500^3 float32 voxels is refused from the header, without allocating them (the
    old reader allocated the 500 MB first; a header may as well claim terabytes)."""
    import gzip

    import nibabel as nib

    hdr = nib.Nifti1Image(VOXELS, np.eye(4)).header
    hdr.set_data_shape((500, 500, 500))
    path = tmp_path / f"v{ext}"
    with (gzip.open if ext == ".nii.gz" else open)(path, "wb") as fh:
        fh.write(hdr.binaryblock + b"\0" * 4 + b"\0" * 1000)
    with pytest.raises(
        MedsegError,
        match=r"v.nii(.gz)?: cannot be read as NIfTI: it is truncated \(its header claims "
        r"500x500x500 float32 voxels, 500 MB, more than",
    ):
        read_volume(path)


@pytest.mark.parametrize(
    "fmt", ["nrrd-raw", "nrrd-gzip", "mha"], ids=["x-nrrd-claims-500MB", "x-nrrd-gz-claims-500MB", "x-mha-claims-500MB"]
)
def test_itk_volume_claiming_more_voxels_than_it_holds(tmp_path, fmt):
    """ITK allocates a volume before reading it: a small file claiming 500^3 voxels is refused from its header."""
    import gzip

    data = VOXELS.tobytes()
    if fmt == "mha":
        path = tmp_path / "v.mha"
        path.write_bytes(
            b"ObjectType = Image\nNDims = 3\nDimSize = 500 500 500\nElementSpacing = 1 1 1\n"
            b"ElementType = MET_FLOAT\nElementDataFile = LOCAL\n" + data
        )
    else:
        path = tmp_path / "v.nrrd"
        enc = "gzip" if fmt == "nrrd-gzip" else "raw"
        path.write_bytes(
            (f"NRRD0004\ntype: float\ndimension: 3\nsizes: 500 500 500\nendian: little\nencoding: {enc}\n\n").encode()
            + (gzip.compress(data) if enc == "gzip" else data)
        )
    with pytest.raises(
        MedsegError,
        match=r"v.(nrrd|mha): cannot be read: it is truncated \(its header claims "
        r"500x500x500 voxels, at least 125 MB",
    ):
        read_volume(path)


def test_preprocessing_failure_names_the_label_too(tmp_path):
    """q13-guarded-names-label: a failure medseg has no message for names the image and its label (it named the
    image alone, so a bad mask sent the user to the wrong file)."""
    from medseg.data.transforms import Guarded

    def broken(_data):
        raise IndexError("tuple index out of range")

    with pytest.raises(MedsegError) as err:
        Guarded(broken)({"image": "a/s_2.tif", "label": "a/s_2_mask.tif"})
    assert str(err.value) == (
        "a/s_2.tif: failed in preprocessing with its label s_2_mask.tif (IndexError: tuple index "
        "out of range); fix: check that the image and its label are complete and readable"
    )


def test_case_cache_stops_its_threads_on_a_bad_case():
    """q13-cache-threads: the training cache re-raises a bad case's error only once its loading threads have ended
    (left running, they aborted the process at exit: rc 134 after the error line); good data is cached as before."""
    import threading

    from monai.transforms import Transform

    from medseg.data.cache import CaseCache

    release = threading.Event()

    class Load(Transform):  # a MONAI Transform: CacheDataset caches only those
        def __call__(self, item):
            if item["i"] == 0:
                release.set()
                raise MedsegError("case_0.png: is truncated or unreadable (test); fix: re-export or remove it")
            release.wait()
            return {"i": item["i"] * 10}

    load = Load()

    before = set(threading.enumerate())
    with pytest.raises(Exception) as err:  # MONAI wraps it: the MedsegError is found inside
        CaseCache([{"i": i} for i in range(12)], load, cache_rate=1.0, num_workers=4, progress=False)
    assert str(find_user_error(err.value)).startswith("case_0.png: is truncated")
    assert [t for t in threading.enumerate() if t not in before and t.is_alive()] == []
    good = CaseCache([{"i": i} for i in range(1, 5)], load, cache_rate=1.0, num_workers=2, progress=False)
    assert [good[k]["i"] for k in range(4)] == [10, 20, 30, 40]
