"""``medseg datasets check``: what a recipe finds in a data directory, and what is wrong with it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medseg.config import Config
from medseg.data.base import IMAGE, LABEL, get_recipe, load_samples
from medseg.errors import MedsegError, fail
from medseg.io import file_ext

LOSSY_EXTS = (".jpg", ".jpeg")


def check_dataset(cfg: Config, data_dir: str | Path, progress: bool = False) -> dict:
    """Read every case of ``data_dir`` with ``cfg``'s recipe and validators.

    Returns a JSON-serialisable report with ``n_cases`` (samples), ``n_groups`` (patients), sizes, spacings, label
    values (``label_values_found``, and ``mask_summary``: what the loader makes of them), metadata keys, warnings
    and ``problems`` (one line per bad file). Raises MedsegError when the layout itself is wrong or empty.
    """
    from medseg.progress import track

    result = load_samples(
        cfg.data.recipe, data_dir, {**cfg.data.options, "channels": cfg.data.channels}, collect_problems=True
    )
    tally = _Tally(cfg, problems=list(result.problems))  # cases the recipe left out, then files the loader rejects
    for sample in track(result.samples, desc="checking", enabled=progress, unit="case"):
        tally.read(sample)
    return _report(cfg, data_dir, result, tally)


@dataclass
class _Tally:
    """What the cases hold, counted as each is read by the loader (and validators) that training uses."""

    cfg: Config
    problems: list[str]
    sizes: Counter = field(default_factory=Counter)
    spacings: Counter = field(default_factory=Counter)
    values: Counter = field(default_factory=Counter)
    channels: Counter = field(default_factory=Counter)
    exif: Counter = field(default_factory=Counter)
    thresholds: Counter = field(default_factory=Counter)  # 2D masks by the value above which they are foreground
    lossy: int = 0  # thresholded masks stored as JPEG
    fg_fraction: list[float] = field(default_factory=list)
    loader: object = None

    def __post_init__(self):
        from medseg.data.loading import LoadImage2Dd, LoadVolumed

        cfg = self.cfg
        if cfg.data.spatial_dims == 2:
            self.loader = LoadImage2Dd(
                len(cfg.data.channels),
                cfg.num_classes,
                context=cfg.data.context_slices,
                describe=True,
                select=cfg.channel_select,
                stored=cfg.data.stored_channels,
                instances=cfg.instances,
                values=cfg.value_classes,
            )
        else:
            self.loader = LoadVolumed(
                len(cfg.data.channels),
                cfg.num_classes,
                describe=True,
                instances=cfg.instances,
                values=cfg.value_classes,
            )

    def read(self, sample: dict) -> None:
        """Count one case; a file the loader rejects becomes a problem line (each file is read once)."""
        try:
            self._count(sample, self.loader({IMAGE: sample[IMAGE], LABEL: sample[LABEL]}))
        except MedsegError as exc:
            self.problems.append(str(exc))
        except Exception as exc:  # noqa: BLE001 - one odd file must not end the check of all the others
            self.problems.append(_unexpected(sample, exc))

    def _count(self, sample: dict, out: dict) -> None:
        meta = out["image_meta"]
        self.sizes["x".join(str(v) for v in meta["original_size"])] += 1
        if self.cfg.data.spatial_dims == 3:
            self.spacings["x".join(f"{v:.3g}" for v in meta["spacing"])] += 1
        self.channels[meta["channels_on_disk"]] += 1
        self.exif[meta.get("exif", "none")] += 1
        self.values.update(out["label_meta"]["values_on_disk"])
        above = out["label_meta"].get("foreground_above", 0.0)
        self.thresholds[above] += 1
        self.lossy += above > 0 and file_ext(sample.get("label_source", sample[LABEL])) in LOSSY_EXTS
        self.fg_fraction.append(float((np.asarray(out[LABEL]) > 0).mean()))


def _report(cfg: Config, data_dir, result, tally: _Tally) -> dict:
    samples = result.samples
    meta_keys = sorted({k for s in samples for k in s.get("meta", {})})
    warnings = list(result.warnings)
    if cfg.data.spatial_dims == 2:
        if not cfg.data.stored_channels:  # channels picked by name are taken as they are: nothing to warn of
            warnings += _channel_warnings(tally.channels, cfg.data.channels)
        warnings += _exif_warnings(tally.exif)
    fg = tally.fg_fraction
    report = {
        "recipe": cfg.data.recipe,
        "data_dir": str(Path(data_dir)),
        "n_cases": len(samples),
        "n_groups": len({get_recipe(cfg.data.recipe).split_group(s) for s in samples}),
        "subsets": dict(Counter(s.get("subset", "none") for s in samples)),
        "spatial_dims": cfg.data.spatial_dims,
        "channels_expected": list(cfg.data.channels),
        "channels_found": {str(k): v for k, v in tally.channels.items()},
        "classes": list(cfg.data.labels),
        "label_values_found": sorted(tally.values),
        "mask_summary": _mask_summary(
            sorted(tally.values),
            tally.thresholds,
            tally.lossy,
            list(cfg.data.labels),
            cfg.data.options.get("foreground_values"),
        ),
        "image_sizes": dict(tally.sizes.most_common(10)),
        "spacings_mm": dict(tally.spacings.most_common(10)),
        "foreground_fraction_mean": round(float(np.mean(fg)), 5) if fg else None,
        "empty_masks": int(sum(f == 0 for f in fg)),
        "metadata_keys": meta_keys,
        "contents": result.info.get("summary"),  # the recipe's own count (nuclei: images and nuclei)
        "warnings": warnings,
        "problems": tally.problems,
    }
    if "diagnosis" in meta_keys:
        report["diagnosis_counts"] = dict(Counter(str(s["meta"].get("diagnosis")) for s in samples))
    return report


def _unexpected(sample: dict, exc: Exception) -> str:
    """A loader failure medseg has no message for, as one problem line naming the case's files."""
    image = sample[IMAGE][0] if isinstance(sample[IMAGE], (list, tuple)) else sample[IMAGE]
    text = " ".join(str(exc).split())[:160]
    return str(
        fail(
            image,
            f"could not be read with its mask {Path(sample[LABEL]).name} ({type(exc).__name__}: {text})",
            "open both files in a viewer and re-export them, or remove the case (and report the message)",
        )
    )


def _images(count: int, one: str, many: str) -> str:
    """ "1 image has" / "3 images have"."""
    return f"{count} image {one}" if count == 1 else f"{count} images {many}"


def _channel_warnings(found: Counter, expected: list[str]) -> list[str]:
    """What the 2D loader will do to images whose channel count differs from the config's ``data.channels``."""
    from medseg.data.loading import channel_plan

    n, out, total = len(expected), [], sum(found.values())
    for c, count in sorted(found.items()):
        c = int(c)
        plan = channel_plan(c, n)
        if plan in ("keep", "drop_alpha"):
            continue
        if plan == "repeat" and 2 * count < total:  # a few grey photos in a colour set: nothing to change
            out.append(_few_grey(count, total, expected))
            continue
        what, fix = {
            "grey": ("turned to grey (colour is lost)", "set data.channels to [red, green, blue] to keep colour"),
            "repeat": (f"repeated into {n} identical channels", "set data.channels to one name, e.g. [image]"),
            "refuse": ("refused", f"set data.channels to {c} names"),
        }[plan]
        out.append(
            f"{_images(count, 'has', 'have')} {c} channel{'s' if c > 1 else ''} but the config expects {n} "
            f"({', '.join(expected)}): they will be {what}; {fix}"
        )
    return out


def _number(v) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def _listed(values: list) -> str:
    """ "0", "0 and 255", "0, 1 and 255"."""
    words = [_number(v) for v in values]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _values_on_disk(values: list) -> str:
    """The mask values found, as a person reads them: listed when few, else counted with their range."""
    if len(values) <= 4:
        return f"value{'s' if len(values) > 1 else ''} {_listed(values)} on disk"
    return f"{len(values)} values {_number(values[0])}..{_number(values[-1])} on disk"


def _mask_summary(values: list, thresholds: Counter, lossy: int, classes: list[str], chosen) -> str:
    """What the masks hold and what medseg makes of them: the foreground it decided on (binary tasks) or the
    classes the values are read as; one phrase for ``format_report``."""
    if not values:
        return "no mask could be read"
    found = _values_on_disk(values)
    if len(classes) != 2:
        return f"{found}, read as classes 0..{len(classes) - 1} ({', '.join(classes)})"
    if chosen is not None:  # the masks read are the derived 0/255 ones: the values chosen say more
        return f"foreground = {_any_of(list(chosen))} (data.options.foreground_values), as 0/1"
    ranged = sum(n for t, n in thresholds.items() if t > 0)
    plain = sum(thresholds.values()) - ranged
    if not ranged:
        return f"{found}, foreground = {_nonzero_text(values)}"
    why = " (lossy JPEG)" if lossy == ranged else " (a range of values: anti-aliased or lossy)"
    cut = _threshold_text(thresholds)
    if not plain:
        return f"{found}{why}: foreground = {cut}, as 0/1"
    return f"{found}{why}: foreground = not 0 in {plain} mask{'s' if plain > 1 else ''}, {cut} in {ranged}, as 0/1"


def _nonzero_text(values: list) -> str:
    """Masks with one value per pixel class: every value but 0 is foreground."""
    fg = [v for v in values if v != 0]
    if not fg:
        return "none (every mask is empty)"
    return _any_of(fg) if len(fg) <= 4 else "any value but 0"


def _any_of(values: list) -> str:
    """ "255" / "any of 1, 255"."""
    return _number(values[0]) if len(values) == 1 else f"any of {', '.join(_number(v) for v in values)}"


def _threshold_text(thresholds: Counter) -> str:
    """Masks with a range of values are foreground above half their maximum: the cut, as a whole value."""
    cuts = Counter()
    for t, n in thresholds.items():
        if t > 0:
            cuts[int(t)] += n  # 127.5 (a maximum of 255) and 127 (of 254) cut alike
    if len(cuts) == 1:
        return f"above {next(iter(cuts))}"
    return f"above half each mask's maximum (above {cuts.most_common(1)[0][0]} for most)"


def _few_grey(count: int, total: int, expected: list[str]) -> str:
    return (
        f"{_images(count, 'is', 'are')} greyscale (1 channel) among {total}: expanded to the configured "
        f"{len(expected)} channels ({', '.join(expected)}) by repeating {'its' if count == 1 else 'their'} grey"
    )


def _exif_warnings(exif: Counter) -> list[str]:
    """Images a camera marked as turned or flipped (EXIF orientation): read upright, as viewers show them, unless
    only their stored pixels fit the mask."""
    out = []
    if exif["upright"]:
        out.append(
            f"{_images(exif['upright'], 'carries', 'carry')} an EXIF orientation: read upright, as viewers "
            "and annotation tools show them, so the masks must have been drawn on the upright picture; "
            "check one overlay (medseg evaluate writes them)"
        )
    if exif["as_stored"]:
        out.append(
            f"{_images(exif['as_stored'], 'fits its mask', 'fit their masks')} only with the EXIF orientation "
            "ignored: trained as stored, but medseg infer reads images upright; fix: save these images without "
            "the orientation tag (e.g. exiftool -Orientation= -n) so that both agree"
        )
    return out


def format_report(r: dict) -> str:
    lines = [
        f"{r['recipe']} data in {r['data_dir']}",
        f"  cases: {r['n_cases']} ({r['n_groups']} groups/patients)"
        + (f", subsets {r['subsets']}" if set(r["subsets"]) != {"none"} else ""),
        *([f"  contents: {r['contents']}"] if r.get("contents") else []),
        f"  channels: expected {r['channels_expected']}, found {r['channels_found']}",
        f"  classes: {', '.join(r['classes'])}",
        f"  masks: {r['mask_summary']}",
        f"  image sizes: {r['image_sizes']}",
    ]
    if r["spacings_mm"]:
        lines.append(f"  spacing (mm): {r['spacings_mm']}")
    if r["foreground_fraction_mean"] is not None:
        lines.append(f"  mean foreground fraction {r['foreground_fraction_mean']:.4f}; empty masks: {r['empty_masks']}")
    if r.get("diagnosis_counts"):
        lines.append(f"  diagnosis counts: {r['diagnosis_counts']}")
    if r["metadata_keys"]:
        lines.append(
            f"  metadata: {', '.join(r['metadata_keys'][:12])}{' ...' if len(r['metadata_keys']) > 12 else ''}"
        )
    lines += [f"  warning: {w}" for w in r["warnings"]]
    lines += [f"  PROBLEM: {p}" for p in r["problems"]]
    lines.append("  OK" if not r["problems"] else f"  {len(r['problems'])} problem(s) found")
    return "\n".join(lines)
