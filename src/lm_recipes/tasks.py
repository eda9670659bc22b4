"""Objectives: everything that differs between mlm, clm and classification, in one `Task` record each.

The rest of the package reaches an objective through `TASKS[name]` (or `task_of(config)` for a checkpoint) and
never compares its name: which model classes it builds and loads, how texts become its dataset, its collator, its
loss, what its evaluations report, what samples it draws, and what a uniform guess scores.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources

import evaluate
import numpy as np
import torch
import torch.nn.functional as F
from transformers import (
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    DataCollatorForLanguageModeling,
    DataCollatorWithPadding,
    EvalPrediction,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES

from . import data, labels, samples

IGNORE = -100  # the label of a position that is not predicted (an unmasked token, padding, a block's last token)


def token_loss(outputs, labels: torch.Tensor, num_items_in_batch: torch.Tensor | int | None = None) -> torch.Tensor:
    """Cross-entropy summed over the labelled positions (tokens, or sequences for a classifier) and divided by
    `num_items_in_batch`: the Trainer's count of labelled positions in every micro-batch of the optimizer step, on
    every process. So one step with gradient accumulation or several processes has the gradient of one step on all
    their examples as a single batch. Evaluation passes no count: the batch's own mean, as the Trainer averages it.
    """
    logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
    labels = labels.to(logits.device)
    total = F.cross_entropy(logits.flatten(0, -2).float(), labels.flatten(), ignore_index=IGNORE, reduction="sum")
    count = num_items_in_batch if num_items_in_batch is not None else (labels != IGNORE).sum()
    return total / count


class CausalCollator(DataCollatorForLanguageModeling):
    """The causal collator with its labels shifted here rather than inside the model: label t is the token that
    position t predicts (t + 1), a block's last position has none. The Trainer then counts exactly the predicted
    tokens, and `token_loss` and the accuracy compare position with position."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, **kwargs):
        super().__init__(tokenizer=tokenizer, mlm=False, **kwargs)

    def torch_call(self, examples):
        if self.tokenizer.pad_token is None:
            # Blocks are all block_size tokens long: stacked as they are, they need no padding token (GPT-2's
            # tokenizer has none), and each position attends to every earlier one, as with an all-ones mask.
            examples = [e["input_ids"] if isinstance(e, Mapping) else e for e in examples]
        batch = super().torch_call(examples)
        shifted = batch["labels"][:, 1:]
        batch["labels"] = torch.cat([shifted, torch.full_like(batch["labels"][:, :1], IGNORE)], dim=1)
        return batch


class MaskingCollator(DataCollatorForLanguageModeling):
    """The 80/10/10 masked-LM collator, with masks that are a function of the seed, the micro-batch's place in the run
    and its rows only, so that neither resuming nor the number of processes changes them:

    - micro-batch i is masked with a generator seeded from (`seed`, i), not the global RNG (which dropout also draws
      from, and which the data loader's look-ahead has moved past batch i by the time a checkpoint saves it);
      `restart` says where the batches of an epoch (or a resumed one) start;
    - the masks are drawn for the micro-batches of all processes at once and each keeps its rows: accelerate gives
      process r the r-th per-device batch of each global one, so 1 process of 8 sequences and 2 of 4 mask the same
      tokens, and no two processes mask the same positions. Drawing costs `processes` times the random numbers of
      one batch, in the data loader. (This holds for map-style data, where each process collates its own rows; a
      dataset that accelerate dispatches from one process would be collated whole there.)

    Without a seed it draws from the global RNG, as the transformers collator does."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, processes: tuple[int, int] = (1, 0), seed=None, **kwargs):
        super().__init__(tokenizer=tokenizer, mlm=True, **kwargs)
        self.count, self.index = processes
        self.mask_seed, self.start, self.calls = seed, 0, 0

    @staticmethod
    def _whole_word_mask(word_ids: np.ndarray, mask) -> np.ndarray:
        """transformers' whole-word rule (a token is masked when a token of its word was drawn) in O(batch x tokens)
        rather than its (batch, tokens, tokens) comparison, ~1 GB for 256 rows of 2,048 tokens: draws fall on first
        pieces only, so each token takes its word's first piece's draw."""
        mask = mask.numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
        valid = word_ids != -1
        before = np.concatenate([np.full_like(word_ids[:, :1], -2), word_ids[:, :-1]], axis=1)
        first = valid & (word_ids != before)
        start = np.maximum.accumulate(np.where(first, np.arange(word_ids.shape[1]), 0), axis=1)
        return np.take_along_axis(mask, start, axis=1) & valid

    def restart(self, micro_batch: int) -> None:
        """The next micro-batch collated is the run's `micro_batch`-th (counted over every epoch and resume)."""
        self.start, self.calls = micro_batch, 0

    def torch_mask_tokens(self, inputs, special_tokens_mask=None, offset_mapping=None):
        if offset_mapping is not None and offset_mapping.dim() == 2:  # blocks keep them flat: (start, end) per token
            offset_mapping = offset_mapping.view(len(inputs), -1, 2)
        if self.mask_seed is not None:
            worker = torch.utils.data.get_worker_info()  # worker w of n collates micro-batches w, w + n, ...
            n, w = (worker.num_workers, worker.id) if worker else (1, 0)
            self.generator = torch.Generator().manual_seed(_mix(self.mask_seed, self.start + self.calls * n + w))
            self.calls += 1
        if self.count == 1:
            return super().torch_mask_tokens(inputs, special_tokens_mask, offset_mapping)
        if special_tokens_mask is None:
            special = self.tokenizer.get_special_tokens_mask
            special_tokens_mask = torch.tensor(
                [special(row, already_has_special_tokens=True) for row in inputs.tolist()]
            )
        rows = slice(self.index * len(inputs), (self.index + 1) * len(inputs))

        def tiled(x):
            return None if x is None else x.repeat((self.count,) + (1,) * (x.dim() - 1))

        masked, labels = super().torch_mask_tokens(tiled(inputs), tiled(special_tokens_mask), tiled(offset_mapping))
        return masked[rows], labels[rows]


def _mix(seed: int, index: int) -> int:
    """A generator seed for micro-batch `index` of a run at `seed`: torch's CPU generator keeps 32 bits of a seed, so
    the two are hashed together rather than packed side by side."""
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


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


def argmax_logits(logits, labels):
    """preprocess_logits_for_metrics: keep each position's predicted token id, not its vocabulary-sized logits,
    so evaluation holds one integer per token instead of vocab_size floats."""
    if isinstance(logits, tuple):  # (logits, past_key_values, ...) from models that return more
        logits = logits[0]
    return logits.argmax(dim=-1)


def token_accuracy():
    """compute_metrics for mlm/clm: the fraction of labelled positions whose argmax prediction is the label (mlm:
    the masked tokens; clm: the next tokens, the labels being shifted by the collator)."""
    accuracy = load_metric("accuracy")

    def compute(prediction: EvalPrediction) -> dict[str, float]:
        predicted, label_ids = prediction.predictions, prediction.label_ids
        scored = label_ids != IGNORE
        return accuracy.compute(predictions=predicted[scored], references=label_ids[scored])

    return compute


def classification_metrics():
    """compute_metrics for a classifier: accuracy and macro-F1 (each class counts the same, whatever its size)."""
    accuracy, f1 = load_metric("accuracy"), load_metric("f1")

    def compute(prediction: EvalPrediction) -> dict[str, float]:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        predicted, references = np.argmax(logits, axis=-1), prediction.label_ids
        return {
            **accuracy.compute(predictions=predicted, references=references),
            "macro_f1": f1.compute(predictions=predicted, references=references, average="macro")["f1"],
        }

    return compute


@dataclass(frozen=True)
class Task:
    name: str
    auto_class: type  # builds this objective's model from a config (from scratch), or loads a trained checkpoint
    pipeline: str  # the transformers pipeline (and Hub pipeline tag) that runs the result
    build_datasets: Callable  # (texts, tokenizer, DataArguments, seed) -> DatasetDict: blocks, or examples
    build_collator: Callable  # (tokenizer, DataArguments, seed, pad_to_multiple_of, processes) -> a data collator
    build_metrics: Callable  # () -> compute_metrics for the Trainer
    preprocess_logits: Callable | None = None  # preprocess_logits_for_metrics, where logits are per token
    labelled: bool = False  # its texts carry a label column (encoded into class ids before anything else)
    perplexity: bool = True  # report exp(loss): the loss is a per-token cross-entropy
    draw_samples: Callable | None = None  # (model, tokenizer, texts, watch arguments, seed) -> records
    check_samples: Callable | None = None  # (tokenizer, texts) -> why they cannot be drawn, or None
    fixed_eval_masks: bool = False  # evaluations mask with a collator seeded by `seed`, so their losses compare
    tokenizer_problem: Callable | None = None  # (tokenizer) -> the special token it lacks for this task, or None
    loss: Callable = token_loss  # compute_loss_func: (outputs, labels, num_items_in_batch) -> loss

    def classes(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> int:
        """What a uniform guess chooses among: the labels of a classifier, the vocabulary of a language model."""
        return model.config.num_labels if self.labelled else len(tokenizer)


def _mlm_collator(tokenizer, args, seed=None, pad_to_multiple_of=None, processes=(1, 0)):
    """`mlm_probability` of the tokens are picked, 80% of those become [MASK], 10% a random token, 10% stay;
    `processes` is (how many, this one's index)."""
    return masking_collator(tokenizer, args.mlm_probability, args.whole_word_mask, seed, processes)


def masking_collator(tokenizer, mlm_probability: float, whole_word_mask: bool = False, seed=None, processes=(1, 0)):
    """The MLM collator. With `whole_word_mask`, `mlm_probability` of the words (by their first pieces) are picked
    and every piece of each becomes [MASK]: the transformers collator does not replace whole words with random
    tokens, and says so when asked to, so the 80/10/10 split is set to 100/0/0 here rather than left to warn."""
    split = {"mask_replace_prob": 1.0, "random_replace_prob": 0.0} if whole_word_mask else {}
    return MaskingCollator(tokenizer, processes, mlm_probability=mlm_probability, whole_word_mask=whole_word_mask,
                           seed=seed, **split)  # fmt: skip


def _clm_collator(tokenizer, args, seed=None, pad_to_multiple_of=None, processes=(1, 0)):
    return CausalCollator(tokenizer, seed=seed)


def _classification_collator(tokenizer, args, seed=None, pad_to_multiple_of=None, processes=(1, 0)):
    """Examples padded to the longest of the batch (to a multiple of 8 under bf16/fp16, where tensor cores want it)."""
    return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_to_multiple_of)


def _mlm_tokenizer_problem(tokenizer) -> str | None:
    if tokenizer.mask_token is None:
        return "has no mask token (as [MASK]), which a masked LM is trained to fill"
    if tokenizer.pad_token is None:
        return "has no padding token (as [PAD]), which the masked-LM collator needs"
    return None


def _clm_tokenizer_problem(tokenizer) -> str | None:
    if tokenizer.eos_token is None:
        return "has no end-of-text token (eos_token, as <|endoftext|>) to mark where documents meet"
    return None


def _fill(model, tokenizer, texts, watch, seed):
    return samples.fill_mask(model, tokenizer, texts, watch.fill_mask_candidates)


def _complete(model, tokenizer, texts, watch, seed):
    # A recipe's WatchArguments, or generate.py's options, which add top_p and several completions per prompt.
    return samples.complete(model, tokenizer, texts, max_new_tokens=watch.sample_max_new_tokens,
                            strategy=watch.sample_strategy, top_k=watch.sample_top_k,
                            top_p=getattr(watch, "sample_top_p", 1.0), temperature=watch.sample_temperature,
                            num_return_sequences=getattr(watch, "num_return_sequences", 1), seed=seed)  # fmt: skip


TASKS = {
    "mlm": Task(
        "mlm", AutoModelForMaskedLM, "fill-mask",
        build_datasets=lambda texts, tokenizer, args, seed: data.build_blocks(texts, tokenizer, args, mlm=True),
        build_collator=_mlm_collator, build_metrics=token_accuracy, preprocess_logits=argmax_logits,
        draw_samples=_fill, check_samples=lambda tokenizer, texts: samples.mask_problem(tokenizer.mask_token, texts),
        fixed_eval_masks=True, tokenizer_problem=_mlm_tokenizer_problem,
    ),
    "clm": Task(
        "clm", AutoModelForCausalLM, "text-generation",
        build_datasets=lambda texts, tokenizer, args, seed: data.build_blocks(texts, tokenizer, args, mlm=False),
        build_collator=_clm_collator, build_metrics=token_accuracy, preprocess_logits=argmax_logits,
        draw_samples=_complete, tokenizer_problem=_clm_tokenizer_problem,
    ),
    "classification": Task(
        "classification", AutoModelForSequenceClassification, "text-classification",
        build_datasets=labels.build_examples, build_collator=_classification_collator,
        build_metrics=classification_metrics, labelled=True, perplexity=False,
    ),
}  # fmt: skip


def task_of(config: PretrainedConfig) -> Task | None:
    """The language-modelling task a checkpoint was trained for, by the class its config names (a BERT config also
    fits a causal LM head, so the architecture decides); None for a classifier or another head."""
    architecture = config.architectures[0] if config.architectures else None
    for name, classes in (("mlm", MODEL_FOR_MASKED_LM_MAPPING_NAMES), ("clm", MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)):
        if config.model_type in classes and architecture in (None, classes[config.model_type]):
            return TASKS[name]
    return None
