"""Bounding boxes as weak labels: the three readers, drawing, the WIDER FACE and boxes recipes, data.options.boxes."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medseg.config import load_config
from medseg.data import load_samples, synthetic
from medseg.data.boxes import Box, box_mask, draw_boxes, match_images, outside, read_boxes
from medseg.data.splits import make_split
from medseg.errors import MedsegError


def _pixels(path) -> np.ndarray:
    return np.array(Image.open(path)) > 0


def _union(hw, boxes) -> np.ndarray:
    """Integer ``(x1, y1, x2, y2)`` boxes drawn with plain slicing: the expected mask, independent of medseg."""
    m = np.zeros(hw, bool)
    for x1, y1, x2, y2 in boxes:
        m[max(y1, 0) : y2, max(x1, 0) : x2] = True
    return m


# -- readers --------------------------------------------------------------------------------------------------------

WIDER_TEXT = """0--Parade/0_Parade_a.jpg
2
10 20 30 40 0 0 0 0 0 0
5 5 8 9 1 0 0 1 0 0
1--Handshaking/1_Handshaking_b.jpg
0
0 0 0 0 0 0 0 0 0 0
1--Handshaking/1_Handshaking_c.jpg
1
7 8 9 10 2 0 0 0 1 0
"""


def test_wider_reader_skips_invalid_faces_and_the_zero_line(tmp_path):
    path = tmp_path / "wider_face_train_bbx_gt.txt"
    path.write_text(WIDER_TEXT)
    found = read_boxes(path)
    assert found.format == "wider"
    assert found.boxes == {
        "0--Parade/0_Parade_a.jpg": [Box(10, 20, 40, 60)],
        "1--Handshaking/1_Handshaking_b.jpg": [],
        "1--Handshaking/1_Handshaking_c.jpg": [Box(7, 8, 16, 18)],
    }
    assert found.skipped == 1


def test_coco_reader_filters_categories_and_keeps_images_without_boxes(tmp_path):
    coco = {
        "images": [
            {"id": 7, "file_name": "a.png", "width": 50, "height": 40},
            {"id": 8, "file_name": "sub/b.png", "width": 30, "height": 20},
        ],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 1, "bbox": [1.5, 2, 10, 4]},
            {"id": 2, "image_id": 7, "category_id": 2, "bbox": [0, 0, 3, 3]},
        ],
        "categories": [{"id": 1, "name": "lesion"}, {"id": 2, "name": "ruler"}],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(coco))
    everything = read_boxes(path)
    assert everything.boxes == {"a.png": [Box(1.5, 2, 11.5, 6), Box(0, 0, 3, 3)], "sub/b.png": []}
    assert everything.sizes == {"a.png": (40, 50), "sub/b.png": (20, 30)}
    assert read_boxes(path, ["lesion"]).boxes["a.png"] == [Box(1.5, 2, 11.5, 6)]


def test_csv_reader_gathers_rows_per_image(tmp_path):
    path = tmp_path / "boxes.csv"
    path.write_text("image,x1,y1,x2,y2\na.png,1,2,5,8\nsub/b.jpg,0,0,3,3\n\na.png,10,10,12.5,11\n")
    found = read_boxes(path)
    assert found.format == "csv"
    assert found.boxes == {"a.png": [Box(1, 2, 5, 8), Box(10, 10, 12.5, 11)], "sub/b.jpg": [Box(0, 0, 3, 3)]}


@pytest.mark.parametrize(
    "name, text, expected",
    [
        ("w.txt", "a.jpg\n1\n1 2 3\n", r"w\.txt, line 3: expected face 1 of 1 as 10 numbers.*fix:"),
        ("w.txt", "a.jpg\n2\n1 2 3 4 0 0 0 0 0 0\n", r"w\.txt, line 4: expected face 2 of 2.*end of the file.*fix:"),
        ("w.txt", "a.jpg\nb.jpg\n", r"w\.txt, line 2: expected the number of faces of 'a\.jpg'.*fix:"),
        ("w.txt", "a.jpg\n1\n1 2 -3 4 0 0 0 0 0 0\n", r"w\.txt, line 3: .*w, h >= 0.*fix:"),
        ("b.csv", "file,left,top\na.png,1,2\n", r"b\.csv, line 1: header .* lacks image, x1, y1, x2, y2; fix:"),
        ("b.csv", "image,x1,y1,x2,y2\na.png,1,2,3,4\na.png,1,x,3,4\n", r"b\.csv, line 3: expected image,x1.*fix:"),
        ("b.csv", "image,x1,y1,x2,y2\na.png,5,2,3,4\n", r"b\.csv, line 2: .*x2 < x1.*fix:"),
        ("c.json", '{"images": [\n{"id": 1,}\n]}', r"c\.json, line 2: is not valid JSON.*fix:"),
        (
            "c.json",
            '{"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"image_id": 1, "bbox": [1, 2]}]}',
            r"c\.json: annotations\[0\] has bbox \[1, 2\]; fix:",
        ),
        (
            "c.json",
            '{"images": [], "annotations": [{"image_id": 3, "bbox": [1, 2, 3, 4]}]}',
            r"c\.json: annotations\[0\] names image_id 3.*fix:",
        ),
    ],
)
def test_malformed_box_files_are_one_line_errors(tmp_path, name, text, expected):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(MedsegError, match=expected) as err:
        read_boxes(path)
    assert "\n" not in str(err.value)


def test_unknown_coco_category_names_the_ones_there(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"images": [], "annotations": [], "categories": [{"id": 1, "name": "lesion"}]}))
    with pytest.raises(MedsegError, match=r"no category named 'face'; fix: .*\['lesion'\]"):
        read_boxes(path, ["face"])


# -- drawing --------------------------------------------------------------------------------------------------------


def test_a_4x6_box_is_24_pixels_where_it_says():
    mask = draw_boxes([Box(2, 3, 6, 9)], (10, 10)) > 0
    assert mask.sum() == 24
    assert mask[3:9, 2:6].all()


def test_inscribed_ellipse_lies_in_its_box_and_covers_a_quarter_pi_of_it():
    box = Box(10, 20, 70, 60)  # 60 wide, 40 high
    ellipse = draw_boxes([box], (100, 100), "ellipse") > 0
    filled = draw_boxes([box], (100, 100), "box") > 0
    assert not (ellipse & ~filled).any()
    assert ellipse.sum() / filled.sum() == pytest.approx(np.pi / 4, abs=0.01)
    assert ellipse[40, 10] and ellipse[40, 69] and not ellipse[20, 10]  # touches the sides, not the corners


def test_boxes_are_clipped_to_the_image():
    mask = draw_boxes([Box(-3, 7, 4, 15), Box(20, 20, 30, 30)], (10, 12)) > 0
    assert mask.sum() == 4 * 3
    assert mask[7:10, 0:4].all()
    assert outside([Box(-3, 7, 4, 15), Box(20, 20, 30, 30)], (10, 12)) == 1


def test_box_mask_is_drawn_upright_for_an_exif_turned_photo(tmp_path):
    image = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 30 wide and 20 high, shown turned a quarter: 20 wide and 30 high
    Image.new("RGB", (30, 20)).save(image, exif=exif)
    boxes_file = tmp_path / "b.csv"
    boxes_file.write_text("image,x1,y1,x2,y2\nphone.jpg,0,25,20,30\n")
    mask = _pixels(box_mask(boxes_file, image, [Box(0, 25, 20, 30)], "box"))
    assert mask.shape == (30, 20)
    assert mask.sum() == 100 and mask[25:, :].all()


def test_a_bare_name_that_fits_two_images_is_refused():
    images = [Path("/d/a/x.png"), Path("/d/b/x.png")]
    assert match_images(images, ["a/x.png", "d/b/x.png", "B/X.png"], Path("f.csv")) == {
        images[0]: ["a/x.png"],
        images[1]: ["d/b/x.png", "B/X.png"],
    }
    with pytest.raises(MedsegError, match=r"f\.csv: names 'x\.png', which fits two images.*fix:"):
        match_images(images, ["x.png"], Path("f.csv"))


# -- recipes --------------------------------------------------------------------------------------------------------


def _wider_faces(txt: Path) -> dict[str, list[tuple[int, int, int, int]]]:
    """The valid faces of a WIDER file as (x1, y1, x2, y2), read here line by line."""
    lines, out, i = txt.read_text().splitlines(), {}, 0
    while i < len(lines):
        name, count = lines[i], int(lines[i + 1])
        faces = [list(map(int, ln.split())) for ln in lines[i + 2 : i + 2 + count]]
        out[name] = [(x, y, x + w, y + h) for x, y, w, h, *_rest in faces if not _rest[3]]
        i += 2 + max(count, 1)
    return out


def test_widerface_twin_masks_are_the_valid_faces(tmp_path):
    root = synthetic.make_widerface(tmp_path / "wider")
    res = load_samples("widerface", tmp_path)  # found one level down
    assert len(res.samples) == 12
    assert sorted({s["subset"] for s in res.samples}) == ["train", "val"]
    faces = _wider_faces(root / "wider_face_split" / "wider_face_train_bbx_gt.txt")
    by_id = {s["case_id"]: s for s in res.samples}
    for name, boxes in faces.items():
        s = by_id[Path(name).stem]
        mask = _pixels(s["label"])
        assert (mask == _union(mask.shape, boxes)).all(), name
    assert _pixels(by_id["0_Event_train_0"]["label"]).sum() == 0
    assert _pixels(by_id["1_Event_train_5"]["label"]).sum() == 6 * 10  # clipped at the right edge
    assert any("1 of 6 images has no box" in w and "0_Event_train_0" in w for w in res.warnings)
    assert any("1 face marked invalid left out" in w for w in res.warnings)
    split = make_split(res.samples, load_config("widerface").data.split)
    assert split["method"] == "predefined folders" and len(split["val"]) == 6


def test_widerface_leaves_out_images_the_file_does_not_list(tmp_path):
    root = synthetic.make_widerface(tmp_path)
    extra = root / "WIDER_train" / "images" / "0--Event0" / "0_Event_unlisted.jpg"
    Image.new("RGB", (64, 48)).save(extra)
    res = load_samples("widerface", root)
    assert "0_Event_unlisted" not in {s["case_id"] for s in res.samples}
    assert any("1 of 7 images not listed" in w and "0_event_unlisted.jpg" in w for w in res.warnings)


@pytest.mark.parametrize("fmt", ["csv", "coco"])
def test_boxes_recipe_draws_each_images_boxes(tmp_path, fmt):
    root = synthetic.make_box_set(tmp_path, fmt)
    if fmt == "csv":
        expected = {}
        for row in csv.DictReader((root / "boxes.csv").read_text().splitlines()):
            expected.setdefault(row["image"], []).append(tuple(int(row[k]) for k in ("x1", "y1", "x2", "y2")))
        res = load_samples("boxes", root)
    else:
        coco = json.loads((root / "annotations" / "instances.json").read_text())
        names = {im["id"]: im["file_name"] for im in coco["images"]}
        expected = {}
        for a in coco["annotations"]:
            if a["category_id"] == 1:
                x, y, w, h = a["bbox"]
                expected.setdefault(names[a["image_id"]], []).append((x, y, x + w, y + h))
        res = load_samples("boxes", root, {"box_categories": ["lesion"]})
    assert len(res.samples) == 6
    for s in res.samples:
        mask = _pixels(s["label"])
        assert (mask == _union(mask.shape, expected.get(Path(s["image"]).name, []))).all(), s["case_id"]
        assert s["label_source"].endswith(("boxes.csv", "instances.json"))
    assert any("1 of 6 images has no box (e.g. case_5)" in w for w in res.warnings)


def test_coco_without_a_category_filter_draws_every_category(tmp_path):
    root = synthetic.make_box_set(tmp_path, "coco")
    every = {s["case_id"]: _pixels(s["label"]) for s in load_samples("boxes", root).samples}
    lesions = {
        s["case_id"]: _pixels(s["label"]) for s in load_samples("boxes", root, {"box_categories": "lesion"}).samples
    }
    assert every["case_0"][:3, :3].all()  # the ruler's box
    assert (every["case_0"] & ~lesions["case_0"]).any() and not (lesions["case_0"] & ~every["case_0"]).any()


def test_boxes_recipe_with_two_box_files_asks_which(tmp_path):
    root = synthetic.make_box_set(tmp_path, "csv")
    (root / "other.csv").write_text("image,x1,y1,x2,y2\ncase_0.png,0,0,2,2\n")
    with pytest.raises(
        MedsegError, match=r"holds 2 possible box files \(boxes.csv, other.csv\); fix: set data.options"
    ):
        load_samples("boxes", root)
    res = load_samples("boxes", root, {"boxes": "other.csv"})
    assert _pixels(res.samples[0]["label"]).sum() == 4 and _pixels(res.samples[1]["label"]).sum() == 0


# -- data.options.boxes on any 2D recipe ----------------------------------------------------------------------------


def test_boxes_option_replaces_a_2d_recipes_masks(tmp_path):
    root = synthetic.make_folder_2d(tmp_path / "f", n=4, size=(30, 40))
    (root / "boxes.csv").write_text(
        "image,x1,y1,x2,y2\ncase_000.png,2,3,12,9\nimages/case_001.png,0,0,5,5\ncase_001.png,30,20,40,30\n"
        "case_002.png,35,25,50,40\nghost.png,1,1,2,2\n"
    )
    plain = {s["case_id"]: s for s in load_samples("folder", root).samples}
    res = load_samples("folder", root, {"boxes": "boxes.csv"})  # relative to the data directory
    got = {s["case_id"]: _pixels(s["label"]) for s in res.samples}
    assert (got["case_000"] == _union((30, 40), [(2, 3, 12, 9)])).all()
    assert (got["case_001"] == _union((30, 40), [(0, 0, 5, 5), (30, 20, 40, 30)])).all()
    assert got["case_002"].sum() == 5 * 5
    assert got["case_003"].sum() == 0
    assert all(s["label_source"] == str(root / "boxes.csv") for s in res.samples)
    assert all(s["label"] != plain[s["case_id"]]["label"] for s in res.samples)
    assert any("1 of 4 images has no box (e.g. case_003)" in w for w in res.warnings)
    assert any("1 image named there not among the 4 cases" in w and "ghost.png" in w for w in res.warnings)


def test_boxes_option_ellipse_and_a_wrong_shape(tmp_path):
    root = synthetic.make_folder_2d(tmp_path / "f", n=2, size=(30, 40))
    (root / "b.csv").write_text("image,x1,y1,x2,y2\ncase_000.png,0,0,40,30\n")
    res = load_samples("folder", root, {"boxes": str(root / "b.csv"), "box_shape": "ellipse"})
    mask = _pixels(res.samples[0]["label"])
    assert not mask[0, 0] and mask[15, 20] and mask.sum() / mask.size == pytest.approx(np.pi / 4, abs=0.02)
    with pytest.raises(MedsegError, match=r"data.options.box_shape='circle'; fix: use one of \['box', 'ellipse'\]"):
        load_samples("folder", root, {"boxes": str(root / "b.csv"), "box_shape": "circle"})


def test_boxes_option_refuses_volumes_and_a_missing_file(tmp_path, nifti_dir):
    (tmp_path / "b.csv").write_text("image,x1,y1,x2,y2\n")
    with pytest.raises(MedsegError, match=r"draws 2D masks, but case .* is not one 2D image; fix:"):
        load_samples("nifti", nifti_dir, {"boxes": str(tmp_path / "b.csv")})
    root = synthetic.make_folder_2d(tmp_path / "f", n=2, size=(30, 40))
    with pytest.raises(MedsegError, match=r"nope\.csv: box annotation file not found; fix:"):
        load_samples("folder", root, {"boxes": "nope.csv"})
