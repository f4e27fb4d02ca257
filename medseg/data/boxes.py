"""Bounding boxes as weak labels: box annotation files read, and a mask drawn from each image's boxes.

Three formats are read, told apart by their content:

* the WIDER FACE text format (``wider_face_train_bbx_gt.txt``): an image path line (relative to
  ``WIDER_train/images/``), a line with the number of faces, then ``x y w h blur expression illumination invalid
  occlusion pose`` per face; faces marked invalid are skipped, and an image with 0 faces is followed by one line of
  zeros;
* COCO-style JSON: ``images`` (``id``, ``file_name``, ``width``, ``height``) and ``annotations`` (``image_id``,
  ``bbox`` = ``[x, y, w, h]``, ``category_id``), optionally only the ``categories`` named in
  ``data.options.box_categories``;
* a CSV with the header ``image,x1,y1,x2,y2`` and one row per box (``image`` is a file name or a path relative to
  the data directory).

Coordinates are pixels in the image as viewers show it (EXIF orientation applied), origin at the top-left corner
of the top-left pixel: a box covers ``x1 <= x < x2`` (``x2 = x + w``), so ``0,0,4,6`` is 4 pixel columns and 6 rows.
A pixel is inside when its centre is. A mask is the union of the image's boxes, filled or as the ellipse inscribed
in each (``data.options.box_shape: box|ellipse``), clipped to the image and cached (:mod:`medseg.data.derived`).

``data.options.boxes: PATH`` turns any 2D recipe into one that trains on boxes: :func:`apply_boxes`, run by
:func:`medseg.data.base.load_samples`, replaces each sample's label with its box mask. The ``widerface`` and ``boxes``
recipes (:mod:`medseg.data.widerface`, :mod:`medseg.data.boxfolder`) draw their labels with :func:`with_box_masks`.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medseg.data.keys import IMAGE, LABEL
from medseg.errors import MedsegError, fail
from medseg.io import IMAGE_2D_EXTS, file_ext

SHAPES = ("box", "ellipse")
CSV_COLUMNS = ("image", "x1", "y1", "x2", "y2")
WIDER_FIELDS = 10  # x y w h blur expression illumination invalid occlusion pose
WIDER_INVALID = 7


@dataclass(frozen=True)
class Box:
    """One box in pixels: ``x1 <= x < x2``, ``y1 <= y < y2``."""

    x1: float
    y1: float
    x2: float
    y2: float

    @classmethod
    def from_xywh(cls, x: float, y: float, w: float, h: float) -> Box:
        return cls(float(x), float(y), float(x) + float(w), float(y) + float(h))

    def as_list(self) -> list[float]:
        return [self.x1, self.y1, self.x2, self.y2]


@dataclass
class BoxFile:
    """The boxes of one annotation file: ``{image key: boxes}`` (the key is the path the file names the image
    by), the image sizes the file records (COCO), and how many boxes it left out (WIDER's invalid faces)."""

    path: Path
    format: str
    boxes: dict[str, list[Box]]
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # key -> (h, w)
    skipped: int = 0


# -- readers --------------------------------------------------------------------------------------------------------


def read_boxes(path: str | Path, categories: list[str] | None = None) -> BoxFile:
    """Read a WIDER FACE text file, a COCO JSON or an ``image,x1,y1,x2,y2`` CSV, told apart by content."""
    path = Path(path)
    if not path.is_file():
        raise fail(path, "box annotation file not found", "check data.options.boxes")
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    head = text.lstrip()[:1]
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    if head in ("{", "[") or file_ext(path) == ".json":
        return read_coco(path, text, categories)
    if "," in first or file_ext(path) == ".csv":
        return read_csv_boxes(path, text)
    return read_wider(path, text)


def _number_list(line: str) -> list[float] | None:
    try:
        return [float(v) for v in line.split()]
    except ValueError:
        return None


def read_wider(path: Path, text: str | None = None) -> BoxFile:
    """The WIDER FACE ``*_bbx_gt.txt`` format; faces marked invalid are left out (counted in ``skipped``)."""
    lines = (text if text is not None else path.read_text(encoding="utf-8", errors="replace")).splitlines()
    boxes: dict[str, list[Box]] = {}
    skipped, i = 0, 0
    while i < len(lines):
        name = lines[i].strip()
        i += 1
        if not name:
            continue
        if _number_list(name) is not None:
            raise fail(
                f"{path}, line {i}",
                f"expected an image path, got numbers {name[:40]!r}",
                "each image is a path line, a line with its face count, then one line per face",
            )
        count = _wider_count(path, lines, i)
        i += 1
        faces, i = _wider_faces(path, lines, i, count)
        boxes.setdefault(name, []).extend(Box.from_xywh(*f[:4]) for f in faces if not f[WIDER_INVALID])
        skipped += sum(1 for f in faces if f[WIDER_INVALID])
    return BoxFile(path, "wider", boxes, skipped=skipped)


def _wider_count(path: Path, lines: list[str], i: int) -> int:
    text = lines[i].strip() if i < len(lines) else ""
    if not text.isdigit():
        raise fail(
            f"{path}, line {i + 1}",
            f"expected the number of faces of {lines[i - 1].strip()!r}, got {text[:40]!r}",
            "put a line with the face count (0 or more) after each image path",
        )
    return int(text)


def _wider_faces(path: Path, lines: list[str], i: int, count: int) -> tuple[list[list[float]], int]:
    """``count`` face lines from line ``i`` (an image with 0 faces has one line of zeros, skipped)."""
    if count == 0:
        zeros = _number_list(lines[i]) if i < len(lines) else None
        return [], i + 1 if zeros is not None and not any(zeros) else i
    faces = []
    for j in range(i, i + count):
        values = _number_list(lines[j]) if j < len(lines) else None
        if values is None or len(values) != WIDER_FIELDS or values[2] < 0 or values[3] < 0:
            got = repr(lines[j].strip()[:60]) if j < len(lines) else "the end of the file"
            raise fail(
                f"{path}, line {j + 1}",
                f"expected face {j - i + 1} of {count} as 10 numbers 'x y w h blur expression illumination "
                f"invalid occlusion pose' (w, h >= 0), got {got}",
                "give each face one line of 10 numbers, as many lines as the count above says",
            )
        faces.append(values)
    return faces, i + count


def read_csv_boxes(path: Path, text: str | None = None) -> BoxFile:
    """An ``image,x1,y1,x2,y2`` CSV (header required, one row per box)."""
    text = text if text is not None else path.read_text(encoding="utf-8-sig", errors="replace")
    rows = list(csv.reader(text.splitlines()))
    header = [c.strip().lower() for c in (rows[0] if rows else [])]
    if not set(CSV_COLUMNS) <= set(header):
        raise fail(
            f"{path}, line 1",
            f"header {','.join(header)[:80]!r} lacks {', '.join(c for c in CSV_COLUMNS if c not in header)}",
            "start the file with the header line image,x1,y1,x2,y2",
        )
    col = {c: header.index(c) for c in CSV_COLUMNS}
    boxes: dict[str, list[Box]] = {}
    for n, row in enumerate(rows[1:], 2):
        if not any(c.strip() for c in row):
            continue
        image, coords = _csv_row(path, n, row, col)
        boxes.setdefault(image, []).append(Box(*coords))
    return BoxFile(path, "csv", boxes)


def _csv_row(path: Path, n: int, row: list[str], col: dict[str, int]) -> tuple[str, list[float]]:
    try:
        image = row[col["image"]].strip()
        coords = [float(row[col[c]]) for c in CSV_COLUMNS[1:]]
    except (IndexError, ValueError):
        raise fail(
            f"{path}, line {n}",
            f"expected image,x1,y1,x2,y2 with numbers for the corners, got {','.join(row)[:80]!r}",
            "write one box per row: the image's file name and its corners in pixels",
        ) from None
    if not image or coords[2] < coords[0] or coords[3] < coords[1]:
        raise fail(
            f"{path}, line {n}",
            f"box {coords} of {image or 'no image'!r} has x2 < x1 or y2 < y1 (or no image name)",
            "give the top-left corner as x1,y1 and the bottom-right one as x2,y2",
        )
    return image, coords


def read_coco(path: Path, text: str | None = None, categories: list[str] | None = None) -> BoxFile:
    """A COCO-style JSON: every listed image (with no boxes when it has no annotation), optionally only the boxes
    of the ``categories`` named."""
    try:
        data = json.loads(text if text is not None else path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise fail(f"{path}, line {exc.lineno}", f"is not valid JSON ({exc.msg})", "repair the JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise fail(path, "has no 'images' list", "give COCO JSON with 'images' and 'annotations' lists")
    names, sizes = _coco_images(path, data["images"])
    keep = coco_category_ids(path, data.get("categories") or [], categories)
    boxes: dict[str, list[Box]] = {name: [] for name in names.values()}
    for n, ann in enumerate(data.get("annotations") or []):
        image_id, bbox = _coco_annotation(path, n, ann, names)
        if keep is None or ann.get("category_id") in keep:
            boxes[names[image_id]].append(Box.from_xywh(*bbox))
    return BoxFile(path, "coco", boxes, sizes)


def _coco_images(path: Path, images: list) -> tuple[dict, dict[str, tuple[int, int]]]:
    names, sizes = {}, {}
    for n, im in enumerate(images):
        if not isinstance(im, dict) or "id" not in im or not im.get("file_name"):
            raise fail(path, f"images[{n}] lacks 'id' or 'file_name'", "give every image an id and a file_name")
        names[im["id"]] = str(im["file_name"])
        if isinstance(im.get("width"), (int, float)) and isinstance(im.get("height"), (int, float)):
            sizes[str(im["file_name"])] = (int(im["height"]), int(im["width"]))
    return names, sizes


def _coco_annotation(path: Path, n: int, ann, names: dict) -> tuple:
    bbox = ann.get("bbox") if isinstance(ann, dict) else None
    ok = isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)
    if not ok or bbox[2] < 0 or bbox[3] < 0:
        raise fail(
            path,
            f"annotations[{n}] has bbox {bbox!r}",
            "give every annotation a bbox of 4 numbers [x, y, width, height], width and height >= 0",
        )
    if ann.get("image_id") not in names:
        raise fail(
            path,
            f"annotations[{n}] names image_id {ann.get('image_id')!r}, which is not in 'images'",
            "list the image in 'images' or remove the annotation",
        )
    return ann["image_id"], bbox


def coco_category_ids(
    path: Path, listed: list, wanted: list[str] | None, option: str = "data.options.box_categories"
) -> set | None:
    """The category ids of the ``wanted`` names (None: every category); an unknown name is refused, naming the
    config ``option`` that asked for it."""
    if not wanted:
        return None
    by_name = {str(c.get("name")): c.get("id") for c in listed if isinstance(c, dict)}
    unknown = [w for w in wanted if w not in by_name]
    if unknown:
        raise fail(path, f"has no category named {unknown[0]!r}", f"set {option} to some of {sorted(by_name)[:10]}")
    return {by_name[w] for w in wanted}


# -- drawing --------------------------------------------------------------------------------------------------------


def _covered(lo: float, hi: float, n: int) -> tuple[int, int]:
    """The pixel indices ``[a, b)`` along one axis whose centres lie in ``[lo, hi)``, clipped to ``0..n``."""
    a = int(np.ceil(lo - 0.5))
    b = int(np.ceil(hi - 0.5))
    return max(a, 0), min(max(b, 0), n)


def _pixel_ranges(b: Box, hw: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """``(r0, r1, c0, c1)``: the pixels a box covers in an ``(h, w)`` image; None when it covers none."""
    (c0, c1), (r0, r1) = _covered(b.x1, b.x2, hw[1]), _covered(b.y1, b.y2, hw[0])
    return (r0, r1, c0, c1) if c1 > c0 and r1 > r0 else None


def draw_boxes(boxes: list[Box], hw: tuple[int, int], shape: str = "box") -> np.ndarray:
    """A ``(h, w)`` uint8 mask, 255 inside any box (filled, or the ellipse inscribed in it), clipped to the image."""
    mask = np.zeros(hw, np.uint8)
    for b in boxes:
        px = _pixel_ranges(b, hw)
        if px is None:
            continue
        r0, r1, c0, c1 = px
        if shape == "ellipse":
            mask[r0:r1, c0:c1] |= _ellipse(b, r0, r1, c0, c1)
        else:
            mask[r0:r1, c0:c1] = 255
    return mask


def _ellipse(b: Box, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    """The inscribed ellipse of ``b`` on the pixels ``[r0, r1) x [c0, c1)``, tested at pixel centres."""
    cy, cx = (b.y1 + b.y2) / 2, (b.x1 + b.x2) / 2
    ry, rx = (b.y2 - b.y1) / 2, (b.x2 - b.x1) / 2
    yy = (np.arange(r0, r1) + 0.5 - cy)[:, None] / ry
    xx = (np.arange(c0, c1) + 0.5 - cx)[None, :] / rx
    return np.where(yy**2 + xx**2 <= 1.0, 255, 0).astype(np.uint8)


def outside(boxes: list[Box], hw: tuple[int, int]) -> int:
    """How many of ``boxes`` lie wholly outside an image of size ``hw`` (drawn in another frame, or another image's)."""
    return sum(b.x2 <= 0 or b.y2 <= 0 or b.x1 >= hw[1] or b.y1 >= hw[0] for b in boxes)


def box_mask(annotation: Path, image: Path, boxes: list[Box], shape: str) -> Path:
    """The cached mask of ``boxes`` at ``image``'s size as viewers show it."""
    from medseg.data.derived import derived_mask, image_sizes

    def build() -> np.ndarray:
        return draw_boxes(boxes, image_sizes(image)[0], shape)

    params = {"boxes": [b.as_list() for b in boxes], "shape": shape}
    return derived_mask("boxes", [annotation, image], params, build)


# -- matching images to the file's names ----------------------------------------------------------------------------


def _parts(name: str) -> tuple[str, ...]:
    return tuple(p.lower() for p in Path(name.replace("\\", "/")).parts if p not in ("", "."))


def match_images(images: list[Path], keys: list[str], where: Path) -> dict[Path, list[str]]:
    """``{image: keys}``: the file's names for each image, every name whose path parts end the image's path (a bare
    file name matches by name, ``event/name.jpg`` by folder and name). A name that fits two images is refused: it
    cannot say which."""
    by_name: dict[str, list[str]] = {}
    for k in keys:
        if _parts(k):
            by_name.setdefault(_parts(k)[-1], []).append(k)
    found: dict[Path, list[str]] = {}
    claimed: dict[str, Path] = {}
    for img in images:
        parts = tuple(p.lower() for p in img.parts)
        for key in by_name.get(parts[-1], []):
            if parts[-len(_parts(key)) :] != _parts(key):
                continue
            if key in claimed:
                raise fail(
                    where,
                    f"names {key!r}, which fits two images ({claimed[key]} and {img})",
                    "name images by their path relative to the data directory",
                )
            claimed[key] = img
            found.setdefault(img, []).append(key)
    return found


# -- the data.options.boxes step ------------------------------------------------------------------------------------


def box_options(options: dict, where: str) -> tuple[str, list[str] | None]:
    """``(box_shape, box_categories)`` of ``data.options``, checked."""
    shape = str(options.get("box_shape", "box")).lower()
    if shape not in SHAPES:
        raise MedsegError(f"{where}: data.options.box_shape={shape!r}; fix: use one of {list(SHAPES)}")
    cats = options.get("box_categories")
    cats = [cats] if isinstance(cats, str) else cats
    return shape, [str(c) for c in cats] if cats else None


def resolve_box_file(value, data_dir: Path) -> Path:
    """``data.options.boxes`` as a path: absolute, else relative to the working folder or the data directory."""
    path = Path(str(value)).expanduser()
    if path.is_absolute() or path.exists() or not (data_dir / path).exists():
        return path
    return data_dir / path


def _is_2d_image(sample: dict) -> bool:
    image = sample.get(IMAGE)
    return isinstance(image, (str, Path)) and file_ext(image) in IMAGE_2D_EXTS


def apply_boxes(samples: list[dict], options: dict, data_dir: Path, where: str) -> tuple[list[dict], list[str]]:
    """``data.options.boxes``: every sample's label replaced by the mask of its boxes (``label_source`` names the
    box file); returns the samples and warnings counting images without a box, and boxes the recipe has no image
    for. Without the option the samples are returned as they are."""
    if not options.get("boxes"):
        return samples, []
    shape, categories = box_options(options, where)
    not_2d = [s for s in samples if not _is_2d_image(s)]
    if not_2d:
        raise MedsegError(
            f"{where}: data.options.boxes draws 2D masks, but case {not_2d[0]['case_id']} is not one 2D image; "
            "fix: use box labels with a 2D recipe (ph2, folder, lgg, ...)"
        )
    found = read_boxes(resolve_box_file(options["boxes"], data_dir), categories)
    return with_box_masks(samples, found, shape)


def with_box_masks(samples: list[dict], found: BoxFile, shape: str) -> tuple[list[dict], list[str]]:
    """The samples with their labels drawn from ``found``'s boxes, and the warnings that say what did not fit."""
    from medseg.data.derived import image_sizes

    matched = match_images([Path(s[IMAGE]) for s in samples], list(found.boxes), found.path)
    out, empty, off_image, sized = [], [], 0, []
    for s in samples:
        image = Path(s[IMAGE])
        keys = matched.get(image, [])
        boxes = [b for k in keys for b in found.boxes[k]]
        hw = image_sizes(image)[0]
        if not boxes:
            empty.append(s["case_id"])
        off_image += outside(boxes, hw)
        recorded = [found.sizes[k] for k in keys if k in found.sizes and found.sizes[k] != hw]
        if recorded:
            sized.append((s["case_id"], recorded[0], hw))
        label = box_mask(found.path, image, boxes, shape)
        out.append({**s, LABEL: str(label), "label_source": str(found.path)})
    unused = sorted(set(found.boxes) - {k for keys in matched.values() for k in keys})
    return out, _box_warnings(found, len(samples), empty, unused, off_image, sized)


def _box_warnings(found: BoxFile, n: int, empty: list[str], unused: list[str], off: int, sized: list) -> list[str]:
    src, out = found.path, []
    if empty:
        out.append(
            f"{src}: {len(empty)} of {n} images {'has' if len(empty) == 1 else 'have'} no box "
            f"(e.g. {empty[0]}): {'its mask is' if len(empty) == 1 else 'their masks are'} empty, trained as "
            "background only"
        )
    with_boxes = [k for k in unused if found.boxes[k]]
    if with_boxes:
        out.append(
            f"{src}: {_count(len(with_boxes), 'image')} named there not among the {n} cases the recipe found "
            f"(e.g. {with_boxes[0]}): their boxes are not used"
        )
    if off:
        its = "its" if off == 1 else "their"
        out.append(f"{src}: {_count(off, 'box', 'boxes')} wholly outside {its} image, drawn as nothing")
    if sized:
        case, (fh, fw), (ih, iw) = sized[0]
        out.append(
            f"{src}: {_count(len(sized), 'image')} recorded at another size than the file on disk (e.g. {case}: "
            f"{fw}x{fh} recorded, {iw}x{ih} on disk): boxes are drawn in the file's pixels as given"
        )
    if found.skipped:
        out.append(f"{src}: {_count(found.skipped, 'face')} marked invalid left out")
    return out


def _count(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else plural or word + 's'}"
