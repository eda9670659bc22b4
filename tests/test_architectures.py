"""The modern architectures beside BERT and GPT-2, `model_type: modernbert` (mlm) and `model_type: llama` (clm), as a
user runs them through train.py: they learn, save outputs that stock Auto classes and pipelines load, resume, fine-tune
into classifiers, and plan. And whole-word masking through train.py (the masks themselves: test_collator.py)."""

import json
import math
import re
import shutil
import subprocess
import sys

import pytest
import torch
import yaml
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer, pipeline

from conftest import ROOT, TINY, TRAIN, Run

# model_type -> (recipe, the class Auto* must load, the pipeline that runs it, its input)
ARCHITECTURES = {
    "modernbert": ("mlm.yaml", AutoModelForMaskedLM, "ModernBertForMaskedLM", "fill-mask", "to be or not to [MASK]."),
    "llama": ("clm.yaml", AutoModelForCausalLM, "LlamaForCausalLM", "text-generation", "ROMEO:"),
}
# Llama has no residual dropout: its recipes set 0 (a non-zero `dropout` is refused, test_errors).
FLAGS = {"modernbert": [], "llama": ["--dropout", "0"]}
# Blocks longer than ModernBERT's local attention window (128 tokens: 64 each side), so its local layers mask.
LONGER = {"modernbert": ["--block_size", "160", "--max_position_embeddings", "160"]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, env):
    """model_type -> (a run of 30 steps, checkpoints every 10; the same command on a folder that holds only its
    checkpoint-20 and recipe.yaml, as a kill would leave it: it resumes), shared by the tests."""
    made = {}

    def _get(model_type):
        if model_type not in made:
            recipe = ROOT / "recipes" / ARCHITECTURES[model_type][0]
            out = tmp_path_factory.mktemp(model_type)
            runs = []
            for name in ("run", "resumed"):
                if name == "resumed":
                    shutil.copytree(out / "run" / "checkpoint-20", out / name / "checkpoint-20")
                    shutil.copy(out / "run" / "recipe.yaml", out / name / "recipe.yaml")
                cmd = [sys.executable, str(TRAIN), str(recipe), *TINY, "--model_type", model_type,
                       *FLAGS[model_type], *LONGER.get(model_type, []), "--max_steps", "30", "--eval_steps", "10",
                       "--save_steps", "10", "--output_dir", str(out / name)]  # fmt: skip
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
                assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
                runs.append(Run(proc, out / name))
            made[model_type] = runs
        return made[model_type]

    return _get


@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_trains_saves_and_loads_with_the_stock_pipeline(runs, model_type):
    first, _ = runs(model_type)
    state = first.state()
    recipe, auto, name, task, text = ARCHITECTURES[model_type]
    losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    assert losses[-1] < losses[0] - 0.3, losses
    results = [h for h in state["log_history"] if "eval_loss" in h]
    tok = AutoTokenizer.from_pretrained(first.output_dir)
    assert results[0]["eval_loss"] < math.log(len(tok))  # better than a uniform guess over the vocabulary
    assert f"model: {name}" in first.out
    config = AutoConfig.from_pretrained(first.output_dir)
    assert config.model_type == model_type and config.architectures == [name]
    assert (config.hidden_size, config.num_hidden_layers, config.intermediate_size) == (64, 2, 128)
    assert config.max_position_embeddings == (160 if model_type == "modernbert" else 64)
    assert config.pad_token_id == tok.pad_token_id
    assert type(auto.from_pretrained(first.output_dir)).__name__ == name
    out = pipeline(task, model=str(first.output_dir))
    if task == "fill-mask":
        filled = out(text)
        assert len(filled) == 5 and filled[0]["score"] > 5 / len(tok)  # uniform: 1 / len(tok)
    else:
        assert out(text, max_new_tokens=8, do_sample=False)[0]["generated_text"].startswith(text)
    saved = yaml.safe_load((first.output_dir / "recipe.yaml").read_text())
    assert saved["model_type"] == model_type


@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_a_rerun_resumes_where_the_checkpoint_left_off(runs, model_type):
    first, again = runs(model_type)
    assert "Resuming from" in again.out and "checkpoint-20" in again.out
    whole, resumed = first.state(), again.state()
    assert resumed["global_step"] == 30
    logged = [[(h["step"], h["loss"]) for h in s["log_history"] if "loss" in h] for s in (whole, resumed)]
    # The steps after the checkpoint train as they did without the interruption (same batches, masks and dropout).
    assert [s for s, _ in logged[1]] == [5, 10, 15, 20, 25, 30]
    assert [s for s, _ in logged[0]] == [s for s, _ in logged[1]]
    assert [loss for _, loss in logged[1][4:]] == pytest.approx([loss for _, loss in logged[0][4:]], rel=1e-5)
    finals = [json.loads((r.output_dir / "all_results.json").read_text())["eval_loss"] for r in (first, again)]
    assert finals[1] == pytest.approx(finals[0], rel=1e-5)


@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_classifier_from_the_pretrained_checkpoint(runs, train, model_type):
    first, _ = runs(model_type)
    run = train("finetune-genre.yaml", "--model_name_or_path", str(first.output_dir), "--genres", "comedies",
                "histories", "--block_size", "64", "--per_device_train_batch_size", "8", "--max_steps", "6",
                "--eval_steps", "6", "--save_steps", "6", "--max_eval_samples", "32", "--logging_steps", "2",
                "--disable_tqdm", "true")  # fmt: skip
    config = AutoConfig.from_pretrained(run.output_dir)
    head = {"modernbert": "ModernBertForSequenceClassification", "llama": "LlamaForSequenceClassification"}
    assert config.architectures == [head[model_type]]
    assert list(config.id2label.values()) == ["comedies", "histories"]
    predicted = pipeline("text-classification", model=str(run.output_dir))("Now is the winter of our discontent")
    assert predicted[0]["label"] in ("comedies", "histories")


@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_plan_counts_the_parameters_it_builds(train, model_type):
    run = train(ARCHITECTURES[model_type][0], *TINY, "--model_type", model_type, *FLAGS[model_type], "--plan",
                "--max_steps", "100")  # fmt: skip
    params = int(re.search(r"parameters: ([\d,]+)", run.out).group(1).replace(",", ""))
    vocab = int(re.search(r"vocabulary: ([\d,]+) tokens", run.out).group(1).replace(",", ""))
    h, i, layers = 64, 128, 2
    # Per layer: attention q, k, v, o (h x h each, no biases) and a gated feed-forward of 3 h x i, with two norms of h
    # (ModernBERT's LayerNorm has no bias here); the output layer is tied to the token embeddings.
    if model_type == "llama":
        expected = vocab * h + layers * (4 * h * h + 3 * h * i + 2 * h) + h
    else:
        # ModernBERT: q, k, v as one h x 3h matmul (same count); its first layer's attention norm is an identity;
        # an embedding norm, a final norm, and the MLM head's dense h x h + norm and output bias of vocab.
        expected = vocab * h + h + layers * (4 * h * h + 3 * h * i + 2 * h) - h + h + (h * h + h) + vocab
    assert params == expected, run.out[-2000:]
    # 6N + 12·L·h·T per token, N the matmul weights: all but the embeddings, plus the tied output layer (vocab x h).
    tokens = 100 * 8 * 64
    matmuls = params - vocab * h - (h if model_type == "modernbert" else 0)  # ModernBERT's embedding norm too
    flops = float(re.search(r"training compute: ([\d.e+]+) FLOPs", run.out).group(1))
    assert flops == pytest.approx(tokens * (6 * (matmuls + vocab * h) + 12 * layers * h * 64), rel=5e-3)


@pytest.mark.parametrize("streaming", [False, True], ids=["map-style", "streamed"])
def test_whole_word_mask_trains_through_train_py(train, streaming):
    run = train("mlm.yaml", *TINY, "--whole_word_mask", "true", "--mlm_probability", "0.3", "--streaming",
                str(streaming).lower(), "--max_steps", "10", "--eval_steps", "10", "--save_steps", "10")  # fmt: skip
    results = json.loads((run.output_dir / "all_results.json").read_text())
    assert results["eval_loss"] < math.log(1000)  # it learned; the offsets reached the collator, not the model
    saved = yaml.safe_load((run.output_dir / "recipe.yaml").read_text())
    assert saved["whole_word_mask"] is True
    assert "Random token replacement is not supported" not in run.out  # the 100/0/0 split is set, not warned about


def test_whole_word_mask_reaches_the_trainers_batches(tmp_path, cache_dir):
    # The Trainer drops dataset columns its model does not take unless told not to: without the offsets the collator
    # would mask single tokens, silently. A batch as the Trainer's loader gives it masks whole words.
    from lm_recipes import recipe as recipes
    from lm_recipes import training

    flags = ["--whole_word_mask", "true", "--mlm_probability", "0.3", "--output_dir", str(tmp_path / "out"),
             "--cache_dir", cache_dir, "--report_to", "none"]  # fmt: skip
    r = recipes.load([str(ROOT / "recipes/mlm.yaml"), *TINY, *flags])
    trainer = training.build(r)
    tok = trainer.processing_class
    for loader in (trainer.get_train_dataloader(), trainer.get_eval_dataloader()):
        batch = next(iter(loader))
        assert "offset_mapping" not in batch  # used by the collator, dropped before the model
        picked = batch["labels"] != -100
        assert (batch["input_ids"][picked] == tok.mask_token_id).all()
        pieces = [[t.startswith("##") for t in tok.convert_ids_to_tokens(row)] for row in batch["labels"].where(
            picked, batch["input_ids"]).tolist()]  # fmt: skip
        cont = torch.tensor(pieces)[:, 1:]
        assert cont.any() and torch.equal(picked[:, 1:][cont], picked[:, :-1][cont])
