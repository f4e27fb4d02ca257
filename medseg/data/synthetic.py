"""Synthetic twins of every recipe: small fake data sets in the real on-disk layouts.

They exercise the same variation real data has (BMP/JPEG/PNG, 1-bit, 8-bit and
3-channel masks, metadata rows without images, float label maps, oblique
affines) and carry a known object, so a model trained on them can be checked.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

# ----------------------------------------------------------------------------
# shapes
# ----------------------------------------------------------------------------


def _smooth_noise(rng, shape, scale: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1] by upsampling a coarse random grid."""
    coarse = rng.uniform(-1, 1, size=tuple(max(2, s // scale) for s in shape))
    img = Image.fromarray(((coarse + 1) * 127.5).astype(np.uint8)) if len(shape) == 2 else None
    if img is not None:
        return np.asarray(img.resize((shape[1], shape[0]), Image.BICUBIC), dtype=np.float32) / 127.5 - 1
    from scipy.ndimage import zoom

    return zoom(coarse, [s / c for s, c in zip(shape, coarse.shape)], order=1)[tuple(slice(0, s) for s in shape)]


def lesion_2d(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """A dermoscopy-like RGB image ``(H, W, 3)`` uint8 and its lesion mask ``(H, W)`` bool."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = rng.uniform(0.38, 0.62) * h, rng.uniform(0.38, 0.62) * w
    ay, ax = rng.uniform(0.16, 0.3) * h, rng.uniform(0.16, 0.3) * w
    th = rng.uniform(0, np.pi)
    dy, dx = yy - cy, xx - cx
    u = dx * np.cos(th) + dy * np.sin(th)
    v = -dx * np.sin(th) + dy * np.cos(th)
    r = np.sqrt((u / ax) ** 2 + (v / ay) ** 2)
    ang = np.arctan2(v, u)
    wobble = 1 + 0.12 * np.sin(3 * ang + rng.uniform(0, 6.3)) + 0.06 * np.sin(7 * ang + rng.uniform(0, 6.3))
    mask = r < wobble
    soft = np.clip((wobble - r) * 6 + 0.5, 0, 1)[..., None]
    skin = np.array(rng.uniform([190, 140, 120], [230, 180, 160]), dtype=np.float32)
    lesion = np.array(rng.uniform([70, 40, 25], [140, 90, 70]), dtype=np.float32)
    texture = _smooth_noise(rng, (h, w), 8)[..., None]
    img = skin * (1 - soft) + lesion * soft + 12 * texture + rng.normal(0, 6, (h, w, 3))
    vignette = 1 - 0.25 * (((yy - h / 2) / h) ** 2 + ((xx - w / 2) / w) ** 2)[..., None]
    return np.clip(img * vignette, 0, 255).astype(np.uint8), mask


def blob_3d(rng: np.random.Generator, shape: tuple[int, int, int], radius_frac=(0.15, 0.3)) -> np.ndarray:
    """A smooth random blob mask ``shape`` bool."""
    grid = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    centre = [rng.uniform(0.35, 0.65) * s for s in shape]
    radii = [rng.uniform(*radius_frac) * s for s in shape]
    r = np.sqrt(sum(((g - c) / rad) ** 2 for g, c, rad in zip(grid, centre, radii)))
    return r < 1 + 0.15 * _smooth_noise(rng, shape, 6)


def mri_from_mask(rng, mask: np.ndarray, contrast: float = 1.0) -> np.ndarray:
    """A float32 MRI-like volume: a brain ellipsoid with a brighter (or darker) lesion."""
    shape = mask.shape
    grid = np.meshgrid(*[np.linspace(-1, 1, s, dtype=np.float32) for s in shape], indexing="ij")
    brain = sum(g**2 for g in grid) < 0.85
    vol = brain * (1.0 + 0.1 * _smooth_noise(rng, shape, 5)) + contrast * mask * 1.2
    return (vol + rng.normal(0, 0.08, shape)).astype(np.float32) * brain


# ----------------------------------------------------------------------------
# 2D layouts
# ----------------------------------------------------------------------------


def _save_mask(mask: np.ndarray, path: Path, style: str) -> None:
    m = mask.astype(bool)
    if style == "1bit":
        Image.fromarray(m).convert("1").save(path)
    elif style == "rgb":
        Image.fromarray(np.repeat((m * 255).astype(np.uint8)[..., None], 3, axis=2)).save(path)
    elif style == "01":
        Image.fromarray(m.astype(np.uint8)).save(path)
    else:
        Image.fromarray((m * 255).astype(np.uint8)).save(path)


def make_ph2(root: str | Path, n: int = 12, size=(72, 96), seed: int = 0, missing_rows: int = 3) -> Path:
    """PH2 layout with BMP/JPEG/PNG images, 1-bit / 3-channel / 8-bit masks and the clinical table."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    base = root / "PH2 Dataset images"
    rows = []
    img_formats = ["bmp", "jpg", "jpg", "png"]
    mask_styles = ["1bit", "rgb", "255"]
    for i in range(n + missing_rows):
        case = f"IMD{3 + i * 7:03d}"
        diag = i % 3
        rows.append(
            f"|| {case} ||                        ||                  {diag} ||         {i % 3} |"
            f"               T |             A |       A |                A |                 A ||             3  4 ||"
        )
        if i >= n:
            continue  # a table row with no images on disk, as in the real distribution
        img, mask = lesion_2d(rng, *size)
        if diag == 2:  # melanomas a little darker
            img = (img * 0.85).astype(np.uint8)
        d = base / case
        (d / f"{case}_Dermoscopic_Image").mkdir(parents=True, exist_ok=True)
        (d / f"{case}_lesion").mkdir(parents=True, exist_ok=True)
        fmt = img_formats[i % len(img_formats)]
        Image.fromarray(img).save(d / f"{case}_Dermoscopic_Image" / f"{case}.{fmt}", quality=95)
        _save_mask(mask, d / f"{case}_lesion" / f"{case}_lesion.bmp", mask_styles[i % len(mask_styles)])
    header = (
        "||   Name || Histological Diagnosis || Clinical Diagnosis || Asymmetry | Pigment Network | "
        "Dots/Globules | Streaks | Regression Areas | Blue-Whitish Veil ||           Colors ||"
    )
    legend = "\n\nLegends for Clinical Diagnosis: \n   0 - Common Nevus;\n   1 - Atypical Nevus;\n   2 - Melanoma.\n"
    root.mkdir(parents=True, exist_ok=True)
    (root / "PH2_dataset.txt").write_text(header + "\n" + "\n".join(rows) + legend)
    return root


def make_lgg(
    root: str | Path, n_patients: int = 4, n_slices: int = 10, size: int = 64, seed: int = 0, csv_missing: int = 1
) -> Path:
    """Kaggle LGG layout: TCGA patient folders of 3-channel TIFF slices and 0/255 TIFF masks, plus data.csv."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    base = root / "kaggle_3m"
    base.mkdir(parents=True, exist_ok=True)
    csv_rows = [
        "Patient,RNASeqCluster,MethylationCluster,histological_type,neoplasm_histologic_grade,gender,age_at_initial_pathologic"
    ]
    for p in range(n_patients):
        inst = ["CS", "DU", "FG", "HT"][p % 4]
        pid = f"TCGA_{inst}_{4941 + p * 13}"
        folder = base / f"{pid}_{19960909 + p * 10000}"
        folder.mkdir(exist_ok=True)
        mask3d = blob_3d(rng, (size, size, n_slices), radius_frac=(0.12, 0.25))
        mask3d[:, :, : max(1, n_slices // 5)] = False  # empty slices at the ends, as in the real set
        flair = mri_from_mask(rng, mask3d, 1.0)
        pre = mri_from_mask(rng, mask3d, 0.3)
        post = mri_from_mask(rng, mask3d, 0.6)
        vol = np.stack([pre, flair, post], axis=-1)
        vol = np.clip(vol / max(vol.max(), 1e-6) * 255, 0, 255).astype(np.uint8)
        for z in range(n_slices):
            stem = f"{folder.name}_{z + 1}"
            Image.fromarray(vol[:, :, z]).save(folder / f"{stem}.tif")
            Image.fromarray((mask3d[:, :, z] * 255).astype(np.uint8)).save(folder / f"{stem}_mask.tif")
        if p < n_patients - csv_missing:
            csv_rows.append(f"{pid},{1 + p % 3},{1 + p % 4},1,{2 + p % 2},{1 + p % 2},{40 + p}")
    csv_rows.append("TCGA_ZZ_0000,,,,,,")  # a row with no images
    (base / "data.csv").write_text("\n".join(csv_rows) + "\n")
    return root


def make_folder_2d(root: str | Path, n: int = 16, size=(64, 80), seed: int = 0) -> Path:
    """images/*.png and masks/*_mask.png pairs."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img, mask = lesion_2d(rng, *size)
        Image.fromarray(img).save(root / "images" / f"case_{i:03d}.png")
        _save_mask(mask, root / "masks" / f"case_{i:03d}_mask.png", "255")
    return root


# ----------------------------------------------------------------------------
# 3D layouts
# ----------------------------------------------------------------------------


def oblique_affine(spacing=(1.2, 0.9, 2.5), angle_deg: float = 20.0, origin=(-30.0, 12.5, 40.0)) -> np.ndarray:
    """A non-diagonal voxel-to-RAS affine (rotation about z and a tilt about x)."""
    a, b = np.deg2rad(angle_deg), np.deg2rad(angle_deg / 2)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    aff = np.eye(4)
    aff[:3, :3] = rz @ rx @ np.diag(spacing)
    aff[:3, 3] = origin
    return aff


def _save_nifti(arr: np.ndarray, affine: np.ndarray, path: Path) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(arr, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))


def make_brats(root: str | Path, n_train: int = 3, n_val: int = 1, shape=(32, 32, 24), seed: int = 0) -> Path:
    """BraTS 2013 layout: train/ and validation/ case folders with Flair, T1c and a float 5-class label map."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    for i in range(n_train + n_val):
        subset = "train" if i < n_train else "validation"
        case = root / subset / f"brats_2013_pat{i + 1:04d}_1"
        case.mkdir(parents=True, exist_ok=True)
        oedema = blob_3d(rng, shape, (0.2, 0.3))
        core = oedema & blob_3d(np.random.default_rng(seed + 100 + i), shape, (0.1, 0.16))
        labels = np.zeros(shape, np.float32)
        labels[oedema] = 2
        labels[core] = 4
        grid = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
        centre = [np.mean(g[core]) if core.any() else s / 2 for g, s in zip(grid, shape)]
        inner = sum((g - c) ** 2 for g, c in zip(grid, centre)) < (min(shape) * 0.06) ** 2
        labels[core & inner] = 1
        labels[oedema & ~core & (grid[0] < centre[0] - shape[0] * 0.12)] = 3
        flair = mri_from_mask(rng, oedema, 1.0)
        t1c = mri_from_mask(rng, labels == 4, 1.5) - 0.8 * (labels == 1)
        brain = flair != 0
        for name, vol in (("Flair", flair), ("T1c", t1c)):
            v = (vol - vol[brain].mean()) / (vol[brain].std() + 1e-6) * brain
            _save_nifti(v.astype(np.float32), affine, case / f"{name}_subtrMeanDivStd.nii.gz")
        _save_nifti(labels, affine, case / "OTMultiClass.nii.gz")
        _save_nifti(brain.astype(np.uint8), affine, case / "brainmask.nii.gz")
    return root


def make_nifti_folder(root: str | Path, n: int = 6, shape=(32, 32, 24), seed: int = 0, ext: str = ".nii.gz") -> Path:
    """images/ and labels/ folders of binary-blob volumes (oblique affines for NIfTI)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        mask = blob_3d(rng, shape)
        img = mri_from_mask(rng, mask)
        aff = oblique_affine(angle_deg=10.0 * (i % 3))
        if ext in (".nii", ".nii.gz"):
            _save_nifti(img, aff, root / "images" / f"vol_{i:03d}{ext}")
            _save_nifti(mask.astype(np.uint8), aff, root / "labels" / f"vol_{i:03d}{ext}")
        else:
            write_itk(img, aff, root / "images" / f"vol_{i:03d}{ext}")
            write_itk(mask.astype(np.uint8), aff, root / "labels" / f"vol_{i:03d}_seg{ext}")
    return root


def write_itk(arr: np.ndarray, affine_ras: np.ndarray, path: Path) -> None:
    """Write an ``(X, Y, Z)`` array with a RAS affine through SimpleITK (LPS on disk)."""
    import SimpleITK as sitk

    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_ras
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    img = sitk.GetImageFromArray(np.transpose(arr, (2, 1, 0)))
    img.SetSpacing(spacing.tolist())
    img.SetOrigin(lps[:3, 3].tolist())
    img.SetDirection((lps[:3, :3] / spacing).ravel().tolist())
    sitk.WriteImage(img, str(path))


def make_msd(root: str | Path, n: int = 4, shape=(24, 24, 16), seed: int = 0) -> Path:
    """Medical Segmentation Decathlon layout: 4D two-modality images and dataset.json."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    training = []
    for i in range(n):
        mask = blob_3d(rng, shape)
        img = np.stack([mri_from_mask(rng, mask), mri_from_mask(rng, mask, 0.5)], axis=-1)
        _save_nifti(img, np.diag([1.5, 1.5, 2.0, 1.0]), root / "imagesTr" / f"case_{i:03d}.nii.gz")
        _save_nifti(mask.astype(np.uint8), np.diag([1.5, 1.5, 2.0, 1.0]), root / "labelsTr" / f"case_{i:03d}.nii.gz")
        training.append({"image": f"./imagesTr/case_{i:03d}.nii.gz", "label": f"./labelsTr/case_{i:03d}.nii.gz"})
    spec = {
        "name": "synthetic",
        "modality": {"0": "FLAIR", "1": "T1w"},
        "labels": {"0": "background", "1": "tumour"},
        "numTraining": n,
        "training": training,
    }
    (root / "dataset.json").write_text(json.dumps(spec, indent=2))
    return root


def make_nnunet(root: str | Path, n: int = 4, shape=(24, 24, 16), seed: int = 0) -> Path:
    """nnU-Net v2 raw layout: imagesTr/<case>_0000.nii.gz, labelsTr/<case>.nii.gz, dataset.json."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        mask = blob_3d(rng, shape)
        _save_nifti(mri_from_mask(rng, mask), np.eye(4), root / "imagesTr" / f"pat_{i:03d}_0000.nii.gz")
        _save_nifti(mask.astype(np.uint8), np.eye(4), root / "labelsTr" / f"pat_{i:03d}.nii.gz")
    spec = {
        "channel_names": {"0": "T2"},
        "labels": {"background": 0, "lesion": 1},
        "numTraining": n,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(spec, indent=2))
    return root


def make_dicom_series(
    folder: str | Path,
    arr: np.ndarray,
    spacing=(0.8, 0.8, 2.0),
    origin=(-100.0, -120.0, 30.0),
    direction=(1, 0, 0, 0, 1, 0, 0, 0, 1),
    series_uid: str | None = None,
    description: str = "synthetic series",
    prefix: str = "slice",
) -> Path:
    """Write an ``(X, Y, Z)`` int16 array as a CT-like DICOM series (one file per slice, LPS geometry); several
    series can share a folder when each gets its own ``series_uid`` and file ``prefix``."""
    import SimpleITK as sitk

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    img = sitk.GetImageFromArray(np.transpose(arr.astype(np.int16), (2, 1, 0)))
    img.SetSpacing([float(s) for s in spacing])
    img.SetOrigin([float(o) for o in origin])
    img.SetDirection([float(d) for d in direction])
    series_uid = series_uid or "1.2.826.0.1.3680043.2.1125.1." + str(abs(hash(str(folder))) % 10**12)
    study_uid, frame_uid = series_uid + ".1000", series_uid + ".1001"  # apart from the slices' .1, .2, ...
    dir_tag = "\\".join(
        str(float(v)) for v in (direction[0], direction[3], direction[6], direction[1], direction[4], direction[7])
    )
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for z in range(img.GetDepth()):
        sl = img[:, :, z]
        pos = img.TransformIndexToPhysicalPoint((0, 0, z))
        for tag, value in (
            ("0008|0060", "CT"),
            ("0010|0020", "SYNTH001"),
            ("0010|0010", "Synthetic^Patient"),
            ("0020|000d", study_uid),
            ("0020|000e", series_uid),
            ("0020|0052", frame_uid),
            ("0008|0020", "20260101"),
            ("0008|103e", description),
            ("0020|0032", "\\".join(f"{p:.4f}" for p in pos)),
            ("0020|0037", dir_tag),
            ("0020|0013", str(z + 1)),
            ("0018|0050", f"{spacing[2]:.3f}"),
            ("0028|0030", f"{spacing[1]:.4f}\\{spacing[0]:.4f}"),
            ("0008|0018", f"{series_uid}.{z + 1}"),
        ):
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{prefix}_{z:04d}.dcm"))
        writer.Execute(sl)
    return folder


# ----------------------------------------------------------------------------
# person photos, full-body frames, endoscopy (folder-style 2D sets)
# ----------------------------------------------------------------------------

HUMANSEG_SIZES = [(73, 110), (110, 73), (48, 64), (90, 60)]  # (H, W): landscape and portrait photos
MADS_DIR = "segmentation_full_body_mads_dataset_1192_img"


def make_humanseg(
    root: str | Path,
    n: int = 9,
    seed: int = 0,
    scaled_every: int = 3,
    grey: int = 2,
    image_exts: tuple[str, ...] = (".jpg",),
    odd_mask: bool = False,
    dirs: tuple[str, str] = ("Training_Images", "Ground_Truth"),
) -> Path:
    """Human-Segmentation-Dataset layout: ``Training_Images/<n>.jpg`` + ``Ground_Truth/<n>.png`` (one channel 0/255),
    numbered with gaps. Two of every ``scaled_every`` masks are a smaller copy of their photo in the same
    proportions (as two thirds of the real masks are), the first ``grey`` photos are greyscale, image extensions
    cycle through ``image_exts``; with ``odd_mask`` the last mask is cropped to other proportions."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    img_dir, mask_dir = root / dirs[0], root / dirs[1]
    img_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        h, w = HUMANSEG_SIZES[i % len(HUMANSEG_SIZES)]
        img, mask = lesion_2d(rng, h, w)
        photo = Image.fromarray(img).convert("L") if i < grey else Image.fromarray(img)
        photo.save(img_dir / f"{2 * i + 1}{image_exts[i % len(image_exts)]}", quality=90)
        m = Image.fromarray(mask.astype(np.uint8) * 255)
        if i % scaled_every:  # a scaled copy, as remove.bg returned it for a large photo
            m = m.resize((round(w * 0.6), round(h * 0.6)), Image.Resampling.NEAREST)
        if odd_mask and i == n - 1:
            m = m.crop((0, 0, m.width * 3 // 4, m.height))
        m.save(mask_dir / f"{2 * i + 1}.png")
    return root


def make_mads(root: str | Path, n: int = 6, size=(48, 64), seed: int = 0) -> Path:
    """Kaggle full-body MADS layout: ``segmentation_full_body_mads_dataset_1192_img/images/<name>.png`` and
    ``masks/<name>.png`` with the same names (the real frames are 512x384; smaller here), 3-channel 0/255 masks."""
    base = Path(root) / MADS_DIR
    rng = np.random.default_rng(seed)
    (base / "images").mkdir(parents=True, exist_ok=True)
    (base / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img, mask = lesion_2d(rng, *size)
        name = f"{['Kata', 'Jazz', 'Sports', 'Taichi'][i % 4]}_{i:04d}.png"
        Image.fromarray(img).save(base / "images" / name)
        _save_mask(mask, base / "masks" / name, "rgb")
    return Path(root)


def make_kvasir(root: str | Path, n: int = 6, sizes=((60, 72), (48, 64)), seed: int = 0) -> Path:
    """Kvasir-SEG layout: ``Kvasir-SEG/images/<id>.jpg`` + ``Kvasir-SEG/masks/<id>.jpg`` (RGB JPEG masks, so
    their 0/255 carries compression noise) and the ``kavsir_bboxes.json`` the archive ships."""
    base = Path(root) / "Kvasir-SEG"
    rng = np.random.default_rng(seed)
    (base / "images").mkdir(parents=True, exist_ok=True)
    (base / "masks").mkdir(parents=True, exist_ok=True)
    boxes = {}
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        img, mask = lesion_2d(rng, h, w)
        name = "cju" + "".join(rng.choice(list("0123456789abcdefghijklmnopqrstuvwxyz"), 22))
        Image.fromarray(img).save(base / "images" / f"{name}.jpg", quality=90)
        rgb = np.repeat((mask * 255).astype(np.uint8)[..., None], 3, axis=2)
        Image.fromarray(rgb).save(base / "masks" / f"{name}.jpg", quality=75)
        ys, xs = np.nonzero(mask)
        box = {"label": "polyp", "xmin": int(xs.min()), "ymin": int(ys.min()), "xmax": int(xs.max())}
        boxes[name] = {"height": h, "width": w, "bbox": [{**box, "ymax": int(ys.max())}]}
    (base / "kavsir_bboxes.json").write_text(json.dumps(boxes))
    return Path(root)


# ----------------------------------------------------------------------------
# box labels: WIDER FACE, COCO JSON and CSV
# ----------------------------------------------------------------------------


def _boxed_image(rng, size, boxes_xywh) -> np.ndarray:
    """An RGB noise image with a bright rectangle on each box (``x, y, w, h`` in pixels)."""
    img = rng.integers(0, 90, (*size, 3), dtype=np.uint8)
    for x, y, w, h in boxes_xywh:
        img[max(y, 0) : y + h, max(x, 0) : x + w] = 220
    return img


def make_widerface(root: str | Path, n_events: int = 2, per_event: int = 3, size=(48, 64), seed: int = 0) -> Path:
    """WIDER FACE as downloaded: WIDER_{train,val}/images/<event>/<name>.jpg and wider_face_split/*_bbx_gt.txt.

    In each split the first image has 0 faces (a line of zeros follows its count), the second has one face marked
    invalid beside a valid one, and the last has a face that runs past the right edge."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    (root / "wider_face_split").mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        lines, n = [], n_events * per_event
        for i in range(n):
            event = f"{i // per_event}--Event{i // per_event}"
            rel = f"{event}/{i // per_event}_Event_{split}_{i}.jpg"
            faces = [(int(rng.integers(2, 30)), int(rng.integers(2, 20)), 10 + i % 3, 12, 0)]
            if i == 0:
                faces = []
            elif i == 1:
                faces.append((40, 30, 8, 8, 1))  # marked invalid
            elif i == n - 1:
                faces = [(size[1] - 6, 4, 12, 10, 0)]  # 6 of its 12 columns are outside the image
            path = root / f"WIDER_{split}" / "images" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_boxed_image(rng, size, [f[:4] for f in faces if not f[4]])).save(path, quality=95)
            lines += [rel, str(len(faces))] + [f"{x} {y} {w} {h} 0 0 0 {bad} 0 0 " for x, y, w, h, bad in faces]
            lines += ["0 0 0 0 0 0 0 0 0 0 "] if not faces else []
        (root / "wider_face_split" / f"wider_face_{split}_bbx_gt.txt").write_text("\n".join(lines) + "\n")
    return root


def make_box_set(root: str | Path, fmt: str = "csv", n: int = 6, size=(40, 56), seed: int = 0) -> Path:
    """images/case_<i>.png with one lesion box each (the last image has none) and one box file: ``boxes.csv``
    (image,x1,y1,x2,y2) or ``annotations/instances.json`` (COCO; a second category, ``ruler``, on even images)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows, images, anns = ["image,x1,y1,x2,y2"], [], []
    for i in range(n):
        name = f"case_{i}.png"
        box = (int(rng.integers(1, 20)), int(rng.integers(1, 15)), int(rng.integers(6, 20)), int(rng.integers(6, 16)))
        boxes = [box] if i < n - 1 else []
        Image.fromarray(_boxed_image(rng, size, boxes)).save(root / "images" / name)
        images.append({"id": i + 1, "file_name": name, "width": size[1], "height": size[0]})
        for x, y, w, h in boxes:
            rows.append(f"{name},{x},{y},{x + w},{y + h}")
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1, "bbox": [x, y, w, h]})
        if i % 2 == 0 and i < n - 1:
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 2, "bbox": [0, 0, 3, 3]})
    if fmt == "csv":
        (root / "boxes.csv").write_text("\n".join(rows) + "\n")
    else:
        cats = [{"id": 1, "name": "lesion"}, {"id": 2, "name": "ruler"}]
        (root / "annotations").mkdir(exist_ok=True)
        coco = {"images": images, "annotations": anns, "categories": cats}
        (root / "annotations" / "instances.json").write_text(json.dumps(coco, indent=1))
    return root


# ----------------------------------------------------------------------------
# ISBI 2012 membranes (the Keras U-Net's data/membrane)
# ----------------------------------------------------------------------------


def membrane_section(rng: np.random.Generator, h: int, w: int, n_cells: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """An EM-like grey section ``(H, W)`` uint8 and its label ``(H, W)`` uint8: 255 inside the cells (the regions of
    a random Voronoi diagram), 0 on the one-to-two pixel membranes between them, as the ISBI 2012 labels are."""
    seeds = rng.uniform([0, 0], [h, w], size=(n_cells, 2))
    yy, xx = np.mgrid[0:h, 0:w]
    cell = np.argmin((yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2, axis=-1)
    edge = np.zeros((h, w), bool)
    edge[:, 1:] |= cell[:, 1:] != cell[:, :-1]
    edge[1:, :] |= cell[1:, :] != cell[:-1, :]
    label = np.where(edge, 0, 255).astype(np.uint8)
    img = 170 + 25 * _smooth_noise(rng, (h, w), 8) - 120 * edge + rng.normal(0, 8, (h, w))
    return np.clip(img, 0, 255).astype(np.uint8), label


def make_membrane(root: str | Path, n: int = 6, n_test: int = 2, size=(64, 64), seed: int = 0) -> Path:
    """train/image/<n>.png + train/label/<n>.png (grey, label 255 = cell interior, 0 = membrane) and unlabelled
    test/<n>.png, numbered from 0 without padding as the Keras U-Net's data/membrane is."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for sub in ("train/image", "train/label", "test"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n + n_test):
        img, label = membrane_section(rng, *size)
        if i < n:
            Image.fromarray(img).save(root / "train" / "image" / f"{i}.png")
            Image.fromarray(label).save(root / "train" / "label" / f"{i}.png")
        else:
            Image.fromarray(img).save(root / "test" / f"{i - n}.png")
    return root


# ----------------------------------------------------------------------------
# nuclei: Data Science Bowl 2018 (one mask file per nucleus), instance label maps
# ----------------------------------------------------------------------------


def _nuclei_scene(rng: np.random.Generator, h: int, w: int, n: int, overlap: bool) -> tuple[np.ndarray, list]:
    """A fluorescence-like RGBA image ``(H, W, 4)`` uint8 (alpha 255, as the Data Science Bowl's) and one bool
    mask per nucleus (discs of radius 3-6). With ``overlap`` the second disc is a small one over the first's rim."""
    yy, xx = np.mgrid[0:h, 0:w]
    discs = []
    for k in range(n):
        r = rng.uniform(3, 6)
        cy, cx = rng.uniform(r, h - r), rng.uniform(r, w - r)
        if overlap and k == 1:  # a small nucleus on the rim of the first: both masks claim the shared pixels
            r, (cy, cx) = 2.5, (discs[0][0] + discs[0][2] * 0.6, discs[0][1])
        discs.append((cy, cx, r))
    masks = [(yy - cy) ** 2 + (xx - cx) ** 2 <= r**2 for cy, cx, r in discs]
    signal = np.clip(20 + 180 * np.any(masks, axis=0) + rng.normal(0, 6, (h, w)), 0, 255).astype(np.uint8)
    rgba = np.stack([signal // 3, signal, signal // 2, np.full((h, w), 255, np.uint8)], axis=-1)
    return rgba, masks


def make_nuclei(
    root: str | Path, n: int = 6, sizes=((40, 48), (56, 40), (48, 48)), n_test: int = 1, seed: int = 0
) -> Path:
    """``stage1_train/<id>/images/<id>.png`` (RGBA, sizes in turn) with ``masks/<mask id>.png``, one 0/255 file per
    nucleus (3 to 7 per image; the first image's second nucleus overlaps its first), and ``stage1_test/<id>/images``
    without masks, as the Data Science Bowl 2018 stage-1 archives unpack. Ids are hex digests like the real ones."""
    import hashlib

    root = Path(root)
    rng = np.random.default_rng(seed)

    def hex_id(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    for i in range(n + n_test):
        h, w = sizes[i % len(sizes)]
        rgba, masks = _nuclei_scene(rng, h, w, 3 + i % 5, overlap=i == 0)
        case = hex_id(f"case{i}")
        folder = root / ("stage1_train" if i < n else "stage1_test") / case
        (folder / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgba).save(folder / "images" / f"{case}.png")
        if i >= n:
            continue  # test cases ship no masks
        (folder / "masks").mkdir()
        for k, m in enumerate(masks):
            Image.fromarray((m * 255).astype(np.uint8)).save(folder / "masks" / f"{hex_id(f'{case}-{k}')}.png")
    return root


def make_instance_folder(root: str | Path, n: int = 4, size=(40, 48), seed: int = 0) -> Path:
    """``images/<name>.png`` (RGB) with ``instances/<name>.png|tif``: one label map per image, 0 background and one
    value per nucleus (values with gaps; 16-bit PNG and 32-bit TIFF in turn), where overlaps are already settled."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "instances").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        rgba, masks = _nuclei_scene(rng, *size, 3 + i % 3, overlap=False)
        label = np.zeros(size, np.int32)
        for k, m in enumerate(masks):
            label[m] = 10 * (k + 1)  # gaps in the values: the recipe renumbers 1..N
        Image.fromarray(rgba[..., :3]).save(root / "images" / f"cells_{i}.png")
        if i % 2:
            Image.fromarray(label).save(root / "instances" / f"cells_{i}.tif")
        else:
            Image.fromarray(label.astype(np.uint16)).save(root / "instances" / f"cells_{i}.png")
    return root


def make_coco_instances(root: str | Path, n: int = 3, size=(40, 48), seed: int = 0) -> Path:
    """``images/cells_<i>.png`` with ``annotations/instances.json``: each nucleus as COCO annotates it, in turn a
    polygon (a 24-gon around the disc), an uncompressed RLE and a compressed RLE; plus one crowd region and one
    box-only annotation per image, which the reader leaves out. Returns ``root``; the discs drawn are in
    ``annotations/truth_<i>.png`` (uint16 ids in annotation order) for tests to compare with."""
    import json

    from pycocotools import mask as coco_mask

    root = Path(root)
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i in range(n):
        rgba, masks = _nuclei_scene(rng, *size, 3 + i % 3, overlap=False)
        name = f"cells_{i}.png"
        Image.fromarray(rgba[..., :3]).save(root / "images" / name)
        images.append({"id": i + 1, "file_name": name, "height": size[0], "width": size[1]})
        truth = np.zeros(size, np.uint16)
        for k, m in enumerate(masks):
            truth[m & (truth == 0)] = k + 1
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                         "segmentation": _coco_segmentation(m, k % 3, coco_mask)})  # fmt: skip
        Image.fromarray(truth).save(root / "annotations" / f"truth_{i}.png")
        crowd = coco_mask.encode(
            np.asfortranarray(np.pad(np.ones((3, 3), np.uint8), [(0, size[0] - 3), (0, size[1] - 3)]))
        )
        anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 1,
                     "segmentation": {"size": crowd["size"], "counts": crowd["counts"].decode()}})  # fmt: skip
        anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0, "bbox": [0, 0, 4, 4]})
    coco = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "nucleus"}]}
    (root / "annotations" / "instances.json").write_text(json.dumps(coco))
    return root


def _coco_segmentation(mask: np.ndarray, kind: int, coco_mask):
    """A bool mask as COCO stores it: 0 a polygon traced round its outline, 1 an uncompressed RLE (counts a list,
    column-major runs starting with background), 2 a compressed RLE (counts a string)."""
    if kind == 0:
        ys, xs = np.nonzero(mask)
        cy, cx = ys.mean(), xs.mean()
        r = np.sqrt(mask.sum() / np.pi)
        t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        # pixel centres are at integer + 0.5 in COCO's polygon coordinates
        return [[round(float(v), 2) for xy in zip(cx + 0.5 + r * np.cos(t), cy + 0.5 + r * np.sin(t)) for v in xy]]
    if kind == 1:
        flat = mask.ravel(order="F")  # COCO runs go down the columns
        changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
        runs = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
        return {"size": list(mask.shape), "counts": ([0] if flat[0] else []) + [int(r) for r in runs]}
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode()}
