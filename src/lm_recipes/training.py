"""Training: check the output folder, build every piece, then train, resume, evaluate and save."""

from __future__ import annotations

import ast
import logging
import shutil
import textwrap
from dataclasses import dataclass
from pathlib import Path

from datasets import DatasetDict
from transformers import (
    EarlyStoppingCallback,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerState,
    set_seed,
)
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
    """The Trainer of one recipe: perplexity beside every language-modelling loss, the watchers' values in each
    training log, and MLM evaluation masks drawn at a fixed seed."""

    def __init__(self, *args, recipe: Recipe, **kwargs):
        self.recipe = recipe
        self.tokens_processed = 0  # by training_step on this process, padding included: for throughput
        super().__init__(*args, **kwargs)
        _TIED.model = self.model

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


@dataclass
class Prepared:
    """The data half of a run: its tokenizer, its datasets (blocks, or examples for classification) and, for a
    classifier, the class names."""

    tokenizer: PreTrainedTokenizerBase
    datasets: DatasetDict
    labels: list[str] | None = None


def prepare(recipe: Recipe) -> Prepared:
    """Texts, tokenizer and blocks for the recipe. Writes nothing but the datasets and tokenizer caches; raises
    RecipeError for data that does not fit the recipe. Only the main process tokenizes; the others wait, then load
    its results from the cache."""
    args, d, m = recipe.training, recipe.data, recipe.model
    set_seed(args.seed)  # first: the seed decides the carved validation split and then the model's initial weights
    with args.main_process_first(desc="preparing data"):
        texts = data.load_texts(d, args.seed, m.objective)
        labels = None
        if m.objective == "classification":
            texts, labels = data.encode_labels(texts, d.label_column)
        tokenizer = tokenizers.build(
            recipe.tokenizer, m, texts["train"], d.text_column, m.max_position_embeddings, d.cache_dir
        )
        if m.objective == "classification":
            if tokenizer.pad_token is None:
                if tokenizer.eos_token is None:
                    raise RecipeError("the tokenizer has neither a padding nor an end-of-text token to pad with")
                logger.info("The tokenizer has no padding token: padding with %s, as GPT-2 classifiers do",
                            tokenizer.eos_token)  # fmt: skip
                tokenizer.pad_token = tokenizer.eos_token
            blocks = data.build_examples(texts, tokenizer, d, args.seed)
        else:
            blocks = data.build_blocks(texts, tokenizer, d, m.objective)
    w = recipe.watch
    if w.samples and m.objective == "mlm" and (problem := sampling.mask_problem(tokenizer, w.samples)):
        raise RecipeError(f"samples: {problem}")
    if "validation" not in blocks and args.eval_strategy != "no":
        raise RecipeError(
            "eval_strategy asks for evaluation but there is no validation data; "
            "set validation_files, validation_split_percentage > 0, or eval_strategy: 'no'"
        )
    return Prepared(tokenizer, blocks, labels)


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
    if d.block_size > models.positions(model):
        raise RecipeError(
            f"block_size: {d.block_size} tokens is more than the {models.positions(model)} positions of "
            f"{m.model_name_or_path}; lower block_size"
        )


def build_trainer(recipe: Recipe, prepared: Prepared | None = None, model: PreTrainedModel | None = None) -> LMTrainer:
    """The recipe's Trainer, ready to train or evaluate, from its prepared data and model (built here when not
    given). Raises RecipeError when the Hub repo of push_to_hub cannot be created."""
    args, d, m, w = recipe.training, recipe.data, recipe.model, recipe.watch
    set_seed(args.seed)
    if prepared is None:
        prepared = prepare(recipe)
    if model is None:
        model = models.build(m, prepared.tokenizer, prepared.labels)
        resolve(recipe, prepared, model)
    tokenizer, blocks = prepared.tokenizer, prepared.datasets
    classify = m.objective == "classification"
    compute_metrics = tasks.classification_metrics() if classify else None
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
    resume = latest_checkpoint(recipe)
    recipe.training.push_to_hub = False  # the Trainer would create the Hub repo as it starts
    prepared = prepare(recipe)
    model = models.build(recipe.model, prepared.tokenizer, prepared.labels)
    resolve(recipe, prepared, model)
    if resume:
        recipes.check_same(recipe, Path(recipe.training.output_dir), resolved=True)
    return planning.show(build_trainer(recipe, prepared, model), recipe)


def run(recipe: Recipe) -> dict[str, float]:
    """Train the recipe end to end, resuming where an earlier run of it stopped; returns the final metrics."""
    args, m = recipe.training, recipe.model
    out = Path(args.output_dir)
    repo = (args.resume_from_checkpoint or "").strip()
    from_hub = hub.find_checkpoint(recipe, repo) if hub.is_repo_id(repo) else None
    resume = latest_checkpoint(recipe) if from_hub else resume_point(recipe)
    if from_hub and resume and _step(resume) >= from_hub[1]:
        logger.info("%s is not behind %s (step %d): resuming from it", resume, repo, from_hub[1])
        from_hub = None
    state = TrainerState.load_from_json(str(Path(resume) / TRAINER_STATE_NAME)) if resume and not from_hub else None
    finished = state is not None and state.global_step >= (args.max_steps if args.max_steps > 0 else state.max_steps)
    if finished:
        logger.info("%s is the last step of this run (%d): nothing left to train", resume, state.global_step)

    prepared = prepare(recipe)
    model = models.build(m, prepared.tokenizer, prepared.labels)
    resolve(recipe, prepared, model)
    # Now with what the tokenizer decided:
    if from_hub:
        recipes.check_same(recipe, out, where=f"the Hub repo {repo}", resolved=True, saved=from_hub[2])
    elif resume and Path(resume).parent == out:
        recipes.check_same(recipe, out, resolved=True)
    trainer = build_trainer(recipe, prepared, model)
    if from_hub:  # downloaded once the recipe and its data are known to be good
        with args.main_process_first(local=True, desc="downloading the checkpoint"):
            resume = hub.download_checkpoint(recipe, repo, *from_hub[:2])
    uploads = None
    if args.push_to_hub:
        uploads = hub.Uploads(trainer)
        uploads.attach()
    if not finished:
        if resume:
            logger.info("Resuming from %s (set resume_from_checkpoint: false to start over)", resume)
        else:
            start = f"starting from {m.model_name_or_path}" if m.model_name_or_path else "from scratch"
            logger.info("model: %s, %s", type(model).__name__, start)
        logger.info("recipe, the keys that differ from the defaults (%s will hold every key):\n%s",
                    out / "recipe.yaml", summary(recipe))  # fmt: skip
        for line in planning.lines(recipe, len(trainer.train_dataset), trainer.model):
            logger.info(line)

    # Everything is known to be valid: from here on the run writes.
    if args.should_save:
        if resume is None:
            _clear_run(args.output_dir)
        recipes.save(recipe, args.output_dir)
    metrics = _train(trainer, resume, state if finished else None)
    if not args.push_to_hub:  # with it, save_model would push at once; the final push below saves the model first
        trainer.save_model()
    evaluated = finished and (out / "eval_results.json").is_file()
    if trainer.eval_dataset is not None and not evaluated:
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


def summary(recipe: Recipe) -> str:
    """The recipe's own keys, `key=value` on one line: what this run chose, not the defaults it kept."""
    text = ", ".join(f"{k}={v!r}" if isinstance(v, str) and "\n" in v else f"{k}={v}"
                     for k, v in recipe.changes().items())  # fmt: skip
    return textwrap.fill(text or "none", width=116, initial_indent="  ", subsequent_indent="  ")


def _train(trainer: LMTrainer, resume: str | None, finished: TrainerState | None = None) -> dict[str, float]:
    """trainer.train(), resuming from `resume`. A run already at its last step (`finished`, its checkpoint's state)
    is loaded instead, since the Trainer would otherwise take one more step past max_steps (so a rerun of a finished
    run changes nothing)."""
    if finished is not None:
        trainer.model.load_state_dict(type(trainer.model).from_pretrained(resume).state_dict())
        trainer.state = finished
        return {}
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
