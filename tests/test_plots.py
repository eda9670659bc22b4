"""Training plots: one panel per group of logged keys, the newest checkpoint of a running run, NaN-proof, and
`scripts/plot.py` as a user runs it."""

import json
import math
import subprocess
import sys

import pytest
from PIL import Image

from conftest import ROOT
from lm_recipes.plots import PlotError, find_state, lr_schedule_figure, plot_run, save, training_figure

PNG = b"\x89PNG\r\n\x1a\n"
ALL_PANELS = [
    "Loss",
    "Perplexity",
    "Validation accuracy",
    "Learning rate",
    "Gradient norm",
    "Weight norm",
    "Throughput",
]


def history(last_step: int = 50, classification: bool = False) -> list[dict]:
    """A run of 50 steps as the Trainer logs it up to `last_step`: training entries every 5 steps, evaluation every
    10, then the summary."""
    entries = []
    for step in range(5, last_step + 1, 5):
        loss = 7.0 * math.exp(-step / 40) + 3.0
        lr = 2e-3 * min(step / 10, (50 - step) / 40)  # 10 warmup steps, then linear decay
        train = {"loss": loss, "learning_rate": lr, "grad_norm": 4.0 / step**0.5, "epoch": step / 100, "step": step}
        if not classification:
            tokens = {"tokens_per_second": 12000.0 + step, "tokens_per_second_per_device": 6000.0 + step / 2}
            train |= {"perplexity": math.exp(loss), "weight_norm": 80.0 + step / 10, **tokens}
        entries.append(train)
        if step % 10 == 0:
            if classification:
                scores = {"eval_accuracy": 0.3 + step / 100, "eval_macro_f1": 0.2 + step / 100}
            else:
                scores = {"eval_perplexity": math.exp(loss + 0.2), "eval_accuracy": 0.1 + step / 200}
            entries.append({"eval_loss": loss + 0.2, **scores, "eval_runtime": 0.4, "epoch": step / 100, "step": step})
    summary = {"train_runtime": 12.3, "train_samples_per_second": 60.1, "train_loss": 4.2, "total_flos": 1e12}
    return entries + [{**summary, "epoch": last_step / 100, "step": last_step}]


def write_state(folder, log_history: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    state = {"log_history": log_history, "global_step": log_history[-1]["step"] if log_history else 0}
    (folder / "trainer_state.json").write_text(json.dumps(state))


def titles(fig) -> list[str]:
    return [ax.get_title() for ax in fig.axes]


def test_plot_run_writes_a_small_png_with_every_panel(tmp_path):
    write_state(tmp_path, history())
    path = plot_run(tmp_path)
    assert path == tmp_path / "training.png"
    assert path.read_bytes().startswith(PNG)
    assert path.stat().st_size < 100_000  # ~46 KB: a 256-colour palette
    with Image.open(path) as image:
        assert image.size == (1260, 900)  # 3 columns × 3 rows of 4.2 × 3.0 inches at 100 dpi
    fig = training_figure(history(), title="run")
    assert titles(fig) == ALL_PANELS
    assert all(ax.get_xlabel() == "optimizer step" for ax in fig.axes)
    loss = fig.axes[0]
    assert [line.get_label() for line in loss.lines] == ["train", "validation"]
    assert list(loss.lines[1].get_xdata()) == [10, 20, 30, 40, 50]  # one point per evaluation
    assert fig.axes[1].get_yscale() == "log" and fig.axes[2].get_ylim() == (0.0, 1.0)


@pytest.mark.parametrize(
    ("drop", "classification", "expected"),
    [
        ({"weight_norm"}, False, [p for p in ALL_PANELS if p != "Weight norm"]),
        (set(), True, ["Loss", "Validation accuracy", "Learning rate", "Gradient norm"]),
        ({"loss", "eval_loss", "learning_rate", "grad_norm"}, True, ["Validation accuracy"]),
    ],
)
def test_only_logged_keys_get_a_panel(drop, classification, expected):
    log_history = [
        {k: v for k, v in entry.items() if k not in drop} for entry in history(classification=classification)
    ]
    assert titles(training_figure(log_history)) == expected


def test_mfu_is_a_note_not_an_axis():
    log_history = [{**entry, "mfu": 0.412} if "loss" in entry else entry for entry in history()]
    fig = training_figure(log_history)
    assert len(fig.axes) == 7
    assert "MFU 41.2% (last)" in [text.get_text() for text in fig.axes[-1].texts]


def test_a_run_still_going_plots_its_newest_checkpoint(tmp_path):
    write_state(tmp_path / "checkpoint-5", history(last_step=5))
    write_state(tmp_path / "checkpoint-10", history(last_step=10))  # newer, though "checkpoint-5" sorts after it
    state = find_state(tmp_path)
    assert state == tmp_path / "checkpoint-10" / "trainer_state.json"
    fig = training_figure(json.loads(state.read_text())["log_history"])
    assert fig.axes[0].lines[0].get_xdata()[-1] == 10
    assert plot_run(tmp_path).read_bytes().startswith(PNG)
    write_state(tmp_path, history(last_step=50))  # the run ended: its own state wins
    assert find_state(tmp_path) == tmp_path / "trainer_state.json"


def test_nan_and_inf_are_skipped(tmp_path):
    log_history = history()
    for entry in log_history:
        if entry["step"] >= 30 and "loss" in entry:  # diverged at step 30
            entry |= {"loss": math.nan, "perplexity": math.inf, "grad_norm": math.nan}
        if entry["step"] == 40 and "eval_loss" in entry:
            entry["eval_loss"] = math.inf
    fig = training_figure(log_history)
    assert len(fig.axes) == 7
    train, validation = fig.axes[0].lines
    assert list(train.get_xdata()) == [5, 10, 15, 20, 25] and list(validation.get_xdata()) == [10, 20, 30, 50]
    assert all(math.isfinite(y) for ax in fig.axes for line in ax.lines for y in line.get_ydata())
    assert "5 NaN/inf not drawn, first at step 30" in [text.get_text() for text in fig.axes[4].texts]
    write_state(tmp_path, log_history)  # json writes NaN and Infinity; they read back as floats
    assert plot_run(tmp_path).read_bytes().startswith(PNG)


@pytest.mark.parametrize("log_history", [[], history()[-1:]], ids=["empty", "summary-only"])
def test_nothing_logged_yet(tmp_path, log_history):
    fig = training_figure(log_history)
    assert len(fig.axes) == 1
    assert [text.get_text() for text in fig.axes[0].texts] == ["nothing logged yet"]
    write_state(tmp_path, log_history)
    assert plot_run(tmp_path).read_bytes().startswith(PNG)


def test_not_a_run_folder_says_so(tmp_path):
    (tmp_path / "checkpoint-3").mkdir()  # a checkpoint being written: no state yet
    with pytest.raises(PlotError, match="checkpoint-3 has no trainer_state.json"):
        plot_run(tmp_path)
    with pytest.raises(PlotError, match="does not exist"):
        plot_run(tmp_path / "missing")


def test_plot_script(tmp_path):
    run, empty = tmp_path / "run", tmp_path / "empty"
    write_state(run, history())
    empty.mkdir()
    script = [sys.executable, str(ROOT / "scripts" / "plot.py")]
    ok = subprocess.run([*script, str(run)], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == str(run / "training.png")
    assert (run / "training.png").read_bytes().startswith(PNG)
    bad = subprocess.run([*script, str(empty)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.startswith(f"error: {empty} is not a training output folder")
    assert list(empty.iterdir()) == []


def test_lr_schedule_figure(tmp_path):
    steps = list(range(0, 101, 10))
    lrs = [1e-3 * min(s / 20, (100 - s) / 80) for s in steps]
    fig = lr_schedule_figure(steps, lrs, "mlm.yaml: linear schedule", warmup_steps=20)
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    assert list(ax.lines[0].get_xdata()) == steps and list(ax.lines[0].get_ydata()) == lrs
    assert list(ax.lines[1].get_xdata()) == [20, 20]  # the end of warmup
    assert ax.get_title() == "mlm.yaml: linear schedule" and ax.get_ylabel() == "learning rate"
    path = save(fig, tmp_path / "new" / "lr.png")
    assert path == tmp_path / "new" / "lr.png" and path.read_bytes().startswith(PNG)
