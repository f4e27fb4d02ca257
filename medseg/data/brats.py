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

from pathlib import Path

from medseg.data.base import IMAGE, LABEL, Recipe, RecipeResult, register
from medseg.data.files import files_below, natural_key
from medseg.data.modalities import case_files, find_modalities, first_match, in_own_folder, matches, modality_patterns
from medseg.errors import fail
from medseg.io import VOLUME_EXTS, strip_ext

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


def _case_dir(label: Path) -> Path:
    """The case folder of a label map: its folder, or the one above when the label sits alone in ``X/X.mha``."""
    return label.parent.parent if in_own_folder(label) else label.parent


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
            if _case_dir(f) not in labelled and any(matches(f, pat) for ch in channels for pat in mod_patterns[ch])
        },
        key=lambda p: natural_key(str(p)),
    )
    looked = ", ".join(label_patterns[:4]) + (", ..." if len(label_patterns) > 4 else "")
    return [
        f"{case}: no label map (looked for {looked}); it is left out of training; fix: add its label map, or set "
        "data.options.label to the label file's pattern"
        for case in cases
    ]


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
    labelled = {_case_dir(p) for p in volumes if any(matches(p, pat) for pat in label_patterns)}
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


@register
class BraTS(Recipe):
    """Multi-modal brain MRI, one folder per case; a train/validation folder is a predefined split."""

    name = "brats"

    def cases(self, data_dir: Path, options: dict) -> RecipeResult:
        return brats_samples(data_dir, options)
