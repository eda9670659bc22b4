"""Recipe checks: every value in its range and the keys consistent with each other, before anything is loaded or
written. `recipe.load` calls `ranges` on the parsed values (before the Trainer's own arguments check themselves, so
every problem is reported at once and in our words) and `check` on the recipe they make."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import inputs
from .arguments import ARCHITECTURES, TOKENIZER_TYPES
from .samples import mask_problem

if TYPE_CHECKING:
    from .recipe import Recipe

# key: (the least value, whether the least is allowed, the value's meaning and unit). A float below 1 for the *_steps
# keys is a fraction of the run's total steps (transformers' rule).
AT_LEAST = {
    "per_device_train_batch_size": (1, True, "blocks per device in each micro-batch"),
    "per_device_eval_batch_size": (1, True, "blocks per device in each evaluation batch"),
    "gradient_accumulation_steps": (1, True, "micro-batches per optimizer step"),
    "eval_accumulation_steps": (1, True, "evaluation steps between moves of predictions to the CPU; null: at the end"),
    "save_total_limit": (1, True, "checkpoints kept; null keeps them all"),
    "max_train_samples": (1, True, "training blocks kept; null keeps them all"),
    "max_eval_samples": (1, True, "validation blocks kept; null keeps them all"),
    "preprocessing_num_workers": (1, True, "tokenizing processes; null tokenizes in this one"),
    "validation_documents": (1, True, "validation documents read from the head of a stream"),
    "tokenizer_documents": (1, True, "documents the tokenizer of a stream is trained on"),
    "min_frequency": (1, True, "occurrences a merge or word piece needs"),
    "dataloader_num_workers": (0, True, "processes loading batches; 0 loads them in the training process"),
    "learning_rate": (0, False, "the peak step size of the optimizer, e.g. 5e-4"),
    "warmup_steps": (0, True, "optimizer steps of linear warmup; a float below 1 is a fraction of the total steps"),
    "weight_decay": (0, True, "AdamW's decoupled weight decay, e.g. 0.01; 0 turns it off"),
    "max_grad_norm": (0, True, "the gradient's L2 norm clipped to, e.g. 1.0; 0 turns clipping off"),
    "adam_epsilon": (0, False, "AdamW's epsilon, e.g. 1e-8"),
    "early_stopping_threshold": (0, True, "the least improvement of the metric that counts"),
}
# Fractions: key -> (lowest, whether the lowest is allowed, meaning); the highest, 1, is never allowed.
FRACTIONS = {
    "mlm_probability": (0, False, "the fraction of tokens masked; 0 would leave nothing to learn, e.g. 0.15"),
    "dropout": (0, True, "the probability of zeroing an activation; 0 turns dropout off"),
    "attention_dropout": (0, True, "the probability of zeroing an attention weight; 0 turns it off"),
    "adam_beta1": (0, True, "the decay of AdamW's first moment, e.g. 0.9"),
    "adam_beta2": (0, True, "the decay of AdamW's second moment, e.g. 0.999"),
    "label_smoothing_factor": (0, True, "the probability mass spread over other labels; 0 turns it off"),
}
STEPS = {"logging": "logs", "eval": "evaluations", "save": "checkpoints"}


def shapes(raw: dict, source: dict[str, str], types: dict[str, str]) -> list[str]:
    """Recipe values of the wrong shape: a list or a mapping where the key takes one value. `types` holds each key's
    annotation as text."""
    problems = []
    for key, value in raw.items():
        kind = types.get(key, "").lower()
        if isinstance(value, list) and value and "list" not in kind:
            problems.append(f"{source[key]}: {key}: {value!r} is a list; give one value")
        elif isinstance(value, dict) and "dict" not in kind:
            problems.append(f"{source[key]}: {key}: {value!r} is a mapping; give one value")
    return problems


def _name(value) -> str:
    return str(getattr(value, "value", value))  # an Enum (IntervalStrategy) or its string


def ranges(values: dict) -> list[str]:
    """Values out of their range, read from the parsed keys (a flat dict): sizes, counts, rates, probabilities."""
    problems = []
    for key, (least, allowed, meaning) in AT_LEAST.items():
        value = values.get(key)
        if value is not None and (value < least if allowed else value <= least):
            bound = f"at least {least}" if allowed else f"above {least}"
            problems.append(f"{key}: {value} must be {bound} ({meaning})")
    for key, (least, allowed, meaning) in FRACTIONS.items():
        value = values.get(key)
        if value is not None and not ((least <= value if allowed else least < value) and value < 1):
            interval = f"{'[' if allowed else '('}{least}, 1)"
            problems.append(f"{key}: {value} must be in {interval} ({meaning})")
    max_steps = values.get("max_steps", -1)
    if max_steps == 0 or max_steps < -1:
        problems.append(
            f"max_steps: {max_steps} optimizer steps trains nothing; give a positive number of steps, or -1 to train "
            f"for num_train_epochs"
        )
    epochs = values.get("num_train_epochs", 1)
    if max_steps == -1 and epochs <= 0:
        problems.append(
            f"num_train_epochs: {epochs} passes over the training blocks trains nothing; give a positive number "
            f"(fractions work), or a positive max_steps"
        )
    for what, plural in STEPS.items():
        value = values.get(f"{what}_steps")
        strategy = _name(values.get(f"{what}_strategy"))
        if strategy == "steps" and value is not None and value <= 0:
            problems.append(
                f"{what}_steps: {value} must be above 0 (optimizer steps between {plural}; a float below 1 is a "
                f"fraction of the total steps), or set {what}_strategy: 'no'"
            )
    return problems


def block_size_problem(block_size: int, positions: int, checkpoint: str | None = None) -> str | None:
    """The block_size rules, for a recipe's model or a checkpoint's: at least 2 tokens, at most its positions."""
    if block_size < 2:
        return f"block_size: {block_size} must be at least 2 tokens"
    if block_size <= positions:
        return None
    if checkpoint is None:
        return (f"block_size: {block_size} tokens is more than the model's {positions} positions; lower block_size "
                f"or raise max_position_embeddings")  # fmt: skip
    return (f"block_size: {block_size} tokens is more than the {positions} positions of {checkpoint}; use {positions} "
            f"or less")  # fmt: skip


def check(recipe: Recipe) -> list[str]:
    """Problems across keys, found before anything is loaded or written."""
    t, d, m = recipe.tokenizer, recipe.data, recipe.model
    problems = check_watch(recipe) + inputs.problems(recipe)
    if m.objective is None:
        problems.append(
            "objective: missing; set `objective: mlm` (BERT), `objective: clm` (GPT-2) or `objective: classification`"
        )
    model_type = m.resolved_model_type
    allowed = ARCHITECTURES.get(m.objective, ())
    if m.objective and m.model_type != "auto" and m.model_type not in allowed:
        problems.append(
            f"model_type: {m.model_type} cannot be trained with objective {m.objective}; "
            f"use model_type: {' or '.join(allowed)} (or auto), or objective: "
            f"{'mlm' if TOKENIZER_TYPES[m.model_type] == 'wordpiece' else 'clm'}"
        )
    wanted_tok = TOKENIZER_TYPES
    if m.model_name_or_path and t.tokenizer_name:
        problems.append(
            "tokenizer_name: a run from model_name_or_path uses that checkpoint's tokenizer; drop tokenizer_name"
        )
    scratch = m.model_name_or_path is None
    trains_tokenizer = scratch and t.tokenizer_name is None  # else tokenizer_type is not used
    if trains_tokenizer and t.tokenizer_type != "auto" and model_type and wanted_tok[model_type] != t.tokenizer_type:
        problems.append(
            f"tokenizer_type: {t.tokenizer_type} does not fit model_type {model_type}; "
            f"use tokenizer_type: {wanted_tok[model_type]} (or auto)"
        )
    if scratch:
        if m.num_heads < 1 or m.hidden_size % m.num_heads:
            problems.append(f"num_heads: {m.num_heads} must divide hidden_size {m.hidden_size}")
        for key in ("num_layers", "hidden_size", "intermediate_size", "max_position_embeddings"):
            if getattr(m, key) < 1:
                problems.append(f"{key}: must be a positive number of {'layers' if key == 'num_layers' else 'units'}")
        if problem := block_size_problem(d.block_size, m.max_position_embeddings):
            problems.append(problem)
        if model_type in ("modernbert", "llama") and m.num_heads >= 1 and (m.hidden_size // m.num_heads) % 2:
            problems.append(
                f"num_heads: {model_type} rotates pairs of each head's {m.hidden_size // m.num_heads} dimensions "
                f"(hidden_size / num_heads), which must be even; choose num_heads so that it is"
            )
        if model_type == "llama" and m.dropout:
            problems.append(
                f"dropout: {m.dropout} cannot apply to model_type llama, which has no dropout on its embeddings or "
                f"residual branches; set dropout: 0 (attention_dropout still applies)"
            )
    if not scratch and (problem := block_size_problem(d.block_size, d.block_size)):  # positions known once loaded
        problems.append(problem)
    if trains_tokenizer:
        bpe = (t.tokenizer_type if t.tokenizer_type != "auto" else TOKENIZER_TYPES.get(model_type)) == "bpe"
        floor = 2 + 256 if bpe else 5
        if t.vocab_size < floor + 1:
            what = "the special tokens and the 256 byte symbols" if bpe else "the special tokens"
            problems.append(
                f"vocab_size: {t.vocab_size} leaves no room beyond {what} ({floor} tokens); "
                f"raise it (8000 is a good start for a small corpus)"
            )
    if not 0 <= d.validation_split_percentage < 100:
        problems.append(
            f"validation_split_percentage: {d.validation_split_percentage} must be a percent in [0, 100) of the "
            f"training documents; 0 carves none"
        )
    if d.whole_word_mask and m.objective != "mlm":
        problems.append(
            f"whole_word_mask: masks words for objective mlm only, not {m.objective}; drop it or set objective: mlm"
        )
    if d.dataset_name and d.train_files:
        problems.append("dataset_name and train_files are both set; keep one source of training text")
    if d.validation_files and not d.train_files:
        problems.append("validation_files needs train_files; set train_files too, or drop validation_files")
    if d.passage_lines < 1:
        problems.append(f"passage_lines: {d.passage_lines} must be at least 1 line")
    problems += streaming_problems(recipe)
    if d.genres and not d.uses_embedded_corpus():
        problems.append("genres: picks plays of the embedded corpus only; drop it, or drop dataset_name/train_files")
    return problems


def streaming_problems(recipe: Recipe) -> list[str]:
    """A streamed run has no length and no carved validation split: what it needs instead."""
    d, args, m = recipe.data, recipe.training, recipe.model
    if not d.streaming:
        return [f"{key}: applies to streaming only; set streaming: true, or drop it"
                for key in ("validation_documents",) if getattr(d, key) is not None]  # fmt: skip
    problems = []
    if args.max_steps <= 0:
        problems.append("max_steps: a streamed run has no length to count epochs in; give the optimizer steps to "
                        "train, e.g. --max_steps 2000")  # fmt: skip
    if m.objective == "classification":
        problems.append("streaming: classification reads its labelled examples whole; set streaming: false")
    if args.dataloader_num_workers:
        problems.append("dataloader_num_workers: a stream is read in the training process, where its position is "
                        "recorded for each checkpoint; set 0")  # fmt: skip
    if d.max_train_samples is not None:
        problems.append("max_train_samples: a stream is not cut to N blocks; max_steps bounds a streamed run, drop "
                        "max_train_samples")  # fmt: skip
    has_split = d.validation_files or d.uses_embedded_corpus() or d.dataset_name  # a Hub split is known once loaded
    if args.eval_strategy != "no" and not has_split and d.validation_documents is None:
        problems.append("streaming: train_files give no validation set (a stream has no split to carve); give "
                        "validation_files, or validation_documents: N to hold out the first N documents of the "
                        "stream, or set eval_strategy: 'no'")  # fmt: skip
    return problems


def check_watch(recipe: Recipe) -> list[str]:
    """Problems of the keys that watch a run: samples, early stopping, the divergence guard."""
    w, m, a = recipe.watch, recipe.model, recipe.training
    problems = []
    if w.samples and m.objective == "mlm" and not m.model_name_or_path:
        # A checkpoint's mask token is known once its tokenizer is loaded; preparation.prepare checks those.
        if problem := mask_problem("[MASK]", w.samples):
            problems.append(f"samples: {problem}")
    units = {"sample_top_k": "tokens", "sample_max_new_tokens": "tokens", "fill_mask_candidates": "candidates"}
    for key, unit in units.items():
        if getattr(w, key) < 1:
            problems.append(f"{key}: {getattr(w, key)} must be at least 1 ({unit})")
    if w.sample_temperature <= 0:
        problems.append(f"sample_temperature: {w.sample_temperature} must be above 0; use sample_strategy: greedy")
    if w.divergence_threshold is not None and w.divergence_threshold <= 0:
        problems.append(f"divergence_threshold: {w.divergence_threshold} nats must be above 0; null turns it off")
    if w.early_stopping_patience is not None:
        if w.early_stopping_patience < 1:
            problems.append(f"early_stopping_patience: {w.early_stopping_patience} must be at least 1 evaluation")
        if a.eval_strategy == "no":
            problems.append("early_stopping_patience: needs evaluations; set eval_strategy: steps and eval_steps")
        if not a.load_best_model_at_end:
            problems.append(
                "early_stopping_patience: needs load_best_model_at_end: true (the run keeps the best checkpoint, "
                "with save_strategy and save_steps matching the evaluations)"
            )
    return problems
