"""Runs that survive faults: a kill at each phase of a save, corrupt checkpoints, SIGTERM and SIGINT with one and two
processes, a full disk. Each fault is real (a subprocess killed by a signal, a tmpfs filled up) and each rerun is the
same command, which must finish the run with the final eval loss of a run that was never interrupted."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, TINY, TRAIN
from lm_recipes import checkpoints

HERE = Path(__file__).parent
# 20 steps, a checkpoint every 5, only the newest kept: a save cut short must not cost the one before.
RUN = [*TINY, "--max_steps", "20", "--save_steps", "5", "--save_total_limit", "1", "--eval_steps", "10"]
# The shipped DDP config (configs/accelerate/ddp.yaml), on 2 CPU processes over gloo.
LAUNCH2 = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(ROOT / "configs" / "accelerate" / "ddp.yaml"), "--num_processes", "2"]  # fmt: skip
# Two processes of 4 sequences: the same global batch (8) as one process of 8.
TWO = ["--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "8"]


def command(out, *flags, launcher=(sys.executable,), script=(str(TRAIN),), recipe="clm.yaml"):
    return [*launcher, *script, str(ROOT / "recipes" / recipe), *RUN, *flags, "--output_dir", str(out)]


def run(cmd, env, check=True):
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.returncode, proc.stdout + proc.stderr


def final_eval_loss(out) -> float:
    return json.loads((Path(out) / "all_results.json").read_text())["eval_loss"]


@pytest.fixture(scope="module")
def uninterrupted(env, tmp_path_factory, prepared):
    """The final eval loss of the run never interrupted, for (recipe, processes), made once."""
    made = {}

    def get(recipe="clm.yaml", processes=1):
        if processes == 2:
            prepared(recipe, *RUN)  # several processes load prepared data
        if (recipe, processes) not in made:
            out = tmp_path_factory.mktemp("uninterrupted")
            two = dict(launcher=LAUNCH2, script=("scripts/train.py",)) if processes == 2 else {}
            cmd = command(out, *(TWO if processes == 2 else ()), recipe=recipe, **two)
            run(cmd, env | {"PWD": str(ROOT)}) if processes == 1 else _run_in(ROOT, cmd, env)
            made[recipe, processes] = (final_eval_loss(out), json.loads((out / "trainer_state.json").read_text()))
        return made[recipe, processes]

    return get


def _run_in(cwd, cmd, env):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


# phase -> (the checkpoint the rerun resumes from, what it says of checkpoint-10)
PHASES = {
    "weights": ("checkpoint-5", "it has no trainer_state.json: its save was cut short"),
    # "optimizer" and "state" (optimizer.pt half written; all but trainer_state.json) end as "weights" does: run by
    # hand with `python tests/kill_at.py optimizer 10 ...`, left out of the suite for its time.
    "commit": ("checkpoint-10", None),  # every file written: readable to its end, so complete without its manifest
    "rotation": ("checkpoint-10", None),  # committed before the older one went
}


@pytest.mark.parametrize("phase", PHASES)
def test_a_kill_at_any_phase_of_a_save_leaves_a_run_the_same_command_finishes(phase, env, tmp_path, uninterrupted):
    out = tmp_path / "out"
    killed, log = run([sys.executable, str(HERE / "kill_at.py"), phase, "10", *command(out)[2:]], env, check=False)
    assert killed == -signal.SIGKILL, log[-3000:]
    resumed_from, why = PHASES[phase]
    if phase == "rotation":  # the older checkpoint lost a file, the new one is whole
        assert checkpoints.problem(out / "checkpoint-5") and checkpoints.problem(out / "checkpoint-10") is None
    else:
        assert (out / "checkpoint-5" / checkpoints.MANIFEST).is_file()
    _, log = run(command(out), env)
    assert f"Resuming from {out / resumed_from}" in log
    if why:
        assert f"{out / 'checkpoint-10'} is incomplete ({why}" in log
        assert "moved aside to incomplete-checkpoint-10" in log
        assert (out / "incomplete-checkpoint-10" / "model.safetensors").is_file()  # kept, not deleted
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 20
    assert final_eval_loss(out) == pytest.approx(uninterrupted()[0], rel=1e-6)
    assert [p.name for p in out.glob("checkpoint-*")] == ["checkpoint-20"]  # rotation goes on


def test_a_kill_from_outside_mid_save_leaves_a_run_the_same_command_finishes(env, tmp_path, uninterrupted):
    """SIGKILL from another process the moment a checkpoint folder exists without its manifest (a save under way),
    with a save at every step so that the kill lands in one."""
    out = tmp_path / "out"
    proc = subprocess.Popen(command(out, "--save_steps", "1"), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        saving = [p for p in out.glob("checkpoint-*") if not (p / checkpoints.MANIFEST).exists()]
        if saving and checkpoints.step(saving[0]) > 1:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.001)
    assert proc.wait() == -signal.SIGKILL
    with (out / "samples.jsonl").open("a") as f:  # and as if it had been appending a record of samples
        f.write('{"step": 12, "epoch": 0.0, "sam')
    _, log = run(command(out), env)
    assert "Resuming from" in log
    assert final_eval_loss(out) == pytest.approx(uninterrupted()[0], rel=1e-6)
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [10, 20]


DAMAGES = {
    "truncated weights": (lambda c: os.truncate(c / "model.safetensors", 100), "model.safetensors holds 100 bytes"),
    "truncated optimizer": (lambda c: os.truncate(c / "optimizer.pt", 1000), "optimizer.pt holds 1000 bytes, not the"),
    "no trainer state": (lambda c: (c / "trainer_state.json").unlink(), "trainer_state.json is missing"),
    "no scheduler": (lambda c: (c / "scheduler.pt").unlink(), "scheduler.pt is missing"),
    "corrupt manifest": (lambda c: (c / checkpoints.MANIFEST).write_text("{"), "its complete.json is not readable"),
    # Saved without a manifest (an earlier release, another tool): the files themselves are read to their end.
    "no manifest, truncated weights": (
        lambda c: ((c / checkpoints.MANIFEST).unlink(), os.truncate(c / "model.safetensors", 5000)),
        "model.safetensors is truncated or corrupt",
    ),
    "no manifest, truncated optimizer": (
        lambda c: ((c / checkpoints.MANIFEST).unlink(), os.truncate(c / "optimizer.pt", 5000)),
        "optimizer.pt is truncated or corrupt",
    ),
    "no manifest, no state": (
        lambda c: ((c / checkpoints.MANIFEST).unlink(), (c / "trainer_state.json").unlink()),
        "it has no trainer_state.json: its save was cut short",
    ),
    "not a checkpoint": (lambda c: [p.unlink() for p in c.iterdir()], "it is not a checkpoint folder"),
}


@pytest.fixture(scope="module")
def saved_run(env, tmp_path_factory):
    """A finished run with checkpoint-5 and checkpoint-10, made once; tests damage copies of it."""
    out = tmp_path_factory.mktemp("saved") / "out"
    run([sys.executable, str(TRAIN), str(ROOT / "recipes/clm.yaml"), *TINY, "--max_steps", "10", "--save_steps", "5",
         "--eval_strategy", "no", "--output_dir", str(out)], env)  # fmt: skip
    return out


@pytest.mark.parametrize("damage, why", DAMAGES.values(), ids=DAMAGES.keys())
def test_a_damaged_checkpoint_is_not_taken_for_complete(damage, why, saved_run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(saved_run, out)
    assert checkpoints.resumable(out) == (out / "checkpoint-10", [])
    damage(out / "checkpoint-10")
    found = checkpoints.problem(out / "checkpoint-10")
    assert found.startswith(why), found
    assert checkpoints.resumable(out) == (out / "checkpoint-5", [(out / "checkpoint-10", found)])


def test_a_damaged_newest_checkpoint_is_set_aside_and_the_one_before_resumed(saved_run, tmp_path, env):
    out = tmp_path / "out"
    shutil.copytree(saved_run, out)
    os.truncate(out / "checkpoint-10" / "optimizer.pt", 1000)
    cmd = [sys.executable, str(TRAIN), str(ROOT / "recipes/clm.yaml"), *TINY, "--max_steps", "10", "--save_steps", "5",
           "--eval_strategy", "no", "--output_dir", str(out)]  # fmt: skip
    _, log = run(cmd, env)
    assert "checkpoint-10 is incomplete (optimizer.pt holds 1000 bytes, not the" in log
    assert f"Resuming from {out / 'checkpoint-5'}" in log and "moved aside to incomplete-checkpoint-10" in log
    assert checkpoints.problem(out / "checkpoint-10") is None  # saved again, whole
    assert os.path.getsize(out / "incomplete-checkpoint-10" / "optimizer.pt") == 1000  # kept as it was


def test_no_complete_checkpoint_is_a_clear_error_that_writes_nothing(saved_run, tmp_path, env):
    out = tmp_path / "out"
    shutil.copytree(saved_run, out)
    for folder in out.glob("checkpoint-*"):
        (folder / "trainer_state.json").unlink()
        (folder / checkpoints.MANIFEST).unlink()
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    cmd = [sys.executable, str(TRAIN), str(ROOT / "recipes/clm.yaml"), *TINY, "--max_steps", "5", "--save_steps", "5",
           "--eval_strategy", "no", "--output_dir", str(out)]  # fmt: skip
    status, log = run(cmd, env, check=False)
    assert status == 2, log[-3000:]
    assert "has no complete checkpoint to resume from (checkpoint-10: it has no trainer_state.json" in log
    assert "set resume_from_checkpoint: false to start fresh" in log
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    _, log = run([*cmd, "--resume_from_checkpoint", "false"], env)  # starting fresh clears the checkpoints
    assert "Resuming" not in log and [p.name for p in out.glob("checkpoint-*")] == ["checkpoint-5"]
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 5


def _mount_tmpfs(folder: Path, size: str, remount: bool = False) -> bool:
    folder.mkdir(exist_ok=True)
    options = f"remount,size={size}" if remount else f"size={size}"
    try:
        mount = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
        return mount.returncode == 0
    except OSError:
        return False


def test_a_full_disk_is_named_and_the_rerun_resumes_once_there_is_space(env, tmp_path, uninterrupted):
    """For real on a 3 MB tmpfs where the machine lets us mount one (as root): checkpoint-5 fits, checkpoint-10 does
    not. Elsewhere the OSError of a full disk is raised inside the save of checkpoint-10."""
    disk = tmp_path / "disk"
    out = disk / "out"
    real = _mount_tmpfs(disk, "3m")
    try:
        cmd = command(out) if real else [sys.executable, str(HERE / "kill_at.py"), "full", "10", *command(out)[2:]]
        status, log = run(cmd, env, check=False)
        assert status == 5, log[-3000:]
        assert f"error: could not save the checkpoint in {out}: no space left on device" in log
        assert "the partial checkpoint-10 was removed. checkpoint-5 is intact: free some space and rerun" in log
        assert "Traceback" not in log
        assert checkpoints.problem(out / "checkpoint-5") is None and not (out / "checkpoint-10").exists()
        if real:
            assert _mount_tmpfs(disk, "64m", remount=True)  # space freed
        _, log = run(command(out), env)
        assert f"Resuming from {out / 'checkpoint-5'}" in log
        assert final_eval_loss(out) == pytest.approx(uninterrupted()[0], rel=1e-6)
    finally:
        if real:
            subprocess.run(["umount", str(disk)], check=True)


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _start(cmd, env, cwd):
    return subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # fmt: skip


def _wait_for_training(proc) -> list[str]:
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "'loss'" in line:  # the first training log: the run is training
            return lines
    raise AssertionError("".join(lines[-50:]))


@pytest.mark.parametrize("processes", [1, 2])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_saves_at_a_step_all_processes_agree_on_and_the_rerun_continues(
    sig, processes, env, tmp_path, uninterrupted, prepared
):
    out = tmp_path / "out"
    if processes == 1:
        cmd = command(out)
    else:
        prepared("clm.yaml", *RUN)
        cmd = command(out, *TWO, launcher=LAUNCH2, script=("scripts/train.py",))
    proc = _start(cmd, env, ROOT)
    lines = _wait_for_training(proc)
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)  # Ctrl-C: the terminal signals the whole foreground process group
    elif processes == 1:
        proc.send_signal(sig)  # Kubernetes: the container's first process
    else:  # SLURM: every process of the job step, the launcher included, which passes its copy on to each worker too
        for pid in [proc.pid, *_children(proc.pid)]:
            os.kill(pid, sig)
    lines += proc.stdout.readlines()
    status, log = proc.wait(), "".join(lines)
    # python scripts/train.py exits 128 + the signal; accelerate launch turns any child's failure into its own 1.
    assert status == (128 + sig if processes == 1 else 1), log[-3000:]
    name = signal.Signals(sig).name
    stopped = [line for line in lines if line.startswith(f"stopped by {name} at step")]
    assert len(stopped) == 1, log[-3000:]  # said once, by the main process
    step = int(stopped[0].split("at step ")[1].split(":")[0])
    assert [p.name for p in out.glob("checkpoint-*")] == [f"checkpoint-{step}"]
    assert checkpoints.problem(out / f"checkpoint-{step}") is None
    if processes == 2:  # every process saved its part of the same step
        assert {p.name for p in (out / f"checkpoint-{step}").glob("rng_state_*.pth")} == {
            "rng_state_0.pth",
            "rng_state_1.pth",
        }
    assert not (out / "all_results.json").exists()  # the run is not over

    rerun = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert f"Resuming from {out / f'checkpoint-{step}'}" in rerun.stdout + rerun.stderr
    expected, history = uninterrupted(processes=processes) if processes == 2 else uninterrupted()[:1] + (None,)
    assert final_eval_loss(out) == pytest.approx(expected, rel=1e-6)
    # The training losses logged after the stop are those of the uninterrupted run (the interval the stop fell in is
    # logged in two parts: up to the stop, and from it).
    state = json.loads((out / "trainer_state.json").read_text())
    after = {h["step"]: h["loss"] for h in state["log_history"] if "loss" in h and h["step"] > step + 5}
    if history:
        reference = {h["step"]: h["loss"] for h in history["log_history"] if "loss" in h and h["step"] in after}
        assert after == pytest.approx(reference, rel=1e-6) and after


def test_a_second_signal_during_that_save_exits_at_once_and_the_checkpoint_before_stays_the_resume_point(
    env, tmp_path, uninterrupted
):
    out = tmp_path / "out"
    cmd = [sys.executable, str(HERE / "kill_at.py"), "second-signal", "0", *command(out)[2:]]
    proc = _start(cmd, env, ROOT)
    lines = _wait_for_training(proc)
    while not (out / "checkpoint-5" / checkpoints.MANIFEST).exists():
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)  # the second comes from inside, as the checkpoint it asked for is being written
    lines += proc.stdout.readlines()
    log = "".join(lines)
    assert proc.wait() == 128 + signal.SIGTERM, log[-3000:]
    assert "SIGTERM again: exiting now without saving" in log and "stopped by SIGTERM" not in log
    newest, incomplete = checkpoints.resumable(out)
    assert newest == out / "checkpoint-5" and len(incomplete) == 1, incomplete
    _, log = run(command(out), env)
    assert f"Resuming from {out / 'checkpoint-5'}" in log
    assert final_eval_loss(out) == pytest.approx(uninterrupted()[0], rel=1e-6)


# A run started from a terminal has SIGINT at its default; one started in the background of a script (`cmd &` in a
# shell without job control) inherits it ignored, as does everything such a shell starts (a test suite included).
@pytest.mark.parametrize("disposition", [signal.SIG_DFL, signal.SIG_IGN], ids=["terminal", "background"])
def test_ctrl_c_before_training_exits_130_having_written_nothing(disposition, env, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, str(HERE / "kill_at.py"), "interrupt-data", "0", *command(out)[2:]]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, disposition))  # fmt: skip
    status, log = proc.returncode, proc.stdout + proc.stderr
    assert status == 130, log[-3000:]
    assert "interrupted outside training: nothing more was saved" in log and "Traceback" not in log
    assert not out.exists()


@pytest.mark.parametrize("recipe", ["clm.yaml", "mlm.yaml"])
def test_two_processes_train_as_one_at_the_same_global_batch(recipe, uninterrupted):
    """fp32 on the CPU: the same recipe on 1 process of 8 sequences and on 2 processes of 4 gives the same curves
    (the same batches, the same masks; only dropout draws differ)."""
    one, two = uninterrupted(recipe)[1], uninterrupted(recipe, processes=2)[1]
    for key in ("loss", "eval_loss"):
        a = [(h["step"], h[key]) for h in one["log_history"] if key in h]
        b = [(h["step"], h[key]) for h in two["log_history"] if key in h]
        assert [s for s, _ in a] == [s for s, _ in b] and len(a) >= 2
        assert all(math.isclose(x, y, rel_tol=0.01) for (_, x), (_, y) in zip(a, b, strict=True)), (a, b)
