"""``medseg export``: a trained network as an ONNX or TorchScript file that carries what ``medseg infer`` needs.

The exported file holds the network alone; beside the graph it keeps, as one JSON document (``medseg.json``: ONNX
``metadata_props``, TorchScript ``_extra_files``), the checkpoint's own description of the task: config
(channels, orientation, spacing, intensity normalisation, resize, post-processing, window size), labels, model
spec, the medseg version that exported it and the SHA-256 of the source checkpoint. ``medseg infer --model
model.onnx`` (or ``model.ts``) reads it back and runs the same preprocessing, sliding window, test-time flips and
geometry handling as for the checkpoint; only the forward pass changes hands (onnxruntime, or the TorchScript
interpreter).

What identifies patients stays behind: the training split's case ids and the data folder are not exported.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medseg import __version__
from medseg.checkpoint import RESUME_ONLY, file_hash, load_checkpoint, network_of, validate_checkpoint
from medseg.config import Config, config_from_dict
from medseg.errors import MedsegError, fail
from medseg.io import atomic_write, file_ext
from medseg.log import get_logger

log = get_logger(__name__)

FORMATS = {"onnx": ".onnx", "torchscript": ".ts"}
EXPORTED_EXTS = tuple(FORMATS.values())
META_NAME = "medseg.json"
EXPORT_FORMAT = "medseg-export"
OPSET = 18
# what a checkpoint keeps for training or that names patients and folders: never copied into an exported file
NOT_EXPORTED = ("state_dict", "split", *RESUME_ONLY)


@dataclass
class ExportResult:
    path: Path
    fmt: str
    max_abs_diff: float  # exported against PyTorch logits on one random window
    dynamic_axes: list[str]


def export_model(checkpoint: str | Path, fmt: str = "onnx", out: str | Path | None = None, force: bool = False):
    """Export ``checkpoint``'s network to ``out`` (default: beside it, ``model.onnx`` / ``model.ts``)."""
    if fmt not in FORMATS:
        raise MedsegError(f"--format {fmt!r} is not known; fix: use one of {', '.join(FORMATS)} or monai-bundle")
    checkpoint = Path(checkpoint)
    ck = load_checkpoint(checkpoint)
    cfg = validate_checkpoint(ck, checkpoint)
    refuse_unexportable(ck, checkpoint)
    out = Path(out) if out else checkpoint.with_name(checkpoint.stem + FORMATS[fmt])
    refuse_overwrite(out, force)
    net = network_of(ck, checkpoint)
    example = example_input(ck, cfg)
    meta = export_metadata(ck, checkpoint, fmt)
    if fmt == "onnx":
        diff, dynamic = _write_onnx(net, example, meta, out)
    else:
        diff, dynamic = _write_torchscript(net, example, meta, out)
    log.info(f"exported {checkpoint} -> {out} ({fmt}; max |logit difference| {diff:.2e} against PyTorch)")
    return ExportResult(out, fmt, diff, dynamic)


def refuse_unexportable(ck: dict, path: Path) -> None:
    """Classical methods run from their checkpoint (a few fitted numbers, no network to export); Mask R-CNN's
    detection heads (box decoding, non-maximum suppression) are not exported."""
    from medseg.models import model_family

    name = ck["model"]["name"]
    if model_family(name).trains == "search":
        raise fail(path, f"is a classical method ({name}): no network to export", "run it from the checkpoint")
    if name == "maskrcnn":
        raise fail(path, "is a Mask R-CNN: its detection heads are not exported", "run it from the checkpoint")


def refuse_overwrite(out: Path, force: bool) -> None:
    """An existing file is replaced only with ``force``, and only when it is a medseg export itself."""
    if not out.exists():
        return
    if not force:
        raise fail(out, "already exists", "pass --force to replace it, or choose another --out")
    try:
        read_metadata(out)
    except MedsegError:
        raise fail(out, "exists and is not a medseg export; --force replaces only those", "choose another --out")


def export_metadata(ck: dict, checkpoint: Path, fmt: str) -> dict:
    """The checkpoint's JSON-safe description (no weights, no case ids), the exporter and the source's hash."""
    meta = {}
    for key, value in ck.items():
        if key in NOT_EXPORTED:
            continue
        try:
            meta[key] = json.loads(json.dumps(value, default=_plain))
        except TypeError:
            continue  # a tensor or other training state: not needed to run the network
    if isinstance(meta.get("data"), dict):
        meta["data"].pop("data_dir", None)
    meta.update(
        export_format=EXPORT_FORMAT,
        exported_as=fmt,
        exported_by=f"medseg {__version__}",
        source_checkpoint=checkpoint.name,
        source_sha256=file_hash(checkpoint, n=64),
    )
    return meta


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (tuple, set)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(type(value).__name__)


def example_input(ck: dict, cfg: Config) -> torch.Tensor:
    """Two windows of the network's input size: a batch of one would fix the batch axis at 1 when traced."""
    roi = list(ck.get("roi_size") or cfg.infer.roi_size)
    channels = int(ck["model"].get("kwargs", {}).get("in_channels", len(cfg.data.channels)))
    return torch.randn(2, channels, *roi, generator=torch.Generator().manual_seed(0))


def _logits(net, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        out = net(x)
    return (out[0] if isinstance(out, (list, tuple)) else out).float().numpy()


def _write_onnx(net: nn.Module, example: torch.Tensor, meta: dict, out: Path) -> tuple[float, list[str]]:
    """torch.onnx's exporter with every axis but the channels left dynamic where the network allows it."""
    onnx, ort = _onnx_modules()
    from torch.export import Dim

    dims = {0: Dim.AUTO, **{2 + i: Dim.AUTO for i in range(example.ndim - 2)}}

    def write(tmp):
        with quiet():
            program = torch.onnx.export(
                net,
                (example,),
                dynamo=True,
                input_names=["image"],
                output_names=["logits"],
                dynamic_shapes=(dims,),
                opset_version=OPSET,
                verbose=False,
            )
        program.save(tmp)
        model = onnx.load(tmp)
        diff = _max_abs_diff(_logits(net, example), _onnx_session(ort, tmp).run(None, {"image": example.numpy()})[0])
        meta["parity_max_abs_diff"] = diff
        meta["dynamic_axes"] = onnx_dynamic_axes(model)
        onnx.helper.set_model_props(model, {META_NAME: json.dumps(meta)})
        onnx.save(model, tmp)

    _atomic(out, write)
    return meta["parity_max_abs_diff"], meta["dynamic_axes"]


def _write_torchscript(net: nn.Module, example: torch.Tensor, meta: dict, out: Path) -> tuple[float, list[str]]:
    """``torch.jit.trace`` (MONAI's networks are not all scriptable); the axes stay dynamic for convolutions."""
    with torch.no_grad(), quiet():
        traced = torch.jit.trace(net, example, check_trace=False)
    x = torch.randn_like(example)
    diff = _max_abs_diff(_logits(net, x), _logits(traced, x))
    meta["parity_max_abs_diff"] = diff
    meta["dynamic_axes"] = traced_dynamic_axes(net, traced, example, meta["model"])
    with quiet():
        _atomic(out, lambda tmp: torch.jit.save(traced, tmp, _extra_files={META_NAME: json.dumps(meta)}))
    return diff, meta["dynamic_axes"]


@contextlib.contextmanager
def quiet():
    """The exporters' progress prints and TorchScript's deprecation notices: nothing a user acts on."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shapes a trace fixes: checked after by trying them
        yield


def traced_dynamic_axes(net, traced, example: torch.Tensor, spec: dict) -> list[str]:
    """The axes a trace left free, found by trying them: a trace records the shapes some networks compute from
    (SegNet's unpooling sizes), so a batch of one and a window a stride larger each must give PyTorch's logits."""
    from medseg.models import size_divisor

    axes = []
    step = max(1, size_divisor(spec))
    for i in [0, *range(2, example.ndim)]:
        shape = list(example.shape)
        shape[i] = 1 if i == 0 else shape[i] + step
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(i))
        try:
            ok = _max_abs_diff(_logits(net, x), _logits(traced, x)) < 1e-3
        except RuntimeError:  # the traced graph cannot take that shape at all
            ok = False
        if ok:
            axes.append(axis_name(i))
    return axes


def _atomic(out: Path, writer) -> None:
    try:
        atomic_write(out, writer, suffix=file_ext(out))
    except OSError as exc:
        raise fail(out, f"cannot be written ({exc.strerror or exc})", "choose a folder you can write to") from None


def _max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


def onnx_dynamic_axes(model) -> list[str]:
    """The input axes an ONNX graph leaves free (named by a symbol, not a number)."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return [axis_name(i) for i, d in enumerate(dims) if d.dim_param]


def axis_name(i: int) -> str:
    """``batch``, ``channels``, ``spatial0``, ...: axis ``i`` of a ``(B, C, *spatial)`` input."""
    return ("batch", "channels")[i] if i < 2 else f"spatial{i - 2}"


def _onnx_modules():
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise MedsegError(
            "ONNX export and inference need onnx and onnxruntime; fix: pip install 'medseg[onnx]'"
        ) from None
    return onnx, onnxruntime


def _onnx_session(ort, path, device: torch.device | None = None):
    providers = ["CPUExecutionProvider"]
    if device is not None and device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings about unused initialisers mean nothing to a user
    return ort.InferenceSession(str(path), options, providers=providers)


# -- reading an exported file back ------------------------------------------------------------------------------


def read_metadata(path: str | Path) -> dict:
    """The ``medseg.json`` an exported file carries; a one-line error when the file is not a medseg export."""
    path = Path(path)
    if not path.is_file():
        raise fail(path, "model not found", "pass --model path/to/model.onnx (written by medseg export)")
    try:
        if file_ext(path) == ".onnx":
            onnx, _ = _onnx_modules()
            props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
            text = props.get(META_NAME)
        else:
            extra = {META_NAME: ""}
            with quiet():
                torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
            text = extra[META_NAME] or None
        meta = json.loads(text) if text else None
    except MedsegError:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated or foreign files land here
        raise fail(path, f"is not a readable model file ({type(exc).__name__})", "re-export it with medseg export")
    if not isinstance(meta, dict) or meta.get("export_format") != EXPORT_FORMAT:
        raise fail(path, "was not written by medseg export (no medseg.json inside)", "export it with medseg export")
    return meta


class OnnxNetwork(nn.Module):
    """An onnxruntime session behind the ``nn.Module`` call the sliding window makes: float32 in, logits out,
    on the device the input came from."""

    def __init__(self, session):
        super().__init__()
        self.session = session

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {"image": x.detach().float().cpu().numpy()})[0]
        return torch.from_numpy(out).to(x.device)


class TracedNetwork(nn.Module):
    """A TorchScript module fed float32 (autocast does not reach into a traced graph's constants)."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.module(x.float())
        return out[0] if isinstance(out, (list, tuple)) else out


def load_exported(path: str | Path, device: torch.device) -> tuple[dict, Config, nn.Module]:
    """An exported file as inference needs it: its metadata (checkpoint-shaped), config and a callable network."""
    path = Path(path)
    meta = read_metadata(path)
    try:
        cfg = config_from_dict(meta["config"], source=str(path))
    except (KeyError, MedsegError) as exc:
        raise fail(path, f"carries an unusable config ({exc})", "re-export it with this medseg version") from None
    cfg.train.amp = False  # the exported graph runs in float32 as exported
    if file_ext(path) == ".onnx":
        _, ort = _onnx_modules()
        net = OnnxNetwork(_onnx_session(ort, path, device))
    else:
        with quiet():
            net = TracedNetwork(torch.jit.load(str(path), map_location=device)).eval()
    return meta, cfg, net
