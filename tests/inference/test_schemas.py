"""The published JSON schemas: the files medseg writes satisfy them, and records that break a promise fail them."""

import copy

import jsonschema
import numpy as np
import pytest

from medseg import schemas
from medseg.inference.findings import instance_findings, lesion_findings
from medseg.io import Geometry
from medseg.io.images import geometry_2d
from tests.conftest import schema_valid

LABELS = ["background", "lesion"]


def _record(findings: dict, geom: Geometry) -> dict:
    """A findings JSON as ``medseg infer`` writes it around ``findings`` (the model and timing fields aside)."""
    return {
        "case_id": "c1",
        "input": ["/data/c1.nii.gz"],
        "segmentation": "/out/c1_seg.nii.gz",
        "probabilities": None,
        "geometry": geom.summary(),
        "metadata": {},
        "labels": LABELS,
        "channels": ["mr"],
        **findings,
        "models": [{"path": "/runs/a/best.pt", "sha256_12": "0123456789ab", "description": "unet 3D"}],
        "postprocess": {"threshold": 0.5, "keep_largest": False, "min_size": 0.0, "fill_holes": False},
        "tta": False,
        "device": "cpu",
        "timings": {"predict_s": 0.5, "total_s": 0.7},
        "medseg_version": "0.1.0",
        "created": "2026-12-03T10:36:42+00:00",
    }


def _two_blobs(shape) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    m[tuple(slice(1, 4) for _ in shape)] = 1
    m[tuple(slice(5, 7) for _ in shape)] = 1
    return m


@pytest.fixture(params=["volume", "2d-spaced", "2d-pixels"])
def record(request) -> dict:
    if request.param == "volume":
        geom = Geometry((8, 8, 8), (1.0, 1.0, 2.0), np.diag([1.0, 1.0, 2.0, 1.0]), "nifti")
    else:
        geom = geometry_2d("photo.png", (8, 8), [0.1, 0.1] if request.param == "2d-spaced" else None)
    return _record(lesion_findings(_two_blobs(geom.shape), geom, LABELS), geom)


def test_each_unit_of_findings_is_valid(record):
    schema_valid("findings", record)
    assert record["classes"]["lesion"]["n_lesions"] == 2  # the record really holds lesions the schema looked into


def test_instance_findings_are_valid():
    geom = geometry_2d("nuclei.png", (8, 8), None)
    instances = _two_blobs((8, 8)).astype(np.int32)
    instances[5:7, 5:7] = 2
    record = _record(instance_findings(instances, {1: 0.9, 2: 0.8}, geom, LABELS), geom)
    schema_valid("findings", record)
    assert [o["id"] for o in record["objects"]] == [1, 2]


def _broken(record: dict, how: str) -> dict:
    bad = copy.deepcopy(record)
    lesion = bad["classes"]["lesion"]["lesions"][0]
    unit, length = bad["unit"], bad["length_unit"]
    if how == "missing case_id":
        del bad["case_id"]
    elif how == "size in another unit":  # px² claimed, mL given: a reader would take pixels for millilitres
        lesion["size_px2" if unit != "px2" else "size_ml"] = lesion.pop(f"size_{unit}")
    elif how == "length unit that contradicts the unit":
        bad["length_unit"] = "px" if length == "mm" else "mm"
    elif how == "negative lesion count":
        bad["classes"]["lesion"]["n_lesions"] = -1
    elif how == "hash that is no hash":
        bad["models"][0]["sha256_12"] = "best.pt"
    elif how == "unknown unit":
        bad["unit"] = "cm3"
    elif how == "a date that is no date":
        bad["created"] = "yesterday"
    return bad


@pytest.mark.parametrize(
    "how",
    [
        "missing case_id",
        "size in another unit",
        "length unit that contradicts the unit",
        "negative lesion count",
        "hash that is no hash",
        "unknown unit",
        "a date that is no date",
    ],
)
def test_records_that_break_a_promise_fail(record, how):
    with pytest.raises(jsonschema.ValidationError):
        schema_valid("findings", _broken(record, how))


def test_schemas_are_valid_json_schema_and_named():
    for name in schemas.NAMES:
        jsonschema.Draft202012Validator.check_schema(schemas.load(name))
        assert schemas.path(name).name == f"{name}.schema.json"
    with pytest.raises(ValueError, match="no medseg schema named 'finding'"):
        schemas.path("finding")
