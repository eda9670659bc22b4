"""Prepared data: scripts/prepare.py makes a recipe's tokenizer and blocks once; training loads them instead of
tokenizing, to the same result, and refuses a prepared folder that no longer matches its recipe or its files."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, TINY
from lm_recipes import prepared_data
from lm_recipes.cli import main, prepare_main

PREPARE = ROOT / "scripts" / "prepare.py"
SHORT = [*TINY, "--max_steps", "10", "--eval_strategy", "no", "--save_strategy", "no"]


def prepare(env, *args):
    proc = subprocess.run([sys.executable, str(PREPARE), *args], env=env, capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stdout + proc.stderr


def test_a_prepared_recipe_trains_to_the_same_result_without_tokenizing(train, env, tmp_path):
    cache = str(tmp_path / "cache")
    flags = [*SHORT, "--cache_dir", cache]
    code, log = prepare(env, str(ROOT / "recipes" / "clm.yaml"), *flags)
    assert code == 0, log[-3000:]
    folder = log.split("prepared: ")[1].split()[0]
    manifest = json.loads((Path(folder) / prepared_data.MANIFEST).read_text())
    assert manifest["keys"]["block_size"] == 64 and manifest["splits"]["train"] > 1000
    loaded = train("clm.yaml", *flags, output_dir=tmp_path / "loaded")
    assert f"Loaded the prepared tokenizer and data from {folder}" in loaded.out
    assert "Tokenizing" not in loaded.out and "Training a bpe tokenizer" not in loaded.out
    # The same recipe made in the run itself (another cache: nothing prepared there) trains to the same numbers.
    made = train("clm.yaml", *SHORT, "--cache_dir", str(tmp_path / "other"), output_dir=tmp_path / "made")
    assert "Tokenizing" in made.out and "Loaded the prepared" not in made.out
    assert loaded.losses() == made.losses()
    results = [json.loads((r.output_dir / "eval_results.json").read_text()) for r in (loaded, made)]
    assert results[0]["eval_loss"] == results[1]["eval_loss"]
    # A key moved since: the run prepares for itself, and says which key differs from what was prepared.
    moved = train("clm.yaml", *flags, "--block_size", "32", "--plan", output_dir=tmp_path / "moved")
    assert f"the data prepared last differs: block_size is 64 there, 32 here (in {folder})" in moved.out


def test_a_prepared_dir_of_other_keys_or_files_is_refused_naming_what_differs(tmp_path, capsys, cache_dir):
    data = tmp_path / "data.txt"
    data.write_text("\n\n".join(f"Document {i} has a few words of its own, {i} times over." for i in range(400)))
    where = tmp_path / "prepared"
    base = [str(ROOT / "recipes" / "clm.yaml"), *TINY, "--train_files", str(data), "--prepared_dir", str(where),
            "--cache_dir", cache_dir, "--output_dir", str(tmp_path / "out")]  # fmt: skip
    assert prepare_main(base) == 0
    assert "prepared: " in capsys.readouterr().out
    before = {p: p.read_bytes() for p in where.rglob("*") if p.is_file()}

    assert main([*base, "--block_size", "32"]) == 2
    err = capsys.readouterr().err
    assert f"prepared_dir: {where} does not match the recipe: block_size is 64 there, 32 here" in err
    data.write_text(data.read_text() + "\n\nOne more document.\n")
    assert main(base) == 2
    assert f"prepared_dir: {where} was prepared from other data: {data} changed since" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert {p: p.read_bytes() for p in where.rglob("*") if p.is_file()} == before
    data.write_text(data.read_text().removesuffix("\n\nOne more document.\n"))  # matching again, then damaged:
    assert prepare_main(base) == 0
    capsys.readouterr()
    shutil.rmtree(where / "train")
    assert main(base) == 2
    assert f"prepared_dir: {where} is damaged (FileNotFoundError" in capsys.readouterr().err


def test_a_prepare_cut_short_leaves_the_folder_before_it(tmp_path, capsys, cache_dir):
    """A staged folder left by a killed prepare.py is not data: training ignores it, the next prepare removes it."""
    where = tmp_path / "prepared"
    base = [str(ROOT / "recipes" / "clm.yaml"), *TINY, "--prepared_dir", str(where), "--cache_dir", cache_dir,
            "--max_train_samples", "10"]  # fmt: skip
    staged = tmp_path / "prepared.partial-12345"
    staged.mkdir()
    (staged / "train").mkdir()
    assert prepare_main(base) == 0
    manifest = json.loads((where / prepared_data.MANIFEST).read_text())
    assert not staged.exists() and manifest["splits"]["train"] > 10  # the whole data: limits apply when a run loads
    assert "max_train_samples" not in manifest["keys"]


def test_a_streamed_recipe_prepares_its_tokenizer_and_validation_only(train, env, tmp_path):
    flags = [*TINY, "--streaming", "true", "--max_steps", "5", "--eval_steps", "5", "--save_strategy", "no",
             "--cache_dir", str(tmp_path / "cache")]  # fmt: skip
    code, log = prepare(env, str(ROOT / "recipes" / "clm.yaml"), *flags)
    assert code == 0 and "the training text streams as it trains" in log, log[-3000:]
    run = train("clm.yaml", *flags)
    assert "Loaded the prepared tokenizer and data" in run.out and "Training a bpe tokenizer" not in run.out
    assert any("eval_loss" in h for h in run.state()["log_history"])


def test_prepare_refuses_a_bad_recipe_and_writes_nothing(tmp_path, capsys, cache_dir):
    args = [str(ROOT / "recipes" / "clm.yaml"), "--block_size", "0", "--prepared_dir", str(tmp_path / "p")]
    assert prepare_main(args) == 2
    assert "error: the recipe cannot be prepared" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
