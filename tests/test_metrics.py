"""The evaluate modules shipped with the package: loaded by path offline, equal to a direct computation."""

import numpy as np
import pytest
from transformers import EvalPrediction

from lm_recipes import tasks


@pytest.fixture(scope="module")
def labels():
    rng = np.random.default_rng(0)
    references = rng.integers(0, 5, 300)
    predictions = np.where(rng.random(300) < 0.6, references, rng.integers(0, 5, 300))
    predictions[predictions == 4] = 3  # one class is never predicted: its F1 is 0
    return predictions, references


def direct_f1(predictions, references, label):
    tp = np.sum((predictions == label) & (references == label))
    fp = np.sum((predictions == label) & (references != label))
    fn = np.sum((predictions != label) & (references == label))
    return 2 * tp / (2 * tp + fp + fn)


def test_modules_load_offline_and_match_a_direct_computation(labels):
    predictions, references = labels
    accuracy, f1 = tasks.load_metric("accuracy"), tasks.load_metric("f1")
    assert accuracy.compute(predictions=predictions, references=references)["accuracy"] == pytest.approx(
        np.mean(predictions == references)
    )
    per_class = [direct_f1(predictions, references, c) for c in range(5)]
    assert per_class[4] == 0
    assert f1.compute(predictions=predictions, references=references, average=None)["f1"] == pytest.approx(per_class)
    macro = f1.compute(predictions=predictions, references=references, average="macro")["f1"]
    assert macro == pytest.approx(np.mean(per_class))
    weighted = f1.compute(predictions=predictions, references=references, average="weighted")["f1"]
    assert weighted == pytest.approx(np.average(per_class, weights=np.bincount(references)))
    binary = f1.compute(predictions=(predictions == 2).astype(int), references=(references == 2).astype(int))
    assert binary["f1"] == pytest.approx(per_class[2])


def test_trainer_metrics_take_the_argmax_of_the_logits(labels):
    predictions, references = labels
    logits = np.eye(5)[predictions] + 0.01
    metrics = tasks.classification_metrics()(EvalPrediction(predictions=logits, label_ids=references))
    assert metrics["accuracy"] == pytest.approx(np.mean(predictions == references))
    assert metrics["macro_f1"] == pytest.approx(np.mean([direct_f1(predictions, references, c) for c in range(5)]))
