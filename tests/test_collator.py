"""The collators the recipes use: MLM masking rate and 80/10/10 split, CLM labels shifted to the next token."""

import pytest
import torch
from datasets import Dataset

from lm_recipes import corpus, data, tokenizer
from lm_recipes.arguments import DataArguments, ModelArguments, TokenizerArguments
from lm_recipes.tasks import TASKS


@pytest.fixture(scope="module")
def blocks(tmp_path_factory):
    texts = Dataset.from_list(list(corpus.generate_documents(["othello"], corpus.version())))
    out = {}
    for objective in ("mlm", "clm"):
        tok = tokenizer.build(TokenizerArguments(vocab_size=800), ModelArguments(objective=objective), texts, "text",
                              128, str(tmp_path_factory.mktemp("tok")))  # fmt: skip
        out[objective] = tok, data.group(data.tokenize(texts, tok, "text", mlm=objective == "mlm"), 128)
    return out


def test_mlm_masks_15_percent_with_80_10_10(blocks):
    tok, ds = blocks["mlm"]
    collate = TASKS["mlm"].build_collator(tok, DataArguments(mlm_probability=0.15), seed=0)
    examples = [{"input_ids": ids} for ids in ds["input_ids"][:400]]  # ~51k tokens
    batch = collate(examples)
    original = torch.tensor([e["input_ids"] for e in examples])
    special = torch.isin(original, torch.tensor(tok.all_special_ids))
    picked = batch["labels"] != -100
    n = (~special).sum().item()
    # Binomial standard deviations: 15% of n is ~7.7k picks, sd ~0.16 percentage points.
    assert abs(picked.sum().item() / n - 0.15) < 0.01
    assert not (picked & special).any()  # [CLS]/[SEP] are never picked
    assert torch.equal(batch["labels"][picked], original[picked])
    masked = batch["input_ids"][picked] == tok.mask_token_id
    kept = batch["input_ids"][picked] == original[picked]
    replaced = ~masked & ~kept
    total = picked.sum().item()
    assert abs(masked.sum().item() / total - 0.80) < 0.02
    # A random replacement can draw the original token (1 in 800), which then counts as kept.
    assert abs(replaced.sum().item() / total - 0.10) < 0.015
    assert abs(kept.sum().item() / total - 0.10) < 0.015
    assert torch.equal(batch["input_ids"][~picked], original[~picked])


def test_clm_label_t_is_the_token_at_t_plus_1(blocks):
    tok, ds = blocks["clm"]
    with_eos = [ids for ids in ds["input_ids"] if tok.eos_token_id in ids][:8]
    batch = TASKS["clm"].build_collator(tok, DataArguments())([{"input_ids": ids} for ids in with_eos])
    ids = torch.tensor(with_eos)
    assert torch.equal(batch["input_ids"], ids)
    assert torch.equal(batch["labels"][:, :-1], ids[:, 1:])  # what position t predicts, EOS separators included
    assert (batch["labels"][:, -1] == -100).all()  # a block's last position predicts nothing inside the block
    assert (batch["labels"] == tok.eos_token_id).any()
