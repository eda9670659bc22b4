"""Samples from a model: a causal LM completes prompts, a masked LM fills a [MASK], through transformers' pipelines.

Used at each evaluation of a run (callbacks.Samples) and by `scripts/generate.py` on a finished checkpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, pipeline

from . import models
from . import tokenizer as tokenizers
from .recipe import RecipeError


@contextlib.contextmanager
def _seeded(model: PreTrainedModel, seed: int) -> Iterator[None]:
    """Sample at `seed` in eval mode, then give back the caller's RNG state and mode: drawing samples during a
    run must not change what the run draws next (dropout, masks), or a resumed run would differ."""
    devices = [model.device] if model.device.type == "cuda" else []
    training = model.training
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(seed)
        model.eval()
        try:
            yield
        finally:
            model.train(training)


def complete(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    *,
    max_new_tokens: int = 30,
    strategy: str = "top_k",
    top_k: int = 50,
    top_p: float = 1.0,
    temperature: float = 1.0,
    num_return_sequences: int = 1,
    seed: int = 42,
) -> list[dict]:
    """[{"prompt", "completions": [text, ...]}] per prompt: greedy decoding, or sampling among the top_k tokens
    (and the top_p probability mass) at `temperature`, seeded."""
    generator = pipeline("text-generation", model=model, tokenizer=tokenizer, device=model.device)
    greedy = strategy == "greedy"
    kwargs = {"do_sample": False} if greedy else {"do_sample": True, "top_k": top_k, "top_p": top_p}
    if not greedy:
        kwargs["temperature"] = temperature
    out = []
    with _seeded(model, seed):
        for prompt in prompts:
            results = generator(
                prompt,
                max_new_tokens=max_new_tokens,
                num_return_sequences=1 if greedy else num_return_sequences,
                return_full_text=False,
                pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
                **kwargs,
            )
            out.append({"prompt": prompt, "completions": [r["generated_text"] for r in results]})
    return out


def fill_mask(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: list[str], top_k: int = 5
) -> list[dict]:
    """[{"text", "candidates": [{"token", "score"}, ...]}] per text: the top_k fillers of its mask token."""
    filler = pipeline("fill-mask", model=model, tokenizer=tokenizer, device=model.device, top_k=top_k)
    out = []
    with _seeded(model, 0):  # deterministic anyway; eval mode and the caller's RNG are what matter here
        for text in texts:
            candidates = [{"token": c["token_str"], "score": round(float(c["score"]), 4)} for c in filler(text)]
            out.append({"text": text, "candidates": candidates})
    return out


def mask_problem(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> str | None:
    """Why `texts` cannot be filled by this tokenizer's model (each needs exactly one mask token), or None."""
    mask = tokenizer.mask_token
    if mask is None:
        return "the tokenizer has no mask token"
    for text in texts:
        if text.count(mask) != 1:
            return f"{text!r} has {text.count(mask)} {mask} tokens; write exactly one {mask} where a word is missing"
    return None


def describe(records: list[dict]) -> str:
    """Samples as lines a person reads in the console or a text logger."""
    lines = []
    for r in records:
        if "completions" in r:
            for c in r["completions"]:
                lines.append(f"{r['prompt']!r} → {c!r}")
        else:
            fills = ", ".join(f"{c['token']} ({c['score']:.2f})" for c in r["candidates"])
            lines.append(f"{r['text']!r} → {fills}")
    return "\n".join(lines)


def load(checkpoint: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, str]:
    """(model, tokenizer, objective) of an mlm or clm checkpoint folder (or Hub id); RecipeError otherwise."""
    model, objective = models.load_checkpoint(checkpoint)
    return model, tokenizers.load(checkpoint, key="CHECKPOINT"), objective


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
        model, tokenizer, objective = load(args.checkpoint)
        if objective == "mlm":
            if problem := mask_problem(tokenizer, args.prompts):
                raise RecipeError(f"prompts: {problem}")
            records = fill_mask(model, tokenizer, args.prompts, args.top_k or 5)
        else:
            records = complete(
                model, tokenizer, args.prompts, max_new_tokens=args.max_new_tokens, strategy=args.strategy,
                top_k=args.top_k or 50, top_p=args.top_p, temperature=args.temperature,
                num_return_sequences=args.num_return_sequences, seed=args.seed,
            )  # fmt: skip
    except RecipeError as e:
        print(f"error: generate.py cannot run:\n{e}", file=sys.stderr)
        return 2
    print("\n".join(json.dumps(r, ensure_ascii=False) for r in records) if args.json else describe(records))
    return 0
