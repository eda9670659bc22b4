"""Preemption: SIGTERM (what SLURM and Kubernetes send before they kill a job) and SIGINT (Ctrl-C) end a run with a
checkpoint at a step every process agrees on, so that rerunning the same command resumes from it.

A signal only raises a flag; at the end of each optimizer step the processes combine their flags (accelerate's
`set_trigger` / `check_trigger`, one all-reduce), and all of them save and stop at the same step. A second signal
exits at once, without saving: the previous checkpoint stays the resume point (the same signal again within half a
second is taken for the first delivered twice).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time

from transformers import TrainerCallback

logger = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)
# The same signal again within this many seconds is the first one delivered twice, not a second: under SLURM every
# process of a job step gets the scheduler's SIGTERM, and torchrun passes its own copy on to each worker as well.
ECHO = 0.5


def heed_ctrl_c() -> None:
    """SIGINT raises KeyboardInterrupt from here on, even in a process started with it ignored (`cmd &` in a script,
    and whatever such a shell starts): Preemption catches it during training whatever it was, so a run stops for
    Ctrl-C or `kill -INT` at every moment, not only once it trains. From the main thread only, as Python allows."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


class Preempted(Exception):
    """The run saved a checkpoint and stopped on a signal; `status` is the exit status (128 + the signal's number,
    as a shell reports a process the signal ended)."""

    def __init__(self, signum: int, step: int, checkpoint: str):
        self.status = 128 + signum
        name = signal.Signals(signum).name
        super().__init__(
            f"stopped by {name} at step {step}: {checkpoint} is saved; rerun the same command to resume from it"
        )


class Preemption(TrainerCallback):
    """Catches SIGTERM and SIGINT while the Trainer trains, and turns the first into a save and a stop at the end of
    the current step (the Trainer still runs an evaluation or log scheduled at that step, so the run's curves keep
    every point). The handlers are the process's own again once training ends."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.received: int | None = None  # the signal this process received
        self._received_at = 0.0  # when, by time.monotonic()
        self.stopped: int | None = None  # the signal all processes stopped on
        self._previous = {}

    def on_train_begin(self, args, state, control, **kwargs):
        if threading.current_thread() is threading.main_thread():  # Python sets handlers from the main thread only
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}

    def on_train_end(self, args, state, control, **kwargs):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.received == signum and time.monotonic() - self._received_at < ECHO:
            return
        if self.received is not None:
            # Said on stderr directly: logging from a signal handler can deadlock on the handler's own lock.
            sys.stderr.write(f"\n{name} again: exiting now without saving; the last complete checkpoint stays the "
                             f"resume point\n")  # fmt: skip
            sys.stderr.flush()
            os._exit(128 + signum)
        self.received, self._received_at = signum, time.monotonic()
        if self.trainer.is_local_process_zero():
            sys.stderr.write(f"\n{name} received: saving a checkpoint at the end of this step, then stopping "
                             f"({name} again exits at once, without saving)\n")  # fmt: skip
            sys.stderr.flush()

    def on_step_end(self, args, state, control, **kwargs):
        accelerator = self.trainer.accelerator
        if self.received is not None:
            accelerator.set_trigger()
        if accelerator.check_trigger():  # a collective: every process asks at every step, and all get one answer
            self.stopped = self.received or signal.SIGTERM
            control.should_save = True
            control.should_log = True  # the loss since the last log is logged, not lost
            control.should_training_stop = True

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.stopped is not None:  # saved at the step's end already; an epoch save would write the same folder
            control.should_save = False
            control.should_evaluate = False
