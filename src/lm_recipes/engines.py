"""Engines: the distributed engine accelerate set up for a run (one process, DDP, FSDP2, DeepSpeed ZeRO), what a
recipe's model fills in for it, and the lines a run prints about it and about the fast paths it takes."""

from __future__ import annotations

import os
import warnings

import torch
from accelerate.utils import DistributedType
from torch import nn

# What `accelerate launch --config_file ...` asked for, as its launcher tells the processes.
ASKED = {"ACCELERATE_USE_FSDP": "FSDP", "ACCELERATE_USE_DEEPSPEED": "DeepSpeed"}


def layer_class(model: nn.Module) -> str | None:
    """Name of the class of the model's repeated transformer layer (GPT2Block, BertLayer, ...): the elements of its
    first ModuleList, which FSDP wraps one unit each. None for a model without one."""
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) and len({type(m) for m in module}) == 1:
            return type(module[0]).__name__
    return None


def fill_in(plugin, model: nn.Module) -> None:
    """FSDP's auto-wrap policy wraps the classes in `fsdp_transformer_layer_cls_to_wrap`, else every class the
    model's `_no_split_modules` names, which for BERT includes its embeddings: wrapped apart from the output layer
    tied to them, the one tied weight would belong to two units. Unset, the unit is the layer class alone, and the
    embeddings and the head stay together in the root unit; one config then serves every architecture.
    `plugin`: accelerate's FullyShardedDataParallelPlugin of the run, or None when it does not use FSDP."""
    if plugin is not None and plugin.transformer_cls_names_to_wrap is None and (name := layer_class(model)):
        plugin.transformer_cls_names_to_wrap = [name]


def join_deepspeed(args) -> None:
    """With the Trainer's `deepspeed` key on CPU processes, accelerate sets up the gloo process group but not
    DeepSpeed's view of it (it does on GPUs), and ZeRO-3 building the model already sharded (deepspeed.zero.Init)
    would see one process. DeepSpeed's own init_distributed adopts the group the processes share; once set, it is
    a no-op."""
    if args.deepspeed or os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        # DeepSpeed's collectives call torch's old names: a warning per call, hundreds per step, says nothing to users.
        warnings.filterwarnings("ignore", r"`torch\.distributed\.\w+` is deprecated", FutureWarning)
    if args.deepspeed and torch.distributed.is_initialized():
        import deepspeed

        deepspeed.init_distributed(dist_backend=torch.distributed.get_backend())


def gather_final_model(plugin) -> None:
    """Under FSDP with sharded checkpoints the Trainer's save_model writes no weights; switching the state-dict type
    to full, as accelerate documents, makes the final save one model.safetensors that from_pretrained loads."""
    if plugin is not None and "FULL_STATE_DICT" not in str(plugin.state_dict_type):
        plugin.set_state_dict_type("FULL_STATE_DICT")


def describe(accelerator, model: nn.Module) -> list[str]:
    """The engine line of a run's start, and a warning when the launcher asked for an engine accelerate did not set
    up (FSDP and DeepSpeed run on GPUs only; on a CPU the same processes train as DDP over gloo)."""
    state, n = accelerator.state, accelerator.num_processes
    kind = state.distributed_type
    if kind == DistributedType.FSDP:
        plugin = state.fsdp_plugin
        full = plugin.reshard_after_forward in (True, "FULL_SHARD", "full_shard")
        shard = "full shard" if full else "weights kept gathered from forward to backward"
        wrapped = ", ".join(plugin.transformer_cls_names_to_wrap or [layer_class(model) or "the whole model"])
        line = (f"engine: FSDP{plugin.fsdp_version} over {n} processes, {shard}, one unit per {wrapped}; checkpoints "
                f"{str(plugin.state_dict_type).rsplit('.', 1)[-1]}")  # fmt: skip
    elif kind == DistributedType.DEEPSPEED:
        stage = state.deepspeed_plugin.zero_stage
        line = f"engine: DeepSpeed ZeRO-{stage} over {n} processes"
    elif n > 1:
        backend = torch.distributed.get_backend() if torch.distributed.is_initialized() else state.backend
        line = f"engine: DDP over {n} processes ({backend})"
    else:
        line = f"engine: one process on {accelerator.device.type}"
    out = [line]
    for variable, engine in ASKED.items():
        if os.environ.get(variable, "false").lower() == "true" and kind.value.upper() != engine.upper():
            out.append(f"the accelerate config asks for {engine}, which accelerate runs on GPUs only: this run trains "
                       f"as DDP on {accelerator.device.type} (the same updates, nothing sharded)")  # fmt: skip
    return out


def fast_paths(args, model: nn.Module) -> str:
    """The speed-ups in force, for the start of a run: each is decided by the device and `precision`, never
    switched on where it would fail."""
    dtype = "bf16 autocast" if args.bf16 else "fp16 autocast + loss scaling" if args.fp16 else "fp32"
    parts = [dtype]
    if args.device.type == "cuda":
        parts.append("TF32 matmuls" if args.tf32 else "no TF32")
    parts.append(f"{model.config._attn_implementation} attention")
    optim = getattr(args.optim, "value", args.optim)
    parts.append(f"{optim} optimizer")
    workers = args.dataloader_num_workers
    parts.append(f"{workers} loader workers" + (", pinned memory" if args.dataloader_pin_memory else ""))
    parts.append(f"torch.compile {'on' if args.torch_compile else 'off'}")
    return "fast paths: " + ", ".join(parts)
