"""`python kill_at.py PHASE STEP RECIPE [--key value ...]`: scripts/train.py, SIGKILLed by itself at one phase of the
save of checkpoint-STEP, so that a test can kill a run for real at a precise moment of a save.

Phases, in the order a save goes through them: `weights` (model.safetensors half written), `optimizer`
(optimizer.pt half written), `state` (everything but trainer_state.json written), `commit` (every file written, the
manifest not yet), `rotation` (committed; an older checkpoint half deleted by save_total_limit). `full` raises the
OSError of a full disk while optimizer.pt is written, instead of killing (for machines without a tmpfs to fill).
`second-signal` sends the run a second SIGTERM while it saves the checkpoint the first one asked for, and
`interrupt-data` a SIGINT (Ctrl-C) while it reads its data, before training (STEP unused by both). `remove-data`
deletes the file named by $LM_REMOVE once checkpoint-STEP is committed (a streamed file gone mid-run).
"""

import errno
import os
import runpy
import shutil
import signal
import sys
import time
from pathlib import Path

import torch
import transformers.modeling_utils
from transformers import TrainerState

from lm_recipes import checkpoints

phase, step = sys.argv[1], int(sys.argv[2])
TARGET = f"checkpoint-{step}"


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def half(path):
    os.truncate(path, os.path.getsize(path) // 2)


def wrap(owner, name, before=None, after=None):
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        if before:
            before(*args, **kwargs)
        result = original(*args, **kwargs)
        if after:
            after(*args, **kwargs)
        return result

    setattr(owner, name, wrapper)


def in_target(path) -> bool:
    return Path(str(path)).parent.name == TARGET


if phase == "weights":
    wrap(transformers.modeling_utils, "safe_save_file",
         after=lambda tensors, filename, **kw: in_target(filename) and (half(filename), die()))  # fmt: skip
elif phase == "optimizer":
    wrap(
        torch, "save", after=lambda obj, f, *a, **kw: in_target(f) and f.endswith("optimizer.pt") and (half(f), die())
    )  # noqa: E501
elif phase == "state":
    wrap(TrainerState, "save_to_json", before=lambda self, path: in_target(path) and die())
elif phase == "commit":
    wrap(checkpoints, "commit", before=lambda folder: Path(folder).name == TARGET and die())
elif phase == "rotation":

    def half_delete(path, *args, **kwargs):  # the Trainer rotates with shutil.rmtree: one file goes, then the kill
        if Path(path).name.startswith("checkpoint-"):
            (Path(path) / "model.safetensors").unlink()
            die()

    wrap(shutil, "rmtree", before=half_delete)
elif phase == "full":

    def no_space(obj, f, *a, **kw):
        if in_target(f) and str(f).endswith("optimizer.pt"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))

    wrap(torch, "save", before=no_space)
elif phase == "second-signal":
    from lm_recipes import preemption

    received = []
    wrap(preemption.Preemption, "_handle", before=lambda self, signum, frame: received.append(signum))

    def second(obj, f, *args, **kwargs):  # a second later, the first one's save being under way
        if received and f.endswith("optimizer.pt"):
            time.sleep(1)
            os.kill(os.getpid(), signal.SIGTERM)

    wrap(torch, "save", before=second)
elif phase == "interrupt-data":
    from lm_recipes import data, prepared_data

    for owner, name in ((data, "load_texts"), (prepared_data, "load")):  # made in the run, or prepared before
        wrap(owner, name, before=lambda *a, **kw: os.kill(os.getpid(), signal.SIGINT))
elif phase == "remove-data":  # not a kill: the data file in $LM_REMOVE deleted once checkpoint-STEP is committed
    gone = os.environ.get("LM_REMOVE")
    wrap(checkpoints, "commit", after=lambda folder: Path(folder).name == TARGET and os.remove(gone))
else:
    sys.exit(f"unknown phase {phase}")

sys.argv = [str(Path(__file__).parents[1] / "scripts" / "train.py"), *sys.argv[3:]]
runpy.run_path(sys.argv[0], run_name="__main__")
