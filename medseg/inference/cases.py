"""The cases a ``medseg infer`` call names: files, folders of them, DICOM series, multi-modal case folders.

Every input argument becomes zero or more :class:`Case` objects (or a one-line error saying why it cannot), each
real file is segmented once, and output names never collide.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from medseg.config import Config
from medseg.data.base import mask_stem, recipe_or_default
from medseg.errors import fail
from medseg.io import IMAGE_2D_EXTS, VOLUME_EXTS, file_ext, is_dicom_dir, strip_ext
from medseg.log import get_logger

log = get_logger(__name__)


@dataclass
class Case:
    case_id: str
    paths: list[str]
    source: str  # what the user named


def _is_supported(p: Path) -> bool:
    return file_ext(p) in VOLUME_EXTS + IMAGE_2D_EXTS


CHECKPOINT_EXTS = (".pt", ".pth", ".ckpt", ".onnx", ".ts")  # .onnx and .ts: medseg export's files


def refuse_checkpoint_inputs(inputs: list[str]) -> None:
    """A checkpoint among the INPUTs is a model meant for --model (``medseg infer a.pt b.pt scan.nii.gz``)."""
    for raw in inputs:
        for part in str(raw).split(","):
            if part and file_ext(part) in CHECKPOINT_EXTS:
                raise fail(
                    part, "is a checkpoint, not an image", "pass it with --model (once per model: -m a.pt -m b.pt)"
                )


def expand_inputs(inputs: list[str], cfg: Config, warn: bool = False) -> tuple[list[Case], list[str]]:
    """Turn the user's INPUT arguments into cases; unusable inputs become error lines.

    Every real file is segmented once: links are resolved, and a folder reached again through a link (a loop, or a
    second route to it) is not searched again; with ``warn`` each such link is logged as a warning (off when
    checkpoints are only being matched to the inputs)."""
    cases, errors = [], []
    visited: set[Path] = set()
    for raw in inputs:
        raw = str(raw)
        if "," in raw:  # one multi-modal case given as comma-separated files
            if any(not x.strip() for x in raw.split(",")):  # "$FLAIR,$T1C" with a variable unset
                errors.append(
                    f"{raw!r}: a file of this multi-modal case is empty; fix: name one file per modality, "
                    "e.g. flair.nii.gz,t1c.nii.gz"
                )
                continue
            parts = [Path(x) for x in raw.split(",")]
            missing = [str(x) for x in parts if not x.exists()]
            if missing:
                errors.append(f"{missing[0]}: file not found; fix: check the path")
            else:
                cases.append(Case(strip_ext(parts[0]), [str(x) for x in parts], raw))
            continue
        p = Path(raw)
        if not p.exists():
            errors.append(f"{p}: input not found; fix: check the path")
        elif p.is_dir():
            found = _folder_cases(p, cfg, raw, visited=visited, warn=warn)
            if not found:
                errors.append(
                    f"{p}: no supported images in this folder or below it; fix: give .nii.gz/.nrrd/.mha/.png/"
                    ".jpg/.bmp/.tif files, a DICOM series folder, or folders of them"
                )
            cases += found
        elif not _is_supported(p):
            errors.append(
                f"{p}: unsupported file type '{file_ext(p) or p.suffix or '(none)'}'; fix: use NIfTI, NRRD, MHA, "
                "a DICOM folder, or PNG/JPEG/BMP/TIFF"
            )
        else:
            cases.append(Case(strip_ext(p), [str(p)], raw))
    cases = _once_per_real_file(cases, warn)
    _unique_ids(cases)
    return cases, errors


def _real(path: str | Path) -> Path:
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError):  # a link loop on the file itself
        return Path(os.path.abspath(path))


def _once_per_real_file(cases: list[Case], warn: bool) -> list[Case]:
    """Drop cases whose files (after resolving links) are those of an earlier case."""
    kept, seen = [], {}
    for c in cases:
        key = tuple(_real(p) for p in c.paths)
        if key in seen:
            if warn:
                how = "links to the same file as" if Path(c.paths[0]).is_symlink() else "is the same file as"
                log.warning(f"{c.paths[0]}: {how} {seen[key]}; segmented once")
            continue
        seen[key] = c.paths[0]
        kept.append(c)
    return kept


def _unique_ids(cases: list[Case]) -> None:
    """Output names must not collide: cases that share a name (scans/p1/ct.nii.gz, scans/p2/ct.nii.gz) are all
    named after their folder too (p1_ct, p2_ct), and a number is added if that is still not enough."""
    from collections import Counter

    counts = Counter(c.case_id for c in cases)
    for c in cases:
        if counts[c.case_id] > 1:
            where = Path(c.paths[0]).parent
            if where.name == c.case_id:  # a case folder's own name (multi-modal case, VSD file): the one above
                where = where.parent
            c.case_id = f"{where.name}_{c.case_id}"
    seen: Counter = Counter()
    for c in cases:
        seen[c.case_id] += 1
        if seen[c.case_id] > 1:
            c.case_id = f"{c.case_id}_{seen[c.case_id]}"


SKIP_DIRS = {"labelstr", "labelsts", "labels", "label", "masks", "mask", "segmentations", "segs", "gt", "ground_truth"}
OUTPUT_SUFFIXES = ("_prob",)  # medseg's own probability maps (its masks end in _seg, a mask suffix)


def _folder_cases(
    folder: Path, cfg: Config, raw: str, depth: int = 0, visited: set | None = None, warn: bool = False
) -> list[Case]:
    """The cases in a folder: the folder itself when it is a DICOM series or (multi-modal 3D model) one case's
    modality files; otherwise its image files, then the same search in each sub-folder (label folders, masks and
    medseg's own outputs left out), so a folder of case folders segments every case. A folder already searched
    (``visited``: real paths) is not searched again when a link leads back to it."""
    visited = set() if visited is None else visited
    real = _real(folder)
    if real in visited:
        if warn:
            how = f"links to {real}" if folder.is_symlink() else "was given again"
            log.warning(f"{folder}: {how}, a folder already searched (a link loop or a second route to it); skipped it")
        return []
    visited.add(real)
    if is_dicom_dir(folder):
        return [Case(folder.name, [str(folder)], raw if depth == 0 else str(folder))]
    if cfg.data.spatial_dims == 3 and len(cfg.data.channels) > 1:
        mod = _modality_files(folder, cfg)
        if mod:
            return [Case(folder.name, mod, raw if depth == 0 else str(folder))]
    cases = [
        Case(strip_ext(f), [str(f)], str(f))
        for f in sorted(folder.iterdir())
        if f.is_file()
        and _is_supported(f)
        and not f.name.startswith(".")
        and mask_stem(strip_ext(f)) == strip_ext(f)
        and not strip_ext(f).lower().endswith(OUTPUT_SUFFIXES)
    ]
    if depth < 4:
        for sub in sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")):
            name = sub.name.lower()
            if name not in SKIP_DIRS and mask_stem(sub.name) == sub.name and not name.endswith("_roi"):
                cases += _folder_cases(sub, cfg, raw, depth + 1, visited, warn)  # not labelsTr/, IMDxxx_lesion/, ...
    return cases


def _modality_files(folder: Path, cfg: Config) -> list[str] | None:
    """One multi-modal case in a folder, as the model's recipe finds one (file-name patterns, and the config's)."""
    return recipe_or_default(cfg.data.recipe).modality_files(folder, list(cfg.data.channels), cfg.data.options)


def case_channels(paths: list[str]) -> int | None:
    """How many modalities a 3D case's files hold, read from their headers only (None: cannot tell)."""
    total = 0
    for p in paths:
        n = _volume_channels(Path(p))
        if n is None:
            return None
        total += n
    return total


def _volume_channels(path: Path) -> int | None:
    try:
        if path.is_dir():
            return 1  # a DICOM series
        if file_ext(path) in (".nii", ".nii.gz"):
            import nibabel as nib

            shape = list(nib.load(str(path)).shape)
            while len(shape) > 4 and shape[3] == 1:  # as io.read_volume: (X, Y, Z, 1, C) is C modalities
                del shape[3]
            return shape[3] if len(shape) == 4 else 1
        import SimpleITK as sitk

        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        return int(reader.GetNumberOfComponents())
    except Exception:  # noqa: BLE001 - an unreadable file is reported when it is read for real
        return None


def check_modality_count(case: Case, cfg: Config) -> None:
    """A volume with other than the model's modalities, named before anything is read in full."""
    found, channels = case_channels(case.paths), list(cfg.data.channels)
    if found is None or found == len(channels):
        return
    example = ",".join(f"{c}.nii.gz" for c in channels)
    raise fail(
        case.paths[0],
        f"the model expects {len(channels)} modalities ({','.join(channels)}), got {found}",
        f"give one file per modality in that order, comma-separated ({example}), a case folder holding them, "
        f"or a 4D file with {len(channels)} on its last axis",
    )


def output_ext(case: Case) -> str:
    p = Path(case.paths[0])
    if p.is_dir():
        return ".nii.gz"
    ext = file_ext(p)
    if ext in IMAGE_2D_EXTS:
        return ".png"
    return {".nhdr": ".nrrd"}.get(ext, ext)
