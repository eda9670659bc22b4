"""The data half of a run: the texts, tokenizer and datasets of a recipe, through its task."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from datasets import DatasetDict
from transformers import PreTrainedTokenizerBase, set_seed

from . import data, labels, prepared_data, streaming
from . import tokenizer as tokenizers
from .recipe import Recipe, RecipeError
from .tasks import TASKS

logger = logging.getLogger(__name__)


@dataclass
class Prepared:
    """What the data half of a run made: its tokenizer, its datasets (blocks, or examples for a classifier) and a
    classifier's class names."""

    tokenizer: PreTrainedTokenizerBase
    datasets: DatasetDict
    labels: list[str] | None = None
    stream: streaming.Streamed | None = None  # a streamed run's documents, before they are cut into blocks


def prepare(recipe: Recipe) -> Prepared:
    """Texts, tokenizer and datasets for the recipe: loaded from its prepared folder (scripts/prepare.py) when there is
    one, else made here. Writes nothing but the datasets and tokenizer caches; raises RecipeError for data that does
    not fit the recipe. Several processes need the data prepared beforehand (a streamed run, its tokenizer only):
    none of them then waits on another's tokenizing."""
    args, d = recipe.training, recipe.data
    set_seed(args.seed)  # first: the seed decides the carved validation split and then the model's initial weights
    found = prepared_data.find(recipe)
    if found:
        folder, manifest = found
        tokenizer, splits, names = prepared_data.load(folder, manifest)
        logger.info("Loaded the prepared tokenizer and data from %s", folder)
        for split in list(splits):
            splits[split] = data.first(splits[split], d, split)
        prepared = Prepared(tokenizer, DatasetDict(splits), names)
    elif args.world_size > 1 and not d.streaming:
        other = prepared_data.nearest(recipe)
        raise RecipeError(
            f"{args.world_size} processes would wait while one tokenizes: prepare the data once first, with "
            f"`python scripts/prepare.py RECIPE.yaml` and the same flags (looked in {prepared_data.location(recipe)}"
            + (f"; the data prepared last differs: {other})" if other else ")")
        )
    else:
        if other := prepared_data.nearest(recipe):
            logger.info("No prepared data for this recipe, so it is prepared here; the data prepared last differs: %s",
                        other)  # fmt: skip
        with args.main_process_first(desc="preparing data"):
            prepared = make(recipe)
    if d.streaming:
        mlm = recipe.model.objective == "mlm"
        streamed = prepared.stream or streaming.load(d, documents=False)
        prepared.datasets["train"] = streaming.blocks(streamed, prepared.tokenizer, d, mlm=mlm,
                                                      rank=args.process_index, world=args.world_size)  # fmt: skip
    w = recipe.watch
    task = TASKS[recipe.model.objective]
    if w.samples and task.check_samples and (problem := task.check_samples(prepared.tokenizer, w.samples)):
        raise RecipeError(f"samples: {problem}")
    if "validation" not in prepared.datasets and args.eval_strategy != "no":
        raise RecipeError(
            "eval_strategy asks for evaluation but there is no validation data; "
            "set validation_files, validation_split_percentage > 0, or eval_strategy: 'no'"
        )
    return prepared


def make(recipe: Recipe) -> Prepared:
    """The tokenizer (trained, or given) and datasets of a recipe, made from its text. A streamed recipe's training
    split stays a stream of documents (`stream`); its tokenizer learns from the head of it."""
    args, d, m = recipe.training, recipe.data, recipe.model
    task = TASKS[m.objective]
    stream = None
    if d.streaming:
        stream = streaming.load(d)
        texts = DatasetDict({"train": stream.head} | ({"validation": stream.validation} if stream.validation else {}))
    else:
        texts = data.load_texts(d, args.seed, task.labelled)
    names = None
    if task.labelled:
        texts, names = labels.encode_labels(texts, d.label_column)
    tokenizer = tokenizers.build(recipe.tokenizer, m, texts["train"], d.text_column, m.max_position_embeddings,
                                 d.cache_dir)  # fmt: skip
    given = m.model_name_or_path or recipe.tokenizer.tokenizer_name  # else the tokenizer is ours, trained
    if given and task.tokenizer_problem and (problem := task.tokenizer_problem(tokenizer)):
        key = "model_name_or_path" if m.model_name_or_path else "tokenizer_name"
        fix = (
            "use a tokenizer that has one, or leave tokenizer_name out to train one"
            if key == "tokenizer_name"
            else "add it (tokenizer.add_special_tokens, model.resize_token_embeddings) and save both again"
        )
        raise RecipeError(f"{key}: the tokenizer of {given} {problem}; {fix}")
    if task.labelled and tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise RecipeError("the tokenizer has neither a padding nor an end-of-text token to pad with")
        logger.info("The tokenizer has no padding token: padding with %s, as GPT-2 classifiers do",
                    tokenizer.eos_token)  # fmt: skip
        tokenizer.pad_token = tokenizer.eos_token
    if d.streaming:
        texts = DatasetDict({k: v for k, v in texts.items() if k == "validation"})
    return Prepared(tokenizer, task.build_datasets(texts, tokenizer, d, args.seed), names, stream)
