"""Big grids on Ray: a loss surface in blocks of rows, and the NTK at every checkpoint.

A 101 x 101 landscape of a ResNet, or the kernel at each of a hundred checkpoints, is many
independent computations. Here each block of them is a Ray task that calls the lab's own public
functions (`engine.landscape.surface` on a block of rows, `engine.ntk.empirical_ntk` on one
checkpoint), so the result equals the one computed on this machine, only sooner on a cluster.

    from engine import distributed
    result = distributed.surface(model, "ce", x, y, d1, d2, xs=coords, ys=coords)   # embedded Ray
    steps, kernels = distributed.kernel_over_checkpoints(model, checkpoints, x, address="HEAD:6379")

The model, data and directions are put in Ray's object store once and shared by every task;
each task computes on `device` (the CPU by default, asking Ray for a GPU when it is CUDA) and
returns numpy arrays, which are small next to what they took to compute. Sweeps of whole runs
are `engine.sweep`'s; both join a running Ray, an `address`, RAY_ADDRESS or start an embedded one.
"""
from __future__ import annotations

import copy
import math
from typing import Callable, Optional

import numpy as np
import torch

from engine.landscape import DEFAULT_COORDINATES
from engine.results import Surface

__all__ = ["surface", "kernel_over_checkpoints"]


def _ray_session(address: Optional[str], workers: Optional[int]):
    """The Ray backend of `engine.sweep` (joins a running Ray, an address, RAY_ADDRESS, or starts
    an embedded one; `close` shuts down only what it started)."""
    from engine.sweep import make_backend

    return make_backend("ray", address, workers)


def _default_blocks(ray, device: str) -> int:
    """As many blocks as the cluster has workers for them (GPUs for CUDA, else CPUs)."""
    resources = ray.cluster_resources()
    return max(1, int(resources.get("GPU" if device.startswith("cuda") else "CPU", 1)))


def _split(n: int, blocks: int) -> list[slice]:
    """`n` items in at most `blocks` contiguous slices of nearly equal size."""
    size = math.ceil(n / max(1, min(blocks, n)))
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


def _gather(ray, refs: list, progress: Optional[Callable[[float], None]]) -> list:
    """The tasks' results in submission order, reporting the fraction done as each ends."""
    pending, done = list(refs), 0
    while pending:
        finished, pending = ray.wait(pending, num_returns=1)
        done += len(finished)
        if progress is not None:
            progress(done / len(refs))
    return ray.get(refs)


def _on(device: str, *values):
    """Each value moved to `device` (modules and tensors; dicts of tensors; others as they are)."""
    moved = []
    for value in values:
        if isinstance(value, (torch.nn.Module, torch.Tensor)):
            value = value.to(device)
        elif isinstance(value, dict):
            value = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in value.items()}
        moved.append(value)
    return moved


# ---------------------------------------------------------------- a surface in blocks of rows


def _surface_block(model, loss, x, y, d1, d2, xs, ys, device: str, options: dict) -> dict:
    """One block of the surface, on a worker: `engine.landscape.surface` on its rows."""
    from engine.landscape import surface as local_surface  # the function this module splits up

    model, x, y, d1, d2 = _on(device, copy.deepcopy(model), x, y, d1, d2)
    part = local_surface(model, loss, x, y, d1, d2, xs=xs, ys=ys, **options)
    return {"loss": part.loss, "accuracy": part.accuracy, "settings": part.settings}


def surface(model: torch.nn.Module, loss, x, y, d1, d2=None, xs=None, ys=None, *, blocks: Optional[int] = None,
            device: str = "cpu", address: Optional[str] = None, workers: Optional[int] = None,
            progress: Optional[Callable[[float], None]] = None, **options) -> Surface:
    """`engine.landscape.surface`, its rows (its points, for a line) computed as Ray tasks.

    Args:
        model, loss, x, y, d1, d2, xs, ys: as for `engine.landscape.surface`.
        blocks: how many tasks (default: one per CPU of the cluster, or per GPU for CUDA).
        device: where each task computes ("cpu", or "cuda" to ask Ray for a GPU per task).
        address, workers: the Ray to join or start (see `engine.sweep.make_backend`).
        progress: called with the fraction of blocks done as each ends.
        **options: `batch_size` and `center`, passed to every block.

    Returns:
        The same `Surface` as `engine.landscape.surface` (its settings say how many blocks).
    """
    from engine.sweep import task_resources

    xs = np.asarray(DEFAULT_COORDINATES if xs is None else xs, dtype=float)
    ys = None if d2 is None else (xs if ys is None else np.asarray(ys, dtype=float))
    session = _ray_session(address, workers)
    ray = session.ray
    try:
        split_along = xs if ys is None else ys  # a line is split along its points, a plane along its rows
        parts = _split(len(split_along), blocks or _default_blocks(ray, device))
        shared_model, shared_x, shared_y, shared_d1, shared_d2 = (ray.put(v) for v in (model, x, y, d1, d2))
        task = ray.remote(max_retries=3)(_surface_block).options(**task_resources(device))
        refs = [task.remote(shared_model, loss, shared_x, shared_y, shared_d1, shared_d2,
                            xs[part] if ys is None else xs, None if ys is None else ys[part], device, options)
                for part in parts]
        results = _gather(ray, refs, progress)
    finally:
        session.close()
    accuracy = None if results[0]["accuracy"] is None else np.concatenate([r["accuracy"] for r in results])
    return Surface(xs=xs, ys=ys, loss=np.concatenate([r["loss"] for r in results]), accuracy=accuracy,
                   settings={**results[0]["settings"], "blocks": len(results)})


# ---------------------------------------------------------------- the NTK at every checkpoint


def _kernel_at(model, state: dict, x, device: str, kind: str, options: dict) -> np.ndarray:
    """The NTK on x with the weights of one checkpoint, on a worker."""
    from engine.ntk import empirical_ntk

    work = copy.deepcopy(model)
    work.load_state_dict(state)
    work, x = _on(device, work, x)
    return empirical_ntk(work, x, kind=kind, **options).detach().cpu().numpy()


def kernel_over_checkpoints(model: torch.nn.Module, checkpoints: dict, x, kind: str = "trace", *,
                            device: str = "cpu", address: Optional[str] = None, workers: Optional[int] = None,
                            progress: Optional[Callable[[float], None]] = None,
                            **ntk_options) -> tuple[list[int], torch.Tensor]:
    """`engine.ntk.kernel_over_checkpoints`, one Ray task per checkpoint.

    Args:
        model: the network (its architecture; each task loads one checkpoint into a copy).
        checkpoints: {step: state_dict}.
        x: the inputs; kind and **ntk_options: as for `engine.ntk.empirical_ntk`.
        device, address, workers, progress: as for `surface`.

    Returns:
        (steps sorted ascending, the kernels stacked along a first axis, a CPU tensor).
    """
    if not checkpoints:
        raise ValueError("There are no checkpoints to compute the kernel at.")
    from engine.sweep import task_resources

    steps = sorted(checkpoints)
    session = _ray_session(address, workers)
    ray = session.ray
    try:
        shared_model, shared_x = ray.put(model), ray.put(x)
        task = ray.remote(max_retries=3)(_kernel_at).options(**task_resources(device))
        refs = [task.remote(shared_model, checkpoints[step], shared_x, device, kind, ntk_options) for step in steps]
        kernels = _gather(ray, refs, progress)
    finally:
        session.close()
    return steps, torch.from_numpy(np.stack(kernels))
