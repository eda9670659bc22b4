"""The engine configs under configs/accelerate, read as `accelerate launch` reads them, and what runs of them do here:
DDP on 2 CPU processes over gloo trains as 1 process does at the same global batch; FSDP and DeepSpeed, which
accelerate sets up on GPUs only, are said to fall back rather than silently doing so."""

import json

import pytest
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import FullyShardedDataParallelPlugin
from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy
from accelerate.utils.launch import prepare_multi_gpu_env
from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel

from conftest import ROOT, TINY
from lm_recipes import engines

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
    assert precision == "no"  # the recipe's `precision` decides, not the config
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
    import sys

    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / config),
            "--num_processes", "2", "--main_process_port", "0"]  # fmt: skip


# No dropout: then the only randomness is the data order and the masks, which do not depend on the processes.
SAME = [*TINY, "--dropout", "0", "--attention_dropout", "0", "--max_steps", "12", "--logging_steps", "2",
        "--eval_strategy", "no", "--save_strategy", "no", "--report_to", "none", "--plots", "false"]  # fmt: skip


@pytest.mark.parametrize("objective, config", [("clm", "ddp.yaml"), ("mlm", "fsdp.yaml")])
def test_two_processes_train_as_one_at_the_same_global_batch(train, prepared, tmp_path, objective, config):
    """DDP over gloo: 2 processes of 4 sequences follow the loss curve of 1 process of 8 (within 1%), so scaling
    out changes nothing but speed; a mistake in how losses or gradients are averaged over processes breaks it.
    fsdp.yaml runs too: accelerate sets FSDP up on GPUs only, so here it trains as DDP, and the run says so."""
    recipe = prepared(f"{objective}.yaml", *SAME)
    one = train(recipe, *SAME, "--per_device_train_batch_size", "8", output_dir=tmp_path / "one")
    two = train(recipe, *SAME, "--per_device_train_batch_size", "4", launcher=launcher(config),
                output_dir=tmp_path / "two")  # fmt: skip
    assert "engine: DDP over 2 processes (gloo)" in two.out
    assert "global batch: 8 sequences = 4 per device x 1 accumulation steps x 2 processes" in two.out
    fell_back = "the accelerate config asks for FSDP, which accelerate runs on GPUs only"
    assert two.out.count(fell_back) == (config == "fsdp.yaml")  # said once, by the main process
    assert fell_back not in one.out
    a, b = one.losses(), two.losses()
    assert len(a) == len(b) == 6
    assert a[-1] < a[0] - 0.3, a  # it learns: the curves compared are not flat
    assert max(abs(x - y) / x for x, y in zip(a, b, strict=True)) < 0.01, (a, b)
    assert (two.output_dir / "model.safetensors").is_file()
