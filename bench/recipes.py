"""Train the default recipes as a user would and report what they reach.

    python bench/recipes.py [recipes/mlm.yaml recipes/clm.yaml] [--out bench/out]

For each recipe: wall time of `python scripts/train.py RECIPE` (tokenizer and data caches warm or cold, as found),
the validation loss and perplexity of the same model untrained (same tokenizer, blocks and seed), and after training.
"""

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

from machine import describe

from lm_recipes import recipe as recipes
from lm_recipes import training

ROOT = Path(__file__).resolve().parents[1]


def untrained(path: str, output_dir: str) -> float:
    r = recipes.load([path, "--output_dir", output_dir])
    return training.build_trainer(r).evaluate()["eval_loss"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("recipes", nargs="*", default=["recipes/mlm.yaml", "recipes/clm.yaml"])
    parser.add_argument("--out", default="bench/out")
    a = parser.parse_args()
    rows = []
    for path in a.recipes:
        out = Path(a.out) / Path(path).stem
        before = untrained(path, str(out))
        start = time.perf_counter()
        cmd = [sys.executable, str(ROOT / "scripts/train.py"), path, "--output_dir", str(out),
               "--resume_from_checkpoint", "false"]  # fmt: skip
        subprocess.run(cmd, check=True)
        seconds = time.perf_counter() - start
        results = json.loads((out / "all_results.json").read_text())
        steps = json.loads((out / "trainer_state.json").read_text())["global_step"]
        rows.append((path, steps, seconds, before, results["eval_loss"]))

    print(f"\nmachine: {describe()}")
    print("| recipe | steps | wall time | untrained eval loss (ppl) | trained eval loss (ppl) |")
    print("|---|---|---|---|---|")
    for path, steps, seconds, before, after in rows:
        print(
            f"| {path} | {steps} | {seconds / 60:.1f} min | {before:.2f} ({math.exp(before):,.0f}) "
            f"| {after:.2f} ({math.exp(after):,.1f}) |"
        )


if __name__ == "__main__":
    main()
