"""Training: build the Trainer of a recipe from its prepared data and model, then train, resume, evaluate and save.

`run()` composes the builders in four steps: the data (preparation.prepare), the model (models.build), training
(build_trainer, then the Trainer from where checkpoints.start says), and evaluation, saving and pushing.
"""

from __future__ import annotations

import ast
import logging
import textwrap
from pathlib import Path

import datasets
import torch
from accelerate.data_loader import prepare_data_loader
from torch.utils.data import DataLoader
from transformers import EarlyStoppingCallback, PreTrainedModel, Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from . import callbacks, checkpoints, engines, hub, modelcard, models, planning, plots, streaming
from . import recipe as recipes
from .checkpoints import Start
from .preemption import Preempted, Preemption
from .preparation import Prepared, prepare
from .recipe import Recipe, RecipeError
from .tasks import TASKS, perplexity

logger = logging.getLogger(__name__)


class TiedWeightsLoaded(logging.Filter):
    """Drops the Trainer's "There were missing keys in the checkpoint model loaded: ['lm_head.weight']" on resume
    when every key it names is tied to another parameter and the tie holds: a tied output embedding is saved once,
    under the input embedding, and loading that one fills both. Any other missing key is still reported."""

    PREFIX = "There were missing keys in the checkpoint model loaded:"
    model = None

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.model is None or not message.startswith(self.PREFIX):
            return True
        try:
            missing = ast.literal_eval(message[len(self.PREFIX) :].strip().rstrip("."))
            tied = self.model.all_tied_weights_keys
            held = all(self.model.get_parameter(k) is self.model.get_parameter(tied[k]) for k in missing)
        except (ValueError, SyntaxError, KeyError, AttributeError):
            return True
        return not held


_TIED = TiedWeightsLoaded()
logging.getLogger("transformers.trainer").addFilter(_TIED)


class LMTrainer(Trainer):
    """The Trainer of one recipe: its task's loss (owned here, not the model's), perplexity beside each
    language-modelling loss, the watchers' values in each training log, and evaluation masks at a fixed seed."""

    def __init__(self, *args, recipe: Recipe, **kwargs):
        self.recipe = recipe
        self.task = TASKS[recipe.model.objective]
        self.tokens_processed = 0  # by training_step on this process, padding included: for throughput
        self.stream_position: streaming.Position | None = None  # a streamed run's place in its stream
        self.stream_restart: dict | None = None  # the saved place a resumed streamed run starts from
        super().__init__(*args, compute_loss_func=self.task.loss, **kwargs)
        # The collator shifts causal labels already: the Trainer must count them as they are, whatever loss_type a
        # transformers release gives the model (it drops each row's first label for a ForCausalLM loss).
        # tests/test_models.py pins the count: the logged loss is the mean over predicted tokens.
        self._loss_shifts_labels = False
        _TIED.model = self.model
        engines.fill_in(getattr(self.accelerator.state, "fsdp_plugin", None), self.model)
        self.preemption = Preemption(self)
        self.add_callback(self.preemption)
        if hasattr(self.data_collator, "restart"):
            self.add_callback(callbacks.CollatorPlace(self.data_collator))

    def _save_checkpoint(self, model, trial) -> None:
        """The Trainer's save, made a commit: every process writes its part, the main process flushes the folder to
        disk and writes its manifest (checkpoints.commit), and only then do older checkpoints rotate out, so a kill
        or a full disk at any moment leaves the previous checkpoint whole. A failed write raises SaveError."""
        run_dir = Path(self._get_output_dir(trial))
        folder = run_dir / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        limit, self.args.save_total_limit = self.args.save_total_limit, None  # rotation waits for the commit
        try:
            with checkpoints.saving(folder, "the checkpoint", remove_partial=self.args.should_save):
                if self.stream_position is not None:  # each process its part of the stream; first, as the weights
                    micro_batch = self.state.global_step * self.args.gradient_accumulation_steps  # make it complete
                    folder.mkdir(parents=True, exist_ok=True)
                    streaming.save_position(folder, self.args.process_index, self.args.world_size, micro_batch,
                                            self.stream_position.after(micro_batch))  # fmt: skip
                super()._save_checkpoint(model, trial)
                self.accelerator.wait_for_everyone()
                if self.args.should_save:
                    checkpoints.commit(folder)
        finally:
            self.args.save_total_limit = limit
        if self.args.should_save:
            rotate_checkpoints(str(run_dir), limit, self.state.best_model_checkpoint, use_mtime=True)

    def get_train_dataloader(self) -> DataLoader:
        """A streamed run's loader: this process's part of the stream (streaming.blocks split it by node), read in
        this process alone, neither dispatched nor sharded again by accelerate, its position recorded per
        micro-batch; a resumed run sets the stream where its checkpoint left it instead of replaying batches."""
        if not isinstance(self.train_dataset, datasets.IterableDataset):
            return super().get_train_dataloader()
        self.stream_position = streaming.Position(self.train_dataset, self.data_collator)
        if self.stream_restart is not None:
            self.stream_position.restart(self.stream_restart["micro_batch"], self.stream_restart["state"])
        # Its own generator: starting to iterate draws a seed, which from the global RNG would shift the dropout of a
        # resumed run (the Trainer restores the RNG before the loader starts).
        loader = DataLoader(self.train_dataset, batch_size=self._train_batch_size, collate_fn=self.stream_position,
                            pin_memory=self.args.dataloader_pin_memory,
                            generator=torch.Generator().manual_seed(self.args.seed))  # fmt: skip
        return prepare_data_loader(loader, self.args.device, num_processes=1, process_index=0, put_on_device=True,
                                   dispatch_batches=False, rng_types=None)  # fmt: skip

    def training_step(self, model, inputs, num_items_in_batch=None):
        self.tokens_processed += inputs["input_ids"].numel()  # shape only: no device sync
        return super().training_step(model, inputs, num_items_in_batch)

    def evaluate(self, *args, **kwargs) -> dict[str, float]:
        """MLM: every evaluation masks the same tokens (a collator seeded with `seed`), so eval losses compare
        across steps and with scripts/score.py; training masks keep drawing from the global RNG."""
        if not self.task.fixed_eval_masks:
            return super().evaluate(*args, **kwargs)
        training_collator = self.data_collator
        self.data_collator = self.task.build_collator(
            self.processing_class,
            self.recipe.data,
            seed=self.args.seed,
            processes=(self.args.world_size, self.args.process_index),
        )
        try:
            return super().evaluate(*args, **kwargs)
        finally:
            self.data_collator = training_collator

    def create_model_card(self, **kwargs) -> None:
        """The card of lm-recipes (what was trained, on what, with which recipe and results), not the Trainer's."""
        if self.is_world_process_zero():
            modelcard.write(self, self.recipe)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log (evaluation logs have eval_loss)
            for callback in self.callback_handler.callbacks:
                if isinstance(callback, callbacks.Watcher):
                    logs.update(callback.training_logs())
        if self.task.perplexity:
            for key, name in (("loss", "perplexity"), ("eval_loss", "eval_perplexity")):
                if key in logs:
                    logs[name] = perplexity(logs[key])
        super().log(logs, start_time)


def resolve(recipe: Recipe, prepared: Prepared, model: PreTrainedModel) -> None:
    """Write into the recipe what the tokenizer and a starting checkpoint decided, so that the printed plan and the
    saved recipe.yaml say what really runs: the one place where built things change recipe keys."""
    t, m, d = recipe.tokenizer, recipe.model, recipe.data
    vocab = len(prepared.tokenizer)
    if m.model_name_or_path:
        for key, value in models.sizes(model).items():
            if value is not None:
                setattr(m, key, value)
        t.vocab_size, t.tokenizer_type = vocab, "auto"
    elif t.tokenizer_name is None and vocab != t.vocab_size:
        logger.warning(
            "vocab_size: the training text yields %d tokens at min_frequency %d, not the %d asked; the model and the "
            "saved recipe use %d (lower min_frequency or give more text for more)",
            vocab, t.min_frequency, t.vocab_size, vocab,
        )  # fmt: skip
        t.vocab_size = vocab
    if problem := recipes.block_size_problem(d.block_size, models.positions(model), m.model_name_or_path):
        raise RecipeError(problem)


def build_trainer(recipe: Recipe, model: PreTrainedModel, prepared: Prepared) -> LMTrainer:
    """The recipe's Trainer, ready to train or evaluate, with its watchers. Raises RecipeError when the Hub repo of
    push_to_hub cannot be created (the Trainer creates it as it starts)."""
    args, task = recipe.training, TASKS[recipe.model.objective]
    if recipe.data.streaming:
        args.ignore_data_skip = True  # a resumed stream starts at its saved position: no batches to replay
    if recipe.data.whole_word_mask:
        args.remove_unused_columns = False  # the blocks' offsets are no model input, but the collator needs them
    try:
        trainer = LMTrainer(
            model=model,
            args=args,
            data_collator=task.build_collator(prepared.tokenizer, recipe.data, seed=args.seed,
                                              pad_to_multiple_of=8 if args.bf16 or args.fp16 else None,
                                              processes=(args.world_size, args.process_index)),
            train_dataset=prepared.datasets["train"],
            eval_dataset=prepared.datasets.get("validation"),
            processing_class=prepared.tokenizer,
            compute_metrics=task.build_metrics() if task.labelled or recipe.watch.token_accuracy else None,
            preprocess_logits_for_metrics=task.preprocess_logits if recipe.watch.token_accuracy else None,
            recipe=recipe,
        )  # fmt: skip
    except hub.HUB_ERRORS as e:
        if not args.push_to_hub:
            raise
        raise RecipeError(
            f"push_to_hub: cannot create or reach the Hub repo {args.hub_model_id or Path(args.output_dir).name} "
            f"({hub.describe(e, args.hub_token)}); check hub_model_id, the token (hub_token, HF_TOKEN or "
            f"`hf auth login`) and the network, or set push_to_hub: false"
        ) from None
    attach_watchers(trainer, recipe)
    return trainer


def attach_watchers(trainer: LMTrainer, recipe: Recipe) -> None:
    """The recipe's watchers as Trainer callbacks, in the order their events must run: the guard forces a log at
    each step that saves or evaluates, which the throughput window then closes on; samples are drawn before the
    throughput window restarts after an evaluation, so their time is not counted as training."""
    w, task = recipe.watch, trainer.task
    callbacks.place_event_files(trainer)
    trainer.add_callback(callbacks.RecipeLearningRate())
    if w.divergence_guard:
        classes = task.classes(trainer.model, trainer.processing_class)
        trainer.add_callback(callbacks.DivergenceGuard(trainer, w.divergence_threshold, classes))
    if w.samples and task.draw_samples is None:
        logger.warning("samples: a %s model has nothing to complete or fill; the %d samples are not drawn",
                       task.name, len(w.samples))  # fmt: skip
    elif w.samples:
        trainer.add_callback(callbacks.Samples(trainer, w, task.draw_samples))
    if w.log_throughput:
        trainer.add_callback(callbacks.Throughput(trainer, recipe.data.block_size, w.peak_tflops))
    if w.log_weight_norm:
        trainer.add_callback(callbacks.WeightNorm(trainer))
    if w.early_stopping_patience is not None:
        trainer.add_callback(EarlyStoppingCallback(w.early_stopping_patience, w.early_stopping_threshold))


def build(recipe: Recipe, start: Start | None = None) -> LMTrainer:
    """Data, model and Trainer of a recipe, its keys resolved. The recipe.yaml of the run `start` resumes (output_dir's
    or a Hub repo's) is checked again, now that the tokenizer's keys are known."""
    prepared = prepare(recipe)
    engines.join_deepspeed(recipe.training)
    model = models.build(recipe.model, prepared.tokenizer, prepared.labels)
    resolve(recipe, prepared, model)
    out = Path(recipe.training.output_dir)
    if start is not None and start.hub:
        recipes.check_same(recipe, out, f"the Hub repo {start.hub[0]}", resolved=True, saved=start.hub_recipe)
    elif start is not None and start.local and Path(start.checkpoint).parent == out:
        recipes.check_same(recipe, out, resolved=True)
    trainer = build_trainer(recipe, model, prepared)
    if recipe.data.streaming and start is not None and start.local and not start.finished:
        args = recipe.training
        trainer.stream_restart = streaming.read_position(start.checkpoint, args.process_index, args.world_size)
    return trainer


def show_plan(recipe: Recipe) -> list[str]:
    """`train.py RECIPE --plan`: the run's numbers and learning-rate schedule, from the same data, tokenizer and
    model the run would use; trains nothing, pushes nothing. Raises as the run would for an output_dir of another
    recipe."""
    recipe.training.push_to_hub = False  # the Trainer would create the Hub repo as it starts
    mine, _ = checkpoints.own(recipe)
    return planning.show(build(recipe, Start(str(mine)) if mine else None), recipe)


def run(recipe: Recipe) -> dict[str, float]:
    """Train the recipe end to end, resuming where an earlier run of it stopped; returns the final metrics."""
    args = recipe.training
    start = checkpoints.start(recipe)
    if start.finished:
        logger.info("%s is the last step of this run (%d): nothing left to train", start.checkpoint,
                    start.finished.global_step)  # fmt: skip
    trainer = build(recipe, start)  # 1. data, 2. model, the Trainer
    if start.hub:  # downloaded once the recipe and its data are known to be good
        with args.main_process_first(local=True, desc="downloading the checkpoint"):
            start.checkpoint = hub.download_checkpoint(recipe, *start.hub)
    uploads = hub.attach(trainer)
    if not start.finished:
        announce(trainer, recipe, start)

    # Everything is known to be valid: from here on the run writes.
    if args.should_save:
        checkpoints.set_aside(start.incomplete)
        if start.checkpoint is None:
            checkpoints.clear(args.output_dir, also=(callbacks.SAMPLES_FILE,))
        recipes.save(recipe, args.output_dir)
    metrics = train(trainer, start)  # 3. train
    if trainer.preemption.stopped is not None:
        callbacks.close_writers(trainer)
        folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{trainer.state.global_step}"
        raise Preempted(trainer.preemption.stopped, trainer.state.global_step, str(folder))
    return finish(trainer, recipe, start, metrics, uploads)  # 4. evaluate, save, push


def announce(trainer: LMTrainer, recipe: Recipe, start: Start) -> None:
    """The start of a run in the log: where it starts, the keys it sets, and the numbers that follow from them."""
    out, m = Path(recipe.training.output_dir), recipe.model
    if start.checkpoint:
        logger.info("Resuming from %s (set resume_from_checkpoint: false to start over)", start.checkpoint)
    else:
        origin = f"starting from {m.model_name_or_path}" if m.model_name_or_path else "from scratch"
        logger.info("model: %s, %s", type(trainer.model).__name__, origin)
    keys = ", ".join(f"{k}={v!r}" if isinstance(v, str) and "\n" in v else f"{k}={v}"
                     for k, v in recipe.changes().items())  # fmt: skip
    logger.info("recipe, the keys that differ from the defaults (%s will hold every key):\n%s", out / "recipe.yaml",
                textwrap.fill(keys or "none", width=116, initial_indent="  ", subsequent_indent="  "))  # fmt: skip
    for line in planning.lines(recipe, planning.size(trainer.train_dataset), trainer.model):
        logger.info(line)
    engine, *mismatch = engines.describe(trainer.accelerator, trainer.model)
    logger.info(engine)
    logger.info(engines.fast_paths(trainer.args, trainer.model))
    if mismatch and trainer.is_world_process_zero():
        logger.warning(mismatch[0])


def train(trainer: LMTrainer, start: Start) -> dict[str, float]:
    """trainer.train() from where `start` says. A run already at its last step is loaded instead, since the Trainer
    would otherwise take one more step past max_steps (so a rerun of a finished run changes nothing)."""
    if start.finished is not None:
        if trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled:
            # Sharded over the processes by an engine that only trainer.train() sets up: the weights cannot be loaded
            # here, so the run's final outputs must be there already.
            out = Path(trainer.args.output_dir)
            wanted = ["model.safetensors"] + (["eval_results.json"] if trainer.eval_dataset is not None else [])
            if missing := [name for name in wanted if not (out / name).is_file()]:
                raise RecipeError(
                    f"{start.checkpoint} is the run's last step, but {', '.join(missing)} of its end are missing from "
                    f"{out} (stopped while saving them?): rerun the same command on one process without the engine "
                    f"(python scripts/train.py ...), which writes them from that checkpoint"
                )
            trainer.state = start.finished
            return {}
        trainer.model.load_state_dict(type(trainer.model).from_pretrained(start.checkpoint).state_dict())
        trainer.state = start.finished
        return {}
    if trainer.recipe.data.streaming and start.checkpoint and trainer.stream_restart is None:  # from the Hub
        args = trainer.args
        trainer.stream_restart = streaming.read_position(start.checkpoint, args.process_index, args.world_size)
    try:
        result = trainer.train(resume_from_checkpoint=start.checkpoint)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        if not (trainer.recipe.data.streaming and streaming.raised_reading(e)):
            raise
        newest, _ = checkpoints.resumable(trainer.args.output_dir)
        kept = f"{newest} stays the resume point" if newest else "no checkpoint was saved yet"
        raise streaming.StreamError(f"{streaming.describe(e)} at step {trainer.state.global_step}; {kept}: make the "
                                    f"file readable again and rerun the same command to go on") from None  # fmt: skip
    if trainer.preemption.stopped is not None:
        return {}  # not the run's metrics: run() raises Preempted
    if trainer.stream_position is not None and trainer.state.global_step < trainer.args.max_steps:
        if not trainer.control.should_training_stop or trainer.stream_position.formed == 0:  # not stopped early
            raise streaming.StreamError(
                f"streaming: the stream ran dry at step {trainer.state.global_step}: a whole pass over it makes no "
                f"block of {trainer.recipe.data.block_size} tokens; lower block_size or give more text"
            )
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)
    return dict(result.metrics)


def finish(trainer: LMTrainer, recipe: Recipe, start: Start, metrics: dict, uploads) -> dict[str, float]:
    """The final model, evaluation, state, plots and model card; with push_to_hub, the final push."""
    args = trainer.args
    with checkpoints.saving(args.output_dir, "the final model"):
        return _finish(trainer, recipe, start, metrics, uploads)


def _finish(trainer: LMTrainer, recipe: Recipe, start: Start, metrics: dict, uploads) -> dict[str, float]:
    args = trainer.args
    engines.gather_final_model(getattr(trainer.accelerator.state, "fsdp_plugin", None))  # FSDP: one file, not shards
    # A finished run under an engine that shards the model found its final model in output_dir already (train()).
    final_saved = start.finished is not None and (trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled)
    if not args.push_to_hub and not final_saved:  # with push_to_hub the final push saves the model first
        trainer.save_model()
    evaluated = start.finished is not None and (Path(args.output_dir) / "eval_results.json").is_file()
    if trainer.eval_dataset is not None and not evaluated:
        eval_metrics = trainer.evaluate()
        if trainer.task.perplexity:
            eval_metrics["eval_perplexity"] = perplexity(eval_metrics["eval_loss"])
        trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)
        metrics.update(eval_metrics)
    trainer.save_state()
    callbacks.close_writers(trainer)
    if args.should_save and recipe.watch.plots:
        logger.info("Plots of the run: %s", plots.plot_run(args.output_dir))
    if args.push_to_hub:
        hub.finish(trainer, uploads)  # writes the model card too
    elif args.should_save:
        modelcard.write(trainer, recipe)
    return metrics
