"""Shared fixtures: offline Hub, one datasets/tokenizer cache per session, a tiny model, and a runner for
`scripts/train.py` in a real subprocess (as a user runs it)."""

import json
import os
import subprocess
import sys
from pathlib import Path

# Set before datasets/transformers are imported: nothing in the tests may reach the Hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
# Under pytest-xdist (pyproject's `-n auto`) every worker runs its own trainings side by side: one torch thread
# each (in the worker and in the runs it starts), so N workers share N cores instead of fighting over N x N threads.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "scripts" / "train.py"

# A model of ~0.2M parameters: enough to learn, small enough to train in seconds on a CPU.
TINY = [
    "--num_layers", "2", "--num_heads", "2", "--hidden_size", "64", "--intermediate_size", "128",
    "--max_position_embeddings", "64", "--block_size", "64", "--vocab_size", "1000",
    "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "16", "--max_eval_samples", "32",
    "--learning_rate", "2e-3", "--warmup_steps", "0", "--logging_steps", "5", "--disable_tqdm", "true",
]  # fmt: skip


# A short pretraining run, no evaluation or checkpoints: the starting point of the fine-tuning and evaluation tests.
PRETRAIN = [*TINY, "--max_steps", "60", "--eval_strategy", "no", "--save_strategy", "no"]


@pytest.fixture(scope="session")
def trained(env, tmp_path_factory):
    """trained(objective, *flags) -> (output folder, console output) of one train.py run of recipes/OBJECTIVE.yaml,
    made once per session for each set of flags and shared by the tests that only read it."""
    made = {}

    def _get(objective: str, *flags: str) -> tuple[Path, str]:
        if (objective, flags) not in made:
            out = tmp_path_factory.mktemp(f"trained-{objective}")
            cmd = [sys.executable, str(TRAIN), str(ROOT / "recipes" / f"{objective}.yaml"), *flags, "--output_dir",
                   str(out)]  # fmt: skip
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
            assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
            made[objective, flags] = (out, proc.stdout + proc.stderr)
        return made[objective, flags]

    return _get


@pytest.fixture(scope="session")
def prepared(env):
    """prepared(recipe, *flags): scripts/prepare.py run once per session for those flags, into the session's cache,
    where training with the same recipe and flags finds it (several processes need it)."""
    done = set()

    def _prepare(recipe: str, *flags: str) -> str:
        if (recipe, flags) not in done:
            cmd = [sys.executable, str(ROOT / "scripts" / "prepare.py"), str(ROOT / "recipes" / recipe), *flags]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
            assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
            done.add((recipe, flags))
        return recipe

    return _prepare


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> str:
    """One datasets cache for the session: the embedded corpus is tokenized once for all tests."""
    return str(tmp_path_factory.mktemp("hf_cache"))


@pytest.fixture(scope="session")
def env(cache_dir, tmp_path_factory) -> dict:
    home = tmp_path_factory.mktemp("hf_home")
    return {**os.environ, "HF_HOME": str(home), "HF_DATASETS_CACHE": cache_dir, "PYTHONUNBUFFERED": "1"}


class Run:
    def __init__(self, proc: subprocess.CompletedProcess, output_dir: Path | None):
        self.returncode, self.output_dir = proc.returncode, output_dir
        self.out = proc.stdout + proc.stderr

    def state(self) -> dict:
        return json.loads((self.output_dir / "trainer_state.json").read_text())

    def losses(self) -> list[float]:
        return [h["loss"] for h in self.state()["log_history"] if "loss" in h]


@pytest.fixture
def train(env, tmp_path):
    """train(recipe, *flags, launcher=[...], extra_env={...}) runs scripts/train.py and returns a Run."""

    def _train(
        recipe: str, *flags: str, launcher=(sys.executable,), output_dir=None, check=True, extra_env=None
    ) -> Run:
        out = Path(output_dir) if output_dir else tmp_path / "out"
        args = [*launcher, str(TRAIN), str(ROOT / "recipes" / recipe) if "/" not in recipe else recipe]
        args += ["--output_dir", str(out), *flags]
        run_env = {**env, **(extra_env or {})}
        proc = subprocess.run(args, cwd=tmp_path, env=run_env, capture_output=True, text=True, timeout=900)
        run = Run(proc, out)
        if check and proc.returncode != 0:
            raise AssertionError(f"train.py exited {proc.returncode}:\n{run.out[-6000:]}")
        return run

    return _train
