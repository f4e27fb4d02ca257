import pytest

from medseg.config import SplitConfig
from medseg.data.splits import make_split
from medseg.errors import MedsegError


def _samples(n_groups=20, per_group=3):
    return [
        {"case_id": f"p{g}_{i}", "group": f"p{g}", "meta": {"diagnosis": g % 3}}
        for g in range(n_groups)
        for i in range(per_group)
    ]


def _groups(ids):
    return {i.split("_")[0] for i in ids}


def test_split_is_deterministic_and_group_disjoint():
    s = _samples()
    a = make_split(s, SplitConfig(val_fraction=0.25, test_fraction=0.1, seed=3))
    b = make_split(s, SplitConfig(val_fraction=0.25, test_fraction=0.1, seed=3))
    c = make_split(s, SplitConfig(val_fraction=0.25, test_fraction=0.1, seed=4))
    assert a == b and a["val"] != c["val"]
    tr, va, te = _groups(a["train"]), _groups(a["val"]), _groups(a["test"])
    assert not (tr & va) and not (tr & te) and not (va & te)
    assert len(a["train"]) + len(a["val"]) + len(a["test"]) == 60


def test_stratified_split_keeps_every_class_in_val():
    s = _samples(30, 1)
    split = make_split(s, SplitConfig(val_fraction=0.2, stratify="diagnosis", seed=0))
    val_classes = sorted(int(i[1:].split("_")[0]) % 3 for i in split["val"])
    assert val_classes == [0, 0, 1, 1, 2, 2]


def test_split_says_when_the_stratify_key_is_missing_everywhere():
    s = _samples(30, 1)
    assert "stratified by diagnosis" in make_split(s, SplitConfig(val_fraction=0.2, stratify="diagnosis"))["method"]
    for x in s:
        x["meta"] = {}
    method = make_split(s, SplitConfig(val_fraction=0.2, stratify="diagnosis"))["method"]
    assert "not stratified (no case has a diagnosis)" in method and "stratified by" not in method


def test_kfold_covers_every_group_once():
    s = _samples(10, 2)
    seen = []
    for fold in range(5):
        sp = make_split(s, SplitConfig(folds=5, fold=fold, seed=1))
        assert not (_groups(sp["train"]) & _groups(sp["val"]))
        seen += sorted(_groups(sp["val"]))
    assert sorted(seen) == sorted(f"p{g}" for g in range(10))


def test_predefined_subsets_win():
    s = [
        {"case_id": "a", "group": "a", "subset": "train"},
        {"case_id": "b", "group": "b", "subset": "val"},
        {"case_id": "c", "group": "c", "subset": "train"},
    ]
    sp = make_split(s, SplitConfig())
    assert sp["val"] == ["b"] and sp["train"] == ["a", "c"]


def test_bad_fold_rejected():
    with pytest.raises(MedsegError, match="fold"):
        make_split(_samples(), SplitConfig(folds=3, fold=3))


def test_max_train_groups_gives_nested_subsets_and_leaves_validation_alone():
    s = _samples(20, 3)
    full = make_split(s, SplitConfig(folds=5, fold=2, seed=0))
    subsets = {n: make_split(s, SplitConfig(folds=5, fold=2, seed=0, max_train_groups=n)) for n in (4, 8, 12)}
    for n, sp in subsets.items():
        assert sp["val"] == full["val"]  # the held-out fold does not move
        assert len(_groups(sp["train"])) == n  # whole groups: 3 slices each
        assert len(sp["train"]) == 3 * n
        assert f"{n} of 16 training groups" in sp["method"]
    assert _groups(subsets[4]["train"]) < _groups(subsets[8]["train"]) < _groups(subsets[12]["train"])
    assert _groups(subsets[12]["train"]) < _groups(full["train"])
    assert make_split(s, SplitConfig(folds=5, fold=2, seed=0, max_train_groups=99))["train"] == full["train"]


def test_max_train_groups_refuses_predefined_folders():
    s = [{"case_id": "a", "group": "a", "subset": "train"}, {"case_id": "b", "group": "b", "subset": "val"}]
    with pytest.raises(MedsegError, match="use_predefined=false"):
        make_split(s, SplitConfig(max_train_groups=1))


def test_negative_max_train_groups_is_named_even_with_predefined_folders():
    s = [{"case_id": "a", "group": "a", "subset": "train"}, {"case_id": "b", "group": "b", "subset": "val"}]
    with pytest.raises(MedsegError, match="must be >= 0"):
        make_split(s, SplitConfig(max_train_groups=-1))
