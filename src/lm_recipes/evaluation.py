"""Evaluation: the loss and perplexity of a trained MLM or CLM checkpoint on held-out text (`scripts/score.py`).

CLM: sliding-window perplexity over the validation blocks joined into one token stream, as in the transformers guide
"Perplexity of fixed-length models"; with stride == block_size it scores the tokens the Trainer's eval_loss does. MLM:
the masked-token loss at a fixed masking seed, averaged over batches as `Trainer.evaluate` averages it. The data keys
default to the run's own recipe.yaml, so `score.py outputs/clm` scores exactly the run's validation blocks.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
import yaml
from datasets import Dataset, DatasetDict
from transformers import HfArgumentParser, PreTrainedModel, PreTrainedTokenizerBase

from . import data, models
from . import tokenizer as tokenizers
from .arguments import DataArguments
from .recipe import Parser, RecipeError, block_size_problem, closest
from .tasks import Task, masking_collator, perplexity

USAGE = "score.py CHECKPOINT [--key value ...]"
DESCRIPTION = (
    "Score an mlm or clm checkpoint on held-out text. Prints JSON (checkpoint, objective, split, data, recipe, loss, "
    "perplexity, accuracy, tokens, blocks, block_size, loss_averaging; clm adds stride and windows, mlm adds seed, "
    "mlm_probability, whole_word_mask and batch_size) and writes it to --output (default CHECKPOINT/evaluation.json). "
    "Data keys default to CHECKPOINT's recipe.yaml (or its parent's, for a checkpoint-N folder); flags override "
    "them, and --max_eval_samples 0 scores every validation block."
)


@dataclass
class EvaluateArguments:
    """How the checkpoint is scored; the DataArguments keys say on what."""

    stride: int | None = field(default=None, metadata={"help": (
        "clm only: tokens each window of block_size moves; a smaller stride gives each scored token more context. "
        "None: block_size, the blocks the Trainer evaluates.")})  # fmt: skip
    batch_size: int = field(default=16, metadata={"help": (
        "Blocks (mlm) or windows (clm) per forward pass; the mlm loss is a mean of batch means, as the Trainer's. "
        "A recipe.yaml's per_device_eval_batch_size replaces 16.")})  # fmt: skip
    seed: int = field(default=42, metadata={"help": "mlm only: seed of the masks. A recipe.yaml's seed replaces 42."})
    split_seed: int = field(default=42, metadata={"help": (
        "Seed of the validation split carved from train_files or dataset_name when they have none. A recipe.yaml's "
        "seed replaces 42, giving the run's own split.")})  # fmt: skip
    split: Literal["validation", "train"] = field(default="validation", metadata={"help": "The split to score."})
    output: str | None = field(default=None, metadata={"help": (
        "JSON file for the results (they are also printed). None: CHECKPOINT/evaluation.json.")})  # fmt: skip


def build_parser() -> HfArgumentParser:
    parser = Parser((DataArguments, EvaluateArguments), prog="score.py", usage=USAGE, description=DESCRIPTION,
                     allow_abbrev=False)  # fmt: skip
    parser.add_argument("checkpoint", help="Output or checkpoint-N folder of an mlm or clm run, or any folder with "
                        "a fill-mask or causal LM model and its tokenizer.")  # fmt: skip
    return parser


def recipe_defaults(checkpoint: Path) -> tuple[dict, str | None]:
    """Parser defaults from the run's recipe.yaml (in the folder, else its parent for checkpoint-N) and its path."""
    for path in (checkpoint / "recipe.yaml", checkpoint.parent / "recipe.yaml"):
        if path.is_file():
            saved = yaml.safe_load(path.read_text()) or {}
            out = {f.name: saved[f.name] for f in fields(DataArguments) if f.name in saved}
            if "per_device_eval_batch_size" in saved:
                out["batch_size"] = saved["per_device_eval_batch_size"]
            if "seed" in saved:
                out["seed"] = out["split_seed"] = saved["seed"]
            return out, str(path)
    return {}, None


def parse(argv: list[str]) -> tuple[str, DataArguments, EvaluateArguments, str | None]:
    """(checkpoint, data keys, evaluation keys, the recipe.yaml the defaults came from)."""
    parser = build_parser()
    known, unknown = parser.parse_known_args(argv)
    if unknown:
        flag = next((u for u in unknown if u.startswith("-")), None)
        if flag is None:
            raise RecipeError(f"unexpected argument {unknown[0]}; give one CHECKPOINT, first, then --key value pairs")
        options = [f.name for dc in (DataArguments, EvaluateArguments) for f in fields(dc)]
        raise RecipeError(f"unknown option {flag}{closest(flag.lstrip('-').split('=')[0], options, 'score.py')}")
    defaults, source = recipe_defaults(Path(known.checkpoint))
    parser.set_defaults(**defaults)
    try:
        data_args, eval_args, rest = parser.parse_args_into_dataclasses(args=argv)
    except ValueError as e:
        raise RecipeError(str(e)) from None
    for key in ("max_train_samples", "max_eval_samples"):  # 0 says "every block", which a flag cannot say as None
        if getattr(data_args, key) is not None and getattr(data_args, key) < 1:
            setattr(data_args, key, None)
    given = {a[2:].split("=")[0] for a in argv if a.startswith("--")}
    problems = contradictions(given, eval_args)
    if problems:
        raise RecipeError(problems)
    return rest.checkpoint, data_args, eval_args, source


def contradictions(given: set[str], eval_args: EvaluateArguments) -> list[str]:
    """Data flags that name two different texts to score: refused rather than one silently winning."""
    problems = []
    if "validation_files" in given:
        for other in ("dataset_name", "train_files", "validation_plays", "genres"):
            if other in given:
                problems.append(f"validation_files and {other}: both say what to score; keep one of them")
        if eval_args.split == "train":
            problems.append("validation_files: scored as the validation split; drop --split train, or the files")
    if {"dataset_name", "train_files"} <= given:
        problems.append("dataset_name and train_files: both name the text to score; keep one of them")
    for key in ("validation_plays", "genres"):
        if key in given and ({"dataset_name", "train_files"} & given):
            problems.append(f"{key}: picks plays of the embedded corpus, not of dataset_name or train_files; drop it")
    return problems


def check(data_args: DataArguments, eval_args: EvaluateArguments, task: Task, positions: int) -> list[str]:
    """Every problem with the keys for this model, found before any data is read."""
    block, stride, problems = data_args.block_size, eval_args.stride, []
    if problem := block_size_problem(block, positions, "the checkpoint"):
        problems.append(problem)
    if stride is not None and task.fixed_eval_masks:
        problems.append(f"stride: slides clm windows only; drop it for an {task.name} checkpoint")
    elif stride is not None and not 1 <= stride <= block:
        problems.append(f"stride: {stride} must be from 1 to block_size ({block}) tokens; e.g. --stride {block // 2}")
    if eval_args.batch_size < 1:
        problems.append(f"batch_size: {eval_args.batch_size} must be at least 1 block")
    if task.fixed_eval_masks and not 0 < data_args.mlm_probability < 1:
        problems.append(f"mlm_probability: {data_args.mlm_probability} must be in (0, 1), e.g. 0.15")
    return problems


@torch.inference_mode()
def evaluate_clm(model: PreTrainedModel, blocks: Dataset, stride: int | None = None, batch_size: int = 16) -> dict:
    """Next-token loss over the blocks joined in order, in windows of block_size tokens every `stride` tokens.

    Each window scores only the tokens no earlier window reached; the ones before are context. A window's first
    token has no context and is never scored, so stride == block_size scores block_size - 1 tokens of each block
    (the Trainer's eval_loss) and a smaller stride scores every token after the stream's first exactly once.
    (lm-recipes' runs report this loss: tasks.token_loss divides by the predicted tokens, block_size - 1 a block.)
    """
    stream = torch.tensor(blocks["input_ids"], dtype=torch.long).flatten()
    block = len(blocks[0]["input_ids"])
    stride = stride or block
    windows, reached = [], 0  # (start, end, tokens of context only) per window
    for start in range(0, len(stream), stride):
        end = min(start + block, len(stream))
        windows.append((start, end, reached - start))
        reached = end
        if end == len(stream):
            break
    nll, correct, scored = 0.0, 0, 0
    for i in range(0, len(windows), batch_size):
        chunk = windows[i : i + batch_size]
        width = max(end - start for start, end, _ in chunk)
        # Only the last window can be short: padded on the right, which a causal model cannot see.
        ids = torch.zeros(len(chunk), width, dtype=torch.long)
        labels = torch.full_like(ids, -100)
        for row, (start, end, context) in enumerate(chunk):
            ids[row, : end - start] = stream[start:end]
            labels[row, context : end - start] = stream[start + context : end]
        logits = model(input_ids=ids.to(model.device)).logits[:, :-1].float()
        targets = labels[:, 1:].to(model.device)  # token t is predicted from the tokens before it
        keep = targets != -100
        picked, targets = logits[keep], targets[keep]
        nll += F.cross_entropy(picked, targets, reduction="sum").item()
        correct += int((picked.argmax(-1) == targets).sum())
        scored += len(targets)
    loss = nll / scored
    return {"loss": loss, "perplexity": perplexity(loss), "accuracy": correct / scored, "tokens": scored,
            "blocks": len(blocks), "block_size": block, "stride": stride, "windows": len(windows),
            "loss_averaging": "summed negative log-likelihood of the scored tokens / tokens"}  # fmt: skip


@torch.inference_mode()
def evaluate_mlm(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    blocks: Dataset,
    mlm_probability: float = 0.15,
    seed: int = 42,
    batch_size: int = 16,
    whole_word_mask: bool = False,
) -> dict:
    """Masked-token loss and accuracy with masks drawn by the training collator from its own generator at `seed`.

    Like `Trainer.evaluate`: each batch's mean masked-token loss, averaged over batches weighted by blocks per batch;
    a batch with no masked token has no loss and is left out, as the Trainer drops its NaN.
    """
    collate = masking_collator(tokenizer, mlm_probability, whole_word_mask, seed)  # as training evaluations mask
    weighted, weight, correct, masked = 0.0, 0, 0, 0
    for start in range(0, len(blocks), batch_size):
        rows = blocks[start : start + batch_size]
        batch = collate([dict(zip(rows, values, strict=True)) for values in zip(*rows.values(), strict=True)])
        rows = rows["input_ids"]
        logits = model(input_ids=batch["input_ids"].to(model.device)).logits.float()
        labels = batch["labels"].to(model.device)
        keep = labels != -100
        if not keep.any():
            continue
        picked, labels = logits[keep], labels[keep]
        weighted += F.cross_entropy(picked, labels).item() * len(rows)
        weight += len(rows)
        correct += int((picked.argmax(-1) == labels).sum())
        masked += len(labels)
    if masked == 0:
        raise RecipeError("mlm_probability: no token was masked in any block; raise it (0.15 is usual)")
    loss = weighted / weight
    return {"loss": loss, "perplexity": perplexity(loss), "accuracy": correct / masked, "tokens": masked,
            "blocks": len(blocks), "block_size": len(blocks[0]["input_ids"]), "seed": seed,
            "mlm_probability": mlm_probability, "whole_word_mask": whole_word_mask, "batch_size": batch_size,
            "loss_averaging": "mean over batches of each batch's mean masked-token loss, weighted by its blocks "
                              "(as Trainer.evaluate)"}  # fmt: skip


def describe(args: DataArguments, docs: Dataset, split: str, seed: int, blocks: int) -> str:
    """Where the scored text came from, in a few words."""
    limit = args.max_eval_samples if split == "validation" else args.max_train_samples
    first = f"the first {blocks} blocks of " if limit == blocks else ""
    if split == "validation" and args.validation_files:
        return f"{first}validation_files: {', '.join(args.validation_files)}"
    if args.uses_embedded_corpus():
        plays = list(dict.fromkeys(docs["play"]))
        return f"{first}the embedded corpus, {split} plays: {', '.join(plays) if len(plays) < 10 else len(plays)}"
    source = args.dataset_name or ", ".join(args.train_files)
    return f"{first}{source}, {split} split (carved with seed {seed} if the data has none)"


def evaluate_checkpoint(checkpoint: str, data_args: DataArguments, eval_args: EvaluateArguments) -> dict:
    """Load the checkpoint and its tokenizer, build the split's blocks as training did, and score them."""
    folder = Path(checkpoint)
    model, task = models.load_checkpoint(checkpoint)
    problems = check(data_args, eval_args, task, models.positions(model))
    if problems:
        raise RecipeError(problems)
    tokenizer = tokenizers.load(str(folder), "CHECKPOINT")
    split = eval_args.split
    if split == "validation" and data_args.validation_files:
        texts = data.load_validation_files(data_args)  # what to score, whatever the run trained on
    else:
        texts = data.load_texts(data_args, eval_args.split_seed)
    if split not in texts:
        raise RecipeError(
            f"split: the data has no {split} split; set validation_plays, validation_files or "
            f"validation_split_percentage > 0, or pass --split train"
        )
    blocks = task.build_datasets(DatasetDict({split: texts[split]}), tokenizer, data_args, eval_args.split_seed)[split]
    if task.fixed_eval_masks:
        result = evaluate_mlm(
            model,
            tokenizer,
            blocks,
            data_args.mlm_probability,
            eval_args.seed,
            eval_args.batch_size,
            data_args.whole_word_mask,
        )
    else:
        result = evaluate_clm(model, blocks, eval_args.stride, eval_args.batch_size)
    where = describe(data_args, texts[split], split, eval_args.split_seed, len(blocks))
    return {"checkpoint": str(folder), "objective": task.name, "split": split, "data": where, **result}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "-h" in argv or "--help" in argv:
        build_parser().print_help()
        return 0
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("lm_recipes").setLevel(logging.INFO)
    try:
        checkpoint, data_args, eval_args, source = parse(argv)
        result = {**evaluate_checkpoint(checkpoint, data_args, eval_args), "recipe": source}
    except RecipeError as e:
        print(f"error: score.py cannot run:\n{e}\nusage: {USAGE}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=2)
    output = Path(eval_args.output or Path(checkpoint) / "evaluation.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text + "\n")
    print(text)
    return 0
