import json

import numpy as np
import pytest
from PIL import Image

from medseg.data import load_samples, synthetic
from medseg.data.lgg import stack_patient
from medseg.data.ph2 import parse_table
from medseg.data.stacking import group_by_volume
from medseg.errors import MedsegError


def test_ph2_twin(ph2_dir):
    res = load_samples("ph2", ph2_dir)
    assert len(res.samples) == 12
    exts = {s["image"].rsplit(".", 1)[1] for s in res.samples}
    assert exts == {"bmp", "jpg", "png"}
    assert any("3 rows" in w and "skipped" in w for w in res.warnings)
    diag = [s["meta"]["diagnosis"] for s in res.samples]
    assert sorted(set(diag)) == [0, 1, 2]
    assert res.samples[0]["meta"]["diagnosis_name"] == "common nevus"


def test_ph2_table_parser_ignores_legend(ph2_dir):
    rows = parse_table(ph2_dir / "PH2_dataset.txt")
    assert len(rows) == 15  # 12 on disk + 3 rows without images
    assert rows["IMD003"]["colours"] == ["light-brown", "dark-brown"]


@pytest.mark.parametrize("flat", ["images+masks", "one folder"])
def test_ph2_flattened_copy(ph2_dir, tmp_path, flat):
    """A PH2 copy without IMDxxx case folders pairs IMDxxx.<ext> with IMDxxx_lesion.<ext> and keeps the table."""
    import shutil

    img_dir, mask_dir = (tmp_path / "images", tmp_path / "masks") if flat == "images+masks" else (tmp_path, tmp_path)
    img_dir.mkdir(exist_ok=True), mask_dir.mkdir(exist_ok=True)
    for f in (ph2_dir / "PH2 Dataset images").rglob("*"):
        if f.is_file() and "dermoscopic" in f.parent.name.lower():
            shutil.copy(f, img_dir / f.name)
        elif f.is_file() and f.parent.name.endswith("_lesion"):
            shutil.copy(f, mask_dir / f.name)
    shutil.copy(ph2_dir / "PH2_dataset.txt", tmp_path / "PH2_dataset.txt")
    nested = load_samples("ph2", ph2_dir)
    res = load_samples("ph2", tmp_path)
    assert [s["case_id"] for s in res.samples] == [s["case_id"] for s in nested.samples]
    assert [s["meta"] for s in res.samples] == [s["meta"] for s in nested.samples]
    assert all(s["label"].split("/")[-1].startswith(s["case_id"] + "_lesion") for s in res.samples)
    assert any("3 rows" in w for w in res.warnings)
    (tmp_path / "PH2_dataset.txt").unlink()
    assert any("no PH2_dataset.txt found" in w for w in load_samples("ph2", tmp_path).warnings)
    next(mask_dir.glob("IMD*_lesion.*")).unlink()
    with pytest.raises(MedsegError, match="lesion mask missing.*fix:"):
        load_samples("ph2", tmp_path)


def test_ph2_missing_mask_is_one_line_error(tmp_path):
    root = synthetic.make_ph2(tmp_path / "p", n=3)
    victim = next((root / "PH2 Dataset images").glob("IMD*/IMD*_lesion/*.bmp"))
    victim.unlink()
    with pytest.raises(MedsegError, match="lesion mask missing.*fix:"):
        load_samples("ph2", root)


def test_every_bad_case_is_counted_and_listed_on_request(tmp_path):
    """Two cases without a mask and one without an image: training stops at the first with a count of the others;
    `datasets check` (collect_problems) gets all three and the nine good cases."""
    import shutil

    root = synthetic.make_ph2(tmp_path / "p", n=12)
    cases = sorted((root / "PH2 Dataset images").glob("IMD*"))
    for case in cases[2:4]:
        next(case.glob("*_lesion/*")).unlink()
    shutil.rmtree(next(cases[7].glob("*_Dermoscopic_Image")))
    with pytest.raises(
        MedsegError,
        match=r"lesion mask missing; fix: .* \(2 more cases with problems: "
        r"`medseg datasets check` lists them all\)$",
    ):
        load_samples("ph2", root)
    res = load_samples("ph2", root, collect_problems=True)
    assert len(res.samples) == 9 and len(res.problems) == 3
    assert {p.split(":")[0].split("/")[-1] for p in res.problems} == {
        f"{cases[2].name}_lesion",
        f"{cases[3].name}_lesion",
        cases[7].name,
    }
    assert all("; fix: " in p and "\n" not in p for p in res.problems)


def test_lgg_and_nifti_bad_cases_are_collected(tmp_path):
    lgg_dir = synthetic.make_lgg(tmp_path / "lgg", n_patients=4, n_slices=12, size=48)  # own copy: masks get deleted
    slices = sorted(lgg_dir.rglob("*_mask.tif"))
    for m in slices[:2]:
        m.unlink()
    res = load_samples("lgg", lgg_dir, collect_problems=True)
    assert len(res.samples) == 4 * 12 - 2 and len(res.problems) == 2
    assert all("slice has no mask" in p for p in res.problems)
    with pytest.raises(MedsegError, match=r"slice has no mask.*\(1 more case with problems"):
        load_samples("lgg", lgg_dir)
    root = synthetic.make_nnunet(tmp_path / "nn", n=3)
    next((root / "imagesTr").glob("*_0000.nii.gz")).unlink()
    res = load_samples("nifti", root, collect_problems=True)
    assert len(res.samples) == 2 and "channel file missing" in res.problems[0]


def test_empty_dir_names_path_and_layout(tmp_path):
    with pytest.raises(MedsegError) as err:
        load_samples("ph2", tmp_path)
    assert str(tmp_path) in str(err.value) and "IMDxxx" in str(err.value)


def test_lgg_twin_sorted_numerically_and_grouped(lgg_dir):
    res = load_samples("lgg", lgg_dir)
    assert len(res.samples) == 4 * 12
    vols = group_by_volume(res.samples)
    assert len(vols) == 4
    first = next(iter(vols.values()))
    assert [s["slice_index"] for s in first] == list(range(1, 13))  # 1,2,...,10,11,12 not 1,10,11,12,2
    assert len({s["group"] for s in res.samples}) == 4
    assert any("no row" in w for w in res.warnings)  # one patient missing from data.csv
    with_meta = [s for s in res.samples if s["meta"]]
    assert with_meta and "age_at_initial_pathologic" in with_meta[0]["meta"]


@pytest.mark.parametrize(
    "header, sep, bom", [("Patient", ",", True), ("patient", ";", False), (" Patient ", "\t", False)]
)
def test_lgg_csv_from_a_spreadsheet(tmp_path, header, sep, bom):
    """A data.csv saved by a spreadsheet (byte-order mark, ';' or tab separators, odd header case) still matches."""
    lgg_dir = synthetic.make_lgg(tmp_path / "lgg", n_patients=2, n_slices=2, size=16)
    for old in lgg_dir.rglob("*.csv"):
        old.unlink()
    pids = sorted({"_".join(d.name.split("_")[:3]) for d in lgg_dir.rglob("TCGA_*") if d.is_dir()})
    lines = [sep.join([header, "age_at_initial_pathologic", "gender"])] + [sep.join([p, "61", "2"]) for p in pids]
    (lgg_dir / "data.csv").write_text(("\ufeff" if bom else "") + "\r\n".join(lines) + "\r\n", encoding="utf-8")
    res = load_samples("lgg", lgg_dir)
    assert not [w for w in res.warnings if "no row" in w]
    assert all(s["meta"] == {"age_at_initial_pathologic": 61, "gender": 2} for s in res.samples)


def test_folder_recipe_reads_an_isic_layout(tmp_path):
    """ISIC challenge folders: *_Input / *_Data images (+ superpixel maps), *_GroundTruth/<id>_segmentation.png."""
    rng = np.random.default_rng(0)
    train_in, val_in = tmp_path / "ISIC2018_Task1-2_Training_Input", tmp_path / "ISIC2018_Task1-2_Validation_Input"
    gt = tmp_path / "ISIC2018_Task1_Training_GroundTruth"
    for d in (train_in, val_in, gt):
        d.mkdir()
    for i in range(3):
        img, mask = synthetic.lesion_2d(rng, 24, 32)
        Image.fromarray(img).save(train_in / f"ISIC_{i:07d}.jpg")
        Image.fromarray(img).save(train_in / f"ISIC_{i:07d}_superpixels.png")
        Image.fromarray(img).save(val_in / f"ISIC_{i + 10:07d}.jpg")
        Image.fromarray((mask > 0).astype(np.uint8) * 255).save(gt / f"ISIC_{i:07d}_segmentation.png")
    res = load_samples("folder", tmp_path)
    assert [s["case_id"] for s in res.samples] == ["ISIC_0000000", "ISIC_0000001", "ISIC_0000002"]
    assert all(s["image"].endswith(".jpg") and "_segmentation" in s["label"] for s in res.samples)
    assert not res.problems and not res.warnings


def test_lgg_flattened_copy_groups_slices_by_patient(lgg_dir, tmp_path):
    """Slices of every patient copied into one images/ and one masks/ folder keep their patients and order."""
    import shutil

    (tmp_path / "images").mkdir(), (tmp_path / "masks").mkdir()
    for f in lgg_dir.rglob("TCGA_*.tif"):
        shutil.copy(f, tmp_path / ("masks" if f.stem.endswith("_mask") else "images") / f.name)
    shutil.copy(next(lgg_dir.rglob("data.csv")), tmp_path / "data.csv")
    (tmp_path / "images" / "overview.png").write_bytes((tmp_path / "images").glob("*.tif").__next__().read_bytes())
    nested, flat = load_samples("lgg", lgg_dir), load_samples("lgg", tmp_path)
    keys = ("case_id", "group", "slice_index", "volume_id", "meta")
    assert [[s[k] for k in keys] for s in flat.samples] == [[s[k] for k in keys] for s in nested.samples]
    assert all("/masks/" in s["label"] for s in flat.samples)
    assert any("1 image files not named" in w for w in flat.warnings)
    assert sum("no row" in w for w in flat.warnings) == sum("no row" in w for w in nested.warnings) == 1


def test_lgg_stack_patient(lgg_dir):
    vols = group_by_volume(load_samples("lgg", lgg_dir).samples)
    img, mask = stack_patient(next(iter(vols.values())))
    assert img.shape == (48, 48, 12, 3) and mask.shape == (48, 48, 12)
    assert set(np.unique(mask)) <= {0, 1} and mask.sum() > 0


def test_second_copy_inside_the_data_dir_is_used_once(lgg_dir, tmp_path):
    """The Kaggle LGG archive unpacks kaggle_3m/ and lgg-mri-segmentation/kaggle_3m/ side by side: pointed at the
    top, the loader uses the first copy only and says so. A copy that differs is still an error."""
    import shutil

    root = tmp_path / "lgg-mri-segmentation"
    shutil.copytree(lgg_dir, root)
    shutil.copytree(lgg_dir, root / "lgg-mri-segmentation")
    single = load_samples("lgg", lgg_dir)
    res = load_samples("lgg", root)
    assert len(res.samples) == len(single.samples)
    assert all("/lgg-mri-segmentation/lgg-mri-segmentation/" not in s["image"] for s in res.samples)
    assert [s["case_id"] for s in res.samples] == [s["case_id"] for s in single.samples]
    assert [s["group"] for s in res.samples] == [s["group"] for s in single.samples]
    copies = [w for w in res.warnings if "appear twice with identical files" in w]
    assert len(copies) == 1 and copies[0].split(": ")[1].startswith(f"{len(single.samples)} cases appear twice")
    first_mask = next((root / "lgg-mri-segmentation").rglob("*_mask.tif"))
    first_mask.write_bytes(first_mask.read_bytes() + b"\x00")  # the second copy now differs in one file
    with pytest.raises(MedsegError, match="duplicate case ids"):
        load_samples("lgg", root)


def test_brats_twin_predefined_subsets(brats_dir):
    res = load_samples("brats", brats_dir, {"channels": ["flair", "t1c"]})
    assert len(res.samples) == 4
    assert sorted(s["subset"] for s in res.samples) == ["train", "train", "train", "val"]
    assert all(len(s["image"]) == 2 and "Flair" in s["image"][0] for s in res.samples)


@pytest.mark.parametrize(
    "names, label",
    [
        ({"flair": "{c}_flair", "t1c": "{c}_t1ce", "t1": "{c}_t1", "t2": "{c}_t2"}, "{c}_seg"),  # BraTS 2018-2021
        ({"flair": "{c}-t2f", "t1c": "{c}-t1c", "t1": "{c}-t1n", "t2": "{c}-t2w"}, "{c}-seg"),  # BraTS 2023+
    ],
)
def test_brats_later_challenge_names(tmp_path, names, label):
    import nibabel as nib

    vol = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4))
    for case in ("BraTS-GLI-00000-000", "BraTS-GLI-00002-000"):
        d = tmp_path / "train" / case
        d.mkdir(parents=True)
        for stem in list(names.values()) + [label]:
            nib.save(vol, d / f"{stem.format(c=case)}.nii.gz")
    res = load_samples("brats", tmp_path, {"channels": ["flair", "t1c", "t1", "t2"]})
    assert len(res.samples) == 2 and not res.problems
    meaning = [w for w in res.warnings if "BraTS 2023+" in w]  # 2023 moved enhancing tumour from 4 to 3
    assert len(meaning) == (1 if label == "{c}-seg" else 0)
    assert (
        not meaning
        or meaning[0].startswith("2 label maps")
        and "data.labels=[background,necrosis,oedema,enhancing]" in meaning[0]
    )
    for s in res.samples:
        got = [p.split("/")[-1] for p in s["image"]]
        assert got == [f"{names[ch].format(c=s['case_id'])}.nii.gz" for ch in ("flair", "t1c", "t1", "t2")]
        assert s["label"].endswith(f"{label.format(c=s['case_id'])}.nii.gz") and s["subset"] == "train"


def _vsd_copy(brats_dir, root, ext=".mha"):
    """The BraTS twin rewritten as the VSD releases (BraTS 2013/2015) ship it: HGG/ and LGG/ case folders, every
    volume alone in a folder of its own name, MetaImage files, the label map named ...OT.<id>."""
    import SimpleITK as sitk

    names = {
        "Flair_subtrMeanDivStd": "VSD.Brain.XX.O.MR_Flair",
        "T1c_subtrMeanDivStd": "VSD.Brain.XX.O.MR_T1c",
        "OTMultiClass": "VSD.Brain_3more.XX.O.OT",
    }
    uid = 54512
    for i, case in enumerate(sorted(p for p in brats_dir.glob("*/*") if p.is_dir())):
        grade = "HGG" if i % 2 == 0 else "LGG"
        for src in sorted(case.glob("*.nii.gz")):
            stem = src.name[: -len(".nii.gz")]
            if stem not in names:
                continue
            uid += 1
            folder = root / grade / case.name / f"{names[stem]}.{uid}"
            folder.mkdir(parents=True)
            img = sitk.ReadImage(str(src))
            out = sitk.GetImageFromArray(sitk.GetArrayFromImage(img))  # geometry only: NIfTI header fields
            out.CopyInformation(img)  # make ITK's MetaImage writer warn
            sitk.WriteImage(out, str(folder / f"{folder.name}{ext}"))
    return root


def test_brats_vsd_layout_mha(brats_dir, tmp_path):
    """BraTS 2013/2015 as distributed (VSD names, .mha, one folder per file, HGG/LGG): the cases, their channel
    order and grade are found, every file reads through training's loader with the NIfTI twin's voxels, and
    `medseg infer CASE_FOLDER` finds the modalities the same way."""
    from medseg.config import load_config
    from medseg.data.check import check_dataset
    from medseg.data.transforms import LoadVolumed
    from medseg.inference.cases import expand_inputs

    root = _vsd_copy(brats_dir, tmp_path / "BRATS2015_Training")
    res = load_samples("brats", root, {"channels": ["flair", "t1c"]})
    assert len(res.samples) == 4 and not res.problems
    assert [s["meta"]["grade"] for s in res.samples] == ["HGG", "HGG", "LGG", "LGG"]
    assert all("subset" not in s for s in res.samples)
    for s in res.samples:
        assert [p.split("/")[-1].split(".")[4] for p in s["image"]] == ["MR_Flair", "MR_T1c"]
        assert "_3more" in s["label"] and s["label"].endswith(".mha")
    twin = {s["case_id"]: s for s in load_samples("brats", brats_dir, {"channels": ["flair", "t1c"]}).samples}
    load = LoadVolumed(2, 5)
    s = res.samples[0]
    a, b = load({"image": s["image"], "label": s["label"]}), load(dict(twin[s["case_id"]]))
    np.testing.assert_allclose(np.asarray(a["image"]), np.asarray(b["image"]), atol=1e-6)
    np.testing.assert_allclose(np.asarray(a["image"].affine), np.asarray(b["image"].affine), atol=1e-5)
    assert np.array_equal(np.asarray(a["label"]), np.asarray(b["label"]))

    cfg = load_config("brats")
    report = check_dataset(cfg, root)
    assert report["n_cases"] == 4 and not report["problems"]
    case_dir = root / "LGG" / res.samples[2]["case_id"]
    cases, errors = expand_inputs([str(case_dir)], cfg)
    assert not errors and len(cases) == 1 and cases[0].paths == res.samples[2]["image"]


def test_brats_grade_folders_stratify_the_split(tmp_path):
    """BraTS 2018-2020 training sets sit in HGG/ and LGG/: the grade goes into the metadata, and a split asked
    to stratify by it puts both grades on both sides."""
    import nibabel as nib

    from medseg.config import SplitConfig
    from medseg.data.splits import make_split

    vol = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4))
    for grade, n in (("HGG", 6), ("LGG", 4)):
        for i in range(n):
            case = f"Brats18_{grade}_{i}"
            d = tmp_path / grade / case
            d.mkdir(parents=True)
            for suffix in ("flair", "t1ce", "seg"):
                nib.save(vol, d / f"{case}_{suffix}.nii.gz")
    res = load_samples("brats", tmp_path, {"channels": ["flair", "t1c"]})
    assert sorted(s["meta"]["grade"] for s in res.samples) == ["HGG"] * 6 + ["LGG"] * 4
    split = make_split(res.samples, SplitConfig(val_fraction=0.5, stratify="grade"))
    grade = {s["case_id"]: s["meta"]["grade"] for s in res.samples}
    assert sorted(grade[c] for c in split["val"]) == ["HGG"] * 3 + ["LGG"] * 2
    assert "stratified by grade" in split["method"]


@pytest.mark.parametrize("label", ["OT.nii.gz", "label.nii.gz", "case_label.nrrd", "case-label.nii", "case_gt.mha"])
def test_brats_other_label_names(tmp_path, label):
    """Label maps named as other tools save them are found, and a brain mask beside them is not taken for one."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.zeros((4, 4, 4), np.float32))
    case = tmp_path / "case01"
    case.mkdir()
    for name in ("Flair.nii.gz", "T1c.nii.gz", "brain_mask.nii.gz", label):
        sitk.WriteImage(img, str(case / name))
    res = load_samples("brats", tmp_path, {"channels": ["flair", "t1c"]})
    assert len(res.samples) == 1 and res.samples[0]["label"].endswith(label)


def test_brats_missing_modality(brats_dir):
    with pytest.raises(MedsegError, match="modality 't2' missing"):
        load_samples("brats", brats_dir, {"channels": ["flair", "t2"]})


def test_nifti_plain_folder_and_nrrd(tmp_path):
    root = synthetic.make_nifti_folder(tmp_path / "n", n=3, shape=(16, 16, 8), ext=".nrrd")
    res = load_samples("nifti", root)
    assert [s["case_id"] for s in res.samples] == ["vol_000", "vol_001", "vol_002"]
    assert res.samples[0]["label"].endswith("vol_000_seg.nrrd")


def test_nifti_flat_folder_with_slicer_segmentations(tmp_path):
    """3D Slicer saves <case>.seg.nrrd beside <case>.nrrd; its label maps use '-label'."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.zeros((4, 5, 6), np.int16))
    for name in ("knee.nrrd", "knee.seg.nrrd", "hip.nrrd", "hip-label.nrrd", "notes.nrrd"):
        sitk.WriteImage(img, str(tmp_path / name))
    res = load_samples("nifti", tmp_path)
    assert [(s["case_id"], s["label"].split("/")[-1]) for s in res.samples] == [
        ("hip", "hip-label.nrrd"),
        ("knee", "knee.seg.nrrd"),
    ]


def test_nifti_msd_and_nnunet(tmp_path):
    msd = load_samples("nifti", synthetic.make_msd(tmp_path / "msd", n=3))
    assert len(msd.samples) == 3 and msd.info["channels"] == ["FLAIR", "T1w"]
    nn = load_samples("nifti", synthetic.make_nnunet(tmp_path / "nn", n=2))
    assert nn.info["labels"] == ["background", "lesion"]
    assert nn.samples[0]["image"].endswith("pat_000_0000.nii.gz")


def test_nifti_nnunet_v1_and_v2_variations(tmp_path):
    """What real nnU-Net folders hold beyond the synthetic twin: v1's dataset.json lists ./imagesTr/<case>.nii.gz
    while the files are <case>_0000.nii.gz; v2 region-based labels are lists; macOS leaves ._* files in unpacked
    archives."""
    root = synthetic.make_nnunet(tmp_path / "nn", n=3)
    (root / "labelsTr" / "._pat_001.nii.gz").write_bytes(b"\x00\x05\x16\x07")
    spec = json.loads((root / "dataset.json").read_text())
    spec["labels"] = {"background": 0, "lesion": 1, "lesion and rim": [1, 2]}
    (root / "dataset.json").write_text(json.dumps(spec))
    v2 = load_samples("nifti", root)
    assert [s["case_id"] for s in v2.samples] == ["pat_000", "pat_001", "pat_002"] and not v2.problems
    assert v2.info["labels"] == ["background", "lesion"]
    v1 = {
        "name": "Task500_Lesion",
        "modality": {"0": "T2"},
        "labels": {"0": "background", "1": "lesion"},
        "numTraining": 3,
        "training": [
            {"image": f"./imagesTr/pat_{i:03d}.nii.gz", "label": f"./labelsTr/pat_{i:03d}.nii.gz"} for i in range(3)
        ],
    }
    (root / "dataset.json").write_text(json.dumps(v1))
    res = load_samples("nifti", root)
    assert [(s["case_id"], s["image"].split("/")[-1]) for s in res.samples] == [
        (f"pat_{i:03d}", f"pat_{i:03d}_0000.nii.gz") for i in range(3)
    ]
    (root / "imagesTr" / "pat_002_0000.nii.gz").unlink()
    with pytest.raises(MedsegError, match=r"imagesTr/pat_002.nii.gz: listed in dataset.json but missing"):
        load_samples("nifti", root)


def test_nifti_dataset_json_missing_file(tmp_path):
    root = synthetic.make_msd(tmp_path / "msd", n=2)
    spec = json.loads((root / "dataset.json").read_text())
    spec["training"].append({"image": "./imagesTr/ghost.nii.gz", "label": "./labelsTr/ghost.nii.gz"})
    (root / "dataset.json").write_text(json.dumps(spec))
    with pytest.raises(MedsegError, match="ghost.nii.gz: listed in dataset.json but missing"):
        load_samples("nifti", root)


def test_folder_twin_and_unpaired_image(folder_dir, tmp_path):
    res = load_samples("folder", folder_dir)
    assert len(res.samples) == 12 and res.samples[0]["label"].endswith("_mask.png")
    (tmp_path / "f" / "images").mkdir(parents=True)
    (tmp_path / "f" / "masks").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "f" / "images" / "lonely.png")
    with pytest.raises(MedsegError, match="lonely.png: image has no mask"):
        load_samples("folder", tmp_path / "f")


def test_demo_generates_once(tmp_path):
    res = load_samples("demo", tmp_path / "demo", {"n_cases": 6, "size": [32, 40]})
    assert len(res.samples) == 6
    again = load_samples("demo", tmp_path / "demo", {"n_cases": 6, "size": [32, 40]})
    assert [s["case_id"] for s in again.samples] == [s["case_id"] for s in res.samples]


def test_demo_3d(tmp_path):
    res = load_samples("demo", tmp_path / "d3", {"dims": 3, "n_cases": 2, "size": [16, 16, 8]})
    assert len(res.samples) == 2 and res.samples[0]["image"].endswith(".nii.gz")
