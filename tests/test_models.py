"""Models built from recipe keys, and the loss lm-recipes owns: one optimizer step with gradient accumulation has the
gradients of the same examples as one batch, and the logged loss is the mean over predicted tokens."""

import math

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import set_seed

from conftest import ROOT, TINY
from lm_recipes import corpus, models, tokenizer, training
from lm_recipes import recipe as recipes
from lm_recipes.arguments import ModelArguments, TokenizerArguments

SIZE = {"num_layers": 3, "num_heads": 2, "hidden_size": 32, "intermediate_size": 48, "max_position_embeddings": 40}


@pytest.fixture(scope="module")
def texts():
    return Dataset.from_list(list(corpus.generate_documents(["macbeth"], corpus.version())))


@pytest.mark.parametrize("objective, cls", [("mlm", "BertForMaskedLM"), ("clm", "GPT2LMHeadModel")])
def test_model_is_sized_by_the_recipe_and_the_tokenizer(texts, tmp_path, objective, cls):
    args = ModelArguments(objective=objective, **SIZE)
    tok = tokenizer.build(TokenizerArguments(vocab_size=500), args, texts, "text", 40, str(tmp_path))
    model = models.build(args, tok)
    assert type(model).__name__ == cls
    c = model.config
    assert c.vocab_size == len(tok) == 500
    assert (c.num_hidden_layers, c.num_attention_heads, c.hidden_size) == (3, 2, 32)
    assert models.positions(model) == 40
    assert c.pad_token_id == tok.pad_token_id


def one_step(objective: str, cache_dir: str, tmp_path, batch: int, accumulation: int):
    """The parameters' change in one plain-SGD step (lr 1, so the change is minus the gradient), and the logged
    loss, of recipes/OBJECTIVE.yaml's tiny model at fp32: per_device_train_batch_size `batch` x
    gradient_accumulation_steps `accumulation` blocks, the same 8 blocks whatever the split (the sampler's order
    depends on the seed only); dropout off, MLM masks drawn once, ahead, so both splits see the same."""
    recipe = recipes.load([str(ROOT / "recipes" / f"{objective}.yaml"), *TINY, "--output_dir", str(tmp_path),
                           "--cache_dir", cache_dir, "--max_steps", "1", "--dropout", "0", "--attention_dropout", "0",
                           "--per_device_train_batch_size", str(batch), "--gradient_accumulation_steps",
                           str(accumulation), "--optim", "sgd", "--learning_rate", "1", "--weight_decay", "0",
                           "--max_grad_norm", "0", "--lr_scheduler_type", "constant", "--eval_strategy", "no",
                           "--save_strategy", "no", "--report_to", "none", "--max_train_samples", "8",
                           "--seed", "3", "--logging_steps", "1"])  # fmt: skip
    trainer = training.build(recipe)
    collate = trainer.data_collator
    set_seed(0)
    fixed = collate([trainer.train_dataset[i] for i in range(8)])  # masks (mlm) or shifted labels (clm), drawn once
    rows = [{"input_ids": fixed["input_ids"][i].tolist(), "labels": fixed["labels"][i].tolist()} for i in range(8)]
    trainer.train_dataset = Dataset.from_list(rows)
    trainer.data_collator = lambda examples: {k: torch.tensor([e[k] for e in examples]) for k in rows[0]}
    with torch.no_grad():  # the mean cross-entropy per predicted token, computed here, before the step
        logits = trainer.model.eval()(input_ids=fixed["input_ids"]).logits
    direct = F.cross_entropy(logits.flatten(0, 1), fixed["labels"].flatten(), ignore_index=-100).item()
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    change = {n: p.detach() - before[n] for n, p in trainer.model.named_parameters()}
    logged = next(h["loss"] for h in trainer.state.log_history if "loss" in h)
    return change, logged, direct


@pytest.mark.parametrize("objective", ["mlm", "clm"])
def test_accumulation_gives_the_gradients_of_one_batch(objective, cache_dir, tmp_path):
    whole, loss_whole, direct = one_step(objective, cache_dir, tmp_path / "a", batch=8, accumulation=1)
    split, loss_split, _ = one_step(objective, cache_dir, tmp_path / "b", batch=2, accumulation=4)
    assert sum(d.abs().sum() for d in whole.values()) > 0  # the step changed the weights
    for name, delta in whole.items():  # equal up to fp32 summation order, tensor by tensor: a gradient scaled by 1/4
        # or normalised by another count of tokens is off by 25% or more; summing 4 micro-batches instead of 1 moves
        # a tensor by about 1e-5 of its norm at most (some elements more, where they are small differences of large
        # terms). The floor is for the attention key biases, whose gradient is zero but for rounding (about 1e-11).
        assert (split[name] - delta).norm() <= 1e-4 * delta.norm() + 1e-9, name
    # The logged loss of both is the mean cross-entropy per predicted token (not per position, nor per micro-batch).
    assert math.isclose(loss_whole, direct, rel_tol=1e-4), (loss_whole, direct)
    assert math.isclose(loss_split, direct, rel_tol=1e-4), (loss_split, direct)
