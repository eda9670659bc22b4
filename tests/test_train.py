"""End to end through scripts/train.py, as a user runs it: tiny real models on the embedded corpus."""

import json
import math
import os
import subprocess
import sys

from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer, pipeline

from conftest import ROOT, TINY


def assert_outputs(run):
    out = run.output_dir
    for name in ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "recipe.yaml",
                 "trainer_state.json", "all_results.json"):  # fmt: skip
        assert (out / name).is_file(), name
    results = json.loads((out / "all_results.json").read_text())
    assert math.isclose(results["eval_perplexity"], math.exp(results["eval_loss"]), rel_tol=1e-6)
    assert "train_loss" in results
    losses = run.losses()
    assert sum(losses[-2:]) / 2 < losses[0] - 0.5, losses  # the model learned something
    checkpoints = sorted(out.glob("checkpoint-*"))
    assert checkpoints and all((c / "tokenizer_config.json").is_file() for c in checkpoints)
    config, tok = AutoConfig.from_pretrained(out), json.loads((out / "tokenizer_config.json").read_text())
    positions = getattr(config, "max_position_embeddings", None) or config.n_positions
    assert tok["model_max_length"] == positions == 64
    return config


def test_mlm_trains_and_loads_with_fill_mask(train):
    run = train("mlm.yaml", *TINY, "--max_steps", "40", "--eval_steps", "20", "--save_steps", "20")
    config = assert_outputs(run)
    tok = AutoTokenizer.from_pretrained(run.output_dir)
    assert config.pad_token_id == tok.pad_token_id
    assert type(AutoModelForMaskedLM.from_pretrained(run.output_dir)).__name__ == "BertForMaskedLM"
    filled = pipeline("fill-mask", model=str(run.output_dir))("to be or not to [MASK].")
    # A model that learned nothing guesses uniformly among the vocabulary: ln(V) nats, each filler scoring 1/V.
    uniform = math.log(len(tok))
    assert json.loads((run.output_dir / "all_results.json").read_text())["eval_loss"] < uniform - 0.2
    assert len(filled) == 5 and filled[0]["score"] > 10 / len(tok)
    assert "eval_perplexity" in run.out and "global batch: 8 sequences" in run.out


def test_clm_trains_and_loads_with_text_generation(train):
    run = train("clm.yaml", *TINY, "--max_steps", "40", "--eval_steps", "20", "--save_steps", "20")
    config = assert_outputs(run)
    tok = AutoTokenizer.from_pretrained(run.output_dir)
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (
        tok.bos_token_id,
        tok.eos_token_id,
        tok.pad_token_id,
    )
    assert tok("ROMEO:")["input_ids"][0] != tok.bos_token_id
    assert type(AutoModelForCausalLM.from_pretrained(run.output_dir)).__name__ == "GPT2LMHeadModel"
    text = pipeline("text-generation", model=str(run.output_dir))("ROMEO:", max_new_tokens=8, do_sample=False)
    assert text[0]["generated_text"].startswith("ROMEO:")


def test_rerun_resumes_from_the_last_checkpoint_and_reuses_the_cache(train, tmp_path):
    cache = ("--cache_dir", str(tmp_path / "cache"))  # its own: no prepared data there, the run makes its blocks
    first = train("clm.yaml", *TINY, "--max_steps", "10", "--save_steps", "5", "--eval_steps", "5", *cache)
    assert first.state()["global_step"] == 10
    again = train("clm.yaml", *TINY, "--max_steps", "16", "--save_steps", "5", "--eval_steps", "5", *cache)
    assert "Resuming from" in again.out and "checkpoint-10" in again.out
    state = again.state()
    assert state["global_step"] == 16
    steps = [h["step"] for h in state["log_history"] if "loss" in h]
    # One history, continued; step 16 saves the end of the run, so the divergence guard logs it before the save.
    assert steps == [5, 10, 15, 16]
    assert "Reusing the tokenizer" in again.out
    assert "Tokenizing" not in again.out  # datasets shows this progress bar only when it tokenizes


def snapshot(folder):
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("*")}


def test_output_dir_of_a_different_recipe_is_refused_untouched(train):
    first = train("mlm.yaml", *TINY, "--max_steps", "5", "--save_steps", "5", "--eval_strategy", "no")
    before = snapshot(first.output_dir)
    run = train("mlm.yaml", *TINY, "--max_steps", "5", "--eval_strategy", "no", "--vocab_size", "900", check=False)
    assert run.returncode == 2
    assert "holds checkpoints of a different recipe (vocab_size: 1000 there, 900 here)" in run.out
    assert "use another output_dir" in run.out
    assert snapshot(first.output_dir) == before


def test_bad_recipe_exits_nonzero_and_writes_nothing(train, tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("objective: clm\nblock_size: 64\nmax_position_embeddings: 32\nvocab_sise: 10\n")
    run = train(str(recipe), check=False)
    assert run.returncode == 2
    assert "unknown key `vocab_sise`; did you mean `vocab_size`?" in run.out
    assert not run.output_dir.exists()


def test_text_column_missing_is_refused_before_writing(train, tmp_path):
    (tmp_path / "d.jsonl").write_text('{"body": "Some text here."}\n' * 50)
    run = train("mlm.yaml", *TINY, "--train_files", str(tmp_path / "d.jsonl"), check=False)
    assert run.returncode == 2
    assert "text_column: `text` is not a column of the training data; its columns are ['body']" in run.out
    assert not run.output_dir.exists()


def test_two_processes_load_prepared_data_and_share_the_global_batch(train, env, tmp_path):
    """Unprepared, two processes are refused at once (one would tokenize while the other waits); prepare.py makes
    the data once, and then they load it, tokenizing nothing."""
    # accelerate's `--cpu --num_processes 2` starts one process unless given an MPI hostfile; its torchrun path
    # (--multi_gpu) starts two, and on a machine without a GPU they train on the CPU over gloo.
    config = str(ROOT / "accelerate_config.yaml")
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config, "--multi_gpu",
                "--num_processes", "2"]  # fmt: skip
    fresh = str(tmp_path / "fresh_cache")  # nothing prepared yet
    flags = [*TINY, "--max_steps", "6", "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "2",
             "--eval_strategy", "no", "--save_steps", "6", "--include_num_input_tokens_seen", "true", "--cache_dir",
             fresh]  # fmt: skip
    refused = train("mlm.yaml", *flags, launcher=launcher, check=False)
    assert refused.returncode != 0 and "python scripts/prepare.py RECIPE.yaml" in refused.out, refused.out[-3000:]
    assert "Tokenizing" not in refused.out and not refused.output_dir.exists()
    prep = subprocess.run([sys.executable, str(ROOT / "scripts" / "prepare.py"), str(ROOT / "recipes" / "mlm.yaml"),
                           *flags], env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert prep.returncode == 0 and "prepared: " in prep.stdout, prep.stdout[-2000:] + prep.stderr[-3000:]
    run = train("mlm.yaml", *flags, launcher=launcher)
    assert "global batch: 16 sequences = 4 per device x 2 accumulation steps x 2 processes" in run.out
    assert "Loaded the prepared tokenizer and data from" in run.out
    assert "Tokenizing" not in run.out and "Training a wordpiece tokenizer" not in run.out, run.out[-4000:]
    state = run.state()
    assert state["global_step"] == 6
    assert state["log_history"][-1]["num_input_tokens_seen"] == 6 * 16 * 64
    assert os.path.isfile(run.output_dir / "model.safetensors")
    losses = run.losses()
    assert all(5 < loss < 8 for loss in losses), losses  # about ln(1000): not multiplied by accumulation or processes
