"""Tokenizers trained on a slice of the embedded corpus: round trip, special tokens, saved class, cache."""

import json
import logging

import pytest
from datasets import Dataset
from transformers import AutoTokenizer

from lm_recipes import corpus, tokenizer
from lm_recipes.arguments import ModelArguments, TokenizerArguments


@pytest.fixture(scope="module")
def texts():
    return Dataset.from_list(list(corpus.generate_documents(["macbeth", "othello"], corpus.version())))


def build(texts, cache_dir, objective, **kwargs):
    args = TokenizerArguments(vocab_size=kwargs.pop("vocab_size", 600), **kwargs)
    return tokenizer.build(args, ModelArguments(objective=objective), texts, "text", 64, cache_dir)


def test_bpe_round_trips_exactly_and_adds_no_bos(texts, tmp_path):
    tok = build(texts, str(tmp_path), "clm")
    text = "MACBETH:\nIs this a dagger which I see before me,\nThe handle toward my hand? Café ✓"
    ids = tok(text)["input_ids"]
    assert tok.decode(ids) == text
    assert ids[0] != tok.bos_token_id and tok.eos_token_id not in ids
    assert len(tok) == 600 and tok.model_max_length == 64
    assert tok.pad_token == "<|padding|>" and tok.pad_token_id != tok.eos_token_id


def test_wordpiece_has_bert_specials_and_post_processor(texts, tmp_path):
    tok = build(texts, str(tmp_path), "mlm")
    assert [tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id] == [
        0,
        1,
        2,
        3,
        4,
    ]
    ids = tok("Is this a dagger which I see before me?")["input_ids"]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    assert tok.decode(ids, skip_special_tokens=True) == "is this a dagger which i see before me?"
    assert tok.unk_token_id not in ids


def test_cased_wordpiece_keeps_case(texts, tmp_path):
    tok = build(texts, str(tmp_path), "mlm", lowercase=False)
    assert tok.decode(tok("Macbeth")["input_ids"], skip_special_tokens=True) == "Macbeth"


@pytest.mark.parametrize("objective, cls", [("mlm", "BertTokenizerFast"), ("clm", "GPT2TokenizerFast")])
def test_saved_tokenizer_names_a_concrete_class_and_its_specials(texts, tmp_path, objective, cls):
    tok = build(texts, str(tmp_path / "cache"), objective)
    tok.save_pretrained(tmp_path / "saved")
    config = json.loads((tmp_path / "saved" / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == cls
    assert config["model_max_length"] == 64
    specials = ["pad_token", "unk_token", "cls_token", "sep_token", "mask_token"]
    specials = specials if objective == "mlm" else ["bos_token", "eos_token", "pad_token", "unk_token"]
    for key in specials:
        assert config[key] == getattr(tok, key)
    assert "local_files_only" not in config
    again = AutoTokenizer.from_pretrained(tmp_path / "saved")
    text = "Out, damned spot! out, I say!"
    assert again(text)["input_ids"] == tok(text)["input_ids"]


def test_unchanged_settings_and_data_reuse_the_trained_tokenizer(texts, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="lm_recipes"):
        first = build(texts, str(tmp_path), "clm")
        second = build(texts, str(tmp_path), "clm")
        third = build(texts, str(tmp_path), "clm", vocab_size=700)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("Training a bpe tokenizer" in m for m in messages) == 2  # the first, and the changed vocab_size
    assert sum("Reusing the tokenizer" in m for m in messages) == 1
    assert first.get_vocab() == second.get_vocab() and len(third) == 700


TRAIN_IN_FRESH_PROCESS = """
import sys
from datasets import Dataset
from lm_recipes import corpus, tokenizer
from lm_recipes.arguments import TokenizerArguments
texts = Dataset.from_list(list(corpus.generate_documents(["macbeth", "othello", "hamlet"], corpus.version())))
kind, vocab_size = sys.argv[1], int(sys.argv[2])
sys.stdout.write(tokenizer.train(TokenizerArguments(vocab_size=vocab_size), kind, texts, "text").to_str())
"""


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_same_text_and_settings_give_the_same_tokenizer_byte_for_byte(kind):
    # Each process hashes words in another order: before tokenizer.train fixed the ids of the `##c` pieces,
    # WordPiece gave other ids (and, for merges of equal count, other tokens) from one process to the next.
    import subprocess
    import sys

    runs = [
        subprocess.run([sys.executable, "-c", TRAIN_IN_FRESH_PROCESS, kind, "3000"], capture_output=True, text=True,
                       check=True).stdout
        for _ in range(3)
    ]  # fmt: skip
    assert json.loads(runs[0])["model"]["vocab"]  # a real tokenizer, not an empty output
    assert runs[0] == runs[1] == runs[2]
