"""The hooks a recipe offers the later stages: splits, volumes, the overlay's channel, multi-modal discovery and
clinical metadata, each asked through the recipe object rather than the recipe's module."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medseg.config import SplitConfig
from medseg.data import Recipe, RecipeResult, get_recipe, list_recipes, load_samples, recipe_or_default, register
from medseg.data import base as recipe_base
from medseg.data.lookup import lookup_metadata, metadata_rows, reference_diagnosis
from medseg.data.splits import make_split
from medseg.data.stacking import group_by_volume, stack_slices
from medseg.errors import MedsegError


def test_every_recipe_is_an_object_registered_by_its_name():
    shipped = {"brats", "demo", "folder", "lgg", "membrane", "nifti", "ph2"}  # and the recipes added since
    assert shipped <= set(list_recipes()) and list_recipes() == sorted(list_recipes())
    for name in list_recipes():
        recipe = get_recipe(name)
        assert isinstance(recipe, Recipe) and recipe.name == name
    assert get_recipe("demo").generates_data and not get_recipe("ph2").generates_data
    with pytest.raises(MedsegError, match="unknown data recipe 'nope'; fix: use one of"):
        get_recipe("nope")
    assert type(recipe_or_default("someone-elses")) is Recipe  # a checkpoint's recipe this install lacks


def test_a_new_recipe_is_one_class(tmp_path, monkeypatch):
    """A class with a name and a cases() method is all a data set needs; load_samples then runs its checks."""
    monkeypatch.setattr(recipe_base, "_RECIPES", dict(recipe_base._RECIPES))
    (tmp_path / "a.png").write_bytes(b"")

    @register
    class Tiny(Recipe):
        name = "tiny"

        def cases(self, data_dir, options):
            img = str(data_dir / "a.png")
            return RecipeResult([{"image": img, "label": img, "case_id": "a", "group": "a", "meta": {}}])

    assert "tiny" in list_recipes()
    assert [s["case_id"] for s in load_samples("tiny", tmp_path).samples] == ["a"]
    with pytest.raises(ValueError, match="needs a name"):
        register(type("Nameless", (Recipe,), {}))


def test_lgg_slices_are_split_by_patient_and_stacked_per_volume(lgg_dir):
    lgg = get_recipe("lgg")
    samples = load_samples("lgg", lgg_dir).samples
    vols = lgg.volumes(samples)
    assert vols == group_by_volume(samples) and len(vols) == 4
    assert all([s["slice_index"] for s in v] == sorted(s["slice_index"] for s in v) for v in vols.values())
    split = make_split(samples, SplitConfig(val_fraction=0.25, seed=0), lgg)
    patients = {side: {lgg.split_group(s) for s in samples if s["case_id"] in split[side]} for side in ("train", "val")}
    assert patients["train"] and patients["val"] and not patients["train"] & patients["val"]


def test_whole_images_are_not_stacked(ph2_dir):
    assert get_recipe("ph2").volumes(load_samples("ph2", ph2_dir).samples) is None


def test_a_recipe_may_split_by_its_own_groups_and_strata():
    """Overriding split_group and stratum changes the split, and only through those two hooks."""
    samples = [{"case_id": f"c{i}", "group": f"c{i}", "meta": {"site": i % 2}} for i in range(12)]

    class BySite(Recipe):
        name = "by-site"

        def split_group(self, sample):
            return f"site{sample['meta']['site']}"

    split = make_split(samples, SplitConfig(val_fraction=0.5, seed=0), BySite())
    sites = {side: {s["meta"]["site"] for s in samples if s["case_id"] in split[side]} for side in ("train", "val")}
    assert sites["train"] and sites["val"] and not sites["train"] & sites["val"]  # a site is never split
    assert make_split(samples, SplitConfig(val_fraction=0.5, seed=0)) != split


def test_stack_slices_keeps_their_order_and_refuses_two_sizes(tmp_path):
    paths = []
    for n, shape in enumerate([(4, 5), (4, 5), (4, 6)]):
        p = tmp_path / f"s_{n}.png"
        Image.fromarray(np.full(shape, n, np.uint8)).save(p)
        paths.append(p)
    read = lambda p: np.asarray(Image.open(p))
    vol = stack_slices(paths[:2], read)
    assert vol.shape == (4, 5, 2) and vol[..., 1].max() == 1
    with pytest.raises(MedsegError, match=r"s_0.png: slices of this patient differ in size.*; fix: re-export"):
        stack_slices(paths, read)


def test_the_overlay_channel_is_the_recipes(lgg_dir):
    """LGG's TIFFs hold pre-contrast, FLAIR and post-contrast: overlays draw FLAIR; a grey or RGB image its first."""
    lgg = get_recipe("lgg")
    assert (lgg.display.index, lgg.display.name) == (1, "FLAIR")
    tif = next(p for p in sorted(lgg_dir.rglob("*.tif")) if not p.stem.endswith("_mask"))
    assert np.array_equal(lgg.display_slice(tif), np.asarray(Image.open(tif), np.float32)[..., 1])
    assert get_recipe("folder").display.index == 0 and get_recipe("folder").display.name is None


def test_multi_modal_discovery_is_a_hook(brats_dir):
    case = next(d for d in sorted((brats_dir / "train").iterdir()) if d.is_dir())
    found = get_recipe("brats").modality_files(case, ["flair", "t1c"], {})
    assert [Path(f).name.split("_")[0] for f in found] == ["Flair", "T1c"]
    assert get_recipe("nifti").modality_files(case, ["flair", "t1c", "dwi"], {}) is None  # no dwi file
    mine = get_recipe("nifti").modality_files(case, ["a", "b"], {"modalities": {"a": "t1c*", "b": "flair*"}})
    assert [Path(f).name.split("_")[0] for f in mine] == ["T1c", "Flair"]


def test_clinical_metadata_is_found_by_the_recipe_whose_layout_holds_the_image(ph2_dir, lgg_dir, tmp_path):
    ph2_image = next((ph2_dir / "PH2 Dataset images").glob("IMD*/IMD*_Dermoscopic_Image/IMD*.*"))
    case = next(s for s in load_samples("ph2", ph2_dir).samples if s["image"] == str(ph2_image))
    assert case["meta"] and lookup_metadata(ph2_image) == case["meta"]
    lgg_samples = load_samples("lgg", lgg_dir).samples
    with_row = next(s for s in lgg_samples if s["meta"])
    assert lookup_metadata(with_row["image"]) == with_row["meta"]
    lone = tmp_path / "IMD999.png"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(lone)
    assert lookup_metadata(lone) == {}  # a PH2 name outside a PH2 layout


def test_reference_rows_label_each_data_sets_annotation():
    ph2 = {"diagnosis": 2, "histological_diagnosis": "melanoma in situ", "streaks": "P", "colours": ["black"]}
    study, reference = metadata_rows({**ph2, "age": 40, "modality": "XC"}, "IMD003.bmp")
    assert study == [("Age", "40")]
    assert reference == [
        ("Reference (PH2 annotation)", "melanoma (clinical diagnosis)"),
        ("Histology (PH2 annotation)", "melanoma in situ"),
        ("Dermoscopic criteria (PH2 annotation)", "streaks: present"),
        ("Colours (PH2 annotation)", "black"),
    ]
    assert reference_diagnosis({"diagnosis": "1"}) == "atypical nevus" and reference_diagnosis({"age": 3}) is None
    study, reference = metadata_rows({"gender": 2, "death01": None}, "/x/TCGA_CS_4941_19960909_7.tif")
    assert study == [] and reference == [("Gender (LGG data.csv)", "2")]
