"""What the loader learnt about a case while reading it, carried as one object to findings, log and report.

A photo turned upright by its EXIF orientation, the neighbouring slices a 2.5D model found, the slices whose
statistics normalised a slice, the DICOM series chosen among several: each changes how a reader should take the
mask, so the findings JSON records it, the log says it once, and the PDF shows it. :class:`CaseFacts` is built
where the case is read and read back from a findings JSON by the report, under the same keys.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

KEYS = ("context_slices_found", "volume_slices", "exif_orientation", "dicom_series")  # findings JSON keys


@dataclass(frozen=True)
class CaseFacts:
    """A case's loader facts; ``None`` where the fact does not apply to this case.

    Attributes:
        context_slices_found: neighbouring slices found for a 2.5D model (0: the slice was repeated instead).
        volume_slices: slices whose statistics normalised this slice (1: only its own were found).
        exif_orientation: the EXIF orientation applied to turn a photo upright.
        dicom_series: the DICOM series segmented (``series_uid``, ``files``, ``description``) and the folder's
            ``other_series``.
    """

    context_slices_found: int | None = None
    volume_slices: int | None = None
    exif_orientation: int | None = None
    dicom_series: dict | None = None

    @classmethod
    def from_loader(cls, image_meta: dict, volume_meta: dict, context: bool) -> CaseFacts:
        """The facts in the preprocessing pipeline's ``image_meta`` (2D) and a volume reader's geometry ``meta``;
        ``context``: the model is 2.5D (so the count of neighbouring slices found is a fact, 0 included)."""
        return cls(
            context_slices_found=int(image_meta.get("context_found", 0)) if context else None,
            volume_slices=int(image_meta["volume_slices"]) if "volume_slices" in image_meta else None,
            exif_orientation=image_meta["exif_orientation"] if image_meta.get("exif") == "upright" else None,
            dicom_series=volume_meta.get("dicom_series"),
        )

    @classmethod
    def from_findings(cls, findings: dict) -> CaseFacts:
        """The facts a findings JSON recorded (one written before a fact existed simply lacks it)."""
        return cls(**{k: findings.get(k) for k in KEYS})

    def to_findings(self) -> dict:
        """The findings JSON entries: only the facts that apply."""
        return {k: getattr(self, k) for k in KEYS if getattr(self, k) is not None}

    @property
    def other_series(self) -> list[dict]:
        """The DICOM series of the case's folder that were not segmented."""
        return (self.dicom_series or {}).get("other_series") or []

    def notes(self, source: str, shape) -> list[tuple[int, str]]:
        """The log lines (``(level, text)``) a reader of the mask of ``source`` (mask ``shape``) should see."""
        same_volume = "fix: keep the volume's slices side by side, named <stem>_<n>.<ext>"
        out = []
        if self.context_slices_found == 0:
            text = f"{source}: no neighbouring slices found for this 2.5D model, so it saw the slice repeated"
            out.append((logging.WARNING, f"{text}; {same_volume}"))
        if self.other_series:
            chosen, others = self.dicom_series, self.other_series
            skipped = ", ".join(f"'{o['description']}' ({o['files']} files)" for o in others)
            text = (
                f"{source}: the folder holds {len(others) + 1} DICOM series; the largest was segmented "
                f"({chosen['files']} files, '{chosen['description']}'), not {skipped}"
            )
            out.append((logging.WARNING, f"{text}; fix: put each series in a folder of its own to segment another one"))
        if self.exif_orientation:
            text = (
                f"note: {source}: EXIF orientation {self.exif_orientation} applied: the image was segmented upright, "
                f"as viewers show it, and the mask ({shape[0]}x{shape[1]}) is upright too"
            )
            out.append((logging.INFO, text))
        if self.volume_slices == 1:
            text = (
                f"{source}: this model normalises each slice with its whole volume's statistics, but no other slice "
                "of the volume was found, so this slice's own were used"
            )
            out.append((logging.WARNING, f"{text}; {same_volume}"))
        return out
