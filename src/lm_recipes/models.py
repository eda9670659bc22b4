"""Models: a from-scratch BERT or GPT-2 sized by the recipe, or a trained checkpoint to start from."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import AutoConfig, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase
from transformers.loss.loss_utils import LOSS_MAPPING, ForCausalLMLoss

from .arguments import ModelArguments
from .recipe import RecipeError
from .tasks import CONFIGS, TASKS, objective_of

logger = logging.getLogger(__name__)


def config_for(
    args: ModelArguments, tokenizer: PreTrainedTokenizerBase, labels: list[str] | None = None
) -> PretrainedConfig:
    """The architecture's config from the recipe's size keys; vocabulary and special ids from the tokenizer."""
    model_type = args.resolved_model_type
    config_class = CONFIGS[model_type]
    vocab_size = len(tokenizer)
    if model_type == "bert":
        return config_class(
            vocab_size=vocab_size,
            hidden_size=args.hidden_size,
            num_hidden_layers=args.num_layers,
            num_attention_heads=args.num_heads,
            intermediate_size=args.intermediate_size,
            max_position_embeddings=args.max_position_embeddings,
            hidden_dropout_prob=args.dropout,
            attention_probs_dropout_prob=args.attention_dropout,
            pad_token_id=tokenizer.pad_token_id,
            **label_kwargs(labels),
        )
    return config_class(
        vocab_size=vocab_size,
        n_positions=args.max_position_embeddings,
        n_embd=args.hidden_size,
        n_layer=args.num_layers,
        n_head=args.num_heads,
        n_inner=args.intermediate_size,
        resid_pdrop=args.dropout,
        embd_pdrop=args.dropout,
        attn_pdrop=args.attention_dropout,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **label_kwargs(labels),
    )


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
    new one sized by the recipe."""
    task = TASKS[args.objective]
    if args.model_name_or_path:
        # A classifier checkpoint with other classes gets a new head rather than a shape error.
        kwargs = {**label_kwargs(labels), "ignore_mismatched_sizes": True} if labels else {}
        try:
            model = task.auto_class.from_pretrained(args.model_name_or_path, **kwargs)
        except (OSError, ValueError, RuntimeError) as e:
            raise RecipeError(f"model_name_or_path: cannot load a {args.objective} model from it ({e})") from None
        if model.config.pad_token_id is None and tokenizer.pad_token_id is not None:
            model.config.pad_token_id = tokenizer.pad_token_id  # GPT-2 classifiers find each text's end by it
    else:
        model = task.model_classes[args.resolved_model_type](config_for(args, tokenizer, labels))
    if args.objective == "clm" and LOSS_MAPPING.get(model.loss_type) is not ForCausalLMLoss:
        # GPT2LMHeadModel's name maps to no loss_type in transformers 5, so the Trainer does not know its loss shifts
        # the labels: it counts B x T tokens per batch where B x (T - 1) are predicted, and every logged loss (and the
        # gradients) came out (T - 1) / T of the true mean. Naming the loss the model computes anyway fixes the count.
        model.loss_type = "ForCausalLM"
    if not loss_honours_num_items(model, per_sequence=args.objective == "classification"):
        # The Trainer passes `num_items_in_batch` to any model whose forward takes **kwargs and then skips its own
        # division by gradient_accumulation_steps. transformers 5's BertForMaskedLM takes the kwargs but averages
        # per micro-batch anyway, so its gradients and logged loss would grow with accumulation and processes.
        # accepts_loss_kwargs=False is the Trainer's own switch back to dividing.
        model.accepts_loss_kwargs = False
    return model


def load_checkpoint(path: str) -> tuple[PreTrainedModel, str]:
    """(model, objective) of an mlm or clm checkpoint (a run's output_dir, a checkpoint-N folder or a Hub id), for the
    scripts that use one; RecipeError naming CHECKPOINT for anything else."""
    fix = "pass the output folder or a checkpoint-N folder of an mlm or clm run"
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as e:
        where = "has no config.json" if Path(path).is_dir() else f"is not a folder or Hub model id ({e})"
        raise RecipeError(f"CHECKPOINT: {path} {where}; {fix}") from None
    objective = objective_of(config)
    if objective is None:
        held = ", ".join(config.architectures or []) or "a model of no named architecture"
        raise RecipeError(f"CHECKPOINT: {path} holds {held}, not a masked or causal language model; {fix}")
    try:
        model = TASKS[objective].auto_class.from_pretrained(path)
    except (OSError, ValueError, RuntimeError) as e:
        raise RecipeError(f"CHECKPOINT: cannot load the {objective} model in {path} ({e})") from None
    device = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else "cpu"
    return model.to(device).eval(), objective


def sizes(model: PreTrainedModel) -> dict:
    """The recipe's model keys as a loaded checkpoint has them, so a saved recipe says what really ran (None where
    the architecture has no such key)."""
    c = model.config
    inner = getattr(c, "intermediate_size", None) or getattr(c, "n_inner", None) or 4 * c.hidden_size
    dropout = next((getattr(c, k) for k in ("hidden_dropout_prob", "resid_pdrop", "dropout") if hasattr(c, k)), None)
    attention = next(
        (getattr(c, k) for k in ("attention_probs_dropout_prob", "attn_pdrop", "attention_dropout") if hasattr(c, k)),
        None,
    )
    return {
        "dropout": dropout,
        "attention_dropout": attention,
        "model_type": c.model_type if c.model_type in ("bert", "gpt2") else "auto",
        "num_layers": c.num_hidden_layers,
        "num_heads": c.num_attention_heads,
        "hidden_size": c.hidden_size,
        "intermediate_size": inner,
        "max_position_embeddings": positions(model),
    }


@torch.no_grad()
def loss_honours_num_items(model: PreTrainedModel, per_sequence: bool = False) -> bool:
    """Whether the model's loss is a sum over `num_items_in_batch`, found by asking it on a 4-token input."""
    training = model.training
    model.eval()
    ids = torch.full((1, 4), min(5, model.config.vocab_size - 1), dtype=torch.long, device=model.device)
    # A classifier takes one label per sequence, a language model one per token.
    labels = torch.zeros(1, dtype=torch.long, device=model.device) if per_sequence else ids
    try:
        one, two = (model(input_ids=ids, labels=labels, num_items_in_batch=n).loss for n in (4, 8))
    except TypeError:  # forward has no such argument: the Trainer will not pass it either
        return True
    finally:
        model.train(training)
    return bool(torch.isclose(one, 2 * two, rtol=1e-3))


def positions(model: PreTrainedModel) -> int:
    """How many tokens the model can attend over."""
    config = model.config
    return getattr(config, "max_position_embeddings", None) or config.n_positions
