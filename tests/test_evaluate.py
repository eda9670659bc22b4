"""scripts/score.py: the perplexity of a trained checkpoint, checked against Trainer.evaluate on the same blocks."""

import json
import shutil
import subprocess
import sys

import pytest
import torch
from datasets import Dataset, DatasetDict
from pytest import approx
from transformers import (
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    BertConfig,
    BertForSequenceClassification,
    Trainer,
    TrainingArguments,
)

from conftest import PRETRAIN, ROOT
from lm_recipes import data, evaluation
from lm_recipes import recipe as recipes
from lm_recipes import tokenizer as tokenizers
from lm_recipes.arguments import DataArguments
from lm_recipes.tasks import TASKS

SCORE = ROOT / "scripts" / "score.py"
AUTO = {"mlm": AutoModelForMaskedLM, "clm": AutoModelForCausalLM}
COMMON = {"checkpoint", "objective", "split", "data", "recipe", "loss", "perplexity", "accuracy", "tokens", "blocks",
          "block_size", "loss_averaging"}  # fmt: skip
KEYS = {
    "clm": COMMON | {"stride", "windows"},
    "mlm": COMMON | {"seed", "mlm_probability", "whole_word_mask", "batch_size"},
}


@pytest.fixture(scope="module", autouse=True)
def one_thread(env):
    """The tiny models gain nothing from a second thread, and on a busy 2-core machine two threads mostly wait on
    each other (a 60-step run went from 1.4 s to over a minute): one thread here and in the scripts run."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield {**env, "OMP_NUM_THREADS": "1"}
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def runs(trained):
    """{objective: output folder} of a 60-step tiny pretraining run each (block_size 64, max_eval_samples 32)."""
    return {objective: trained(objective, *PRETRAIN)[0] for objective in ("clm", "mlm")}


@pytest.fixture(scope="module")
def validation(runs, cache_dir):
    """validation(objective) -> (folder, tokenizer, blocks, recipe): the run's validation blocks, built from its saved
    recipe.yaml as training built them (not through score.py's own parsing)."""
    made = {}

    def _get(objective):
        if objective not in made:
            folder = runs[objective]
            recipe = recipes.load([str(folder / "recipe.yaml")])
            recipe.data.cache_dir = cache_dir
            tok = tokenizers.load(str(folder))
            texts = data.load_texts(recipe.data, recipe.training.seed)
            split = DatasetDict(validation=texts["validation"])
            made[objective] = (
                folder,
                tok,
                TASKS[objective].build_datasets(split, tok, recipe.data, 0)["validation"],
                recipe,
            )
        return made[objective]

    return _get


def trainer_eval_loss(model, tok, blocks, objective, recipe, batch_size, tmp_path) -> float:
    """Trainer.evaluate's eval_loss on the blocks, with the task's collator and loss as a run has them; for mlm a fresh
    collator, so its generator starts at the seed."""
    args = TrainingArguments(output_dir=str(tmp_path / "trainer"), per_device_eval_batch_size=batch_size,
                             report_to="none", use_cpu=True)  # fmt: skip
    task = TASKS[objective]
    collate = task.build_collator(tok, recipe.data, seed=recipe.training.seed)
    trainer = Trainer(model=model, args=args, data_collator=collate, eval_dataset=blocks, compute_loss_func=task.loss)
    return trainer.evaluate()["eval_loss"]


@pytest.mark.parametrize("batch_size", [16, 5])  # 5: the last batch has 2 blocks, weighted by them as the Trainer does
@pytest.mark.parametrize("objective", ["clm", "mlm"])
def test_loss_equals_trainer_evaluate(validation, tmp_path, objective, batch_size):
    folder, tok, blocks, recipe = validation(objective)
    model = AUTO[objective].from_pretrained(folder)
    if objective == "clm":
        ours = evaluation.evaluate_clm(model, blocks, None, batch_size)
    else:
        ours = evaluation.evaluate_mlm(model, tok, blocks, recipe.data.mlm_probability, recipe.training.seed,
                                       batch_size)  # fmt: skip
    assert ours["blocks"] == len(blocks) == 32
    trainer = trainer_eval_loss(model, tok, blocks, objective, recipe, batch_size, tmp_path)
    assert trainer == approx(ours["loss"], rel=1e-5)


def guide_scored_tokens(n: int, block: int, stride: int) -> int:
    """Tokens scored by the windows of the transformers perplexity guide over a stream of n tokens: each window
    scores the tokens past the previous window's end, except its first token when no earlier token is in it."""
    scored, reached = 0, 0
    for begin in range(0, n, stride):
        end = min(begin + block, n)
        scored += end - reached - (begin == reached)
        reached = end
        if end == n:
            return scored


@torch.no_grad()
def test_windows_score_each_token_once_with_its_windows_context(validation):
    folder, _, blocks, recipe = validation("clm")
    model = AUTO["clm"].from_pretrained(folder).eval()
    block, n = recipe.data.block_size, len(blocks) * recipe.data.block_size
    full, half = (evaluation.evaluate_clm(model, blocks, stride, 16) for stride in (block, block // 2))
    assert full["tokens"] == guide_scored_tokens(n, block, block) == len(blocks) * (block - 1)
    assert half["tokens"] == guide_scored_tokens(n, block, block // 2) == n - 1
    assert (full["windows"], half["windows"]) == (len(blocks), 2 * len(blocks) - 1)
    # Token by token over three blocks: each window scores the tokens past the previous window's end, each from the
    # tokens before it in that window (its first token has none and is not scored).
    three, stride = blocks.select(range(3)), block // 2
    stream, nll, reached = torch.tensor(three["input_ids"]).flatten(), [], 0
    for begin in range(0, len(stream), stride):
        end = min(begin + block, len(stream))
        log_probs = model(input_ids=stream[None, begin:end]).logits[0].log_softmax(-1)
        nll += [-log_probs[t - begin - 1, stream[t]].item() for t in range(max(reached, begin + 1), end)]
        reached = end
        if end == len(stream):
            break
    assert evaluation.evaluate_clm(model, three, stride, 16)["loss"] == approx(sum(nll) / len(nll), rel=1e-5)
    # A stride that leaves a short last window, padded on the right in its batch: the same as scoring it alone.
    eight = blocks.select(range(8))
    odd, alone = (evaluation.evaluate_clm(model, eight, 24, batch) for batch in (16, 1))
    assert odd["tokens"] == alone["tokens"] == 8 * block - 1
    assert odd["loss"] == approx(alone["loss"], rel=1e-6) and odd["accuracy"] == alone["accuracy"]


@torch.no_grad()
def test_accuracy_is_the_argmax_of_the_logits(validation):
    for objective in ("clm", "mlm"):
        folder, tok, blocks, recipe = validation(objective)
        model, four = AUTO[objective].from_pretrained(folder).eval(), blocks.select(range(4))
        ids = torch.tensor(four["input_ids"])
        if objective == "clm":
            ours = evaluation.evaluate_clm(model, four, None, 4)
            out = model(input_ids=ids, labels=ids)
            predicted, labels = out.logits[:, :-1].argmax(-1), ids[:, 1:]
        else:
            p, seed = recipe.data.mlm_probability, recipe.training.seed
            ours = evaluation.evaluate_mlm(model, tok, four, p, seed, 4)
            batch = TASKS["mlm"].build_collator(tok, DataArguments(mlm_probability=p), seed=seed)(
                [{"input_ids": row} for row in four["input_ids"]]
            )
            out = model(**batch)
            keep = batch["labels"] != -100
            predicted, labels = out.logits.argmax(-1)[keep], batch["labels"][keep]
        assert ours["tokens"] == labels.numel()
        assert ours["accuracy"] == (predicted == labels).sum().item() / labels.numel()
        assert ours["loss"] == approx(out.loss.item(), rel=1e-5)


def test_mlm_masks_are_fixed_by_the_seed(validation):
    folder, tok, blocks, recipe = validation("mlm")
    model = AUTO["mlm"].from_pretrained(folder)
    first, again, other = (evaluation.evaluate_mlm(model, tok, blocks, 0.15, seed, 16) for seed in (42, 42, 7))
    assert first == again
    assert other["loss"] != first["loss"] and other["seed"] == 7


def run_script(*args: str, env: dict) -> subprocess.CompletedProcess:
    """scripts/score.py in a subprocess, as a user runs it."""
    return subprocess.run([sys.executable, str(SCORE), *args], env=env, capture_output=True, text=True, timeout=300)


def test_script_scores_the_runs_own_validation_blocks(one_thread, validation):
    folder, _, blocks, _ = validation("clm")
    proc = run_script(str(folder), env=one_thread)
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = json.loads(proc.stdout)
    assert json.loads((folder / "evaluation.json").read_text()) == printed
    assert set(printed) == KEYS["clm"]
    # From the run's recipe.yaml, not DataArguments' defaults (block_size 128, every validation block):
    assert printed["recipe"] == str(folder / "recipe.yaml")
    assert (printed["block_size"], printed["blocks"], printed["stride"]) == (64, len(blocks), 64)
    assert printed["data"].startswith("the first 32 blocks of the embedded corpus, validation plays: hamlet")
    expected = evaluation.evaluate_clm(AUTO["clm"].from_pretrained(folder), blocks, None, 16)
    assert printed["loss"] == approx(expected["loss"], rel=1e-6) and printed["tokens"] == expected["tokens"]


def test_mlm_and_checkpoint_folders_take_the_parent_recipe(validation, cache_dir, tmp_path, capsys):
    folder, tok, blocks, recipe = validation("mlm")
    run = tmp_path / "run"
    checkpoint = run / "checkpoint-60"  # what save_steps writes: the model and tokenizer, the recipe one folder up
    shutil.copytree(folder, checkpoint, ignore=shutil.ignore_patterns("recipe.yaml", "evaluation.json"))
    shutil.copy(folder / "recipe.yaml", run / "recipe.yaml")
    output = tmp_path / "results.json"
    assert evaluation.main([str(checkpoint), "--cache_dir", cache_dir, "--output", str(output)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(output.read_text()) and set(printed) == KEYS["mlm"]
    assert printed["recipe"] == str(run / "recipe.yaml") and printed["objective"] == "mlm"
    assert (printed["blocks"], printed["block_size"], printed["batch_size"], printed["seed"]) == (32, 64, 16, 42)
    model = AUTO["mlm"].from_pretrained(folder)
    assert printed["loss"] == approx(evaluation.evaluate_mlm(model, tok, blocks, 0.15, 42, 16)["loss"], rel=1e-6)
    assert not (checkpoint / "evaluation.json").exists()


def test_flags_override_the_recipe(runs):
    checkpoint, d, e, source = evaluation.parse([str(runs["clm"])])
    assert (checkpoint, source) == (str(runs["clm"]), str(runs["clm"] / "recipe.yaml"))
    assert (d.block_size, d.max_eval_samples, e.seed, e.split_seed, e.batch_size) == (64, 32, 42, 42, 16)
    argv = [str(runs["clm"]), "--block_size", "32", "--max_eval_samples", "0", "--seed", "7", "--batch_size", "4"]
    _, d, e, _ = evaluation.parse(argv)
    # 0 blocks means every block; the split keeps the run's seed when only the masking seed changes.
    assert (d.block_size, d.max_eval_samples, e.seed, e.split_seed, e.batch_size) == (32, None, 7, 42, 4)


def test_help_lists_every_option(capsys):
    assert evaluation.main(["--help"]) == 0
    text = capsys.readouterr().out
    for name in ("stride", "batch_size", "seed", "split_seed", "split", "output", "block_size", "validation_plays"):
        assert f"--{name} " in text
    assert "CHECKPOINT/evaluation.json" in text and "checkpoint-N" in text


def test_not_a_checkpoint_exits_2_and_writes_nothing(one_thread, tmp_path):
    proc = run_script(str(tmp_path), env=one_thread)
    assert proc.returncode == 2 and proc.stdout == ""
    assert f"CHECKPOINT: {tmp_path} has no config.json; pass the output folder or a checkpoint-N folder" in proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "objective, flags, message",
    [
        ("clm", ["--stride", "0"], "stride: 0 must be from 1 to block_size (64) tokens; e.g. --stride 32"),
        ("clm", ["--stride", "65"], "stride: 65 must be from 1 to block_size (64) tokens"),
        (
            "clm",
            ["--block_size", "128"],
            "block_size: 128 tokens is more than the 64 positions of the checkpoint; use 64",
        ),
        ("clm", ["--strid", "32"], "unknown option --strid; did you mean `stride`?"),
        ("mlm", ["--stride", "32"], "stride: slides clm windows only; drop it for an mlm checkpoint"),
        (
            "mlm",
            ["--validation_plays", "hamlet2"],
            "validation_plays: ['hamlet2'] not in the embedded corpus; choose from",
        ),
    ],
)
def test_bad_options_exit_2_and_write_nothing(runs, cache_dir, tmp_path, capsys, objective, flags, message):
    output = tmp_path / "results.json"
    argv = [str(runs[objective]), *flags, "--cache_dir", cache_dir, "--output", str(output)]
    assert evaluation.main(argv) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""
    assert not output.exists()


def test_a_classifier_is_not_a_language_model(tmp_path, capsys):
    config = BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)
    BertForSequenceClassification(config).save_pretrained(tmp_path)
    assert evaluation.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"CHECKPOINT: {tmp_path} holds BertForSequenceClassification, not a masked or causal language model" in err
    assert not (tmp_path / "evaluation.json").exists()


def test_validation_files_are_what_is_scored(runs, cache_dir, tmp_path, capsys):
    # The run trained on the embedded corpus; the flag names other text, which alone must be scored.
    mine = tmp_path / "mine.txt"
    mine.write_text("\n\n".join(["The quick brown fox jumps over the lazy dog. " * 30] * 8))
    output = tmp_path / "mine.json"
    argv = [str(runs["clm"]), "--validation_files", str(mine), "--max_eval_samples", "0", "--cache_dir", cache_dir,
            "--output", str(output)]  # fmt: skip
    assert evaluation.main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["data"] == f"validation_files: {mine}"
    tok = tokenizers.load(str(runs["clm"]))
    # Every token of mine.txt (8 paragraphs, each followed by <|endoftext|>) in blocks of 64: nothing else.
    paragraph = tok("The quick brown fox jumps over the lazy dog. " * 30)["input_ids"] + [tok.eos_token_id]
    stream = paragraph * 8
    blocks = Dataset.from_dict({"input_ids": [stream[i : i + 64] for i in range(0, len(stream) - 63, 64)]})
    assert printed["blocks"] == len(blocks) == len(stream) // 64
    expected = evaluation.evaluate_clm(AUTO["clm"].from_pretrained(runs["clm"]), blocks)
    assert printed["loss"] == approx(expected["loss"], rel=1e-6)
    embedded = evaluation.main([str(runs["clm"]), "--cache_dir", cache_dir, "--output", str(tmp_path / "e.json")])
    assert embedded == 0 and json.loads(capsys.readouterr().out)["loss"] != printed["loss"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--dataset_name", "x/y"], "validation_files and dataset_name: both say what to score; keep one of them"),
        (["--validation_plays", "hamlet"], "validation_files and validation_plays: both say what to score"),
        (["--split", "train"], "validation_files: scored as the validation split; drop --split train, or the files"),
    ],
)
def test_contradictory_data_flags_exit_2(runs, tmp_path, capsys, flags, message):
    mine = tmp_path / "mine.txt"
    mine.write_text("Some text to score.\n")
    output = tmp_path / "out.json"
    assert evaluation.main([str(runs["clm"]), "--validation_files", str(mine), *flags, "--output", str(output)]) == 2
    assert message in capsys.readouterr().err and not output.exists()
