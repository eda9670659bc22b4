"""Compute estimates: training FLOPs per token of a transformer, and the peak FLOP/s of the device it runs on.

Model FLOPs utilisation (MFU) is the ratio of the two rates: FLOPs the model needs per second at the measured
token rate, over what the device could do at its dense peak in the training dtype.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

# Dense (no sparsity) peak TFLOP/s per device from the vendors' data sheets, by training dtype: fp32 is the plain fp32
# rate, tf32 the tensor-core rate of fp32 matmuls where TF32 is on (precision: auto turns it on for Ampere and
# newer). Matched against torch.cuda.get_device_name().
PEAK_TFLOPS = {
    "H100 PCIe": {"bf16": 756.0, "fp16": 756.0, "tf32": 378.0, "fp32": 51.2},
    "H100": {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9},  # SXM
    "H200": {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9},
    "A100": {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5},
    "A10G": {},  # AWS's variant of the A10 publishes no tensor-core figures: give peak_tflops
    "A10": {"bf16": 125.0, "fp16": 125.0, "tf32": 62.5, "fp32": 31.2},
    "L40S": {"bf16": 362.0, "fp16": 362.0, "tf32": 183.0, "fp32": 91.6},
    "L40": {"bf16": 181.0, "fp16": 181.0, "tf32": 90.5, "fp32": 90.5},
    "L4": {"bf16": 121.0, "fp16": 121.0, "tf32": 60.0, "fp32": 30.3},
    "V100": {"fp16": 125.0, "fp32": 15.7},
    "T4": {"fp16": 65.0, "fp32": 8.1},
}


def flops_per_token(model: PreTrainedModel, seq_len: int) -> float:
    """Training FLOPs per token, forward and backward: 6N + 12·L·d·T (PaLM, appendix B).

    N counts the weights of matrix multiplications: every parameter but the embedding tables, plus the output
    projection of an LM head (tied to the token embeddings, so `exclude_embeddings` drops it, yet it is a real
    vocab × hidden matmul per token). 12·L·d·T is attention over T = `seq_len` positions in L layers of width d.
    """
    n = model.num_parameters(exclude_embeddings=True)
    head = model.get_output_embeddings()
    if head is not None:
        n += head.weight.numel()
    c = model.config
    return 6.0 * n + 12.0 * c.num_hidden_layers * c.hidden_size * seq_len


def peak_flops(device: torch.device, dtype: str, peak_tflops: float | None = None) -> float | None:
    """Dense peak FLOP/s of one `device` for `dtype` (bf16, fp16, tf32, fp32): `peak_tflops` when given, else looked up
    for a known GPU. None on CPU (MFU is not reported there) or for a GPU the table does not know."""
    if peak_tflops is not None:
        return peak_tflops * 1e12
    if device.type != "cuda":
        return None
    return gpu_peak(torch.cuda.get_device_name(device), dtype)


def gpu_peak(name: str, dtype: str) -> float | None:
    """The table's peak FLOP/s for a GPU named like torch names it ("NVIDIA A100-SXM4-80GB"), or None."""
    for model, peaks in PEAK_TFLOPS.items():  # the longer, more specific names come first
        if model in name:
            return peaks[dtype] * 1e12 if dtype in peaks else None
    return None
