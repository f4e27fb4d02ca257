"""``medseg export --format monai-bundle``: a 3D model as a MONAI bundle, the format of MONAI's model zoo that
MONAI Label and MONAI Deploy load.

The bundle is a folder: ``models/model.ts`` (the TorchScript export, with medseg's metadata inside it),
``configs/metadata.json`` (MONAI's bundle metadata: inputs, outputs, labels, versions) and
``configs/inference.json``, whose transforms are MONAI's own and repeat medseg's preprocessing (orientation,
spacing, non-zero crop, intensity normalisation), sliding window and post-processing (activation, inversion onto
the input's grid, threshold or arg-max, hole filling, small-component removal, largest component), so that
``python -m monai.bundle run`` needs MONAI alone, not medseg. ``docs/README.md`` says how to run it.

Only what MONAI's transforms express is exported: 3D semantic models. A 2D model's loader (EXIF, channel
selection, 2.5D neighbours) and an instance model's object split are medseg's own; those are refused with the
formats that do carry them (ONNX, TorchScript).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from medseg import __version__
from medseg.checkpoint import file_hash, load_checkpoint, validate_checkpoint
from medseg.config import Config
from medseg.errors import fail
from medseg.export import ExportResult, export_model, refuse_unexportable
from medseg.io import atomic_write
from medseg.log import get_logger

log = get_logger(__name__)

BUNDLE_FILES = ("configs/metadata.json", "configs/inference.json", "models/model.ts", "docs/README.md")
MONAI_META_SCHEMA = (
    "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json"
)


def export_bundle(checkpoint: str | Path, out: str | Path | None = None, force: bool = False) -> ExportResult:
    """Write ``checkpoint``'s 3D model as a MONAI bundle folder ``out`` (default: ``<checkpoint stem>_bundle``
    beside it)."""
    checkpoint = Path(checkpoint)
    ck = load_checkpoint(checkpoint)
    cfg = validate_checkpoint(ck, checkpoint)
    refuse_unexportable(ck, checkpoint)
    refuse_unbundlable(cfg, checkpoint)
    out = Path(out) if out else checkpoint.with_name(f"{checkpoint.stem}_bundle")
    refuse_overwrite_bundle(out, force)
    for sub in ("configs", "models", "docs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    ts = export_model(checkpoint, "torchscript", out / "models" / "model.ts", force=True)
    roi = list(ck.get("roi_size") or cfg.infer.roi_size)
    files = {
        "configs/inference.json": inference_config(cfg, roi),
        "configs/metadata.json": bundle_metadata(cfg, ck, roi, checkpoint),
    }
    for name, doc in files.items():
        atomic_write(out / name, lambda tmp, doc=doc: Path(tmp).write_text(json.dumps(doc, indent=2)), suffix=".json")
    atomic_write(out / "docs/README.md", lambda tmp: Path(tmp).write_text(readme(cfg, checkpoint)), suffix=".md")
    log.info(
        f"MONAI bundle of {checkpoint} -> {out}; run: cd {out} && python -m monai.bundle run --config_file "
        "configs/inference.json --dataset_dir DIR"
    )
    return ExportResult(out, "monai-bundle", ts.max_abs_diff, ts.dynamic_axes)


def refuse_unbundlable(cfg: Config, path: Path) -> None:
    """What MONAI's own transforms cannot repeat, said with the format that can."""
    other = "export it with --format onnx or torchscript and run it with medseg infer --model"
    if cfg.data.spatial_dims != 3:
        raise fail(path, "is a 2D model; a MONAI bundle is written for 3D volume models", other)
    if cfg.instances:
        raise fail(path, "is an instance model: its object split is medseg's own, not MONAI's", other)
    if cfg.preprocess.intensity == "volume":
        raise fail(path, "normalises slices by their volume's statistics, which MONAI's transforms lack", other)


def refuse_overwrite_bundle(out: Path, force: bool) -> None:
    """An existing folder is filled only when empty, or with ``force`` when it is a bundle medseg wrote (then only
    medseg's files in it are replaced)."""
    if out.exists() and not out.is_dir():
        raise fail(out, "exists and is a file, not a folder", "choose another --out")
    if not out.exists() or not any(out.iterdir()):
        return
    if not force:
        raise fail(out, "already exists and is not empty", "pass --force to replace a bundle medseg wrote there")
    try:
        ours = json.loads((out / "configs/metadata.json").read_text()).get("medseg") is not None
    except (OSError, ValueError):
        ours = False
    if not ours:
        raise fail(out, "is not a bundle medseg wrote; --force replaces only those", "choose another --out")
    for name in BUNDLE_FILES:
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def preprocessing(cfg: Config) -> list[dict]:
    """MONAI's transforms for medseg's deterministic 3D preprocessing, in the same order."""
    p = cfg.preprocess
    ts: list[dict] = [
        {"_target_": "LoadImaged", "keys": "image", "image_only": False},
        {"_target_": "EnsureChannelFirstd", "keys": "image"},
    ]
    if p.orientation:
        labels = [["L", "R"], ["P", "A"], ["I", "S"]]  # as medseg's (MONAI warns that its default changes)
        ts.append({"_target_": "Orientationd", "keys": "image", "axcodes": p.orientation, "labels": labels})
    if p.spacing:
        ts.append({"_target_": "Spacingd", "keys": "image", "pixdim": list(p.spacing), "mode": "bilinear"})
    if p.crop_foreground:  # the box of voxels non-zero in any modality, 4 voxels of margin: medseg's crop
        ts.append(
            {
                "_target_": "CropForegroundd",
                "keys": "image",
                "source_key": "image",
                "select_fn": "$lambda x: x != 0",
                "margin": 4,
                "allow_smaller": True,
            }
        )
    ts += intensity(cfg)
    ts.append({"_target_": "EnsureTyped", "keys": "image", "dtype": "$torch.float32"})
    return ts


def intensity(cfg: Config) -> list[dict]:
    p = cfg.preprocess
    if p.intensity == "zscore":
        return [
            {"_target_": "NormalizeIntensityd", "keys": "image", "nonzero": p.nonzero, "channel_wise": p.channel_wise}
        ]
    if p.intensity == "scale":
        return [{"_target_": "ScaleIntensityd", "keys": "image", "channel_wise": p.channel_wise}]
    if p.intensity == "fixed":
        lo, hi = (float(v) for v in p.intensity_range)
        return [
            {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": lo, "a_max": hi, "b_min": -1.0, "b_max": 1.0}
        ]
    if p.intensity == "imagenet":
        from medseg.data.intensity import imagenet_statistics

        lo, hi = (float(v) for v in p.intensity_range)
        mean, std = imagenet_statistics(len(cfg.data.channels))
        return [
            {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": lo, "a_max": hi, "b_min": 0.0, "b_max": 1.0},
            {
                "_target_": "NormalizeIntensityd",
                "keys": "image",
                "subtrahend": list(mean),
                "divisor": list(std),
                "channel_wise": True,
            },
        ]
    return []  # "none"


def postprocessing(cfg: Config) -> list[dict]:
    """Probabilities, back onto the input's grid (MONAI's inverse of the preprocessing, bilinear), labels, the
    checkpoint's clean-up, and the mask written beside the input's name."""
    fg = list(range(1, cfg.num_classes))
    activation = {"sigmoid": True} if cfg.binary else {"softmax": True}
    labels = {"threshold": float(cfg.infer.threshold)} if cfg.binary else {"argmax": True}
    ts = [
        {"_target_": "Activationsd", "keys": "pred", **activation},
        {
            "_target_": "Invertd",
            "keys": "pred",
            "transform": "@preprocessing",
            "orig_keys": "image",
            "nearest_interp": False,
            "to_tensor": True,
        },
    ]
    if cfg.preprocess.crop_foreground and not cfg.binary:
        # MONAI's inverse crop pads zero probabilities around the box; medseg pads background (probability 1), so
        # blending across the box's edge favours background. What the padding left out goes back to background.
        ts.append(
            {
                "_target_": "Lambdad",
                "keys": "pred",
                "func": "$lambda p: torch.cat([1 - p[1:].sum(0, keepdim=True), p[1:]])",
            }
        )
    ts.append({"_target_": "AsDiscreted", "keys": "pred", **labels})
    if cfg.infer.fill_holes:
        ts.append({"_target_": "FillHolesd", "keys": "pred", "applied_labels": fg})
    if cfg.infer.min_size > 0:
        ts.append(
            {
                "_target_": "RemoveSmallObjectsd",
                "keys": "pred",
                "min_size": float(cfg.infer.min_size),
                "connectivity": 3,
                "independent_channels": False,
                "by_measure": True,
            }
        )
    if cfg.infer.keep_largest:
        ts.append(
            {
                "_target_": "KeepLargestConnectedComponentd",
                "keys": "pred",
                "applied_labels": fg,
                "is_onehot": False,
                "connectivity": 3,
            }
        )
    ts.append(
        {
            "_target_": "SaveImaged",
            "keys": "pred",
            "output_dir": "@output_dir",
            "output_postfix": "seg",
            "output_dtype": "$numpy.uint8",
            "resample": False,
            "separate_folder": False,
            "print_log": False,
            "data_root_dir": "@dataset_dir",  # a case's folders below it are kept: two cases' flair.nii.gz never collide
        }
    )
    return ts


def inference_config(cfg: Config, roi: list[int]) -> dict:
    """``configs/inference.json``: MONAI's evaluator over every case in ``dataset_dir``."""
    channels = list(cfg.data.channels)
    if len(channels) == 1:  # every volume file of the folder is a case
        datalist = "$[{'image': f} for f in sorted(glob.glob(os.path.join(@dataset_dir, '*.nii*')))]"
    else:  # every sub-folder is a case holding one file per modality, named after it (flair, t1c, ...)
        datalist = (
            "$[{'image': [sorted(glob.glob(os.path.join(d, '*' + m + '*.nii*')))[0] for m in @modalities]} "
            "for d in sorted(glob.glob(os.path.join(@dataset_dir, '*', '')))]"
        )
    return {
        "imports": ["$import glob", "$import os", "$import numpy", "$import torch"],
        "bundle_root": ".",
        "dataset_dir": "$@bundle_root + '/data'",
        "output_dir": "$@bundle_root + '/eval'",
        "modalities": channels,
        "datalist": datalist,
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": "$torch.jit.load(@bundle_root + '/models/model.ts', map_location=@device)",
        "network": "$@network_def.to(@device).eval()",
        "preprocessing": {"_target_": "Compose", "transforms": preprocessing(cfg)},
        "dataset": {"_target_": "Dataset", "data": "@datalist", "transform": "@preprocessing"},
        "dataloader": {
            "_target_": "DataLoader",
            "dataset": "@dataset",
            "batch_size": 1,
            "shuffle": False,
            "num_workers": 0,
        },
        "inferer": {
            "_target_": "SlidingWindowInferer",
            "roi_size": roi,
            "sw_batch_size": int(cfg.infer.sw_batch_size),
            "overlap": float(cfg.infer.overlap),
            "mode": "gaussian",
        },
        "postprocessing": {"_target_": "Compose", "transforms": postprocessing(cfg)},
        "handlers": [{"_target_": "StatsHandler", "iteration_log": False}],
        "evaluator": {
            "_target_": "SupervisedEvaluator",
            "device": "@device",
            "val_data_loader": "@dataloader",
            "network": "@network",
            "inferer": "@inferer",
            "postprocessing": "@postprocessing",
            "val_handlers": "@handlers",
            "amp": False,
        },
        "initialize": [],
        "run": ["$@evaluator.run()"],
    }


def bundle_metadata(cfg: Config, ck: dict, roi: list[int], checkpoint: Path) -> dict:
    """``configs/metadata.json`` in MONAI's bundle schema, plus what medseg knows of the model under ``medseg``."""
    import monai
    import numpy
    import torch

    labels, channels = list(cfg.data.labels), list(cfg.data.channels)
    out_channels = 1 if cfg.binary else len(labels)
    return {
        "schema": MONAI_META_SCHEMA,
        "version": "0.1.0",
        "changelog": {"0.1.0": f"exported by medseg {__version__} from {checkpoint.name}"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": numpy.__version__,
        "required_packages_version": {"nibabel": _version("nibabel"), "pytorch-ignite": _version("pytorch-ignite")},
        "name": f"medseg {cfg.name}",
        "task": f"3D segmentation of {', '.join(labels[1:])}",
        "description": f"A {ck['model']['name']} trained with medseg on the {cfg.data.recipe} recipe.",
        "authors": "medseg",
        "copyright": "the model's owner",
        "intended_use": "research; not for clinical diagnosis",
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "magnitude",
                    "num_channels": len(channels),
                    "spatial_shape": roi,
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": True,
                    "channel_def": {str(i): c for i, c in enumerate(channels)},
                }
            },
            "outputs": {
                "pred": {
                    "type": "image",
                    "format": "segmentation",
                    "num_channels": out_channels,
                    "spatial_shape": roi,
                    "dtype": "float32",
                    "value_range": [0, 1],
                    "is_patch_data": True,
                    "channel_def": {"0": labels[1]} if cfg.binary else {str(i): n for i, n in enumerate(labels)},
                }
            },
        },
        "medseg": {
            "version": __version__,
            "source_checkpoint": checkpoint.name,
            "source_sha256": file_hash(checkpoint, n=64),
            "labels": labels,
            "mask_values": {name: i for i, name in enumerate(labels)},
        },
    }


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return ""


def readme(cfg: Config, checkpoint: Path) -> str:
    labels = list(cfg.data.labels)
    layout = (
        "`data/` holds the volumes to segment (one NIfTI per case)"
        if len(cfg.data.channels) == 1
        else f"`data/` holds one folder per case, with one NIfTI per modality named after it ({', '.join(cfg.data.channels)})"
    )
    return f"""# medseg {cfg.name}

A MONAI bundle written by medseg {__version__} from `{checkpoint.name}`. Mask values:
{", ".join(f"{i} {n}" for i, n in enumerate(labels))}.

## Run

{layout}; masks go to `eval/` as `<case>_seg.nii.gz`, on each input's own grid.

```bash
python -m monai.bundle run --config_file configs/inference.json --meta_file configs/metadata.json
python -m monai.bundle run --config_file configs/inference.json --dataset_dir /path/to/cases --output_dir /path/to/masks
```

The transforms are MONAI's own, so the bundle runs without medseg. `medseg infer --model models/model.ts` runs the
same network with medseg's own pipeline (test-time flips, findings, reports).

Research use only; not for clinical diagnosis.
"""
