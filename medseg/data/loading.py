"""Reading a case from disk into arrays, with the checks that turn a bad file into a one-line error.

:class:`LoadImage2Dd` reads 2D images and masks (channels adapted to the model's, masks binarised or checked as
class indices, EXIF orientation applied); :class:`LoadVolumed` reads multi-modal volumes and their label maps
as MetaTensors with their affines. Both write ``image_meta``, the facts about the file that later stages report.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import MapTransform

from medseg.data.keys import IMAGE, LABEL
from medseg.errors import fail
from medseg.io import exif_orientation, read_image_2d, read_volume, slice_neighbours


def channel_plan(stored: int, wanted: int) -> str:
    """What :func:`adapt_channels_2d` does with ``stored`` channels for a model of ``wanted``: ``"keep"``,
    ``"drop_alpha"`` (RGBA to RGB), ``"grey"`` (RGB or RGBA to luminance), ``"repeat"`` (grey copied) or ``"refuse"``."""
    if stored == 4 and wanted in (1, 3):
        return "drop_alpha" if wanted == 3 else "grey"
    if stored == wanted:
        return "keep"
    if stored == 1:
        return "repeat"
    return "grey" if wanted == 1 and stored == 3 else "refuse"


def adapt_channels_2d(
    img: np.ndarray, n_channels: int, path, select: list[int] | None = None, stored: list[str] | None = None
) -> np.ndarray:
    """``(H, W[, C])`` image -> ``(n_channels, H, W)`` float32 (grey is repeated, alpha dropped). With ``select``
    (indices into the ``stored`` channel names, :attr:`Config.channel_select`) those channels are taken instead."""
    arr = img[..., None] if img.ndim == 2 else img
    c = arr.shape[-1]
    if select is not None:
        if stored and c != len(stored):
            raise fail(
                path,
                f"image has {c} channel{'s' if c > 1 else ''} but data.stored_channels names "
                f"{len(stored)} ({', '.join(stored)})",
                "give images with those channels or correct data.stored_channels",
            )
        arr, c = arr[..., list(select)], len(select)
    plan = channel_plan(c, n_channels)
    if plan == "refuse":
        raise fail(
            path,
            f"image has {c} channels but the model expects {n_channels}",
            "convert the image or use a config/checkpoint with matching data.channels",
        )
    if c == 4 and plan != "keep":
        arr = arr[..., :3]
    if plan == "repeat":
        out = np.repeat(arr, n_channels, axis=-1)
    elif plan == "grey":
        out = (arr.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    else:
        out = arr
    return np.ascontiguousarray(np.moveaxis(out.astype(np.float32), -1, 0))


def binarise_mask_2d(mask: np.ndarray) -> np.ndarray:
    """Any 2D mask (1-bit, 0/1, 0/255, 0/any value, 3-channel, palette indices, lossy JPEG) -> ``(H, W)`` uint8 0/1.

    A mask with one foreground value, only small label values (palette indices up to 16) or 16/32-bit integers (an
    instance label map: one value per object) is foreground wherever it is not 0. An 8-bit mask with a range of
    values (JPEG noise, anti-aliased edges) is foreground above half its maximum.
    """
    m = mask.max(axis=-1) if mask.ndim == 3 else mask
    return (m > foreground_above(mask)).astype(np.uint8)


def foreground_above(mask: np.ndarray) -> float:
    """The value above which :func:`binarise_mask_2d` calls a pixel foreground: 0, or half the maximum for an 8-bit
    mask with a range of values (``medseg datasets check`` reports it)."""
    m = mask.max(axis=-1) if mask.ndim == 3 else mask
    if m.dtype == bool or not m.size:
        return 0.0
    top = float(m.max())
    integer = np.issubdtype(m.dtype, np.integer)
    if top <= 0 or len(np.unique(m)) <= 2 or (integer and (top <= 16 or m.dtype.itemsize > 1)):
        return 0.0
    return top / 2


def labels_to_classes(label: np.ndarray, num_classes: int, path, values: dict[int, int] | None = None) -> np.ndarray:
    """Check and convert a label map to integer classes ``0..num_classes-1`` (binary: anything > 0 is 1), or with
    ``values`` (:attr:`medseg.config.Config.value_classes`) map each value on disk to its class."""
    if not np.isfinite(label).all():
        raise fail(path, "label map contains NaN or infinite values", "repair the label file")
    if values is not None:
        return _mapped_classes(np.asarray(label), values, path)
    if num_classes == 2:
        fg_values = np.unique(label[label != 0])
        if fg_values.size > 1:
            shown = [int(v) if float(v).is_integer() else float(v) for v in fg_values[:6]]
            raise fail(
                path,
                f"label values {shown} are outside the configured classes (one foreground class)",
                "list every class in data.labels (or --labels), or merge the values into one with data.label_values "
                "(--label-values for folders)",
            )
        return (label != 0).astype(np.uint8)
    rounded = np.rint(label)
    if np.abs(rounded - label).max(initial=0) > 1e-3:
        raise fail(path, "label map has non-integer values", "save labels as integers (nearest-neighbour resampling)")
    values = np.unique(rounded).astype(int)
    bad = values[(values < 0) | (values >= num_classes)]
    if bad.size:
        raise fail(
            path,
            f"label values {bad.tolist()} are outside the configured classes 0..{num_classes - 1}",
            "fix the label map or list every class in data.labels",
        )
    return rounded.astype(np.uint8)


def mask_classes_2d(mask: np.ndarray, num_classes: int, path, values: dict[int, int] | None = None) -> np.ndarray:
    """A 2D mask as read (grey or RGB) -> its classes: binary tasks threshold it (:func:`binarise_mask_2d`, for
    lossy and 0/255 masks alike), others and any with ``values`` go through :func:`labels_to_classes`."""
    if num_classes == 2 and values is None:
        return binarise_mask_2d(mask)
    return labels_to_classes(mask if mask.ndim == 2 else mask[..., 0], num_classes, path, values)


def _mapped_classes(label: np.ndarray, values: dict[int, int], path) -> np.ndarray:
    """``label``'s values through ``values``; a value it does not list is refused, never guessed."""
    rounded = np.rint(label)
    if np.abs(rounded - label).max(initial=0) > 1e-3:
        raise fail(path, "label map has non-integer values", "save labels as integers (nearest-neighbour resampling)")
    present = np.unique(rounded).astype(np.int64)
    unlisted = [int(v) for v in present if int(v) not in values]
    if unlisted:
        raise fail(
            path,
            f"label values {unlisted[:6]} are not in data.label_values",
            "list each value under a class of data.label_values (under background to drop it)",
        )
    out = np.zeros(label.shape, np.uint8)
    for v in present:
        out[rounded == v] = values[int(v)]
    return out


def instance_ids(label: np.ndarray, path) -> np.ndarray:
    """Check an instance label map (0 background, one non-negative integer per object; a grey map stored with
    equal channels is read as one) and return it as float32, which holds every id up to 2**24 exactly through
    resizing and augmentation (nearest-neighbour)."""
    label = np.asarray(label)
    if label.ndim == 3 and label.shape[-1] <= 4:  # a 2D map saved as RGB(A)
        if not (label[..., :3] == label[..., :1]).all():
            raise fail(path, "instance map has colour channels", "save one channel, one whole value per object")
        label = label[..., 0]
    if not np.isfinite(label).all():
        raise fail(path, "instance map contains NaN or infinite values", "repair the label file")
    rounded = np.rint(label)
    if np.abs(rounded - label).max(initial=0) > 1e-3 or rounded.min(initial=0) < 0:
        raise fail(
            path,
            "instance map has negative or non-integer values",
            "save one non-negative integer per object, 0 for background",
        )
    if float(rounded.max(initial=0)) >= 2**24:
        raise fail(path, "instance map has ids of 2**24 or more", "renumber the objects 1..N")
    return rounded.astype(np.float32)


def check_finite(arr: np.ndarray, path) -> None:
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        n = int((~np.isfinite(arr)).sum())
        raise fail(path, f"contains {n} NaN/infinite voxels", "replace them (e.g. with 0) or exclude the case")


def _channel_stats(img: np.ndarray, axis) -> list[list[float]]:
    return [img.mean(axis=axis).tolist(), img.std(axis=axis).tolist()]


class _LoadPaird(MapTransform):
    """Base of the loaders: knows the expected channel count and number of classes."""

    def __init__(
        self,
        n_channels: int,
        num_classes: int,
        keys=(IMAGE, LABEL),
        allow_missing_keys=True,
        describe: bool = False,
        instances: bool = False,
        values: dict[int, int] | None = None,
    ):
        super().__init__(keys, allow_missing_keys)
        self.n_channels = n_channels
        self.num_classes = num_classes
        self.values = values  # label-map value -> class (data.label_values); None: the values are the classes
        self.describe = describe  # also report what is on disk (channels, label values): `medseg datasets check`
        self.instances = instances  # labels are instance maps: keep each object's id (data.task: instances)

    @staticmethod
    def _raw_values(lab: np.ndarray) -> list:
        uniq = np.unique(np.asarray(lab))[:1000]  # an instance map holds hundreds of object values
        return [int(v) if float(v).is_integer() else float(v) for v in uniq]


class LoadImage2Dd(_LoadPaird):
    """Load a 2D image and optional mask with :func:`medseg.io.read_image_2d` and validate them.

    Writes ``image (C, H, W)`` float32, ``label (1, H, W)`` uint8 classes and
    ``image_meta`` (original size, path, raw per-channel mean/std).
    """

    def __init__(
        self,
        n_channels: int,
        num_classes: int,
        keys=(IMAGE, LABEL),
        allow_missing_keys=True,
        context: int = 0,
        describe: bool = False,
        select: list[int] | None = None,
        stored: list[str] | None = None,
        instances: bool = False,
        values: dict[int, int] | None = None,
    ):
        super().__init__(n_channels, num_classes, keys, allow_missing_keys, describe, instances, values)
        self.context, self.select, self.stored = context, select, stored

    def _read(self, path, upright: bool = True) -> tuple[np.ndarray, int]:
        raw = read_image_2d(path, kind="image", upright=upright)
        check_finite(raw, path)
        return (
            adapt_channels_2d(raw, self.n_channels, path, self.select, self.stored),
            1 if raw.ndim == 2 else raw.shape[2],
        )

    def _stored_pair(self, path, lpath, orientation: int):
        """Image and mask as stored (EXIF orientation ignored), when only that way their sizes agree: a mask made
        from the raw pixel array of a photo that viewers show turned."""
        if self.context or (orientation == 1 and exif_orientation(lpath) == 1):
            return None
        img, raw_channels = self._read(path, upright=False)
        mask = read_image_2d(lpath, kind="mask", upright=False)
        return (img, raw_channels, mask) if mask.shape[:2] == img.shape[1:] else None

    def __call__(self, data):
        d = dict(data)
        path = d[IMAGE]
        img, raw_channels = self._read(path)
        lpath = d.get(LABEL)
        mask = read_image_2d(lpath, kind="mask") if lpath is not None else None
        if mask is not None:
            check_finite(mask, lpath)  # a NaN would make a float mask all background, without a word
        orientation = exif_orientation(path)
        exif = "upright" if orientation != 1 else "none"  # every item has the keys: batches collate
        if mask is not None and mask.shape[:2] != img.shape[1:]:
            stored = self._stored_pair(path, lpath, orientation)
            if stored is not None:
                (img, raw_channels, mask), exif = stored, "as_stored"
        found = 0
        if self.context:  # 2.5D: the neighbouring slices become extra channels, centre first
            paths, found = slice_neighbours(path, self.context)
            parts = [img]
            for q in paths[1:]:
                nb = img if Path(q) == Path(path) else self._read(q)[0]
                if nb.shape != img.shape:
                    raise fail(
                        q,
                        f"neighbouring slice is {nb.shape[1]}x{nb.shape[2]} but {Path(path).name} is "
                        f"{img.shape[1]}x{img.shape[2]}",
                        "re-export the volume's slices at one size",
                    )
                parts.append(nb)
            img = np.concatenate(parts, axis=0)
        d[IMAGE] = img
        d["image_meta"] = {
            "path": str(path),
            "original_size": list(img.shape[1:]),
            "stats": _channel_stats(img, (1, 2)),
            **({"context_found": found} if self.context else {}),
            **({"channels_on_disk": raw_channels} if self.describe else {}),
            "exif": exif,
            "exif_orientation": orientation,
        }
        if mask is not None:
            if self.describe:
                d["label_meta"] = {"values_on_disk": self._raw_values(mask), "foreground_above": foreground_above(mask)}
            if mask.shape[:2] != img.shape[1:]:
                raise fail(
                    lpath,
                    f"mask is {mask.shape[0]}x{mask.shape[1]} but its image {Path(path).name} is "
                    f"{img.shape[1]}x{img.shape[2]}",
                    "re-export the mask at the image's size or remove the case",
                )
            if self.instances:
                lab = instance_ids(mask, lpath)
            else:
                lab = mask_classes_2d(mask, self.num_classes, lpath, self.values)
            d[LABEL] = lab[None]
        return d


class LoadVolumed(_LoadPaird):
    """Load a (multi-modal) volume and its label map as MetaTensors with RAS affines.

    ``image`` may be one path (3D or 4D with modalities last) or a list of 3D
    paths, one per channel; all must share one grid.
    """

    def __call__(self, data):
        d = dict(data)
        paths = d[IMAGE] if isinstance(d[IMAGE], (list, tuple)) else [d[IMAGE]]
        chans, geom0 = [], None
        for p in paths:
            arr, geom = read_volume(p)
            check_finite(arr, p)
            if geom0 is None:
                geom0 = geom
            elif geom.shape != geom0.shape or not np.allclose(geom.affine, geom0.affine, atol=1e-3):
                raise fail(
                    p,
                    f"grid {geom.shape} differs from {Path(paths[0]).name} {geom0.shape}",
                    "resample all modalities of a case onto one grid",
                )
            chans.extend([arr[..., i] for i in range(arr.shape[3])] if arr.ndim == 4 else [arr])
        if len(chans) != self.n_channels:
            raise fail(
                paths[0],
                f"has {len(chans)} modalities but {self.n_channels} are expected",
                "give one file per configured channel (data.channels) or a 4D file with that many",
            )
        img = np.stack(chans, dtype=np.float32)  # cast while stacking: no float32 copy of each modality first
        del chans
        meta = {
            "original_affine": torch.as_tensor(geom0.affine),
            "spatial_shape": np.array(geom0.shape),
            "filename_or_obj": str(paths[0]),
        }
        d[IMAGE] = MetaTensor(torch.from_numpy(img), affine=torch.as_tensor(geom0.affine), meta=dict(meta))
        d["image_meta"] = {
            "path": str(paths[0]),
            "original_size": list(geom0.shape),
            "geometry": geom0,
            "spacing": [float(s) for s in geom0.spacing],
            "stats": _channel_stats(img, (1, 2, 3)),
            **({"channels_on_disk": len(img)} if self.describe else {}),
        }
        if LABEL in d and d[LABEL] is not None:
            lp = d[LABEL]
            lab, lgeom = read_volume(lp)
            if lab.ndim == 4 and lab.shape[3] == 1:
                lab = lab[..., 0]
            if self.describe:
                d["label_meta"] = {"values_on_disk": self._raw_values(lab)}
            if lgeom.shape != geom0.shape:
                raise fail(
                    lp,
                    f"label grid {lgeom.shape} differs from image {Path(paths[0]).name} {geom0.shape}",
                    "resample the label map onto the image grid (nearest neighbour)",
                )
            if not np.allclose(lgeom.affine, geom0.affine, atol=1e-2):
                raise fail(
                    lp,
                    "label geometry (origin/direction/spacing) differs from its image",
                    "copy the image geometry into the label file",
                )
            lab = np.asarray(lab, dtype=np.float32)
            lab = instance_ids(lab, lp) if self.instances else labels_to_classes(lab, self.num_classes, lp, self.values)
            d[LABEL] = MetaTensor(torch.from_numpy(lab[None]), affine=torch.as_tensor(geom0.affine), meta=dict(meta))
        return d
