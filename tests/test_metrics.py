"""The evaluate modules shipped with the package, loaded by path offline, on small cases worked out by hand."""

import numpy as np
import pytest
from transformers import EvalPrediction

from lm_recipes.tasks import classification_metrics, load_metric

# Ten predictions of three classes, worked out by hand (accuracy: 7 of 10 right):
#   class 0: tp 2 (items 0, 1), fp 1 (item 6), fn 1 (item 2) -> F1 = 2·2 / (2·2 + 1 + 1) = 4/6
#   class 1: tp 3 (items 3, 4, 5), fp 1 (item 2), fn 1 (item 7) -> F1 = 6/8
#   class 2: tp 2 (items 8, 9), fp 1 (item 7), fn 1 (item 6) -> F1 = 4/6
REFERENCES = np.array([0, 0, 0, 1, 1, 1, 2, 1, 2, 2])
PREDICTIONS = np.array([0, 0, 1, 1, 1, 1, 0, 2, 2, 2])
F1 = [4 / 6, 6 / 8, 4 / 6]


def test_accuracy_and_f1_of_a_case_worked_by_hand():
    accuracy, f1 = load_metric("accuracy"), load_metric("f1")
    assert accuracy.compute(predictions=PREDICTIONS, references=REFERENCES)["accuracy"] == pytest.approx(0.7)
    assert f1.compute(predictions=PREDICTIONS, references=REFERENCES, average=None)["f1"] == pytest.approx(F1)
    assert f1.compute(predictions=PREDICTIONS, references=REFERENCES, average="macro")["f1"] == pytest.approx(
        (4 / 6 + 6 / 8 + 4 / 6) / 3
    )
    # Weighted by support (3, 4 and 3 of 10): 0.3·4/6 + 0.4·6/8 + 0.3·4/6 = 0.7
    weighted = f1.compute(predictions=PREDICTIONS, references=REFERENCES, average="weighted")["f1"]
    assert weighted == pytest.approx(0.7)


def test_a_class_never_predicted_scores_zero_f1():
    # Class 2 is never predicted: tp 0, so its F1 is 0 (and no division by zero); classes 0 and 1 are perfect.
    f1 = load_metric("f1")
    scores = f1.compute(predictions=[0, 1, 1, 0], references=[0, 1, 2, 0], average=None)["f1"]
    assert scores == pytest.approx([1.0, 2 / 3, 0.0])  # class 1: tp 1, fp 1 (item 2) -> 2/3


def test_binary_f1_is_that_of_the_positive_class():
    f1 = load_metric("f1")
    # tp 1 (item 0), fp 1 (item 1), fn 2 (items 2, 3): F1 = 2 / (2 + 1 + 2) = 0.4
    assert f1.compute(predictions=[1, 1, 0, 0], references=[1, 0, 1, 1])["f1"] == pytest.approx(0.4)


def test_trainer_metrics_take_the_argmax_of_the_logits():
    logits = np.eye(3)[PREDICTIONS] * 2.0 - 0.5  # the predicted class has the highest logit
    metrics = classification_metrics()(EvalPrediction(predictions=logits, label_ids=REFERENCES))
    assert metrics == pytest.approx({"accuracy": 0.7, "macro_f1": (4 / 6 + 6 / 8 + 4 / 6) / 3})
