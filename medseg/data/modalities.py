"""Finding a multi-modal case's files by name: one volume per channel (FLAIR, T1c, ...) in one case folder.

The patterns cover the BraTS releases (2013 to 2023+, including the VSD layout that stores each volume alone in a
folder of its own name); a config adds its own in ``data.options.modalities``. The ``brats`` recipe pairs them
with a label map, and ``medseg infer`` uses the same patterns to recognise a folder as one case.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

from medseg.data.files import files_with_ext, natural_key
from medseg.io import VOLUME_EXTS, strip_ext

# BraTS 2013 (Flair_*, T1c_*), 2018-2021 (<case>_flair, _t1ce, _t1, _t2, _seg), 2023+ (<case>-t2f, -t1c, -t1n,
# -t2w, -seg) and the VSD releases of 2013/2015 (VSD.Brain.XX.O.MR_Flair.<id>, ..., VSD.Brain_3more.XX.O.OT.<id>)
DEFAULT_MODALITIES = {
    "flair": ["flair*", "*_flair", "*-t2f", "*_t2f", "*.mr_flair.*", "*flair*"],
    "t1c": ["t1c*", "*_t1ce", "*_t1c", "*-t1c", "*.mr_t1c.*", "*t1c*"],
    "t1": ["t1_*", "t1", "*_t1", "*-t1n", "*_t1n", "*.mr_t1.*"],
    "t2": ["t2_*", "t2", "*_t2", "*-t2w", "*_t2w", "*.mr_t2.*"],
}


def modality_patterns(channels: list[str], user: dict | None = None) -> dict[str, list[str]]:
    """File-name patterns per channel: the defaults above, a user's ``data.options.modalities`` over them, and
    ``<ch>*`` / ``*_<ch>`` / ``*-<ch>`` for a channel neither names."""
    pats = {**DEFAULT_MODALITIES, **(user or {})}
    pats = {k: [v] if isinstance(v, str) else list(v) for k, v in pats.items()}
    for ch in channels:
        pats.setdefault(ch, [f"{ch}*", f"*_{ch}", f"*-{ch}"])
    return pats


def matches(path: Path, pattern: str) -> bool:
    """Whether a case-insensitive glob matches the file name, with or without its extension."""
    pat = pattern.lower()
    return fnmatch.fnmatch(path.name.lower(), pat) or fnmatch.fnmatch(strip_ext(path).lower(), pat)


def in_own_folder(f: Path) -> bool:
    """Whether a file sits alone in a folder of its own name, as the VSD releases store volumes (``X/X.mha``)."""
    return strip_ext(f).lower() == f.parent.name.lower()


def _own_folder_file(folder: Path) -> Path | None:
    """The volume a VSD-style folder holds under its own name, if any."""
    return next((f for f in files_with_ext(folder, VOLUME_EXTS) if in_own_folder(f)), None)


def case_files(case_dir: Path) -> list[Path]:
    """Volumes of one case: those in its folder, then those alone in a sub-folder of their own name."""
    files = files_with_ext(case_dir, VOLUME_EXTS)
    subs = sorted(
        (d for d in case_dir.iterdir() if d.is_dir() and not d.name.startswith(".")), key=lambda d: natural_key(d.name)
    )
    return files + [f for f in map(_own_folder_file, subs) if f is not None]


def first_match(files: list[Path], patterns: list[str]) -> Path | None:
    """The first file that the earliest matching pattern names."""
    for pat in patterns:
        hits = [f for f in files if matches(f, pat)]
        if hits:
            return hits[0]
    return None


def find_modalities(
    files: list[Path], channels: list[str], patterns: dict[str, list[str]], exclude: Path | None = None
) -> dict[str, Path | None]:
    """Each channel's file among ``files`` (the label map left out), ``None`` where none matches."""
    files = [f for f in files if f != exclude]
    return {ch: first_match(files, patterns[ch]) for ch in channels}


def modality_case(folder: Path, channels: list[str], user_patterns: dict | None = None) -> list[str] | None:
    """The files of one multi-modal case held in ``folder``, in channel order; None unless every channel is there."""
    found = find_modalities(case_files(folder), channels, modality_patterns(channels, user_patterns))
    if any(f is None for f in found.values()):
        return None
    return [str(found[ch]) for ch in channels]
