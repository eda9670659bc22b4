"""Data: local files of every format, exact blocks with separators, cached preprocessing, clear errors."""

import json
import os

import numpy as np
import pandas as pd
import pytest
from datasets import Dataset, DatasetDict

from lm_recipes import corpus, data, labels, tokenizer
from lm_recipes.arguments import DataArguments, ModelArguments, TokenizerArguments
from lm_recipes.recipe import RecipeError

SCENES = [doc["text"] for doc in corpus.generate_documents(["macbeth"], corpus.version())]


@pytest.fixture(scope="module")
def toks(tmp_path_factory):
    cache = str(tmp_path_factory.mktemp("tok"))
    texts = Dataset.from_dict({"text": SCENES})
    return {
        objective: tokenizer.build(TokenizerArguments(vocab_size=500), ModelArguments(objective=objective), texts,
                                   "text", 64, cache)
        for objective in ("mlm", "clm")
    }  # fmt: skip


def args(tmp_path, **kwargs) -> DataArguments:
    return DataArguments(cache_dir=str(tmp_path / "cache"), block_size=kwargs.pop("block_size", 32), **kwargs)


def flat(ds) -> np.ndarray:
    return np.concatenate([np.asarray(r, dtype=np.int64) for r in ds["input_ids"]]) if len(ds) else np.zeros(0)


@pytest.mark.parametrize("objective", ["mlm", "clm"])
def test_blocks_are_exact_and_lose_only_the_final_remainder(tmp_path, toks, objective):
    # Many short documents: the grouping crosses its map batches (1000 documents) several times.
    lines = [line for scene in SCENES for line in scene.splitlines() if line.strip()][:2500]
    docs = Dataset.from_dict({"text": lines})
    ids = data.tokenize(docs, toks[objective], "text", mlm=objective == "mlm")
    blocks = data.group(ids, 32)
    stream = flat(ids)
    assert all(len(b) == 32 for b in blocks["input_ids"])
    assert len(blocks) == len(stream) // 32
    np.testing.assert_array_equal(flat(blocks), stream[: len(blocks) * 32])


def test_several_tokenizing_processes_give_the_same_ids(toks):
    docs = Dataset.from_dict({"text": SCENES})
    one = data.tokenize(docs, toks["clm"], "text", mlm=False)
    two = data.tokenize(docs, toks["clm"], "text", mlm=False, num_proc=2)
    assert one["input_ids"] == two["input_ids"]


def test_documents_are_marked_where_they_meet(toks):
    docs = Dataset.from_dict({"text": SCENES[:5] + ["   ", ""]})  # blank documents are skipped
    mlm = data.tokenize(docs, toks["mlm"], "text", mlm=True)
    assert len(mlm) == 5
    for row in mlm["input_ids"]:
        assert row[0] == toks["mlm"].cls_token_id and row[-1] == toks["mlm"].sep_token_id
    clm = data.tokenize(docs, toks["clm"], "text", mlm=False)
    eos = toks["clm"].eos_token_id
    for row in clm["input_ids"]:
        assert row[-1] == eos and eos not in row[:-1]
    stream = flat(data.group(clm, 16))
    assert (stream == eos).sum() >= 4  # documents meet at an EOS in the blocks


def test_embedded_corpus_holds_whole_plays_out(tmp_path):
    texts = data.load_texts(args(tmp_path, validation_plays=["macbeth"]), seed=0)
    assert set(texts["validation"]["play"]) == {"macbeth"}
    assert "macbeth" not in set(texts["train"]["play"]) and len(set(texts["train"]["play"])) == 37


def write_files(tmp_path):
    rows = [{"body": s} for s in SCENES]
    (tmp_path / "a.txt").write_text("\n\n".join(SCENES[:10]))
    (tmp_path / "b.txt").write_text("\n\n".join(SCENES[10:]))
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    pd.DataFrame(rows).to_csv(tmp_path / "d.csv", index=False)
    pd.DataFrame(rows).to_parquet(tmp_path / "d.parquet")


@pytest.mark.parametrize("files, column", [("*.txt", "text"), ("d.jsonl", "body"), ("d.csv", "body"),
                                           ("d.parquet", "body")])  # fmt: skip
def test_local_files_of_every_format(tmp_path, toks, files, column):
    write_files(tmp_path)
    a = args(tmp_path, train_files=[str(tmp_path / files)], text_column=column, validation_split_percentage=10)
    texts = data.load_texts(a, seed=0)
    assert len(texts["train"]) + len(texts["validation"]) >= len(SCENES)  # txt paragraphs split scenes further
    blocks = data.build_blocks(texts, toks["mlm"], a, mlm=True)
    assert len(blocks["train"]) > 0 and len(blocks["validation"]) > 0


def test_validation_files_are_used_as_given(tmp_path):
    write_files(tmp_path)
    a = args(tmp_path, train_files=[str(tmp_path / "a.txt")], validation_files=[str(tmp_path / "b.txt")])
    texts = data.load_texts(a, seed=0)
    assert texts["validation"][0]["text"].startswith(SCENES[10].split("\n\n")[0])


def test_second_build_loads_from_the_cache(tmp_path, toks):
    a = args(tmp_path, validation_plays=["macbeth"])
    texts = data.load_texts(a, seed=0)
    first = data.build_blocks(texts, toks["clm"], a, mlm=False)
    files = {f["filename"]: os.path.getmtime(f["filename"]) for f in first["train"].cache_files}
    again = data.build_blocks(data.load_texts(a, seed=0), toks["clm"], a, mlm=False)
    assert {f["filename"] for f in again["train"].cache_files} == set(files)
    assert all(os.path.getmtime(name) == mtime for name, mtime in files.items())


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda p: {"train_files": [str(p / "missing*.txt")]}, "train_files: no file matches"),
        (lambda p: {"train_files": [str(p / "empty.txt")]}, "empty.txt` is empty"),
        (lambda p: {"train_files": [str(p / "d.jsonl")], "text_column": "text"},
         r"text_column: `text` is not a column of the training data; its columns are \['body'\]"),
        (lambda p: {"train_files": [str(p / "d.xml")]}, r"cannot read \['.xml'\] files"),
        (lambda p: {"train_files": [str(p / "a.txt"), str(p / "d.csv")]}, "mixes"),
        (lambda p: {"validation_plays": ["hamlet", "macbeht"]}, r"validation_plays: \['macbeht'\] not in"),
    ],
)  # fmt: skip
def test_bad_data_is_one_clear_error(tmp_path, setup, message):
    write_files(tmp_path)
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "d.xml").write_text("<a/>")
    with pytest.raises(RecipeError, match=message):
        data.load_texts(args(tmp_path, **setup(tmp_path)), seed=0)


def test_hub_dataset_goes_through_load_dataset_and_fails_clearly_offline(tmp_path):
    # The real Hub path: offline here, so datasets refuses and the recipe gets one clear message.
    with pytest.raises(RecipeError, match="dataset_name: could not load `wikitext`.*HF_HUB_OFFLINE"):
        data.load_texts(args(tmp_path, dataset_name="wikitext", dataset_config_name="wikitext-2-raw-v1"), seed=0)


def test_block_larger_than_the_corpus(tmp_path, toks):
    (tmp_path / "t.txt").write_text("A few words.\n\nAnd a few more.")
    a = args(tmp_path, train_files=[str(tmp_path / "t.txt")], validation_split_percentage=0, block_size=64)
    with pytest.raises(RecipeError, match=r"block_size: 64 tokens is more than the whole train split \(\d+ tokens\)"):
        data.build_blocks(data.load_texts(a, seed=0), toks["mlm"], a, mlm=True)


def test_genre_task_holds_out_whole_plays_one_per_genre(tmp_path):
    texts = data.load_texts(args(tmp_path), seed=0, labelled=True)
    genres = texts["train"].features["label"].names
    assert genres == corpus.genres()
    train_plays, test_plays = set(texts["train"].unique("play")), set(texts["validation"].unique("play"))
    assert not train_plays & test_plays and len(train_plays | test_plays) == 38
    assert sorted(genres[i] for i in texts["validation"].unique("label")) == genres  # every genre is tested


def test_genres_keep_only_their_plays(tmp_path):
    texts = data.load_texts(args(tmp_path, genres=["comedies"]), seed=0)
    assert set(texts["train"].unique("genre")) == {"comedies"}
    assert texts["validation"].unique("play") == ["twelfth-night"]
    with pytest.raises(RecipeError, match=r"genres: \['comedy'\] are not genres of the embedded corpus; choose"):
        data.load_texts(args(tmp_path, genres=["comedy"]), seed=0)


def test_string_labels_become_one_class_label_for_every_split():
    texts = DatasetDict(
        train=Dataset.from_dict({"text": ["a", "b", "c"], "label": ["pos", "neg", "pos"]}),
        validation=Dataset.from_dict({"text": ["d"], "label": ["neg"]}),
    )
    encoded, names = labels.encode_labels(texts, "label")
    assert names == ["neg", "pos"]
    assert encoded["train"]["label"] == [1, 0, 1] and encoded["validation"]["label"] == [0]
    ids, names = labels.encode_labels(DatasetDict(train=Dataset.from_dict({"label": [0, 2]})), "label")
    assert names == ["0", "1", "2"]


@pytest.mark.parametrize(
    "train, validation, message",
    [
        (["pos", "neg"], ["meh"], r"the validation split has labels the training split lacks \(\['meh'\]\)"),
        ([0, -1], [0], "must hold class names \\(strings\\) or class ids \\(integers from 0\\)"),
        (["pos", "pos"], ["pos"], r"label_column: `label` has one class \(\['pos'\]\); a classifier needs two"),
        (["pos", None], ["pos"], "label_column: some training rows have no `label`; label them or leave them out"),
    ],
)
def test_bad_labels_are_clear_errors(train, validation, message):
    texts = DatasetDict(
        train=Dataset.from_dict({"text": ["a"] * len(train), "label": train}),
        validation=Dataset.from_dict({"text": ["b"] * len(validation), "label": validation}),
    )
    with pytest.raises(RecipeError, match=message):
        labels.encode_labels(texts, "label")


def test_examples_are_truncated_and_keep_their_labels(tmp_path, toks):
    texts = DatasetDict(train=Dataset.from_dict({"text": [SCENES[0], "short"], "label": [1, 0]}))
    examples = labels.build_examples(texts, toks["mlm"], args(tmp_path, block_size=16), seed=0)["train"]
    assert examples["labels"] == [1, 0]
    assert len(examples["input_ids"][0]) == 16 and len(examples["input_ids"][1]) < 16
