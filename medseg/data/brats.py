"""Multi-modal 3D recipe in the BraTS layout: one folder per case.

Layouts (any volume format medseg reads: .nii/.nii.gz, .mha/.mhd, .nrrd)::

    <data_dir>/[train|validation/]<case>/Flair_*.nii.gz  T1c_*.nii.gz  OTMultiClass.nii.gz     BraTS 2013, DeepMedic
    <data_dir>/[HGG|LGG/]<case>/<case>_flair.nii.gz ... <case>_seg.nii.gz                      BraTS 2018-2021
    <data_dir>/<case>/<case>-t2f.nii.gz ... <case>-seg.nii.gz                                  BraTS 2023+
    <data_dir>/[HGG|LGG/]<case>/VSD.Brain.XX.O.MR_Flair.<id>/VSD.Brain.XX.O.MR_Flair.<id>.mha  BraTS 2013/2015 (VSD)
                               /VSD.Brain_3more.XX.O.OT.<id>/VSD.Brain_3more.XX.O.OT.<id>.mha

``options.modalities`` maps each channel name (``data.channels``) to filename
patterns (case-insensitive globs, tried on the file name with and without its
extension; the first pattern that matches wins); ``options.label`` lists
label-file patterns. A file may sit in the case folder or, as in the VSD
releases, alone in a sub-folder of its own name. A first-level folder named
train/validation/test becomes the case's ``subset`` (a predefined split); a
folder named HGG or LGG on the way to the case becomes its ``grade``.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

from medseg.data.base import IMAGE, LABEL, RecipeResult, files_below, files_with_ext, natural_key, register
from medseg.errors import fail
from medseg.io import VOLUME_EXTS, strip_ext

# BraTS 2013 (Flair_*, T1c_*), 2018-2021 (<case>_flair, _t1ce, _t1, _t2, _seg), 2023+ (<case>-t2f, -t1c, -t1n,
# -t2w, -seg) and the VSD releases of 2013/2015 (VSD.Brain.XX.O.MR_Flair.<id>, ..., VSD.Brain_3more.XX.O.OT.<id>)
DEFAULT_MODALITIES = {
    "flair": ["flair*", "*_flair", "*-t2f", "*_t2f", "*.mr_flair.*", "*flair*"],
    "t1c": ["t1c*", "*_t1ce", "*_t1c", "*-t1c", "*.mr_t1c.*", "*t1c*"],
    "t1": ["t1_*", "t1", "*_t1", "*-t1n", "*_t1n", "*.mr_t1.*"],
    "t2": ["t2_*", "t2", "*_t2", "*-t2w", "*_t2w", "*.mr_t2.*"],
}
DEFAULT_LABEL = ["otmulticlass*", "*_seg", "*-seg", "seg", "*.ot.*", "ot", "label", "*_label", "*-label", "*_gt"]
SUBSETS = {
    "train": "train",
    "training": "train",
    "tr": "train",
    "val": "val",
    "validation": "val",
    "valid": "val",
    "test": "test",
    "testing": "test",
    "ts": "test",
}
GRADES = {"hgg": "HGG", "lgg": "LGG"}


def modality_patterns(channels: list[str], user: dict | None = None) -> dict[str, list[str]]:
    """File-name patterns per channel: the defaults above, a user's ``data.options.modalities`` over them, and
    ``<ch>*`` / ``*_<ch>`` / ``*-<ch>`` for a channel neither names."""
    pats = {**DEFAULT_MODALITIES, **(user or {})}
    pats = {k: [v] if isinstance(v, str) else list(v) for k, v in pats.items()}
    for ch in channels:
        pats.setdefault(ch, [f"{ch}*", f"*_{ch}", f"*-{ch}"])
    return pats


def _matches(path: Path, pattern: str) -> bool:
    pat = pattern.lower()
    return fnmatch.fnmatch(path.name.lower(), pat) or fnmatch.fnmatch(strip_ext(path).lower(), pat)


def _in_own_folder(f: Path) -> bool:
    """Whether a file sits alone in a folder of its own name, as the VSD releases store volumes (``X/X.mha``)."""
    return strip_ext(f).lower() == f.parent.name.lower()


def _own_folder_file(folder: Path) -> Path | None:
    """The volume a VSD-style folder holds under its own name, if any."""
    return next((f for f in files_with_ext(folder, VOLUME_EXTS) if _in_own_folder(f)), None)


def case_files(case_dir: Path) -> list[Path]:
    """Volumes of one case: those in its folder, then those alone in a sub-folder of their own name."""
    files = files_with_ext(case_dir, VOLUME_EXTS)
    subs = sorted(
        (d for d in case_dir.iterdir() if d.is_dir() and not d.name.startswith(".")), key=lambda d: natural_key(d.name)
    )
    return files + [f for f in map(_own_folder_file, subs) if f is not None]


def first_match(files: list[Path], patterns: list[str]) -> Path | None:
    for pat in patterns:
        hits = [f for f in files if _matches(f, pat)]
        if hits:
            return hits[0]
    return None


def find_modalities(
    files: list[Path], channels: list[str], patterns: dict[str, list[str]], exclude: Path | None = None
) -> dict[str, Path | None]:
    """Each channel's file among ``files`` (the label map left out), ``None`` where none matches."""
    files = [f for f in files if f != exclude]
    return {ch: first_match(files, patterns[ch]) for ch in channels}


def _case_dir(label: Path) -> Path:
    """The case folder of a label map: its folder, or the one above when the label sits alone in ``X/X.mha``."""
    return label.parent.parent if _in_own_folder(label) else label.parent


def _unlabelled_cases(
    volumes: list[Path],
    labelled: set[Path],
    channels: list[str],
    mod_patterns: dict[str, list[str]],
    label_patterns: list[str],
) -> list[str]:
    """One warning per folder that holds a modality volume but no label map: such a case is left out of training,
    and says so, instead of vanishing from the count."""
    cases = sorted(
        {
            _case_dir(f)
            for f in volumes
            if _case_dir(f) not in labelled and any(_matches(f, pat) for ch in channels for pat in mod_patterns[ch])
        },
        key=lambda p: natural_key(str(p)),
    )
    looked = ", ".join(label_patterns[:4]) + (", ..." if len(label_patterns) > 4 else "")
    return [
        f"{case}: no label map (looked for {looked}); it is left out of training; fix: add its label map, or set "
        "data.options.label to the label file's pattern"
        for case in cases
    ]


@register("brats")
def brats_samples(data_dir: Path, options: dict) -> RecipeResult:
    channels = options.get("channels") or ["flair", "t1c"]
    mod_patterns = modality_patterns(channels, options.get("modalities"))
    label_patterns = options.get("label") or DEFAULT_LABEL
    label_patterns = [label_patterns] if isinstance(label_patterns, str) else list(label_patterns)
    expected = (
        f"expected one folder per case holding {', '.join(mod_patterns[c][0] for c in channels)} "
        f"and a label map {label_patterns[0]} (.nii.gz, .mha or .nrrd)"
    )
    samples, warnings, problems = [], [], []
    volumes = files_below(data_dir, VOLUME_EXTS)
    labelled = {_case_dir(p) for p in volumes if any(_matches(p, pat) for pat in label_patterns)}
    unlabelled = _unlabelled_cases(volumes, labelled, channels, mod_patterns, label_patterns)
    warnings += unlabelled
    if unlabelled and not labelled:  # the refusal says why nothing was found (an unlabelled validation set, say)
        expected = (
            f"{len(unlabelled)} case folder{'s' if len(unlabelled) > 1 else ''} hold volumes but no label "
            f"map (e.g. {unlabelled[0].split(': ')[0]}): add the label maps, or set data.options.label to "
            f"their file pattern; {expected}"
        )
    for case_dir in sorted(labelled, key=lambda p: natural_key(str(p))):
        files = case_files(case_dir)
        label = first_match(files, label_patterns)
        found = find_modalities(files, channels, mod_patterns, exclude=label)
        missing = [ch for ch, f in found.items() if f is None]
        if missing:
            problems.append(
                str(
                    fail(
                        case_dir,
                        f"modality {', '.join(repr(m) for m in missing)} missing (looked for "
                        f"{', '.join(mod_patterns[m][0] for m in missing)})",
                        f"add the {missing[0]} volume or set data.options.modalities.{missing[0]} to its file pattern",
                    )
                )
            )
            continue
        images = [str(found[ch]) for ch in channels]
        rel = case_dir.relative_to(data_dir).parts
        subset = SUBSETS.get(rel[0].lower()) if len(rel) > 1 else None
        meta: dict = {"modalities": list(channels)}
        grade = next((GRADES[part.lower()] for part in rel[:-1] if part.lower() in GRADES), None)
        if grade:
            meta["grade"] = grade
        sample = {IMAGE: images, LABEL: str(label), "case_id": case_dir.name, "group": case_dir.name, "meta": meta}
        if subset:
            sample["subset"] = subset
        samples.append(sample)
    n_2023 = sum(strip_ext(Path(s[LABEL])).lower().endswith("-seg") for s in samples)
    if n_2023:
        warnings.append(
            f"{n_2023} label maps are named as BraTS 2023+ (<case>-seg), whose values are 1 necrosis, "
            "2 oedema, 3 enhancing tumour (BraTS 2013 and configs/brats.yaml: 3 non-enhancing, "
            "4 enhancing); fix: name the classes as these files use them, e.g. --set "
            "'data.labels=[background,necrosis,oedema,enhancing]'"
        )
    return RecipeResult(samples, warnings, {"expected": expected}, problems)
