"""Generic 3D recipe: Medical Segmentation Decathlon / nnU-Net layouts and plain folders.

* MSD: ``dataset.json`` with a ``training`` list of ``{"image", "label"}`` paths
  (images may be 4D with modalities on the last axis).
* nnU-Net v2: ``dataset.json`` with ``channel_names`` and ``file_ending``;
  ``imagesTr/<case>_0000<ending>``, ``labelsTr/<case><ending>``.
* Plain folders: ``images/`` and ``labels/`` (or ``masks/``) holding NIfTI,
  NRRD or MHA files paired by name (``_seg``/``_label``/``_mask`` suffixes and
  ``_0000`` channel suffixes are ignored when pairing).
* One flat folder of ``<case>_image.nrrd`` + ``<case>_label.nrrd`` pairs (the pyradiomics layout).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from medseg.data.base import IMAGE, LABEL, Recipe, RecipeResult, register
from medseg.data.files import files_with_ext, first_subdir, mask_stem, natural_key
from medseg.errors import fail
from medseg.io import VOLUME_EXTS, file_ext, strip_ext

IMAGE_DIRS = ["imagesTr", "images", "image", "imgs", "volumes"]
LABEL_DIRS = ["labelsTr", "labels", "label", "masks", "mask", "segmentations", "segs"]
CHANNEL_RE = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})$")
EXPECTED = (
    "expected dataset.json with imagesTr/ and labelsTr/ (MSD or nnU-Net), or images/ and labels/ "
    "folders of .nii.gz/.nrrd/.mha files paired by name"
)


def _label_names(labels: dict) -> list[str]:
    """Class names in label-value order from MSD (``{"0": "background"}``) or nnU-Net v2 (``{"background": 0}``)
    labels; nnU-Net's region entries (``"whole tumour": [1, 2, 3]``) name no single value and are left out."""
    pairs = []
    for key, value in labels.items():
        if str(key).strip().isdigit():
            pairs.append((int(key), str(value)))
        elif isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
            pairs.append((int(value), str(key)))
    return [name for _, name in sorted(pairs)]


def _listed_image(img: Path, n_ch: int) -> list[Path] | None:
    """The file(s) of a ``training`` entry: the path as listed, or, as nnU-Net v1 writes dataset.json, the
    ``<case>_0000<ext>`` ... channel files beside it."""
    if img.is_file():
        return [img]
    ext = file_ext(img)
    chans = [img.with_name(f"{strip_ext(img)}_{c:04d}{ext}") for c in range(n_ch)]
    return chans if all(c.is_file() for c in chans) else None


def _from_dataset_json(root: Path, spec: dict) -> RecipeResult:
    samples, problems, info = [], [], {"dataset_json": str(root / "dataset.json")}
    labels = spec.get("labels") or {}
    if isinstance(labels, dict) and labels:
        info["labels"] = _label_names(labels)
    chans = spec.get("channel_names") or spec.get("modality") or {}
    if chans:
        info["channels"] = [chans[k] for k in sorted(chans, key=int)]
    n_ch = max(1, len(chans))
    if isinstance(spec.get("training"), list) and spec["training"] and isinstance(spec["training"][0], dict):
        for entry in spec["training"]:
            listed, lab = root / entry["image"], root / entry["label"]
            imgs = _listed_image(listed, n_ch)
            gone = listed if imgs is None else (None if lab.is_file() else lab)
            if gone:
                problems.append(
                    str(
                        fail(
                            gone,
                            "listed in dataset.json but missing",
                            "restore the file or remove its entry from dataset.json",
                        )
                    )
                )
                continue
            case = strip_ext(listed)
            samples.append(
                {
                    IMAGE: [str(p) for p in imgs] if len(imgs) > 1 else str(imgs[0]),
                    LABEL: str(lab),
                    "case_id": case,
                    "group": case,
                    "meta": {},
                }
            )
        return RecipeResult(samples, [], info, problems)
    ending = spec.get("file_ending", ".nii.gz")
    img_dir, lab_dir = root / "imagesTr", root / "labelsTr"
    problems += _images_without_labels(img_dir, lab_dir, ending)
    for lab in sorted(
        (p for p in lab_dir.glob(f"*{ending}") if not p.name.startswith(".")), key=lambda p: natural_key(p.name)
    ):  # ._* files: macOS metadata in unpacked archives
        case = lab.name[: -len(ending)]
        imgs = [img_dir / f"{case}_{c:04d}{ending}" for c in range(n_ch)]
        gone = [p for p in imgs if not p.exists()]
        if gone:
            problems.append(str(fail(gone[0], "channel file missing for this case", f"add it or remove {lab.name}")))
            continue
        samples.append(
            {
                IMAGE: [str(p) for p in imgs] if n_ch > 1 else str(imgs[0]),
                LABEL: str(lab),
                "case_id": case,
                "group": case,
                "meta": {},
            }
        )
    return RecipeResult(samples, [], info, problems)


def _images_without_labels(img_dir: Path, lab_dir: Path, ending: str) -> list[str]:
    """nnU-Net v2 cases whose ``imagesTr/<case>_0000<ending>`` has no ``labelsTr/<case><ending>``, one line each."""
    if not img_dir.is_dir():
        return []
    out = []
    for img in sorted(img_dir.glob(f"*_0000{ending}"), key=lambda p: natural_key(p.name)):
        case = img.name[: -len(f"_0000{ending}")]
        if not img.name.startswith(".") and not (lab_dir / f"{case}{ending}").exists():
            out.append(
                str(fail(img, "image has no label map", f"add {lab_dir.name}/{case}{ending} or remove the image"))
            )
    return out


def nifti_samples(data_dir: Path, options: dict) -> RecipeResult:
    spec_path = data_dir / "dataset.json"
    if spec_path.is_file():
        try:
            spec = json.loads(spec_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise fail(spec_path, f"is not valid JSON (line {exc.lineno})", "fix the JSON syntax") from None
        return _from_dataset_json(data_dir, spec)
    img_dir = first_subdir(data_dir, options.get("image_dirs") or IMAGE_DIRS)
    lab_dir = first_subdir(data_dir, options.get("label_dirs") or LABEL_DIRS)
    if img_dir is None or lab_dir is None:
        return _single_folder(data_dir)
    labels = {mask_stem(strip_ext(p)): p for p in files_with_ext(lab_dir, VOLUME_EXTS)}
    groups: dict[str, list[Path]] = {}
    for p in files_with_ext(img_dir, VOLUME_EXTS):
        stem = strip_ext(p)
        m = CHANNEL_RE.match(stem)
        groups.setdefault(m.group("case") if m else stem, []).append(p)
    samples, problems = [], []
    for case in sorted(groups, key=natural_key):
        files = sorted(groups[case], key=lambda p: natural_key(p.name))
        lab = labels.get(case)
        if lab is None:
            problems.append(
                str(
                    fail(
                        files[0],
                        "image has no label map",
                        f"add {lab_dir.name}/{case}{file_ext(files[0])} or remove the image",
                    )
                )
            )
            continue
        samples.append(
            {
                IMAGE: [str(f) for f in files] if len(files) > 1 else str(files[0]),
                LABEL: str(lab),
                "case_id": case,
                "group": case,
                "meta": {},
            }
        )
    orphans = sorted(set(labels) - set(groups))
    warnings = (
        [f"{lab_dir}: {len(orphans)} label maps without an image were ignored ({', '.join(orphans[:3])})"]
        if orphans
        else []
    )
    return RecipeResult(samples, warnings, {"expected": EXPECTED}, problems)


IMAGE_SUFFIXES = ("_image", "_img", "_volume", "_vol")


def _single_folder(data_dir: Path) -> RecipeResult:
    """One folder of ``<case>_image.nrrd`` + ``<case>_label.nrrd`` (or ``_seg``/``_mask``) pairs."""
    files = files_with_ext(data_dir, VOLUME_EXTS)
    labels = {mask_stem(strip_ext(p)): p for p in files if mask_stem(strip_ext(p)) != strip_ext(p)}
    samples, warnings = [], []
    for p in files:
        stem = strip_ext(p)
        if stem in {strip_ext(v) for v in labels.values()}:
            continue
        case = next((stem[: -len(s)] for s in IMAGE_SUFFIXES if stem.lower().endswith(s)), stem)
        if case in labels:
            samples.append({IMAGE: str(p), LABEL: str(labels[case]), "case_id": case, "group": case, "meta": {}})
        elif labels:  # a loose folder may hold other volumes too: named, and left out, but training goes on
            warnings.append(
                f"{p}: volume has no label map; it is left out of training; fix: add "
                f"{case}_label{file_ext(p)} beside it to train on it"
            )
    return RecipeResult(samples, warnings, {"expected": EXPECTED})


@register
class Nifti(Recipe):
    """3D volumes in the MSD or nnU-Net layout, or plain image and label folders."""

    name = "nifti"

    def cases(self, data_dir: Path, options: dict) -> RecipeResult:
        return nifti_samples(data_dir, options)
