"""Objectives: what each one trains (model classes) and how its batches are made (collator)."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import (
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    BertConfig,
    BertForMaskedLM,
    DataCollatorForLanguageModeling,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerBase,
)


@dataclass(frozen=True)
class Task:
    model_type: str
    config_class: type
    model_class: type  # built from scratch
    auto_class: type  # loads a trained checkpoint of any architecture for this objective


TASKS = {
    "mlm": Task("bert", BertConfig, BertForMaskedLM, AutoModelForMaskedLM),
    "clm": Task("gpt2", GPT2Config, GPT2LMHeadModel, AutoModelForCausalLM),
}


def collator(
    objective: str, tokenizer: PreTrainedTokenizerBase, mlm_probability: float = 0.15, seed: int | None = None
) -> DataCollatorForLanguageModeling:
    """MLM: `mlm_probability` of the tokens are picked, 80% of those become [MASK], 10% a random token, 10% stay.
    CLM: labels are the inputs (the model shifts them), padding excluded from the loss."""
    return DataCollatorForLanguageModeling(
        tokenizer=tokenizer, mlm=objective == "mlm", mlm_probability=mlm_probability, seed=seed
    )
