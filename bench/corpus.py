"""Memory stays flat: preparing and streaming 50 MB, 250 MB and 1 GB of text, peak memory and speed at each size.

    python bench/corpus.py [--sizes 50 250 1000] [--steps 40] [--logging_steps 5] [--pairs 2] [--workdir DIR] [--keep]

For each size (MB of text, 10^6 bytes): the embedded corpus's scenes (hamlet's held out), joined by blank lines and
written again and again into 16 txt shards until they hold that many MB, read as txt files with sample_by: paragraph;
hamlet's scenes, once, are the validation file. Each measurement is a fresh process of recipes/clm.yaml (samples,
plots, evaluation and checkpoints off), with a cache folder of its size's own, emptied before the next size:
  - prepare:            scripts/prepare.py: the tokenizer trained on all the text, tokens and blocks made with
                        every core (datasets.map num_proc), written to the prepared folder;
  - streamed training:  scripts/train.py --streaming true --max_steps STEPS: the text read, tokenized and cut as it
                        trains (its tokenizer trained on the stream's first tokenizer_documents);
  - prepared training:  the same train.py command without --streaming: it loads the prepared folder.
The two trainings alternate, --pairs times. Memory is the whole process tree's (map's worker processes included),
sampled about every 0.1 s from Linux's /proc/PID/smaps_rollup: RSS summed over the tree, as the targets are set;
PSS, which counts a page that several processes share (the parent's pages in forked workers) once; and anonymous
PSS, PSS without memory-mapped files (the Arrow files datasets reads, whose pages the kernel can drop): what the
processes allocated. Training speed is the mean of the logged tokens_per_second, each run's first log window (warm-up)
left out; on shared cores it falls steeply while other processes run, so the tables also give the best window and
the cores other processes kept busy meanwhile (the machine's busy CPU time less the measured tree's, per second).
40 steps take about a minute on 2 idle cores; 1 GB takes about 17 minutes to prepare on 2 busy ones.
"""

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
SHARDS = 16
VALIDATION_PLAY = "hamlet"
GB = 1e9  # bytes: the targets' unit, as MB of text is 10^6 bytes
# The targets this benchmark checks: RSS at the largest size, its growth to it, prepare's time per MB, the streamed
# training speed against the prepared one.
MAX_PEAK_GB, MAX_GROWTH, SPREAD_S_PER_MB, STREAMED_WITHIN = 2.0, 0.25, 0.15, 0.10


def write_corpus(folder: Path, megabytes: float) -> tuple[float, Path]:
    """SHARDS txt files holding `megabytes` MB of the corpus, whole scenes each, and the validation file; returns
    (MB of training text written, validation file)."""
    from lm_recipes import corpus

    plays = [p for p in corpus.plays() if p != VALIDATION_PLAY]
    train = [d["text"] for d in corpus.generate_documents(plays, corpus.version())]
    validation = [d["text"] for d in corpus.generate_documents([VALIDATION_PLAY], corpus.version())]
    folder.mkdir(parents=True, exist_ok=True)
    scenes = [s.encode() + b"\n\n" for s in train]
    per_shard, written = megabytes * 1e6 / SHARDS, 0
    for shard in range(SHARDS):
        size, i = 0, shard * len(scenes) // SHARDS  # each shard starts at another scene
        with open(folder / f"shard-{shard:02d}.txt", "wb") as f:
            while size < per_shard:
                f.write(scenes[i % len(scenes)])
                size, i = size + len(scenes[i % len(scenes)]), i + 1
        written += size
    val = folder.parent / f"{folder.name}-validation.txt"
    val.write_text("\n\n".join(validation) + "\n")
    return written / 1e6, val


def busy_seconds() -> float:
    """CPU seconds all cores of the machine have spent busy since boot."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq  # guest time is in user already


def memory(pid: int) -> tuple[int, int, int] | None:
    """(RSS, PSS, anonymous PSS) of a process in bytes, from Linux's /proc/PID/smaps_rollup; None once it is gone.
    Anonymous PSS is its heap, each page shared with other processes (forked workers) counted once between them."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            kb = {parts[0][:-1]: int(parts[1]) for line in f if len(parts := line.split()) == 3 and parts[2] == "kB"}
    except (FileNotFoundError, ProcessLookupError):
        return None
    return kb["Rss"] * 1024, kb["Pss"] * 1024, kb["Pss_Anon"] * 1024


def measure(cmd: list[str], log: Path, env: dict) -> dict:
    """Wall seconds of a command; the peaks of its process tree's summed RSS, PSS and anonymous PSS (bytes), sampled
    about every 0.1 s; the cores other processes kept busy meanwhile (a shared machine's load, which slows training
    most). Its output goes to `log`, its memory over time to `log`.mem.tsv."""
    peak = {"rss": 0, "pss": 0, "anon": 0, "processes": 0}
    with open(log, "w") as out, open(f"{log}.mem.tsv", "w") as trace:
        trace.write("seconds\trss_bytes\tpss_bytes\tanonymous_pss_bytes\tprocesses\n")
        start, busy, mine = time.perf_counter(), busy_seconds(), resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        top = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                tree = [top.pid, *(p.pid for p in top.children(recursive=True))]
            except psutil.NoSuchProcess:
                tree = []
            now = [m for pid in tree if (m := memory(pid)) is not None]
            sample = {"rss": sum(m[0] for m in now), "pss": sum(m[1] for m in now), "anon": sum(m[2] for m in now),
                      "processes": len(now)}  # fmt: skip
            peak = {k: max(v, sample[k]) for k, v in peak.items()}
            trace.write(f"{time.perf_counter() - start:.1f}\t" + "\t".join(str(v) for v in sample.values()) + "\n")
            time.sleep(0.1)
        seconds = time.perf_counter() - start
        # The whole tree's CPU time: a reaped process's children count in its own, so in ours once we reap it.
        done = resource.getrusage(resource.RUSAGE_CHILDREN)
        tree_cpu = done.ru_utime + done.ru_stime - mine.ru_utime - mine.ru_stime
        others = max(0.0, (busy_seconds() - busy - tree_cpu) / seconds)
    if proc.returncode:
        tail = "".join(log.read_text().splitlines(keepends=True)[-20:])
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{tail}\n(whole log: {log})")
    return {"seconds": seconds, **peak, "cpu_seconds": tree_cpu, "other_cores": others}


def windows(output_dir: Path) -> list[float]:
    """The logged tokens_per_second of a run, the first window (compilation, allocator warm-up) left out."""
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    rates = [h["tokens_per_second"] for h in history if "tokens_per_second" in h][1:]
    if not rates:
        raise SystemExit(f"{output_dir}: one throughput log or none; raise --steps or lower --logging_steps")
    return rates


def combined(runs: list[dict]) -> dict:
    """Runs of one kind as one: peak memory the highest, speed the mean of all their windows and the best window."""
    rates = [w for r in runs for w in r["windows"]]
    out = {k: max(r[k] for r in runs) for k in ("rss", "pss", "anon", "processes")}
    out.update({k: statistics.mean(r[k] for r in runs) for k in ("seconds", "cpu_seconds", "other_cores")})
    return {**out, "tokens_per_second": statistics.mean(rates), "best_window": max(rates), "windows": rates}


def one_size(megabytes: float, work: Path, recipe: Path, a: argparse.Namespace) -> dict:
    data, cache, logs = work / f"text-{megabytes:g}MB", work / f"cache-{megabytes:g}MB", work / "logs"
    for folder in (data, cache):
        shutil.rmtree(folder, ignore_errors=True)
    logs.mkdir(parents=True, exist_ok=True)
    mb, val = write_corpus(data, megabytes)
    env = {**os.environ, "HF_DATASETS_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PYTHONUNBUFFERED": "1"}  # fmt: skip
    same = [str(recipe), "--train_files", str(data / "*.txt"), "--validation_files", str(val), "--cache_dir",
            str(cache)]  # fmt: skip
    train = [sys.executable, str(ROOT / "scripts/train.py"), *same, "--max_steps", str(a.steps), "--logging_steps",
             str(a.logging_steps), "--resume_from_checkpoint", "false", "--disable_tqdm", "true"]  # fmt: skip
    tag = f"{megabytes:g}MB"
    print(f"{tag}: {mb:.1f} MB of text in {SHARDS} shards; preparing", flush=True)
    prepare = [sys.executable, str(ROOT / "scripts/prepare.py"), *same, "--output_dir", str(work / "out-prepare")]
    prep = measure(prepare, logs / f"{tag}-prepare.log", env)
    folder = Path(re.search(r"^prepared: (.+)$", (logs / f"{tag}-prepare.log").read_text(), re.M).group(1))
    manifest = json.loads((folder / "prepared.json").read_text())
    prep["tokens"] = manifest["splits"]["train"] * manifest["keys"]["block_size"]
    print(f"{tag}: prepared in {prep['seconds']:.0f} s", flush=True)
    runs = {"streamed": [], "prepared": []}
    for pair in range(1, a.pairs + 1):  # alternating, so that a busier stretch of shared cores slows both
        for what, flags in (("streamed", ["--streaming", "true"]), ("prepared", [])):
            out, log = work / f"out-{what}", logs / f"{tag}-{what}-{pair}.log"
            shutil.rmtree(out, ignore_errors=True)
            runs[what].append(measure([*train, *flags, "--output_dir", str(out)], log, env))
            if what == "prepared" and "Loaded the prepared tokenizer and data from" not in log.read_text():
                raise SystemExit(f"the prepared run did not load the prepared folder {folder}; see {log}")
            runs[what][-1]["windows"] = windows(out)
            print(f"{tag}: {what} training {pair}: {statistics.mean(runs[what][-1]['windows']):,.0f} tokens/s",
                  flush=True)  # fmt: skip
    return {"size": megabytes, "mb": mb, "prepare": prep, **{what: combined(r) for what, r in runs.items()}}


def targets(rows: list[dict], key: str, memory: str) -> list[str]:
    """The targets, checked on the measured sizes: `key` memory ("rss" or "anon", named `memory`) at and growth into
    the largest size; with RSS, also prepare's time per MB across sizes and the streamed training speed."""
    checks, last = [], rows[-1]
    peaks = {what: last[what][key] / GB for what in ("prepare", "streamed", "prepared")}
    said = ", ".join(f"{what} {gb:.2f} GB" for what, gb in peaks.items())
    name = f"peak {memory} <= {MAX_PEAK_GB:g} GB at {last['mb']:.0f} MB"
    checks.append((name, max(peaks.values()) <= MAX_PEAK_GB, said))
    if len(rows) > 1:
        before = rows[-2]
        growth = {what: last[what][key] / before[what][key] - 1 for what in ("prepare", "streamed")}
        said = ", ".join(f"{what} {g:+.0%}" for what, g in growth.items())
        name = f"{memory} growth {before['mb']:.0f} MB -> {last['mb']:.0f} MB < {MAX_GROWTH:.0%}"
        checks.append((name, max(growth.values()) < MAX_GROWTH, said))
    if key != "rss":
        return [f"- {name}: {said}: {'met' if ok else 'NOT met'}" for name, ok, said in checks]
    if len(rows) > 1:
        per_mb = [r["prepare"]["seconds"] / r["mb"] for r in rows]
        mean = statistics.mean(per_mb)
        worst = max(abs(s / mean - 1) for s in per_mb)
        said = f"{', '.join(f'{s:.3f}' for s in per_mb)} s/MB, mean {mean:.3f}, furthest {worst:.0%} from it"
        checks.append((f"prepare s/MB within ±{SPREAD_S_PER_MB:.0%} of their mean", worst <= SPREAD_S_PER_MB, said))
    ratios = [r["streamed"]["tokens_per_second"] / r["prepared"]["tokens_per_second"] for r in rows]
    said = ", ".join(f"{x:.0%}" for x in ratios)
    name = f"streamed tokens/s within {STREAMED_WITHIN:.0%} of prepared at every size"
    checks.append((name, all(abs(x - 1) <= STREAMED_WITHIN for x in ratios), said))
    return [f"- {name}: {said}: {'met' if ok else 'NOT met'}" for name, ok, said in checks]


def report(rows: list[dict]) -> None:
    print("| text MB | prepare peak RSS (GB) | prepare s/MB | streamed-training peak RSS (GB) | streamed tokens/s "
          "| prepared tokens/s | streamed / prepared | best windows: streamed / prepared |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        p, s, t = r["prepare"], r["streamed"], r["prepared"]
        best = s["best_window"] / t["best_window"]
        print(f"| {r['mb']:.0f} | {p['rss'] / GB:.2f} | {p['seconds'] / r['mb']:.3f} | {s['rss'] / GB:.2f} "
              f"| {s['tokens_per_second']:,.0f} | {t['tokens_per_second']:,.0f} "
              f"| {s['tokens_per_second'] / t['tokens_per_second']:.0%} "
              f"| {s['best_window']:,.0f} / {t['best_window']:,.0f} = {best:.0%} |")  # fmt: skip
    print(
        "\nPeak memory of each process tree in GB: RSS summed over its processes / PSS (a page shared by "
        "several counted once) / anonymous PSS (the same without memory-mapped files: what was allocated)"
    )
    print("| text MB | prepare s | prepare MB/s | tokens prepared | prepare memory (processes) "
          "| streamed run s, memory | prepared run s, memory "
          "| other processes' load (cores): prepare, streamed, prepared |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")

    def mem(m: dict) -> str:
        return f"{m['rss'] / GB:.2f} / {m['pss'] / GB:.2f} / {m['anon'] / GB:.2f}"

    for r in rows:
        p, s, t = r["prepare"], r["streamed"], r["prepared"]
        print(f"| {r['mb']:.0f} | {p['seconds']:.0f} | {r['mb'] / p['seconds']:.2f} | {p['tokens']:,} "
              f"| {mem(p)} ({p['processes']}) | {s['seconds']:.0f}, {mem(s)} | {t['seconds']:.0f}, {mem(t)} "
              f"| {p['other_cores']:.2f}, {s['other_cores']:.2f}, {t['other_cores']:.2f} |")  # fmt: skip
    print("\ntargets, as set (RSS summed over each process tree):")
    print("\n".join(targets(rows, "rss", "RSS")))
    print("the memory targets on anonymous PSS:")
    print("\n".join(targets(rows, "anon", "anonymous PSS")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", type=float, default=[50, 250, 1000], help="MB of text, smallest first")
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps of each training run")
    parser.add_argument("--logging_steps", type=int, default=5, help="steps per throughput window")
    parser.add_argument("--pairs", type=int, default=2, help="streamed and prepared training runs, alternating")
    parser.add_argument("--workdir", help="where the text, caches and runs go (default: a new temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep each size's text, caches and runs")
    a = parser.parse_args()
    from machine import describe

    work = Path(a.workdir or tempfile.mkdtemp(prefix="lm-recipes-corpus-"))
    work.mkdir(parents=True, exist_ok=True)
    # The shipped recipe with what a flag cannot say: no samples to draw (an empty list), no plots, no tracker.
    recipe = work / "clm-bench.yaml"
    off = {"samples": [], "plots": False, "report_to": "none", "eval_strategy": "no", "save_strategy": "no",
           "max_eval_samples": 64}  # fmt: skip
    recipe.write_text(yaml.safe_dump({"base": str(ROOT / "recipes/clm.yaml"), **off}))
    rows, begun = [], time.perf_counter()
    for size in sorted(a.sizes):
        rows.append(one_size(size, work, recipe, a))
        (work / "results.json").write_text(json.dumps(rows, indent=1))
        if not a.keep:
            for name in (f"text-{size:g}MB", f"cache-{size:g}MB", "out-prepare", "out-streamed", "out-prepared"):
                shutil.rmtree(work / name, ignore_errors=True)
            (work / f"text-{size:g}MB-validation.txt").unlink()

    print(f"\nmachine: {describe()}")
    print(f"recipes/clm.yaml, {a.pairs} x 2 training runs of {a.steps} steps of 32 x 128 tokens per size; text in "
          f"{SHARDS} txt shards; {time.perf_counter() - begun:.0f} s in all\n")  # fmt: skip
    report(rows)


if __name__ == "__main__":
    main()
