"""The engine configs under configs/accelerate, read as `accelerate launch` reads them, and what runs of them do here:
DDP on 2 CPU processes over gloo trains as 1 process does at the same global batch; FSDP and DeepSpeed, which
accelerate sets up on GPUs only, are said to fall back rather than silently doing so."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import FullyShardedDataParallelPlugin
from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy
from accelerate.utils.launch import prepare_multi_gpu_env
from transformers import AutoModelForCausalLM, BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel

from conftest import ROOT, TINY, Run
from lm_recipes import engines, flops

CONFIGS = ROOT / "configs" / "accelerate"
ENGINES = {  # config -> (distributed_type, machines)
    ROOT / "accelerate_config.yaml": ("NO", 1),
    CONFIGS / "ddp.yaml": ("MULTI_GPU", 1),
    CONFIGS / "fsdp.yaml": ("FSDP", 1),
    CONFIGS / "deepspeed-zero2.yaml": ("DEEPSPEED", 1),
    CONFIGS / "deepspeed-zero3.yaml": ("DEEPSPEED", 1),
    CONFIGS / "multi-node.yaml": ("MULTI_GPU", 2),
}


def test_every_shipped_config_is_listed_here():
    assert set(CONFIGS.glob("*.yaml")) == set(ENGINES) - {ROOT / "accelerate_config.yaml"}


@pytest.mark.parametrize("path", list(ENGINES), ids=lambda p: p.name)
def test_config_loads_with_accelerate(path):
    config = load_config_from_file(str(path))
    kind, machines = ENGINES[path]
    assert config.distributed_type.value == kind
    assert config.num_machines == machines
    precision = getattr(config.mixed_precision, "value", config.mixed_precision)
    assert precision in ("no", None)  # the recipe's `precision` decides, not the config
    if machines > 1:
        assert config.main_process_ip and config.main_process_port and config.machine_rank == 0
        assert config.num_processes % machines == 0


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_config_leaves_the_recipe_in_charge(stage):
    """The batch sizes, accumulation, clipping and precision are the Trainer's "auto" values (filled from the
    recipe); no optimizer or scheduler of DeepSpeed's own replaces the recipe's."""
    config = load_config_from_file(str(CONFIGS / f"deepspeed-zero{stage}.yaml"))
    ds_file = ROOT / config.deepspeed_config["deepspeed_config_file"]  # relative to the repository's root
    ds = json.loads(ds_file.read_text())
    assert ds["zero_optimization"]["stage"] == stage
    for key in ("train_micro_batch_size_per_gpu", "train_batch_size", "gradient_accumulation_steps",
                "gradient_clipping"):  # fmt: skip
        assert ds[key] == "auto", key
    assert ds["bf16"]["enabled"] == "auto" and ds["fp16"]["enabled"] == "auto"
    assert "optimizer" not in ds and "scheduler" not in ds
    assert config.deepspeed_config["zero3_init_flag"] is (stage == 3)
    if stage == 3:  # else the final save is a DeepSpeed checkpoint, not a model from_pretrained loads
        assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_config_passes_accelerates_checks(monkeypatch, stage):
    """The plugin each process builds from `accelerate launch --config_file configs/accelerate/deepspeed-zeroN.yaml`
    (accelerate refuses, for one, a mixed_precision beside a DeepSpeed json)."""
    pytest.importorskip("deepspeed")
    from accelerate.utils import DeepSpeedPlugin
    from accelerate.utils.launch import prepare_deepspeed_cmd_env

    config = str(CONFIGS / f"deepspeed-zero{stage}.yaml")
    args = launch_command_parser().parse_args(["--config_file", config, "--num_processes", "2", "x.py"])
    args, defaults, precision_given = _validate_launch_command(args)
    # As accelerate's launch_command does before its DeepSpeed launcher: the keys the config file set.
    fields = list(defaults.deepspeed_config) + (["mixed_precision"] if precision_given else [])
    args.deepspeed_fields_from_accelerate_config = ",".join(fields)
    _, launch_env = prepare_deepspeed_cmd_env(args)
    for key, value in launch_env.items():
        if key.startswith("ACCELERATE_"):
            monkeypatch.setenv(key, value)
    monkeypatch.chdir(ROOT)  # the json's path in the config is relative to the repository's root
    plugin = DeepSpeedPlugin()
    assert plugin.zero_stage == stage
    assert plugin.zero3_init_flag is (stage == 3)


def fsdp_plugin(monkeypatch) -> FullyShardedDataParallelPlugin:
    """The FSDP plugin each process of `accelerate launch --config_file configs/accelerate/fsdp.yaml` builds, from
    the environment the launcher gives it."""
    args = launch_command_parser().parse_args(
        ["--config_file", str(CONFIGS / "fsdp.yaml"), "--num_processes", "2", "--main_process_port", "0", "x.py"]
    )
    args, _, _ = _validate_launch_command(args)
    for key, value in prepare_multi_gpu_env(args).items():
        if key.startswith(("FSDP_", "ACCELERATE_")):
            monkeypatch.setenv(key, value)
    return FullyShardedDataParallelPlugin()


def tiny(model_type: str):
    if model_type == "bert":
        config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                            intermediate_size=64, max_position_embeddings=32)  # fmt: skip
        model = BertForMaskedLM(config)
        return model, list(model.bert.encoder.layer)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=100, n_embd=32, n_layer=3, n_head=2, n_positions=32))
    return model, list(model.transformer.h)


@pytest.mark.parametrize("model_type", ["bert", "gpt2"])
def test_fsdp_config_wraps_each_transformer_layer(monkeypatch, model_type):
    plugin = fsdp_plugin(monkeypatch)
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
    assert "SHARDED_STATE_DICT" in str(plugin.state_dict_type)
    model, layers = tiny(model_type)
    engines.fill_in(plugin, model)
    policy = fsdp2_prepare_auto_wrap_policy(plugin, model)
    wrapped = [m for m in model.modules() if policy(m)]  # the layers alone: not BERT's embeddings, tied to the head
    names = [type(m).__name__ for m in wrapped]
    assert len(wrapped) == 3 and all(a is b for a, b in zip(wrapped, layers, strict=True)), names


def test_a_layer_class_given_in_the_config_is_kept(monkeypatch):
    monkeypatch.setenv("FSDP_TRANSFORMER_CLS_TO_WRAP", "BertAttention")
    plugin = fsdp_plugin(monkeypatch)
    model, _ = tiny("bert")
    engines.fill_in(plugin, model)
    assert plugin.transformer_cls_names_to_wrap == ["BertAttention"]


def test_final_model_is_gathered_whole(monkeypatch):
    plugin = fsdp_plugin(monkeypatch)
    engines.gather_final_model(plugin)
    assert "FULL_STATE_DICT" in str(plugin.state_dict_type)
    engines.gather_final_model(None)  # no FSDP: nothing to do


def launcher(config: str) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / config),
            "--num_processes", "2", "--main_process_port", "0"]  # fmt: skip


# No dropout: then the only randomness is the data order and the masks, which do not depend on the processes.
SAME = [*TINY, "--dropout", "0", "--attention_dropout", "0", "--max_steps", "12", "--logging_steps", "2",
        "--eval_strategy", "no", "--save_strategy", "no", "--report_to", "none", "--plots", "false"]  # fmt: skip


@pytest.fixture(scope="module")
def one_process(env, prepared, tmp_path_factory):
    """one_process(objective) -> the Run of recipes/OBJECTIVE.yaml with SAME on 1 process of 8 sequences, made once
    for the tests that compare other engines with it."""
    made = {}

    def _get(objective: str) -> Run:
        if objective not in made:
            out = tmp_path_factory.mktemp(f"one-{objective}")
            recipe = ROOT / "recipes" / prepared(f"{objective}.yaml", *SAME)
            cmd = [sys.executable, str(ROOT / "scripts" / "train.py"), str(recipe), *SAME,
                   "--per_device_train_batch_size", "8", "--output_dir", str(out)]  # fmt: skip
            made[objective] = Run(subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600), out)
            assert made[objective].returncode == 0, made[objective].out[-3000:]
        return made[objective]

    return _get


def test_the_fsdp_config_on_cpu_trains_as_ddp_says_so_and_matches_one_process(train, prepared, one_process):
    """accelerate sets FSDP up on GPUs only: here fsdp.yaml starts 2 CPU processes that train as DDP over gloo, and
    the run says so. They follow the loss curve of 1 process at the same global batch (within 1%; test_faults.py
    compares 1 and 2 processes of ddp for both objectives, evaluations included)."""
    recipe = prepared("clm.yaml", *SAME)
    one = one_process("clm")
    two = train(recipe, *SAME, "--per_device_train_batch_size", "4", "--peak_tflops", "0.05",
                launcher=launcher("fsdp.yaml"))  # fmt: skip
    assert "engine: DDP over 2 processes (gloo)" in two.out
    assert "global batch: 8 sequences = 4 per device x 1 accumulation steps x 2 processes" in two.out
    fell_back = "the accelerate config asks for FSDP, which accelerate runs on GPUs only"
    assert two.out.count(fell_back) == 1  # said by the main process
    assert fell_back not in one.out
    a, b = one.losses(), two.losses()
    assert len(a) == len(b) == 6
    assert a[-1] < a[0] - 0.3, a  # it learns: the curves compared are not flat
    assert max(abs(x - y) / x for x, y in zip(a, b, strict=True)) < 0.01, (a, b)
    assert (two.output_dir / "model.safetensors").is_file()

    # MFU with a given peak (none is known for a CPU): each process's token rate x FLOPs per token / the peak.
    model = AutoModelForCausalLM.from_pretrained(two.output_dir)
    per_token = flops.flops_per_token(model, 64)  # tests/test_watch.py checks it against torch's FLOP counter
    logs = [h for h in two.state()["log_history"] if "loss" in h]
    assert all(h["mfu"] == pytest.approx(h["tokens_per_second_per_device"] * per_token / 0.05e12) for h in logs)
    assert all("mfu" not in h for h in one.state()["log_history"])


# DeepSpeed runs on CPU processes through the Trainer's own `deepspeed` key (accelerate sets its engine up on GPUs
# only); the json is the shipped one. Its first use compiles a small communication op (~40 s, once per machine).
DS_RUN = [*SAME, "--max_steps", "12", "--save_strategy", "steps", "--save_steps", "4", "--save_total_limit", "1",
          "--eval_strategy", "steps", "--eval_steps", "12", "--per_device_train_batch_size", "4"]  # fmt: skip


def deepspeed_command(out, stage: int) -> list[str]:
    return [*launcher(f"deepspeed-zero{stage}.yaml"), str(ROOT / "scripts" / "train.py"),
            str(ROOT / "recipes" / "clm.yaml"), *DS_RUN, "--deepspeed", str(CONFIGS / f"deepspeed-zero{stage}.json"),
            "--output_dir", str(out)]  # fmt: skip


def test_deepspeed_zero3_trains_resumes_after_a_kill_and_saves_a_whole_model(prepared, one_process, env, tmp_path):
    """ZeRO-3 on 2 CPU processes over gloo: it trains as DDP does (the loss curve within 1%); SIGKILLed mid-save,
    the same command resumes from the last whole checkpoint and ends where the uninterrupted run ended; the final
    model.safetensors, gathered from the shards, holds the weights DeepSpeed's own zero_to_fp32 rebuilds from the
    last checkpoint's shards."""
    pytest.importorskip("deepspeed")
    import torch
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    from lm_recipes import checkpoints

    prepared("clm.yaml", *DS_RUN)
    env = {**env, "TORCH_EXTENSIONS_DIR": str(tmp_path.parent / "torch_extensions")}  # compiled once per session

    def run(out):
        proc = subprocess.run(deepspeed_command(out, 3), env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
        return proc.stdout + proc.stderr

    whole = tmp_path / "whole"
    log = run(whole)
    assert "engine: DeepSpeed ZeRO-3 over 2 processes" in log
    state = json.loads((whole / "trainer_state.json").read_text())
    ds_losses = [e["loss"] for e in state["log_history"] if "loss" in e]
    one_losses = one_process("clm").losses()  # the same global batch (8) on one process
    assert len(ds_losses) == len(one_losses) == 6
    assert max(abs(x - y) / y for x, y in zip(ds_losses, one_losses, strict=True)) < 0.01, (ds_losses, one_losses)

    # The final model: what from_pretrained loads is what the last checkpoint's shards hold.
    final = AutoModelForCausalLM.from_pretrained(whole)
    shards = get_fp32_state_dict_from_zero_checkpoint(str(whole / "checkpoint-12"))
    rebuilt = AutoModelForCausalLM.from_pretrained(whole)
    rebuilt.load_state_dict(shards, strict=False)
    ids = torch.arange(40).reshape(2, 20)
    with torch.no_grad():
        assert torch.equal(final.eval()(ids).logits, rebuilt.eval()(ids).logits)
        assert not torch.equal(final(ids).logits, AutoModelForCausalLM.from_config(final.config).eval()(ids).logits)

    # Rerun once finished, its final model gone (as if killed while writing it): the engine cannot load the last
    # step's weights outside training, so the run stops with the fix rather than save an untrained model.
    (whole / "model.safetensors").unlink()
    refused = subprocess.run(deepspeed_command(whole, 3), env=env, capture_output=True, text=True, timeout=600)
    assert refused.returncode != 0
    assert "model.safetensors of its end are missing" in refused.stderr, refused.stderr[-3000:]
    assert "python scripts/train.py" in refused.stderr and not (whole / "model.safetensors").exists()

    # SIGKILL to every process of the launch (the launcher and its workers, which torch's launcher starts in sessions
    # of their own) the moment checkpoint-8 exists without its manifest: a save under way.
    out = tmp_path / "killed"
    proc = subprocess.Popen(deepspeed_command(out, 3), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        folder = out / "checkpoint-8"
        if folder.is_dir() and not (folder / checkpoints.MANIFEST).exists():
            for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
                try:
                    command_line = (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    continue
                if str(out) in command_line and pid != os.getpid():
                    os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.001)
    assert proc.wait() == -signal.SIGKILL
    assert not (out / "checkpoint-12").exists()
    log = run(out)
    assert f"Resuming from {out / 'checkpoint-4'}" in log, [line for line in log.splitlines() if "checkpoint" in line]
    resumed = json.loads((out / "eval_results.json").read_text())["eval_loss"]
    assert resumed == pytest.approx(json.loads((whole / "eval_results.json").read_text())["eval_loss"], rel=1e-5)
