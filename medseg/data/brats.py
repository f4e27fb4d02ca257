"""Multi-modal 3D recipe in the BraTS layout: one folder per case.

Layout (BraTS 2013 as in DeepMedic; BraTS 2018+ names also match)::

    <data_dir>/[train|validation/]<case>/Flair_*.nii.gz  T1c_*.nii.gz  OTMultiClass.nii.gz

``options.modalities`` maps each channel name (``data.channels``) to filename
patterns (case-insensitive globs; the first that matches wins);
``options.label`` lists label-file patterns. A first-level folder named
train/validation/test becomes the case's ``subset`` (a predefined split).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import fail
from .base import IMAGE, LABEL, RecipeResult, glob_ci, natural_key, register

# BraTS 2013 (Flair_*, T1c_*), 2018-2021 (<case>_flair, _t1ce, _t1, _t2, _seg) and 2023+ (<case>-t2f, -t1c, -t1n,
# -t2w, -seg) names
DEFAULT_MODALITIES = {
    "flair": ["flair*.nii*", "*_flair.nii*", "*-t2f.nii*", "*_t2f.nii*", "*flair*.nii*"],
    "t1c": ["t1c*.nii*", "*_t1ce.nii*", "*_t1c.nii*", "*-t1c.nii*", "*t1c*.nii*"],
    "t1": ["t1_*.nii*", "*_t1.nii*", "*-t1n.nii*", "*_t1n.nii*"],
    "t2": ["t2_*.nii*", "*_t2.nii*", "*-t2w.nii*", "*_t2w.nii*"],
}
DEFAULT_LABEL = ["otmulticlass*.nii*", "*_seg.nii*", "*-seg.nii*", "seg.nii*"]
SUBSETS = {"train": "train", "training": "train", "tr": "train", "val": "val", "validation": "val",
           "valid": "val", "test": "test", "testing": "test", "ts": "test"}


def _match(folder: Path, patterns: list[str]) -> Path | None:
    for pat in patterns:
        hits = glob_ci(folder, pat)
        if hits:
            return hits[0]
    return None


@register("brats")
def brats_samples(data_dir: Path, options: dict) -> RecipeResult:
    channels = options.get("channels") or ["flair", "t1c"]
    mod_patterns = {**DEFAULT_MODALITIES, **(options.get("modalities") or {})}
    for ch in channels:
        mod_patterns.setdefault(ch, [f"{ch}*.nii*", f"*_{ch}.nii*", f"*-{ch}.nii*"])
    label_patterns = options.get("label") or DEFAULT_LABEL
    expected = (f"expected one folder per case holding {', '.join(mod_patterns[c][0] for c in channels)} "
                f"and a label map {label_patterns[0]}")
    samples, warnings, problems = [], [], []
    folders = sorted({p.parent for pat in label_patterns for p in data_dir.rglob("*") if p.is_file()
                      and p in glob_ci(p.parent, pat)}, key=lambda p: natural_key(str(p)))
    for case_dir in folders:
        label = _match(case_dir, label_patterns)
        found = {ch: _match(case_dir, mod_patterns[ch]) for ch in channels}
        missing = [ch for ch, f in found.items() if f is None]
        if missing:
            problems.append(str(fail(case_dir, f"modality {', '.join(repr(m) for m in missing)} missing (looked for "
                                               f"{', '.join(mod_patterns[m][0] for m in missing)})",
                                     f"add the {missing[0]} volume or set data.options.modalities.{missing[0]} to its "
                                     "file pattern")))
            continue
        images = [str(found[ch]) for ch in channels]
        rel = case_dir.relative_to(data_dir).parts
        subset = SUBSETS.get(rel[0].lower()) if len(rel) > 1 else None
        sample = {IMAGE: images, LABEL: str(label), "case_id": case_dir.name, "group": case_dir.name,
                  "meta": {"modalities": list(channels)}}
        if subset:
            sample["subset"] = subset
        samples.append(sample)
    return RecipeResult(samples, warnings, {"expected": expected}, problems)
