"""The classical methods: each is fitted by a search and segments what it should, survives bad inputs, and trains,
infers and evaluates through the same commands as a network."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medseg.engine.fitting import _clean, image_dice, mean_dice, search
from medseg.models import build_model, model_family
from medseg.models.classical import METHODS, fisher_projection, markers, resize_to, shrink

pytestmark = pytest.mark.usefixtures("one_thread")

TWO_D = sorted(METHODS)
THREE_D = sorted(n for n, m in METHODS.items() if 3 in m.dims)


def disk_images(n: int, size: int = 40, channels: int = 3, seed: int = 0, dark: bool = True):
    """``n`` noisy images with a disk of random centre and radius, darker (like a naevus) in every channel but the
    second; their masks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images, masks = [], []
    for _ in range(n):
        cy, cx = rng.uniform(size * 0.35, size * 0.65, 2)
        r = rng.uniform(size * 0.15, size * 0.3)
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        img = rng.normal(0, 0.15, (channels, size, size)).astype(np.float32)
        for c in range(channels):
            step = 0.0 if c == 1 else (-1.0 if dark else 1.0)
            img[c] += step * mask
        images.append(img)
        masks.append(mask)
    return images, masks


def test_every_method_is_registered_as_fitted_by_search():
    for name in METHODS:
        assert model_family(name).trains == "search"
    assert model_family("unet").trains == "gradient"


def test_fisher_projection_finds_the_channel_that_separates():
    """Foreground differs from background only in channel 1 (by +2), channels 0 and 2 are noise: the direction is
    (0, 1, 0), signed so that foreground projects higher."""
    rng = np.random.default_rng(1)
    img = rng.normal(0, 1, (3, 60, 60)).astype(np.float32)
    mask = np.zeros((60, 60), bool)
    mask[20:40, 20:40] = True
    img[1][mask] -= 6.0  # darker foreground: the sign must flip
    w = fisher_projection([img], [mask])
    assert abs(w[1]) > 0.99 and w[1] < 0 and abs(w[0]) < 0.1 and abs(w[2]) < 0.1
    assert fisher_projection([img], [np.zeros_like(mask)]) == [1.0, 1.0, 1.0]  # no foreground: no direction


def test_markers_seed_both_sides_of_otsu():
    g = np.zeros((10, 10), np.float32)
    g[:, 5:] = 1.0
    m = markers(g, 0.25)
    assert (m[:, 5:] == 2).all() and (m[:, :5] == 1).all()
    flat = markers(np.ones((4, 4), np.float32), 0.5)
    assert (flat == 1).all()  # nothing to seed foreground from on a flat image


@pytest.mark.parametrize("name", TWO_D)
def test_each_method_fits_and_segments_held_out_disks(name):
    images, masks = disk_images(6)
    method = METHODS[name](spatial_dims=2, in_channels=3)
    result = search(method, images, masks)
    assert result.rows and 0.0 <= result.train_dice <= 1.0
    test_images, test_masks = disk_images(4, seed=9)
    fitted = METHODS[name](spatial_dims=2, in_channels=3, fitted=result.params)
    dice = np.mean([image_dice(fitted.predict(im, fitted.fitted) > 0.5, m) for im, m in zip(test_images, test_masks)])
    # edges and clustering need no learning to find a disk this clear; a wrong polarity or projection scores ~0.3
    assert dice > 0.75, (name, dice, result.params)


@pytest.mark.parametrize("name", TWO_D)
def test_each_method_survives_bad_inputs(name):
    """Single-channel images, fits on masks of which one or all are empty, then constant images: no crash, a
    probability map of the image's shape in [0, 1]."""
    grey_images, grey_masks = disk_images(3, channels=1, seed=2)
    one_empty = [np.zeros_like(grey_masks[0]), *grey_masks[1:]]
    all_empty = [np.zeros_like(m) for m in grey_masks]
    for masks in (grey_masks, one_empty, all_empty):
        result = search(METHODS[name](spatial_dims=2, in_channels=1), grey_images, masks)
        assert 0.0 <= result.train_dice <= 1.0
        method = METHODS[name](spatial_dims=2, in_channels=1, fitted=result.params)
        for image in (grey_images[0], np.full_like(grey_images[0], 0.5), np.zeros_like(grey_images[0])):
            prob = method.predict(image, method.fitted)
            assert prob.shape == image.shape[1:] and prob.min() >= 0 and prob.max() <= 1


def test_shrink_keeps_the_aspect_and_resize_to_restores_the_grid():
    image = np.random.default_rng(0).normal(size=(3, 192, 256)).astype(np.float32)
    small = shrink(image, 128)
    assert small.shape == (3, 96, 128) and small.dtype == np.float32
    assert shrink(image, 0) is image and shrink(image, 256) is image  # already small enough: untouched
    assert abs(float(small.mean()) - float(image.mean())) < 0.05  # area-averaged, not sampled
    prob = resize_to(np.eye(4, dtype=np.float32), (8, 8))
    assert prob.shape == (8, 8) and prob.min() >= 0 and prob.max() <= 1


@pytest.mark.parametrize("name", ["chan_vese", "snake", "random_walker"])
def test_an_iterative_method_fits_at_its_working_size_and_answers_at_full_size(name):
    images, masks = disk_images(3, size=160)
    result = search(METHODS[name](spatial_dims=2, in_channels=3), images, masks)
    assert result.params["work_size"] == 128  # in the checkpoint's spec: the fitted method works as it was fitted
    fitted = METHODS[name](spatial_dims=2, in_channels=3, fitted=result.params)
    test_images, test_masks = disk_images(2, size=160, seed=9)
    probs = [fitted.predict(im, fitted.fitted) for im in test_images]
    assert all(p.shape == (160, 160) for p in probs)
    assert np.mean([image_dice(p > 0.5, m) for p, m in zip(probs, test_masks)]) > 0.75
    full = search(METHODS[name](spatial_dims=2, in_channels=3, work_size=0), images, masks)
    assert "work_size" not in full.params  # model.extra.work_size: 0 works at the preprocessed size
    assert "work_size" not in search(METHODS["otsu"](spatial_dims=2, in_channels=3), images, masks).params


@pytest.mark.parametrize("name", ["multiotsu", "edges", "watershed", "normalised_cut", "chan_vese"])
def test_what_the_search_remembers_changes_no_score(name):
    """The memo shares a step between settings during the search; the chosen setting, run afresh on each image
    after it, must score exactly the training Dice the search reported."""
    images, masks = disk_images(4, size=150, seed=4)
    result = search(METHODS[name](spatial_dims=2, in_channels=3), images, masks)
    fresh = METHODS[name](spatial_dims=2, in_channels=3, fitted=result.params)
    preds = [_clean(fresh.predict(im, fresh.fitted) > 0.5, **result.post) for im in images]
    assert mean_dice(preds, masks) == pytest.approx(result.train_dice, abs=1e-9)
    assert fresh._memo is None  # nothing is remembered outside a search


def test_a_search_past_its_memory_budget_recomputes_and_chooses_the_same(monkeypatch):
    from medseg.models import classical

    images, masks = disk_images(4, size=150, seed=4)
    kept = search(METHODS["watershed"](spatial_dims=2, in_channels=3), images, masks)
    monkeypatch.setattr(classical, "MEMO_BYTES", 150 * 150 * 4 * 3)  # room for three grey images, no more
    method = METHODS["watershed"](spatial_dims=2, in_channels=3)
    squeezed = search(method, images, masks)
    assert squeezed.params == kept.params and squeezed.train_dice == kept.train_dice
    assert method._memo is None  # dropped when the search ends


def test_the_clean_up_search_drops_specks_and_records_the_size_where_infer_cleans_up():
    """Disks with bright specks around them: only a minimum size (not the largest component, which would also
    drop the second disk) removes the specks and keeps both disks; its size is recorded in the units of the grid
    that inference cleans up on, here 9 original pixels to a preprocessed one."""
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:60, :60]
    images, masks = [], []
    for _ in range(4):
        mask = ((yy - 18) ** 2 + (xx - 18) ** 2 < 60) | ((yy - 42) ** 2 + (xx - 42) ** 2 < 60)
        img = (mask + rng.normal(0, 0.05, mask.shape)).astype(np.float32)
        for y, x in rng.integers(1, 58, (12, 2)):  # 3x3 specks as bright as the disks, away from them
            if not mask[y - 2 : y + 3, x - 2 : x + 3].any():
                img[y - 1 : y + 2, x - 1 : x + 2] = 1.0
        images.append(img[None])
        masks.append(mask)
    plain = search(METHODS["otsu"](spatial_dims=2, in_channels=1), images, masks)
    assert plain.post["min_size"] > 0 and not plain.post["keep_largest"], plain.post
    assert plain.train_dice > 0.99
    scaled = search(METHODS["otsu"](spatial_dims=2, in_channels=1), images, masks, pixel_area=9.0)
    assert scaled.post["min_size"] == pytest.approx(9 * plain.post["min_size"])


def test_pixel_area_measures_a_preprocessed_pixel_in_the_units_of_the_original():
    from medseg.config import load_config
    from medseg.engine.fitting import pixel_area

    ph2 = load_config("ph2")
    assert pixel_area(ph2, {"original_size": [576, 768]}, (192, 256)) == pytest.approx(9.0)
    spaced = load_config("ph2", ["data.pixel_spacing_mm=[0.1,0.1]"])
    assert pixel_area(spaced, {"original_size": [576, 768]}, (192, 256)) == pytest.approx(0.09)
    assert pixel_area(load_config("brats"), {"spacing": [1, 1, 1]}, (40, 40, 40)) == pytest.approx(8.0)
    native = load_config("brats", ["preprocess.spacing=null"])
    assert pixel_area(native, {"spacing": [0.5, 0.5, 2.0]}, (40, 40, 40)) == pytest.approx(0.5)


@pytest.mark.parametrize("name", THREE_D)
def test_the_methods_with_a_3d_form_segment_a_ball(name):
    rng = np.random.default_rng(3)
    zz, yy, xx = np.mgrid[:20, :20, :20]
    volumes, masks = [], []
    for _ in range(2):
        mask = (zz - 10) ** 2 + (yy - 10) ** 2 + (xx - 10) ** 2 < rng.uniform(16, 36)
        volumes.append((rng.normal(0, 0.15, (1, 20, 20, 20)) + mask).astype(np.float32))
        masks.append(mask)
    result = search(METHODS[name](spatial_dims=3, in_channels=1), volumes, masks)
    assert result.train_dice > 0.75, (name, result.train_dice)


def test_forward_gives_logits_of_the_batch_and_refuses_more_classes_or_the_wrong_dimensions():
    from medseg.errors import MedsegError

    spec = {"name": "otsu", "kwargs": {"spatial_dims": 2, "in_channels": 3, "out_channels": 1, "channels": [4]}}
    spec["kwargs"]["fitted"] = {"channel": "grey", "polarity": "darker", "sigma": 0}
    net = build_model(spec)
    images, masks = disk_images(2)
    logits = net(torch.from_numpy(np.stack(images)))
    assert logits.shape == (2, 1, 40, 40) and logits.dtype == torch.float32
    assert image_dice(logits[0, 0].numpy() > 0, masks[0]) > 0.9
    assert not list(net.parameters())  # nothing for an optimiser
    with pytest.raises(MedsegError, match="one foreground class"):
        build_model({"name": "otsu", "kwargs": {**spec["kwargs"], "out_channels": 5}})
    with pytest.raises(MedsegError, match="2D images only"):
        build_model({"name": "edges", "kwargs": {**spec["kwargs"], "spatial_dims": 3}})


@pytest.fixture(scope="module")
def fitted_run(tmp_path_factory):
    from medseg.config import load_config
    from medseg.data import synthetic
    from medseg.engine.train import train

    root = tmp_path_factory.mktemp("classical")
    data = synthetic.make_ph2(root / "ph2", n=10)
    cfg = load_config(
        "ph2",
        ["model.name=otsu", "model.pretrained=null", "preprocess.intensity=zscore", "preprocess.spatial_size=[48,64]"],
    )
    result = train(cfg, data, root / "run", progress=False)
    return data, root / "run", result


def test_train_fits_writes_a_checkpoint_that_rebuilds_the_fitted_method(fitted_run):
    from medseg.checkpoint import load_checkpoint

    _data, run, result = fitted_run
    ck = load_checkpoint(run / "best.pt")  # weights_only=True
    fitted = ck["model"]["kwargs"]["fitted"]
    assert {"channel", "polarity", "sigma", "projection"} <= set(fitted)
    assert ck["fit"]["n_images"] >= 1 and ck["fit"]["settings_tried"] > 1
    assert set(ck["fit"]["post"]) == {"keep_largest", "fill_holes", "min_size"}
    assert all(ck["config"]["infer"][k] == v for k, v in ck["fit"]["post"].items())
    rows = (run / "fit.csv").read_text().splitlines()
    assert rows[0].startswith("channel,polarity,sigma") and len(rows) - 1 == ck["fit"]["settings_tried"]
    assert result.epochs_run == 1 and 0.5 < result.best_metric <= 1.0  # synthetic lesions are easy for Otsu
    assert (run / "last.pt").is_file() and (run / "history.csv").is_file()


def test_infer_and_evaluate_use_the_fitted_method_unchanged(fitted_run, tmp_path):
    from PIL import Image

    from medseg.evaluation.evaluate import evaluate_model
    from medseg.inference.infer import infer

    data, run, _result = fitted_run
    image = next(data.rglob("*_Dermoscopic_Image/*.bmp"))
    infer([str(image)], model=[str(run / "best.pt")], out=tmp_path / "pred", progress=False)
    mask = Image.open(tmp_path / "pred" / f"{image.stem}_seg.png")
    assert mask.size == Image.open(image).size
    findings = json.loads((tmp_path / "pred" / f"{image.stem}_findings.json").read_text())
    assert findings["models"][0]["description"].startswith("otsu 2D")
    ev = evaluate_model(run / "best.pt", "ph2", data, tmp_path / "eval", split="val", progress=False)
    assert len(ev.metrics) >= 1 and 0.5 < float(ev.metrics["dice"].mean()) <= 1.0  # Otsu finds synthetic lesions


def test_resume_and_init_are_refused_with_the_fix(fitted_run):
    from medseg.config import load_config
    from medseg.engine.train import train
    from medseg.errors import MedsegError

    data, run, _result = fitted_run
    cfg = load_config("ph2", ["model.name=otsu", "model.pretrained=null", "preprocess.spatial_size=[48,64]"])
    with pytest.raises(MedsegError, match="fitted in one pass.*run without --resume"):
        train(cfg, data, run, progress=False, resume=True)
    with pytest.raises(MedsegError, match="run without --init"):
        train(cfg, data, run.parent / "other", progress=False, init=run / "best.pt")


def test_a_network_report_names_the_best_classical_method_beside_it(fitted_run, tmp_path):
    from pypdf import PdfReader

    from medseg.evaluation.compare import beside
    from medseg.evaluation.evaluate import evaluate_model
    from medseg.reporting.cohort_report import cohort_report
    from tests.conftest import train_tiny

    data, run, _result = fitted_run
    floor = evaluate_model(run / "best.pt", "ph2", data, tmp_path / "otsu", split="val", progress=False)
    card = json.loads((tmp_path / "otsu" / "eval.json").read_text())["model_card"]
    assert card["method"] == "otsu" and card["classical"] and "(classical), fitted: channel" in card["architecture"]
    assert card["initial_weights"].startswith("none: ")
    net = train_tiny("ph2", data, tmp_path / "unet", "model.deep_supervision=0")
    evaluate_model(net, "ph2", data, tmp_path / "unet-eval", split="val", progress=False)
    [rec] = beside(tmp_path / "unet-eval", [tmp_path / "otsu"])
    assert (rec["method"], rec["classical"], rec["cases"]) == ("otsu", True, len(floor.metrics))
    assert rec["base_mean"] == pytest.approx(float(floor.metrics["dice"].mean()), abs=1e-4)
    pdf = cohort_report(tmp_path / "unet-eval", out=tmp_path / "r.pdf", beside=[tmp_path / "otsu"])
    text = " ".join(page.extract_text() for page in PdfReader(pdf).pages)
    assert "Best classical method: otsu" in " ".join(text.split())


def test_beside_refuses_a_run_of_other_cases(tmp_path):
    from medseg.errors import MedsegError
    from medseg.evaluation.compare import beside

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "metrics.csv").write_text("case_id,class,dice\nIMD001,lesion,0.9\n")
    (tmp_path / "b" / "metrics.csv").write_text("case_id,class,dice\nIMD002,lesion,0.8\n")
    with pytest.raises(MedsegError, match="shares no scored case"):
        beside(tmp_path / "a", [tmp_path / "b"])


RECIPES_2D = {  # recipe -> (synthetic generator, what the data folder is, extra overrides)
    "ph2": ("make_ph2", {}, []),
    "lgg": ("make_lgg", {"n_patients": 3, "n_slices": 4}, []),
    "humanseg": ("make_humanseg", {"n": 6}, []),
    "membrane": ("make_membrane", {"n": 4}, []),
    "nuclei": ("make_nuclei", {"n": 5}, ["data.task=semantic"]),
    "folder": ("make_folder_2d", {"n": 6}, []),
}


@pytest.mark.parametrize("method", ["otsu", "slic"])
@pytest.mark.parametrize("recipe", sorted(RECIPES_2D))
def test_a_classical_method_trains_on_every_2d_recipe(recipe, method, tmp_path):
    """Grey (membrane), RGB, RGBA (nuclei), slices with empty masks (LGG), masks smaller than their photo
    (humanseg): the recipe's own loading, the fit and the validation run through."""
    from medseg.config import load_config
    from medseg.data import synthetic
    from medseg.engine.train import train

    make, kwargs, extra = RECIPES_2D[recipe]
    data = getattr(synthetic, make)(tmp_path / "data", **kwargs)
    overrides = [f"model.name={method}", "model.pretrained=null", "preprocess.intensity=zscore", *extra]
    cfg = load_config(recipe, [*overrides, "preprocess.spatial_size=[48,48]", "train.batch_size=2"])
    result = train(cfg, data, tmp_path / "run", progress=False)
    assert 0.0 <= result.best_metric <= 1.0 and (tmp_path / "run" / "best.pt").is_file()


def test_a_classical_method_fits_a_3d_recipe_and_writes_the_volume_in_its_geometry(tmp_path):
    import nibabel as nib

    from medseg.config import load_config
    from medseg.data import synthetic
    from medseg.engine.train import train
    from medseg.inference.infer import infer

    data = synthetic.make_nifti_folder(tmp_path / "data", n=4)
    cfg = load_config("nifti", ["model.name=otsu", "train.patch_size=[32,32,24]", "infer.roi_size=[32,32,24]"])
    result = train(cfg, data, tmp_path / "run", progress=False)
    assert 0.0 <= result.best_metric <= 1.0
    volume = min(p for p in data.rglob("*.nii.gz") if "label" not in p.name.lower())
    infer([str(volume)], model=[str(tmp_path / "run" / "best.pt")], out=tmp_path / "pred", progress=False)
    [mask] = list((tmp_path / "pred").glob("*_seg.nii.gz"))
    assert np.allclose(nib.load(mask).affine, nib.load(volume).affine)
    assert nib.load(mask).shape == nib.load(volume).shape


def test_slices_of_a_volume_are_scored_pooled_as_validation_scores_them():
    """Slice A: 4 true pixels found; slice B: no truth, 2 false pixels. Per image (1 + 0) / 2 = 0.5; pooled over
    the volume tp 4, fp 2, fn 0: 2*4 / (2*4 + 2) = 0.8."""
    from medseg.engine.fitting import mean_dice

    truth_a = np.zeros((4, 4), bool)
    truth_a[:2, :2] = True
    pred_b = np.zeros((4, 4), bool)
    pred_b[3, :2] = True
    preds, masks = [truth_a, pred_b], [truth_a, np.zeros((4, 4), bool)]
    assert mean_dice(preds, masks) == pytest.approx(0.5)
    assert mean_dice(preds, masks, ["p1", "p1"]) == pytest.approx(0.8)
    assert mean_dice(preds, masks, ["p1", "p2"]) == pytest.approx(0.5)


def test_a_classical_method_sees_the_whole_image_not_sliding_windows():
    from medseg.config import load_config
    from medseg.inference.predictor import predict_logits

    seen = []

    class Recorder(METHODS["otsu"]):
        def forward(self, x):
            seen.append(tuple(x.shape))
            return super().forward(x)

    cfg = load_config("nifti", ["infer.roi_size=[16,16,16]"])
    volume = torch.rand(1, 1, 40, 36, 20)
    out = predict_logits(Recorder(spatial_dims=3), volume, cfg, torch.device("cpu"))
    assert seen == [(1, 1, 40, 36, 20)] and out.shape == (1, 1, 40, 36, 20)


def test_a_fit_refuses_several_processes(fitted_run):
    from medseg.config import load_config
    from medseg.engine.train import train
    from medseg.errors import MedsegError

    data, run, _result = fitted_run
    cfg = load_config("ph2", ["model.name=otsu", "model.pretrained=null", "preprocess.spatial_size=[48,64]"])
    with pytest.raises(MedsegError, match="fitted by a search on one process"):
        train(cfg, data, run.parent / "multi", progress=False, nproc=2)


def test_evaluate_report_beside_names_the_floor_from_the_command_line(fitted_run, tmp_path):
    from pypdf import PdfReader

    from tests.conftest import run_cli

    data, run, _result = fitted_run
    common = ["evaluate", "-m", run / "best.pt", "--data", "ph2", "--data-dir", data, "--device", "cpu", "--quiet"]
    assert run_cli(*common, "--out", tmp_path / "a").exit_code == 0
    refused = run_cli(*common, "--out", tmp_path / "b", "--beside", tmp_path / "a")
    assert refused.exit_code != 0 and "fix: add --report" in refused.output
    assert not (tmp_path / "b").exists()  # refused before anything was scored or written
    ok = run_cli(*common, "--out", tmp_path / "c", "--report", "--beside", tmp_path / "a")
    assert ok.exit_code == 0, ok.output
    text = " ".join(" ".join(p.extract_text().split()) for p in PdfReader(tmp_path / "c" / "cohort_report.pdf").pages)
    assert "Best classical method: otsu" in text and "this model scores +0.000" in text  # the same fit, beside itself
