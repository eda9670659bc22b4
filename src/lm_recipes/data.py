"""Data: raw text from the Hub, local files or the embedded corpus, turned into fixed-length token blocks.

Documents are tokenized with separators (`[CLS] … [SEP]` for MLM, `… <|endoftext|>` for CLM), concatenated and
cut into blocks of `block_size` tokens; only the final remainder of each split is dropped. Both steps are
`datasets.map` calls with fingerprints, so a rerun of the same recipe loads them from the cache.
"""

from __future__ import annotations

import logging
import math
import os
from functools import partial
from itertools import chain

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import ClassLabel, Dataset, DatasetDict, Features, List, Value
from datasets.fingerprint import Hasher
from transformers import PreTrainedTokenizerBase

from . import corpus, datafiles
from .arguments import DataArguments
from .recipe import RecipeError

logger = logging.getLogger(__name__)

BUILDERS = {".txt": "text", ".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
FORMAT = 2  # bump when tokenization or grouping changes, so cached results are not reused
_IDS = Features({"input_ids": List(Value("int32"))})
# Whole-word masking also needs each token's character offsets in its document: two numbers per token, (start, end),
# flat in one list (MaskingCollator gives them the (tokens, 2) shape the transformers collator reads).
OFFSETS = "offset_mapping"
_IDS_OFFSETS = Features({"input_ids": List(Value("int32")), OFFSETS: List(Value("int32"))})
WIDTH = {"input_ids": 1, OFFSETS: 2}


def load_texts(args: DataArguments, seed: int, labelled: bool = False) -> DatasetDict:
    """{"train", "validation"} splits of documents; the text is in `args.text_column` (and for a `labelled` task,
    the label in `args.label_column`). The embedded corpus gives scenes, or passages labelled by genre."""
    files: dict[str, list[str]] = {}
    if args.uses_embedded_corpus():
        raw = _embedded(args, labelled)
    elif args.dataset_name:
        raw = load_hub(args)
    else:
        raw, files = _local(args)
    if "train" not in raw:
        raise RecipeError(f"the data has no train split (it has {sorted(raw)}); name a dataset with one")
    for split in ("train", "validation") if "validation" in raw else ("train",):
        columns, where = raw[split].column_names, f"{split}_files" if files else f"the {split} split of dataset_name"
        for key in ("text_column", "label_column") if labelled else ("text_column",):
            if getattr(args, key) not in columns:
                data = "the training data" if split == "train" else where
                name = getattr(args, key)
                raise RecipeError(f"{key}: `{name}` is not a column of {data}; its columns are {columns}")
        if not args.uses_embedded_corpus() and (
            problem := datafiles.text_problem(raw[split], args.text_column, where, files.get(split))
        ):
            raise RecipeError(problem)
    if "validation" not in raw and args.validation_split_percentage > 0:
        documents, carve = len(raw["train"]), args.validation_split_percentage
        if documents - math.ceil(documents * carve / 100) < 1:
            raise RecipeError(
                f"validation_split_percentage: {carve}% of {documents} training document(s) leaves none to train on "
                f"(the split takes whole documents); give validation_files, or set validation_split_percentage: 0 "
                f"(and eval_strategy: 'no')"
            )
        carved = raw["train"].train_test_split(test_size=args.validation_split_percentage / 100, seed=seed)
        raw = DatasetDict(train=carved["train"], validation=carved["test"])
    keep = {"train": raw["train"]}
    if "validation" in raw:
        keep["validation"] = raw["validation"]
    return DatasetDict(keep)


def load_hub(args: DataArguments, streaming: bool = False):
    """The Hub dataset of `dataset_name`, as a DatasetDict (or, `streaming`, an IterableDatasetDict)."""
    try:
        return datasets.load_dataset(args.dataset_name, args.dataset_config_name, cache_dir=args.cache_dir,
                                     streaming=streaming)  # fmt: skip
    except (ConnectionError, FileNotFoundError, ValueError) as e:
        raise RecipeError(
            f"dataset_name: could not load `{args.dataset_name}` ({e}); check the id and config name, and the "
            f"network: offline (HF_HUB_OFFLINE=1) only datasets already in the cache load"
            + (", and a stream reads from the Hub as it goes" if streaming else "")
        ) from None


def embedded_plays(args: DataArguments) -> tuple[list[str], list[str], list[str]]:
    """(training plays, validation plays, genres) of the embedded corpus for `validation_plays` and `genres`."""
    try:
        train_plays, validation_plays = corpus.split_plays(args.validation_plays)
    except KeyError as e:
        raise RecipeError(
            f"validation_plays: {e.args[0]} not in the embedded corpus; choose from {list(corpus.plays())}"
        ) from None
    genres = corpus.genres()
    if args.genres:
        unknown = sorted(set(args.genres) - set(genres))
        if unknown:
            raise RecipeError(f"genres: {unknown} are not genres of the embedded corpus; choose from {genres}")
        genres = sorted(set(args.genres))
        catalogue = corpus.plays()
        train_plays = [p for p in train_plays if catalogue[p] in genres]
        validation_plays = [p for p in validation_plays if catalogue[p] in genres]
        if not train_plays:
            raise RecipeError(f"genres: {genres} leave no training play once validation_plays are held out")
    return train_plays, validation_plays, genres


def _embedded(args: DataArguments, labelled: bool) -> DatasetDict:
    train_plays, validation_plays, genres = embedded_plays(args)
    if labelled:
        generate, kwargs = corpus.generate_passages, {"n_lines": args.passage_lines}
        features = Features({"text": Value("string"), "label": ClassLabel(names=genres), "play": Value("string")})
    else:
        generate, kwargs, features = corpus.generate_documents, {}, None
    splits = {"train": train_plays, "validation": validation_plays}
    return DatasetDict(
        {
            split: Dataset.from_generator(
                generate,
                gen_kwargs={"names": names, "version": corpus.version(), **kwargs},
                features=features,
                cache_dir=args.cache_dir,
                split=datasets.NamedSplit(split),
            )
            for split, names in splits.items()
            if names
        }
    )


def _local(args: DataArguments) -> tuple[DatasetDict, dict[str, list[str]]]:
    data_files = {"train": datafiles.expand("train_files", args.train_files)}
    if args.validation_files:
        data_files["validation"] = datafiles.expand("validation_files", args.validation_files)
    return read_files(args, data_files), data_files


def load_validation_files(args: DataArguments) -> DatasetDict:
    """{"validation"} of `validation_files` alone: text to score, whatever the training data was."""
    files = datafiles.expand("validation_files", args.validation_files)
    raw = read_files(args, {"validation": files})
    if args.text_column not in raw["validation"].column_names:
        raise RecipeError(f"text_column: `{args.text_column}` is not a column of validation_files; its columns are "
                          f"{raw['validation'].column_names}")  # fmt: skip
    if problem := datafiles.text_problem(raw["validation"], args.text_column, "validation_files", files):
        raise RecipeError(problem)
    return raw


def read_files(args: DataArguments, data_files: dict[str, list[str]]) -> DatasetDict:
    """Local files of one format (txt, json, jsonl, csv or parquet) as one split per key of `data_files`."""
    key = "train_files" if "train" in data_files else "validation_files"
    builder = builder_for(key, [f for fs in data_files.values() for f in fs])
    kwargs = {"sample_by": args.sample_by} if builder == "text" else {}
    try:
        return datasets.load_dataset(builder, data_files=data_files, cache_dir=args.cache_dir, **kwargs)
    except (ValueError, datasets.exceptions.DatasetGenerationError) as e:
        for split, files in data_files.items():
            if problem := datafiles.diagnose(f"{split}_files", files, builder):
                raise RecipeError(problem) from None
        cause = e.__cause__ or e
        if "column names don't match" in str(cause):  # files of several columns: read each alone to say which
            load = partial(datasets.load_dataset, builder, cache_dir=args.cache_dir, **kwargs)
            if problem := datafiles.columns_problem(data_files, lambda f: load(data_files=[f])["train"].column_names):
                raise RecipeError(problem) from None
        raise RecipeError(f"{key}: could not read the files as {builder} ({type(cause).__name__}: {cause}); check "
                          f"their format") from None  # fmt: skip


def builder_for(key: str, files: list[str]) -> str:
    """The datasets builder (text, json, csv, parquet) that reads `files`, all of one format."""
    exts = {os.path.splitext(f)[1].lower() for f in files}
    unknown = exts - set(BUILDERS)
    if unknown:
        raise RecipeError(f"{key}: cannot read {sorted(unknown)} files; use one of {sorted(BUILDERS)}")
    builders = {BUILDERS[e] for e in exts}
    if len(builders) > 1:
        raise RecipeError(f"{key}: mixes {sorted(exts)} files; give files of one format per recipe")
    return builders.pop()


def build_blocks(
    texts: DatasetDict, tokenizer: PreTrainedTokenizerBase, args: DataArguments, *, mlm: bool
) -> DatasetDict:
    """{"train", "validation"} datasets of `input_ids` blocks, each exactly `block_size` tokens; documents marked
    `[CLS] … [SEP]` for a masked LM (`mlm`), ended by the end-of-text token for a causal one."""
    out = {}
    for split, docs in texts.items():
        ids = tokenize(docs, tokenizer, args.text_column, mlm=mlm, num_proc=args.preprocessing_num_workers,
                       overwrite=args.overwrite_cache, offsets=mlm and args.whole_word_mask)  # fmt: skip
        blocks = group(ids, args.block_size, overwrite=args.overwrite_cache)
        total = int(pc.sum(pc.list_value_length(ids.data.column("input_ids"))).as_py() or 0)
        if len(blocks) == 0:
            raise RecipeError(
                f"block_size: {args.block_size} tokens is more than the whole {split} split ({total} tokens); "
                f"lower block_size or give more text"
            )
        blocks = first(blocks, args, split)
        logger.info(
            "%s: %d documents, %d tokens, %d blocks of %d", split, len(docs), total, len(blocks), args.block_size
        )
        out[split] = blocks
    return DatasetDict(out)


def first(dataset: Dataset, args: DataArguments, split: str, seed: int | None = None) -> Dataset:
    """The split limited to `max_train_samples` / `max_eval_samples`: its first N rows, or with `seed` a seeded
    sample of N (for labelled data, which often comes sorted by class)."""
    limit = args.max_train_samples if split == "train" else args.max_eval_samples
    if limit is None or limit >= len(dataset):
        return dataset
    return (dataset if seed is None else dataset.shuffle(seed=seed)).select(range(limit))


def separators(tokenizer: PreTrainedTokenizerBase, mlm: bool) -> tuple[bool, int | None]:
    """(let the tokenizer add [CLS]/[SEP], EOS id to append): how documents are marked before concatenation."""
    if mlm:
        return True, None
    if tokenizer.eos_token_id is None:
        raise RecipeError("the tokenizer has no eos_token to separate documents for clm; use a tokenizer that has one")
    return False, tokenizer.eos_token_id


def tokenize(
    docs: Dataset,
    tokenizer,
    text_column: str,
    *,
    mlm: bool,
    num_proc: int | None = None,
    overwrite: bool = False,
    offsets: bool = False,
) -> Dataset:
    """One row of token ids per non-empty document, separators included; with `offsets`, each token's character
    offsets too (OFFSETS)."""
    backend = tokenizer.backend_tokenizer
    backend.no_truncation()
    backend.no_padding()
    add_special, eos_id = separators(tokenizer, mlm)
    fingerprint = Hasher.hash([FORMAT, "tokenize", docs._fingerprint, backend.to_str(), text_column,
                               "mlm" if mlm else "clm", offsets])  # fmt: skip
    return docs.map(
        _tokenize_batch,
        batched=True,
        fn_kwargs={
            "backend": backend,
            "column": text_column,
            "add_special": add_special,
            "eos_id": eos_id,
            "offsets": offsets,
        },  # fmt: skip
        remove_columns=docs.column_names,
        features=_IDS_OFFSETS if offsets else _IDS,
        num_proc=num_proc,
        new_fingerprint=fingerprint,
        load_from_cache_file=not overwrite,
        desc=f"Tokenizing {docs.split or 'documents'}",
    )


def _tokenize_batch(batch, backend, column, add_special, eos_id, offsets=False):
    texts = [t for t in batch[column] if t and not t.isspace()]
    columns, lengths = encode(texts, backend, add_special, eos_id, offsets)
    return _ids_table(columns, lengths)


def encode(texts: list[str], backend, add_special: bool, eos_id: int | None, offsets: bool = False):
    """({column: flat values}, tokens per text) of `texts`: the ids, separators included, and with `offsets` each
    token's (start, end) in its text, flat. encode_batch_fast skips computing offsets, so it serves the rest."""
    encodings = (backend.encode_batch if offsets else backend.encode_batch_fast)(texts, add_special_tokens=add_special)
    ids = [e.ids for e in encodings]
    if eos_id is not None:
        for row in ids:
            row.append(eos_id)
    lengths = np.fromiter(map(len, ids), np.int32, len(ids))
    columns = {"input_ids": np.fromiter(chain.from_iterable(ids), np.int32)}
    if offsets:
        columns[OFFSETS] = np.fromiter(chain.from_iterable(map(_trimmed, texts, encodings)), np.int32)
    return columns, lengths


def _trimmed(text: str, encoding):
    """A text's token offsets with leading whitespace left out, as RoBERTa's `trim_offsets` has them: a byte-level
    BPE token carries the space before its word (`Ġworld` spans " world"), which would join every word to the one
    before it, since the whole-word collator starts a word where a token does not begin at the last one's end."""
    for start, end in encoding.offsets:
        while start < end and text[start].isspace():
            start += 1
        yield start
        yield end


def _ids_table(columns: dict[str, np.ndarray], lengths: np.ndarray) -> pa.Table:
    """An Arrow table of list columns built from flat values (WIDTH per token): much cheaper than letting datasets
    convert a list of lists."""
    table = {}
    for name, flat in columns.items():
        bounds = np.zeros(len(lengths) + 1, dtype=np.int32)
        np.cumsum(lengths * WIDTH[name], out=bounds[1:])
        table[name] = pa.ListArray.from_arrays(pa.array(bounds), pa.array(flat, type=pa.int32()))
    return pa.table(table)


def group(ids: Dataset, block_size: int, overwrite: bool = False) -> Dataset:
    """Concatenate every document's ids and cut into blocks of `block_size`; only the final remainder is lost.

    Each map batch emits the blocks that *start* inside it, reading the few tokens a straddling block needs
    from the documents after it, so no remainder is dropped at batch boundaries and memory stays bounded.
    """
    lengths = pc.list_value_length(ids.data.column("input_ids")).to_numpy(zero_copy_only=False)
    starts = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    fingerprint = Hasher.hash([FORMAT, "group", ids._fingerprint, block_size])
    features = _IDS_OFFSETS if OFFSETS in ids.column_names else _IDS
    return (
        ids.with_format("arrow")
        .map(
            _group_batch,
            batched=True,
            batch_size=1000,
            with_indices=True,
            fn_kwargs={"starts": starts, "block_size": block_size, "source": ids},
            features=features,
            new_fingerprint=fingerprint,
            load_from_cache_file=not overwrite,
            desc=f"Grouping into blocks of {block_size}",
        )
        .with_format(None)
    )


def _flat(column) -> np.ndarray:
    return pc.list_flatten(column).to_numpy(zero_copy_only=False)


def _group_batch(batch, indices, starts, block_size, source):
    first, stop = indices[0], indices[-1] + 1
    begin, end = int(starts[first]), int(starts[stop])
    n_blocks = int(starts[-1]) // block_size
    k0, k1 = -(-begin // block_size), min(-(-end // block_size), n_blocks)  # blocks that start in [begin, end)
    names = batch.column_names
    if k1 <= k0:
        return _ids_table({name: np.zeros(0, np.int32) for name in names}, np.zeros(0, np.int32))
    need = k1 * block_size
    after = None
    if need > end:  # the last block runs into the documents after this batch
        upto = int(np.searchsorted(starts, need, side="left"))
        after = source.with_format("arrow")[stop:upto]
    lo, count = k0 * block_size - begin, (k1 - k0) * block_size
    columns = {}
    for name in names:  # the ids, and the offsets (WIDTH numbers per token) when there are
        tokens = _flat(batch[name])
        if after is not None:
            tokens = np.concatenate([tokens, _flat(after[name])])
        w = WIDTH[name]
        columns[name] = tokens[lo * w : (lo + count) * w]
    return _ids_table(columns, np.full(k1 - k0, block_size, np.int32))
