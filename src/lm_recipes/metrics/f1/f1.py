"""F1, as an `evaluate` module shipped with lm-recipes and loaded by path, so it works offline.

Same inputs and output as the Hub's `evaluate-metric/f1` for single-label classes (binary, micro, macro and weighted
averages, or one score per class), computed with numpy instead of scikit-learn. As scikit-learn does, a class with no
prediction and no reference is left out of the averages, and a precision or recall of 0/0 counts as 0.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "F1: the harmonic mean of precision and recall, 2 * TP / (2 * TP + FP + FN)."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted class ids.
    references (list of int): true class ids.
    labels (list of int): the classes to score; none: every class in predictions or references.
    pos_label (int): the positive class when average is "binary" (default 1).
    average (str): "binary" (default), "micro", "macro" (unweighted mean over classes), "weighted" (mean weighted
        by each class's number of references) or None (one score per class).
    sample_weight (list of float): weights of the examples; none: equal.
Returns:
    f1 (float, or list of float when average is None).
Examples:
    >>> f1 = evaluate.load("src/lm_recipes/metrics/f1")
    >>> f1.compute(predictions=[0, 2, 1, 0], references=[0, 1, 2, 0], average="macro")
    {'f1': 0.3333333333333333}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class F1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}
            ),
            reference_urls=["https://huggingface.co/spaces/evaluate-metric/f1"],
        )

    def _compute(self, predictions, references, labels=None, pos_label=1, average="binary", sample_weight=None):
        pred, ref = np.asarray(predictions), np.asarray(references)
        w = np.ones(len(ref)) if sample_weight is None else np.asarray(sample_weight, dtype=float)
        if average == "binary":
            labels = [pos_label]
        elif labels is None:
            labels = np.union1d(pred, ref)
        labels = np.asarray(labels)
        tp = np.array([np.sum(w * ((pred == c) & (ref == c))) for c in labels])
        fp = np.array([np.sum(w * ((pred == c) & (ref != c))) for c in labels])
        fn = np.array([np.sum(w * ((pred != c) & (ref == c))) for c in labels])
        if average == "micro":
            tp, fp, fn = tp.sum(keepdims=True), fp.sum(keepdims=True), fn.sum(keepdims=True)
        denominator = 2 * tp + fp + fn
        scores = np.divide(2 * tp, denominator, out=np.zeros_like(denominator), where=denominator > 0)
        if average is None:
            return {"f1": scores.tolist()}
        if average == "weighted":
            support = tp + fn
            return {"f1": float(np.average(scores, weights=support)) if support.sum() > 0 else 0.0}
        return {"f1": float(scores.mean())}
