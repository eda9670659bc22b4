"""Accuracy, as an `evaluate` module shipped with lm-recipes and loaded by path, so it works offline.

Same inputs and output as the Hub's `evaluate-metric/accuracy`, computed with numpy instead of scikit-learn.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Accuracy: the fraction of predictions equal to their reference."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted class ids.
    references (list of int): true class ids.
    normalize (bool): return the fraction (True, default) or the count (False) of correct predictions.
    sample_weight (list of float): weights of the examples; none: equal.
Returns:
    accuracy (float): the fraction (or count, or weighted sum) of correct predictions.
Examples:
    >>> accuracy = evaluate.load("src/lm_recipes/metrics/accuracy")
    >>> accuracy.compute(predictions=[0, 1, 1], references=[0, 1, 0])
    {'accuracy': 0.6666666666666666}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}
            ),
            reference_urls=["https://huggingface.co/spaces/evaluate-metric/accuracy"],
        )

    def _compute(self, predictions, references, normalize=True, sample_weight=None):
        correct = np.asarray(predictions) == np.asarray(references)
        weights = np.ones(len(correct)) if sample_weight is None else np.asarray(sample_weight, dtype=float)
        total = float(np.sum(weights * correct))
        return {"accuracy": total / float(np.sum(weights)) if normalize else total}
