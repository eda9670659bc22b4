"""Streaming (`streaming: true`): the training text read as a `datasets` stream, tokenized and cut into blocks as
training goes, so no corpus is ever held or converted whole.

Each process reads its own part of the stream (`split_dataset_by_node`: whole files when their number is a multiple
of the processes, else every N-th block). The validation set is finite and fixed: the validation split (or
validation_files, or the embedded corpus's held-out plays), or the first `validation_documents` of the training
stream, which training then skips. The position in the stream is the stream's own `state_dict()`, recorded as each
micro-batch is formed and saved in every checkpoint for the last micro-batch trained, so a rerun continues at the
next unseen block: earlier files are not opened, the current one is read (not tokenized) up to the saved document,
and only the current group of documents is tokenized again.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

import datasets
from datasets import Dataset, IterableDataset
from datasets.distributed import split_dataset_by_node

from . import corpus, data, datafiles
from .arguments import DataArguments
from .recipe import RecipeError

logger = logging.getLogger(__name__)

POSITION_FILE = "stream_position-{rank}.json"
GROUP_DOCUMENTS = 1000  # documents tokenized and cut into blocks together; each group's last partial block is dropped


class StreamError(Exception):
    """A stream that fails mid-run: a file gone or unreadable. The newest checkpoint stays the resume point."""


def _open(args: DataArguments, split: str) -> IterableDataset | None:
    """Documents of `split` as a stream (None if the source has no such split)."""
    if args.uses_embedded_corpus():
        train, validation, _ = data.embedded_plays(args)
        names = train if split == "train" else validation
        # One shard per play: split_dataset_by_node hands whole plays to each process.
        return IterableDataset.from_generator(corpus.generate_documents,
                                              gen_kwargs={"names": names, "version": corpus.version()})  # fmt: skip
    if args.dataset_name:
        streams = data.load_hub(args, streaming=True)
        return streams.get(split)
    files = {"train": args.train_files, "validation": args.validation_files}[split]
    if not files:
        return None
    files = datafiles.expand(f"{split}_files", files)
    builder = data.builder_for(f"{split}_files", files)
    kwargs = {"sample_by": args.sample_by} if builder == "text" else {}
    return datasets.load_dataset(builder, data_files={split: files}, split=split, streaming=True, **kwargs)


@dataclass
class Streamed:
    """The documents of a streamed run: the training stream (its first `held` documents are the validation set),
    the validation documents, and the documents a tokenizer is trained on."""

    train: IterableDataset
    held: int
    validation: Dataset | None
    head: Dataset | None


def load(args: DataArguments, documents: bool = True) -> Streamed:
    """The streams of a recipe; with `documents`, the validation and tokenizer documents read from them (a run that
    loads its prepared folder needs the training stream only)."""
    train = _open(args, "train")
    if train is None:
        raise RecipeError(f"dataset_name: `{args.dataset_name}` has no train split to stream; name a dataset with one")
    if train.column_names is not None and args.text_column not in train.column_names:
        raise RecipeError(f"text_column: `{args.text_column}` is not a column of the training stream; its columns "
                          f"are {train.column_names}")  # fmt: skip
    validation, held = None, 0
    if args.uses_embedded_corpus():
        if documents:
            whole = replace(args, streaming=False, validation_split_percentage=0)
            validation = data.load_texts(whole, 0).get("validation")
            if validation is not None and args.validation_documents:
                validation = validation.select(range(min(args.validation_documents, len(validation))))
    else:
        stream = _open(args, "validation")
        if stream is None and args.validation_documents:
            stream, held = train, args.validation_documents
        if stream is not None and documents:
            validation = _materialize(stream, args, args.validation_documents, "validation")
    head = _materialize(train, args, args.tokenizer_documents, "tokenizer") if documents else None
    return Streamed(train, held, validation, head)


def _materialize(stream: IterableDataset, args: DataArguments, limit: int | None, what: str) -> Dataset:
    """The first `limit` documents (all with None) of a stream, as an in-memory Dataset of the text column."""
    head = stream if limit is None else stream.take(limit)
    values = [row.get(args.text_column) for row in reading(head)]
    if wrong := next((v for v in values if v is not None and not isinstance(v, str)), None):
        raise RecipeError(f"text_column: `{args.text_column}` of the stream holds {type(wrong).__name__} values such "
                          f"as {wrong!r}, not text; name the column that holds the text")  # fmt: skip
    texts = [t for t in values if t and not t.isspace()]
    if not texts:
        raise RecipeError(f"streaming: the stream gives no {what} documents; check the data")
    return Dataset.from_dict({args.text_column: texts})


def documents(streamed: Streamed, column: str, *, rank: int, world: int) -> IterableDataset:
    """This process's part of the training documents: split by node, without the held-out head (the first `held`
    documents of the whole stream). Split by files (their number a multiple of the processes), the head opens
    process 0's part, which skips it; split by examples (each process every world-th document), the whole stream
    skips it before it is divided."""
    stream, held = streamed.train.select_columns([column]), streamed.held
    by_files = stream.n_shards % world == 0
    if held and not by_files:
        stream = stream.skip(held)
    mine = split_dataset_by_node(stream, rank=rank, world_size=world)
    if held and by_files:
        if world > 1:
            first = split_dataset_by_node(stream, rank=0, world_size=world)
            if sum(1 for _ in reading(first.take(held))) < held:
                raise RecipeError(
                    f"validation_documents: {held} documents reach past the first {stream.n_shards // world} of the "
                    f"{stream.n_shards} files, which process 0 of {world} reads; hold out fewer, or give "
                    f"validation_files"
                )
        mine = mine.skip(held) if rank == 0 else mine
    return mine


def blocks(streamed: Streamed, tokenizer, args: DataArguments, *, mlm: bool, rank: int, world: int) -> IterableDataset:
    """This process's stream of {"input_ids"} blocks of `block_size` tokens (with their offsets for whole-word
    masking), repeated without end (max_steps stops it), so that the Trainer never ends an epoch and the saved
    position always applies."""
    mine = documents(streamed, args.text_column, rank=rank, world=world)
    add_special, eos_id = data.separators(tokenizer, mlm)
    backend = tokenizer.backend_tokenizer
    backend.no_truncation()
    backend.no_padding()
    return mine.map(
        _blocks_of,
        batched=True,
        batch_size=GROUP_DOCUMENTS,
        remove_columns=[args.text_column],
        fn_kwargs={"backend": backend, "column": args.text_column, "add_special": add_special, "eos_id": eos_id,
                   "block_size": args.block_size, "offsets": mlm and args.whole_word_mask},
    ).repeat(None)  # fmt: skip


def _blocks_of(batch, backend, column, add_special, eos_id, block_size, offsets=False):
    texts = [t for t in batch[column] if isinstance(t, str) and t and not t.isspace()]
    columns, _ = data.encode(texts, backend, add_special, eos_id, offsets)
    n = len(columns["input_ids"]) // block_size
    width = {name: block_size * data.WIDTH[name] for name in columns}
    return {name: flat[: n * width[name]].reshape(n, width[name]).tolist() for name, flat in columns.items()}


def reading(stream: IterableDataset):
    """Iterate a stream, turning a failed read into a StreamError that names the file where it can."""
    try:
        yield from stream
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise StreamError(describe(e)) from None


def raised_reading(error: BaseException) -> bool:
    """Whether `error` came from reading the stream (its traceback passes through datasets), not from elsewhere."""
    tb = error.__traceback__
    while tb is not None:
        if f"{os.sep}datasets{os.sep}" in tb.tb_frame.f_code.co_filename:
            return True
        tb = tb.tb_next
    return False


def describe(error: BaseException) -> str:
    where = getattr(error, "filename", None)
    what = f"{where}: " if where and str(where) not in str(error) else ""
    return f"streaming: could not read the data ({what}{type(error).__name__}: {error})"


class Position:
    """The DataLoader's collate_fn around the task's collator: records the stream's `state_dict()` as each
    micro-batch is formed (one process, no workers: the state is exactly after that batch's blocks). The Trainer
    and accelerate read ahead, so the position saved for a checkpoint is the one recorded for its last micro-batch
    trained, looked up by number."""

    KEEP = 256  # micro-batches of states kept: more than any read-ahead

    def __init__(self, dataset: IterableDataset, collate):
        self.dataset, self.collate = dataset, collate
        self.formed = 0
        self.states: dict[int, dict] = {}

    def __call__(self, rows):
        self.formed += 1
        self.states[self.formed] = self.dataset.state_dict()
        self.states.pop(self.formed - self.KEEP, None)
        return self.collate(rows)

    def restart(self, micro_batch: int, state: dict | None) -> None:
        self.formed = micro_batch
        self.states = {micro_batch: state} if state is not None else {}
        if state is not None:
            self.dataset.load_state_dict(state)

    def after(self, micro_batch: int) -> dict:
        if micro_batch not in self.states:
            raise RuntimeError(f"no stream position recorded for micro-batch {micro_batch}: {sorted(self.states)}")
        return self.states[micro_batch]


def save_position(folder: Path, rank: int, world: int, micro_batch: int, state: dict) -> None:
    record = {"processes": world, "micro_batch": micro_batch, "state": state}
    (Path(folder) / POSITION_FILE.format(rank=rank)).write_text(json.dumps(record))


def read_position(folder: str | Path, rank: int, world: int) -> dict:
    """This process's saved position in a checkpoint of a streamed run; RecipeError for a checkpoint that has none
    or was saved by another number of processes (each had its own part of the stream)."""
    path = Path(folder) / POSITION_FILE.format(rank=rank)
    saved = sorted(Path(folder).glob(POSITION_FILE.format(rank="*")))
    if not path.is_file():
        if not saved:
            raise RecipeError(f"streaming: {folder} holds no position in the stream (it was not saved by a streamed "
                              f"run); resume it with streaming: false, or start over with resume_from_checkpoint: "
                              f"false")  # fmt: skip
        raise RecipeError(f"streaming: {folder} was saved by {len(saved)} processes, each at its own place in the "
                          f"stream; resume it on {len(saved)} processes")  # fmt: skip
    record = json.loads(path.read_text())
    if record["processes"] != world:
        raise RecipeError(f"streaming: {folder} was saved by {record['processes']} processes, each at its own place "
                          f"in the stream; resume it on {record['processes']} processes")  # fmt: skip
    return record
