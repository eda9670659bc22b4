"""Classification data: labels as class ids of one `ClassLabel`, and each text its own example of at most
`block_size` tokens."""

from __future__ import annotations

import logging

import numpy as np
from datasets import ClassLabel, DatasetDict
from datasets.fingerprint import Hasher
from transformers import PreTrainedTokenizerBase

from . import data
from .arguments import DataArguments
from .recipe import RecipeError

logger = logging.getLogger(__name__)


def encode_labels(texts: DatasetDict, column: str) -> tuple[DatasetDict, list[str]]:
    """The label column as class ids of one `ClassLabel` shared by every split, and the class names.

    Names come from a `ClassLabel` column as they are, from string labels sorted, and ids 0..n-1 name themselves.
    """
    train = texts["train"]
    feature = train.features[column]
    if isinstance(feature, ClassLabel):
        names = list(feature.names)
    else:
        values = train.unique(column)
        if None in values:
            raise RecipeError(f"label_column: some training rows have no `{column}`; label them or leave them out")
        if values and all(isinstance(v, str) for v in values):
            names = sorted(values)
        elif values and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
            names = [str(i) for i in range(max(values) + 1)]
        else:
            raise RecipeError(
                f"label_column: `{column}` must hold class names (strings) or class ids (integers from 0); "
                f"it holds {sorted(map(repr, values))[:5]}"
            )
    if len(names) < 2:
        raise RecipeError(f"label_column: `{column}` has one class ({names}); a classifier needs two or more")
    label = ClassLabel(names=names)
    out = {}
    for split, ds in texts.items():
        if ds.features[column] == label:
            out[split] = ds
            continue
        if not isinstance(ds.features[column], ClassLabel):
            found = {str(v) for v in ds.unique(column)}
            missing = sorted(found - set(names))
            if missing:
                raise RecipeError(
                    f"label_column: the {split} split has labels the training split lacks ({missing[:5]}); "
                    f"every class must appear in training"
                )
        out[split] = ds.cast_column(column, label)
    return DatasetDict(out), names


def build_examples(
    texts: DatasetDict, tokenizer: PreTrainedTokenizerBase, args: DataArguments, seed: int
) -> DatasetDict:
    """Classification: each text tokenized on its own (at most `block_size` tokens) with its label in `labels`."""
    out = {}
    for split, docs in texts.items():
        fingerprint = Hasher.hash(
            [data.FORMAT, "classify", docs._fingerprint, tokenizer.backend_tokenizer.to_str(), args.text_column,
             args.label_column, args.block_size]
        )  # fmt: skip
        examples = docs.map(
            _encode_batch,
            batched=True,
            fn_kwargs={"tokenizer": tokenizer, "args": args},
            remove_columns=docs.column_names,
            num_proc=args.preprocessing_num_workers,
            new_fingerprint=fingerprint,
            load_from_cache_file=not args.overwrite_cache,
            desc=f"Tokenizing {split}",
        )
        examples = data.first(examples, args, split, seed)  # seeded: the genre task comes sorted by play
        counts = np.bincount(examples["labels"], minlength=getattr(docs.features[args.label_column], "num_classes", 0))
        logger.info("%s: %d examples, per class %s", split, len(examples), counts.tolist())
        out[split] = examples
    return DatasetDict(out)


def _encode_batch(batch, tokenizer, args):
    texts = [t or "" for t in batch[args.text_column]]
    encoded = tokenizer(texts, truncation=True, max_length=args.block_size)
    encoded["labels"] = batch[args.label_column]
    return encoded
