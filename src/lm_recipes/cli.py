"""Command line: `train.py RECIPE.yaml [--key value ...]`, under `python` or `accelerate launch`."""

from __future__ import annotations

import logging
import sys

import datasets
import transformers

from . import recipe as recipes
from . import training

USAGE = "usage: train.py RECIPE.yaml [--key value ...]   (train.py RECIPE.yaml --help lists every key)"


def setup_logging(args: transformers.TrainingArguments) -> None:
    """INFO on the main process, warnings only on the others, for ours and the libraries' loggers alike."""
    level = args.get_process_log_level()
    if level < 0:  # log_level "passive": the main process says what it does, the others only warn
        level = logging.INFO if args.should_log else logging.WARNING
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", level=level)
    logging.getLogger("lm_recipes").setLevel(level)
    transformers.utils.logging.set_verbosity(level)
    datasets.utils.logging.set_verbosity(max(level, logging.WARNING))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "-h" in argv or "--help" in argv:
        print(USAGE)
        recipes.print_help()
        return 0
    try:
        recipe = recipes.load(argv)
        setup_logging(recipe.training)
        training.run(recipe)
    except recipes.RecipeError as e:
        print(f"error: the recipe cannot run:\n{e}\n{USAGE}", file=sys.stderr)
        return 2
    return 0
