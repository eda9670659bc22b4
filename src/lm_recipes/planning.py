"""A run's plan: the numbers a recipe implies (parameters, tokens per step, steps, FLOPs) and its learning-rate
schedule, printed at the start of every run and by `train.py RECIPE --plan`, which trains nothing."""

from __future__ import annotations

import logging
import math
from pathlib import Path

from . import cluster, flops, plots
from .tasks import TASKS

logger = logging.getLogger(__name__)

SCHEDULE_FILE = "lr_schedule.png"


def size(dataset) -> int | None:
    """Rows of a dataset; None for a stream, which has no length."""
    return len(dataset) if hasattr(dataset, "__len__") else None


def total_steps(args, train_size: int | None, processes: int | None = None) -> int:
    """Optimizer steps of the run: max_steps, or the epochs' worth of batches of all processes (this run's, or
    `processes`)."""
    if args.max_steps > 0:
        return args.max_steps
    batches = math.ceil(train_size / (args.per_device_train_batch_size * (processes or args.world_size)))
    return math.ceil(batches / args.gradient_accumulation_steps * args.num_train_epochs)


def lines(recipe, train_size: int | None, model) -> list[str]:
    """The derived numbers of a run, as lines to print at start."""
    a, block = recipe.training, recipe.data.block_size
    per_step = a.per_device_train_batch_size * a.gradient_accumulation_steps * a.world_size
    steps = total_steps(a, train_size)
    batch = (
        f"global batch: {per_step} sequences = {a.per_device_train_batch_size} per device x "
        f"{a.gradient_accumulation_steps} accumulation steps x {a.world_size} processes"
    )
    epochs = f" ({steps * per_step / max(train_size, 1):.2f} epochs)" if train_size is not None else ""
    compute = steps * per_step * block * flops.flops_per_token(model, block)
    if TASKS[recipe.model.objective].labelled:  # examples of up to block_size tokens, not blocks
        data_lines = [
            f"training examples: {train_size:,} of at most {block} tokens",
            batch,
            f"optimizer steps: {steps:,}; examples seen: {steps * per_step:,}{epochs}",
            f"training compute: at most {compute:.3g} FLOPs (6N + attention per token, examples at full length)",
        ]
    else:
        data_lines = [
            f"training blocks: {train_size:,} of {block} tokens = {train_size * block:,} tokens"
            if train_size is not None
            else f"training blocks: streamed, {block} tokens each, cut as they are read",
            batch,
            f"tokens per optimizer step: {per_step * block:,}",
            f"optimizer steps: {steps:,}; tokens seen: {steps * per_step * block:,}{epochs}",
            f"training compute: {compute:.3g} FLOPs (6N + attention per token; evaluation not counted)",
        ]
    return [
        f"parameters: {model.num_parameters():,}",
        f"vocabulary: {recipe.tokenizer.vocab_size:,} tokens",
        *data_lines,
        f"precision: {'bf16' if a.bf16 else 'fp16' if a.fp16 else 'fp32'} on {a.device.type}",
    ]


def schedule(trainer, steps: int) -> list[float] | None:
    """The learning rate of each optimizer step, from the Trainer's own scheduler for this recipe (the value it
    logs as learning_rate); None for a schedule that follows the validation loss (reduce_lr_on_plateau)."""
    trainer.create_optimizer_and_scheduler(num_training_steps=steps)
    lambdas = getattr(trainer.lr_scheduler, "lr_lambdas", None)
    if not lambdas:
        return None
    base = trainer.lr_scheduler.base_lrs[0]
    return [base * lambdas[0](step) for step in range(steps)]


def show(trainer, recipe) -> list[str]:
    """The plan of `recipe` (built into `trainer`, not trained) as lines, its schedule drawn into output_dir, and
    what it costs on a GPU node and on this machine (cluster.lines)."""
    args = trainer.args
    out = lines(recipe, size(trainer.train_dataset), trainer.model)
    steps = total_steps(args, size(trainer.train_dataset))
    lrs = schedule(trainer, steps)
    kind = getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)
    if lrs is None:
        out.append(f"learning rate: {kind} follows the validation loss; no schedule to draw")
    else:
        warmup = args.get_warmup_steps(steps)
        out.append(f"learning rate: {kind}, peak {max(lrs):.3g} after {warmup:,} warmup steps, {lrs[-1]:.3g} at the "
                   f"last step")  # fmt: skip
        if args.should_save:
            title = f"{Path(args.output_dir).name}: {kind}, {steps:,} steps"
            figure = plots.lr_schedule_figure(list(range(steps)), lrs, title, warmup)
            path = plots.save(figure, Path(args.output_dir) / SCHEDULE_FILE)
            out.append(f"learning-rate schedule drawn in {path}")
    node_steps = total_steps(args, size(trainer.train_dataset), processes=cluster.GPUS)
    return out + cluster.lines(trainer, recipe, node_steps)
