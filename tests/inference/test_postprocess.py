"""Post-processing and findings on hand-made label maps, in physical units."""

import warnings

import numpy as np

from medseg.inference.findings import lesion_findings
from medseg.io import Geometry, geometry_2d
from medseg.postprocess import postprocess


def _two_blobs():
    m = np.zeros((20, 20), np.uint8)
    m[2:8, 2:8] = 1  # 36 px
    m[12:14, 12:14] = 1  # 4 px
    return m


def test_keep_largest():
    out = postprocess(_two_blobs(), 2, (1.0, 1.0), keep_largest=True)
    assert out.sum() == 36 and out[12, 12] == 0


def test_min_size_is_in_mm2():
    # pixels of 0.5 x 0.5 mm: the small blob is 4 px = 1 mm^2, the large one 9 mm^2
    out = postprocess(_two_blobs(), 2, (0.5, 0.5), min_size=2.0)
    assert out.sum() == 36
    out = postprocess(_two_blobs(), 2, (0.5, 0.5), min_size=0.5)
    assert out.sum() == 40


def test_min_size_keeps_a_component_of_exactly_that_size_and_warns_nothing():
    # the 4-px blob is exactly 1 mm^2: "smaller than min_size" is strict, and the scikit-image deprecation warning
    # that MONAI's kernel triggers is not passed on to the user
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = postprocess(_two_blobs(), 2, (0.5, 0.5), min_size=1.0)
    assert out.sum() == 40


def test_fill_holes():
    m = np.zeros((10, 10), np.uint8)
    m[2:8, 2:8] = 1
    m[4:6, 4:6] = 0
    assert postprocess(m, 2, (1, 1), fill_holes=True).sum() == 36


def test_findings_2d_and_3d_units():
    f = lesion_findings(_two_blobs(), geometry_2d("x.png", (20, 20), [0.5, 0.5]), ["background", "lesion"])
    les = f["classes"]["lesion"]
    assert les["n_lesions"] == 2 and les["total_mm2"] == 10.0 and les["largest_mm2"] == 9.0
    assert les["lesions"][0]["centroid_mm"] == [2.25, 2.25]  # centre of rows/cols 2..7 at 0.5 mm
    v = np.zeros((10, 10, 10), np.uint8)
    v[1:3, 1:3, 1:3] = 2
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    aff[:3, 3] = [10, 20, 30]
    g = Geometry((10, 10, 10), (2.0, 2.0, 2.0), aff, "nifti")
    f3 = lesion_findings(v, g, ["background", "a", "b"])
    assert f3["classes"]["a"]["n_lesions"] == 0
    b = f3["classes"]["b"]
    assert b["total_ml"] == 8 * 8 / 1000 and b["lesions"][0]["centroid_mm"] == [13.0, 23.0, 33.0]
    assert b["lesions"][0]["bbox_mm"] == {"min": [12.0, 22.0, 32.0], "max": [14.0, 24.0, 34.0]}


def test_findings_report_the_largest_lesions_first_with_their_own_centroids():
    v = np.zeros((30, 30, 30), np.uint8)
    v[20:24, 20:24, 20:24] = 1  # 64 voxels, centre 21.5
    v[5:7, 5:7, 5:7] = 1  # 8 voxels, centre 5.5
    v[10:13, 25:28, 2:5] = 1  # 27 voxels, centre (11, 26, 3)
    g = Geometry((30, 30, 30), (1.0, 1.0, 1.0), np.eye(4), "nifti")
    les = lesion_findings(v, g, ["background", "lesion"], max_lesions=2)["classes"]["lesion"]
    assert les["n_lesions"] == 3 and les["voxels"] == 99 and len(les["lesions"]) == 2
    assert [x["voxels"] for x in les["lesions"]] == [64, 27]
    assert les["lesions"][0]["centroid_voxel"] == [21.5, 21.5, 21.5]
    assert les["lesions"][1]["centroid_voxel"] == [11.0, 26.0, 3.0]
    assert les["lesions"][1]["bbox_voxel"] == {"min": [10, 25, 2], "max": [12, 27, 4]}


def testcomponent_sizes_are_counted_chunk_by_chunk():
    from medseg.postprocess import component_sizes

    comp = np.array([[0, 1, 1, 0, 2], [3, 3, 3, 0, 2], [0, 0, 0, 0, 2]], dtype=np.int32)  # sizes 2, 3, 3
    for chunk in (1, 4, 7, 1 << 24):  # chunk borders inside components must not change the counts
        assert component_sizes(comp, 3, chunk=chunk).tolist() == [2, 3, 3]
    assert component_sizes(np.zeros((2, 2), np.int32), 0).tolist() == []


def test_min_size_in_3d_is_in_mm3_with_anisotropic_voxels():
    m = np.zeros((10, 10, 10), np.uint8)
    m[1:3, 1:3, 1:3] = 1  # 8 voxels of 1 x 1 x 2 mm = 16 mm^3
    m[5:9, 5:9, 5:9] = 2  # class 2: 64 voxels = 128 mm^3
    m[9, 0, 9] = 2  # class 2: one voxel = 2 mm^3, touching nothing
    out = postprocess(m, 3, (1.0, 1.0, 2.0), min_size=16.0)
    assert (out == 1).sum() == 8 and (out == 2).sum() == 64
    out = postprocess(m, 3, (1.0, 1.0, 2.0), min_size=17.0)
    assert (out == 1).sum() == 0 and (out == 2).sum() == 64
