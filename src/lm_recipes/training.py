"""Training: check the output folder, build every piece, then train, resume, evaluate and save."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from transformers import EarlyStoppingCallback, Trainer, TrainerState, set_seed
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import get_last_checkpoint

from . import callbacks, data, hub, models, planning, plots, tasks
from . import recipe as recipes
from . import samples as sampling
from . import tokenizer as tokenizers
from .recipe import Recipe, RecipeError

logger = logging.getLogger(__name__)

FRESH = {"false", "no", "never"}
LAST = {"true", "last"}


class LMTrainer(Trainer):
    """The Trainer of one recipe: perplexity beside every language-modelling loss, the watchers' values in each
    training log, and MLM evaluation masks drawn at a fixed seed."""

    def __init__(self, *args, recipe: Recipe, **kwargs):
        self.recipe = recipe
        self.tokens_processed = 0  # by training_step on this process, padding included: for throughput
        super().__init__(*args, **kwargs)

    def training_step(self, model, inputs, num_items_in_batch=None):
        self.tokens_processed += inputs["input_ids"].numel()  # shape only: no device sync
        return super().training_step(model, inputs, num_items_in_batch)

    def evaluate(self, *args, **kwargs) -> dict[str, float]:
        """MLM: every evaluation masks the same tokens (a collator seeded with `seed`), so eval losses compare
        across steps and with scripts/evaluate.py; training masks keep drawing from the global RNG."""
        if self.recipe.model.objective != "mlm":
            return super().evaluate(*args, **kwargs)
        training_collator = self.data_collator
        probability = self.recipe.data.mlm_probability
        self.data_collator = tasks.collator("mlm", self.processing_class, probability, seed=self.args.seed)
        try:
            return super().evaluate(*args, **kwargs)
        finally:
            self.data_collator = training_collator

    def create_model_card(self, **kwargs) -> None:
        """The card of lm-recipes (what was trained, on what, with which recipe and results), not the Trainer's."""
        if self.is_world_process_zero():
            hub.write_model_card(self, self.recipe)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log (evaluation logs have eval_loss)
            for callback in self.callback_handler.callbacks:
                if isinstance(callback, callbacks.Watcher):
                    logs.update(callback.training_logs())
        if self.recipe.model.objective != "classification":
            for key, name in (("loss", "perplexity"), ("eval_loss", "eval_perplexity")):
                if key in logs:
                    logs[name] = tasks.perplexity(logs[key])
        super().log(logs, start_time)


def resume_point(recipe: Recipe) -> str | None:
    """The checkpoint to resume from, or None for a fresh start; raises if output_dir holds another recipe's run.

    Reads only: nothing is written or deleted here.
    """
    args = recipe.training
    out = Path(args.output_dir)
    last = get_last_checkpoint(out) if out.is_dir() else None
    wanted = (args.resume_from_checkpoint or "").strip()
    if wanted.lower() in FRESH:
        return None
    if wanted and wanted.lower() not in LAST:
        if not Path(wanted).is_dir():
            raise RecipeError(f"resume_from_checkpoint: {wanted} is not a checkpoint folder; give one, or true")
        return wanted
    if last is None and wanted.lower() in LAST:
        raise RecipeError(
            f"resume_from_checkpoint: {wanted} but {out} has no checkpoint-* folder to resume from; "
            f"drop the key to start fresh"
        )
    return latest_checkpoint(recipe)


def latest_checkpoint(recipe: Recipe) -> str | None:
    """The newest checkpoint-N in output_dir, if any; raises if it belongs to another recipe's run."""
    out = Path(recipe.training.output_dir)
    last = get_last_checkpoint(out) if out.is_dir() else None
    if last is not None:
        recipes.check_same(recipe, out)
    return last


def _step(checkpoint: str) -> int:
    return int(Path(checkpoint).name.rsplit("-", 1)[-1])


def build_trainer(recipe: Recipe) -> LMTrainer:
    """Data, tokenizer and model for the recipe, in a Trainer ready to train or evaluate. Writes nothing but the
    datasets and tokenizer caches; raises RecipeError for data or a model that does not fit the recipe."""
    args, d, m = recipe.training, recipe.data, recipe.model
    set_seed(args.seed)
    # Only the main process tokenizes; the others wait, then load its results from the cache.
    classify = m.objective == "classification"
    with args.main_process_first(desc="preparing data"):
        texts = data.load_texts(d, args.seed, m.objective)
        labels = None
        if classify:
            texts, labels = data.encode_labels(texts, d.label_column)
        tokenizer = tokenizers.build(
            recipe.tokenizer, m, texts["train"], d.text_column, m.max_position_embeddings, d.cache_dir
        )
        compute_metrics = None
        if classify:
            if tokenizer.pad_token is None:
                if tokenizer.eos_token is None:
                    raise RecipeError("the tokenizer has neither a padding nor an end-of-text token to pad with")
                logger.info("The tokenizer has no padding token: padding with %s, as GPT-2 classifiers do",
                            tokenizer.eos_token)  # fmt: skip
                tokenizer.pad_token = tokenizer.eos_token
            blocks = data.build_examples(texts, tokenizer, d, args.seed)
            compute_metrics = tasks.classification_metrics()
        else:
            blocks = data.build_blocks(texts, tokenizer, d, m.objective)
    w = recipe.watch
    if w.samples and m.objective == "mlm" and (problem := sampling.mask_problem(tokenizer, w.samples)):
        raise RecipeError(f"samples: {problem}")
    model = models.build(m, tokenizer, labels)
    if m.model_name_or_path:
        # The checkpoint decides these keys: the printed and saved recipe says what really runs.
        for key, value in models.sizes(model).items():
            if value is not None:
                setattr(m, key, value)
        recipe.tokenizer.vocab_size, recipe.tokenizer.tokenizer_type = len(tokenizer), "auto"
    if d.block_size > models.positions(model):
        raise RecipeError(
            f"block_size: {d.block_size} tokens is more than the {models.positions(model)} positions of "
            f"{m.model_name_or_path}; lower block_size"
        )
    if "validation" not in blocks and args.eval_strategy != "no":
        raise RecipeError(
            "eval_strategy asks for evaluation but there is no validation data; "
            "set validation_files, validation_split_percentage > 0, or eval_strategy: 'no'"
        )
    token_accuracy = w.token_accuracy and not classify
    if token_accuracy:
        compute_metrics = tasks.token_accuracy(m.objective)
    try:
        trainer = LMTrainer(
            model=model,
            args=args,
            data_collator=tasks.collator(
                m.objective, tokenizer, d.mlm_probability, pad_to_multiple_of=8 if args.bf16 or args.fp16 else None
            ),
            train_dataset=blocks["train"],
            eval_dataset=blocks.get("validation"),
            processing_class=tokenizer,
            compute_metrics=compute_metrics,
            preprocess_logits_for_metrics=tasks.argmax_logits if token_accuracy else None,
            recipe=recipe,
        )
    except hub.HUB_ERRORS as e:
        if not args.push_to_hub:  # with push_to_hub the Trainer creates the Hub repo as it starts
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
    w, objective = recipe.watch, recipe.model.objective
    callbacks.place_event_files(trainer)
    trainer.add_callback(callbacks.RecipeLearningRate())
    if w.divergence_guard:
        classes = trainer.model.config.num_labels if objective == "classification" else len(trainer.processing_class)
        trainer.add_callback(callbacks.DivergenceGuard(trainer, w.divergence_threshold, classes))
    if w.samples and objective == "classification":
        logger.warning("samples: a classifier has nothing to complete or fill; the %d samples are not drawn",
                       len(w.samples))  # fmt: skip
    elif w.samples:
        trainer.add_callback(callbacks.Samples(trainer, w, objective))
    if w.log_throughput:
        trainer.add_callback(callbacks.Throughput(trainer, recipe.data.block_size, w.peak_tflops))
    if w.log_weight_norm:
        trainer.add_callback(callbacks.WeightNorm(trainer))
    if w.early_stopping_patience is not None:
        trainer.add_callback(EarlyStoppingCallback(w.early_stopping_patience, w.early_stopping_threshold))


def show_plan(recipe: Recipe) -> list[str]:
    """`train.py RECIPE --plan`: the run's numbers and learning-rate schedule, from the same data, tokenizer and
    model the run would use; trains nothing, pushes nothing. Raises as the run would for an output_dir of another
    recipe."""
    latest_checkpoint(recipe)
    recipe.training.push_to_hub = False  # the Trainer would create the Hub repo as it starts
    return planning.show(build_trainer(recipe), recipe)


def run(recipe: Recipe) -> dict[str, float]:
    """Train the recipe end to end, resuming where an earlier run of it stopped; returns the final metrics."""
    args, m = recipe.training, recipe.model
    repo = (args.resume_from_checkpoint or "").strip()
    from_hub = hub.find_checkpoint(recipe, repo) if hub.is_repo_id(repo) else None
    resume = latest_checkpoint(recipe) if from_hub else resume_point(recipe)
    if from_hub and resume and _step(resume) >= from_hub[1]:
        logger.info("%s is not behind %s (step %d): resuming from it", resume, repo, from_hub[1])
        from_hub = None
    trainer = build_trainer(recipe)
    if from_hub:  # downloaded once the recipe and its data are known to be good
        with args.main_process_first(local=True, desc="downloading the checkpoint"):
            resume = hub.download_checkpoint(recipe, repo, *from_hub)
    uploads = None
    if args.push_to_hub:
        uploads = hub.Uploads(trainer)
        uploads.attach()
    logger.info("resolved recipe:\n%s", recipes.dump(recipe))
    for line in planning.lines(recipe, len(trainer.train_dataset), trainer.model):
        logger.info(line)

    # Everything is known to be valid: from here on the run writes.
    if args.should_save:
        if resume is None:
            _clear_run(args.output_dir)
        recipes.save(recipe, args.output_dir)
    metrics = _train(trainer, resume)
    if not args.push_to_hub:  # with it, save_model would push at once; the final push below saves the model first
        trainer.save_model()
    if trainer.eval_dataset is not None:
        eval_metrics = trainer.evaluate()
        if m.objective != "classification":
            eval_metrics["eval_perplexity"] = tasks.perplexity(eval_metrics["eval_loss"])
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
        hub.write_model_card(trainer, recipe)
    return metrics


def _train(trainer: LMTrainer, resume: str | None) -> dict[str, float]:
    """trainer.train(), resuming from `resume`; a checkpoint at the run's last step is loaded instead, since the
    Trainer would otherwise take one more step past max_steps (so a rerun of a finished run changes nothing)."""
    args = trainer.args
    state = TrainerState.load_from_json(str(Path(resume) / TRAINER_STATE_NAME)) if resume else None
    if state is not None and state.global_step >= (args.max_steps if args.max_steps > 0 else state.max_steps):
        logger.info("%s is the last step of this run (%d): nothing left to train", resume, state.global_step)
        trainer.model.load_state_dict(type(trainer.model).from_pretrained(resume).state_dict())
        trainer.state = state
        return {}
    if resume:
        logger.info("Resuming from %s (set resume_from_checkpoint: false to start over)", resume)
    result = trainer.train(resume_from_checkpoint=resume)
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)
    return dict(result.metrics)


def _clear_run(output_dir: str) -> None:
    """Starting fresh: the checkpoints and samples of an earlier run in output_dir go."""
    out = Path(output_dir)
    if not out.is_dir():
        return
    for ckpt in sorted(p for p in out.glob("checkpoint-*") if p.is_dir()):
        logger.info("Starting fresh: removing %s", ckpt)
        shutil.rmtree(ckpt)
    (out / callbacks.SAMPLES_FILE).unlink(missing_ok=True)
