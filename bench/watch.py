"""What watching a run costs: training throughput of a default recipe with every watcher on, against the same recipe
with all of them off.

    python bench/watch.py [recipes/mlm.yaml recipes/clm.yaml] [--steps 100] [--pairs 3] [--out bench/out/watch]

"On" is the recipe as shipped plus TensorBoard: throughput, weight norm, the divergence guard and RecipeLearningRate
in every run, perplexity in each log, event files written. "Off" turns every watcher off and logs to no tracker. Both
train the same steps from the same seed with evaluation and checkpoints off: what evaluation adds (accuracy, samples)
is part of the evaluation, which the budget excludes. Runs alternate on, off, on, off... so that a slower stretch of
a shared machine hits both; throughput is tokens trained / the Trainer's train_runtime.
"""

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import yaml
from machine import describe

ROOT = Path(__file__).resolve().parents[1]
# Keys that turn every watcher off; `samples: []` has to come from YAML (a flag cannot give an empty list).
OFF = {"samples": [], "token_accuracy": False, "log_throughput": False, "log_weight_norm": False,
       "divergence_guard": False, "plots": False, "report_to": "none"}  # fmt: skip


def run(recipe: str, out: Path, steps: int) -> float:
    """Training tokens per second of one run."""
    cmd = [sys.executable, str(ROOT / "scripts/train.py"), recipe, "--output_dir", str(out), "--max_steps",
           str(steps), "--eval_strategy", "no", "--save_strategy", "no", "--resume_from_checkpoint", "false",
           "--disable_tqdm", "true"]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True)
    saved = yaml.safe_load((out / "recipe.yaml").read_text())
    tokens = steps * saved["per_device_train_batch_size"] * saved["gradient_accumulation_steps"] * saved["block_size"]
    return tokens / json.loads((out / "train_results.json").read_text())["train_runtime"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("recipes", nargs="*", default=["recipes/mlm.yaml", "recipes/clm.yaml"])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--out", default="bench/out/watch")
    a = parser.parse_args()
    rows = []
    for recipe in a.recipes:
        name, base = Path(recipe).stem, str(Path(recipe).resolve())
        variants = {"on": {"report_to": "tensorboard"}, "off": OFF}
        paths = {}
        for variant, keys in variants.items():
            paths[variant] = Path(a.out) / f"{name}-{variant}.yaml"
            paths[variant].parent.mkdir(parents=True, exist_ok=True)
            paths[variant].write_text(yaml.safe_dump({"base": base, **keys}))
        on, off = [], []
        for i in range(a.pairs):
            on.append(run(str(paths["on"]), Path(a.out) / f"{name}-on", a.steps))
            off.append(run(str(paths["off"]), Path(a.out) / f"{name}-off", a.steps))
            print(f"{recipe} pair {i + 1}: on {on[-1]:,.0f} tokens/s, off {off[-1]:,.0f} tokens/s", flush=True)
        rows.append((recipe, on, off))

    print(f"\nmachine: {describe()}")
    print(f"{a.steps} optimizer steps per run, evaluation and checkpoints off, {a.pairs} alternating pairs\n")
    print("| recipe | watchers off (tokens/s, median) | watchers on (tokens/s, median) | cost | per-pair costs |")
    print("|---|---|---|---|---|")
    for recipe, on, off in rows:
        cost = 1 - statistics.median(on) / statistics.median(off)
        pairs = ", ".join(f"{1 - n / f:+.1%}" for n, f in zip(on, off, strict=True))
        print(f"| {recipe} | {statistics.median(off):,.0f} | {statistics.median(on):,.0f} | {cost:+.1%} | {pairs} |")


if __name__ == "__main__":
    main()
