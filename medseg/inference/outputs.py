"""What ``medseg infer`` writes: the mask and probabilities of each case in its input's geometry, its findings
JSON, the class tables for viewers, and the one-line errors that say what is safe on disk when a write fails."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from medseg import __version__
from medseg.checkpoint import describe
from medseg.data.lookup import lookup_metadata
from medseg.errors import MedsegError, fail, os_fix, os_reason
from medseg.inference.cases import Case, output_ext
from medseg.inference.findings import instance_findings, lesion_findings
from medseg.inference.predictor import Prediction, Predictor
from medseg.io import Geometry, atomic_write, write_image_2d, write_volume
from medseg.objects import object_scores


@dataclass
class CaseOutputs:
    """The files one case's segmentation writes into the --out folder."""

    seg: Path
    findings: Path
    prob: Path | None
    objects: Path | None = None
    dicom: Path | None = None

    @classmethod
    def of(
        cls,
        case: Case,
        out_dir: Path,
        spatial_dims: int,
        probabilities: bool,
        instances: bool = False,
        dicom_seg: bool = False,
    ):
        """``<case>_seg.<ext>`` in the input's own format (an instance map for ``instances``: 16-bit PNG for 2D
        images), ``<case>_findings.json``, with ``instances`` ``<case>_objects.csv``, with ``probabilities``
        ``<case>_prob.nii.gz`` (``.tif`` for 2D images) and with ``dicom_seg`` ``<case>_seg.dcm``."""
        prob = out_dir / f"{case.case_id}_prob{'.nii.gz' if spatial_dims == 3 else '.tif'}"
        return cls(
            out_dir / f"{case.case_id}_seg{output_ext(case)}",
            out_dir / f"{case.case_id}_findings.json",
            prob if probabilities else None,
            out_dir / f"{case.case_id}_objects.csv" if instances else None,
            out_dir / f"{case.case_id}_seg.dcm" if dicom_seg else None,
        )

    @property
    def targets(self) -> list[Path]:
        return [self.seg, self.findings] + [p for p in (self.prob, self.objects, self.dicom) if p]

    def refuse_existing(self, force: bool) -> None:
        """Outputs of an earlier run are never overwritten unless the user says so."""
        if force:
            return
        for t in self.targets:
            if t.exists():
                raise fail(t, "already exists", "pass --force to overwrite or choose another --out")

    def earlier_run(self, model_shas: list[str]) -> tuple[str, str | dict | None]:
        """What an earlier run left of this case in the folder: ``("new", None)`` nothing; ``("done", FINDINGS)``
        all of its outputs, made by these very models (a re-run skips it; its findings as read, with
        ``findings_json``); ``("refused", LINE)`` only some of them, or another model's (only ``--force`` redoes
        it). The findings JSON is written last, so it marks a whole case."""
        present = [t for t in self.targets if t.exists()]
        if not present:
            return "new", None
        redo = "pass --force to redo this case, or choose another --out"
        if not self.findings.is_file():
            return "refused", f"{present[0]}: already exists; fix: pass --force to overwrite or choose another --out"
        try:
            record = json.loads(self.findings.read_text())
            made_by = [m["sha256_12"] for m in record["models"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return "refused", f"{self.findings}: already exists but cannot be read ({os_reason(exc)}); fix: {redo}"
        if made_by != list(model_shas):
            by = ", ".join(map(str, made_by)) or "no model"
            return "refused", f"{self.findings}: already exists, made by another model (sha256 {by}); fix: {redo}"
        missing = [t.name for t in self.targets if t not in present]
        if missing:
            return "refused", f"{self.findings}: this case was segmented without {', '.join(missing)}; fix: {redo}"
        return "done", {**record, "findings_json": str(self.findings)}

    def failed(self, exc: OSError) -> Path:
        """The output being written when ``exc`` happened (its name is in the temporary file's name)."""
        name = Path(str(exc.filename or "")).name
        for t in self.targets:
            if t.name in name:
                return t
        return self.targets[0]


def write_case(
    paths: CaseOutputs, case: Case, labels: np.ndarray, pred: Prediction, predictor: Predictor, t_start: float
) -> dict:
    """Write one case's mask, probabilities and findings JSON and return the findings; when a write fails (a full
    disk, a read-only folder) no file of this case that was not there before stays half written."""
    existed = {t for t in paths.targets if t.exists()}
    try:
        return _write_case(paths, case, labels, pred, predictor, t_start)
    except OSError as exc:
        for t in paths.targets:
            if t not in existed and t.exists():
                t.unlink()
        raise CaseWriteError(paths.failed(exc), exc) from None


def _write_case(paths, case, labels, pred, predictor, t_start) -> dict:
    cfg, geom, timings = predictor.models[0].cfg, pred.geom, pred.timings
    t0 = time.time()
    if paths.dicom:  # first: a series it cannot describe fails the case before any file of it is written
        write_case_dicom_seg(paths.dicom, labels, geom, cfg, predictor)
    write_masks(paths, labels, pred.probs, geom, cfg.binary and not cfg.instances)
    timings["write_s"] = round(time.time() - t0, 3)
    t0 = time.time()
    if cfg.instances:
        findings = instance_findings(labels, object_scores(labels, pred.probs), geom, list(cfg.data.labels))
        write_objects_csv(paths.objects, findings, geom.ndim)
    else:
        findings = lesion_findings(labels, geom, list(cfg.data.labels))
    timings["findings_s"] = round(time.time() - t0, 3)
    timings["total_s"] = round(time.time() - t_start, 3)
    result = findings_record(paths, case, pred, predictor, findings)
    atomic_write(paths.findings, lambda tmp: Path(tmp).write_text(json.dumps(result, indent=1)), suffix=".json")
    result["findings_json"] = str(paths.findings)
    return result


def write_case_dicom_seg(path: Path, labels: np.ndarray, geom: Geometry, cfg, predictor: Predictor) -> None:
    """The case's DICOM SEG: one segment per foreground class (an instance map: its objects as one segment)."""
    from medseg.io.dicom_seg import write_dicom_seg

    names = list(cfg.data.labels)
    if cfg.instances:
        labels, names = (labels > 0).astype(np.uint8), names[:2]
    model = predictor.models[0].ckpt["model"]["name"]
    atomic_write(path, lambda tmp: write_dicom_seg(labels, geom, names, Path(tmp), model), suffix=".dcm")


def write_masks(paths: CaseOutputs, labels: np.ndarray, probs: np.ndarray, geom: Geometry, binary: bool) -> None:
    """The mask (binary 2D masks as 0/255 PNGs) and the probabilities, each on the input's own grid."""
    if geom.ndim == 2:
        if labels.max(initial=0) > 65535:  # only an instance map gets here
            raise fail(
                paths.seg,
                f"would hold {int(labels.max())} objects, more than a 16-bit PNG can number",
                "raise infer.min_size (specks are most of them) or segment the image in parts",
            )
        write_image_2d(labels * 255 if binary else labels, paths.seg)
        if paths.prob:
            import tifffile

            atomic_write(paths.prob, lambda tmp: tifffile.imwrite(tmp, probs.astype(np.float32)), suffix=".tif")
        return
    write_volume(labels, geom, paths.seg, force=True)
    if paths.prob:
        p = probs[0] if binary else np.moveaxis(probs, 0, -1)
        pg = Geometry(geom.shape, geom.spacing, geom.affine, geom.fmt, geom.path, header=None, meta=geom.meta)
        write_volume(p.astype(np.float32), pg, paths.prob, force=True)


def write_objects_csv(path: Path, findings: dict, ndim: int) -> None:
    """One row per object of an instance map: id (its value in the map), class, size in the findings' unit (mm²,
    mL or px², named in the header), maximum diameter, centroid and box corners (mm or px; one column per axis),
    and score (mean object probability)."""
    import pandas as pd

    unit, length = findings["unit"], findings["length_unit"]
    axes = ("x", "y", "z") if ndim == 3 else ("row", "col")
    places = {"centroid": "centroid", "bbox_min": "min", "bbox_max": "max"}
    columns = ["id", "class", f"size_{unit}", f"max_diameter_{length}"]
    columns += [f"{k}_{a}_{length}" for k in places for a in axes] + ["score"]
    rows = []
    for o in findings["objects"]:
        where = {"centroid": o[f"centroid_{length}"], **o[f"bbox_{length}"]}
        values = [o["id"], o["class"], o[f"size_{unit}"], o[f"max_diameter_{length}"]]
        values += [v for k in places.values() for v in where[k]] + [o["score"]]
        rows.append(values)
    frame = pd.DataFrame(rows, columns=columns)
    atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False), suffix=".csv")


def findings_record(paths: CaseOutputs, case: Case, pred: Prediction, predictor: Predictor, findings: dict) -> dict:
    """The findings JSON of one case: inputs, outputs, geometry, loader facts, findings and how they were made."""
    cfg, geom = predictor.models[0].cfg, pred.geom
    return {
        "case_id": case.case_id,
        "input": [str(Path(p).resolve()) for p in case.paths],
        "segmentation": str(paths.seg.resolve()),
        "probabilities": str(paths.prob.resolve()) if paths.prob else None,
        "geometry": geom.summary(),
        **pred.facts.to_findings(),
        "metadata": {**geom.meta.get("dicom", {}), **lookup_metadata(case.paths[0])},
        "labels": list(cfg.data.labels),
        **({"label_values": cfg.data.label_values} if cfg.data.label_values else {}),
        "channels": list(cfg.data.channels),
        **findings,
        "models": [
            {"path": str(m.path.resolve()), "sha256_12": m.sha, "description": describe(m.ckpt)}
            for m in predictor.models
        ],
        "postprocess": predictor.options.post,
        "tta": bool(predictor.options.tta),
        "device": str(predictor.device),
        "timings": pred.timings,
        "medseg_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


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
        super().__init__(str(batch_write_failure(target, cause)))


def batch_write_failure(
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
        f"{fix}, then run again (cases already written are skipped)",
    )


def write_label_tables(out_dir: Path, labels: list[str], force: bool = False) -> list[Path]:
    """Write ``labels.ctbl`` (3D Slicer) and ``labels_itksnap.txt`` (ITK-SNAP) naming the mask values; an existing
    table with other classes (masks of another model in this folder) is only replaced with ``force``."""
    from medseg.viz import label_tables

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
    from medseg.inference.findings import UNIT_LABELS

    return UNIT_LABELS[res["unit"]]


def findings_sizes(res: dict, cls: dict) -> str:
    """One class's findings for the log: total size, lesion count, the largest lesion's maximum diameter."""
    from medseg.inference.findings import format_size

    what = "object(s)" if res.get("objects") is not None else "lesion(s)"
    text = f"{format_size(cls['total_' + res['unit']])} {findings_unit(res)} in {cls['n_lesions']} {what}"
    if cls["lesions"]:
        length = res["length_unit"]
        text += f", largest {cls['lesions'][0]['max_diameter_' + length]:.1f} {length} across"
    return text


def spacing_note(res: dict) -> str:
    """The log's note on a 2D image of unknown pixel spacing: its sizes are pixels, not millimetres."""
    if res.get("spacing_known", True):
        return ""
    return " (pixel spacing unknown, so sizes are in pixels; set data.pixel_spacing_mm to measure in mm)"
