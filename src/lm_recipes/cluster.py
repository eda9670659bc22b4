"""The cluster half of `train.py RECIPE --plan`: what the recipe costs on 8 GPUs of a named kind (hours and dollars at
a stated MFU), on this machine (from a short measurement), and the memory each GPU needs under DDP, ZeRO-2 and
FSDP/ZeRO-3, so a user knows before launching whether it fits. docs/scaling.md gives the formulas and sources."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from . import flops

GPUS = 8  # the GPUs of one node, the unit the plan prices
MFU = 0.40  # llm-foundry's published H100 bf16 runs reach 35-46% MFU (760M-70B) and A100 bf16 39-56%
MEASURE_STEPS, MEASURE_SECONDS = 10, 10.0  # this machine: at most this many training steps, or this long,
MEASURE_TOKENS = 256  # of sequences of at most this many tokens
WARMUP_SECONDS = 30.0  # the untimed first step (AdamW's state allocated, kernels chosen) may take this long


@dataclass(frozen=True)
class Accelerator:
    name: str
    table_name: str  # its row of flops.PEAK_TFLOPS
    usd_per_hour: float  # one GPU on demand; 2026 list prices run $2.49-3.99 (H100 SXM) and $1.49-2.49 (A100 80GB)
    memory_gb: float


ACCELERATORS = (Accelerator("H100 SXM", "H100", 2.99, 80.0), Accelerator("A100 80GB", "A100", 1.49, 80.0))


def run_numbers(recipe, model: PreTrainedModel, steps: int, gpus: int = GPUS) -> dict:
    """Tokens and FLOPs of the recipe's run on `gpus` processes with its per-device batch and accumulation."""
    a, block = recipe.training, recipe.data.block_size
    sequences = a.per_device_train_batch_size * a.gradient_accumulation_steps * gpus
    tokens = steps * sequences * block
    return {"sequences": sequences, "tokens": tokens, "flops": tokens * flops.flops_per_token(model, block)}


def memory(model: PreTrainedModel, recipe, gpus: int = GPUS) -> dict[str, tuple[float, float]]:
    """Bytes per GPU, (model state, activations), of training `model` with AdamW under bf16 mixed precision.

    Model state per parameter (Rajbhandari et al. 2020, ZeRO, section 3.1, and how each engine holds it):
      DDP (torch autocast): fp32 weights 4 + fp32 gradients 4 + AdamW's two fp32 moments 8 = 16 bytes, on every GPU;
      ZeRO-2 (DeepSpeed bf16): bf16 weights 2 on every GPU; bf16 gradients 2 and fp32 master weights and moments 12
        sharded over the GPUs;
      FSDP full shard / ZeRO-3: all 16 bytes sharded (plus one layer gathered at a time, not counted).
    Activations of one micro-batch of b blocks of s tokens, stored for backward (Korthikanti et al. 2022, "Reducing
    Activation Recomputation", eq. 1 with SDPA's fused attention, which stores no s x s scores): 34·s·b·h bytes per
    layer of width h, plus the logits over the vocabulary V, bf16 and their fp32 copy for the loss: 6·s·b·V.
    """
    n = model.num_parameters()
    c = model.config
    b, s = recipe.training.per_device_train_batch_size, recipe.data.block_size
    head = model.get_output_embeddings()  # a language model's logits cover the vocabulary at every position
    logits = 6 * s * b * head.weight.shape[0] if head is not None else 0
    activations = 34 * s * b * c.hidden_size * c.num_hidden_layers + logits
    return {
        "DDP": (16 * n, activations),
        "ZeRO-2": (2 * n + 14 * n / gpus, activations),
        "FSDP / ZeRO-3": (16 * n / gpus, activations),
    }


def measure(trainer, steps: int = MEASURE_STEPS, seconds: float = MEASURE_SECONDS) -> float | None:
    """FLOP/s this machine sustains training the recipe's model: forward, backward (the task's own loss) and AdamW
    step on one sequence of random tokens at a time, timed after a first (warm-up) step, for `steps` steps or until
    `seconds` have passed. The sequence is at most MEASURE_TOKENS long, so that a large model is measured in seconds;
    FLOPs per token at that length convert it. None when the warm-up step alone takes WARMUP_SECONDS: it is several
    later steps long, more so on a busy machine, so it is not held to `seconds`."""
    model, args = trainer.model, trainer.args
    length = min(trainer.recipe.data.block_size, MEASURE_TOKENS)
    optimizer = trainer.optimizer or trainer.create_optimizer()
    ids = torch.randint(0, model.config.vocab_size, (1, length), generator=torch.Generator().manual_seed(0))
    ids = ids.to(args.device)
    labels = torch.zeros(1, dtype=torch.long, device=args.device) if trainer.task.labelled else ids
    dtype = torch.bfloat16 if args.bf16 else torch.float16 if args.fp16 else None
    model.train()

    def step() -> float:
        began = time.perf_counter()
        with torch.autocast(args.device.type, dtype=dtype, enabled=dtype is not None):
            loss = trainer.task.loss(model(input_ids=ids), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if args.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - began

    if step() >= WARMUP_SECONDS:
        return None
    timed = []
    while len(timed) < steps and sum(timed) < seconds:
        timed.append(step())
    return len(timed) * length * flops.flops_per_token(model, length) / sum(timed)


def lines(trainer, recipe, steps: int) -> list[str]:
    """The plan's cluster lines: time and cost on 8 GPUs of each named kind, time here, memory per GPU."""
    model = trainer.model
    run = run_numbers(recipe, model, steps)
    a = recipe.training
    out = [
        f"on {GPUS} GPUs: global batch {run['sequences']:,} sequences = {a.per_device_train_batch_size} per device x "
        f"{a.gradient_accumulation_steps} accumulation steps x {GPUS} GPUs; {steps:,} steps = {run['tokens']:,} "
        f"tokens, {run['flops']:.3g} FLOPs"
    ]
    for acc in ACCELERATORS:
        peak = flops.PEAK_TFLOPS[acc.table_name]["bf16"] * 1e12
        hours = run["flops"] / (GPUS * peak * MFU) / 3600
        cost = hours * GPUS * acc.usd_per_hour
        dollars = f"${cost:,.{2 if cost < 10 else 0}f}"
        out.append(f"  {GPUS} x {acc.name} ({peak / 1e12:,.0f} TFLOPS bf16 dense) at {MFU:.0%} MFU: "
                   f"{_duration(hours)}, {dollars} at ${acc.usd_per_hour:.2f} per GPU-hour")  # fmt: skip
    rate = measure(trainer)
    here = a.device.type
    if rate is None:
        out.append(f"  this machine ({here}): one step takes over {WARMUP_SECONDS:.0f} s; not measured")
    else:
        tokens_per_second = rate / flops.flops_per_token(model, recipe.data.block_size)
        out.append(f"  this machine ({here}, 1 process, measured {rate / 1e9:,.1f} GFLOP/s = {tokens_per_second:,.0f} "
                   f"tokens/s): {_duration(run['flops'] / rate / 3600)}")  # fmt: skip
    out.append(f"memory per GPU with bf16 and AdamW on {GPUS} GPUs: model state + activations of "
               f"{a.per_device_train_batch_size} x {recipe.data.block_size} tokens (one micro-batch)")  # fmt: skip
    fits = min(acc.memory_gb for acc in ACCELERATORS)
    for engine, (state, activations) in memory(model, recipe).items():
        total = (state + activations) / 1e9
        verdict = "fits" if total < fits * 0.9 else "does not fit"
        out.append(f"  {engine}: {state / 1e9:.2f} GB + {activations / 1e9:.2f} GB = {total:.1f} GB ({verdict} in "
                   f"{fits:.0f} GB)")  # fmt: skip
    return out


def _duration(hours: float) -> str:
    if hours < 1 / 60:
        return f"{hours * 3600:.1f} s"
    if hours < 1:
        return f"{hours * 60:.1f} min"
    return f"{hours:,.1f} h" if hours < 48 else f"{hours / 24:,.0f} days"
