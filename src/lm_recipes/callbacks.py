"""Trainer callbacks that watch a run: throughput and weight norm in the training logs, samples at each evaluation,
and a guard that stops a run whose loss has diverged before it saves a broken checkpoint."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path

import torch
from transformers import TrainerCallback
from transformers.integrations import TensorBoardCallback, WandbCallback
from transformers.integrations.integration_utils import default_logdir

from . import checkpoints, flops
from . import recipe as recipes
from . import samples as sampling

logger = logging.getLogger(__name__)

SAMPLES_FILE = "samples.jsonl"
# Loggers whose on_log takes a string and shows it as text (TensorBoard's add_text, a wandb text entry).
TEXT_LOGGERS = (TensorBoardCallback, WandbCallback)


def place_event_files(trainer) -> None:
    """TensorBoard's event files under output_dir/runs also for an evaluation without training (a finished run
    run again): TensorBoardCallback picks that folder only as training begins, else SummaryWriter's ./runs."""
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, TensorBoardCallback) and callback.logging_dir is None:
            callback.logging_dir = os.path.join(trainer.args.output_dir, default_logdir())


def flush_writers(trainer) -> None:
    """Write TensorBoard's pending events to its files now (before an upload reads them)."""
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, TensorBoardCallback) and callback.tb_writer is not None:
            callback.tb_writer.flush()


def close_writers(trainer) -> None:
    """Close TensorBoard's event files: the final evaluation opened a new one after training ended, and a push or
    a reader should get them whole."""
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, TensorBoardCallback) and callback.tb_writer is not None:
            callback.tb_writer.close()
            callback.tb_writer = None


class Diverged(Exception):
    """The training loss became NaN/inf or spiked: the run stopped before saving anything from that state."""


class CollatorPlace(TrainerCallback):
    """Tells a collator that draws per micro-batch (tasks.MaskingCollator) where each epoch's micro-batches start in
    the run, resumed ones included: each optimizer step so far took gradient_accumulation_steps of them."""

    def __init__(self, collator):
        self.collator = collator

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.collator.restart(state.global_step * args.gradient_accumulation_steps)


class Watcher(TrainerCallback):
    """A callback that adds values to each training log entry (LMTrainer.log asks every Watcher)."""

    def training_logs(self) -> dict[str, float]:
        raise NotImplementedError


class Throughput(Watcher):
    """Tokens per second of training, evaluation and saving excluded, and MFU where the device's peak is known.

    A window runs from the moment training resumes (after the previous log, evaluation or save) to the end of the
    step that logs; the tokens are those `trainer.training_step` saw on this process, padding included.
    """

    def __init__(self, trainer, seq_len: int, peak_tflops: float | None = None):
        self.trainer = trainer
        args = trainer.args
        self.world_size = args.world_size
        dtype = "bf16" if args.bf16 else "fp16" if args.fp16 else "tf32" if args.tf32 else "fp32"
        self.peak = flops.peak_flops(args.device, dtype, peak_tflops)
        self.flops_per_token = flops.flops_per_token(trainer.model, seq_len)
        if self.peak is None and args.device.type == "cuda":
            logger.info("MFU not logged: peak FLOP/s of %s unknown; set peak_tflops", torch.cuda.get_device_name())
        self.start, self.tokens_at_start, self.pending = time.perf_counter(), 0, {}

    def _restart(self) -> None:
        self.start, self.tokens_at_start = time.perf_counter(), self.trainer.tokens_processed

    def on_train_begin(self, args, state, control, **kwargs):
        self._restart()

    def on_step_end(self, args, state, control, **kwargs):
        if not control.should_log:
            return
        seconds = time.perf_counter() - self.start
        tokens = self.trainer.tokens_processed - self.tokens_at_start
        if seconds <= 0 or tokens <= 0:
            return
        per_device = tokens / seconds
        self.pending = {
            "tokens_per_second": per_device * self.world_size,
            "tokens_per_second_per_device": per_device,
        }
        if self.peak:
            self.pending["mfu"] = per_device * self.flops_per_token / self.peak

    # Whichever of these comes last before training resumes starts the next window.
    def on_log(self, args, state, control, **kwargs):
        self._restart()

    def on_evaluate(self, args, state, control, **kwargs):
        self._restart()

    def on_save(self, args, state, control, **kwargs):
        self._restart()

    def training_logs(self) -> dict[str, float]:
        logs, self.pending = self.pending, {}
        return logs


class WeightNorm(Watcher):
    """The L2 norm of all parameters: a steady climb is normal, a jump is a warning sign before a divergence."""

    def __init__(self, trainer):
        self.trainer = trainer

    def training_logs(self) -> dict[str, float]:
        params = list(self.trainer.model.parameters())
        if any(hasattr(p, "ds_id") for p in params):  # DeepSpeed ZeRO-3 holds a shard: gather each whole to read it
            import deepspeed

            with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
                return {"weight_norm": torch.nn.utils.get_total_norm([p.detach() for p in params]).item()}
        norm = torch.nn.utils.get_total_norm([p.detach() for p in params])
        if hasattr(norm, "full_tensor"):  # sharded parameters (FSDP2): the norm of the whole model
            norm = norm.full_tensor()
        return {"weight_norm": norm.item()}


class DivergenceGuard(TrainerCallback):
    """Stops the run with `Diverged` when a training log shows a NaN/inf loss or gradient norm, or a loss
    `threshold` nats above the lowest logged so far. Before the first log the bar is ln(classes) + threshold: a
    model guessing uniformly among `classes` (the vocabulary, or a classifier's labels) scores ln(classes), so a run
    that starts far above it diverged from its first steps.

    Every process sees the same logged loss (gathered) and gradient norm (after the all-reduce), so all of them stop
    at the same log. Logging is forced at each step that evaluates or saves, so a broken state is caught before it
    is written: the checkpoints already saved stay as they were.
    """

    def __init__(self, trainer, threshold: float | None, classes: int):
        self.trainer, self.threshold = trainer, threshold
        self.uniform = math.log(classes)
        self.lowest = self.uniform

    def on_train_begin(self, args, state, control, **kwargs):
        # On resume the history of the checkpoint says how low the loss has been.
        losses = [h["loss"] for h in state.log_history if "loss" in h]
        self.lowest = min((x for x in losses if math.isfinite(x)), default=self.uniform)
        self.lowest = min(self.lowest, self.uniform)

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_save or control.should_evaluate:
            control.should_log = True

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:
            return
        loss, grad = logs["loss"], logs.get("grad_norm")
        # An fp16 step whose gradients overflowed is skipped by the loss scaler, which then lowers the scale: the
        # run goes on. Such a step logs an inf gradient norm that is not a divergence.
        skipped = self.trainer.accelerator.optimizer_step_was_skipped
        if not math.isfinite(loss) or (grad is not None and not math.isfinite(grad) and not skipped):
            self._stop(args, state, f"the loss is {loss} and the gradient norm {grad}")
        if self.threshold is not None and loss > self.lowest + self.threshold:
            what = "its lowest" if self.lowest < self.uniform else "a uniform guess, ln(classes)"
            self._stop(
                args,
                state,
                f"the loss rose to {loss:.4g}, {loss - self.lowest:.4g} nats above {what} ({self.lowest:.3f}; "
                f"divergence_threshold: {self.threshold})",
            )
        self.lowest = min(self.lowest, loss)

    def _stop(self, args, state, what: str) -> None:
        last = checkpoints.latest(args.output_dir)
        kept = f"the last checkpoint, {last}, is from before and intact" if last else "no checkpoint was saved"
        raise Diverged(
            f"training diverged at step {state.global_step}: {what}. The run stopped; {kept}.\n"
            f"Try a lower learning_rate (now {args.learning_rate:g}), a longer warmup (warmup_steps, now "
            f"{args.warmup_steps:g}) or stronger gradient clipping (max_grad_norm, now {args.max_grad_norm:g}), then "
            f"run the recipe again: it resumes from the last checkpoint with the new values (or set "
            f"resume_from_checkpoint: false to start over)."
        )


class RecipeLearningRate(TrainerCallback):
    """On resume, the recipe's learning_rate replaces the one saved with the checkpoint's scheduler: after a
    divergence the fix is to lower it and run again, and the saved recipe.yaml should say what really ran."""

    def on_train_begin(self, args, state, control, optimizer=None, lr_scheduler=None, **kwargs):
        base = getattr(lr_scheduler, "base_lrs", None)
        if state.global_step == 0 or not base or not hasattr(lr_scheduler, "lr_lambdas"):
            return
        if all(math.isclose(b, args.learning_rate) for b in base):
            return
        logger.info("learning_rate: %g in the checkpoint, %g in the recipe: continuing with %g", base[0],
                    args.learning_rate, args.learning_rate)  # fmt: skip
        lr_scheduler.base_lrs = [args.learning_rate] * len(base)
        step = lr_scheduler.last_epoch
        lrs = [b * f(step) for b, f in zip(lr_scheduler.base_lrs, lr_scheduler.lr_lambdas, strict=True)]
        for group, lr in zip(optimizer.param_groups, lrs, strict=True):
            group["initial_lr"], group["lr"] = args.learning_rate, lr
        lr_scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]  # what the Trainer logs


class Samples(TrainerCallback):
    """At each evaluation, draw the recipe's samples: shown in the console, appended to output_dir/samples.jsonl
    (one record per evaluation) and sent to the loggers that take text."""

    def __init__(self, trainer, watch, draw):
        self.trainer, self.watch, self.draw = trainer, watch, draw  # draw: the task's draw_samples
        args = trainer.args
        # Sampling needs the whole model on one process; sharded training (FSDP, DeepSpeed ZeRO) does not have it.
        self.enabled = not (args.fsdp or args.deepspeed)
        if not self.enabled:
            logger.warning("samples: not drawn under FSDP or DeepSpeed, where no process holds the whole model")

    @property
    def path(self) -> Path:
        return Path(self.trainer.args.output_dir) / SAMPLES_FILE

    def on_train_begin(self, args, state, control, **kwargs):
        # A resumed run draws again from its checkpoint's step on: records of later steps belong to the lost run.
        if state.is_world_process_zero and self.path.exists():
            kept = [r for r in self.records() if r["step"] <= state.global_step]
            recipes.write_whole(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def on_evaluate(self, args, state, control, **kwargs):
        if not (self.enabled and state.is_world_process_zero) or self.drawn_at(state.global_step):
            return
        records = self.draw(
            self.trainer.model, self.trainer.processing_class, self.watch.samples, self.watch, args.seed
        )
        text = sampling.describe(records)
        logger.info("samples at step %d:\n%s", state.global_step, text)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps({"step": state.global_step, "epoch": state.epoch, "samples": records}) + "\n")
        for callback in self.trainer.callback_handler.callbacks:
            if isinstance(callback, TEXT_LOGGERS):
                # Two trailing spaces end a line in the Markdown that TensorBoard renders.
                samples = {"samples": text.replace("\n", "  \n")}
                callback.on_log(args, state, control, model=self.trainer.model, logs=samples)

    def drawn_at(self, step: int) -> bool:
        """Whether the samples of this step are already recorded: the final evaluation, or a finished run evaluated
        again, sees the model of the last in-training evaluation, whose samples are not drawn twice."""
        records = self.records()
        return bool(records) and records[-1]["step"] == step

    def records(self) -> list[dict]:
        """The records of samples.jsonl; a last line that a kill cut short is left out."""
        if not self.path.exists():
            return []
        records = []
        for line in self.path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        return records
