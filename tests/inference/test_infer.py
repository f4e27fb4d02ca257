"""Inference: geometry round trips on oblique, LPS, anisotropic, 4D, DICOM and odd-sized 2D inputs."""

import hashlib
import json
import logging

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from PIL import Image

from medseg.config import load_config
from medseg.data import synthetic
from medseg.engine.train import train
from medseg.errors import MedsegError
from medseg.inference.infer import infer
from medseg.inference.options import InferenceOptions
from tests.conftest import blob_3d_config, dice, pdf_text, schema_valid


@pytest.fixture(scope="session")
def model3d(tmp_path_factory):
    """A real 3D U-Net trained briefly on bright synthetic blobs (1 channel, 1.5 mm grid)."""
    root = tmp_path_factory.mktemp("m3")
    data = synthetic.make_nifti_folder(root / "data", n=8, shape=(28, 28, 20), seed=1)
    cfg = blob_3d_config()
    res = train(cfg, data, root / "run", progress=False)
    assert res.best_metric > 0.7, res.history[-1]
    return root / "run" / "best.pt"


@pytest.fixture(scope="session")
def model2d(tmp_path_factory):
    root = tmp_path_factory.mktemp("m2")
    data = synthetic.make_folder_2d(root / "data", n=12, size=(48, 64))
    cfg = load_config(
        "demo",
        [
            "data.recipe=folder",
            "preprocess.spatial_size=[48,64]",
            "train.epochs=60",
            "train.batch_size=2",
            "train.val_every=60",
        ],
    )
    train(cfg, data, root / "run", progress=False)
    return root / "run" / "best.pt"


def _blob_volume(shape, seed=5):
    rng = np.random.default_rng(seed)
    mask = synthetic.blob_3d(rng, shape, (0.2, 0.28))
    return synthetic.mri_from_mask(rng, mask), mask


def _run(inputs, model, out, force=False, **options):
    opts = InferenceOptions(**options)
    return infer([str(i) for i in inputs], model=[str(model)], out=out, options=opts, force=force, progress=False)


def test_oblique_nifti_round_trip(model3d, tmp_path):
    img, mask = _blob_volume((36, 34, 22))
    aff = synthetic.oblique_affine(spacing=(1.3, 1.1, 1.8), angle_deg=25)
    src = nib.Nifti1Image(img, aff)
    src.set_qform(aff, code=1)
    src.set_sform(aff, code=2)
    nib.save(src, str(tmp_path / "obl.nii.gz"))
    before = hashlib.sha256((tmp_path / "obl.nii.gz").read_bytes()).hexdigest()
    summary = _run([tmp_path / "obl.nii.gz"], model3d, tmp_path / "out")
    seg = nib.load(str(tmp_path / "out" / "obl_seg.nii.gz"))
    assert seg.shape == img.shape
    assert np.allclose(seg.affine, aff, atol=1e-5)
    assert np.allclose(seg.get_qform(), src.get_qform(), atol=1e-5) and np.allclose(seg.get_sform(), aff, atol=1e-5)
    assert int(seg.header["qform_code"]) == 1 and int(seg.header["sform_code"]) == 2
    assert np.allclose(seg.header.get_zooms(), src.header.get_zooms())
    assert dice(np.asarray(seg.dataobj), mask) > 0.7  # the blob is found where it is
    assert hashlib.sha256((tmp_path / "obl.nii.gz").read_bytes()).hexdigest() == before  # input untouched
    f = schema_valid("findings", tmp_path / "out" / "obl_findings.json")
    expected_ml = mask.sum() * 1.3 * 1.1 * 1.8 / 1000
    assert abs(f["classes"]["blob"]["total_ml"] - expected_ml) / expected_ml < 0.35
    centroid = (aff @ np.append(np.argwhere(mask).mean(axis=0), 1))[:3]
    assert np.linalg.norm(np.array(f["classes"]["blob"]["lesions"][0]["centroid_mm"]) - centroid) < 3.0
    assert summary.outputs[0]["models"][0]["sha256_12"]


def test_lps_nrrd_anisotropic(model3d, tmp_path):
    img, mask = _blob_volume((40, 30, 16), seed=8)
    aff = np.array(
        [[0, -0.9, 0, 30.0], [-0.8, 0, 0, -20.0], [0, 0, 2.6, 11.0], [0, 0, 0, 1]]
    )  # axes swapped, anisotropic
    synthetic.write_itk(img, aff, tmp_path / "lps.nrrd")
    _run([tmp_path / "lps.nrrd"], model3d, tmp_path / "out")
    a, b = sitk.ReadImage(str(tmp_path / "lps.nrrd")), sitk.ReadImage(str(tmp_path / "out" / "lps_seg.nrrd"))
    assert a.GetSize() == b.GetSize()
    assert np.allclose(a.GetSpacing(), b.GetSpacing()) and np.allclose(a.GetOrigin(), b.GetOrigin())
    assert np.allclose(a.GetDirection(), b.GetDirection())
    seg = np.transpose(sitk.GetArrayFromImage(b), (2, 1, 0))
    assert dice(seg, mask) > 0.6


def test_dicom_series_to_nifti(model3d, tmp_path):
    img, mask = _blob_volume((32, 30, 14), seed=11)
    folder = synthetic.make_dicom_series(tmp_path / "dcm", img * 400, spacing=(1.1, 1.2, 2.0), origin=(-50, 20, -10))
    res = _run([folder], model3d, tmp_path / "out").outputs[0]
    seg = nib.load(str(tmp_path / "out" / "dcm_seg.nii.gz"))
    ref = sitk.ReadImage(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    assert seg.shape == (32, 30, 14)
    lps_origin = np.diag([-1, -1, 1]) @ seg.affine[:3, 3]
    assert np.allclose(lps_origin, ref.GetOrigin(), atol=1e-3)
    assert np.allclose(seg.header.get_zooms(), ref.GetSpacing(), atol=1e-4)
    assert res["metadata"]["modality"] == "CT"
    assert schema_valid("findings", res["findings_json"])["dicom_series"]["files"] == 14
    assert dice(np.asarray(seg.dataobj), mask) > 0.6


def test_dicom_seg_lands_every_frame_on_its_source_instance(model3d, tmp_path):
    """--dicom-seg: a SEG in the source study, one frame per source instance holding that slice of the NIfTI mask."""
    hd = pytest.importorskip("highdicom")
    import pydicom

    img, mask = _blob_volume((32, 30, 14), seed=11)
    folder = synthetic.make_dicom_series(tmp_path / "dcm", img * 400, spacing=(1.1, 1.2, 2.0), origin=(-50, 20, -10))
    _run([folder], model3d, tmp_path / "out", dicom_seg=True)
    nifti = np.asarray(nib.load(str(tmp_path / "out" / "dcm_seg.nii.gz")).dataobj)
    assert dice(nifti, mask) > 0.6
    seg = hd.seg.segread(str(tmp_path / "out" / "dcm_seg.dcm"))
    sources = [pydicom.dcmread(f) for f in sorted(folder.glob("*.dcm"))]
    assert seg.StudyInstanceUID == sources[0].StudyInstanceUID and seg.PatientID == "SYNTH001"
    assert seg.SeriesInstanceUID != sources[0].SeriesInstanceUID
    assert seg.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["blob"]
    assert seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0].AlgorithmName == "medseg"
    uids = [ds.SOPInstanceUID for ds in sources]
    frames = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, combine_segments=True)
    assert frames.shape == (14, 30, 32)
    for ds, frame in zip(sources, frames):  # the synthetic series numbers its slices 1..Z along the volume's z
        assert np.array_equal(frame, nifti[:, :, int(ds.InstanceNumber) - 1].T)


def test_dicom_seg_for_a_nifti_input_is_one_line(model3d, tmp_path):
    img, _ = _blob_volume((20, 20, 12), seed=3)
    nib.save(nib.Nifti1Image(img, np.eye(4)), str(tmp_path / "v.nii.gz"))
    with pytest.raises(MedsegError, match=r"v.nii.gz: is not a DICOM series; fix: --dicom-seg applies to DICOM"):
        _run([tmp_path / "v.nii.gz"], model3d, tmp_path / "out", dicom_seg=True)
    assert not list((tmp_path / "out").glob("v_*"))  # nothing of the case was left behind


def test_dicom_folder_with_several_series(model3d, tmp_path, log_lines):
    """A study folder as exported from a PACS: the scan and a 3-slice localizer side by side. The scan (the
    largest series) is segmented, the findings name both series, and the log warns which one was taken."""
    img, mask = _blob_volume((32, 30, 14), seed=11)
    folder = tmp_path / "study"
    synthetic.make_dicom_series(
        folder, img * 400, spacing=(1.1, 1.2, 2.0), series_uid="1.2.3.4.1", description="AX T2", prefix="ax"
    )
    synthetic.make_dicom_series(
        folder,
        img[:, :, 5:8] * 400,
        spacing=(1.1, 1.2, 5.0),
        series_uid="1.2.3.4.2",
        description="LOCALIZER",
        prefix="loc",
    )
    res = infer([str(folder)], model=[str(model3d)], out=tmp_path / "out", progress=False).outputs[0]
    seg = nib.load(str(tmp_path / "out" / "study_seg.nii.gz"))
    assert seg.shape == (32, 30, 14) and dice(np.asarray(seg.dataobj), mask) > 0.6
    series = res["dicom_series"]
    assert (series["series_uid"], series["files"], series["description"]) == ("1.2.3.4.1", 14, "AX T2")
    assert series["other_series"] == [{"series_uid": "1.2.3.4.2", "files": 3, "description": "LOCALIZER"}]
    warning = [line for line in log_lines if line.startswith("warning:")]
    assert (
        len(warning) == 1 and "2 DICOM series" in warning[0] and "'AX T2'" in warning[0] and "LOCALIZER" in warning[0]
    )
    from medseg.reporting.case_report import case_report

    pdf = case_report(res["findings_json"], out=tmp_path / "study.pdf")
    text = pdf_text(pdf)
    assert "Not segmented" in text and "LOCALIZER" in text and "AX T2" in text
    single = _run([synthetic.make_dicom_series(tmp_path / "one", img * 400)], model3d, tmp_path / "out1").outputs[0]
    assert single["dicom_series"]["other_series"] == []


def test_label_tables_for_viewers(model3d, model2d, tmp_path):
    """3D masks come with colour tables naming their values (3D Slicer .ctbl, ITK-SNAP label descriptions) in the
    overlay colours; a folder holding another model's tables is not rewritten without force; binary 2D masks
    (0/255 PNGs) get none."""
    from medseg.inference.outputs import write_label_tables
    from medseg.viz import class_colour

    img, _ = _blob_volume((24, 22, 12))
    nib.save(nib.Nifti1Image(img, np.eye(4)), tmp_path / "v.nii.gz")
    _run([tmp_path / "v.nii.gz"], model3d, tmp_path / "out")
    names = list(torch.load(model3d, weights_only=True)["config"]["data"]["labels"])
    ctbl = (tmp_path / "out" / "labels.ctbl").read_text().splitlines()
    r, g, b = class_colour(1)
    assert (
        ctbl[2] == "0 background 0 0 0 0" and ctbl[3] == f"1 {names[1]} {r} {g} {b} 255" and len(ctbl) == 2 + len(names)
    )
    snap = (tmp_path / "out" / "labels_itksnap.txt").read_text().splitlines()
    assert snap[-1].split() == ["1", str(r), str(g), str(b), "1", "1", "1", f'"{names[1]}"']
    _run([tmp_path / "v.nii.gz"], model3d, tmp_path / "out", force=True)  # same model again: tables unchanged
    with pytest.raises(MedsegError, match=r"labels.ctbl: already exists with other class names"):
        write_label_tables(tmp_path / "out", ["background", "left kidney"])
    write_label_tables(tmp_path / "out", ["background", "left kidney"], force=True)
    assert "1 left_kidney " in (tmp_path / "out" / "labels.ctbl").read_text()
    assert '"left kidney"' in (tmp_path / "out" / "labels_itksnap.txt").read_text()
    rng = np.random.default_rng(0)
    Image.fromarray(synthetic.lesion_2d(rng, 40, 40)[0]).save(tmp_path / "skin.png")
    _run([tmp_path / "skin.png"], model2d, tmp_path / "out2d")
    assert not (tmp_path / "out2d" / "labels.ctbl").exists()


def test_folder_of_case_folders(model3d, brats_dir, tmp_path):
    """`medseg infer scans/` segments every case below the folder: volumes in per-patient folders (same file names
    get their folder's name), DICOM series folders, multi-modal case folders (BraTS validation sets), 2D images in
    per-case folders; label folders, masks, PH2's lesion/ROI folders and medseg's own outputs are left out."""
    from medseg.inference.cases import expand_inputs

    img, mask = _blob_volume((24, 22, 12))
    scans = tmp_path / "scans"
    for name in ("p1", "p2", "labelsTr"):
        (scans / name).mkdir(parents=True)
        nib.save(nib.Nifti1Image(img, np.eye(4)), scans / name / "ct.nii.gz")
    nib.save(nib.Nifti1Image(img, np.eye(4)), scans / "p1" / "ct_prob.nii.gz")
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), np.eye(4)), scans / "p1" / "ct_seg.nii.gz")
    synthetic.make_dicom_series(scans / "p3" / "series_2", img * 400)
    summary = _run([scans], model3d, tmp_path / "out")
    assert sorted(r["case_id"] for r in summary.outputs) == ["p1_ct", "p2_ct", "series_2"]
    for name in ("p1_ct", "p2_ct", "series_2"):
        seg = nib.load(str(tmp_path / "out" / f"{name}_seg.nii.gz"))
        assert seg.shape == (24, 22, 12) and dice(np.asarray(seg.dataobj), mask) > 0.6

    brats, errors = expand_inputs([str(brats_dir)], load_config("brats"))
    assert not errors and len(brats) == 4 and all(len(c.paths) == 2 for c in brats)
    assert [c.case_id for c in brats] == sorted(p.name for p in brats_dir.glob("*/*") if p.is_dir())
    ph2 = synthetic.make_ph2(tmp_path / "ph2", n=3)
    for case in sorted((ph2 / "PH2 Dataset images").iterdir()):  # colour-class masks, in a folder of their own
        (case / f"{case.name}_roi").mkdir()
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(case / f"{case.name}_roi" / f"{case.name}_R1_Label1.bmp")
    found, errors = expand_inputs([str(ph2)], load_config("ph2"))
    assert not errors and len(found) == 3 and all("_Dermoscopic_Image" in c.paths[0] for c in found)


def test_2d_odd_sizes(model2d, tmp_path):
    rng = np.random.default_rng(3)
    for h, w in ((50, 70), (61, 45)):
        img, mask = synthetic.lesion_2d(rng, h, w)
        Image.fromarray(img).save(tmp_path / f"odd_{h}x{w}.jpg", quality=95)
        np.save(tmp_path / f"odd_{h}x{w}.npy", mask)
    _run([tmp_path], model2d, tmp_path / "out")
    for h, w in ((50, 70), (61, 45)):
        seg = np.array(Image.open(tmp_path / "out" / f"odd_{h}x{w}_seg.png"))
        assert seg.shape == (h, w) and set(np.unique(seg)) <= {0, 255}
        assert dice(seg > 0, np.load(tmp_path / f"odd_{h}x{w}.npy")) > 0.7


def test_exif_turned_photo_is_segmented_upright(model2d, tmp_path, log_lines):
    """A phone photo stored 64x48 with EXIF orientation 8 (shown turned 90 degrees anticlockwise): the mask is the
    upright picture's size and finds the lesion where a viewer shows it; findings and log say so."""
    rng = np.random.default_rng(3)
    img, mask = synthetic.lesion_2d(rng, 64, 48)
    stored = np.rot90(img, k=-1).copy()  # what the camera wrote: the upright picture turned clockwise
    exif = Image.Exif()
    exif[274] = 8
    Image.fromarray(stored).save(tmp_path / "phone.jpg", quality=95, exif=exif)
    res = infer([str(tmp_path / "phone.jpg")], model=[str(model2d)], out=tmp_path / "out", progress=False).outputs[0]
    seg = np.array(Image.open(tmp_path / "out" / "phone_seg.png"))
    assert seg.shape == (64, 48) and dice(seg > 0, mask) > 0.7
    assert res["exif_orientation"] == 8 and res["geometry"]["shape"] == [64, 48]
    assert schema_valid("findings", res["findings_json"])["unit"] == "px2"
    assert any(line.startswith("note:") and "EXIF orientation 8 applied" in line for line in log_lines)


def test_lgg_style_tiff_slice(model2d, tmp_path):
    img = np.zeros((40, 56, 3), np.uint8) + 30
    img[10:25, 20:40] = 220
    Image.fromarray(img).save(tmp_path / "TCGA_XX_0001_19990101_7.tif")
    Image.fromarray(np.zeros((40, 56), np.uint8)).save(tmp_path / "TCGA_XX_0001_19990101_7_mask.tif")
    summary = _run([tmp_path], model2d, tmp_path / "out")
    assert [o["case_id"] for o in summary.outputs] == ["TCGA_XX_0001_19990101_7"]  # the mask file is not an input


def test_4d_multimodal_and_modality_mismatch(tmp_path):
    data = synthetic.make_msd(tmp_path / "msd", n=4, shape=(20, 20, 12))
    cfg = load_config(
        "brats",
        [
            "data.recipe=nifti",
            "data.labels=[background,tumour]",
            "data.channels=[flair,t1w]",
            "preprocess.spacing=null",
            "train.patch_size=[16,16,16]",
            "infer.roi_size=[16,16,16]",
            "model.channels=[4,8,16]",
            "model.strides=[2,2]",
            "train.epochs=1",
            "data.split.use_predefined=false",
            "preprocess.crop_foreground=false",
        ],
    )
    train(cfg, data, tmp_path / "run", progress=False)
    model = tmp_path / "run" / "best.pt"
    _run([data / "imagesTr" / "case_000.nii.gz"], model, tmp_path / "out")
    seg = nib.load(str(tmp_path / "out" / "case_000_seg.nii.gz"))
    assert seg.shape == (20, 20, 12)  # 4D input -> 3D mask on the same grid
    assert np.allclose(seg.affine, nib.load(str(data / "imagesTr" / "case_000.nii.gz")).affine)
    single = nib.Nifti1Image(np.zeros((20, 20, 12), np.float32), np.eye(4))
    nib.save(single, str(tmp_path / "one.nii.gz"))
    with pytest.raises(MedsegError, match=r"one.nii.gz: the model expects 2 modalities \(flair,t1w\), got 1"):
        _run([tmp_path / "one.nii.gz"], model, tmp_path / "out2")


def test_batch_continues_past_bad_file_and_never_overwrites(model2d, tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(synthetic.lesion_2d(rng, 48, 64)[0]).save(tmp_path / "good.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    out = tmp_path / "out"
    with pytest.raises(MedsegError, match=r"1 of 2 inputs failed.*bad.png"):
        _run([tmp_path / "good.png", tmp_path / "bad.png"], model2d, out)
    first = json.loads((out / "infer_summary.json").read_text())
    assert [(c["case_id"], c["status"]) for c in first["cases"]] == [("good", "written")]
    assert first["counts"] == {"written": 1, "skipped": 0, "failed": 1, "not_run": 0}
    assert "bad.png: cannot be read" in first["failures"][0]
    stamp = (out / "good_seg.png").stat().st_mtime_ns
    again = _run([tmp_path / "good.png"], model2d, out)  # a re-run skips the case the same model already wrote
    assert again.outputs == [] and [s["case_id"] for s in again.skipped] == ["good"]
    assert json.loads((out / "infer_summary.json").read_text())["cases"][0]["status"] == "skipped"
    with pytest.raises(MedsegError, match=r"good_findings.json: this case was segmented without good_prob.tif"):
        _run([tmp_path / "good.png"], model2d, out, probabilities=True)
    (out / "good_findings.json").unlink()  # a mask without its findings: a case cut short, or not medseg's
    with pytest.raises(MedsegError, match="good_seg.png: already exists; fix: pass --force"):
        _run([tmp_path / "good.png"], model2d, out)
    assert (out / "good_seg.png").stat().st_mtime_ns == stamp
    done = _run([tmp_path / "good.png"], model2d, out, force=True)
    assert [o["case_id"] for o in done.outputs] == ["good"] and (out / "good_findings.json").is_file()


def test_rerun_with_another_model_is_refused(model2d, tmp_path):
    Image.fromarray(synthetic.lesion_2d(np.random.default_rng(0), 48, 64)[0]).save(tmp_path / "a.png")
    _run([tmp_path / "a.png"], model2d, tmp_path / "out")
    findings = tmp_path / "out" / "a_findings.json"
    record = json.loads(findings.read_text())
    record["models"][0]["sha256_12"] = "0123456789ab"  # as if another model had written it
    findings.write_text(json.dumps(record))
    with pytest.raises(
        MedsegError, match=r"a_findings.json: already exists, made by another model \(sha256 0123456789ab\)"
    ):
        _run([tmp_path / "a.png"], model2d, tmp_path / "out")


def test_bad_checkpoints(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(MedsegError, match="other.pt: is not a medseg checkpoint"):
        _run([tmp_path], tmp_path / "other.pt", tmp_path / "o")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"format": "medseg-checkpoint", "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(MedsegError, match="evil.pt: is not a readable medseg checkpoint"):
        _run([tmp_path], tmp_path / "evil.pt", tmp_path / "o")


def test_default_model_is_newest_run(model2d, tmp_path, log_lines):
    with pytest.raises(MedsegError, match="no --model given"):
        infer([str(tmp_path)], out=tmp_path / "o", progress=False)
    (tmp_path / "runs" / "x").mkdir(parents=True)
    (tmp_path / "runs" / "x" / "best.pt").write_bytes(model2d.read_bytes())
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(tmp_path / "img.png")
    infer([str(tmp_path / "img.png")], out=tmp_path / "o", progress=False)
    assert log_lines[0].startswith("using runs/x/best.pt (")


def test_tta_and_probabilities(model2d, tmp_path):
    rng = np.random.default_rng(4)
    img, mask = synthetic.lesion_2d(rng, 48, 64)
    Image.fromarray(img).save(tmp_path / "t.png")
    res = _run([tmp_path / "t.png"], model2d, tmp_path / "out", tta=True, probabilities=True).outputs[0]
    import tifffile

    prob = tifffile.imread(tmp_path / "out" / "t_prob.tif")
    assert prob.shape == (1, 48, 64) and 0 <= prob.min() and prob.max() <= 1
    assert res["tta"] is True and dice(prob[0] > 0.5, mask) > 0.7


def test_dimension_mismatch_is_explained(model2d, tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)), str(tmp_path / "v.nii.gz"))
    with pytest.raises(MedsegError, match="v.nii.gz: is a volume but the model is 2D"):
        _run([tmp_path / "v.nii.gz"], model2d, tmp_path / "o")


def test_ensemble_averages_checkpoints(model2d, tmp_path):
    rng = np.random.default_rng(9)
    img, _mask = synthetic.lesion_2d(rng, 48, 64)
    Image.fromarray(img).save(tmp_path / "e.png")
    other = tmp_path / "copy.pt"
    other.write_bytes(model2d.read_bytes())
    res = infer(
        [str(tmp_path / "e.png")], model=[str(model2d), str(other)], out=tmp_path / "out", progress=False
    ).outputs[0]
    assert len(res["models"]) == 2
    single = _run([tmp_path / "e.png"], model2d, tmp_path / "out1").outputs[0]
    a = np.array(Image.open(res["segmentation"]))
    b = np.array(Image.open(single["segmentation"]))
    assert np.array_equal(a, b)  # averaging two identical models changes nothing


def test_crop_to_nonzero_box_and_back():
    """CropNonzerod crops to the non-zero box (any channel) + margin; inference reads it back as the full grid,
    background outside the box."""
    from monai.data import MetaTensor

    from medseg.data.transforms import CropNonzerod
    from medseg.inference.predictor import SourceGrid
    from medseg.tasks import task_for

    aff = torch.as_tensor(synthetic.oblique_affine(spacing=(1.3, 1.1, 1.8), angle_deg=25), dtype=torch.float64)
    x = torch.zeros(2, 20, 18, 16)
    x[1, 5:9, 6:10, 3:7] = -0.5  # only channel 1, negative values count too
    d = CropNonzerod(keys=["image"], margin=1)({"image": MetaTensor(x, affine=aff)})
    assert tuple(d["image"].shape) == (2, 6, 6, 6)
    assert d["crop_box"] == {"start": [4, 5, 2], "full_shape": [20, 18, 16]}
    probs = torch.full((3, 6, 6, 6), 0.2)
    softmax, sigmoid = task_for(load_config("brats")), task_for(load_config("demo"))
    source = SourceGrid(probs, torch.as_tensor(d["image"].affine, dtype=torch.float64), d["crop_box"], softmax)
    full = source.region([0, 0, 0], [20, 18, 16])
    assert source.shape == (20, 18, 16) and tuple(full.shape) == (3, 20, 18, 16)
    assert torch.allclose(source.full_affine, aff, atol=1e-6)  # back on the input's own grid
    assert torch.allclose(full[:, 4:10, 5:11, 2:8], probs)
    assert float(full[0].sum()) == pytest.approx(20 * 18 * 16 - 216 + 0.2 * 216)  # background everywhere else
    part = source.region([3, 4, 1], [6, 7, 4])  # straddles the box's corner: 2x2x2 of it, background around
    assert float(part[1].sum()) == pytest.approx(0.2 * 8) and float(part[0].sum()) == pytest.approx(27 - 8 + 1.6)
    assert source.region([5, 6, 3], [7, 8, 5]).data_ptr() == probs[:, 1:3, 1:3, 1:3].data_ptr()  # inside: a view
    binary = SourceGrid(torch.ones(1, 6, 6, 6), aff, d["crop_box"], sigmoid).region([0, 0, 0], [20, 18, 16])
    assert float(binary.sum()) == 216
    whole = CropNonzerod(keys=["image"])({"image": MetaTensor(torch.zeros(1, 5, 5, 5), affine=aff)})
    assert tuple(whole["image"].shape) == (1, 5, 5, 5) and whole["crop_box"]["start"] == [0, 0, 0]


def test_model_trained_on_nonzero_box_segments_in_place(model3d, tmp_path):
    """The same weights with crop_foreground on: the prediction lands where the blob is, on the oblique input grid."""
    from medseg.checkpoint import load_checkpoint, save_checkpoint

    ck = load_checkpoint(model3d)
    ck["config"]["preprocess"]["crop_foreground"] = True
    save_checkpoint(ck, tmp_path / "crop.pt")
    img, mask = _blob_volume((36, 34, 22), seed=6)
    lo = np.argwhere(mask).min(axis=0) - 3
    hi = np.argwhere(mask).max(axis=0) + 4
    keep = np.zeros(mask.shape, bool)
    keep[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = True
    img = np.where(keep, img, 0).astype(np.float32)  # zero background, the blob off-centre
    aff = synthetic.oblique_affine(spacing=(1.3, 1.1, 1.8), angle_deg=25)
    nib.save(nib.Nifti1Image(img, aff), str(tmp_path / "box.nii.gz"))
    _run([tmp_path / "box.nii.gz"], tmp_path / "crop.pt", tmp_path / "out")
    seg = nib.load(str(tmp_path / "out" / "box_seg.nii.gz"))
    assert seg.shape == img.shape and np.allclose(seg.affine, aff, atol=1e-5)
    pred = np.asarray(seg.dataobj)
    assert dice(pred, mask) > 0.7
    assert not pred[~keep].any() or pred[~keep].sum() < 0.02 * pred.sum()


def test_labels_made_slab_by_slab_equal_those_of_the_whole_probabilities(model3d, tmp_path, monkeypatch):
    """Without kept probabilities a volume's label map is made as each slab is resampled: the same map."""
    from medseg.inference import predictor as predictor_module
    from medseg.inference.cases import Case
    from medseg.inference.checkpoints import load_models
    from medseg.inference.predictor import Predictor

    img, _ = _blob_volume((36, 34, 22), seed=9)
    aff = synthetic.oblique_affine(spacing=(1.3, 1.1, 1.8), angle_deg=25)
    nib.save(nib.Nifti1Image(img, aff), str(tmp_path / "obl.nii.gz"))
    monkeypatch.setattr(predictor_module, "SLAB_BYTES", 36 * 34 * 4 * 6 * 5)  # 5 slices per slab
    p = Predictor(load_models([str(model3d)], torch.device("cpu")), torch.device("cpu"))
    case = Case("obl", [str(tmp_path / "obl.nii.gz")], "obl")
    whole, slabs = p.predict(case), p.predict(case, keep_probabilities=False)
    assert slabs.probs is None and whole.labels is None
    assert slabs.labels.shape == img.shape and slabs.labels.any()
    assert np.array_equal(slabs.labels, p.task.probabilities_to_labels(whole.probs))


def test_stitching_moves_to_host_memory_only_when_the_gpu_is_short(monkeypatch):
    from medseg.inference.predictor import stitch_on_cpu

    cfg = load_config("brats", [])
    assert cfg.out_channels == 5  # 2 inputs, softmax over 5 classes: (2 + 2*5 + 2) * 4 bytes = 56 bytes per voxel
    cuda = torch.device("cuda")
    x = torch.empty(1, 2, 100, 100, 100)  # 1e6 voxels -> 56 MB
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (140 * 2**20, 80 * 2**30))
    assert not stitch_on_cpu(x, cfg, cuda, tta=False)  # 56 MB < half of 140 MiB (73 MB)
    assert stitch_on_cpu(x, cfg, cuda, tta=True)  # + 20 bytes per voxel for the TTA sum: 76 MB > 73 MB
    assert not stitch_on_cpu(x, cfg, torch.device("cpu"), tta=True)

    def no_answer(device=None):
        raise RuntimeError("driver cannot say")

    monkeypatch.setattr(torch.cuda, "mem_get_info", no_answer)
    assert not stitch_on_cpu(torch.empty(1, 2, 80, 80, 80), cfg, cuda, tta=False)  # 5 * 80**3 < 160**3: fixed rule
    assert stitch_on_cpu(x, cfg, cuda, tta=False)  # 5 * 100**3 > 160**3


def test_inference_options_name_the_flag_and_fill_in_the_checkpoint():
    """Flags are range-checked once, naming the flag; unset options come from the checkpoint's infer section, and
    the sliding window stays each ensemble member's own unless a flag sets it."""
    with pytest.raises(MedsegError, match=r"^--threshold 1.5 .*; fix: e.g. --threshold "):
        InferenceOptions(threshold=1.5)
    with pytest.raises(MedsegError, match=r"^--sw-batch-size 0 "):
        InferenceOptions(sw_batch_size=0)
    cfg = load_config(
        "demo",
        ["infer.threshold=0.3", "infer.tta=true", "infer.min_size=12", "infer.fill_holes=false", "infer.overlap=0.6"],
    )
    given = InferenceOptions(keep_largest=True, sw_batch_size=2)
    assert given.given_post() == ["keep_largest"]
    opts = given.for_checkpoint(cfg)
    assert opts.post == {"threshold": 0.3, "keep_largest": True, "min_size": 12.0, "fill_holes": False}
    assert opts.tta is True and opts.window(cfg) == (0.6, 2)
    other = load_config("demo", ["infer.overlap=0.1", "infer.sw_batch_size=8"])
    assert opts.window(other) == (0.1, 2) and InferenceOptions().window(other) == (0.1, 8)
    assert InferenceOptions(tta=False).for_checkpoint(cfg).tta is False  # a flag beats the checkpoint


def test_case_facts_read_back_from_findings_as_written():
    """Loader facts go into the findings JSON under their old keys and come back from it unchanged; an older
    findings file without them reads as no facts."""
    from medseg.inference.facts import CaseFacts

    series = {
        "series_uid": "1.2",
        "files": 14,
        "description": "AX T2",
        "other_series": [{"files": 3, "description": "LOC"}],
    }
    facts = CaseFacts.from_loader({}, {"dicom_series": series}, context=False)
    assert facts.to_findings() == {"dicom_series": series} and facts.other_series == series["other_series"]
    assert CaseFacts.from_findings({"case_id": "x", **facts.to_findings()}) == facts
    assert CaseFacts.from_findings({"case_id": "old"}) == CaseFacts() and CaseFacts().notes("a.png", (4, 5)) == []
    photo = CaseFacts.from_loader({"exif": "upright", "exif_orientation": 6, "context_found": 0}, {}, context=True)
    assert photo.to_findings() == {"context_slices_found": 0, "exif_orientation": 6}
    levels = [level for level, _ in photo.notes("a.jpg", (4, 5))]
    assert levels == [logging.WARNING, logging.INFO]
    assert CaseFacts.from_loader({"exif": "as stored", "exif_orientation": 1}, {}, context=False).to_findings() == {}
