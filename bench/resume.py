"""Resume costs the same early and late: a run resumed at step 10 and at step L, from map-style and streamed data.

    python bench/resume.py [--late 1000] [--threads 1] [--workdir DIR] [--keep]

A tiny GPT-2 of recipes/clm.yaml (2 layers of width 64, a BPE vocabulary of 1,000, blocks of 64 tokens, 8 per batch)
trained on the embedded corpus's scenes (hamlet's held out as the validation file) written to 16 local txt shards,
to step L+5 with a checkpoint every 10 steps: once map-style (the blocks made and cached before training), once
streamed. Every run uses one torch thread (--threads): the tiny model's steps gain nothing from two, and on shared
cores a second thread waits on the other processes' work, which makes a step take 0.03 s or 1.4 s. Then, for K in
(10, L): a fresh output_dir holding only checkpoint-K and recipe.yaml, and the same command with --max_steps K+5,
which resumes from it. Measured for each rerun, from its output lines stamped as they arrive:
  - rerun: process start to exit, wall seconds;
  - to first step: from the log line "Resuming from" to the first training log (step K+1; logging_steps is 1), i.e.
    loading the checkpoint, setting the data where it left off, and one step;
  - one step: the median time between the next training logs, for scale.
Map-style data is set by skipping the sampler's first K batches of indices; a stream loads its saved position
instead of replaying what it read. Either way the cost should not grow with K. "Same loss" checks that the rerun's
first step trains the batch the original run trained at step K+1: its loss, which depends only on the weights at
step K, the batch and the dropout draw, must equal the original's.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
SHARDS = 16
VALIDATION_PLAY = "hamlet"
TINY = ["--num_layers", "2", "--num_heads", "2", "--hidden_size", "64", "--intermediate_size", "128",
        "--max_position_embeddings", "64", "--block_size", "64", "--vocab_size", "1000",
        "--per_device_train_batch_size", "8", "--logging_steps", "1", "--save_steps", "10", "--max_eval_samples", "16",
        "--disable_tqdm", "true"]  # fmt: skip
EXTRA_STEPS = 5  # steps a rerun trains past its checkpoint: the first is timed, the rest give a step's time


def write_corpus(folder: Path) -> Path:
    """The corpus's scenes (hamlet's held out) in SHARDS txt files, scenes apart by blank lines; returns the
    validation file, hamlet's scenes."""
    from lm_recipes import corpus

    def scenes_of(plays):
        return [d["text"] for d in corpus.generate_documents(plays, corpus.version())]

    scenes = scenes_of([p for p in corpus.plays() if p != VALIDATION_PLAY])
    folder.mkdir(parents=True, exist_ok=True)
    for shard in range(SHARDS):
        part = scenes[shard * len(scenes) // SHARDS : (shard + 1) * len(scenes) // SHARDS]
        (folder / f"shard-{shard:02d}.txt").write_text("\n\n".join(part) + "\n")
    validation = folder.parent / f"{folder.name}-validation.txt"
    validation.write_text("\n\n".join(scenes_of([VALIDATION_PLAY])) + "\n")
    return validation


def timed_run(cmd: list[str], log: Path, threads: int) -> tuple[float, list[tuple[float, str]]]:
    """(wall seconds, [(seconds since start, line)]) of a command, each line of its merged output stamped as it
    arrives (the command runs unbuffered, so a line arrives as it is written). The lines also go to `log`."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "OMP_NUM_THREADS": str(threads)}  # fmt: skip
    lines: list[tuple[float, str]] = []
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=ROOT, text=True,
                            bufsize=1)  # fmt: skip

    def read():
        for line in proc.stdout:
            lines.append((time.perf_counter() - start, line.rstrip("\n")))

    reader = threading.Thread(target=read)
    reader.start()
    proc.wait()
    seconds = time.perf_counter() - start
    reader.join()
    log.write_text("".join(f"{t:9.3f}  {line}\n" for t, line in lines))
    if proc.returncode:
        tail = "\n".join(line for _, line in lines[-15:])
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{tail}\n(whole log: {log})")
    return seconds, lines


def losses(output_dir: Path) -> dict[int, float]:
    """{step: training loss} of a run's log history."""
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    return {h["step"]: h["loss"] for h in history if "loss" in h}


def resume(data: str, base: list[str], run: Path, k: int, work: Path, threads: int) -> dict:
    """Rerun `base` in a fresh output_dir holding only checkpoint-k of `run` (and its recipe.yaml), k+EXTRA_STEPS."""
    out = work / f"{data}-resume-{k}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    shutil.copy2(run / "recipe.yaml", out / "recipe.yaml")
    shutil.copytree(run / f"checkpoint-{k}", out / f"checkpoint-{k}")
    cmd = [*base, "--output_dir", str(out), "--max_steps", str(k + EXTRA_STEPS)]
    seconds, lines = timed_run(cmd, work / "logs" / f"{data}-resume-{k}.log", threads)
    resumed = next((t for t, line in lines if "Resuming from" in line), None)
    if resumed is None:
        raise SystemExit(f"the rerun from checkpoint-{k} did not resume; see {work}/logs/{data}-resume-{k}.log")
    steps = [t for t, line in lines if t >= resumed and line.startswith("{'loss'")]
    if len(steps) != EXTRA_STEPS:
        raise SystemExit(f"{len(steps)} training logs after resuming, not {EXTRA_STEPS}; see {work}/logs")
    first = losses(out).get(k + 1)
    return {"data": data, "k": k, "seconds": seconds, "before_resume": resumed, "to_first_step": steps[0] - resumed,
            "one_step": statistics.median(b - a for a, b in zip(steps, steps[1:], strict=False)),
            "loss": first, "original_loss": losses(run).get(k + 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--late", type=int, default=1000, help="the late step L (a multiple of 10): steps trained")
    parser.add_argument("--workdir", help="where the text, caches and runs go (default: a new temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the text, caches and runs")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of every run (OMP_NUM_THREADS)")
    a = parser.parse_args()
    if a.late % 10 or a.late <= 10:
        parser.error("--late must be a multiple of 10 above 10: checkpoints are saved every 10 steps")
    from machine import describe

    work = Path(a.workdir or tempfile.mkdtemp(prefix="lm-recipes-resume-"))
    (work / "logs").mkdir(parents=True, exist_ok=True)
    validation = write_corpus(work / "text")
    # The shipped recipe with what a flag cannot say: no samples to draw (an empty list), no plots, no tracker, every
    # checkpoint kept.
    recipe = work / "clm-tiny.yaml"
    off = {"samples": [], "plots": False, "report_to": "none", "eval_strategy": "no", "save_total_limit": None}
    recipe.write_text(yaml.safe_dump({"base": str(ROOT / "recipes/clm.yaml"), **off}))
    common = [sys.executable, str(ROOT / "scripts/train.py"), str(recipe), *TINY, "--train_files",
              str(work / "text" / "*.txt"), "--validation_files", str(validation), "--cache_dir",
              str(work / "cache")]  # fmt: skip
    rows, begun = [], time.perf_counter()
    for data, flags in (("map-style", []), ("streamed", ["--streaming", "true"])):
        base, run = [*common, *flags], work / f"{data}-run"
        shutil.rmtree(run, ignore_errors=True)
        steps = a.late + EXTRA_STEPS  # past L, so that the steps a rerun from checkpoint-L trains have their twins
        print(f"{data}: training {steps} steps", flush=True)
        seconds, _ = timed_run([*base, "--output_dir", str(run), "--max_steps", str(steps)],
                               work / "logs" / f"{data}-run.log", a.threads)  # fmt: skip
        print(f"{data}: trained in {seconds:.0f} s; resuming", flush=True)
        for k in (10, a.late):
            rows.append(resume(data, base, run, k, work, a.threads))
        (work / "results.json").write_text(json.dumps(rows, indent=1))
    if not a.keep:
        shutil.rmtree(work)

    print(f"\nmachine: {describe()}")
    took = time.perf_counter() - begun
    print(f"tiny clm (2 layers x 64, blocks of 64 tokens, 8 per batch), {SHARDS} txt shards of the embedded corpus, "
          f"{a.threads} torch thread(s); each rerun trains {EXTRA_STEPS} steps past its checkpoint; {took:.0f} s in "
          f"all\n")  # fmt: skip
    print("| data | resumed at step | rerun wall s | start to 'Resuming from' s | 'Resuming from' to first step s "
          "| one step s | same loss at the first step |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        same = "yes" if r["loss"] == r["original_loss"] else f"no: {r['loss']} vs {r['original_loss']}"
        print(f"| {r['data']} | {r['k']} | {r['seconds']:.1f} | {r['before_resume']:.1f} | {r['to_first_step']:.2f} "
              f"| {r['one_step']:.3f} | {same} |")  # fmt: skip


if __name__ == "__main__":
    main()
