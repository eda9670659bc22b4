"""Command line: `train.py RECIPE.yaml [--key value ...]`, under `python` or `accelerate launch`."""

from __future__ import annotations

import logging
import os
import sys

import datasets
import transformers
from accelerate import PartialState

from . import callbacks, checkpoints, hub, preemption, preparation, prepared_data, streaming, training
from . import recipe as recipes

USAGE = (
    "usage: train.py RECIPE.yaml [--key value ...] [--plan]   (--help lists every key; --plan prints the run's "
    "numbers and draws its learning-rate schedule without training)"
)


def setup_logging(args: transformers.TrainingArguments) -> None:
    """Our progress at INFO on the main process and warnings only on the others; the libraries keep their own
    level unless the recipe sets `log_level` (then both follow it)."""
    explicit = args.log_level != "passive"
    level = args.get_process_log_level() if explicit else logging.INFO if args.should_log else logging.WARNING
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("lm_recipes").setLevel(level)
    if explicit:
        transformers.utils.logging.set_verbosity(level)
        datasets.utils.logging.set_verbosity(level)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "-h" in argv or "--help" in argv:
        print(USAGE)
        try:
            recipes.print_help(argv)
        except recipes.RecipeError as e:
            print(f"error: the recipe cannot run:\n{e}", file=sys.stderr)
            return 2
        return 0
    plan = "--plan" in argv
    argv = [a for a in argv if a != "--plan"]
    preemption.heed_ctrl_c()
    try:
        recipe = recipes.load(argv)
        setup_logging(recipe.training)
        if plan:
            print("\n".join(training.show_plan(recipe)))
        else:
            training.run(recipe)
    except recipes.RecipeError as e:
        print(f"error: the recipe cannot run:\n{e}\n{USAGE}", file=sys.stderr)
        return 2
    except streaming.StreamError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except hub.PushError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except callbacks.Diverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 4
    except checkpoints.SaveError as e:
        print(f"error: {e}", file=sys.stderr)
        return 5
    except preemption.Preempted as e:
        if PartialState().is_local_main_process:
            print(e, file=sys.stderr)
        return e.status
    except KeyboardInterrupt:  # Ctrl-C outside training (during it, preemption.Preemption saves and stops)
        print("interrupted outside training: nothing more was saved; rerun the same command to go on from the newest "
              "complete checkpoint, if any", file=sys.stderr)  # fmt: skip
        return 130
    finally:
        # Leave the process group cleanly: a process that exits while its peers still tear down can abort.
        if PartialState._shared_state:
            PartialState().destroy_process_group()
    return 0


PREPARE_USAGE = "usage: prepare.py RECIPE.yaml [--key value ...]   (the same recipe and flags as train.py)"


def prepare_main(argv: list[str] | None = None) -> int:
    """`prepare.py RECIPE.yaml [--key value ...]`: the recipe's tokenizer and blocks, made once with every core and
    written to its prepared folder, where every training run of the same recipe loads them."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if "-h" in argv or "--help" in argv:
        print(PREPARE_USAGE)
        return 0
    preemption.heed_ctrl_c()
    try:
        recipe = recipes.load(argv)
        setup_logging(recipe.training)
        if recipe.training.world_size > 1:
            raise recipes.RecipeError("prepare.py runs once, in one process: `python scripts/prepare.py RECIPE.yaml`")
        d = recipe.data
        if d.preprocessing_num_workers is None:
            d.preprocessing_num_workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        limits = d.max_train_samples, d.max_eval_samples
        d.max_train_samples = d.max_eval_samples = None  # the whole data: a run's limits apply when it loads
        made = preparation.make(recipe)
        d.max_train_samples, d.max_eval_samples = limits
        splits = {split: dataset for split, dataset in made.datasets.items()}
        folder = prepared_data.save(recipe, made.tokenizer, splits, made.labels)
    except recipes.RecipeError as e:
        print(f"error: the recipe cannot be prepared:\n{e}\n{PREPARE_USAGE}", file=sys.stderr)
        return 2
    except streaming.StreamError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: nothing was prepared (the next prepare.py removes a partial folder)", file=sys.stderr)
        return 130
    counts = ", ".join(f"{split} {len(dataset):,} rows" for split, dataset in splits.items())
    streamed = " (the training text streams as it trains)" if d.streaming else ""
    print(f"prepared: {folder}\n  tokenizer ({len(made.tokenizer):,} tokens), {counts}{streamed}\n"
          f"  training with the same recipe and flags loads it from there, on any number of processes")  # fmt: skip
    return 0
