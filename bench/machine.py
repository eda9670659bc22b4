"""What machine a benchmark ran on, for the header of its table."""

import os
import platform
from importlib.metadata import version

import torch


def describe() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        with open("/proc/meminfo") as f:
            mem = int(next(line.split()[1] for line in f if line.startswith("MemTotal"))) / 2**20
    except (OSError, StopIteration):
        mem = float("nan")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}, {len(os.sched_getaffinity(0))} cores, {mem:.0f} GiB, {gpu}; "
        f"Python {platform.python_version()}, torch {torch.__version__}, "
        + ", ".join(f"{name} {version(name)}" for name in ("transformers", "tokenizers", "datasets", "accelerate"))
    )
