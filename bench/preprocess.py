"""Preprocessing throughput: tokenize + group a 50 MB corpus, beside the raw `tokenizers` encoder on the same text.

    python bench/preprocess.py [--copies 10]

The corpus is the embedded Shakespeare corpus repeated `--copies` times (10 copies: about 50 MB). Each measurement
runs in a fresh process (so its peak memory is its own) on the same cores:
  - raw encoder:   `tokenizers` `encode_batch_fast` over all documents (the limit a pipeline can approach);
  - lm-recipes:    `data.tokenize` + `data.group`, cold cache (datasets.map writing Arrow files);
  - usual pattern: `map(tokenizer(...))` + run_mlm's `group_texts`, cold cache, for comparison;
  - rerun:         a default recipe's whole data preparation (documents, tokenizer, blocks), with an empty cache
                   and then again in a new process, as a rerun of the unchanged recipe finds it.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
BLOCK = 128


def corpus_dataset(copies: int, cache: str):
    from datasets import Dataset

    from lm_recipes import corpus

    def gen(copies, version):
        for _ in range(copies):
            yield from corpus.generate_documents(list(corpus.plays()), version)

    return Dataset.from_generator(gen, gen_kwargs={"copies": copies, "version": corpus.version()}, cache_dir=cache)


def tokenizer_for(objective: str, cache: str):
    from lm_recipes import tokenizer
    from lm_recipes.arguments import ModelArguments, TokenizerArguments

    docs = corpus_dataset(1, cache)
    return tokenizer.build(TokenizerArguments(), ModelArguments(objective=objective), docs, "text", 512, cache)


def measure(what: str, objective: str, copies: int, cache: str) -> dict:
    from lm_recipes import data

    docs = corpus_dataset(copies, cache)
    tok = tokenizer_for(objective, cache)
    megabytes = sum(len(t.encode()) for t in docs["text"]) / 1e6
    tmp = tempfile.mkdtemp(dir=cache)  # a cold cache for the map calls
    docs = docs.map(lambda x: x, cache_file_name=os.path.join(tmp, "docs.arrow"))  # same text, fresh fingerprint
    start = time.perf_counter()
    if what == "raw":
        backend = tok.backend_tokenizer
        tokens = 0
        for batch in docs.iter(batch_size=1000):
            tokens += sum(len(e.ids) for e in backend.encode_batch_fast(batch["text"], add_special_tokens=True))
    elif what == "lm-recipes":
        blocks = data.group(data.tokenize(docs, tok, "text", mlm=objective == "mlm"), BLOCK)
        tokens = len(blocks) * BLOCK
    elif what == "usual":
        from itertools import chain

        ids = docs.map(lambda b: tok(b["text"]), batched=True, remove_columns=docs.column_names)

        def group_texts(examples):  # transformers' run_mlm.py / run_clm.py
            concatenated = {k: list(chain(*examples[k])) for k in examples.keys()}
            total = (len(concatenated[list(examples.keys())[0]]) // BLOCK) * BLOCK
            return {k: [t[i : i + BLOCK] for i in range(0, total, BLOCK)] for k, t in concatenated.items()}

        blocks = ids.map(group_texts, batched=True)
        tokens = len(blocks) * BLOCK
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"tokens": tokens, "seconds": seconds, "mb": megabytes, "peak_mib": peak}


def prepare(objective: str, cache: str) -> dict:
    """Data preparation of a default recipe, as a run does it (preparation.prepare): documents, tokenizer, blocks."""
    from lm_recipes import recipe as recipes
    from lm_recipes.preparation import prepare as prepare_data

    r = recipes.load([str(ROOT / f"recipes/{objective}.yaml"), "--cache_dir", cache])
    start = time.perf_counter()
    prepare_data(r)
    return {"seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.one:
        what, objective = a.one
        result = prepare(objective, a.cache) if what == "prepare" else measure(what, objective, a.copies, a.cache)
        print(json.dumps(result))
        return

    from machine import describe

    cache = tempfile.mkdtemp(prefix="lm-recipes-bench-")
    env = {**os.environ, "HF_DATASETS_CACHE": cache, "HF_HUB_OFFLINE": "1"}

    def one(what, objective):
        cmd = [sys.executable, __file__, "--one", what, objective, "--copies", str(a.copies), "--cache", cache]
        out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    print(f"machine: {describe()}")
    print(f"corpus: the embedded corpus x {a.copies}, blocks of {BLOCK} tokens\n")
    print("| objective | pipeline | MB of text | tokens | seconds | tokens/s | vs raw encoder | peak memory |")
    print("|---|---|---|---|---|---|---|---|")
    for objective in ("mlm", "clm"):
        one("raw", objective)  # warm-up: builds the corpus and tokenizer caches outside the timings
        results = {what: one(what, objective) for what in ("raw", "lm-recipes", "usual")}
        raw_rate = results["raw"]["tokens"] / results["raw"]["seconds"]
        for what, r in results.items():
            rate = r["tokens"] / r["seconds"]
            print(
                f"| {objective} | {what} | {r['mb']:.1f} | {r['tokens']:,} | {r['seconds']:.1f} | {rate:,.0f} "
                f"| {rate / raw_rate:.0%} | {r['peak_mib']:,.0f} MiB |"
            )
    print("\n| objective | data preparation, first run (empty cache) | rerun of the unchanged recipe (new process) |")
    print("|---|---|---|")
    for objective in ("mlm", "clm"):
        first, again = one("prepare", objective), one("prepare", objective)
        print(f"| {objective} | {first['seconds']:.1f} s | {again['seconds']:.2f} s |")


if __name__ == "__main__":
    main()
