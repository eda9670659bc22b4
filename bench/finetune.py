"""Does pretraining pay? The genre classifier of recipes/finetune-genre.yaml fine-tuned from pretrained language
models, against the same recipe from random initialisation and against always answering the commonest genre.

    python bench/finetune.py [--pretrain recipes/mlm.yaml ...] [--seeds 42 43 44] [--learning_rates 1e-4 3e-4 1e-3]
    python bench/finetune.py --pretrained bench/out/mlm ...            # start from runs already trained
    python bench/finetune.py --pretrain recipes/mlm.yaml --curve 0.25 0.5 1 2 4 --png docs/pretraining-curve.png
    python bench/finetune.py --pretrained bench/out/modernbert --finetune_flags "--max_train_samples 2000"

Each start (a pretraining run of each --pretrain recipe as shipped, or each --pretrained folder) is fine-tuned from
its weights, and the same classifier (architecture, sizes, tokenizer) from random weights. For each of the two, the
fine-tuning learning rate is chosen alike: every --learning_rates value is run with the first seed, and the one with
the best held-out accuracy is run with every other seed. The held-out plays (one per genre, never seen in pretraining
either) are the only labelled data besides training, so the rate is chosen on them, for both starts the same way.
The seed sets the new head's initial weights and the order of the batches; the pretrained checkpoint stays the same.

--curve pretrains the first recipe again for those fractions of its steps (cosine schedule over each run's own steps)
and fine-tunes each at the learning rate chosen for the full run, with every seed; fraction 0 is random
initialisation. It prints held-out accuracy against pretraining tokens and draws it to --png.

--finetune_flags are train.py flags given to every fine-tuning run, from either start (e.g. --max_train_samples N:
a seeded sample of N labelled passages); runs with other flags are kept apart under --out.

Finished runs found under --out are read again, not retrained: an interrupted benchmark continues where it stopped.
"""

import argparse
import hashlib
import json
import shlex
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import yaml
from machine import describe

from lm_recipes import data, labels, tasks
from lm_recipes import recipe as recipes
from lm_recipes.arguments import ARCHITECTURES

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "finetune-genre.yaml"
# The model keys a random-initialisation classifier copies from the pretrained run, so only the weights differ.
MODEL_KEYS = ("model_type", "num_layers", "num_heads", "hidden_size", "intermediate_size", "max_position_embeddings",
              "dropout", "attention_dropout")  # fmt: skip


def train(recipe: Path, output_dir: Path, *flags: str) -> float:
    """Run train.py unless output_dir holds a finished run; its wall time in seconds (recorded beside the run)."""
    timing = output_dir / "bench_seconds.json"
    if (output_dir / "all_results.json").is_file() and timing.is_file():
        return json.loads(timing.read_text())["seconds"]
    start = time.perf_counter()
    cmd = [sys.executable, str(ROOT / "scripts/train.py"), str(recipe), "--output_dir", str(output_dir),
           "--resume_from_checkpoint", "false", "--disable_tqdm", "true",
           "--report_to", "none", *flags]  # fmt: skip
    subprocess.run(cmd, check=True)
    seconds = time.perf_counter() - start
    timing.write_text(json.dumps({"seconds": seconds, "command": cmd[1:]}))
    return seconds


def results(output_dir: Path) -> dict:
    return json.loads((output_dir / "all_results.json").read_text())


def pretrain(recipe: Path, out: Path, fraction: float = 1.0) -> tuple[Path, float, int]:
    """(output folder, seconds, tokens seen) of `recipe` trained for `fraction` of its steps."""
    r = recipes.load([str(recipe)])
    steps = max(1, round(r.training.max_steps * fraction))
    every = str(max(1, steps // 3))
    folder = out / (f"{recipe.stem}" if fraction == 1 else f"{recipe.stem}-x{fraction:g}")
    seconds = train(recipe, folder, "--max_steps", str(steps), "--eval_steps", every, "--save_steps", every)
    per_step = r.training.per_device_train_batch_size * r.training.gradient_accumulation_steps * r.data.block_size
    return folder, seconds, steps * per_step


def score(start: Path, out: Path) -> dict:
    """scripts/score.py on every held-out block: a masked LM at the same yardstick whatever it was trained with
    (15% of tokens, 80/10/10, the masks seeded alike), a causal one by its next-token loss."""
    path = out / f"score-{start.name}.json"
    if not path.is_file():
        mlm = yaml.safe_load((start / "recipe.yaml").read_text())["objective"] == "mlm"
        flags = ["--mlm_probability", "0.15", "--whole_word_mask", "false"] if mlm else []
        cmd = [sys.executable, str(ROOT / "scripts/score.py"), str(start), "--max_eval_samples", "0", "--output",
               str(path), *flags]  # fmt: skip
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads(path.read_text())


def random_start(start: Path, out: Path) -> tuple[Path, str]:
    """(recipe, name) of finetune-genre.yaml from random weights of the pretrained run's architecture and sizes, with
    its tokenizer. Named by those, so pretraining settings that differ only in what they train (masking, learning
    rate) share one random arm. The architecture is the checkpoint's: a pretraining recipe's `model_type: auto` means
    GPT-2 for clm, where a classification recipe's means BERT."""
    saved = yaml.safe_load((start / "recipe.yaml").read_text())
    keys = {k: saved[k] for k in MODEL_KEYS if k in saved}
    built = json.loads((start / "config.json").read_text())["model_type"]
    keys["model_type"] = "auto" if built == ARCHITECTURES["classification"][0] else built
    vocab = (start / "tokenizer.json").read_bytes()
    name = f"random-{keys['model_type']}-{hashlib.sha1(json.dumps(keys).encode() + vocab).hexdigest()[:8]}"
    path = out / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"base": str(RECIPE), "model_name_or_path": None, "tokenizer_name": str(start),
                                    **keys}, sort_keys=False))  # fmt: skip
    return path, name


def finetune(
    start: Path, random: bool, lr: float, seed: int, out: Path, extra: tuple[str, ...] = ()
) -> tuple[dict, float]:
    if random:
        recipe, name = random_start(start, out)
        flags = []
    else:
        recipe, name, flags = RECIPE, f"{start.name}-pretrained", ["--model_name_or_path", str(start)]
    tag = f"-{hashlib.sha1(' '.join(extra).encode()).hexdigest()[:6]}" if extra else ""
    folder = out / f"{name}{tag}-lr{lr:g}-seed{seed}"
    seconds = train(recipe, folder, *flags, "--learning_rate", str(lr), "--seed", str(seed), *extra)
    return results(folder), seconds


def sweep(start: Path, random: bool, rates: list[float], seeds: list[int], out: Path,
          extra: tuple[str, ...] = ()) -> tuple[float, list, list]:  # fmt: skip
    """(chosen rate, [(rate, accuracy) with the first seed], [(seed, results, seconds) at the chosen rate])."""
    first = [(lr, *finetune(start, random, lr, seeds[0], out, extra)) for lr in rates]
    best = max(first, key=lambda row: row[1]["eval_accuracy"])
    runs = [(seeds[0], best[1], best[2])]
    runs += [(seed, *finetune(start, random, best[0], seed, out, extra)) for seed in seeds[1:]]
    return best[0], [(lr, r["eval_accuracy"]) for lr, r, _ in first], runs


def majority(start: Path) -> tuple[str, dict, Counter]:
    """The commonest training genre, its scores on the held-out passages, and the test passages per genre."""
    r = recipes.load([str(RECIPE), "--model_name_or_path", str(start)])
    texts, names = labels.encode_labels(data.load_texts(r.data, r.training.seed, labelled=True), "label")
    top = Counter(texts["train"]["label"]).most_common(1)[0][0]
    references = np.asarray(texts["validation"]["label"])
    predictions = np.full_like(references, top)
    accuracy = tasks.load_metric("accuracy").compute(predictions=predictions, references=references)["accuracy"]
    f1 = tasks.load_metric("f1").compute(predictions=predictions, references=references, average="macro")["f1"]
    return names[top], {"eval_accuracy": accuracy, "eval_macro_f1": f1}, Counter(names[i] for i in references)


def mean_sd(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1) if len(values) > 1 else 0.0:.3f}"


def draw(points: list[tuple[float, list[float]]], baseline: float, png: Path, title: str) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.add_subplot()
    x = [tokens / 1e6 for tokens, _ in points]
    means, sds = [np.mean(a) for _, a in points], [np.std(a, ddof=1) if len(a) > 1 else 0 for _, a in points]
    ax.errorbar(x, means, yerr=sds, marker="o", capsize=3, label="fine-tuned (mean ± sd over seeds)")
    for xi, (_, accs) in zip(x, points, strict=True):
        ax.scatter([xi] * len(accs), accs, s=8, color="grey", zorder=3)
    ax.axhline(means[0], color="tab:orange", linestyle="--", label="random initialisation (0 tokens)")
    ax.axhline(baseline, color="grey", linestyle=":", label="majority class")
    ax.set_xlabel("pretraining tokens (millions)")
    ax.set_ylabel("held-out genre accuracy")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110, bbox_inches="tight")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pretrain", nargs="*", default=[], help="pretraining recipes, trained here as shipped")
    parser.add_argument("--pretrained", nargs="*", default=[], help="output folders of pretraining runs")
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44])
    parser.add_argument("--learning_rates", nargs="+", type=float, default=[1e-4, 3e-4, 1e-3])
    parser.add_argument("--curve", nargs="*", type=float, default=[], help="fractions of the first recipe's steps")
    parser.add_argument("--png", default="docs/pretraining-curve.png")
    parser.add_argument("--out", default="bench/out/finetune")
    parser.add_argument("--finetune_flags", default="", help="train.py flags for every fine-tuning run, quoted")
    a = parser.parse_args()
    extra = tuple(shlex.split(a.finetune_flags))
    if not a.pretrain and not a.pretrained:
        a.pretrain = [str(ROOT / "recipes" / "mlm.yaml")]
    out = Path(a.out).resolve()
    starts = [(Path(p).resolve(), None, None) for p in a.pretrained]
    starts += [pretrain(Path(p).resolve(), out) for p in a.pretrain]

    rows, chosen = [], {}
    for start, *_ in starts:
        for random in (False, True):
            lr, first, runs = sweep(start, random, a.learning_rates, a.seeds, out, extra)
            chosen[start, random] = lr
            rows.append((start, random, lr, first, runs))
    genre, base, test_counts = majority(starts[0][0])

    print(f"\nmachine: {describe()}")
    print(f"held-out passages per genre: {dict(sorted(test_counts.items()))} ({sum(test_counts.values())} in all)")
    if extra:
        print(f"every fine-tuning run with: {' '.join(extra)}")
    print("\n| pretraining run | tokens | minutes | eval loss (its own masking) | held-out loss (15% of tokens) "
          "| held-out accuracy |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for start, seconds, tokens in starts:
        scored = score(start, out)
        when = f"{tokens:,} | {seconds / 60:.1f}" if seconds else "- | -"
        print(f"| {start.name} | {when} | {results(start)['eval_loss']:.3f} | {scored['loss']:.3f} "
              f"| {scored['accuracy']:.3f} |")  # fmt: skip
    print("\nfine-tuning learning rate, first seed: held-out accuracy")
    print("| start | " + " | ".join(f"lr {lr:g}" for lr in a.learning_rates) + " | chosen |")
    print("|---|" + "---|" * (len(a.learning_rates) + 1))
    for start, random, lr, first, _ in rows:
        name = f"{start.name}, {'random initialisation' if random else 'pretrained'}"
        print(f"| {name} | " + " | ".join(f"{acc:.3f}" for _, acc in first) + f" | {lr:g} |")
    print("\n| classifier | lr | seeds | accuracy | macro-F1 | accuracy per seed | minutes per fine-tune |")
    print("|---|---|---|---|---|---|---|")
    for start, random, lr, _, runs in rows:
        accs = [r["eval_accuracy"] for _, r, _ in runs]
        f1s = [r["eval_macro_f1"] for _, r, _ in runs]
        name = f"{start.name}, {'random initialisation' if random else 'pretrained'}"
        per_seed = " / ".join(f"{x:.3f}" for x in accs)
        minutes = np.mean([s for _, _, s in runs]) / 60
        print(f"| {name} | {lr:g} | {len(runs)} | {mean_sd(accs)} | {mean_sd(f1s)} | {per_seed} | {minutes:.1f} |")
    print(f"| majority class ({genre}) | - | - | {base['eval_accuracy']:.3f} | {base['eval_macro_f1']:.3f} | | |")
    for start, _, _ in starts:
        pre = next(r for s, rnd, *_, r in rows if s == start and not rnd)
        rnd = next(r for s, rn, *_, r in rows if s == start and rn)
        gaps = [p[1]["eval_accuracy"] - q[1]["eval_accuracy"] for p, q in zip(pre, rnd, strict=True)]
        print(f"{start.name}: pretrained minus random, per seed: " + " / ".join(f"{g:+.3f}" for g in gaps)
              + f" (mean {np.mean(gaps):+.3f})")  # fmt: skip

    if a.curve:
        recipe = Path(a.pretrain[0]).resolve() if a.pretrain else None
        if recipe is None:
            raise SystemExit("--curve needs --pretrain RECIPE (the recipe whose budget is scaled)")
        full, *_ = next(s for s in starts if s[0].name == recipe.stem)
        lr_pre, lr_random = chosen[full, False], chosen[full, True]
        random_runs = next(r for s, rn, *_, r in rows if s == full and rn)
        points = [(0, [r["eval_accuracy"] for _, r, _ in random_runs])]
        print(f"\ncurve: {recipe.name} for fractions of its steps, fine-tuned at lr {lr_pre:g} (random {lr_random:g})")
        print("| pretraining | tokens | minutes | eval loss | accuracy (mean ± sd) | per seed |")
        print("|---|---|---|---|---|---|")
        print(f"| none (random initialisation) | 0 | 0 | - | {mean_sd(points[0][1])} | "
              + " / ".join(f"{x:.3f}" for x in points[0][1]) + " |")  # fmt: skip
        for fraction in sorted(a.curve):
            folder, seconds, tokens = pretrain(recipe, out, fraction)
            accs = [finetune(folder, False, lr_pre, seed, out, extra)[0]["eval_accuracy"] for seed in a.seeds]
            points.append((tokens, accs))
            loss = results(folder)["eval_loss"]
            print(f"| {fraction:g}x | {tokens:,} | {seconds / 60:.1f} | {loss:.3f} | {mean_sd(accs)} | "
                  + " / ".join(f"{x:.3f}" for x in accs) + " |")  # fmt: skip
        draw(points, base["eval_accuracy"], Path(a.png), f"genre accuracy after pretraining {recipe.name}")
        print(f"drawn: {a.png}")


if __name__ == "__main__":
    main()
