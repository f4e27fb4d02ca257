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
