"""The data half of a run: the texts, tokenizer and datasets of a recipe, through its task."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from datasets import DatasetDict
from transformers import PreTrainedTokenizerBase, set_seed

from . import data, labels
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


def prepare(recipe: Recipe) -> Prepared:
    """Texts, tokenizer and datasets for the recipe. Writes nothing but the datasets and tokenizer caches; raises
    RecipeError for data that does not fit the recipe. Under several processes only the main one tokenizes; the
    others wait, then load its results from the cache."""
    args, d, m = recipe.training, recipe.data, recipe.model
    task = TASKS[m.objective]
    set_seed(args.seed)  # first: the seed decides the carved validation split and then the model's initial weights
    with args.main_process_first(desc="preparing data"):
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
        datasets = task.build_datasets(texts, tokenizer, d, args.seed)
    w = recipe.watch
    if w.samples and task.check_samples and (problem := task.check_samples(tokenizer, w.samples)):
        raise RecipeError(f"samples: {problem}")
    if "validation" not in datasets and args.eval_strategy != "no":
        raise RecipeError(
            "eval_strategy asks for evaluation but there is no validation data; "
            "set validation_files, validation_split_percentage > 0, or eval_strategy: 'no'"
        )
    return Prepared(tokenizer, datasets, names)
