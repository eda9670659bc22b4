"""What a run says is true, and short: the real vocabulary size, the compact start, `--help` with the recipe's
values, tied weights on resume, the model card's usage line, and the exit statuses under accelerate launch."""

import json
import re
import subprocess
import sys

import yaml
from safetensors import safe_open
from transformers import AutoTokenizer

from conftest import ROOT, TINY

# The most lines a run prints before its first training log, data caches warm (see README, "What a run prints").
LINES_BEFORE_FIRST_STEP = 30


def test_a_corpus_too_small_for_vocab_size_gets_the_real_size_everywhere(train, tmp_path):
    text = tmp_path / "small.txt"
    text.write_text("\n\n".join(f"Paragraph {i}: the cat sat on the mat, and the dog lay by the door." for i in
                                range(200)))  # fmt: skip
    flags = [*TINY, "--vocab_size", "8000", "--train_files", str(text), "--save_steps", "2", "--eval_strategy", "no",
             "--samples", "the [MASK] sat."]  # fmt: skip
    run = train("mlm.yaml", *flags, "--max_steps", "2")
    real = len(AutoTokenizer.from_pretrained(run.output_dir))
    assert real < 200  # the text has a few dozen words: far below 8000
    assert f"vocab_size: the training text yields {real} tokens at min_frequency 2, not the 8000 asked" in run.out
    assert f"vocabulary: {real:,} tokens" in run.out  # the plan
    assert yaml.safe_load((run.output_dir / "recipe.yaml").read_text())["vocab_size"] == real
    again = train("mlm.yaml", *flags, "--max_steps", "3")  # the same recipe, one step more: resumes
    assert "Resuming from" in again.out and again.state()["global_step"] == 3
    saved = train(str(run.output_dir / "recipe.yaml"), "--max_steps", "4")  # the saved recipe runs on too
    assert saved.state()["global_step"] == 4


def test_the_start_is_short_and_names_what_differs_from_the_defaults(trained, env, tmp_path):
    flags = [*TINY, "--eval_strategy", "no", "--save_strategy", "no"]
    trained("clm", *flags, "--max_steps", "1")  # the caches warm, as for a user's second run
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "scripts" / "train.py"), str(ROOT / "recipes" / "clm.yaml"), *flags,
           "--max_steps", "5", "--output_dir", str(out)]  # fmt: skip
    # The console as a user sees it: stdout and stderr interleaved, progress bars' carriage returns as new lines.
    console = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True).stdout
    lines = re.split(r"[\r\n]+", console)
    first_step = next(i for i, line in enumerate(lines) if line.startswith("{'loss'"))
    assert first_step <= LINES_BEFORE_FIRST_STEP, "\n".join(lines[:first_step])
    start = "\n".join(lines[:first_step])
    assert "learning_rate=0.002" in start and "max_steps=5" in start and "objective=clm" in start
    assert "seed=" not in start and "adam_beta1" not in start  # defaults are in recipe.yaml, not on the console
    assert yaml.safe_load((out / "recipe.yaml").read_text())["adam_beta1"] == 0.9


def test_help_shows_the_recipes_values(env):
    train_py = str(ROOT / "scripts" / "train.py")
    proc = subprocess.run([sys.executable, train_py, str(ROOT / "recipes" / "clm.yaml"), "--max_steps", "7", "--help"],
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = " ".join(proc.stdout.split())
    assert re.search(r"--learning_rate LEARNING_RATE.*?\(default: 0\.001\)", text)  # clm.yaml's, not 5e-05
    assert re.search(r"--max_steps MAX_STEPS.*?\(default: 7\)", text)  # the flag's
    assert re.search(r"--seed SEED.*?\(default: 42\)", text)  # a key the recipe leaves alone
    plain = subprocess.run([sys.executable, train_py, "--help"], env=env, capture_output=True, text=True, timeout=120)
    assert re.search(r"--learning_rate LEARNING_RATE.*?\(default: 5e-05\)", " ".join(plain.stdout.split()))


def test_resume_keeps_tied_weights_tied_without_a_warning(train):
    flags = [*TINY, "--save_steps", "5", "--eval_strategy", "no"]
    train("clm.yaml", *flags, "--max_steps", "5")
    again = train("clm.yaml", *flags, "--max_steps", "10")
    assert "Resuming from" in again.out and "missing keys" not in again.out
    # Had the tie broken on load, lm_head would have trained apart from the input embedding and been saved too.
    with safe_open(again.output_dir / "model.safetensors", "pt") as f:
        names = set(f.keys())
    assert "transformer.wte.weight" in names and "lm_head.weight" not in names


def test_the_model_cards_usage_line_runs(trained, env, tmp_path):
    out, _ = trained("clm", *TINY, "--max_steps", "1", "--eval_strategy", "no", "--save_strategy", "no")
    card = (out / "README.md").read_text()
    code = card.split("```python\n", 1)[1].split("```", 1)[0]
    assert f'model="{out}"' in code  # the folder as the run named it (the Hub id once pushed: see test_hub)
    proc = subprocess.run([sys.executable, "-c", code + "\nprint(type(pipe).__name__)"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0 and "TextGenerationPipeline" in proc.stdout, proc.stderr[-2000:]


def test_a_continued_runs_card_lists_only_the_plays_it_validated_on(trained):
    out, _ = trained("clm", *TINY, "--max_steps", "1", "--eval_strategy", "no", "--save_strategy", "no",
                     "--genres", "comedies", "--max_eval_samples", "4")  # fmt: skip
    card = (out / "README.md").read_text()
    assert "Held out whole for validation: twelfth-night." in card


def test_exit_statuses_under_accelerate_launch(env, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("objective: clm\nlerning_rate: 1e-3\n")
    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(ROOT / "accelerate_config.yaml"),
    ]
    train_py = str(ROOT / "scripts" / "train.py")
    direct = subprocess.run([sys.executable, train_py, str(bad)], env=env, capture_output=True, text=True)
    launched = subprocess.run([*launch, train_py, str(bad)], env=env, capture_output=True, text=True)
    quiet = subprocess.run([*launch, "--quiet", train_py, str(bad)], env=env, capture_output=True, text=True)
    # What README.md, "Exit statuses", says: 2 from train.py; accelerate's launcher turns any failure into 1, with a
    # CalledProcessError traceback unless --quiet; our message is printed first either way.
    assert direct.returncode == 2 and "Traceback" not in direct.stderr
    assert launched.returncode == quiet.returncode == 1
    for proc in (direct, launched, quiet):
        assert "unknown key `lerning_rate`; did you mean `learning_rate`?" in proc.stderr
    assert "CalledProcessError" in launched.stderr and "Traceback" not in quiet.stderr
    for proc in (launched, quiet):  # with a config file, accelerate fills in no defaults and warns of none
        assert "were not passed to `accelerate launch`" not in proc.stderr


def test_accelerate_config_says_how_to_start_several_processes():
    comments = [line for line in (ROOT / "accelerate_config.yaml").read_text().splitlines() if line.startswith("#")]
    commands = [line for line in comments if "accelerate launch" in line]
    assert not any("--cpu" in line for line in commands)  # --cpu --num_processes N starts one process: see test_train
    assert any("--multi_gpu --num_processes N" in line for line in commands)


def test_every_card_json_result_is_the_runs(trained):
    out, _ = trained("clm", *TINY, "--max_steps", "1", "--eval_strategy", "no", "--save_strategy", "no")
    results = json.loads((out / "all_results.json").read_text())
    card = (out / "README.md").read_text()
    assert f"| train_loss | {results['train_loss']:.4g} |" in card
