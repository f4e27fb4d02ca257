"""The task interface: activations, labels, losses and validation counts of binary and multi-class tasks."""

import numpy as np
import pytest
import torch

from medseg.config import load_config
from medseg.tasks import BinaryTask, MulticlassTask, dice_from_counts, task_for


def _cfg(labels):
    return load_config("demo", [f"data.labels={labels}"])


def test_task_for_picks_by_the_number_of_labels():
    assert isinstance(task_for(_cfg("[background,lesion]")), BinaryTask)
    multi = task_for(_cfg("[background,a,b]"))
    assert isinstance(multi, MulticlassTask) and multi.out_channels == 3


def test_binary_thresholds_the_sigmoid_and_multiclass_takes_the_argmax():
    logits = torch.tensor([[[[-2.0, 0.1, 3.0]]]])  # (B=1, K=1, 1, 3)
    binary = task_for(_cfg("[background,lesion]"))
    assert binary.logits_to_labels(logits).flatten().tolist() == [0, 1, 1]
    assert binary.logits_to_labels(logits, threshold=0.6).flatten().tolist() == [0, 0, 1]
    probs = binary.activation(logits)[0].numpy()
    assert binary.probabilities_to_labels(probs, 0.6).tolist() == [[0, 0, 1]]
    multi = task_for(_cfg("[background,a,b]"))
    logits3 = torch.tensor([[[[5.0, 0.0, 0.0]], [[0.0, 5.0, 0.0]], [[0.0, 0.0, 5.0]]]])  # (1, 3, 1, 3)
    assert multi.logits_to_labels(logits3).flatten().tolist() == [0, 1, 2]
    probs3 = multi.activation(logits3)
    assert torch.allclose(probs3.sum(dim=1), torch.ones(1, 1, 3))
    assert multi.probabilities_to_labels(probs3[0].numpy()).tolist() == [[0, 1, 2]]


def test_background_probabilities_label_as_background():
    for labels in ("[background,lesion]", "[background,a,b]"):
        task = task_for(_cfg(labels))
        empty = task.background_probabilities((task.out_channels, 4, 5))
        assert not task.probabilities_to_labels(empty.numpy()).any()


def test_validation_counts_per_class_and_whole_foreground():
    pred = np.array([0, 1, 1, 2, 2, 0])
    gt = np.array([0, 1, 2, 2, 0, 1])
    multi = task_for(_cfg("[background,a,b]"))
    assert multi.class_counts(pred, gt).tolist() == [[1, 1, 1], [1, 1, 1]]
    assert multi.whole_counts(pred, gt).tolist() == [3, 1, 1]  # any foreground against any foreground
    assert task_for(_cfg("[background,lesion]")).whole_counts(pred > 0, gt > 0) is None
    assert dice_from_counts(0, 0, 0) == 1.0 and dice_from_counts(3, 1, 1) == 0.75


@pytest.mark.parametrize("labels, channels", [("[background,lesion]", 1), ("[background,a,b]", 3)])
def test_each_task_loss_trains_its_own_output(labels, channels):
    task = task_for(_cfg(labels))
    logits = torch.zeros(2, channels, 8, 8, requires_grad=True)
    label = torch.randint(0, len(labels.split(",")), (2, 1, 8, 8)).float()
    loss = task.loss()(logits, label)
    loss.backward()
    assert torch.isfinite(loss) and logits.grad.abs().sum() > 0
