"""Lazy versus rich training: how far the weights and the kernel move, and how well it fits.

In the lazy (kernel) regime a network stays close to its linearization at w0: the weights
barely move relative to their size and the NTK stays put. In the rich regime the features,
and with them the kernel, change (Chizat, Oyallon & Bach 2019; Geiger et al. 2020; Fort et
al. 2020; Kumar et al. 2023). The measures:

- relative weight change ||w_t - w_0|| / ||w_0||, in total and per layer;
- relative kernel change ||K_t - K_0||_F / ||K_0||_F;
- kernel distance 1 - <K_0, K_t>_F / (||K_0||_F ||K_t||_F), blind to the kernel's scale;
- centred kernel-target alignment (Cortes, Mohri & Rostamizadeh 2012).

Kernels and targets may be numpy arrays or torch tensors; scalar measures are computed in
float64 and returned as Python floats.
"""
from __future__ import annotations

from typing import Iterable, Optional

import numpy as np
import torch
from torch import nn

from engine.ntk import as_tensor, eigen, kernel_over_checkpoints, layer_of, subspace_overlap, target_matrix
from engine.results import KernelTrajectory, WeightChange


def _float64(K) -> torch.Tensor:
    return as_tensor(K).double()


# ---------------------------------------------------------------- weights


def _weights(model_or_state) -> dict[str, torch.Tensor]:
    if isinstance(model_or_state, nn.Module):
        return {n: p.detach() for n, p in model_or_state.named_parameters()}
    return dict(model_or_state)


def _compared_names(model0, model, w0: dict, w: dict) -> list[str]:
    """The parameters to compare: a module's parameters if either argument is a module, else
    every floating-point entry the two state dicts share."""
    for m in (model0, model):
        if isinstance(m, nn.Module):
            return [n for n, p in m.named_parameters() if p.requires_grad]
    return [n for n in w0 if n in w and torch.is_floating_point(as_tensor(w0[n]))]


def relative_weight_change(model0, model, names: Optional[Iterable[str]] = None) -> WeightChange:
    """||w_t - w_0|| / ||w_0|| over all compared parameters and per layer.

    Args:
        model0: the weights at the start: a module or a state dict.
        model: the weights now: a module or a state dict.
        names: the parameter names to compare. By default a module's trainable parameters;
            with two state dicts every floating-point entry they share (buffers too, such as
            a `Centered` model's frozen w0: pass a module or `names` to leave them out).

    Returns:
        WeightChange(total, layers) with layers keyed by the owning module ("layers.fc1"). A
        layer that starts at zero has an infinite change (or NaN if it stays at zero).
    """
    w0, w = _weights(model0), _weights(model)
    names = list(names) if names is not None else _compared_names(model0, model, w0, w)
    moved: dict[str, float] = {}
    size: dict[str, float] = {}
    for name in names:
        start = as_tensor(w0[name]).double()
        now = as_tensor(w[name]).to(start)
        layer = layer_of(name)
        moved[layer] = moved.get(layer, 0.0) + float(((now - start) ** 2).sum())
        size[layer] = size.get(layer, 0.0) + float((start**2).sum())
    layers = {layer: _ratio(moved[layer], size[layer]) for layer in moved}
    return WeightChange(_ratio(sum(moved.values()), sum(size.values())), layers)


def _ratio(squared_change: float, squared_size: float) -> float:
    """sqrt(change / size), with 0/0 -> NaN and x/0 -> inf instead of an exception."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.sqrt(np.float64(squared_change) / np.float64(squared_size)))


# ---------------------------------------------------------------- kernels


def relative_kernel_change(K0, K) -> float:
    """||K - K0||_F / ||K0||_F."""
    K0 = _float64(K0)
    return float(torch.linalg.norm(as_tensor(K, like=K0) - K0) / torch.linalg.norm(K0))


def kernel_distance(K0, K) -> float:
    """1 - <K0, K>_F / (||K0||_F ||K||_F) (Fort et al. 2020): 0 for kernels equal up to scale."""
    K0 = _float64(K0)
    K = as_tensor(K, like=K0)
    return float(1.0 - (K0 * K).sum() / (torch.linalg.norm(K0) * torch.linalg.norm(K)))


def centred(K: torch.Tensor) -> torch.Tensor:
    """HKH with H = I - 11^T / n: the kernel of the features minus their mean."""
    return K - K.mean(0, keepdim=True) - K.mean(1, keepdim=True) + K.mean()


def kernel_alignment(K, y) -> float:
    """Centred kernel-target alignment <HKH, H YY^T H>_F / (||HKH||_F ||H YY^T H||_F).

    The target kernel is YY^T with Y the targets as columns: one column for a scalar target,
    one-hot columns for class labels, the columns of multi-output targets (then <HKH, YY^T>
    sums y_c^T HKH y_c over the columns). For one centred column this is
    y^T (HKH) y / (||HKH||_F ||y||^2). Centring the target kernel too (Cortes et al. 2012)
    is what makes K = yy^T align perfectly (1) even when y has a nonzero mean. NaN for a
    constant target.

    Args:
        K: an (n, n) kernel ("trace" or "pseudo"; or "full" with (N, O) targets).
        y: (n,) or (n, C) targets, or integer labels.
    """
    K = _float64(K)
    Kc = centred(K)
    Y = target_matrix(y, like=K, rows=K.shape[0])
    Yc = Y - Y.mean(0, keepdim=True)  # HY, so that H YY^T H = Yc Yc^T
    inner = (Yc * (Kc @ Yc)).sum()  # tr(Yc^T HKH Yc) = <HKH, Yc Yc^T>_F
    return float(inner / (torch.linalg.norm(Kc) * torch.linalg.norm(Yc.T @ Yc)))


# ---------------------------------------------------------------- over training


def kernel_trajectory(model: nn.Module, checkpoints: dict, x, y=None, *, kind: str = "trace",
                      k: int = 8, **ntk_options) -> KernelTrajectory:
    """How far the NTK and the weights move from the first checkpoint, at every checkpoint.

    Args:
        model: the network (its architecture; the weights come from the checkpoints).
        checkpoints: {step: state_dict}, e.g. `Trainer.checkpoints`.
        x: the inputs of the kernel (a fixed subset of the training inputs).
        y: their targets, for the kernel-target alignment; None to skip it.
        kind: "trace", "pseudo" or "full".
        k: the size of the top eigenvector spans compared.
        **ntk_options: passed to `engine.ntk.empirical_ntk`.
    """
    steps, kernels = kernel_over_checkpoints(model, checkpoints, x, kind=kind, **ntk_options)
    K0 = kernels[0]
    U0 = eigen(K0)[1]
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    first = checkpoints[steps[0]]
    return KernelTrajectory(
        steps=np.asarray(steps),
        relative_change=np.array([relative_kernel_change(K0, K) for K in kernels]),
        distance=np.array([kernel_distance(K0, K) for K in kernels]),
        subspace_overlap=np.array([subspace_overlap(U0, eigen(K)[1], k) for K in kernels]),
        weight_change=np.array([relative_weight_change(first, checkpoints[s], names).total for s in steps]),
        alignment=None if y is None else np.array([kernel_alignment(K, y) for K in kernels]),
        kind=kind,
    )
