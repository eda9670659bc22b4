"""`scripts/generate.py CHECKPOINT "prompt" ...`: a causal checkpoint completes prompts, a masked one fills the mask
token of sentences, with the same code as the samples of a run."""

from __future__ import annotations

import argparse
import json
import sys

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from . import models, samples
from . import tokenizer as tokenizers
from .recipe import RecipeError
from .tasks import Task


def load(checkpoint: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, Task]:
    """(model, tokenizer, task) of an mlm or clm checkpoint folder (or Hub id); RecipeError otherwise."""
    model, task = models.load_checkpoint(checkpoint)
    return model, tokenizers.load(checkpoint, key="CHECKPOINT"), task


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="generate.py",
        description="Complete prompts with a clm checkpoint, or fill the mask token of sentences with an mlm one.",
    )
    parser.add_argument("checkpoint", help="A run's output_dir, one of its checkpoint-N folders, or a Hub id.")
    parser.add_argument("prompts", nargs="+", help="clm: texts to continue; mlm: sentences with one [MASK] each.")
    parser.add_argument("--max_new_tokens", type=int, default=50, help="clm: tokens generated per completion.")
    parser.add_argument("--strategy", choices=("top_k", "greedy"), default="top_k", help="clm: sample or decode.")
    parser.add_argument("--top_k", type=int, help="clm: tokens sampled among (default 50); mlm: candidates (5).")
    parser.add_argument("--top_p", type=float, default=1.0, help="clm: nucleus, the probability mass kept.")
    parser.add_argument("--temperature", type=float, default=1.0, help="clm: softmax temperature.")
    parser.add_argument("--num_return_sequences", type=int, default=1, help="clm: completions per prompt.")
    parser.add_argument("--seed", type=int, default=42, help="clm: seed of the sampling.")
    parser.add_argument("--json", action="store_true", help="Print the records as JSON lines instead of text.")
    return parser


def main(argv: list[str] | None = None) -> int:
    """`generate.py CHECKPOINT PROMPT [PROMPT ...] [options]`: exit 2 with one message for bad input."""
    args = build_parser().parse_args(argv)
    try:
        problems = [f"--{k}: must be at least 1" for k in ("max_new_tokens", "num_return_sequences", "top_k")
                    if (getattr(args, k) or 1) < 1]  # fmt: skip
        if args.temperature <= 0 or not 0 < args.top_p <= 1:
            problems.append(
                "--temperature must be above 0 and --top_p in (0, 1]; for no sampling use --strategy greedy"
            )
        if problems:
            raise RecipeError(problems)
        model, tokenizer, task = load(args.checkpoint)
        if task.check_samples and (problem := task.check_samples(tokenizer, args.prompts)):
            raise RecipeError(f"prompts: {problem}")
        options = argparse.Namespace(
            fill_mask_candidates=args.top_k or 5, sample_max_new_tokens=args.max_new_tokens,
            sample_strategy=args.strategy, sample_top_k=args.top_k or 50, sample_top_p=args.top_p,
            sample_temperature=args.temperature, num_return_sequences=args.num_return_sequences,
        )  # fmt: skip
        records = task.draw_samples(model, tokenizer, args.prompts, options, args.seed)
    except RecipeError as e:
        print(f"error: generate.py cannot run:\n{e}", file=sys.stderr)
        return 2
    print("\n".join(json.dumps(r, ensure_ascii=False) for r in records) if args.json else samples.describe(records))
    return 0
