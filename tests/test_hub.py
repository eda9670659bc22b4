"""Sharing on the Hub: train.py pushing to the local Hub stand-in (tests/hub_server.py) through the real client.

Each run is a subprocess whose environment points huggingface_hub at the stand-in before it is imported. Runs
whose uploads fail go through `hub_server.skip_client_backoff()`, so the client's 23 s of retries do not slow the
tests; the requests and the exception are the same.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hub_server import HubServer

from conftest import ROOT, TINY, TRAIN

TESTS = Path(__file__).resolve().parent
SECRET = "hf_secret_token_value"
# Runs train.py like `python train.py ...`, with the client's retry waits skipped.
NO_BACKOFF = [sys.executable, "-c", f"import runpy, sys; sys.path.insert(0, {str(TESTS)!r}); import hub_server; "
              "hub_server.skip_client_backoff(); sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], "
              "run_name='__main__')"]  # fmt: skip
SHORT = [*TINY, "--max_steps", "10", "--save_steps", "5", "--eval_steps", "5", "--push_to_hub", "true"]


@pytest.fixture
def hub(tmp_path):
    with HubServer(tmp_path / "hub", token=SECRET) as server:
        yield server


def local_files(out: Path) -> dict[str, bytes]:
    """What the final push sends: the output folder without checkpoints and private `_*` files."""
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in out.rglob("*")
        if p.is_file() and not p.relative_to(out).parts[0].startswith(("checkpoint-", "_"))
    }


def top_level(files: dict) -> dict:
    """The repo's files outside its checkpoint folders (TensorBoard's runs/ included)."""
    return {k: v for k, v in files.items() if not re.match(r"(last-)?checkpoint", k) and k != ".gitattributes"}


def assert_no_secret(run, *folders):
    assert SECRET not in run.out
    for folder in folders:
        for path in folder.rglob("*"):
            assert not path.is_file() or SECRET.encode() not in path.read_bytes(), path


@pytest.mark.parametrize("strategy", ["end", "every_save", "checkpoint", "all_checkpoints"])
def test_each_strategy_pushes_what_it_promises(train, hub, strategy):
    # hub_always_push queues every save's upload, so which commits arrive does not depend on the machine's speed.
    run = train("mlm.yaml", *SHORT, "--hub_strategy", strategy, "--hub_model_id", "tester/tiny-mlm",
                "--hub_token", SECRET, "--hub_always_push", "true",
                extra_env=hub.env(token="not-this-one"))  # fmt: skip
    repo = hub.files("tester/tiny-mlm")
    local = local_files(run.output_dir)
    assert top_level(repo) == local  # the repo's final state is the local output, byte for byte
    for name in ("model.safetensors", "config.json", "tokenizer.json", "recipe.yaml", "README.md", "all_results.json"):
        assert name in repo, name
    titles = [c.title for c in hub.commits("tester/tiny-mlm")]
    folders = {k.split("/")[0] for k in repo if "/" in k} - {"runs"}  # runs/: TensorBoard's event files
    if strategy == "end":
        assert titles == ["initial commit", "End of training"] and not folders
    elif strategy == "every_save":
        assert titles[1:] == ["Training in progress, step 5", "Training in progress, step 10", "End of training"]
        assert not folders
    elif strategy == "checkpoint":
        assert folders == {"last-checkpoint"}
        assert json.loads(repo["last-checkpoint/trainer_state.json"])["global_step"] == 10
    else:
        assert folders == {"checkpoint-5", "checkpoint-10"}
    card = repo["README.md"].decode()
    assert "pipeline_tag: fill-mask" in card and "BertForMaskedLM" in card and "eval_perplexity" in card
    assert 'pipeline("fill-mask", model="tester/tiny-mlm")' in card and "```yaml\n" in card
    # The token reached the Hub (every request carried it) yet was written nowhere, here or there.
    assert_no_secret(run, run.output_dir)
    assert all(SECRET.encode() not in content for content in repo.values())
    saved_args = torch.load(run.output_dir / "training_args.bin", weights_only=False)
    assert saved_args.hub_token is None


def test_resume_on_a_new_machine_from_the_hub_checkpoint(train, hub, tmp_path):
    first = train("clm.yaml", *SHORT, "--hub_strategy", "checkpoint", "--hub_model_id", "tester/run",
                  extra_env=hub.env())  # fmt: skip
    assert first.state()["global_step"] == 10
    elsewhere = tmp_path / "new-machine"
    again = train("clm.yaml", *SHORT, "--hub_strategy", "checkpoint", "--hub_model_id", "tester/run",
                  "--max_steps", "15", "--resume_from_checkpoint", "tester/run", output_dir=elsewhere,
                  extra_env=hub.env())  # fmt: skip
    assert "downloaded tester/run/last-checkpoint (step 10)" in again.out
    assert f"Resuming from {elsewhere / 'checkpoint-10'}" in again.out
    state = again.state()
    assert state["global_step"] == 15
    steps = [h["step"] for h in state["log_history"] if "loss" in h]
    assert steps[0] == 5 and steps[-1] == 15  # one history: the first machine's steps, then this one's
    assert json.loads(hub.files("tester/run")["last-checkpoint/trainer_state.json"])["global_step"] == 15
    # Run again on that machine: its own checkpoint is not behind the Hub's, so nothing is downloaded.
    third = train("clm.yaml", *SHORT, "--hub_strategy", "checkpoint", "--hub_model_id", "tester/run",
                  "--max_steps", "15", "--resume_from_checkpoint", "tester/run", output_dir=elsewhere,
                  extra_env=hub.env())  # fmt: skip
    assert f"{elsewhere / 'checkpoint-15'} is not behind tester/run (step 15): resuming from it" in third.out
    assert "downloaded" not in third.out and "nothing left to train" in third.out


def test_resume_from_a_hub_repo_of_another_recipe_is_refused(train, hub, tmp_path):
    train("clm.yaml", *SHORT, "--hub_strategy", "checkpoint", "--hub_model_id", "tester/run", extra_env=hub.env())
    run = train("clm.yaml", *SHORT, "--vocab_size", "900", "--resume_from_checkpoint", "tester/run",
                output_dir=tmp_path / "other", check=False, extra_env=hub.env())  # fmt: skip
    assert run.returncode == 2
    assert "the Hub repo tester/run holds checkpoints of a different recipe (vocab_size: 1000 there, 900" in run.out
    assert not (tmp_path / "other" / "checkpoint-10").exists()


@pytest.mark.parametrize("problem", ["bad token", "hub down"])
def test_a_hub_that_cannot_be_reached_stops_the_run_before_it_writes(train, hub, problem):
    if problem == "hub down":
        hub.stop()
    env = hub.env(token="hf_wrong_token_value" if problem == "bad token" else None)
    run = train("mlm.yaml", *SHORT, check=False, launcher=NO_BACKOFF, extra_env=env)
    assert run.returncode == 2
    assert "push_to_hub: cannot create or reach the Hub repo out" in run.out
    assert ("401 Unauthorized" if problem == "bad token" else "ConnectError") in run.out
    assert "hf auth login" in run.out and "or set push_to_hub: false" in run.out
    assert "hf_wrong_token_value" not in run.out and SECRET not in run.out
    assert not run.output_dir.exists()


def test_failed_uploads_are_reported_the_outputs_kept_and_a_rerun_pushes(train, hub):
    hub.mode = "refuse_commits"  # the repo is created, every upload then fails (as when the network goes mid-run)
    flags = [*SHORT, "--hub_strategy", "checkpoint", "--hub_model_id", "tester/run"]
    run = train("mlm.yaml", *flags, check=False, launcher=NO_BACKOFF, extra_env=hub.env())
    assert run.returncode == 3, run.out[-3000:]
    assert "Hub: the model upload of step 5 failed: HfHubHTTPError: Server error '500 Internal Server" in run.out
    assert f"the run finished and its outputs are in {run.output_dir}, but the Hub repo tester/run does not" in run.out
    assert "run the same command" in run.out
    assert (run.output_dir / "model.safetensors").is_file() and run.state()["global_step"] == 10
    assert {"model.safetensors", "README.md"}.isdisjoint(hub.files("tester/run"))

    hub.mode = "ok"
    again = train("mlm.yaml", *flags, launcher=NO_BACKOFF, extra_env=hub.env())
    assert "is the last step of this run (10): nothing left to train" in again.out
    assert again.state()["global_step"] == 10
    repo = hub.files("tester/run")
    assert top_level(repo) == local_files(again.output_dir)
    assert json.loads(repo["last-checkpoint/trainer_state.json"])["global_step"] == 10
    assert "Hub: tester/run matches" in again.out


def test_an_upload_in_flight_makes_the_next_log_wait_and_every_save_arrives(env, hub, tmp_path):
    # The stand-in holds each upload until the test releases it: the step-2 upload is in flight for as long as it
    # takes the run to reach its next log, which must wait for it (an upload reads the event file the log appends
    # to), rather than skip the next saves' uploads or send a file that is still being written.
    hub.hold()
    out = tmp_path / "out"
    cmd = [sys.executable, str(TRAIN), str(ROOT / "recipes" / "mlm.yaml"), *SHORT, "--save_steps", "2",
           "--eval_strategy", "no", "--hub_strategy", "every_save", "--hub_model_id", "tester/slow",
           "--report_to", "tensorboard", "--output_dir", str(out)]  # fmt: skip
    proc = subprocess.Popen(cmd, env={**env, **hub.env()}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    console = []
    for line in proc.stdout:
        console.append(line)
        if "Hub: waiting for the upload of the last save" in line:
            hub.release()
    assert proc.wait(timeout=600) == 0, "".join(console)[-4000:]
    console = "".join(console)
    assert "Hub: waiting for the upload of the last save" in console and "skipped" not in console
    titles = [c.title for c in hub.commits("tester/slow")]
    assert titles[1:] == [f"Training in progress, step {s}" for s in (2, 4, 6, 8, 10)] + ["End of training"]
    assert top_level(hub.files("tester/slow")) == local_files(out)


def test_a_checkpoint_that_never_arrives_fails_the_run_though_the_model_did(train, hub):
    hub.mode = "refuse_checkpoints"  # the model files arrive, the checkpoint folders do not
    run = train("mlm.yaml", *SHORT, "--hub_strategy", "checkpoint", "--hub_model_id", "tester/run", check=False,
                launcher=NO_BACKOFF, extra_env=hub.env())  # fmt: skip
    assert run.returncode == 3, run.out[-3000:]
    assert "Hub: the checkpoint upload of step 5 failed" in run.out
    assert "does not match them: checkpoint-10 as last-checkpoint: HfHubHTTPError" in run.out
    repo = hub.files("tester/run")
    assert top_level(repo) == local_files(run.output_dir) and not any(k.startswith("last-checkpoint/") for k in repo)
