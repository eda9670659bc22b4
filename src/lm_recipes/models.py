"""Models: a from-scratch BERT or GPT-2 sized by the recipe, or a trained checkpoint to start from."""

from __future__ import annotations

import logging

import torch
from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from .recipe import ModelArguments, RecipeError
from .tasks import TASKS

logger = logging.getLogger(__name__)


def config_for(args: ModelArguments, tokenizer: PreTrainedTokenizerBase) -> PretrainedConfig:
    """The architecture's config from the recipe's size keys; vocabulary and special ids from the tokenizer."""
    task = TASKS[args.objective]
    vocab_size = len(tokenizer)
    if task.model_type == "bert":
        return task.config_class(
            vocab_size=vocab_size,
            hidden_size=args.hidden_size,
            num_hidden_layers=args.num_layers,
            num_attention_heads=args.num_heads,
            intermediate_size=args.intermediate_size,
            max_position_embeddings=args.max_position_embeddings,
            hidden_dropout_prob=args.dropout,
            attention_probs_dropout_prob=args.attention_dropout,
            pad_token_id=tokenizer.pad_token_id,
        )
    return task.config_class(
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
    )


def build(args: ModelArguments, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    task = TASKS[args.objective]
    if args.model_name_or_path:
        try:
            model = task.auto_class.from_pretrained(args.model_name_or_path)
        except (OSError, ValueError) as e:
            raise RecipeError(f"model_name_or_path: cannot load a {args.objective} model from it ({e})") from None
        logger.info("Starting from %s (%s)", args.model_name_or_path, type(model).__name__)
    else:
        model = task.model_class(config_for(args, tokenizer))
        logger.info("Built %s from scratch", type(model).__name__)
    if not loss_honours_num_items(model):
        # The Trainer passes `num_items_in_batch` to any model whose forward takes **kwargs and then skips its own
        # division by gradient_accumulation_steps. transformers 5's BertForMaskedLM takes the kwargs but averages
        # per micro-batch anyway, so its gradients and logged loss would grow with accumulation and processes.
        # accepts_loss_kwargs=False is the Trainer's own switch back to dividing.
        model.accepts_loss_kwargs = False
    return model


@torch.no_grad()
def loss_honours_num_items(model: PreTrainedModel) -> bool:
    """Whether the model's loss is a sum over `num_items_in_batch`, found by asking it on a 4-token input."""
    training = model.training
    model.eval()
    ids = torch.full((1, 4), min(5, model.config.vocab_size - 1), dtype=torch.long, device=model.device)
    try:
        one, two = (model(input_ids=ids, labels=ids, num_items_in_batch=n).loss for n in (4, 8))
    except TypeError:  # forward has no such argument: the Trainer will not pass it either
        return True
    finally:
        model.train(training)
    return bool(torch.isclose(one, 2 * two, rtol=1e-3))


def positions(model: PreTrainedModel) -> int:
    """How many tokens the model can attend over."""
    config = model.config
    return getattr(config, "max_position_embeddings", None) or config.n_positions
