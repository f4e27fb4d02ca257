"""How a model's output becomes a mask: one options object for ``medseg infer`` and ``medseg evaluate --model``.

:class:`InferenceOptions` holds what the command line may override (test-time flips, the sliding window, the
threshold and the clean-up of the label map). ``None`` stands for "the checkpoint's own setting": the options are
built once from the flags, their ranges checked there (naming the flag), and :meth:`InferenceOptions.for_checkpoint`
fills in the rest from the checkpoint's ``infer`` section, so no caller sets values on a loaded config.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from medseg.config import Config, check_value

POST_KEYS = ("threshold", "keep_largest", "min_size", "fill_holes")  # the clean-up, as findings JSON records it
RANGED = {  # options whose values obey a config key's range
    "threshold": "infer.threshold",
    "min_size": "infer.min_size",
    "overlap": "infer.overlap",
    "sw_batch_size": "infer.sw_batch_size",
}


def flag(name: str) -> str:
    """The command-line flag of an option: ``min_size`` -> ``--min-size``."""
    return "--" + name.replace("_", "-")


@dataclass(frozen=True)
class InferenceOptions:
    """What ``medseg infer`` and ``medseg evaluate --model`` may set; ``None`` means the checkpoint's setting.

    Attributes:
        tta: average over flips along every spatial axis (test-time augmentation).
        threshold: binary tasks: foreground where the probability is above this.
        keep_largest: keep only the largest connected component of each class.
        min_size: drop components under this size (mm³ in 3D, mm² in 2D; px² without pixel spacing).
        fill_holes: fill enclosed holes of each class.
        overlap: sliding-window overlap (0-1); ``None`` keeps each ensemble member's own.
        sw_batch_size: windows per forward pass; ``None`` keeps each ensemble member's own.
        probabilities: also write the probability map of each case.
        dicom_seg: also write a DICOM SEG referencing each DICOM series input.
    """

    tta: bool | None = None
    threshold: float | None = None
    keep_largest: bool | None = None
    min_size: float | None = None
    fill_holes: bool | None = None
    overlap: float | None = None
    sw_batch_size: int | None = None
    probabilities: bool = False
    dicom_seg: bool = False

    def __post_init__(self) -> None:
        for name, key in RANGED.items():
            check_value(key, getattr(self, name), flag(name))

    @classmethod
    def from_flags(cls, **flags) -> InferenceOptions:
        """The options of a command line's flags (``None``: not given); an unknown name is a programming error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(flags) - known)
        if unknown:
            raise TypeError(f"unknown inference option(s): {', '.join(unknown)}")
        return cls(**flags)

    def given_post(self) -> list[str]:
        """The clean-up options that were set (not left to the checkpoint), in flag order."""
        return [k for k in POST_KEYS if getattr(self, k) is not None]

    def for_checkpoint(self, cfg: Config) -> InferenceOptions:
        """These options with every unset flip and clean-up option taken from ``cfg.infer`` (the first checkpoint of
        an ensemble); the sliding window stays per member (:meth:`window`)."""
        unset = {k: getattr(cfg.infer, k) for k in POST_KEYS if getattr(self, k) is None}
        if self.tta is None:
            unset["tta"] = bool(cfg.infer.tta)
        return replace(self, **unset)

    @property
    def post(self) -> dict:
        """The clean-up settings, as findings JSON and eval.json record them."""
        return {k: getattr(self, k) for k in POST_KEYS}

    def window(self, cfg: Config) -> tuple[float, int]:
        """``(overlap, sw_batch_size)`` for a checkpoint of config ``cfg``: the flags when given, else its own."""
        overlap = cfg.infer.overlap if self.overlap is None else self.overlap
        batch = cfg.infer.sw_batch_size if self.sw_batch_size is None else self.sw_batch_size
        return overlap, batch
