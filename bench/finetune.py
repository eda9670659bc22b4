"""Does pretraining pay? The genre classifier of recipes/finetune-genre.yaml fine-tuned from the pretrained masked
LM, against the same recipe from random initialisation and against always answering the commonest genre.

    python bench/finetune.py [--pretrained OUTPUT_DIR] [--seeds 42 43 44] [--out bench/out/finetune]

Without --pretrained it first trains recipes/mlm.yaml as shipped. Both classifiers run the same recipe (same steps,
batch, schedule, tokenizer and architecture); the random one differs only in `model_name_or_path: null`. All are
scored on the held-out plays (one per genre, never seen by the pretrained model either), once per seed (the seed
sets the new head's initial weights and the order of the batches; the pretrained checkpoint stays the same).
"""

import argparse
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from machine import describe

from lm_recipes import data, labels, tasks
from lm_recipes import recipe as recipes

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "finetune-genre.yaml"


def train(recipe: Path, output_dir: Path, *flags: str) -> float:
    start = time.perf_counter()
    cmd = [sys.executable, str(ROOT / "scripts/train.py"), str(recipe), "--output_dir", str(output_dir),
           "--resume_from_checkpoint", "false", "--disable_tqdm", "true", *flags]  # fmt: skip
    subprocess.run(cmd, check=True)
    return time.perf_counter() - start


def results(output_dir: Path) -> dict:
    return json.loads((output_dir / "all_results.json").read_text())


def majority(pretrained: Path) -> tuple[str, dict, Counter]:
    """The commonest training genre, its scores on the held-out passages, and the test passages per genre."""
    r = recipes.load([str(RECIPE), "--model_name_or_path", str(pretrained)])
    texts, names = labels.encode_labels(data.load_texts(r.data, r.training.seed, labelled=True), "label")
    train_counts = Counter(texts["train"]["label"])
    top = train_counts.most_common(1)[0][0]
    references = np.asarray(texts["validation"]["label"])
    predictions = np.full_like(references, top)
    scores = {
        "eval_accuracy": tasks.load_metric("accuracy").compute(predictions=predictions, references=references)[
            "accuracy"
        ],
        "eval_macro_f1": tasks.load_metric("f1").compute(
            predictions=predictions, references=references, average="macro"
        )["f1"],
    }
    return names[top], scores, Counter(names[i] for i in references)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pretrained", help="output folder of recipes/mlm.yaml; trained here when not given")
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44])
    parser.add_argument("--out", default="bench/out/finetune")
    a = parser.parse_args()
    out = Path(a.out).resolve()
    pretrained = Path(a.pretrained).resolve() if a.pretrained else out / "mlm"
    pretrain_seconds = None
    if not a.pretrained:
        pretrain_seconds = train(ROOT / "recipes" / "mlm.yaml", pretrained)

    rows = []
    scratch = out / "random-init.yaml"
    scratch.parent.mkdir(parents=True, exist_ok=True)
    # The same recipe from random weights: a child recipe that only drops the checkpoint (keeping its tokenizer).
    scratch.write_text(f"base: {RECIPE}\nmodel_name_or_path: null\ntokenizer_name: {pretrained}\n")
    arms = [
        ("fine-tuned from the pretrained MLM", RECIPE, ["--model_name_or_path", str(pretrained)]),
        ("same recipe, random initialisation", scratch, []),
    ]
    for name, recipe, flags in arms:
        for seed in a.seeds:
            folder = out / f"{recipe.stem}-{'pretrained' if flags else 'random'}-seed{seed}"
            seconds = train(recipe, folder, *flags, "--seed", str(seed))
            rows.append((name, seed, results(folder), seconds))
    genre, scores, test_counts = majority(pretrained)

    steps = json.loads((folder / "trainer_state.json").read_text())["global_step"]
    print(f"\nmachine: {describe()}")
    print(f"held-out passages per genre: {dict(sorted(test_counts.items()))} ({sum(test_counts.values())} in all)")
    if pretrain_seconds:
        print(f"pretraining recipes/mlm.yaml: {pretrain_seconds / 60:.1f} min")
    print("| classifier | seed | steps | accuracy | macro-F1 | wall time |")
    print("|---|---|---|---|---|---|")
    for name, seed, r, secs in rows:
        acc, f1 = r["eval_accuracy"], r["eval_macro_f1"]
        print(f"| {name} | {seed} | {steps} | {acc:.3f} | {f1:.3f} | {secs / 60:.1f} min |")
    for name, *_ in arms:
        mine = [r for n, _, r, _ in rows if n == name]
        acc, f1 = (np.array([r[k] for r in mine]) for k in ("eval_accuracy", "eval_macro_f1"))
        sd = (lambda x: x.std(ddof=1)) if len(mine) > 1 else (lambda x: 0.0)
        print(f"| {name}: mean ± sd | {len(mine)} seeds | {steps} | {acc.mean():.3f} ± {sd(acc):.3f} "
              f"| {f1.mean():.3f} ± {sd(f1):.3f} | |")  # fmt: skip
    print(f"| majority class ({genre}) | - | - | {scores['eval_accuracy']:.3f} | {scores['eval_macro_f1']:.3f} | - |")


if __name__ == "__main__":
    main()
