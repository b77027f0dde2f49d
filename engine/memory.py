"""Memory: how much is free, how much one computation may plan with, and a sentence when a
computation would not fit.

Every analysis that cuts its work into chunks sizes them from here, so that a model of the
lab's and a user's ResNet on a GPU are planned the same way:

- `available_bytes(device)`: what is free now (a GPU's free memory, or the host's available
  memory for the CPU);
- `budget(device, share)`: the part of it one computation may plan with;
- `chunk_budget(device)`: the size of one chunk of a vectorised evaluation (many weight
  points at once): on the CPU a cache-sized chunk, which is faster than a big one;
- `rows_per_chunk(row_bytes, n_rows, device)`: how many samples one pass over data may take,
  from the memory one sample needs (its activations, measured by running it);
- `check_fits(needed, device, what, advice)`: refuse, with the sizes and what to do, a
  computation that needs more than its budget, before it starts.
"""
from __future__ import annotations

import os
from typing import Optional, Union

import torch

__all__ = ["CPU_CACHE_CHUNK_BYTES", "DEFAULT_SHARE", "FALLBACK_AVAILABLE_BYTES", "available_bytes", "budget",
           "check_fits", "chunk_budget", "describe", "rows_per_chunk"]

# The share of the free memory one computation may plan with: the estimates are rough, and
# the app, other jobs and the allocator's slack need the rest.
DEFAULT_SHARE = 0.5
# Assumed free when the system does not say (no /proc/meminfo and no sysconf).
FALLBACK_AVAILABLE_BYTES = 4 * 2**30
# Bytes one chunk of a vectorised evaluation (many weight points at once) may use on the CPU.
# A speed choice, not a memory limit, measured on a 2-core machine (bench/landscape.py): much
# smaller chunks pay the per-call overhead and split the samples into small batches; larger
# ones fall out of the caches and pay for fresh pages on every allocation.
CPU_CACHE_CHUNK_BYTES = 8 * 2**20

Device = Union[torch.device, str]


def available_bytes(device: Device) -> int:
    """Bytes free on `device`: a CUDA GPU's free memory, else the host's available memory
    (/proc/meminfo's MemAvailable, else sysconf's available pages, else
    FALLBACK_AVAILABLE_BYTES)."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return _host_available_bytes()


def _host_available_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # the file counts in KiB
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return FALLBACK_AVAILABLE_BYTES


def budget(device: Device, share: float = DEFAULT_SHARE) -> int:
    """Bytes one computation on `device` may plan with: `share` of what is free now."""
    if not 0 < share <= 1:
        raise ValueError(f"The share of free memory must be in (0, 1], not {share!r}.")
    return int(share * available_bytes(device))


def chunk_budget(device: Device, cpu_bytes: int = CPU_CACHE_CHUNK_BYTES) -> int:
    """Bytes one chunk of a vectorised evaluation may use: on a GPU the whole `budget` (big
    chunks keep it busy), on the CPU `cpu_bytes` (cache-sized; see CPU_CACHE_CHUNK_BYTES),
    or less when less is free."""
    device = torch.device(device)
    if device.type == "cuda":
        return budget(device)
    return min(int(cpu_bytes), budget(device))


def rows_per_chunk(row_bytes: float, n_rows: int, device: Device, limit: Optional[float] = None) -> int:
    """How many rows (samples) one chunk of a pass over data may hold.

    Args:
        row_bytes: the memory one row needs during the pass (its activations, and their
            gradients when the pass goes backward).
        n_rows: the rows there are; a chunk never holds more.
        device: where the pass runs.
        limit: the bytes a chunk may use; by default `budget(device)`.

    Returns:
        As many rows as fit in the limit, at least one (a pass needs one row at a time even
        when the estimate says it does not fit: the estimate is generous) and at most n_rows.
    """
    limit = budget(device) if limit is None else limit
    return int(max(1, min(n_rows, limit // max(row_bytes, 1))))


def describe(n_bytes: float) -> str:
    """A size for people: '512 bytes', '3.2 KiB', '12 MiB', '32 GiB'."""
    if n_bytes < 1024:
        return f"{n_bytes:.0f} bytes"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        n_bytes /= 1024
        if n_bytes < 1024 or unit == "TiB":
            return f"{n_bytes:.2g} {unit}" if n_bytes < 10 else f"{n_bytes:,.0f} {unit}"
    raise AssertionError("unreachable")


def check_fits(needed_bytes: float, device: Device, what: str, advice: str = "",
               limit: Optional[float] = None) -> None:
    """Refuse, before it starts, a computation that needs more memory than it may use.

    Args:
        needed_bytes: the computation's estimate of its memory.
        device: where it runs.
        what: what needs the memory, as the subject of a sentence ("The NTK of 20,000
            samples x 10 outputs").
        advice: what to do instead ("use fewer samples or kind='trace'").
        limit: the bytes it may use; by default `budget(device)`, a share of the free memory.

    Raises:
        ValueError: "<what> needs 32 GiB; this machine has 11 GiB free on the cpu, of which
            a computation may use 5.5 GiB: <advice>."
    """
    device = torch.device(device)
    if limit is not None:
        if needed_bytes <= limit:
            return
        room = f"it may use {describe(limit)}"
    else:
        free = available_bytes(device)
        if needed_bytes <= DEFAULT_SHARE * free:
            return
        room = (f"this machine has {describe(free)} free on the {device.type}, of which a "
                f"computation may use {describe(DEFAULT_SHARE * free)}")
    raise ValueError(f"{what} needs {describe(needed_bytes)}; {room}" + (f": {advice}." if advice else "."))
