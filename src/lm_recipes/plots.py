"""Plots: a run's curves from its `trainer_state.json` (loss, perplexity, accuracy, learning rate, norms,
throughput) as one PNG, and the learning-rate schedule a run will follow.

Figures are `matplotlib.figure.Figure` objects built without pyplot, so nothing here opens a window or changes the
user's matplotlib backend; `savefig` writes PNGs through the Agg canvas.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure
from PIL import Image

STATE = "trainer_state.json"
PANEL_SIZE = (4.2, 3.0)  # inches per panel; at DPI 100 a 7-panel PNG is 1260 × 900 pixels
DPI = 100
COLUMNS = 3


class PlotError(Exception):
    """A folder cannot be plotted; the message names it and the fix."""


@dataclass(frozen=True)
class Panel:
    title: str
    keys: tuple[str, ...]  # log_history keys; those in SERIES are drawn as lines, in legend order
    ylabel: str
    log: bool = False
    ylim: tuple[float, float | None] | None = None  # (bottom, top); a top of None follows the data


# In drawing order; a panel is drawn only when at least one of its keys was logged. Throughput starts from zero so a
# dip reads at its true size; its `mfu` (a fraction of the devices' peak FLOPs) is a note, as a twin axis would add an
# axes.
PANELS = (
    Panel("Loss", ("loss", "eval_loss"), "cross-entropy (nats)"),
    Panel("Perplexity", ("perplexity", "eval_perplexity"), "perplexity (exp of loss)", log=True),
    Panel("Validation accuracy", ("eval_accuracy", "eval_macro_f1"), "fraction", ylim=(0.0, 1.0)),
    Panel("Learning rate", ("learning_rate",), "learning rate"),
    Panel("Gradient norm", ("grad_norm",), "L2 norm before clipping", log=True),
    Panel("Weight norm", ("weight_norm",), "L2 norm of all parameters"),
    Panel("Throughput", ("tokens_per_second", "tokens_per_second_per_device", "mfu"), "tokens / s", ylim=(0, None)),
)

# Validation keys have one point per evaluation: markers make even a single one show.
_TRAIN, _DASHED = {"color": "C0"}, {"color": "C0", "linestyle": "--"}
_VALIDATION = {"color": "C1", "marker": "o", "markersize": 4}
SERIES = {  # key: (legend label, line style)
    "loss": ("train", _TRAIN),
    "eval_loss": ("validation", _VALIDATION),
    "perplexity": ("train", _TRAIN),
    "eval_perplexity": ("validation", _VALIDATION),
    "eval_accuracy": ("accuracy", _VALIDATION),
    "eval_macro_f1": ("macro F1", {**_VALIDATION, "color": "C2", "marker": "s"}),
    "learning_rate": ("learning rate", _TRAIN),
    "grad_norm": ("before clipping", _TRAIN),
    "weight_norm": ("all parameters", _TRAIN),
    "tokens_per_second": ("all processes", _TRAIN),
    "tokens_per_second_per_device": ("per device", _DASHED),
}


def _series(history: list[dict], key: str) -> tuple[list[int], list[float], list[int]]:
    """The steps and finite values of `key`, and the steps where it was NaN or inf (a diverged run), not drawn."""
    steps, values, bad = [], [], []
    for entry in (e for e in history if key in e and "step" in e):
        if isinstance(entry[key], (int, float)) and math.isfinite(entry[key]):
            steps.append(entry["step"])
            values.append(entry[key])
        else:
            bad.append(entry["step"])
    return steps, values, bad


def _note(ax, x: float, text: str, **kwargs) -> None:
    """A small boxed text at the bottom of `ax`, `x` in axes fraction."""
    box = {"facecolor": "white", "alpha": 0.8, "edgecolor": "none"}
    ax.text(x, 0.03, text, transform=ax.transAxes, fontsize="small", bbox=box, **kwargs)


def _draw(ax, panel: Panel, history: list[dict], present: set[str]) -> None:
    not_finite = []
    for key in (k for k in panel.keys if k in present and k in SERIES):  # drawn even when empty: stable line order
        steps, values, bad = _series(history, key)
        not_finite += bad
        label, style = SERIES[key]
        ax.plot(steps, values, label=label, **style)
    ax.set_title(panel.title)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(panel.ylabel)
    ax.grid(alpha=0.3)
    if panel.log:
        ax.set_yscale("log", nonpositive="mask")
    if panel.ylim:
        ax.set_ylim(*panel.ylim)
    if len(ax.lines) > 1:
        ax.legend(fontsize="small")
    if not_finite:
        _note(ax, 0.02, f"{len(not_finite)} NaN/inf not drawn, first at step {min(not_finite)}", color="C3")
    if "mfu" in panel.keys and (mfu := _series(history, "mfu")[1]):
        _note(ax, 0.98, f"MFU {mfu[-1]:.1%} (last)", ha="right")


def training_figure(log_history: list[dict], title: str | None = None) -> Figure:
    """One panel per group of logged keys (see `PANELS`), 3 columns wide, every x axis in optimizer steps. Entries
    with none of the plotted keys (the final `train_runtime` summary) are ignored; NaN/inf values are skipped and
    counted in a note. A history with nothing to plot gives one axes saying "nothing logged yet"."""
    present = {key for entry in log_history for key in entry}
    panels = [panel for panel in PANELS if present.intersection(panel.keys)]
    columns = min(COLUMNS, max(1, len(panels)))
    rows = max(1, math.ceil(len(panels) / columns))
    size = (PANEL_SIZE[0] * columns, PANEL_SIZE[1] * rows)
    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, panel in zip(axes, panels, strict=False):
        _draw(ax, panel, log_history, present)
    for ax in axes[max(1, len(panels)) :]:
        ax.remove()  # so len(fig.axes) is the number of panels drawn
    if not panels:
        axes[0].text(0.5, 0.5, "nothing logged yet", ha="center", va="center", transform=axes[0].transAxes)
        axes[0].set_axis_off()
    if title:
        fig.suptitle(title)
    return fig


def lr_schedule_figure(steps: list[int], lrs: list[float], title: str, warmup_steps: int | None = None) -> Figure:
    """The learning rate at each optimizer step, as the caller computed it from the Trainer's scheduler; a dotted
    line marks the end of warmup when `warmup_steps` (optimizer steps) is given and non-zero."""
    fig = Figure(figsize=(6.0, 3.5), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    ax.plot(steps, lrs, color="C0")
    if warmup_steps:
        ax.axvline(warmup_steps, color="grey", linestyle=":", label=f"end of warmup (step {warmup_steps})")
        ax.legend(fontsize="small")
    ax.set_title(title)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("learning rate")
    ax.grid(alpha=0.3)
    return fig


def save(fig: Figure, path: str | Path) -> Path:
    """Write `fig` as a PNG at the figure's own DPI, creating the parent folder; returns the path. Colours are reduced
    to a 256-colour palette, which looks the same for line plots and makes the file a third of the size."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi="figure")
    with Image.open(buffer) as image:
        image.convert("RGB").quantize(256).save(path, format="PNG", optimize=True)
    return path


def find_state(output_dir: str | Path) -> Path:
    """The `trainer_state.json` to plot: the output folder's own (written when training ends), else that of its
    newest `checkpoint-N` (highest N: a run still going, or one stopped before the end)."""
    out = Path(output_dir)
    if (out / STATE).is_file():
        return out / STATE
    if not out.is_dir():
        raise PlotError(f"{out} does not exist: give the output_dir of a training run")
    # Imported here: transformers.trainer_utils imports torch (~2 s), which plotting a finished run does not need.
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(out)
    if last is None:
        raise PlotError(
            f"{out} is not a training output folder: it has no {STATE} nor checkpoint-N/{STATE}. Give the "
            f"output_dir of a training run (it writes {STATE} at each checkpoint, every save_steps, and at the end)"
        )
    if not (Path(last) / STATE).is_file():
        raise PlotError(f"{last} has no {STATE}: the checkpoint may still be being written; try again in a moment")
    return Path(last) / STATE


def plot_run(output_dir: str | Path, path: str | Path | None = None, title: str | None = None) -> Path:
    """Plot the run in `output_dir` (see `find_state`) to `path`, by default `output_dir/training.png`; the title
    defaults to the folder's name, plus the checkpoint's when the run has not finished. Returns the PNG's path."""
    out = Path(output_dir)
    state_file = find_state(out)
    try:
        state = json.loads(state_file.read_text())
    except json.JSONDecodeError as e:
        raise PlotError(f"{state_file} is not valid JSON ({e}); if the run is writing it, try again") from e
    if title is None:
        title = out.resolve().name + ("" if state_file.parent == out else f" ({state_file.parent.name})")
    return save(training_figure(state.get("log_history", []), title), path or out / "training.png")


def main(argv: list[str] | None = None) -> int:
    """`plot.py OUTPUT_DIR [--output PNG]`: prints the PNG's path; exit status 2 when the folder cannot be plotted."""
    parser = argparse.ArgumentParser(
        prog="plot.py",
        usage="%(prog)s OUTPUT_DIR [--output PNG]",
        description="Plot a run's loss, perplexity, accuracy, learning rate, norms and throughput from its "
        f"{STATE} (or its newest checkpoint's, while it trains).",
    )
    parser.add_argument("output_dir", metavar="OUTPUT_DIR", help="the output_dir of a training run")
    parser.add_argument("--output", metavar="PNG", help="where to write the plot (default: OUTPUT_DIR/training.png)")
    args = parser.parse_args(argv)
    try:
        path = plot_run(args.output_dir, args.output)
    except PlotError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0
