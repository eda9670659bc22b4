"""Samples from a model: a causal LM completes prompts, a masked LM fills a [MASK], through transformers' pipelines.

Used at each evaluation of a run (callbacks.Samples, through its task) and by `scripts/generate.py` (generation.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, pipeline


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


def mask_problem(mask: str | None, texts: list[str]) -> str | None:
    """Why `texts` cannot be filled by a model whose mask token is `mask` (each needs exactly one), or None."""
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
