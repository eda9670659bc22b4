"""ModernBERT against BERT and Llama against GPT-2 at (about) equal parameters and equal training time, on the default
data: tokens/s, then held-out loss after training.

    python bench/architectures.py [--pairs mlm.yaml:modernbert.yaml clm.yaml:llama.yaml] [--steps 60] [--rounds 2]
                                  [--out bench/out/architectures]

First each recipe's training tokens/s is measured as bench/fastpaths.py does (--steps steps, no evaluation, the
recipes interleaved in each round, median over --rounds). Then the default recipe of each pair trains as shipped and
the modern one for the steps that take the same time at the measured rates (max_steps scaled by the ratio of
tokens/s; its warmup, a fraction, scales with it). Each trained model is scored by scripts/score.py on every held-out
block at one yardstick: masked models with 15% of tokens masked token by token (whatever they trained with), causal
ones by their next-token loss. Finished runs under --out are reused.
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from fastpaths import run, tokens_per_second
from finetune import score, train
from machine import describe
from transformers import AutoConfig, AutoModel

from lm_recipes import recipe as recipes

ROOT = Path(__file__).resolve().parents[1]


def parameters(folder: Path) -> int:
    config = AutoConfig.from_pretrained(folder)
    return AutoModel.from_config(config).num_parameters()  # the body; the LM head is tied to its embeddings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", nargs="+", default=["mlm.yaml:modernbert.yaml", "clm.yaml:llama.yaml"])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default="bench/out/architectures")
    a = parser.parse_args()
    out = Path(a.out).resolve()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    pairs = [tuple(p.split(":")) for p in a.pairs]
    names = [name for pair in pairs for name in pair]
    common = ["--resume_from_checkpoint", "false", "--report_to", "none", "--disable_tqdm", "true"]
    quick = ["--max_steps", str(a.steps), "--logging_steps", "10", "--eval_strategy", "no", "--save_strategy", "no",
             "--plots", "false", "--log_weight_norm", "false", *common]  # fmt: skip
    began = time.time()
    rates: dict[str, list[float]] = {}
    for round_ in range(a.rounds):
        for name in names:
            cmd = [sys.executable, str(ROOT / "scripts/train.py"), str(ROOT / "recipes" / name), *quick,
                   "--output_dir", str(out / "speed" / f"{name}-{round_}")]  # fmt: skip
            rates.setdefault(name, []).append(tokens_per_second(run(cmd, env)))
            print(f"round {round_ + 1} {name:16} {rates[name][-1]:8,.0f} tokens/s", flush=True)
    speed = {name: statistics.median(r) for name, r in rates.items()}

    rows = []
    for default, modern in pairs:
        base_steps = recipes.load([str(ROOT / "recipes" / default)]).training.max_steps
        for name in (default, modern):
            steps = base_steps if name == default else round(base_steps * speed[modern] / speed[default])
            folder = out / Path(name).stem
            every = str(max(1, steps // 3))
            flags = ["--max_steps", str(steps), "--eval_steps", every, "--save_steps", every]
            train(ROOT / "recipes" / name, folder, *flags)  # reused when finished
            r = recipes.load([str(folder / "recipe.yaml")])
            tokens = steps * r.training.per_device_train_batch_size * r.training.gradient_accumulation_steps
            final = json.loads((folder / "all_results.json").read_text())
            rows.append({
                "recipe": name, "parameters": parameters(folder), "tokens/s": speed[name], "steps": steps,
                "tokens": tokens * r.data.block_size, "train_runtime": final["train_runtime"],
                "eval_loss": final["eval_loss"], "score": score(folder, out),
            })  # fmt: skip

    print(f"\nmachine: {describe()}")
    print(f"speed: {a.steps} steps per run, {a.rounds} rounds; {time.time() - began:.0f} s in all\n")
    print("| recipe | parameters | tokens/s (runs) | steps | tokens | training time | eval loss (own masking) "
          "| held-out loss (yardstick) | held-out accuracy |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        runs = " / ".join(f"{x:,.0f}" for x in rates[row["recipe"]])
        s = row["score"]
        print(f"| {row['recipe']} | {row['parameters']:,} | {row['tokens/s']:,.0f} ({runs}) | {row['steps']} "
              f"| {row['tokens']:,} | {row['train_runtime'] / 60:.1f} min | {row['eval_loss']:.3f} | {s['loss']:.3f} "
              f"| {s['accuracy']:.3f} |")  # fmt: skip


if __name__ == "__main__":
    main()
