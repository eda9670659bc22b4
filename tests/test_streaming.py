"""Streaming: each process reads its own part of the stream, blocks are cut as the prepared ones are, and a streamed
run killed mid-way and rerun continues at the next unseen block: the same loss curve and final eval loss as a run
never interrupted, with one process and with two. Files of the embedded corpus, written as several local shards."""

import json
import re
import subprocess
import sys
from collections import Counter
from itertools import islice
from pathlib import Path

import pytest
from datasets import Dataset, DatasetDict

from conftest import ROOT, TINY, TRAIN
from lm_recipes import checkpoints, corpus, data, streaming
from lm_recipes import tokenizer as tokenizers
from lm_recipes.arguments import DataArguments, TokenizerArguments

HERE = Path(__file__).parent
PLAYS = ["macbeth", "othello", "king-lear", "the-tempest", "twelfth-night", "richard-iii"]
LAUNCH2 = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ROOT / "accelerate_config.yaml"),
           "--multi_gpu", "--num_processes", "2"]  # fmt: skip


def write_shards(folder: Path, n: int, scenes: int | None = None) -> list[str]:
    """The scenes of PLAYS (the first `scenes` of them) as `n` text files, a blank line between paragraphs (each
    paragraph one document)."""
    scenes = [d["text"] for d in corpus.generate_documents(PLAYS, corpus.version())][:scenes]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"shard-{i:02d}.txt"
        path.write_text("\n\n".join(scenes[i::n]) + "\n")
        paths.append(str(path))
    return paths


def stream_args(files, **kw) -> DataArguments:
    return DataArguments(train_files=files, streaming=True, block_size=64, **kw)


@pytest.mark.parametrize("shards, world", [(4, 2), (3, 2), (6, 3), (5, 1)])
@pytest.mark.parametrize("held", [0, 7])
def test_processes_read_disjoint_parts_that_cover_the_stream_but_the_held_out_head(tmp_path, shards, world, held):
    files = write_shards(tmp_path, shards)
    args = stream_args(files, validation_documents=held or None)
    streamed = streaming.load(args, documents=False)
    whole = [row["text"] for row in streamed.train]
    parts = [[row["text"] for row in streaming.documents(streamed, "text", rank=r, world=world)] for r in range(world)]
    assert streamed.held == held
    assert sum(parts, []) and Counter(sum(parts, [])) == Counter(whole[held:])  # every document once, the head not
    if world > 1:
        assert all(parts) and abs(len(parts[0]) - len(parts[1])) < len(whole) // 2


def test_a_streamed_block_is_cut_as_a_prepared_one(tmp_path):
    """Within one group of documents the stream's blocks are the map-style blocks: same separators, same size."""
    files = write_shards(tmp_path, 1)
    args = stream_args(files, validation_documents=5)
    streamed = streaming.load(args)
    tokenizer = tokenizers.wrap(tokenizers.train(TokenizerArguments(vocab_size=400), "bpe", streamed.head, "text"),
                                "bpe", TokenizerArguments(vocab_size=400), 64)  # fmt: skip
    docs = [row["text"] for row in islice(streaming.documents(streamed, "text", rank=0, world=1), 300)]
    assert len(docs) < streaming.GROUP_DOCUMENTS
    args.streaming = False
    expected = data.build_blocks(DatasetDict(train=Dataset.from_dict({"text": docs})), tokenizer, args, mlm=False)
    one_group = streamed.train.take(5 + len(docs))  # the held-out head, then the documents above
    got = streaming.blocks(streaming.Streamed(one_group, 5, None, None), tokenizer, args, mlm=False, rank=0, world=1)
    got = [row["input_ids"] for row in islice(got, len(expected["train"]))]
    assert got == expected["train"]["input_ids"]
    assert all(len(b) == 64 for b in got) and sum(b.count(tokenizer.eos_token_id) for b in got) > 10


RUN = [*TINY, "--max_steps", "20", "--save_steps", "5", "--save_total_limit", "1", "--eval_steps", "10",
       "--streaming", "true", "--validation_documents", "40"]  # fmt: skip


def command(out, shards, *flags, launcher=(sys.executable, str(TRAIN)), recipe="clm.yaml"):
    return [*launcher, str(ROOT / "recipes" / recipe), *RUN, "--train_files", *shards, *flags, "--output_dir",
            str(out)]  # fmt: skip


def run(cmd, env, cwd=None):
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stdout + proc.stderr


def history(out):
    state = json.loads((Path(out) / "trainer_state.json").read_text())
    return [h["loss"] for h in state["log_history"] if "loss" in h], [
        h["eval_loss"] for h in state["log_history"] if "eval_loss" in h
    ]


@pytest.mark.parametrize("processes, recipe", [(1, "clm.yaml"), (2, "mlm.yaml")])
def test_a_streamed_run_killed_mid_way_goes_on_from_its_saved_position(env, tmp_path, processes, recipe):
    """SIGKILL while checkpoint-15 is saved: the rerun resumes at checkpoint-10's place in the stream and logs the
    losses (every 5 steps) and final eval loss of the run never interrupted, to the last digit."""
    shards = write_shards(tmp_path / "shards", 4)
    two = ("--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "8") if processes == 2 else ()
    launch = LAUNCH2 if processes == 2 else [sys.executable]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    code, log = run(command(whole, shards, *two, launcher=[*launch, str(TRAIN)], recipe=recipe), env, ROOT)
    assert code == 0, log[-3000:]
    kill = [*launch, str(HERE / "kill_at.py"), "weights", "15"]
    code, log = run(command(cut, shards, *two, launcher=kill, recipe=recipe), env, ROOT)
    assert code != 0 and not (cut / "checkpoint-15" / "trainer_state.json").exists(), log[-3000:]
    assert sorted(p.name for p in (cut / "checkpoint-10").glob("stream_position-*.json")) == [
        f"stream_position-{r}.json" for r in range(processes)
    ]
    code, log = run(command(cut, shards, *two, launcher=[*launch, str(TRAIN)], recipe=recipe), env, ROOT)
    assert code == 0, log[-3000:]
    assert f"Resuming from {cut / 'checkpoint-10'}" in log
    assert "Fast-forwarding" not in log  # no batches replayed
    losses, evals = history(cut)
    assert len(losses) == 4 and history(whole) == (losses, evals)


def test_a_file_gone_mid_stream_names_it_and_keeps_the_checkpoint(env, tmp_path):
    """The last of 4 files deleted once checkpoint-10 is saved; the text is short (a pass over it is a few steps), so
    the stream soon opens the files again and finds it gone. The newest checkpoint stays, and once the file is back
    the same command goes on from it."""
    shards = write_shards(tmp_path / "shards", 4, scenes=4)
    out = tmp_path / "out"
    remove = [sys.executable, str(HERE / "kill_at.py"), "remove-data", "10"]
    code, log = run(command(out, shards, launcher=remove), env | {"LM_REMOVE": shards[-1]}, ROOT)
    assert code == 2, log[-3000:]
    error = next(line for line in log.splitlines() if line.startswith("error: "))
    assert "streaming: could not read the data (" in error and "FileNotFoundError" in error and shards[-1] in error
    assert "Traceback" not in log
    kept = re.search(r"(\S+/checkpoint-(\d+)) stays the resume point", log)
    assert kept and int(kept[2]) >= 10 and (Path(kept[1]) / checkpoints.MANIFEST).is_file(), log[-2000:]
    write_shards(tmp_path / "shards", 4, scenes=4)  # the file back
    code, log = run(command(out, shards), env, ROOT)
    assert code == 0 and f"Resuming from {kept[1]}" in log, log[-3000:]


def test_a_stream_that_makes_no_block_is_an_error_not_a_hang(env, tmp_path):
    (tmp_path / "few.txt").write_text("a few words\n\nand a few more\n")
    validation = write_shards(tmp_path / "validation", 1, scenes=3)
    code, log = run(command(tmp_path / "out", [str(tmp_path / "few.txt")], "--validation_files", *validation), env)
    assert code == 2 and "streaming: the stream ran dry at step 0" in log, log[-3000:]


def test_a_streamed_checkpoint_resumes_on_its_own_number_of_processes(env, tmp_path):
    shards = write_shards(tmp_path / "shards", 2)
    out = tmp_path / "out"
    code, log = run(command(out, shards, "--max_steps", "5"), env)
    assert code == 0, log[-3000:]
    folder = out / "checkpoint-5"
    record = json.loads((folder / "stream_position-0.json").read_text())
    (folder / "stream_position-0.json").write_text(json.dumps(record | {"processes": 2}))
    (out / "checkpoint-5" / "stream_position-1.json").write_text(json.dumps(record | {"processes": 2}))
    code, log = run(command(out, shards, "--max_steps", "10"), env)
    assert code == 2 and f"streaming: {folder} was saved by 2 processes" in log, log[-3000:]
