"""COCO instance JSON (polygons, uncompressed and compressed RLE) read by the nuclei recipe as instance maps."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from medseg.data import load_samples, synthetic
from medseg.data.coco_masks import annotation_mask
from medseg.data.nuclei import instance_map
from medseg.errors import MedsegError
from medseg.evaluation.instances import iou_matrix


@pytest.fixture()
def coco_dir(tmp_path):
    return synthetic.make_coco_instances(tmp_path / "coco", n=3)


def _truth(root, i):
    return np.array(Image.open(root / "annotations" / f"truth_{i}.png"))


def test_every_encoding_becomes_its_object_and_crowds_and_boxes_are_left_out(coco_dir):
    res = load_samples("nuclei", coco_dir)
    assert [s["case_id"] for s in res.samples] == ["cells_0", "cells_1", "cells_2"] and not res.problems
    assert "3 annotations without a segmentation, 3 crowd regions" in res.info["summary"]
    coco = json.loads((coco_dir / "annotations" / "instances.json").read_text())
    for i, s in enumerate(res.samples):
        truth, got = _truth(coco_dir, i), instance_map(s)
        assert got.max() == truth.max() == s["meta"]["objects"]
        iou = iou_matrix(truth, got).diagonal()  # objects keep the annotation order
        own = [a for a in coco["annotations"] if a["image_id"] == i + 1 and not a.get("iscrowd")]
        kinds = [a["segmentation"] for a in own if a.get("segmentation")]
        assert len(kinds) == len(iou)
        for k, seg in enumerate(kinds):
            if isinstance(seg, dict):  # run-length encodings are exact
                assert iou[k] == 1.0
            else:  # a 24-gon round a small disc covers it nearly
                assert iou[k] > 0.8


def test_uncompressed_rle_decodes_column_major():
    mask = annotation_mask({"segmentation": {"size": [2, 3], "counts": [1, 2, 3]}}, (2, 3), "x.json")
    # down the columns: background, then 2 object pixels (row 1 of column 0, row 0 of column 1), then background
    assert mask.tolist() == [[False, True, False], [True, False, False]]


def test_a_category_filter_and_a_missing_image_are_handled(coco_dir):
    (coco_dir / "images" / "cells_2.png").unlink()
    res = load_samples("nuclei", coco_dir, {"categories": ["nucleus"]}, collect_problems=True)
    assert len(res.samples) == 2
    assert any("cells_2.png: listed in the COCO JSON but not found" in p for p in res.problems)
    with pytest.raises(MedsegError, match="has no category named 'cell'"):
        load_samples("nuclei", coco_dir, {"categories": ["cell"]})


def test_a_broken_segmentation_names_the_file_and_annotation(coco_dir):
    path = coco_dir / "annotations" / "instances.json"
    coco = json.loads(path.read_text())
    coco["annotations"][0]["segmentation"] = [[1, 2, 3]]  # fewer than 3 points
    path.write_text(json.dumps(coco))
    res = load_samples("nuclei", coco_dir, collect_problems=True)
    assert any("instances.json: annotation 1 has an unreadable segmentation" in p for p in res.problems)


def test_a_wrong_image_size_is_a_problem_line(coco_dir):
    path = coco_dir / "annotations" / "instances.json"
    coco = json.loads(path.read_text())
    coco["images"][1]["height"] = 99
    path.write_text(json.dumps(coco))
    res = load_samples("nuclei", coco_dir, collect_problems=True)
    assert len(res.samples) == 2 and any(
        "cells_1.png: is 40x48 but instances.json says 99x48" in p for p in res.problems
    )


def test_a_json_list_is_not_taken_for_coco_and_named_when_asked_for(tmp_path):
    root = synthetic.make_coco_instances(tmp_path / "c", n=1)
    (root / "annotations" / "instances.json").rename(root / "annotations" / "z.json")
    (root / "annotations" / "a_labelstudio.json").write_text("[]")  # first in name order, and no COCO object
    assert len(load_samples("nuclei", root).samples) == 1
    with pytest.raises(MedsegError, match="a_labelstudio.json: is not a COCO object with an 'images' list"):
        load_samples("nuclei", root, {"coco": "annotations/a_labelstudio.json"})


def test_a_colour_instance_map_is_refused(tmp_path):
    from medseg.data.loading import instance_ids

    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[1, 1] = (200, 10, 10)
    with pytest.raises(MedsegError, match="m.png: instance map has colour channels"):
        instance_ids(rgb, "m.png")
    grey = np.repeat(np.arange(16, dtype=np.uint8).reshape(4, 4)[..., None], 3, axis=2)
    assert instance_ids(grey, "g.png").tolist() == np.arange(16).reshape(4, 4).tolist()
