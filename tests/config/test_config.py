import pytest

from medseg.config import apply_overrides, config_from_dict, load_config
from medseg.errors import MedsegError


@pytest.mark.parametrize("name", ["demo", "ph2", "lgg", "brats"])
def test_shipped_configs_load(name):
    cfg = load_config(name)
    assert cfg.name == name
    assert cfg.data.recipe in {"demo", "ph2", "lgg", "brats"}
    assert cfg.num_classes == len(cfg.data.labels)


def test_binary_and_multiclass_heads():
    assert load_config("ph2").out_channels == 1
    assert load_config("brats").out_channels == 5


def test_overrides_are_parsed_as_yaml():
    cfg = load_config("ph2", ["train.lr=3e-4", "model.channels=[8,16,32]", "model.strides=[2,2]", "data.split.seed=7"])
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.model.channels == [8, 16, 32]
    assert cfg.data.split.seed == 7


def test_unknown_key_names_the_key():
    with pytest.raises(MedsegError, match="unknown config key 'train.learning_rate'"):
        config_from_dict({"train": {"learning_rate": 1}})


def test_wrong_type_is_reported():
    with pytest.raises(MedsegError, match="train.epochs"):
        config_from_dict({"train": {"epochs": "many"}})


def test_override_without_equals():
    with pytest.raises(MedsegError, match="no '='"):
        apply_overrides({}, ["train.lr"])


def test_unknown_recipe_name():
    with pytest.raises(MedsegError, match="no config named 'nope'"):
        load_config("nope")


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.optimizer=lion", "train.optimizer 'lion' is unknown; fix: use adamw, adam or sgd"),
        ("train.scheduler=step", "train.scheduler 'step' is unknown; fix: use cosine, poly or constant"),
        ("model.dropout_mode=spatial", "model.dropout_mode is 'spatial'; fix: use 'element' or 'channel'"),
        ("preprocess.intensity=minmax", "preprocess.intensity 'minmax' is unknown; fix: use zscore, volume, scale"),
        ("augment.blur_sigma=[1.0,0.5]", "augment.blur_sigma [1.0, 0.5] must be [low, high] with 0 < low <= high;"),
        ("augment.blur_sigma=[0,1]", "augment.blur_sigma [0.0, 1.0] must be [low, high] with 0 < low <= high;"),
        ("augment.lowres_zoom=[0.5,2]", "augment.lowres_zoom [0.5, 2.0] must be [low, high] with 0 < low <= high <= 1"),
        ("model.head=-2", "model.head -2 must be true, false or a number of feature maps"),
        ("train.ema=1.5", "train.ema 1.5 must be a decay between 0 and 1"),
        ("train.pos_slice_fraction=0", "train.pos_slice_fraction 0.0 must be between 0 and 1"),
        ("train.loss.fn_weight=1.5", "train.loss.fn_weight 1.5 must be between 0 and 1"),
    ],
)
def test_names_and_ranges_the_builders_take_are_refused_at_load(override, message):
    """What the optimiser, schedule, weight average, loss, sampler and normalisation would refuse later is refused
    when the config loads, blamed on the --set item, in the builders' own words."""
    key = override.split("=")[0]
    with pytest.raises(MedsegError) as err:
        load_config("demo", [override])
    assert str(err.value).startswith(f"{key} from --set: {message}"), str(err.value)


def test_a_bad_name_in_a_config_file_is_blamed_on_the_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("train:\n  optimizer: lion\n")
    with pytest.raises(MedsegError, match=f"^{path}: train.optimizer 'lion' is unknown; fix: use adamw"):
        load_config(str(path))


def test_context_slices_are_for_2d_slices_only():
    assert load_config("lgg", ["data.context_slices=1"]).in_channels == 9
    with pytest.raises(MedsegError, match="brats.yaml: data.context_slices 1 applies to 2D slices only"):
        load_config("brats", ["data.context_slices=1"])


def test_every_choice_the_builders_know_loads():
    for optimizer in ("adamw", "adam", "sgd"):
        for scheduler in ("cosine", "poly", "constant"):
            cfg = load_config("demo", [f"train.optimizer={optimizer}", f"train.scheduler={scheduler}"])
            assert (cfg.train.optimizer, cfg.train.scheduler) == (optimizer, scheduler)
    for intensity in ("zscore", "volume", "scale", "fixed", "none"):
        assert load_config("demo", [f"preprocess.intensity={intensity}"]).preprocess.intensity == intensity
    assert load_config("demo", ["augment.lowres_zoom=[1.0,1.0]"]).augment.lowres_zoom == [1.0, 1.0]


def test_recipe_names_come_from_the_layer_that_registers_them(monkeypatch):
    """The config layer knows no recipe: a name without a YAML loads once a source of recipe names says it is one."""
    from medseg.config import add_recipe_names, loading

    monkeypatch.setattr(loading, "_recipe_sources", [])
    with pytest.raises(MedsegError, match="no config named 'mine'"):
        load_config("mine")
    add_recipe_names(lambda: ["mine"])
    add_recipe_names(loading._recipe_sources[0])  # the same source twice is kept once
    assert len(loading._recipe_sources) == 1
    cfg = load_config("mine", ["train.epochs=3"])
    assert (cfg.name, cfg.data.recipe, cfg.train.epochs) == ("mine", "mine", 3)
