"""Masks medseg derives from what a data set ships, written once to a cache so every stage reads the same file.

A data set's ground truth is not always a mask at its image's size: some ship a smaller copy of each mask, some
mark the foreground with a value other than "not zero" (ISBI membranes: 255 is cell interior, 0 is membrane), some
ship one file per object (nuclei) or only boxes. Training, validation, evaluation, overlays and reports all read a
sample's ``label`` path, so the mask they should see is made here once, as a PNG in the cache, and the sample
points at it; ``label_source`` keeps the file the data set shipped. The user's files are only ever read.

The cache is ``$MEDSEG_CACHE_DIR`` (default ``$XDG_CACHE_HOME/medseg`` or ``~/.cache/medseg``). A derived file's
name is a hash of its sources (path, size, modification time) and of the rule that made it, so an edited mask is
derived again and two rules never share a file.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from medseg.data.keys import IMAGE, LABEL
from medseg.errors import MedsegError, fail, os_reason
from medseg.io import IMAGE_2D_EXTS, file_ext, read_image_2d, write_image_2d

CACHE_ENV = "MEDSEG_CACHE_DIR"


def cache_root() -> Path:
    """Where medseg keeps files it can make again: ``$MEDSEG_CACHE_DIR``, else the user's cache folder."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "medseg"


def _source_key(path: Path) -> list:
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def derived_mask(kind: str, sources: list[Path], params: dict, build: Callable[[], np.ndarray]) -> Path:
    """The cached mask made by ``build()`` from ``sources`` under ``params``; built and written (atomically) only
    when no such file exists yet. ``kind`` names the rule (a sub-folder of the cache)."""
    key = json.dumps({"kind": kind, "params": params, "sources": [_source_key(Path(s)) for s in sources]})
    path = cache_root() / "labels" / kind / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.png"
    if path.is_file():
        return path
    mask = build()
    try:
        write_image_2d(mask, path)
    except OSError as exc:
        raise fail(
            path.parent, f"cannot write a derived mask ({os_reason(exc)})", f"set {CACHE_ENV} to a folder you can write"
        ) from None
    return path


# -- sizes ----------------------------------------------------------------------------------------------------------


def stored_size(path: Path) -> tuple[int, int]:
    """``(h, w)`` of the pixels as stored, from the file's header."""
    from PIL import Image

    with Image.open(path) as im:
        w, h = im.size
    return h, w


def image_sizes(path: Path) -> tuple[tuple[int, int], tuple[int, int]]:
    """``((h, w) as viewers show it, (h, w) as stored)`` (EXIF orientations 5-8 turn the picture)."""
    from medseg.io import exif_orientation

    h, w = stored_size(path)
    upright = (w, h) if exif_orientation(path) in (5, 6, 7, 8) else (h, w)
    return upright, (h, w)


def scale_only(mask_hw: tuple[int, int], image_hw: tuple[int, int]) -> bool:
    """Whether a mask differs from its image's size only by scale: both sides by one factor, to within a pixel of
    the mask (the rounding of a resized copy). Equal sizes are not a scaled copy."""
    (mh, mw), (ih, iw) = mask_hw, image_hw
    if (mh, mw) == (ih, iw) or min(mh, mw, ih, iw) <= 0:
        return False
    return abs(ih * mw / iw - mh) <= 1.0 or abs(iw * mh / ih - mw) <= 1.0


def _resize_nearest(mask: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """A mask array brought to ``(h, w)`` with nearest neighbour, its values and dtype kept."""
    from PIL import Image

    arr = mask.astype(np.uint8) if mask.dtype == bool else mask
    if arr.dtype not in (np.uint8, np.uint16, np.int32):
        arr = arr.astype(np.int32)
    return np.array(Image.fromarray(arr).resize((hw[1], hw[0]), Image.Resampling.NEAREST))


# -- foreground values ----------------------------------------------------------------------------------------------


def foreground_values(options: dict, where: str) -> list[int] | None:
    """``data.options.foreground_values``: the mask values that are foreground in a binary task (None: any value
    that is not 0, or above half the maximum for lossy masks; see :func:`medseg.data.loading.binarise_mask_2d`)."""
    values = options.get("foreground_values")
    if values is None:
        return None
    values = [values] if isinstance(values, (int, float)) else values
    if not isinstance(values, (list, tuple)) or not values or not all(float(v).is_integer() for v in values):
        raise MedsegError(
            f"{where}: data.options.foreground_values must be a list of whole mask values, got {values!r}; "
            "fix: e.g. foreground_values: [255] for the value that marks the foreground"
        )
    return [int(v) for v in values]


def _select_values(mask: np.ndarray, values: list[int]) -> np.ndarray:
    m = mask[..., 0] if mask.ndim == 3 else mask
    return np.isin(m, values).astype(np.uint8) * 255


# -- the step load_samples runs -------------------------------------------------------------------------------------


def _is_2d_pair(sample: dict) -> bool:
    image, label = sample.get(IMAGE), sample.get(LABEL)
    return (
        isinstance(image, (str, Path))
        and isinstance(label, (str, Path))
        and file_ext(image) in IMAGE_2D_EXTS
        and file_ext(label) in IMAGE_2D_EXTS
        and Path(label).is_file()
    )


def derive_masks(samples: list[dict], options: dict, where: str) -> tuple[list[dict], list[str]]:
    """Bring scaled copies of masks to their image's size and apply ``foreground_values``, for every 2D sample;
    returns the samples (pointing at the derived masks) and warnings that count what was done."""
    values = foreground_values(options, where)
    scaled: list[tuple[Path, tuple, tuple]] = []
    out = []
    for s in samples:
        if not _is_2d_pair(s):
            out.append(s)
            continue
        label = Path(s[LABEL])
        target = _scaled_target(Path(s[IMAGE]), label)
        if target is not None:
            scaled.append((label, image_sizes(label)[0], target))
        if target is None and values is None:
            out.append(s)
            continue
        out.append({**s, LABEL: str(_derive_one(label, target, values)), "label_source": str(label)})
    return out, _scaled_warning(scaled, len([s for s in samples if _is_2d_pair(s)]))


def _scaled_target(image: Path, label: Path) -> tuple[int, int] | None:
    """The size a scaled copy of a mask is brought to (the image's, upright or as stored, whichever the mask's
    proportions fit); None when the mask is at its image's size or differs by more than scale (the loader then
    refuses it, naming the file)."""
    try:
        if stored_size(image) == stored_size(label):  # the usual case, from the headers alone (EXIF costs a decode)
            return None
        upright, stored = image_sizes(image)
        mask_hw = image_sizes(label)[0]
    except Exception:  # noqa: BLE001 - unreadable, too large, not an image: the loader says which, naming the file
        return None
    if mask_hw in (upright, stored):
        return None
    return next((hw for hw in (upright, stored) if scale_only(mask_hw, hw)), None)


def _derive_one(label: Path, target: tuple[int, int] | None, values: list[int] | None) -> Path:
    def build() -> np.ndarray:
        mask = read_image_2d(label, kind="mask")
        if target is not None:
            mask = _resize_nearest(mask, target)
        return _select_values(mask, values) if values is not None else mask

    params = {"size": list(target) if target else None, "foreground_values": values}
    return derived_mask("masks", [label], params, build)


def _scaled_warning(scaled: list[tuple[Path, tuple, tuple]], n_masks: int) -> list[str]:
    if not scaled:
        return []
    label, mask_hw, image_hw = scaled[0]
    smaller = sum(m[0] < i[0] for _, m, i in scaled)
    size = "smaller" if smaller == len(scaled) else "larger" if not smaller else "differently sized"
    text = (
        f"{label.parent}: {len(scaled)} of {n_masks} masks are a {size} copy of their image, in the same "
        f"proportions (e.g. {label.name} is {mask_hw[0]}x{mask_hw[1]} for a {image_hw[0]}x{image_hw[1]} image): "
        "brought to the image's size with nearest neighbour"
    )
    return [text]
