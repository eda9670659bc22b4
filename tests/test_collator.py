"""The collators the recipes use: MLM masking rate and 80/10/10 split, CLM labels shifted to the next token."""

import numpy as np
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


@pytest.fixture(scope="module")
def word_blocks(blocks):
    """Blocks of othello with each token's character offsets, as `whole_word_mask: true` prepares them."""
    tok, _ = blocks["mlm"]
    texts = Dataset.from_list(list(corpus.generate_documents(["othello"], corpus.version())))
    ds = data.group(data.tokenize(texts, tok, "text", mlm=True, offsets=True), 128)
    return tok, ds


def words(offsets, special):
    """Word number of each token (-1 for special tokens): a word starts where a token does not begin at the end of
    the one before it (a space between them), or after a special token."""
    out, n, end = [], 0, None
    for (start, stop), is_special in zip(offsets, special, strict=True):
        if is_special:
            out.append(-1)
            end = None
            continue
        if start != end:
            n += 1
        out.append(n)
        end = stop
    return out


def test_whole_word_mask_masks_every_piece_of_a_picked_word(word_blocks):
    tok, ds = word_blocks
    assert ds.column_names == ["input_ids", "offset_mapping"]
    rows = ds.select(range(300))  # ~38k tokens
    assert all(len(o) == 2 * len(i) for i, o in zip(rows["input_ids"], rows["offset_mapping"], strict=True))
    collate = TASKS["mlm"].build_collator(tok, DataArguments(mlm_probability=0.3, whole_word_mask=True), seed=0)
    batch = collate(
        [{"input_ids": i, "offset_mapping": o} for i, o in zip(rows["input_ids"], rows["offset_mapping"], strict=True)]
    )
    assert "offset_mapping" not in batch  # not a model input
    original = torch.tensor(rows["input_ids"])
    picked = batch["labels"] != -100
    assert torch.equal(batch["labels"][picked], original[picked])
    assert (batch["input_ids"][picked] == tok.mask_token_id).all()  # all [MASK]: no random or kept tokens
    assert torch.equal(batch["input_ids"][~picked], original[~picked])
    special = torch.isin(original, torch.tensor(tok.all_special_ids))
    assert not (picked & special).any()
    pieces = torch.tensor([[t.startswith("##") for t in tok.convert_ids_to_tokens(row)] for row in rows["input_ids"]])
    # A word piece (##...) is masked exactly when the token before it, the same word, is.
    cont = pieces[:, 1:]
    assert cont.sum() > 1000 and torch.equal(picked[:, 1:][cont], picked[:, :-1][cont])
    n_words = picked_words = 0
    for offsets, mask, sp in zip(rows["offset_mapping"], picked.tolist(), special.tolist(), strict=True):
        ids = words(list(zip(offsets[::2], offsets[1::2], strict=True)), sp)
        by_word = {}
        for w, m in zip(ids, mask, strict=True):
            if w >= 0:
                by_word.setdefault(w, set()).add(m)
        assert all(len(s) == 1 for s in by_word.values())  # no word is masked in part
        n_words += len(by_word)
        picked_words += sum(True in s for s in by_word.values())
    # ~30k words, 30% picked: binomial sd ~0.27 percentage points.
    assert n_words > 20000 and abs(picked_words / n_words - 0.3) < 0.015, (picked_words, n_words)
    assert picked.sum() > picked_words  # some picked words have several pieces


def test_whole_word_masks_do_not_depend_on_the_number_of_processes(word_blocks):
    tok, ds = word_blocks
    rows = [
        {"input_ids": i, "offset_mapping": o}
        for i, o in zip(ds["input_ids"][:8], ds["offset_mapping"][:8], strict=True)
    ]
    args = DataArguments(mlm_probability=0.3, whole_word_mask=True)
    one = TASKS["mlm"].build_collator(tok, args, seed=7)(rows)
    halves = [
        TASKS["mlm"].build_collator(tok, args, seed=7, processes=(2, r))(rows[4 * r : 4 * r + 4]) for r in (0, 1)
    ]
    assert torch.equal(one["labels"], torch.cat([h["labels"] for h in halves]))
    assert torch.equal(one["input_ids"], torch.cat([h["input_ids"] for h in halves]))


def test_offsets_leave_out_the_space_a_byte_level_token_carries(blocks):
    tok, _ = blocks["clm"]  # byte-level BPE: "Ġlord" is the space and the word
    text = "Good morrow, my lord."
    columns, lengths = data.encode([text], tok.backend_tokenizer, add_special=False, eos_id=None, offsets=True)
    spans = columns[data.OFFSETS].reshape(-1, 2).tolist()
    pieces = tok.convert_ids_to_tokens(columns["input_ids"].tolist())
    assert lengths.tolist() == [len(pieces)] and pieces[-2] == "Ġlord"
    assert [text[a:b] for a, b in spans] == [p.replace("Ġ", "") for p in pieces]  # each word alone, no space
    # So a word starts after each space: "morrow," (the comma touches it) is one word, "my" and "lord." others.
    starts = [i for i, (a, _) in enumerate(spans) if i == 0 or a != spans[i - 1][1]]
    ends = [i - 1 for i in starts[1:]] + [len(spans) - 1]
    assert [text[spans[a][0] : spans[b][1]] for a, b in zip(starts, ends, strict=True)] == [
        "Good", "morrow,", "my", "lord."
    ]  # fmt: skip


def test_whole_word_rule_matches_transformers_at_a_fraction_of_the_memory(word_blocks):
    from transformers import DataCollatorForLanguageModeling

    from lm_recipes.tasks import MaskingCollator

    tok, ds = word_blocks
    rows = ds.select(range(64))
    offsets = np.asarray(rows["offset_mapping"]).reshape(64, -1, 2)
    special = np.isin(np.asarray(rows["input_ids"]), tok.all_special_ids).astype(int)
    word_ids, not_first = DataCollatorForLanguageModeling._calc_word_ids_and_prob_mask(offsets, special)
    draws = (np.random.default_rng(0).random(word_ids.shape) < 0.3) & ~not_first  # on first pieces, as the collator
    theirs = DataCollatorForLanguageModeling._whole_word_mask(word_ids, draws)
    mine = MaskingCollator._whole_word_mask(word_ids, torch.from_numpy(draws))
    assert mine.dtype == bool and np.array_equal(mine, theirs)
    assert theirs.sum() > draws.sum()  # some drawn words have several pieces


def test_offsets_stay_with_their_tokens_across_map_batches_and_in_streams(blocks):
    from lm_recipes import streaming

    tok, _ = blocks["mlm"]
    plays = corpus.generate_documents(["othello"], corpus.version())
    lines = [line for d in plays for line in d["text"].split("\n") if line.strip()][:2500]
    # 2,500 documents: blocks straddle the 1,000-document batches of tokenizing and grouping.
    grouped = data.group(data.tokenize(Dataset.from_dict({"text": lines}), tok, "text", mlm=True, offsets=True), 16)
    streamed = streaming._blocks_of({"text": lines}, tok.backend_tokenizer, "text", True, None, 16, offsets=True)
    for name, ids, offsets in (("grouped", grouped["input_ids"], grouped["offset_mapping"]),
                               ("streamed", streamed["input_ids"], streamed["offset_mapping"])):  # fmt: skip
        assert len(ids) > 1000 and all(len(o) == 2 * len(i) for i, o in zip(ids, offsets, strict=True))
        checked = 0
        for row, spans in zip(ids, offsets, strict=True):
            for piece, start, end in zip(tok.convert_ids_to_tokens(row), spans[::2], spans[1::2], strict=True):
                if piece not in tok.all_special_tokens:  # each piece spans as many characters as it has
                    assert end - start == len(piece.removeprefix("##")), (name, piece, start, end)
                    checked += 1
        assert checked > 10000
