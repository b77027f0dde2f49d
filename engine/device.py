"""Which device to compute on, and where float64 work runs.

Apple's MPS has no float64. The lenses that sum, project or normalise in float64 for
accuracy (landscape directions and loss sums, level-set SSIM and triangles, pruning
thresholds and SynFlow, kernel distances, representation statistics) ask `float64_device`
where that part runs: the model's own device when it has float64, else the CPU, with the
tensors moved there first (`to_float64`). `supports_float64` is the one place that asks a
device.
"""
from __future__ import annotations

import functools
from typing import Union

import torch

__all__ = ["pick", "supports_float64", "float64_device", "to_float64"]

Device = Union[torch.device, str]


def pick() -> torch.device:
    """The best available device: CUDA, then Apple's MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def supports_float64(device: Device) -> bool:
    """Whether `device` computes in float64 (the CPU and CUDA do, Apple's MPS does not)."""
    return _makes_float64(str(torch.device(device)))


@functools.lru_cache(maxsize=None)
def _makes_float64(device: str) -> bool:
    """Asked once per device, by making a float64 tensor there."""
    try:
        torch.zeros(1, dtype=torch.float64, device=device)
    except (RuntimeError, TypeError):
        return False
    return True


def float64_device(device: Device) -> torch.device:
    """Where float64 work for tensors on `device` runs: that device, or the CPU when it has
    no float64."""
    device = torch.device(device)
    return device if supports_float64(device) else torch.device("cpu")


def to_float64(t: torch.Tensor) -> torch.Tensor:
    """`t` in float64, on `float64_device(t.device)`: moved to the CPU first when its own
    device has no float64 (casting there would fail)."""
    return t.to(float64_device(t.device)).to(torch.float64)
