"""COCO instance annotations (polygons and run-length encodings) as one instance label map per image.

What annotation tools export (CVAT, Label Studio, QuPath, napari plug-ins, Roboflow, pycocotools itself)::

    <data_dir>/images/<file_name>                 (or <data_dir>/<file_name>)
    <data_dir>/annotations/<any>.json             (or <data_dir>/<any>.json, or data.options.coco: PATH)

The JSON has ``images`` (``id``, ``file_name``, optionally ``width``, ``height``) and ``annotations``
(``image_id``, ``segmentation``, ``category_id``, ``iscrowd``). A ``segmentation`` is a list of polygons
(``[x1, y1, x2, y2, ...]`` in pixel coordinates) or a run-length encoding, uncompressed (``counts`` a list) or
compressed (``counts`` a string); pycocotools decodes all three, exactly as COCO's own evaluation does. Each
annotation becomes one object; where objects overlap the smallest keeps the pixel (the nuclei recipe's rule).

Left out, and counted: crowd annotations (``iscrowd: 1`` marks a region of many objects, not one), annotations
without a ``segmentation`` (boxes only: the ``boxes`` recipe reads those), and, with ``data.options.categories``,
the other categories. An image listed in the JSON but not on disk, or of another size than the JSON records, is a
problem line naming it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medseg.data.boxes import coco_category_ids
from medseg.errors import fail


@dataclass
class CocoMasks:
    """One COCO file's images and their instance annotations, grouped per image."""

    path: Path
    images: dict[int, dict] = field(default_factory=dict)  # id -> the image entry
    annotations: dict[int, list[dict]] = field(default_factory=dict)  # image id -> its kept annotations
    left_out: dict[str, int] = field(default_factory=dict)  # why -> how many


def is_instance_json(path: Path) -> bool:
    """Whether a JSON file is a COCO file with at least one segmentation (a box-only file is not)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    if not isinstance(data, dict):  # a list (Label Studio's JSON-min, ...) is not COCO
        return False
    anns = data.get("annotations")
    return (
        isinstance(data.get("images"), list)
        and isinstance(anns, list)
        and any(isinstance(a, dict) and a.get("segmentation") for a in anns)
    )


def find_coco_json(data_dir: Path, options: dict) -> Path | None:
    """``data.options.coco`` (relative to ``data_dir``), else the first COCO instance JSON in ``annotations/`` or
    in ``data_dir`` itself (name order)."""
    if options.get("coco"):
        p = Path(options["coco"])
        p = p if p.is_absolute() else data_dir / p
        if not p.is_file():
            raise fail(p, "not found (data.options.coco)", "give the COCO JSON's path, relative to --data-dir")
        return p
    for folder in (data_dir / "annotations", data_dir):
        if folder.is_dir():
            for p in sorted(folder.glob("*.json")):
                if is_instance_json(p):
                    return p
    return None


def read_coco_masks(path: Path, categories: list[str] | None = None) -> CocoMasks:
    """The images and kept annotations of a COCO JSON (``categories``: keep only these names)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise fail(f"{path}, line {exc.lineno}", f"is not valid JSON ({exc.msg})", "repair the JSON") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(path, f"cannot be read ({exc})", "give a COCO JSON file in UTF-8") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise fail(path, "is not a COCO object with an 'images' list", "export the annotations as COCO JSON")
    out = CocoMasks(path)
    for n, im in enumerate(data.get("images") or []):
        if not isinstance(im, dict) or "id" not in im or not im.get("file_name"):
            raise fail(path, f"images[{n}] lacks 'id' or 'file_name'", "give every image an id and a file_name")
        out.images[im["id"]] = im
        out.annotations[im["id"]] = []
    keep = coco_category_ids(path, data.get("categories") or [], categories, "data.options.categories")
    for n, ann in enumerate(data.get("annotations") or []):
        why = _left_out(path, n, ann, out.images, keep)
        if why:
            out.left_out[why] = out.left_out.get(why, 0) + 1
        else:
            out.annotations[ann["image_id"]].append(ann)
    return out


def _left_out(path: Path, n: int, ann, images: dict, keep: set | None) -> str | None:
    if not isinstance(ann, dict) or ann.get("image_id") not in images:
        raise fail(
            path,
            f"annotations[{n}] names image_id {ann.get('image_id') if isinstance(ann, dict) else None!r}, which is "
            "not in 'images'",
            "list the image in 'images' or remove the annotation",
        )
    if ann.get("iscrowd"):
        return "crowd regions"
    if not ann.get("segmentation"):
        return "annotations without a segmentation"
    if keep is not None and ann.get("category_id") not in keep:
        return "annotations of other categories"
    return None


def annotation_mask(ann: dict, hw: tuple[int, int], where: Path) -> np.ndarray:
    """One annotation's ``segmentation`` as an ``(H, W)`` bool mask (polygons, or RLE of either kind)."""
    from pycocotools import mask as coco_mask

    h, w = hw
    seg = ann["segmentation"]
    try:
        if isinstance(seg, list):  # polygons: each a flat [x1, y1, x2, y2, ...] list of at least 3 points
            polygons = [p for p in seg if isinstance(p, list) and len(p) >= 6]
            if not polygons:
                raise ValueError("no polygon has 3 points")
            rle = coco_mask.merge(coco_mask.frPyObjects(polygons, h, w))
        elif isinstance(seg, dict) and isinstance(seg.get("counts"), list):  # uncompressed RLE
            rle = coco_mask.frPyObjects(seg, *seg.get("size", [h, w]))
        elif isinstance(seg, dict) and isinstance(seg.get("counts"), (str, bytes)):  # compressed RLE
            counts = seg["counts"].encode() if isinstance(seg["counts"], str) else seg["counts"]
            rle = {"size": list(seg.get("size", [h, w])), "counts": counts}
        else:
            raise TypeError("neither polygons nor a run-length encoding")
        mask = coco_mask.decode(rle)
    except (ValueError, TypeError, KeyError) as exc:
        raise fail(
            where, f"annotation {ann.get('id', '?')} has an unreadable segmentation ({exc})", "re-export it"
        ) from None
    if mask.shape[:2] != (h, w):
        raise fail(
            where,
            f"annotation {ann.get('id', '?')} is {mask.shape[0]}x{mask.shape[1]} but its image is {h}x{w}",
            "re-export the annotations at the image's size",
        )
    return mask.astype(bool)
