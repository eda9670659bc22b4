"""Objectives: what each one trains (model classes), how its batches are made (collator) and what it reports."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import evaluate
import numpy as np
from transformers import (
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    BertConfig,
    BertForMaskedLM,
    BertForSequenceClassification,
    DataCollatorForLanguageModeling,
    DataCollatorWithPadding,
    EvalPrediction,
    GPT2Config,
    GPT2ForSequenceClassification,
    GPT2LMHeadModel,
    PreTrainedTokenizerBase,
)

CONFIGS = {"bert": BertConfig, "gpt2": GPT2Config}


@dataclass(frozen=True)
class Task:
    auto_class: type  # loads a trained checkpoint of any architecture for this objective
    model_classes: dict[str, type]  # model_type -> the class built from scratch
    pipeline: str  # the transformers pipeline (and Hub pipeline tag) that runs the result


TASKS = {
    "mlm": Task(AutoModelForMaskedLM, {"bert": BertForMaskedLM}, "fill-mask"),
    "clm": Task(AutoModelForCausalLM, {"gpt2": GPT2LMHeadModel}, "text-generation"),
    "classification": Task(
        AutoModelForSequenceClassification,
        {"bert": BertForSequenceClassification, "gpt2": GPT2ForSequenceClassification},
        "text-classification",
    ),
}


def collator(
    objective: str,
    tokenizer: PreTrainedTokenizerBase,
    mlm_probability: float = 0.15,
    seed: int | None = None,
    pad_to_multiple_of: int | None = None,
):
    """MLM: `mlm_probability` of the tokens are picked, 80% of those become [MASK], 10% a random token, 10% stay.
    CLM: labels are the inputs (the model shifts them), padding excluded from the loss. Classification: examples
    padded to the longest of the batch (to a multiple of 8 under bf16/fp16, where tensor cores want it)."""
    if objective == "classification":
        return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_to_multiple_of)
    return DataCollatorForLanguageModeling(
        tokenizer=tokenizer, mlm=objective == "mlm", mlm_probability=mlm_probability, seed=seed
    )


def load_metric(name: str) -> evaluate.EvaluationModule:
    """One of the `evaluate` modules shipped in lm_recipes/metrics, loaded by path: no Hub download."""
    with resources.as_file(resources.files(__package__) / "metrics" / name) as path:
        return evaluate.load(str(path))


def classification_metrics():
    """compute_metrics for the Trainer: accuracy and macro-F1 (each class counts the same, whatever its size)."""
    accuracy, f1 = load_metric("accuracy"), load_metric("f1")

    def compute(prediction: EvalPrediction) -> dict[str, float]:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        predicted, references = np.argmax(logits, axis=-1), prediction.label_ids
        return {
            **accuracy.compute(predictions=predicted, references=references),
            "macro_f1": f1.compute(predictions=predicted, references=references, average="macro")["f1"],
        }

    return compute
