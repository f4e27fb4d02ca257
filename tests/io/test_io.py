import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medseg.data.synthetic import oblique_affine, write_itk
from medseg.errors import MedsegError
from medseg.io import read_image_2d, read_volume, write_volume


def test_nifti_round_trip_keeps_qform_sform(tmp_path):
    aff_q = oblique_affine()
    aff_s = oblique_affine(angle_deg=25.0)
    img = nib.Nifti1Image(np.random.default_rng(0).random((10, 12, 6)).astype(np.float32), aff_s)
    img.set_qform(aff_q, code=1)
    img.set_sform(aff_s, code=2)
    nib.save(img, str(tmp_path / "in.nii.gz"))
    arr, geom = read_volume(tmp_path / "in.nii.gz")
    write_volume((arr > 0.5).astype(np.uint8), geom, tmp_path / "out.nii.gz")
    out = nib.load(str(tmp_path / "out.nii.gz"))
    assert out.shape == (10, 12, 6)
    assert np.allclose(out.get_qform(), img.get_qform(), atol=1e-5) and int(out.header["qform_code"]) == 1
    assert np.allclose(out.get_sform(), aff_s, atol=1e-5) and int(out.header["sform_code"]) == 2
    assert np.array_equal(np.asarray(out.dataobj), (arr > 0.5).astype(np.uint8))


def test_nrrd_lps_round_trip(tmp_path):
    aff = np.array([[-0.7, 0, 0, 40.0], [0, 0, 2.5, -12.0], [0, 0.9, 0, 7.5], [0, 0, 0, 1]])  # permuted, flipped axes
    arr = np.arange(6 * 7 * 5, dtype=np.int16).reshape(6, 7, 5)
    write_itk(arr, aff, tmp_path / "in.nrrd")
    back, geom = read_volume(tmp_path / "in.nrrd")
    assert np.array_equal(back, arr) and np.allclose(geom.affine, aff)
    write_volume(back, geom, tmp_path / "out.nrrd")
    a, b = sitk.ReadImage(str(tmp_path / "in.nrrd")), sitk.ReadImage(str(tmp_path / "out.nrrd"))
    assert np.allclose(a.GetSpacing(), b.GetSpacing()) and np.allclose(a.GetOrigin(), b.GetOrigin())
    assert np.allclose(a.GetDirection(), b.GetDirection())


def test_write_refuses_to_overwrite(tmp_path):
    arr, geom = np.zeros((4, 4, 4), np.uint8), None
    nib.save(nib.Nifti1Image(arr, np.eye(4)), str(tmp_path / "a.nii.gz"))
    arr, geom = read_volume(tmp_path / "a.nii.gz")
    with pytest.raises(MedsegError, match="already exists.*--force"):
        write_volume(arr, geom, tmp_path / "a.nii.gz")


def test_unsupported_and_empty_files(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(MedsegError, match="unsupported file type '.txt'"):
        read_volume(tmp_path / "notes.txt")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(MedsegError, match="empty.png: file is empty"):
        read_image_2d(tmp_path / "empty.png")
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(MedsegError, match="no DICOM series"):
        read_volume(tmp_path / "emptydir")


@pytest.mark.parametrize("ext", [".nrrd", ".mha"])
def test_an_itk_volume_is_opened_by_one_reader(tmp_path, monkeypatch, ext):
    """The reader that read and checked the header reads the voxels: no second reader opens the file again."""
    aff = np.array([[-0.7, 0, 0, 40.0], [0, 0, 2.5, -12.0], [0, 0.9, 0, 7.5], [0, 0, 0, 1]])
    arr = np.arange(6 * 7 * 5, dtype=np.int16).reshape(6, 7, 5)
    write_itk(arr, aff, tmp_path / f"in{ext}")
    opened = []
    real = sitk.ImageFileReader

    class CountingReader(real):
        def SetFileName(self, name):
            opened.append(name)
            return super().SetFileName(name)

    monkeypatch.setattr(sitk, "ImageFileReader", CountingReader)
    monkeypatch.setattr(sitk, "ReadImage", lambda *a, **k: pytest.fail("a second reader opened the file"))
    back, geom = read_volume(tmp_path / f"in{ext}")
    assert opened == [str(tmp_path / f"in{ext}")]
    assert np.array_equal(back, arr) and np.allclose(geom.affine, aff)


def test_the_names_the_stages_import_stay_importable_from_medseg_io():
    import medseg.io

    used = "IMAGE_2D_EXTS VOLUME_EXTS Geometry atomic_write exif_orientation file_ext geometry_2d is_dicom_dir"
    used += " read_image_2d read_volume slice_neighbours stale_temp_files strip_ext volume_slices write_volume"
    assert set(used.split()) <= set(medseg.io.__all__)
    assert all(hasattr(medseg.io, name) for name in medseg.io.__all__)
