"""The README tells the truth: its test command is the one CI runs, and its train commands parse."""

import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lm_recipes import recipe as recipes

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
COMMANDS = [
    line.strip()
    for line in README.splitlines()
    if line.startswith("    ") and re.search(r"scripts/train\.py (recipes|OUTPUT_DIR)/", line)
]


def test_ci_runs_the_readme_test_command():
    test_command = next(line.strip() for line in README.splitlines() if line.strip().endswith("pytest"))
    assert test_command in (ROOT / ".ci" / "run").read_text()


def test_bad_input_example_is_what_train_py_prints(tmp_path, capsys):
    from lm_recipes.cli import main

    example = README.split("With a `bad.yaml` of", 1)[1].split("`python scripts/train.py bad.yaml` says:", 1)
    (tmp_path / "bad.yaml").write_text(textwrap.dedent(example[0]).strip() + "\n")
    expected = [line.strip() for line in example[1].split("\n\n")[1].splitlines() if line.strip()]
    assert main([str(tmp_path / "bad.yaml")]) == 2
    printed = capsys.readouterr().err.replace(str(tmp_path) + "/", "")
    assert [line.strip() for line in printed.splitlines()][: len(expected)] == expected


def test_readme_opens_with_install_and_train():
    first = next(line.strip() for line in README.splitlines() if line.startswith("    "))
    assert "pip install" in first and "scripts/train.py recipes/" in first


@pytest.mark.parametrize("command", COMMANDS)
def test_every_train_command_in_the_readme_parses(command):
    words = shlex.split(command.split("#")[0].split("&&")[-1])
    words = words[words.index(next(w for w in words if w.endswith("scripts/train.py"))) + 1 :]
    if "--help" in words:
        return
    words = [w for w in words if w != "--plan"]  # cli.main's own flag, not a recipe key
    for config in re.findall(r"--config_file (\S+)", command):
        assert (ROOT / config).is_file()
    words[0] = str(ROOT / words[0]) if not words[0].startswith("OUTPUT_DIR") else str(ROOT / "recipes/mlm.yaml")
    assert recipes.load(words)


@pytest.mark.parametrize("script", sorted(set(re.findall(r"scripts/(\w+)\.py", README))))
def test_every_script_in_the_readme_exists_and_explains_itself(script, env):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / f"{script}.py"), "--help"], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0 and "usage:" in proc.stdout, proc.stderr[-2000:]
