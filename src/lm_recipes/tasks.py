"""Objectives: what each one trains (model classes), how its batches are made (collator) and what it reports."""

from __future__ import annotations

import math
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
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES

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


def perplexity(loss: float) -> float:
    """exp(loss), or inf where that would overflow a float."""
    try:
        return math.exp(loss)
    except OverflowError:
        return float("inf")


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


def argmax_logits(logits, labels):
    """preprocess_logits_for_metrics: keep each position's predicted token id, not its vocabulary-sized logits,
    so evaluation holds one integer per token instead of vocab_size floats."""
    if isinstance(logits, tuple):  # (logits, past_key_values, ...) from models that return more
        logits = logits[0]
    return logits.argmax(dim=-1)


def token_accuracy(objective: str):
    """compute_metrics for mlm/clm: the fraction of scored tokens whose argmax prediction is right. mlm scores the
    masked positions; clm predicts token t+1 at position t (the labels are shifted as the model's loss shifts them).
    Positions labelled -100 (unmasked, padding) do not count."""
    accuracy = load_metric("accuracy")

    def compute(prediction: EvalPrediction) -> dict[str, float]:
        predicted, labels = prediction.predictions, prediction.label_ids
        if objective == "clm":
            predicted, labels = predicted[:, :-1], labels[:, 1:]
        scored = labels != -100
        return accuracy.compute(predictions=predicted[scored], references=labels[scored])

    return compute


def objective_of(config) -> str | None:
    """mlm or clm: the objective a checkpoint was trained for, by the class its config names (a BERT config
    also fits a causal LM head, so the architecture decides); None for a classifier or another head."""
    names = {"mlm": MODEL_FOR_MASKED_LM_MAPPING_NAMES, "clm": MODEL_FOR_CAUSAL_LM_MAPPING_NAMES}
    architecture = config.architectures[0] if config.architectures else None
    for objective, classes in names.items():
        if config.model_type in classes and architecture in (None, classes[config.model_type]):
            return objective
    return None
