"""Which fast paths pay on a CPU: training tokens/s of the default recipes with SDPA vs eager attention, and with and
without torch.compile, measured side by side.

    python bench/fastpaths.py [--steps 60] [--rounds 2] [--recipes mlm.yaml clm.yaml] [--workdir DIR]

Each recipe is prepared once (scripts/prepare.py), then trained for --steps optimizer steps (no evaluation, no
checkpoints) once per variant and round, the variants interleaved within each round so that a change in the machine's
load falls on all of them alike. tokens/s is the run's own `tokens_per_second` log (training time only), averaged over
the logs after the first 20 steps: compiling, and the first steps' allocations, fall in those. The table gives each
variant's median over the rounds and its ratio to the default (sdpa, no compile), and the machine it ran on.
"""

import argparse
import ast
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
WARMUP_STEPS = 20  # steps whose throughput logs are left out
VARIANTS = {
    "sdpa (default)": [],
    "eager attention": ["--attn_implementation", "eager"],
    "sdpa + torch.compile": ["--torch_compile", "true"],
}


def run(cmd: list[str], env: dict) -> str:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-4000:]}")
    return proc.stdout + proc.stderr


def tokens_per_second(log: str) -> float:
    """Mean tokens_per_second of the training logs after WARMUP_STEPS (logging_steps is 10)."""
    rates = []
    for line in log.splitlines():
        if line.startswith("{") and "'tokens_per_second'" in line:
            entry = ast.literal_eval(line)
            rates.append(float(entry["tokens_per_second"]))
    kept = rates[WARMUP_STEPS // 10 :]
    if not kept:
        raise SystemExit(f"no throughput logs after step {WARMUP_STEPS}:\n{log[-3000:]}")
    return statistics.mean(kept)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--recipes", nargs="+", default=["mlm.yaml", "clm.yaml"])
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    import os

    from machine import describe

    work = Path(args.workdir or tempfile.mkdtemp(prefix="fastpaths-"))
    env = {**os.environ, "HF_DATASETS_CACHE": str(work / "cache"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PYTHONUNBUFFERED": "1"}  # fmt: skip
    flags = ["--max_steps", str(args.steps), "--logging_steps", "10", "--eval_strategy", "no", "--save_strategy",
             "no", "--report_to", "none", "--plots", "false", "--disable_tqdm", "true", "--log_weight_norm",
             "false"]  # fmt: skip
    results: dict[tuple[str, str], list[float]] = {}
    began = time.time()
    for recipe in args.recipes:
        run([sys.executable, str(ROOT / "scripts/prepare.py"), str(ROOT / "recipes" / recipe)], env)
    for round_ in range(args.rounds):
        for recipe in args.recipes:
            for name, extra in VARIANTS.items():
                out = work / f"{recipe}-{round_}-{len(results)}"
                cmd = [sys.executable, str(ROOT / "scripts/train.py"), str(ROOT / "recipes" / recipe), *flags, *extra,
                       "--output_dir", str(out)]  # fmt: skip
                rate = tokens_per_second(run(cmd, env))
                results.setdefault((recipe, name), []).append(rate)
                print(f"round {round_ + 1} {recipe:10} {name:22} {rate:8,.0f} tokens/s", flush=True)
    print(f"\nmachine: {describe()}")
    print(f"{args.steps} steps per run, {args.rounds} rounds, {time.time() - began:.0f} s in all\n")
    print("| recipe | variant | tokens/s (median) | runs | vs default |")
    print("|---|---|---|---|---|")
    for recipe in args.recipes:
        base = statistics.median(results[recipe, "sdpa (default)"])
        for name in VARIANTS:
            rates = results[recipe, name]
            median = statistics.median(rates)
            spread = ", ".join(f"{r:,.0f}" for r in rates)
            print(f"| {recipe} | {name} | {median:,.0f} | {spread} | {median / base:.2f}x |")


if __name__ == "__main__":
    main()
