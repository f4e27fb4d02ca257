"""Inference: checkpoint(s) + new images -> masks in each input's exact geometry, and findings.

The checkpoint alone defines preprocessing (channels, orientation, spacing,
intensity normalisation, resize): the same deterministic MONAI pipeline used
in training runs here with MetaTensor tracking on, the network runs as a
Gaussian-blended sliding window, and the probabilities are resampled from the
network's grid back onto the input's voxel grid through the two affines
(``monai.transforms.SpatialResample``), so any reorientation, resampling or
oblique direction is undone exactly. Masks are written with the input's own
header (NIfTI qform/sform kept), spacing, origin and direction.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medseg import __version__
from medseg.checkpoint import describe, file_hash, load_checkpoint, validate_checkpoint
from medseg.config import Config
from medseg.data.base import IMAGE, mask_stem
from medseg.data.lookup import lookup_metadata
from medseg.errors import MedsegError, fail, find_user_error, os_fix, os_reason
from medseg.evaluation.findings import lesion_findings
from medseg.inference.postprocess import postprocess
from medseg.inference.predictor import predict_logits
from medseg.io import (
    IMAGE_2D_EXTS,
    VOLUME_EXTS,
    Geometry,
    atomic_write,
    file_ext,
    geometry_2d,
    is_dicom_dir,
    strip_ext,
    write_image_2d,
    write_volume,
)
from medseg.models import build_model
from medseg.runtime import resolve_device

LARGE_VOLUME_VOXELS = 160**3  # stitch on the CPU above this when the GPU cannot report its free memory


@dataclass
class Case:
    case_id: str
    paths: list[str]
    source: str  # what the user named


@dataclass
class LoadedModel:
    path: Path
    ckpt: dict
    cfg: Config
    model: torch.nn.Module
    sha: str


@dataclass
class InferSummary:
    out_dir: Path
    outputs: list[dict] = field(default_factory=list)  # one findings dict per case
    failures: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------
# models
# ----------------------------------------------------------------------------


def find_default_model(root: Path = Path("runs"), inputs: list[str] | None = None, log=None) -> Path:
    """The newest ``best.pt`` under ``root`` that fits ``inputs`` (2D or 3D as the inputs are, and for volumes as
    many modalities as the model takes); says which one was chosen, with its recipe, epochs and validation Dice."""
    cands = sorted(root.glob("**/best.pt"), key=lambda p: p.stat().st_mtime) if root.is_dir() else []
    if not cands:
        raise MedsegError(
            "no --model given and no runs/*/best.pt found; fix: train one with 'medseg train NAME' "
            "or pass --model path/to/best.pt"
        )
    skipped = []
    for path in reversed(cands):
        why, ckpt = _misfit(path, inputs)
        if why is None:
            if log is not None:
                log(
                    f"using {path} ({model_summary(ckpt)})"
                    + (f"; skipped newer checkpoints that do not fit: {'; '.join(skipped)}" if skipped else "")
                )
            return path
        skipped.append(f"{path} ({why})")
    raise MedsegError(
        f"no --model given and none of the {len(cands)} checkpoints under {root} fits these inputs "
        f"({'; '.join(skipped[:3])}{'; ...' if len(skipped) > 3 else ''}); fix: pass --model "
        "path/to/best.pt trained for such images"
    )


def model_summary(ckpt: dict) -> str:
    """``ph2, 2D, 12 epochs, val Dice 0.91``: what a checkpoint was trained on and how well it validated."""
    cfg = ckpt.get("config", {}).get("data", {})
    recipe = ckpt.get("data", {}).get("recipe") or cfg.get("recipe")
    dice = (ckpt.get("val_metrics") or {}).get("val_mean_dice")
    score = f"val Dice {float(dice):.2f}" if dice is not None else "no validation Dice"
    epochs = ckpt.get("epoch")
    return f"{recipe}, {cfg.get('spatial_dims')}D, {epochs} epoch{'' if epochs == 1 else 's'}, {score}"


def _misfit(path: Path, inputs: list[str] | None) -> tuple[str | None, dict | None]:
    """Why the checkpoint at ``path`` does not fit ``inputs`` (None when it does), and the checkpoint."""
    try:
        ckpt = load_checkpoint(path)
        cfg = validate_checkpoint(ckpt, path)
    except MedsegError as exc:
        return f"unusable: {str(exc).split('; fix:')[0].removeprefix(f'{path}: ')}", None
    if not inputs:
        return None, ckpt
    cases, _errors = expand_inputs(inputs, cfg)
    for case in cases:
        why = _case_misfit(case, cfg)
        if why:
            return why, ckpt
    return None, ckpt


def _case_misfit(case: Case, cfg: Config) -> str | None:
    is_2d = file_ext(case.paths[0]) in IMAGE_2D_EXTS
    dims = cfg.data.spatial_dims
    if is_2d != (dims == 2):
        return f"{dims}D model, {Path(case.paths[0]).name} is {'a 2D image' if is_2d else 'a volume'}"
    if dims == 3:
        found = case_channels(case.paths)
        if found is not None and found != len(cfg.data.channels):
            return (
                f"takes {len(cfg.data.channels)} modalities ({','.join(cfg.data.channels)}), "
                f"{Path(case.paths[0]).name} has {found}"
            )
    return None


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


def load_models(paths: list[str | Path], device: torch.device) -> list[LoadedModel]:
    models = []
    for p in paths:
        ck = load_checkpoint(p, map_location="cpu")
        cfg = validate_checkpoint(ck, p)
        net = build_model(ck["model"])
        try:
            net.load_state_dict(ck["state_dict"])
        except RuntimeError as exc:
            raise fail(
                p, f"weights do not fit the saved model ({str(exc).splitlines()[0]})", "re-export the checkpoint"
            ) from None
        net.to(device).eval()
        models.append(LoadedModel(Path(p), ck, cfg, net, file_hash(p)))
    first = models[0]
    for m in models[1:]:
        for what in ("labels", "channels"):
            if m.ckpt[what] != first.ckpt[what]:
                raise fail(
                    m.path,
                    f"{what} {m.ckpt[what]} differ from {first.path.name}'s {first.ckpt[what]}",
                    "ensemble only checkpoints trained for the same task",
                )
        if m.cfg.data.spatial_dims != first.cfg.data.spatial_dims:
            raise fail(m.path, "mixes 2D and 3D models in one ensemble", "pass checkpoints of one kind")
    return models


# ----------------------------------------------------------------------------
# inputs
# ----------------------------------------------------------------------------


def _is_supported(p: Path) -> bool:
    return file_ext(p) in VOLUME_EXTS + IMAGE_2D_EXTS


CHECKPOINT_EXTS = (".pt", ".pth", ".ckpt")


def refuse_checkpoint_inputs(inputs: list[str]) -> None:
    """A checkpoint among the INPUTs is a model meant for --model (``medseg infer a.pt b.pt scan.nii.gz``)."""
    for raw in inputs:
        for part in str(raw).split(","):
            if part and file_ext(part) in CHECKPOINT_EXTS:
                raise fail(
                    part, "is a checkpoint, not an image", "pass it with --model (once per model: -m a.pt -m b.pt)"
                )


def expand_inputs(inputs: list[str], cfg: Config, warn=None) -> tuple[list[Case], list[str]]:
    """Turn the user's INPUT arguments into cases; unusable inputs become error lines.

    Every real file is segmented once: links are resolved, a folder reached again through a link (a loop, or a
    second route to it) is not searched again, and ``warn`` is told about each such link."""
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


def _once_per_real_file(cases: list[Case], warn=None) -> list[Case]:
    """Drop cases whose files (after resolving links) are those of an earlier case."""
    kept, seen = [], {}
    for c in cases:
        key = tuple(_real(p) for p in c.paths)
        if key in seen:
            if warn is not None:
                how = "links to the same file as" if Path(c.paths[0]).is_symlink() else "is the same file as"
                warn(f"{c.paths[0]}: {how} {seen[key]}; segmented once")
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
    folder: Path, cfg: Config, raw: str, depth: int = 0, visited: set | None = None, warn=None
) -> list[Case]:
    """The cases in a folder: the folder itself when it is a DICOM series or (multi-modal 3D model) one case's
    modality files; otherwise its image files, then the same search in each sub-folder (label folders, masks and
    medseg's own outputs left out), so a folder of case folders segments every case. A folder already searched
    (``visited``: real paths) is not searched again when a link leads back to it."""
    visited = set() if visited is None else visited
    real = _real(folder)
    if real in visited:
        if warn is not None:
            how = f"links to {real}" if folder.is_symlink() else "was given again"
            warn(f"{folder}: {how}, a folder already searched (a link loop or a second route to it); skipped it")
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
    """One multi-modal case in a folder, found by the brats recipe's file-name patterns (and the config's own)."""
    from medseg.data.brats import case_files, find_modalities, modality_patterns

    channels = list(cfg.data.channels)
    found = find_modalities(
        case_files(folder), channels, modality_patterns(channels, cfg.data.options.get("modalities"))
    )
    if any(f is None for f in found.values()):
        return None
    return [str(found[ch]) for ch in channels]


# ----------------------------------------------------------------------------
# prediction
# ----------------------------------------------------------------------------


def _flip_dims(spatial_dims: int, tta: bool) -> list[tuple[int, ...]]:
    return [()] + ([(2 + a,) for a in range(spatial_dims)] if tta else [])


@torch.no_grad()
def predict_probabilities(
    lm: LoadedModel, x: torch.Tensor, device: torch.device, tta: bool, stitch_on_cpu: bool = False
) -> torch.Tensor:
    """``(1, C, *spatial)`` preprocessed input -> ``(1, K, *spatial)`` probabilities (sigmoid or softmax)."""
    cfg = lm.cfg
    roi = list(lm.ckpt.get("roi_size") or cfg.infer.roi_size)
    out_device = torch.device("cpu") if stitch_on_cpu else device
    total = None
    flips = _flip_dims(cfg.data.spatial_dims, tta)
    for dims in flips:
        xi = torch.flip(x, dims) if dims else x
        logits = predict_logits(lm.model, xi.to(device), cfg, device, roi, sw_device=out_device)
        probs = torch.sigmoid(logits) if cfg.binary else torch.softmax(logits, dim=1)
        probs = torch.flip(probs, dims) if dims else probs
        total = probs if total is None else total.add_(probs)
    return total / len(flips)


def _stitch_on_cpu(x: torch.Tensor, cfg, device: torch.device, tta: bool) -> bool:
    """Stitch the sliding-window output in host memory when the GPU could not hold it comfortably.

    On the GPU the input (C channels), the stitched output, its weight map and the probabilities (plus a running
    sum with TTA) need about ``(C + 2K + 2) * voxels * 4`` bytes; keep that under half of the memory the GPU has
    free. Without a way to ask (or a CPU device) fall back to a fixed size."""
    if device.type != "cuda":
        return False
    k = max(1, cfg.out_channels)
    need = int(np.prod(x.shape[2:])) * (x.shape[1] + 2 * k + 2 + (k if tta else 0)) * 4
    try:
        free, _total = torch.cuda.mem_get_info(device)
    except Exception:  # noqa: BLE001  (a driver that cannot say)
        return int(np.prod(x.shape[2:])) * k > LARGE_VOLUME_VOXELS
    return need > free // 2


def _case_probabilities(
    lm: LoadedModel, case: Case, device: torch.device, tta: bool
) -> tuple[np.ndarray, Geometry, dict]:
    """Run one model on one case; return probabilities on the input's own grid ``(K, *shape)``."""
    from monai.data import MetaTensor
    from monai.transforms import SpatialResample

    from medseg.data.transforms import deterministic_transforms

    cfg = lm.cfg
    is_2d_input = file_ext(case.paths[0]) in IMAGE_2D_EXTS
    if is_2d_input and cfg.data.spatial_dims == 3:
        raise fail(
            case.paths[0], "is a 2D image but the model is 3D", "use a 2D checkpoint (e.g. trained on ph2 or lgg)"
        )
    if not is_2d_input and cfg.data.spatial_dims == 2:
        raise fail(case.paths[0], "is a volume but the model is 2D", "use a 3D checkpoint (e.g. trained on brats)")
    if cfg.data.spatial_dims == 3:
        _check_modality_count(case, cfg)
    pipeline = deterministic_transforms(cfg, with_label=False, for_training=False)
    image = case.paths if (cfg.data.spatial_dims == 3 and len(case.paths) > 1) else case.paths[0]
    t0 = time.time()
    try:
        d = pipeline({IMAGE: image})
    except Exception as exc:  # noqa: BLE001
        found = find_user_error(exc)
        if found:
            raise found from None
        raise fail(case.paths[0], f"cannot be preprocessed ({type(exc).__name__}: {exc})", "check the file") from None
    t_pre = time.time() - t0
    img = d[IMAGE]
    x = (img.as_tensor() if hasattr(img, "as_tensor") else torch.as_tensor(img)).float()[None]
    meta = d["image_meta"]
    t0 = time.time()
    if cfg.data.spatial_dims == 2:
        probs = predict_probabilities(lm, x, device, tta)
        size = tuple(meta["original_size"])
        if tuple(probs.shape[2:]) != size:
            probs = F.interpolate(probs, size=size, mode="bilinear", align_corners=False)
        geom = geometry_2d(case.paths[0], size, cfg.data.pixel_spacing_mm, channels=len(cfg.data.channels))
        if cfg.data.context_slices:  # 2.5D model: say how many neighbouring slices were really there
            geom.meta["context_slices_found"] = int(meta.get("context_found", 0))
        if "volume_slices" in meta:  # normalised with its volume's statistics: say over how many slices
            geom.meta["volume_slices"] = int(meta["volume_slices"])
        if meta.get("exif") == "upright":  # the camera's orientation was applied: the mask is upright too
            geom.meta["exif_orientation"] = meta["exif_orientation"]
        out = probs[0].cpu().numpy()
    else:
        geom = meta["geometry"]
        probs = predict_probabilities(lm, x, device, tta, stitch_on_cpu=_stitch_on_cpu(x, cfg, device, tta)).cpu()
        probs = probs[0].as_tensor() if hasattr(probs, "as_tensor") else probs[0]
        affine = torch.as_tensor(img.affine, dtype=torch.float64)
        if "crop_box" in d:  # trained on the non-zero box: background outside it, then the uncropped grid
            probs, affine = uncrop(probs, affine, d["crop_box"], cfg.binary)
        src = MetaTensor(probs, affine=affine)
        back = SpatialResample(mode="bilinear", padding_mode="border", dtype=np.float32)(
            src, dst_affine=torch.as_tensor(geom.affine), spatial_size=list(geom.shape)
        )
        out = np.asarray(back.array if hasattr(back, "array") else back, dtype=np.float32)
    return out, geom, {"preprocess_s": round(t_pre, 3), "predict_s": round(time.time() - t0, 3)}


def _check_modality_count(case: Case, cfg: Config) -> None:
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


def uncrop(probs: torch.Tensor, affine: torch.Tensor, box: dict, binary: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Place ``(K, *crop)`` probabilities back into the uncropped grid of ``box`` (from ``CropNonzerod``).

    Outside the box every voxel is background (probability 0 for a sigmoid output; 1 for softmax channel 0), and
    the affine moves back by the crop's start index.
    """
    start, full = [int(v) for v in box["start"]], [int(v) for v in box["full_shape"]]
    if list(probs.shape[1:]) == full:
        return probs, affine
    out = torch.zeros((probs.shape[0], *full), dtype=probs.dtype)
    if not binary:
        out[0] = 1.0
    out[(slice(None), *(slice(s, s + n) for s, n in zip(start, probs.shape[1:])))] = probs
    shift = torch.eye(affine.shape[0], dtype=affine.dtype)
    shift[: len(start), -1] = -torch.tensor(start, dtype=affine.dtype)
    return out, affine @ shift


def probabilities_to_labels(probs: np.ndarray, binary: bool, threshold: float) -> np.ndarray:
    if binary:
        return (probs[0] > threshold).astype(np.uint8)
    return probs.argmax(axis=0).astype(np.uint8)


def output_ext(case: Case) -> str:
    p = Path(case.paths[0])
    if p.is_dir():
        return ".nii.gz"
    ext = file_ext(p)
    if ext in IMAGE_2D_EXTS:
        return ".png"
    return {".nhdr": ".nrrd"}.get(ext, ext)


POST_KEYS = ("threshold", "keep_largest", "min_size", "fill_holes")


def effective_post(cfg: Config, post: dict | None = None) -> dict:
    """The post-processing a case gets: the checkpoint's ``infer`` settings, overridden by ``post``'s non-None values."""
    given = {k: v for k, v in (post or {}).items() if v is not None}
    return {k: given.get(k, getattr(cfg.infer, k)) for k in POST_KEYS}


def segment_case(
    models: list[LoadedModel],
    case: Case,
    out_dir: Path,
    device: torch.device,
    tta: bool = False,
    probabilities: bool = False,
    force: bool = False,
    post: dict | None = None,
) -> dict:
    """Segment one case with an ensemble; write the mask (and probabilities) and return its findings."""
    t_start = time.time()
    lm0 = models[0]
    cfg = lm0.cfg
    post = effective_post(cfg, post)
    ext = output_ext(case)
    seg_path = out_dir / f"{case.case_id}_seg{ext}"
    prob_path = out_dir / f"{case.case_id}_prob{'.nii.gz' if cfg.data.spatial_dims == 3 else '.tif'}"
    json_path = out_dir / f"{case.case_id}_findings.json"
    targets = [seg_path, json_path] + ([prob_path] if probabilities else [])
    if not force:
        for t in targets:
            if t.exists():
                raise fail(t, "already exists", "pass --force to overwrite or choose another --out")
    acc, geom, timings = None, None, {}
    for lm in models:
        probs, g, t = _case_probabilities(lm, case, device, tta)
        acc = probs if acc is None else acc + probs
        geom = geom or g
        for k, v in t.items():
            timings[k] = round(timings.get(k, 0.0) + v, 3)
    probs = acc / len(models)
    t0 = time.time()
    labels = probabilities_to_labels(probs, cfg.binary, float(post["threshold"]))
    labels = postprocess(
        labels,
        cfg.num_classes,
        geom.spacing,
        keep_largest=bool(post["keep_largest"]),
        min_size=float(post["min_size"]),
        fill_holes=bool(post["fill_holes"]),
    )
    timings["postprocess_s"] = round(time.time() - t0, 3)
    existed = {t for t in targets if t.exists()}
    try:
        return _write_outputs(
            labels, probs, geom, case, models, cfg, post, targets, probabilities, tta, device, timings, t_start
        )
    except OSError as exc:  # a full disk, a read-only folder: nothing of this case may stay half there
        for t in targets:
            if t not in existed and t.exists():
                t.unlink()
        raise CaseWriteError(_failed_target(exc, targets), exc) from None


def _failed_target(exc: OSError, targets: list[Path]) -> Path:
    """The output being written when ``exc`` happened (its name is in the temporary file's name)."""
    name = Path(str(exc.filename or "")).name
    for t in targets:
        if t.name in name:
            return t
    return targets[0]


def _write_outputs(
    labels, probs, geom, case, models, cfg, post, targets, probabilities, tta, device, timings, t_start
) -> dict:
    seg_path, json_path = targets[0], targets[1]
    prob_path = targets[2] if probabilities else None
    t0 = time.time()
    if geom.ndim == 2:
        write_image_2d(labels * 255 if cfg.binary else labels, seg_path)
        if probabilities:
            import tifffile

            atomic_write(prob_path, lambda tmp: tifffile.imwrite(tmp, probs.astype(np.float32)), suffix=".tif")
    else:
        write_volume(labels, geom, seg_path, force=True)
        if probabilities:
            p = probs[0] if cfg.binary else np.moveaxis(probs, 0, -1)
            pg = Geometry(geom.shape, geom.spacing, geom.affine, geom.fmt, geom.path, header=None, meta=geom.meta)
            write_volume(p.astype(np.float32), pg, prob_path, force=True)
    timings["write_s"] = round(time.time() - t0, 3)
    t0 = time.time()
    findings = lesion_findings(labels, geom, list(cfg.data.labels))
    timings["findings_s"] = round(time.time() - t0, 3)
    timings["total_s"] = round(time.time() - t_start, 3)
    result = {
        "case_id": case.case_id,
        "input": [str(Path(p).resolve()) for p in case.paths],
        "segmentation": str(seg_path.resolve()),
        "probabilities": str(prob_path.resolve()) if prob_path else None,
        "geometry": geom.summary(),
        **({"context_slices_found": geom.meta["context_slices_found"]} if "context_slices_found" in geom.meta else {}),
        **({"volume_slices": geom.meta["volume_slices"]} if "volume_slices" in geom.meta else {}),
        **({"exif_orientation": geom.meta["exif_orientation"]} if "exif_orientation" in geom.meta else {}),
        "metadata": {**geom.meta.get("dicom", {}), **lookup_metadata(case.paths[0])},
        **({"dicom_series": geom.meta["dicom_series"]} if "dicom_series" in geom.meta else {}),
        "labels": list(cfg.data.labels),
        "channels": list(cfg.data.channels),
        **findings,
        "models": [
            {"path": str(m.path.resolve()), "sha256_12": m.sha, "description": describe(m.ckpt)} for m in models
        ],
        "postprocess": post,
        "tta": bool(tta),
        "device": str(device),
        "timings": timings,
        "medseg_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write(json_path, lambda tmp: Path(tmp).write_text(json.dumps(result, indent=1)), suffix=".json")
    result["findings_json"] = str(json_path)
    return result


def infer(
    inputs: list[str],
    model: list[str] | None = None,
    out: str | Path | None = None,
    device: str = "auto",
    tta: bool | None = None,
    probabilities: bool = False,
    force: bool = False,
    progress: bool = True,
    log=print,
    **post,
) -> InferSummary:
    """Segment every input; keep going past bad files and raise one MedsegError listing them at the end.

    ``post`` may override ``threshold``, ``keep_largest``, ``min_size``, ``fill_holes``, ``overlap`` and
    ``sw_batch_size`` from the checkpoint's ``infer`` config.
    """
    from medseg.progress import track

    if not inputs:
        raise MedsegError("no INPUT given; fix: medseg infer scan.nii.gz --model runs/NAME/best.pt")
    if any(not str(i).strip() for i in inputs):  # an unset shell variable: Path("") is the current folder
        raise MedsegError(
            "an INPUT is empty (an unset shell variable?); fix: name the images, volumes or folders to segment"
        )
    refuse_checkpoint_inputs([str(i) for i in inputs])
    dev = resolve_device(device)
    if not model:
        model = [str(find_default_model(inputs=[str(i) for i in inputs], log=log))]
    models = load_models(model, dev)
    tta = bool(models[0].cfg.infer.tta) if tta is None else tta  # None: the checkpoint's own setting
    for m in models:
        for key in ("overlap", "sw_batch_size"):
            if post.get(key) is not None:
                setattr(m.cfg.infer, key, post[key])
    out_dir = Path(out) if out else Path("runs") / f"infer-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    make_out_dir(out_dir)
    cases, failures = expand_inputs([str(i) for i in inputs], models[0].cfg, warn=lambda m: log(f"warning: {m}"))
    summary = InferSummary(out_dir, failures=list(failures))
    cfg0 = models[0].cfg
    if cases and (cfg0.data.spatial_dims == 3 or not cfg0.binary):  # masks hold class indices: name them
        try:
            tables = write_label_tables(out_dir, list(cfg0.data.labels), force)
        except OSError as exc:
            raise _write_failure(out_dir / "labels.ctbl", exc, out_dir, 0, len(cases)) from None
        log(f"class names for the viewers: {tables[0]} (3D Slicer), {tables[1]} (ITK-SNAP)")
    for case in track(cases, desc="infer", enabled=progress and len(cases) >= 2, unit="case"):
        try:
            res = segment_case(models, case, out_dir, dev, tta=tta, probabilities=probabilities, force=force, post=post)
            summary.outputs.append(res)
            cls = ", ".join(f"{n}: {findings_sizes(res, v)}" for n, v in res["classes"].items()) + spacing_note(res)
            log(f"{case.case_id}: {cls} -> {res['segmentation']}")
            if res.get("context_slices_found") == 0:
                log(
                    f"warning: {case.paths[0]}: no neighbouring slices found for this 2.5D model, so it saw the slice "
                    "repeated; fix: keep the volume's slices side by side, named <stem>_<n>.<ext>"
                )
            others = res.get("dicom_series", {}).get("other_series")
            if others:
                chosen = res["dicom_series"]
                log(
                    f"warning: {case.paths[0]}: the folder holds {len(others) + 1} DICOM series; the largest was "
                    f"segmented ({chosen['files']} files, '{chosen['description']}'), not "
                    + ", ".join(f"'{o['description']}' ({o['files']} files)" for o in others)
                    + "; fix: put each series in a folder of its own to segment another one"
                )
            if res.get("exif_orientation"):
                log(
                    f"note: {case.paths[0]}: EXIF orientation {res['exif_orientation']} applied: the image was "
                    f"segmented upright, as viewers show it, and the mask ({res['geometry']['shape'][0]}x"
                    f"{res['geometry']['shape'][1]}) is upright too"
                )
            if res.get("volume_slices") == 1:
                log(
                    f"warning: {case.paths[0]}: this model normalises each slice with its whole volume's statistics, "
                    "but no other slice of the volume was found, so this slice's own were used; fix: keep the "
                    "volume's slices side by side, named <stem>_<n>.<ext>"
                )
        except CaseWriteError as exc:  # the folder is full or read-only: the next cases would fail alike
            raise _write_failure(exc.target, exc.cause, out_dir, len(summary.outputs), len(cases)) from None
        except MedsegError as exc:
            summary.failures.append(str(exc))
            log(f"error: {exc}")
    if summary.failures:
        written = f"the others were written to {out_dir}" if summary.outputs else "nothing was written"
        err = MedsegError(
            f"{len(summary.failures)} of {len(cases) + len(failures)} inputs failed (first: "
            f"{summary.failures[0]}); {written}"
        )
        err.summary = summary  # the cases that were segmented: infer --report still writes their PDFs
        raise err
    return summary


def make_out_dir(out_dir: Path) -> None:
    """Create the --out folder, or say in one line why it cannot be one."""
    if out_dir.exists() and not out_dir.is_dir():
        raise fail(
            out_dir, "exists and is a file, not a folder", "choose another --out (a folder; it is created if missing)"
        )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise fail(
            out_dir, f"cannot be created ({os_reason(exc)})", "choose an --out folder you can write to"
        ) from None


class CaseWriteError(MedsegError):
    """An OSError (full disk, read-only folder) while one case's outputs were written; that case's new files were
    already removed, so what is on disk is whole."""

    def __init__(self, target: Path, cause: OSError):
        self.target, self.cause = target, cause
        super().__init__(str(_write_failure(target, cause)))


def _write_failure(
    target: Path, exc: OSError, out_dir: Path | None = None, done: int = 0, total: int = 0
) -> MedsegError:
    """``TARGET: could not be written (REASON); ...`` saying what is safe on disk; with ``out_dir`` also that the
    batch stopped there and how many cases before it are complete."""
    reason, fix = os_reason(exc), os_fix(exc, "check the --out folder")
    batch = (
        f"stopped there: {done} of {total} case(s) were written to {out_dir} before it and are complete, and "
        if out_dir is not None
        else ""
    )
    return fail(
        target,
        f"could not be written ({reason}); {batch}no partial file of this case was left",
        f"{fix}, then run again (cases already written are refused unless --force)",
    )


def write_label_tables(out_dir: Path, labels: list[str], force: bool = False) -> list[Path]:
    """Write ``labels.ctbl`` (3D Slicer) and ``labels_itksnap.txt`` (ITK-SNAP) naming the mask values; an existing
    table with other classes (masks of another model in this folder) is only replaced with ``force``."""
    from medseg.reporting.viz import label_tables

    paths = []
    for name, text in label_tables(labels).items():
        path = out_dir / name
        old = path.read_text() if path.is_file() else None
        if old is not None and old != text and not force:
            raise fail(
                path,
                "already exists with other class names (masks of another model are in this folder)",
                "choose another --out or pass --force",
            )
        if old != text:
            atomic_write(path, lambda tmp, text=text: Path(tmp).write_text(text), suffix=path.suffix)
        paths.append(path)
    return paths


def findings_unit(res: dict) -> str:
    """How to print the sizes of a findings dict: mL, mm², or px² for 2D images of unknown pixel spacing."""
    from medseg.evaluation.findings import UNIT_LABELS

    return UNIT_LABELS[res["unit"]]


def findings_sizes(res: dict, cls: dict) -> str:
    """One class's findings for the log: total size, lesion count, the largest lesion's maximum diameter."""
    from medseg.evaluation.findings import format_size

    text = f"{format_size(cls['total_' + res['unit']])} {findings_unit(res)} in {cls['n_lesions']} lesion(s)"
    if cls["lesions"]:
        length = res["length_unit"]
        text += f", largest {cls['lesions'][0]['max_diameter_' + length]:.1f} {length} across"
    return text


def spacing_note(res: dict) -> str:
    """The log's note on a 2D image of unknown pixel spacing: its sizes are pixels, not millimetres."""
    if res.get("spacing_known", True):
        return ""
    return " (pixel spacing unknown, so sizes are in pixels; set data.pixel_spacing_mm to measure in mm)"
