"""Train the default recipes as a user would and report what they reach, over several seeds.

    python bench/recipes.py [recipes/mlm.yaml recipes/clm.yaml] [--seeds 42 43 44] [--out bench/out] [--retrain]

For each recipe and seed: `python scripts/train.py RECIPE --seed S`, the validation loss of the same model untrained
(same tokenizer, blocks and seed) and after training, and the Trainer's train_runtime. A finished run of the same
recipe and seed found in OUT is reported again without training (--retrain trains it anew). Training is bit-exact
on one machine, not across CPUs and BLAS builds, so the table gives the spread over seeds: what another machine's run
of the same recipe should land within. The first seed's run is OUT/RECIPE (e.g. bench/out/mlm), which
bench/finetune.py starts from.
"""

import argparse
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import yaml
from machine import describe

from lm_recipes import recipe as recipes
from lm_recipes import training

ROOT = Path(__file__).resolve().parents[1]


def untrained(path: str, output_dir: str, seed: int) -> float:
    r = recipes.load([path, "--output_dir", output_dir, "--seed", str(seed), "--report_to", "none"])
    return training.build(r).evaluate()["eval_loss"]


def spread(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("recipes", nargs="*", default=["recipes/mlm.yaml", "recipes/clm.yaml"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44])
    parser.add_argument("--out", default="bench/out")
    parser.add_argument("--retrain", action="store_true", help="train again even when OUT holds the finished run")
    a = parser.parse_args()
    rows = []
    for path in a.recipes:
        for seed in a.seeds:
            name = Path(path).stem
            out = Path(a.out) / (name if seed == a.seeds[0] else f"{name}-seed{seed}")
            before = untrained(path, str(out), seed)
            done = (out / "all_results.json").is_file() and yaml.safe_load((out / "recipe.yaml").read_text())[
                "seed"
            ] == seed
            if a.retrain or not done:
                cmd = [sys.executable, str(ROOT / "scripts/train.py"), path, "--output_dir", str(out), "--seed",
                       str(seed), "--resume_from_checkpoint", "false"]  # fmt: skip
                subprocess.run(cmd, check=True)
            results = json.loads((out / "all_results.json").read_text())
            seconds = results["train_runtime"]
            steps = json.loads((out / "trainer_state.json").read_text())["global_step"]
            rows.append((path, seed, steps, seconds, before, results["eval_loss"], results.get("eval_accuracy")))

    print(f"\nmachine: {describe()}")
    print("| recipe | seed | steps | train_runtime | untrained eval loss (ppl) | trained eval loss (ppl) | accuracy |")
    print("|---|---|---|---|---|---|---|")
    for path, seed, steps, seconds, before, after, accuracy in rows:
        print(
            f"| {path} | {seed} | {steps} | {seconds / 60:.1f} min | {before:.3f} ({math.exp(before):,.0f}) "
            f"| {after:.3f} ({math.exp(after):,.1f}) | {accuracy:.3f} |"
        )
    print("\n| recipe | seeds | trained eval loss (mean ± sd) | perplexity of the mean | eval accuracy (mean ± sd) |")
    print("|---|---|---|---|---|")
    for path in a.recipes:
        mine = [r for r in rows if r[0] == path]
        losses = [r[5] for r in mine]
        print(
            f"| {path} | {', '.join(str(r[1]) for r in mine)} | {spread(losses)} | "
            f"{math.exp(statistics.mean(losses)):,.1f} | {spread([r[6] for r in mine])} |"
        )


if __name__ == "__main__":
    main()
