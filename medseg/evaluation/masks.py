"""Mask files as evaluation reads them: pairing predictions with ground truth by case name, and reading a mask
file (2D image or volume) as a class map."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg.data.base import mask_stem
from medseg.errors import fail
from medseg.io import IMAGE_2D_EXTS, VOLUME_EXTS, file_ext, read_image_2d, read_volume, strip_ext


def case_key(path: str | Path) -> str:
    """The case name of a mask or image file: extension and ``_seg``/``_mask``/``_label`` suffixes dropped."""
    return mask_stem(strip_ext(path))


def mask_files(folder: Path) -> list[Path]:
    """The image and volume files under ``folder``, sorted; hidden files and probability maps left out."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and file_ext(p) in VOLUME_EXTS + IMAGE_2D_EXTS
        and not p.name.startswith(".")
        and "_prob" not in p.name
    )


def pair_cases(pred_dir: str | Path, gt_dir: str | Path) -> tuple[list[tuple[str, Path, Path]], list[str], list[str]]:
    """Return ``(pairs, predictions_without_gt, gt_without_prediction)``."""
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    for d, what in ((pred_dir, "--pred"), (gt_dir, "--gt")):
        if not d.is_dir():
            raise fail(d, "is not a folder", f"pass {what} as a folder of masks")
    preds = {case_key(p): p for p in mask_files(pred_dir)}
    gts = {case_key(p): p for p in mask_files(gt_dir)}
    if not preds:
        raise fail(pred_dir, "holds no mask files", "point --pred at the folder medseg infer wrote")
    pairs = [(k, preds[k], gts[k]) for k in sorted(preds) if k in gts]
    return pairs, sorted(set(preds) - set(gts)), sorted(set(gts) - set(preds))


def read_label_map(
    path: Path, num_classes: int, values: dict[int, int] | None = None
) -> tuple[np.ndarray, tuple | None, np.ndarray | None]:
    """A mask file -> ``(class map, spacing, affine or None)``; binary tasks threshold anything > 0, and ``values``
    (a ground truth's ``data.label_values``, :attr:`medseg.config.Config.value_classes`) maps each value on disk
    to its class. 2D files carry no pixel spacing: theirs is None."""
    from medseg.data.transforms import labels_to_classes, mask_classes_2d

    if file_ext(path) in IMAGE_2D_EXTS:
        return mask_classes_2d(read_image_2d(path, kind="mask"), num_classes, path, values), None, None
    arr, geom = read_volume(path)
    if arr.ndim == 4:
        arr = arr[..., 0]
    classes = labels_to_classes(np.asarray(arr, dtype=np.float32), num_classes, path, values)
    return classes, tuple(geom.spacing), geom.affine


def read_instance_map(path: Path) -> np.ndarray:
    """An instance map file as it is stored (0 background, one integer per object), as int64."""
    return read_instance_file(path)[0]


def read_instance_file(path: Path) -> tuple[np.ndarray, tuple | None, np.ndarray | None]:
    """:func:`read_label_map` for an instance map: ``(ids as int64, spacing, affine or None)``."""
    from medseg.data.loading import instance_ids

    spacing = affine = None
    if file_ext(path) in IMAGE_2D_EXTS:
        raw = read_image_2d(path, kind="mask")
    else:
        raw, geom = read_volume(path)
        raw, spacing, affine = (raw[..., 0] if raw.ndim == 4 else raw), tuple(geom.spacing), geom.affine
    return instance_ids(np.asarray(raw, dtype=np.float64), path).astype(np.int64), spacing, affine


def guess_labels(gt_files: list[Path]) -> list[str]:
    """Label names for ground truth given without them: binary when the masks hold 0/1 or 0/255, else
    ``class_1`` .. ``class_N`` for the largest value found in the first 20 files."""
    values = set()
    for p in gt_files[:20]:
        arr = read_image_2d(p, kind="mask") if file_ext(p) in IMAGE_2D_EXTS else read_volume(p)[0]
        values |= {int(v) for v in np.unique(np.asarray(arr)) if float(v).is_integer()}
    if values <= {0, 1} or values <= {0, 255}:
        return ["background", "lesion"]
    return ["background"] + [f"class_{i}" for i in range(1, max(values) + 1)]
