"""Probabilities resampled onto the input's grid one slab at a time equal one whole-volume resample."""

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import SpatialResample

from medseg.config import load_config
from medseg.data import synthetic
from medseg.inference import predictor
from medseg.inference.predictor import SourceGrid, resample_in_slabs
from medseg.tasks import task_for


def _whole(source: SourceGrid, dst_affine: torch.Tensor, shape) -> np.ndarray:
    full = source.region([0, 0, 0], list(source.shape))
    back = SpatialResample(mode="bilinear", padding_mode="border", dtype=np.float32)(
        MetaTensor(full, affine=source.full_affine), dst_affine=dst_affine, spatial_size=list(shape)
    )
    return np.asarray(back.array)


def _slabs(source: SourceGrid, dst_affine: torch.Tensor, shape) -> tuple[np.ndarray, int]:
    parts = list(resample_in_slabs(source, dst_affine, tuple(shape)))
    out = np.empty((source.probs.shape[0], *shape), np.float32)
    for z, slab in parts:
        out[..., z] = slab
    return out, len(parts)


def _source(seed=0) -> SourceGrid:
    """Softmax probabilities of 4 classes on a cropped 2 mm grid, oblique (as preprocessing leaves a case)."""
    probs = torch.softmax(torch.randn(4, 12, 10, 9, generator=torch.Generator().manual_seed(seed)) * 3, dim=0)
    aff = torch.as_tensor(synthetic.oblique_affine(spacing=(2.0, 2.0, 2.0), angle_deg=20), dtype=torch.float64)
    box = {"start": [3, 2, 4], "full_shape": [18, 15, 16]}
    shifted = aff @ predictor.translation([3.0, 2.0, 4.0])  # the cropped grid's own affine
    return SourceGrid(probs, shifted, box, task_for(load_config("brats")))


def test_slabs_equal_one_whole_resample_on_an_oblique_finer_grid(monkeypatch):
    source = _source()
    shape = (40, 33, 29)  # the input: 1 mm, another rotation, reaching past the source on every side
    dst = torch.as_tensor(synthetic.oblique_affine(spacing=(1.0, 1.0, 1.0), angle_deg=-15), dtype=torch.float64)
    monkeypatch.setattr(predictor, "SLAB_BYTES", 40 * 33 * 4 * (4 + 4) * 3)  # three slices per slab
    slabs, n = _slabs(source, dst, shape)
    whole = _whole(source, dst, shape)
    assert n == 10  # 29 slices, 3 at a time
    assert np.abs(slabs - whole).max() < 1e-5
    assert (slabs.argmax(0) == whole.argmax(0)).mean() > 0.9999
    assert np.allclose(slabs.sum(0), 1.0, atol=1e-5)  # still probabilities, background filled outside the box


def test_slabs_on_the_networks_own_grid_are_its_values(monkeypatch):
    source = _source(seed=1)
    monkeypatch.setattr(predictor, "SLAB_BYTES", 18 * 15 * 4 * 8 * 5)
    slabs, n = _slabs(source, source.full_affine, source.shape)
    assert n == 4 and np.array_equal(slabs, source.region([0, 0, 0], list(source.shape)).numpy())


def test_in_place_activation_equals_the_tasks(monkeypatch):
    logits = torch.randn(1, 5, 6, 7, 17)
    task = task_for(load_config("brats"))
    expected = task.activation(logits.clone())
    out = predictor.activate_in_place(task, logits)
    assert out.data_ptr() == logits.data_ptr() and torch.allclose(out, expected, atol=1e-7)
