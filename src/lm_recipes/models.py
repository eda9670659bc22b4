"""Models: a from-scratch BERT or GPT-2 sized by the recipe, or a trained checkpoint to start from."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import (
    AutoConfig,
    BertConfig,
    GPT2Config,
    LlamaConfig,
    ModernBertConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from .arguments import ModelArguments
from .recipe import RecipeError
from .tasks import TASKS, Task, task_of


def config_for(
    args: ModelArguments, tokenizer: PreTrainedTokenizerBase, labels: list[str] | None = None
) -> PretrainedConfig:
    """The architecture's config from the recipe's size keys; vocabulary and special ids from the tokenizer."""
    return CONFIGS[args.resolved_model_type](args, tokenizer, len(tokenizer), **label_kwargs(labels))


def _bert(args: ModelArguments, tok: PreTrainedTokenizerBase, vocab_size: int, **labels) -> PretrainedConfig:
    return BertConfig(
        vocab_size=vocab_size, hidden_size=args.hidden_size, num_hidden_layers=args.num_layers,
        num_attention_heads=args.num_heads, intermediate_size=args.intermediate_size,
        max_position_embeddings=args.max_position_embeddings, hidden_dropout_prob=args.dropout,
        attention_probs_dropout_prob=args.attention_dropout, pad_token_id=tok.pad_token_id, **labels,
    )  # fmt: skip


def _gpt2(args: ModelArguments, tok: PreTrainedTokenizerBase, vocab_size: int, **labels) -> PretrainedConfig:
    return GPT2Config(
        vocab_size=vocab_size, n_positions=args.max_position_embeddings, n_embd=args.hidden_size,
        n_layer=args.num_layers, n_head=args.num_heads, n_inner=args.intermediate_size, resid_pdrop=args.dropout,
        embd_pdrop=args.dropout, attn_pdrop=args.attention_dropout, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **labels,
    )  # fmt: skip


def _modernbert(args: ModelArguments, tok: PreTrainedTokenizerBase, vocab_size: int, **labels) -> PretrainedConfig:
    """ModernBERT (pre-norm, rotary positions, GeGLU of `intermediate_size`, no biases) with its own defaults for
    what the recipe has no key for: local attention over 128 tokens in two layers of three, a global one first."""
    return ModernBertConfig(
        vocab_size=vocab_size, hidden_size=args.hidden_size, num_hidden_layers=args.num_layers,
        num_attention_heads=args.num_heads, intermediate_size=args.intermediate_size,
        max_position_embeddings=args.max_position_embeddings, embedding_dropout=args.dropout,
        mlp_dropout=args.dropout, attention_dropout=args.attention_dropout, pad_token_id=tok.pad_token_id,
        cls_token_id=tok.cls_token_id, sep_token_id=tok.sep_token_id, bos_token_id=tok.cls_token_id,
        eos_token_id=tok.sep_token_id, **labels,
    )  # fmt: skip


def _llama(args: ModelArguments, tok: PreTrainedTokenizerBase, vocab_size: int, **labels) -> PretrainedConfig:
    """Llama (RMSNorm, rotary positions, SwiGLU of `intermediate_size`, no biases), its output layer tied to the
    token embeddings as small Llamas and GPT-2 have it; it has no residual dropout (checks.py refuses `dropout`)."""
    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=args.hidden_size, num_hidden_layers=args.num_layers,
        num_attention_heads=args.num_heads, intermediate_size=args.intermediate_size,
        max_position_embeddings=args.max_position_embeddings, attention_dropout=args.attention_dropout,
        tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, **labels,
    )  # fmt: skip


# How each `model_type` is sized from the recipe's keys.
CONFIGS = {"bert": _bert, "gpt2": _gpt2, "modernbert": _modernbert, "llama": _llama}


def label_kwargs(labels: list[str] | None) -> dict:
    """Config keys that name a classifier's classes, so pipelines print names instead of LABEL_0, LABEL_1, ..."""
    if not labels:
        return {}
    return {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {name: i for i, name in enumerate(labels)},
    }


def build(
    args: ModelArguments, tokenizer: PreTrainedTokenizerBase, labels: list[str] | None = None
) -> PreTrainedModel:
    """The model to train: the checkpoint at model_name_or_path (a classifier gets a new head for `labels`), or a
    new one sized by the recipe. Its loss is the task's (training.LMTrainer), not the model's own."""
    task = TASKS[args.objective]
    if not args.model_name_or_path:
        # from_config, not the class itself: under DeepSpeed ZeRO-3 with zero3_init_flag it builds each layer already
        # sharded (deepspeed.zero.Init), and it sets the attention kernel.
        config = config_for(args, tokenizer, labels)
        return task.auto_class.from_config(config, attn_implementation=args.attn_implementation)
    # A classifier checkpoint with other classes gets a new head rather than a shape error.
    kwargs = {**label_kwargs(labels), "ignore_mismatched_sizes": True} if labels else {}
    kwargs["attn_implementation"] = args.attn_implementation
    try:
        model = task.auto_class.from_pretrained(args.model_name_or_path, **kwargs)
    except (OSError, ValueError, RuntimeError, SafetensorError) as e:
        raise RecipeError(
            f"model_name_or_path: cannot load a {args.objective} model from {args.model_name_or_path} "
            f"({type(e).__name__}: {' '.join(str(e).split())[:500]}); give a run's output_dir or one of its "
            f"checkpoint-N folders, or a Hub model id (online)"
        ) from None
    if model.config.pad_token_id is None and tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id  # GPT-2 classifiers find each text's end by it
    return model


def load_checkpoint(path: str) -> tuple[PreTrainedModel, Task]:
    """(model, task) of an mlm or clm checkpoint (a run's output_dir, a checkpoint-N folder or a Hub id), for the
    scripts that use one; RecipeError naming CHECKPOINT for anything else."""
    fix = "pass the output folder or a checkpoint-N folder of an mlm or clm run"
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as e:
        where = "has no config.json" if Path(path).is_dir() else f"is not a folder or Hub model id ({e})"
        raise RecipeError(f"CHECKPOINT: {path} {where}; {fix}") from None
    task = task_of(config)
    if task is None:
        held = ", ".join(config.architectures or []) or "a model of no named architecture"
        raise RecipeError(f"CHECKPOINT: {path} holds {held}, not a masked or causal language model; {fix}")
    try:
        model = task.auto_class.from_pretrained(path)
    except (OSError, ValueError, RuntimeError) as e:
        raise RecipeError(f"CHECKPOINT: cannot load the {task.name} model in {path} ({e})") from None
    device = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else "cpu"
    return model.to(device).eval(), task


def sizes(model: PreTrainedModel) -> dict:
    """The recipe's model keys as a loaded checkpoint has them, so a saved recipe says what really ran (None where
    the architecture has no such key)."""
    c = model.config
    inner = getattr(c, "intermediate_size", None) or getattr(c, "n_inner", None) or 4 * c.hidden_size
    dropout_keys = ("hidden_dropout_prob", "resid_pdrop", "mlp_dropout", "dropout")
    dropout = next((getattr(c, k) for k in dropout_keys if hasattr(c, k)), 0.0 if c.model_type == "llama" else None)
    attention = next(
        (getattr(c, k) for k in ("attention_probs_dropout_prob", "attn_pdrop", "attention_dropout") if hasattr(c, k)),
        None,
    )
    return {
        "dropout": dropout,
        "attention_dropout": attention,
        "model_type": c.model_type if c.model_type in CONFIGS else "auto",
        "num_layers": c.num_hidden_layers,
        "num_heads": c.num_attention_heads,
        "hidden_size": c.hidden_size,
        "intermediate_size": inner,
        "max_position_embeddings": positions(model),
    }


def positions(model: PreTrainedModel) -> int:
    """How many tokens the model can attend over."""
    config = model.config
    return getattr(config, "max_position_embeddings", None) or config.n_positions
