"""Pruning: which weights matter, what is left when the others go, and how it behaves.

A pruning method gives every weight a score; a mask keeps the highest scores; the mask is
applied so that the pruned weights stay zero through any later training.

- Scores (`scores(model, method, x, y)`, one registry, `METHODS`); higher always means keep:

  | method      | score of weight w_i                                | data | source             |
  |-------------|----------------------------------------------------|------|--------------------|
  | `random`    | uniform random (seeded)                            | no   | baseline           |
  | `magnitude` | abs(w_i)                                           | no   | Han et al. 2015    |
  | `l1_neuron` | L1 norm of w_i's output unit (conv channel)        | no   | Li et al. 2017     |
  | `l2_neuron` | L2 norm of w_i's output unit (conv channel)        | no   | Li et al. 2017     |
  | `taylor`    | abs(w_i g_i), g = dL/dw                            | yes  | Molchanov 2017     |
  | `snip`      | abs(w_i g_i) / sum_j abs(w_j g_j), meant at init   | yes  | Lee et al. 2019    |
  |             | (taylor's ranking, so taylor's masks)              |      |                    |
  | `grasp`     | w_i (H g)_i  (-S of the paper), only at init       | yes  | Wang et al. 2020   |
  | `synflow`   | w_i dR/dw_i, linearised all-positive network       | no   | Tanaka et al. 2020 |
  | `obd`       | 0.5 H_ii w_i^2                                     | yes  | LeCun et al. 1990  |
  | `oba`       | abs(w_i g_i - 0.5 w_i (H w)_i)                     | yes  | after Sun 2025     |

  plus the iterative SynFlow schedule, `synflow_iterative(model, sparsity, rounds=100)`.
- Masks: `masks(scores, sparsity, scope="global" or "layer")` keeps exactly
  round((1 - sparsity) n) weights, ties broken by position.
- Applying: `apply(model, masks)` makes each weight `original * mask` through
  `torch.nn.utils.parametrize` (the semantics of `torch.nn.utils.prune`); `remove(model)` makes
  it permanent; `sparsity_of(model)` measures it.
- Schedules: `one_shot` (score, mask, fine-tune), `iterative_magnitude` (lottery tickets,
  Frankle & Carbin 2019) and `sweep` (methods x sparsities -> `PruningSweep`, its settings a
  `SweepSettings`); pruning at initialisation is `sweep` of the untrained model with a
  trained `reference`. `sweep` is `sweep_setup`, `prune_cell` per cell and `finish_sweep`,
  and a lottery round `ticket_masks` with `train_ticket` and `train_control`: the steps
  `engine.pruning_cells` runs as cells of the sweep mechanism, here or on Ray.
- `structured_remove` turns an MLP with dead units into a smaller dense one, same outputs.
- Conv channels: `channel_scores` (filter norms), `channel_masks`, `mask_channels` (the removed
  channels output zero) and `remove_channels` (a smaller model, same outputs as the masked one;
  `channel_paths` says where each conv's channels go, or why a residual net's cannot go).
- Measures: `evaluate`, `corrupt` and `corrupted_accuracy`, `mask_overlap`, `cka_to_dense`,
  `last_layer_geometry` (Li et al. 2022), `top_eigenvalue`, `flips`.
- Pictures: `flip_gallery` (the test samples pruning changes first, and those it never
  changes; settings a `GallerySettings`) and `pruned_regions` (decision regions of pruned
  models side by side, 2-D data).

Names: every dict here is keyed by the parameter's plain name (`layers.fc1.weight`), also for
a pruned model, whose parameter is stored as `layers.fc1.parametrizations.weight.original`.
Only weights with more than one dimension are scored unless `include_biases=True`.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import math
import re
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, NamedTuple, Optional, Sequence

import numpy as np
import torch
import torch.fx
import torch.fx.passes.shape_prop
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from engine import geometry, hessian, memory, views
from engine.data import Dataset
from engine.device import float64_device, to_float64
from engine.landscape import as_data, flatten, probe, unflatten
from engine.losses import LossArg, loss_for_task, loss_function, loss_name
from engine.modes import evaluating
from engine.results import FlipGallery, LastLayerGeometry, LotteryTickets, PrunedRegions, PruningSweep
from engine.train import TrainConfig, Trainer

__all__ = ["Mask", "plain_name", "weights", "prunable", "current_masks", "apply", "remove", "plain_copy",
           "sparsity_of", "masks", "Batch", "Method", "method_names", "init_only", "same_masks", "scores",
           "hessian_diagonal", "synflow_iterative", "evaluate", "predicted_classes", "flips", "corrupt",
           "default_corruptions", "corruption_name", "corrupted_inputs", "corrupted_accuracy", "mask_overlap",
           "overlap_matrix", "layers_of", "cka_to_dense", "readout", "last_layer_geometry", "top_eigenvalue",
           "gradient_rows", "structured_remove", "ChannelPath", "example_input", "channel_paths",
           "channel_scores", "channel_masks", "mask_channels", "remove_channels", "Pruned", "score_batch",
           "masker", "finetune", "one_shot",
           "load_weights", "iterative_magnitude", "train_dense", "ticket_masks", "train_ticket", "train_control", "PruneSettings",
           "SweepSettings", "GallerySettings", "sweep",
           "SweepSetup", "sweep_setup", "prune_cell", "finish_sweep",
           "flip_sparsity", "fragile_and_robust", "flip_gallery", "pruned_regions", "HUTCHINSON_SAMPLES",
           "SHARPNESS_ITERS", "METHODS"]

Scores = dict[str, torch.Tensor]
Masks = dict[str, torch.Tensor]

# A backward pass keeps each activation of its forward pass and makes a gradient of each.
BACKWARD_BYTES_PER_ACTIVATION = 2
EXACT_DIAGONAL_LIMIT = 4096  # most coordinates whose Hessian diagonal `obd` computes exactly
HUTCHINSON_SAMPLES = 100  # Rademacher vectors of the Hutchinson diagonal estimate
HVP_BLOCK = hessian.MAX_VECTORS_AT_ONCE  # Hessian-vector products taken together
SYNFLOW_ROUNDS = 100  # Tanaka et al. 2020 prune in 100 rounds
SCORE_SAMPLES = 512  # training samples the schedules score on
CKA_SAMPLES = 512  # test samples for CKA to the dense model
SHARPNESS_ITERS = 20  # power iterations for the top Hessian eigenvalue of each pruned model
NOISE_LEVELS = (0.5, 1.0)  # Gaussian noise, in units of the data's standard deviation
IMAGE_CORRUPTIONS = (("blur", 1.0), ("contrast", 0.5), ("dropout", 0.25))
FINETUNE = TrainConfig(optimizer="adam", lr=1e-3, batch_size=64)


# ---------------------------------------------------------------- names and masked weights


class Mask(nn.Module):
    """The parametrization weight = original * mask; the mask is a bool buffer."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask.to(torch.bool))

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        return original * self.mask


def plain_name(name: str) -> str:
    """'a.parametrizations.weight.original' -> 'a.weight'; other names are left as they are."""
    return re.sub(r"\.?parametrizations\.(\w+)\.original$", r".\1", name).lstrip(".")


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    """The module that holds the parameter `name`, and the attribute's name in it."""
    path, _, attr = name.rpartition(".")
    return (model.get_submodule(path) if path else model), attr


def _is_masked(module: nn.Module, attr: str) -> bool:
    return (parametrize.is_parametrized(module, attr)
            and all(isinstance(p, Mask) for p in module.parametrizations[attr]))


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter as the model uses it (original * mask when masked), by plain name."""
    out = {}
    for name, _ in model.named_parameters():
        module, attr = _owner(model, plain_name(name))
        out[plain_name(name)] = getattr(module, attr).detach()
    return out


def prunable(model: nn.Module, include_biases: bool = False) -> list[str]:
    """The plain names of the parameters pruning looks at: those with more than one dimension
    (weights of linear and convolutional layers), and 1-D ones too with `include_biases`."""
    return [name for name, p in weights(model).items() if include_biases or p.dim() > 1]


def current_masks(model: nn.Module) -> Masks:
    """The masks `apply` put on the model, by plain name (empty for an unpruned model)."""
    out = {}
    for path, module in model.named_modules():
        for attr in getattr(module, "parametrizations", {}):
            if _is_masked(module, attr):
                out[f"{path}.{attr}" if path else attr] = module.parametrizations[attr][0].mask
    return out


# ---------------------------------------------------------------- applying masks


def apply(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """Make each named weight `original * mask` from now on, in place.

    Pruned weights then stay exactly zero whatever an optimizer does to the original (momentum,
    weight decay, Adam): the mask multiplies it at every use. A new mask replaces an earlier
    one; weights the earlier one pruned start again from zero if the new one keeps them.
    Parameters are replaced: make optimizers after `apply`.

    Args:
        model: any module; the names are plain names like `layers.fc1.weight`.
        masks: name -> bool (or 0/1) tensor of the weight's shape; True keeps.

    Returns:
        The same model, for chaining.
    """
    by_module: dict[nn.Module, dict[str, torch.Tensor]] = {}
    for name, mask in masks.items():
        module, attr = _owner(model, name)
        shape = tuple(getattr(module, attr).shape)
        if tuple(mask.shape) != shape:
            raise ValueError(f"The mask for '{name}' has shape {tuple(mask.shape)}; the weight "
                             f"has shape {shape}.")
        by_module.setdefault(module, {})[attr] = mask
    for module, new in by_module.items():
        kept = {attr: m for attr, m in _module_masks(module).items() if attr not in new}
        _strip(module)
        for attr, mask in {**kept, **new}.items():
            device = getattr(module, attr).device
            parametrize.register_parametrization(module, attr, Mask(mask.to(device)))
    return model


def _module_masks(module: nn.Module) -> dict[str, torch.Tensor]:
    return {attr: module.parametrizations[attr][0].mask
            for attr in getattr(module, "parametrizations", {}) if _is_masked(module, attr)}


def _strip(module: nn.Module) -> None:
    """Make every masked tensor of the module a plain parameter again, pruned entries zero.

    Not `parametrize.remove_parametrizations`: it deletes the property from the module's
    injected class, which deep copies share, and so breaks every copy of a pruned model.
    Here only this instance changes: it gets its original class back.
    """
    if not parametrize.is_parametrized(module):
        return
    if not all(_is_masked(module, attr) for attr in module.parametrizations):
        raise ValueError("This module has parametrizations other than pruning masks; "
                         "pruning leaves such modules alone.")
    values = {attr: getattr(module, attr).detach().clone() for attr in module.parametrizations}
    grads = {attr: module.parametrizations[attr].original.requires_grad for attr in values}
    module.__class__ = module.__class__.__bases__[0]  # parametrize injected a subclass
    del module._modules["parametrizations"]
    for attr, value in values.items():
        module.register_parameter(attr, nn.Parameter(value, requires_grad=grads[attr]))


def remove(model: nn.Module) -> nn.Module:
    """Make the masks permanent: each masked weight becomes a plain parameter with zeros."""
    for module in list(model.modules()):
        _strip(module)
    return model


def plain_copy(model: nn.Module) -> nn.Module:
    """A copy of the model with its masks made permanent (plain parameter names)."""
    return remove(copy.deepcopy(model))


def sparsity_of(model: nn.Module, include_biases: bool = False) -> dict[str, float]:
    """The fraction of exactly-zero entries in each prunable weight, and over all of them.

    Returns:
        {plain name: fraction, ..., "total": fraction over all the prunable weights}.
    """
    tensors = weights(model)
    out, zeros, total = {}, 0, 0
    for name in prunable(model, include_biases):
        n_zero = int((tensors[name] == 0).sum())
        out[name] = n_zero / tensors[name].numel()
        zeros, total = zeros + n_zero, total + tensors[name].numel()
    out["total"] = zeros / max(total, 1)
    return out


# ---------------------------------------------------------------- masks from scores


def masks(scores: Mapping[str, torch.Tensor], sparsity: float, scope: str = "global") -> Masks:
    """Keep the highest scores, prune exactly round(sparsity * n) of the n weights.

    Ties are broken by position: of equal scores, the one earlier in the flattened order
    (layers in the dict's order) is pruned first, so the result is deterministic.

    Args:
        scores: name -> score tensor (higher keeps); -inf marks weights already pruned.
        sparsity: the fraction to prune, from 0 to 1.
        scope: "global" ranks all weights together; "layer" prunes each tensor by `sparsity`.

    Returns:
        name -> bool tensor of the score's shape, True where the weight is kept.
    """
    if not 0 <= sparsity <= 1:
        raise ValueError(f"Sparsity must be between 0 and 1, not {sparsity}.")
    if any(torch.isnan(s).any() for s in scores.values()):
        raise ValueError("Some scores are NaN; the method failed on this model.")
    if scope == "layer":
        return {name: _keep_highest(s.reshape(-1), sparsity).reshape(s.shape)
                for name, s in scores.items()}
    if scope != "global":
        raise ValueError(f"Scope must be 'global' or 'layer', not {scope!r}.")
    flat = torch.cat([to_float64(s.reshape(-1)) for s in scores.values()])  # one dtype for all layers
    kept = _keep_highest(flat, sparsity).split([s.numel() for s in scores.values()])
    return {name: k.reshape(s.shape).to(s.device) for (name, s), k in zip(scores.items(), kept)}


def _keep_highest(flat: torch.Tensor, sparsity: float) -> torch.Tensor:
    """A bool vector that is False at the round(sparsity * n) lowest entries."""
    n_prune = math.floor(sparsity * flat.numel() + 0.5)
    order = torch.sort(flat, stable=True).indices  # stable: ties stay in index order
    keep = torch.ones(flat.numel(), dtype=torch.bool, device=flat.device)
    keep[order[:n_prune]] = False
    return keep


# ---------------------------------------------------------------- the score registry


class Batch(NamedTuple):
    """The data a score looks at (x or y may be None for data-free methods), and the bytes
    its passes over the data may plan with (None: `engine.memory.budget` of the device)."""

    x: Optional[torch.Tensor]
    y: Optional[torch.Tensor]
    loss: LossArg
    memory_limit: Optional[float] = None


@dataclass(frozen=True)
class Method:
    """A scoring method: fn(model, names, batch, **options) -> {name: score}.

    `init_only`: the score is meant for untrained weights and says little about a trained
    network's function (GraSP: near a minimum g is near zero, and so is w (H g))."""

    fn: Callable[..., Scores]
    needs_data: bool
    summary: str
    init_only: bool = False


METHODS: dict[str, Method] = {}
ITERATIVE_SYNFLOW = "synflow_iterative"  # a schedule, not a score: see `synflow_iterative`
SAME_MASKS = {  # methods whose masks agree on any weights, and why
    ("taylor", "snip"): "SNIP's score is Taylor's |w dL/dw| divided by its sum over all weights, "
                        "which changes no ranking",
}


def _register(name: str, needs_data: bool, summary: str, init_only: bool = False):
    def add(fn):
        METHODS[name] = Method(fn, needs_data, summary, init_only)
        return fn
    return add


def method_names() -> list[str]:
    """Every method `one_shot` and `sweep` accept: the scores and iterative SynFlow."""
    return [*METHODS, ITERATIVE_SYNFLOW]


def init_only(methods: Iterable[str]) -> list[str]:
    """Those of `methods` meant only for pruning at initialisation (see `Method.init_only`)."""
    return [m for m in methods if m in METHODS and METHODS[m].init_only]


def same_masks(methods: Iterable[str]) -> dict[tuple[str, ...], str]:
    """{group: why} for the groups of SAME_MASKS of which `methods` hold two or more: methods
    that give identical masks on any weights."""
    chosen = set(methods)
    return {group: why for group, why in SAME_MASKS.items() if len(chosen.intersection(group)) > 1}


def scores(model: nn.Module, method: str, x=None, y=None, loss: LossArg = "ce", *,
           include_biases: bool = False, memory_limit: Optional[float] = None, **options) -> Scores:
    """Each prunable weight's score by `method`; higher means keep (see the module table).

    The model is not changed: scores are computed on a copy in eval mode whose masks are made
    permanent, so they describe the function the model computes now. Weights the model has
    already pruned (through `apply`) score -inf, so any mask at least as sparse keeps them
    pruned.

    Args:
        model: any nn.Module, on any device.
        method: a key of METHODS.
        x, y: inputs and targets (tensors or numpy arrays) for the methods that use data.
        loss: "ce", "mse" or a callable (output, target) -> scalar mean.
        include_biases: score 1-D parameters (biases) too.
        memory_limit: the bytes a pass over the data may use (the gradient is summed over
            chunks of samples that fit); by default `engine.memory.budget` of the device.
        **options: the method's own: `seed` (random), `normalize` (snip), `samples`, `exact`,
            `seed` (obd).

    Returns:
        {plain name: score tensor of the weight's shape}.
    """
    if method not in METHODS:
        raise ValueError(f"Unknown pruning method {method!r}; choose one of {', '.join(METHODS)}.")
    entry = METHODS[method]
    if entry.needs_data and (x is None or y is None):
        raise ValueError(f"The '{method}' score needs data: give inputs x and targets y.")
    plain = plain_copy(model).eval()
    batch = _batch(plain, x, y, loss)._replace(memory_limit=memory_limit)
    result = entry.fn(plain, prunable(plain, include_biases), batch, **options)
    return _mark_pruned(result, current_masks(model))


def _batch(model: nn.Module, x, y, loss: LossArg) -> Batch:
    """The data on the model's device and in its dtype."""
    if x is not None and y is not None:
        return Batch(*as_data(model, x, y), loss)
    p = next(model.parameters())
    x = None if x is None else torch.as_tensor(x).to(p.device, p.dtype)
    return Batch(x, None, loss)


def _mark_pruned(result: Scores, pruned: Masks) -> Scores:
    for name, mask in pruned.items():
        if name in result:
            result[name] = result[name].masked_fill(~mask.to(result[name].device), -math.inf)
    return result


# ---------------------------------------------------------------- gradients and curvature


def gradient_rows(model: nn.Module, x: torch.Tensor, memory_limit: Optional[float] = None) -> int:
    """Samples of x one forward and backward pass may take, within the memory budget.

    One sample's activations are measured by running it through the model, so that a big
    conv net on images takes few samples at a time and a small MLP all of them.

    Args:
        model: the model.
        x: the inputs, on the model's device.
        memory_limit: the bytes a pass may use; by default `engine.memory.budget` of the device.
    """
    _, activations = probe(model, x)
    row_bytes = activations * x.element_size() * BACKWARD_BYTES_PER_ACTIVATION
    return memory.rows_per_chunk(row_bytes, len(x), x.device, memory_limit)


def _gradient(model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
    """dL/dw of the mean loss over the batch, for every parameter, in chunks of samples."""
    loss_fn, params = loss_function(batch.loss), dict(model.named_parameters())
    total = {name: torch.zeros_like(p) for name, p in params.items()}
    n = len(batch.x)
    chunk = gradient_rows(model, batch.x, batch.memory_limit)
    for start in range(0, n, chunk):
        xb, yb = batch.x[start:start + chunk], batch.y[start:start + chunk]
        part = loss_fn(model(xb), yb) * (len(xb) / n)  # chunk means, weighted to the full mean
        for name, g in zip(params, torch.autograd.grad(part, list(params.values()))):
            total[name] += g
    return total


def _hessian_times(model: nn.Module, batch: Batch) -> Callable[[Mapping], dict]:
    """v -> H v on dicts, with H the Hessian of the loss over all the parameters.

    Entries missing from v count as zero; the product has an entry for every parameter.
    """
    hvp, w = hessian.hvp_function(model, batch.loss, batch.x, batch.y, memory_limit=batch.memory_limit)

    def times(v: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        full = {name: v[name] if name in v else torch.zeros_like(t) for name, t in w.items()}
        return unflatten(hvp(flatten(full)), w)

    return times


def hessian_diagonal(model: nn.Module, batch: Batch, names: Sequence[str], exact: bool = False,
                     samples: int = HUTCHINSON_SAMPLES, seed: int = 0) -> dict[str, torch.Tensor]:
    """The diagonal of the Hessian of the loss, on the named weights.

    Hutchinson's estimate diag(H) = E[z * (H z)] over Rademacher z (exact in expectation: the
    off-diagonal terms z_i z_j H_ij average to zero), or with `exact` one HVP with each unit
    vector (at most EXACT_DIAGONAL_LIMIT coordinates: for tiny models). Products are taken
    HVP_BLOCK vectors at a time, which bounds the memory.
    """
    hvp, w = hessian.hvp_function(model, batch.loss, batch.x, batch.y, memory_limit=batch.memory_limit)
    flat = flatten(w)
    where = _coordinates(w, names).to(flat.device)
    if exact and len(where) > EXACT_DIAGONAL_LIMIT:
        raise ValueError(f"The exact Hessian diagonal takes one HVP per weight; {len(where):,} "
                         f"is above the limit of {EXACT_DIAGONAL_LIMIT:,}. Use exact=False.")
    diagonal = _exact_diagonal(hvp, flat, where) if exact else \
        _hutchinson_diagonal(hvp, flat, samples, seed)
    return {name: t for name, t in unflatten(diagonal, w).items() if name in names}


def _exact_diagonal(hvp: Callable, flat: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """H_ii at the coordinates `where` (zero elsewhere), from H e_i for each unit vector e_i."""
    diagonal = torch.zeros_like(flat)
    for block in where.split(HVP_BLOCK):
        rows = torch.arange(len(block), device=flat.device)
        units = torch.zeros(len(block), len(flat), dtype=flat.dtype, device=flat.device)
        units[rows, block] = 1.0
        diagonal[block] = hvp(units)[rows, block]
    return diagonal


def _hutchinson_diagonal(hvp: Callable, flat: torch.Tensor, samples: int, seed: int
                         ) -> torch.Tensor:
    """The mean of z * (H z) over `samples` Rademacher vectors z (drawn on the CPU)."""
    generator, total = torch.Generator().manual_seed(seed), torch.zeros_like(flat)
    for start in range(0, samples, HVP_BLOCK):
        size = min(HVP_BLOCK, samples - start)
        z = (torch.randint(0, 2, (size, len(flat)), generator=generator) * 2 - 1).to(flat)
        total += (z * hvp(z)).sum(0)
    return total / samples


def _coordinates(w: Mapping[str, torch.Tensor], names: Sequence[str]) -> torch.Tensor:
    """The positions of the named tensors' entries in the flat vector of all of `w`."""
    starts = np.cumsum([0] + [t.numel() for t in w.values()])
    spans = [torch.arange(starts[i], starts[i] + t.numel())
             for i, (name, t) in enumerate(w.items()) if name in names]
    return torch.cat(spans) if spans else torch.zeros(0, dtype=torch.long)


def _params(model: nn.Module, names: Sequence[str]) -> dict[str, torch.Tensor]:
    own = dict(model.named_parameters())
    return {name: own[name].detach() for name in names}


# ---------------------------------------------------------------- the scores


@_register("random", needs_data=False, summary="uniform random: the baseline to beat")
def _random(model, names, batch, seed: int = 0) -> Scores:
    g = torch.Generator().manual_seed(seed)  # drawn on the CPU: the same on every device
    return {n: torch.rand(w.shape, generator=g, dtype=torch.float64).to(float64_device(w.device))
            for n, w in _params(model, names).items()}


@_register("magnitude", needs_data=False, summary="|w|: small weights matter least")
def _magnitude(model, names, batch) -> Scores:
    return {n: w.abs() for n, w in _params(model, names).items()}


def _unit_norm(model, names, batch, order: int) -> Scores:
    """The norm of each output unit's (row's, conv channel's) weights, on all its entries, so
    a mask prunes whole units first (the last unit at the cut may be pruned in part).

    The readout's rows are the classes: pruning one removes a class. Norms of layers with
    different fan-in compare poorly, so scope="layer" is usually the fairer choice."""
    out = {}
    for n, w in _params(model, names).items():
        norms = w.flatten(1).norm(p=order, dim=1) if w.dim() > 1 else w.abs()
        out[n] = norms.reshape(-1, *[1] * (w.dim() - 1)).expand_as(w).clone()
    return out


_register("l1_neuron", needs_data=False, summary="L1 norm of the weight's unit (structured)")(
    functools.partial(_unit_norm, order=1))
_register("l2_neuron", needs_data=False, summary="L2 norm of the weight's unit (structured)")(
    functools.partial(_unit_norm, order=2))


@_register("taylor", needs_data=True, summary="|w dL/dw|: first-order loss change on removal")
def _taylor(model, names, batch) -> Scores:
    g, w = _gradient(model, batch), _params(model, names)
    return {n: (w[n] * g[n]).abs() for n in names}


@_register("snip", needs_data=True, summary="|w dL/dw| at init, normalised")
def _snip(model, names, batch, normalize: bool = True) -> Scores:
    """Lee et al. 2019: the sensitivity of the loss to a connection's gate c at c = 1 is
    dL/dc = g w. The paper normalises by the sum over all weights; that does not change a
    ranking, global or by layer, only the scale: SNIP's masks are `taylor`'s on any weights.
    SNIP applies the formula at init. A zero gradient (all scores zero) is left unscaled."""
    s = _taylor(model, names, batch)
    total = sum(t.sum() for t in s.values()) if normalize else 1.0
    return {n: t / total if total > 0 else t for n, t in s.items()}


@_register("grasp", needs_data=True, summary="w (H g) at init: keeps the weights that carry gradient flow",
           init_only=True)
def _grasp(model, names, batch) -> Scores:
    """Wang et al. 2020 define S = -w * (H g) and prune the weights with the LARGEST S (their
    removal shrinks the gradient norm least; the reference code, alecwangcq/GraSP, removes the
    top-k of -theta * Hg). Here higher means keep, so the score is -S.

    GraSP is a criterion for pruning at initialisation: it keeps what lets the network train.
    On trained weights near a minimum g is near zero, and so is H g: the ranking is noise and
    says nothing about what the network computes (half of a trained digits MLP pruned by it
    keeps far less accuracy than half pruned at random). The reference code also divides the
    logits by a temperature of 200 and takes g and H over the weights only; here they are over
    all parameters, as in the paper's derivation."""
    times = _hessian_times(model, batch)
    hg, w = times(_gradient(model, batch)), _params(model, names)
    return {n: w[n] * hg[n] for n in names}


@_register("synflow", needs_data=False, summary="path norm through w: data-free, conserves flow")
def _synflow(model, names, batch) -> Scores:
    """Tanaka et al. 2020: R = 1^T |W_L| ... |W_1| 1, the output of the network with every
    weight replaced by its absolute value, biases at zero and activations linearised, on an
    all-ones input; the score is |w * dR/dw|. Computed in float64 (R grows with depth), on
    the CPU for a device without float64."""
    return _flow(_linearised(model), names, _input_shape(model, batch))


def _flow(linear: nn.Module, names: Sequence[str], input_shape: tuple[int, ...]) -> Scores:
    """|w * dR/dw| for the named weights of a linearised network (see `_linearised`)."""
    params = dict(linear.named_parameters())
    ones = torch.ones(1, *input_shape, dtype=torch.float64, device=next(linear.parameters()).device)
    grads = torch.autograd.grad(linear(ones).sum(), [params[n] for n in names], allow_unused=True)
    return {n: (params[n] * g).detach().abs() if g is not None else torch.zeros_like(params[n])
            for n, g in zip(names, grads)}


def _linearised(model: nn.Module) -> nn.Module:
    """A float64 copy with |w| for weights, zero biases, and activations made the identity.

    A batch norm (in eval mode) becomes the positive per-channel scale |gamma| / sqrt(var + eps):
    its running mean is set to zero like a bias, so that R stays a product of positive maps
    (with the mean left in, R would gain an offset no weight carries)."""
    device = next(model.parameters()).device
    linear = copy.deepcopy(model).to(float64_device(device)).double().eval()
    with torch.no_grad():
        for name, p in linear.named_parameters():
            p.copy_(torch.zeros_like(p) if name.endswith("bias") else p.abs())
        for module in linear.modules():
            if isinstance(module, nn.modules.batchnorm._NormBase) and module.running_mean is not None:
                module.running_mean.zero_()
    for module in linear.modules():
        if isinstance(module, geometry.ACTIVATION_TYPES):
            module.register_forward_hook(lambda m, inputs, output: inputs[0])
    return linear


def _input_shape(model: nn.Module, batch: Batch) -> tuple[int, ...]:
    """One sample's shape: from the data if given, else from the model's first layer."""
    if batch.x is not None:
        return tuple(batch.x.shape[1:])
    for module in model.modules():
        if hasattr(module, "input_shape"):
            return tuple(module.input_shape)
        if isinstance(module, nn.Linear):
            return (module.in_features,)
    raise ValueError("Give an input x: the model's input shape cannot be read from its layers.")


@_register("obd", needs_data=True, summary="0.5 H_ii w^2: second-order loss change, diagonal H")
def _obd(model, names, batch, exact: bool = False, samples: int = HUTCHINSON_SAMPLES,
         seed: int = 0) -> Scores:
    """Optimal Brain Damage (LeCun, Denker & Solla 1990), with the Hessian diagonal from
    Hutchinson's estimate (`samples` HVPs) or, with `exact`, one HVP per weight."""
    diagonal = hessian_diagonal(model, batch, names, exact, samples, seed)
    return {n: 0.5 * diagonal[n] * w ** 2 for n, w in _params(model, names).items()}


@_register("oba", needs_data=True, summary="|w g - 0.5 w (H w)|: second order with exact HVPs")
def _oba(model, names, batch) -> Scores:
    """After Optimal Brain Apoptosis (Sun et al., ICLR 2025), which scores weights by the
    second-order Taylor expansion of the loss with exact Hessian-vector products instead of
    OBD's diagonal. What is implemented here: removing all scored weights together,
    delta = -w, changes the loss by sum_i [-g_i w_i + 0.5 w_i (H w)_i] to second order; each
    weight's share of that sum (its cross terms with every other weight included) is its
    importance, and the score is the share's size. One gradient and one HVP, on any model;
    OBA's own layer-wise Jacobian-vector forward scheme is not reproduced."""
    times = _hessian_times(model, batch)
    w = _params(model, names)
    g, hw = _gradient(model, batch), times(w)
    return {n: (w[n] * g[n] - 0.5 * w[n] * hw[n]).abs() for n in names}


def synflow_iterative(model: nn.Module, sparsity: float, rounds: int = SYNFLOW_ROUNDS, *,
                      scope: str = "global", x=None, include_biases: bool = False) -> Masks:
    """Iterative SynFlow (Tanaka et al. 2020): prune to density (1 - sparsity)^(k / rounds) at
    round k, rescoring the remaining network every round; this avoids layer collapse.

    Args:
        model: left unchanged (the rounds run on a linearised copy).
        sparsity: the final fraction pruned.
        rounds: how many score-and-prune rounds.
        scope, include_biases: as for `masks` and `scores`.
        x: an input batch, only for its shape (SynFlow uses no data).

    Returns:
        The final masks, by plain name; weights the model has already pruned stay pruned.
    """
    plain = plain_copy(model)
    names = prunable(plain, include_biases)
    shape = _input_shape(plain, _batch(plain, x, None, "ce"))
    linear = _linearised(plain)
    params = dict(linear.named_parameters())
    start = {n: params[n].detach().clone() for n in names}
    pruned_before = current_masks(model)
    kept = {n: pruned_before.get(n, torch.ones_like(start[n], dtype=torch.bool)).to(start[n].device)
            for n in names}
    for k in range(1, rounds + 1):
        with torch.no_grad():
            for n in names:
                params[n].copy_(start[n] * kept[n])
        flow = _mark_pruned(_flow(linear, names, shape), kept)
        kept = masks(flow, 1.0 - (1.0 - sparsity) ** (k / rounds), scope)
    return kept


# ---------------------------------------------------------------- measures


@torch.no_grad()
def _outputs(model: nn.Module, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    with evaluating(model):
        return torch.cat([model(x[s:s + batch_size]) for s in range(0, len(x), batch_size)])


def evaluate(model: nn.Module, x, y, loss: LossArg = "ce") -> tuple[float, float]:
    """(accuracy, mean loss) on (x, y); accuracy is NaN for real-valued targets."""
    x, y = as_data(model, x, y)
    output = _outputs(model, x)
    accuracy = (output.argmax(1) == y).sum().item() / len(y) if not y.is_floating_point() \
        else float("nan")
    return accuracy, loss_function(loss)(output, y).item()


def predicted_classes(model: nn.Module, x) -> np.ndarray:
    """The class each input is predicted to be (argmax of the outputs), as a numpy array."""
    return _outputs(model, torch.as_tensor(x).to(next(model.parameters()))).argmax(1).cpu().numpy()


def flips(model: nn.Module, dense: nn.Module, x) -> np.ndarray:
    """The indices of the samples whose predicted class differs from the dense model's."""
    return np.flatnonzero(predicted_classes(model, x) != predicted_classes(dense, x))


def _noise(x, level, generator, low):
    """Gaussian noise with standard deviation `level` times the data's."""
    return x + level * x.std() * torch.randn(x.shape, generator=generator).to(x)


def _blur(images, sigma, generator, low):
    """A Gaussian blur of width `sigma` pixels (separable, edges repeated)."""
    radius = max(1, math.ceil(2 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    n, c, h, w = images.shape
    planes = F.pad(images.reshape(n * c, 1, h, w), (radius,) * 4, mode="replicate")
    planes = F.conv2d(planes, kernel.reshape(1, 1, 1, -1))
    planes = F.conv2d(planes, kernel.reshape(1, 1, -1, 1))
    return planes.reshape(n, c, h, w)


def _contrast(images, level, generator, low):
    """Each image pulled towards its own mean by the fraction `level`."""
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return mean + (images - mean) * (1.0 - level)


def _dropout(images, level, generator, low):
    """A fraction `level` of the pixels set to the darkest value."""
    dropped = (torch.rand(images.shape, generator=generator) < level).to(images.device)
    return images.masked_fill(dropped, low)


# kind -> (function(x, level, generator, low), needs images)
CORRUPTIONS = {"noise": (_noise, False), "blur": (_blur, True), "contrast": (_contrast, True),
               "dropout": (_dropout, True)}


def corrupt(x, kind: str, level: float, *, input_shape: Optional[Sequence[int]] = None,
            bounds: Optional[tuple[float, float]] = None, seed: int = 0) -> torch.Tensor:
    """A corrupted copy of the inputs, the same shape, clipped to `bounds` when given.

    Args:
        x: (N, ...) inputs, flattened or not.
        kind: "noise" (any data), or for images "blur" (sigma in pixels), "contrast" (the
            fraction of contrast removed), "dropout" (the fraction of pixels set to the low
            bound, or 0).
        level: the corruption's strength, as above; noise is in units of x's std.
        input_shape: one sample's (channels, height, width), for the image corruptions.
        bounds: (low, high) of valid inputs, e.g. `Dataset.bounds`.
        seed: the seed of the random draws (drawn on the CPU, the same on every device).
    """
    if kind not in CORRUPTIONS:
        raise ValueError(f"Unknown corruption {kind!r}; choose one of {', '.join(CORRUPTIONS)}.")
    fn, needs_images = CORRUPTIONS[kind]
    x = torch.as_tensor(x)
    x, shape = (x if x.is_floating_point() else x.float()), x.shape
    if needs_images:
        if input_shape is None or len(input_shape) != 3:
            raise ValueError(f"The '{kind}' corruption needs images of shape (channels, height, "
                             f"width); this data has input shape {input_shape}.")
        x = x.reshape(len(x), *input_shape)
    low = bounds[0] if bounds is not None else 0.0
    out = fn(x, level, torch.Generator().manual_seed(seed), low).reshape(shape)
    return out.clamp(*bounds) if bounds is not None else out


def default_corruptions(input_shape: Sequence[int]) -> list[tuple[str, float]]:
    """Gaussian noise at NOISE_LEVELS for any data; blur, contrast and dropout for images."""
    noise = [("noise", level) for level in NOISE_LEVELS]
    return noise + list(IMAGE_CORRUPTIONS) if len(input_shape) == 3 else noise


def corruption_name(kind: str, level: float) -> str:
    return f"{kind} {level:g}"


def corrupted_inputs(data: Dataset, corruptions: Iterable[tuple[str, float]], x=None,
                     seed: int = 0) -> dict[str, torch.Tensor]:
    """{"noise 0.5": corrupted test inputs, ...}, drawn once so every model sees the same."""
    x = data.x_test if x is None else x
    return {corruption_name(kind, level): corrupt(x, kind, level, input_shape=data.input_shape,
                                                  bounds=data.bounds, seed=seed)
            for kind, level in corruptions}


def corrupted_accuracy(model: nn.Module, inputs: Mapping[str, torch.Tensor], y,
                       loss: LossArg = "ce") -> dict[str, float]:
    """The accuracy on each set of corrupted inputs (from `corrupted_inputs`)."""
    return {name: evaluate(model, x, y, loss)[0] for name, x in inputs.items()}


def mask_overlap(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    """Jaccard index of the kept weights: |kept by both| / |kept by either|, over the layers
    the two have in common (1 when both keep nothing)."""
    both = either = 0
    for name in a.keys() & b.keys():
        ka, kb = a[name].bool(), b[name].bool().to(a[name].device)
        both += int((ka & kb).sum())
        either += int((ka | kb).sum())
    return both / either if either else 1.0


def overlap_matrix(all_masks: Sequence[Mapping[str, torch.Tensor]]) -> np.ndarray:
    """(M, M) Jaccard indices between every pair of masks."""
    m = len(all_masks)
    return np.array([[mask_overlap(all_masks[i], all_masks[j]) for j in range(m)]
                     for i in range(m)])


def layers_of(model: nn.Module, include_biases: bool = False) -> list[str]:
    """The modules that own prunable weights (`layers.fc1`, ...), in order."""
    return list(dict.fromkeys(name.rpartition(".")[0] for name in prunable(model, include_biases)))


def cka_to_dense(model: nn.Module, dense: nn.Module, x, layers: Optional[Sequence[str]] = None,
                 dense_activations: Optional[Mapping[str, torch.Tensor]] = None
                 ) -> dict[str, float]:
    """Linear CKA between each layer's output in the pruned model and in the dense one.

    Args:
        model, dense: two models with the same module names.
        x: the inputs both see.
        layers: module names; by default those that own prunable weights.
        dense_activations: the dense model's, if already computed (for sweeps).
    """
    layers = list(layers or layers_of(dense))
    ours = geometry.activations(model, x, layers)
    theirs = dense_activations or geometry.activations(dense, x, layers)
    return {name: geometry.linear_cka(ours[name], theirs[name]) for name in layers}


def readout(model: nn.Module) -> nn.Linear:
    """The last linear layer (the classifier), in registration order."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("The model has no linear layer to read its last-layer geometry from.")
    return linears[-1]


def last_layer_geometry(model: nn.Module, x, y) -> LastLayerGeometry:
    """Li et al. 2022: the logit of class c is ||w_c|| ||f|| cos(theta_c) (plus a bias), so
    each sample's feature norm ||f||, its angle to the true class weight theta_y, and its
    angular margin min_{c != y} theta_c - theta_y explain its prediction and robustness.

    Args:
        model: a classifier whose last linear layer holds the class weights w_c as rows.
        x, y: inputs and class labels.
    """
    x, y = as_data(model, x, y)
    layer, captured = readout(model), []
    hook = layer.register_forward_hook(lambda m, inputs, output: captured.append(inputs[0]))
    try:
        predictions = _outputs(model, x).argmax(1)
    finally:
        hook.remove()
    f, W = to_float64(torch.cat(captured)), to_float64(layer.weight.detach())
    classes = y.to(f.device)  # f is on the CPU when the model's device has no float64
    cosine = (f @ W.T) / (f.norm(dim=1, keepdim=True) * W.norm(dim=1)).clamp_min(1e-30)
    angles = torch.rad2deg(torch.arccos(cosine.clamp(-1, 1)))
    true = angles.gather(1, classes[:, None]).squeeze(1)
    others = angles.scatter(1, classes[:, None], math.inf).min(1).values
    return LastLayerGeometry(feature_norm=f.norm(dim=1).cpu().numpy(), angle=true.cpu().numpy(),
                             margin=(others - true).cpu().numpy(),
                             correct=(predictions == y).cpu().numpy(), labels=y.cpu().numpy())


def top_eigenvalue(model: nn.Module, x, y, loss: LossArg = "ce", iters: int = 20) -> float:
    """The Hessian's largest eigenvalue (sharpness) by power iteration (engine.hessian)."""
    return float(hessian.top_eigenvalues(model, loss, x, y, k=1, iters=iters)[0][0])


# ---------------------------------------------------------------- structured removal


def structured_remove(model: nn.Module, masks: Optional[Mapping[str, torch.Tensor]] = None
                      ) -> tuple[nn.Module, dict]:
    """A smaller dense MLP without its dead hidden units, computing the same outputs.

    A hidden unit is dead when its incoming row is all zero (it outputs the constant
    act(bias), which is folded into the next layer's bias) or its outgoing column is all zero
    (nothing reads it). Removal repeats until no unit is dead, since removing one can kill
    another. Works on chains of linear layers and elementwise activations: `model.layers`
    of the app's MLP, or an nn.Sequential.

    Args:
        model: left unchanged.
        masks: applied to a copy first if given; otherwise the model's zeros count.

    Returns:
        (smaller model, counts): counts has "parameters" and "multiply_adds" (per sample)
        as [before, after], and "units" {layer: [before, after]}.
    """
    small = plain_copy(model)
    if masks:
        remove(apply(small, masks))
    chain = _chain(small)
    before = _counts(small, chain)
    while any(_drop_dead_units(chain, k) for k in range(len(chain.linears) - 1)):
        pass
    for name, layer in zip(chain.names, chain.linears):
        setattr(chain.sequential, name, layer)
    return small, _before_after(before, _counts(small, chain))


@dataclass
class _Chain:
    sequential: nn.Sequential
    names: list[str]  # the linear layers' names in the sequential
    linears: list[nn.Linear]
    activations: list[Callable]  # the elementwise map after each hidden layer


def _chain(model: nn.Module) -> _Chain:
    """The linear layers of an MLP and the elementwise maps between them."""
    sequential = getattr(model, "layers", model)
    children = list(sequential.named_children()) if isinstance(sequential, nn.Sequential) else []
    allowed = geometry.ACTIVATION_TYPES + (nn.Identity,)
    names, activations, between = [], [], []
    for name, module in children:
        if isinstance(module, nn.Linear):
            if names:  # the maps since the previous linear layer act on its units
                activations.append(nn.Sequential(*between))
            names.append(name)
            between = []
        elif isinstance(module, allowed):
            between.append(module)
        else:
            names = []
            break
    if len(names) < 2:
        raise ValueError("Structured removal handles MLPs: a sequence of linear layers and "
                         "elementwise activations (the app's MLP, or an nn.Sequential).")
    modules = dict(children)
    return _Chain(sequential, names, [modules[n] for n in names], activations)


@torch.no_grad()
def _drop_dead_units(chain: _Chain, k: int) -> bool:
    """Remove layer k's dead units (and the matching inputs of layer k + 1); True if any."""
    layer, following = chain.linears[k], chain.linears[k + 1]
    bias = layer.bias if layer.bias is not None else layer.weight.new_zeros(layer.out_features)
    constant = chain.activations[k](bias.clone())  # what a unit with no inputs outputs
    silent = layer.weight.flatten(1).abs().sum(1) == 0
    unread = following.weight.abs().sum(0) == 0
    foldable = silent & ((constant == 0) | (following.bias is not None))
    dead = unread | foldable
    if not dead.any() or dead.all():
        return False  # keep at least one unit so the shapes stay valid
    if following.bias is not None:
        fold = foldable & ~unread
        multiplier = getattr(following, "multiplier", 1.0)
        following.bias += multiplier * following.weight[:, fold] @ constant[fold]
    alive = (~dead).nonzero().flatten()
    chain.linears[k] = _shrunk(layer, rows=alive)
    chain.linears[k + 1] = _shrunk(following, columns=alive)
    return True


def _shrunk(layer: nn.Linear, rows=None, columns=None) -> nn.Linear:
    """A copy of the layer (its class, role and multiplier kept) with some rows or columns."""
    weight = layer.weight.detach()
    rows = torch.arange(weight.shape[0], device=weight.device) if rows is None else rows
    columns = torch.arange(weight.shape[1], device=weight.device) if columns is None else columns
    new = copy.deepcopy(layer)
    new.weight = nn.Parameter(weight[rows][:, columns].clone())
    if layer.bias is not None:
        new.bias = nn.Parameter(layer.bias.detach()[rows].clone())
    new.out_features, new.in_features = len(rows), len(columns)
    return new


def _counts(model: nn.Module, chain: _Chain) -> dict:
    return {"parameters": sum(p.numel() for p in model.parameters()),
            "multiply_adds": sum(m.in_features * m.out_features for m in chain.linears),
            "units": {n: m.out_features for n, m in zip(chain.names, chain.linears)}}


def _before_after(before: dict, after: dict) -> dict:
    return {"parameters": [before["parameters"], after["parameters"]],
            "multiply_adds": [before["multiply_adds"], after["multiply_adds"]],
            "units": {n: [before["units"][n], after["units"][n]] for n in before["units"]}}


# ---------------------------------------------------------------- removing conv channels
#
# Structured pruning that makes the network smaller: a conv layer's output channels go, with
# their BatchNorm entries and the inputs of the layer that reads them. Which layer reads a
# channel is found from the forward pass itself (a torch.fx trace), so any model whose forward
# can be traced is handled, whatever its module names: the lab's VGG, an nn.Sequential, a
# user's own CNN. A channel can go only where its whole path is known: conv -> (BatchNorm) ->
# elementwise maps and pooling that send zero to zero -> the next conv or linear layer. A
# channel that also feeds an addition (a residual connection) or a concatenation cannot go:
# the sum would change. Such layers are reported as unsafe, with the reason.

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
POOL_TYPES = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
              nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
              nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
# Modules a channel passes through unchanged in meaning (each is checked to send 0 to 0).
CHANNELWISE_TYPES = geometry.ACTIVATION_TYPES + POOL_TYPES + (nn.Dropout, nn.Dropout1d, nn.Dropout2d,
                                                                nn.Dropout3d, nn.Identity)
# Functions and tensor methods that act channel by channel and send 0 to 0.
CHANNELWISE_CALLS = {"relu", "relu_", "gelu", "silu", "tanh", "leaky_relu", "elu", "hardtanh", "dropout",
                     "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
                     "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d",
                     "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d", "contiguous"}
RESHAPE_CALLS = {"flatten", "view", "reshape", "mean", "sum", "amax", "squeeze"}  # judged by shape


@dataclass
class ChannelPath:
    """Where a conv layer's output channels go: the layers that change when some are removed.

    `norms` hold one entry per channel; `reader` is the conv or linear layer that reads the
    channels, `block` the inputs it has per channel (1 for a conv, or for a linear layer after
    global pooling; H*W when the feature maps were flattened into it)."""

    conv: str
    channels: int
    norms: list[str]
    reader: str
    block: int


class _LayerTracer(torch.fx.Tracer):
    """A trace that stops at layers (convs, linear maps, norms, activations, pools), and at the
    `opaque` modules whose forward cannot be traced: each appears as a single call, under its
    name in the model."""

    def __init__(self, opaque: frozenset = frozenset()):
        super().__init__()
        self.opaque = opaque

    def is_leaf_module(self, module: nn.Module, name: str) -> bool:
        leaves = CONV_TYPES + NORM_TYPES + CHANNELWISE_TYPES + (nn.Linear,)
        return (isinstance(module, leaves) or id(module) in self.opaque
                or super().is_leaf_module(module, name))


def _trace(model: nn.Module) -> tuple[torch.fx.Graph, dict[str, nn.Module]]:
    """The model's forward as a graph of layer calls, and the modules left opaque.

    Modules whose forward torch.fx cannot trace (control flow on a tensor's size, say) are
    kept as single calls: each module is tried, the innermost first, and one that fails
    becomes opaque for its parents. Only the model's own forward must trace."""
    opaque: set[int] = set()
    named = [(name, m) for name, m in model.named_modules()]
    for name, module in reversed(named):  # reversed pre-order: every module after its descendants
        if name and not _LayerTracer().is_leaf_module(module, name):
            try:
                _LayerTracer(frozenset(opaque)).trace(module)
            except Exception:
                opaque.add(id(module))
    graph = _LayerTracer(frozenset(opaque)).trace(model)
    return graph, {name: m for name, m in named if id(m) in opaque}


def example_input(model: nn.Module, x=None) -> torch.Tensor:
    """A small batch in the shape the model's forward takes: x's first two samples, or zeros
    of the model's `input_shape` (the lab's conv nets)."""
    p = next(model.parameters())
    if x is not None:
        return torch.as_tensor(x)[:2].to(p.device, p.dtype)
    if hasattr(model, "input_shape"):
        return torch.zeros(2, *model.input_shape, device=p.device, dtype=p.dtype)
    raise ValueError("Give an example input x: the model's input shape cannot be read from it.")


def channel_paths(model: nn.Module, x=None) -> dict[str, ChannelPath | str]:
    """For every conv layer, where its channels go (a `ChannelPath`), or why they cannot be
    removed (a sentence): a residual addition, a branch, a map that does not send 0 to 0.

    Args:
        model: any module whose forward torch.fx can trace (no data-dependent control flow).
        x: example inputs in the shape the forward takes (only the first two are run), or
            None for the lab's models, which know their input shape.
    """
    example = example_input(model, x)
    try:
        graph, opaque = _trace(model)
        traced = torch.fx.GraphModule(model, graph)
        with torch.no_grad(), evaluating(traced):
            torch.fx.passes.shape_prop.ShapeProp(traced).propagate(example)
    except Exception as exc:
        raise ValueError(f"Channel removal follows the model's forward pass, which could not be traced "
                         f"({type(exc).__name__}: {exc}).") from None
    modules = dict(model.named_modules())
    paths: dict[str, ChannelPath | str] = {}
    for node in traced.graph.nodes:
        if node.op == "call_module" and isinstance(modules.get(node.target), CONV_TYPES):
            paths[node.target] = _follow(node, modules)
    for name, module in modules.items():
        if isinstance(module, CONV_TYPES) and name not in paths:
            inside = next((o for o in opaque if name.startswith(o + ".")), "a module")
            paths[name] = (f"{name} sits inside {inside}, whose forward cannot be followed (torch.fx cannot "
                           "trace it).")
    return paths


def _shape(node) -> tuple[int, ...]:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else ()


def _follow(conv_node, modules: dict[str, nn.Module]) -> ChannelPath | str:
    """Walk from a conv layer's output to the layer that reads its channels."""
    conv = modules[conv_node.target]
    if conv.groups != 1:
        return f"{conv_node.target} is a grouped convolution; its channels are tied to its inputs'."
    channels, norms, block, node = conv.out_channels, [], 0, conv_node
    while True:
        users = list(node.users)
        if len(users) != 1:
            return (f"the output of {node.name} goes to {len(users)} places (a residual connection or a "
                    "branch), so removing channels would change what the others receive." if users else
                    f"the channels of {conv_node.target} reach the output without a layer that reads them.")
        user = users[0]
        module = modules.get(user.target) if user.op == "call_module" else None
        name = _call_name(user)
        if isinstance(module, NORM_TYPES) and not block:
            norms.append(user.target)
        elif isinstance(module, CONV_TYPES) and not block:
            if module.groups != 1:
                return f"{user.target} is a grouped convolution; its inputs cannot be removed one by one."
            return ChannelPath(conv_node.target, channels, norms, user.target, 1)
        elif isinstance(module, nn.Linear):
            if _shape(node)[1:] != (channels * max(block, 1),):
                return (f"{user.target} reads the channels of {conv_node.target} along another axis "
                        f"(its input has shape {_shape(node)}).")
            return ChannelPath(conv_node.target, channels, norms, user.target, max(block, 1))
        elif isinstance(module, CHANNELWISE_TYPES) or (module is None and name in CHANNELWISE_CALLS):
            if module is not None and not _keeps_zero(module, _shape(node)):
                return f"{user.target} does not send 0 to 0, so a removed channel would still send a signal."
        elif (module is None and name in RESHAPE_CALLS) or isinstance(module, nn.Flatten):
            shape, out = _shape(node), _shape(user)
            if len(out) >= 2 and out[:2] == shape[:2]:
                pass  # the sample and channel axes stay: a spatial flatten or reduction
            elif len(out) == 2 and len(shape) > 2 and not block and out[1] == math.prod(shape[1:]):
                block = math.prod(shape[2:])  # (N, C, ...) -> (N, C * spatial): channel-major blocks
            else:
                return f"{user.name} reshapes the channels of {conv_node.target} in a way removal cannot follow."
        else:
            what = type(module).__name__ if module is not None else name
            return (f"the channels of {conv_node.target} go into {user.target if module is not None else user.name} "
                    f"({what}), which channel removal cannot follow (the addition of a residual connection, "
                    "a concatenation, a block it cannot see into).")
        node = user


def _call_name(node) -> str:
    target = node.target
    return target if isinstance(target, str) else getattr(target, "__name__", str(target))


@torch.no_grad()
def _keeps_zero(module: nn.Module, shape: tuple[int, ...]) -> bool:
    if not shape:
        return False
    zeros = torch.zeros(1, *shape[1:], dtype=torch.float64)
    return bool((copy.deepcopy(module).cpu().double().eval()(zeros) == 0).all())


def channel_scores(model: nn.Module, x=None, order: int = 1) -> dict[str, torch.Tensor]:
    """Each output channel's L`order` norm of its filter (Li et al. 2017: small filters matter
    least), for the conv layers whose channels can be removed (see `channel_paths`).

    Returns:
        {conv name: (out_channels,) tensor}; higher means keep.
    """
    plain = plain_copy(model)
    paths = channel_paths(plain, x)
    return {name: plain.get_submodule(name).weight.detach().flatten(1).norm(p=order, dim=1)
            for name, path in paths.items() if isinstance(path, ChannelPath)}


def channel_masks(scores: Mapping[str, torch.Tensor], sparsity: float, scope: str = "layer") -> Masks:
    """Which channels stay: `masks` on channel scores, with at least one channel kept in every
    layer (a layer without channels would cut the network in two).

    Returns:
        {conv name: (out_channels,) bool}, True where the channel stays.
    """
    kept = masks(scores, sparsity, scope)
    for name, keep in kept.items():
        if not keep.any():
            keep[scores[name].argmax()] = True
    return kept


def _parameter_masks(model: nn.Module, keep: Mapping[str, torch.Tensor],
                     paths: Mapping[str, ChannelPath | str]) -> Masks:
    """The channel masks as masks of parameters: each removed channel's filter, bias and
    BatchNorm weight and bias set to zero, so that the channel outputs exactly zero."""
    out = {}
    for name, channels in keep.items():
        path = paths[name]
        for owner in [name, *path.norms]:
            module = model.get_submodule(owner)
            for attr in ("weight", "bias"):
                p = getattr(module, attr, None)
                if p is not None:
                    shape = (-1,) + (1,) * (p.dim() - 1)
                    out[f"{owner}.{attr}"] = channels.to(p.device).reshape(shape).expand_as(p).clone()
    return out


def _check_removable(paths: Mapping[str, ChannelPath | str], keep: Mapping[str, torch.Tensor]) -> None:
    for name, channels in keep.items():
        if name not in paths:
            raise ValueError(f"{name} is not a convolution of this model; its convolutions are "
                             f"{', '.join(paths) or 'none'}.")
        path = paths[name]
        if isinstance(path, str) and not bool(torch.as_tensor(channels).all()):
            raise ValueError(f"Channels of {name} cannot be removed: {path} Residual networks allow "
                             "removal only inside their blocks.")
        if isinstance(path, ChannelPath) and tuple(channels.shape) != (path.channels,):
            raise ValueError(f"The channel mask of {name} has shape {tuple(channels.shape)}; the layer has "
                             f"{path.channels} channels.")
        if isinstance(path, ChannelPath) and not channels.any():
            raise ValueError(f"Every channel of {name} would be removed, which cuts the network in two.")


def mask_channels(model: nn.Module, keep: Mapping[str, torch.Tensor], x=None) -> nn.Module:
    """A copy of the model whose removed channels output zero: their filters, biases and
    BatchNorm weights and biases masked (through `apply`). Same size, same function as
    `remove_channels`' smaller model.

    Args:
        model: left unchanged.
        keep: {conv name: (out_channels,) bool}, True where the channel stays.
        x: example inputs, as for `channel_paths`.
    """
    paths = channel_paths(plain_copy(model), x)
    keep = {name: torch.as_tensor(k).bool() for name, k in keep.items()}
    _check_removable(paths, keep)
    keep = {name: k for name, k in keep.items() if isinstance(paths[name], ChannelPath)}
    masked = copy.deepcopy(model)
    return apply(masked, _parameter_masks(masked, keep, paths))


def remove_channels(model: nn.Module, keep: Mapping[str, torch.Tensor], x=None) -> tuple[nn.Module, dict]:
    """A smaller model without the removed conv channels: fewer output channels in each conv,
    the matching BatchNorm entries, fewer inputs in the layer that reads them (a conv's input
    channels, or a linear layer's columns, H*W per channel after a flatten). Its outputs are
    those of `mask_channels(model, keep)`.

    The model's own class and forward are kept (its layers are replaced by smaller copies),
    so a forward that hard-codes a channel count (`x.view(-1, 16 * 5 * 5)`) is refused.

    Args:
        model: left unchanged; masks `apply` put on it are made permanent in the copy.
        keep: {conv name: (out_channels,) bool}, True where the channel stays; e.g.
            `channel_masks(channel_scores(model), 0.5)`.
        x: example inputs, as for `channel_paths`.

    Returns:
        (smaller model, counts): counts has "parameters" as [before, after] and "channels"
        {conv name: [before, after]}.

    Raises:
        ValueError: for channels whose removal would change the function (a residual
            connection, a branch), with the reason.
    """
    small = plain_copy(model)
    paths = channel_paths(small, x)
    keep = {name: torch.as_tensor(k).bool() for name, k in keep.items()}
    _check_removable(paths, keep)
    before = sum(p.numel() for p in small.parameters())
    channels = {}
    for name, channels_kept in keep.items():
        path = paths[name]
        if not isinstance(path, ChannelPath):
            continue
        index = channels_kept.nonzero().flatten()
        _replace(small, name, _shrunk_conv(small.get_submodule(name), out_index=index))
        for norm in path.norms:
            _replace(small, norm, _shrunk_norm(small.get_submodule(norm), index))
        reader = small.get_submodule(path.reader)
        if isinstance(reader, CONV_TYPES):
            _replace(small, path.reader, _shrunk_conv(reader, in_index=index))
        else:
            columns = (index[:, None] * path.block + torch.arange(path.block)).flatten()
            _replace(small, path.reader, _shrunk(reader, columns=columns.to(reader.weight.device)))
        channels[name] = [path.channels, len(index)]
    try:
        with torch.no_grad(), evaluating(small):
            small(example_input(small, x))
    except Exception as exc:
        raise ValueError(f"The model's forward does not run with fewer channels ({type(exc).__name__}: {exc}); "
                         "it may hard-code a channel count.") from None
    return small, {"parameters": [before, sum(p.numel() for p in small.parameters())], "channels": channels}


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, new)


def _shrunk_conv(conv: nn.Module, out_index=None, in_index=None) -> nn.Module:
    """A copy of the conv layer with only the given output and input channels."""
    weight = conv.weight.detach()
    new = copy.deepcopy(conv)
    if out_index is not None:
        weight = weight[out_index.to(weight.device)]
        if conv.bias is not None:
            new.bias = nn.Parameter(conv.bias.detach()[out_index.to(weight.device)].clone())
        new.out_channels = len(out_index)
    if in_index is not None:
        weight = weight[:, in_index.to(weight.device)]
        new.in_channels = len(in_index)
    new.weight = nn.Parameter(weight.clone())
    return new


def _shrunk_norm(norm: nn.Module, index: torch.Tensor) -> nn.Module:
    """A copy of the batch norm with only the given channels (affine parameters and statistics)."""
    new = copy.deepcopy(norm)
    index = index.to(norm.running_mean.device if norm.running_mean is not None else norm.weight.device)
    for attr in ("weight", "bias"):
        if getattr(norm, attr, None) is not None:
            setattr(new, attr, nn.Parameter(getattr(norm, attr).detach()[index].clone()))
    for attr in ("running_mean", "running_var"):
        if getattr(norm, attr, None) is not None:
            setattr(new, attr, getattr(norm, attr)[index].clone())
    new.num_features = len(index)
    return new



# ---------------------------------------------------------------- schedules


@dataclass
class Pruned:
    """What `one_shot` made: the pruned (and fine-tuned) model, its masks and the times."""

    model: nn.Module
    masks: Masks
    scoring_seconds: float
    finetune_seconds: float


def score_batch(data: Dataset, samples: int = SCORE_SAMPLES, seed: int = 0):
    """A fixed random subset of the training split to score on: (x, y)."""
    order = torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(seed))
    index = order[:samples].to(data.x_train.device)
    return data.x_train[index], data.y_train[index]


def masker(model: nn.Module, method: str, x, y, loss: LossArg, scope: str = "global",
           **options) -> Callable[[float], Masks]:
    """sparsity -> masks for `method`. Scores do not depend on the sparsity, so they are
    computed once, here; iterative SynFlow reruns its schedule for each sparsity."""
    if method not in method_names():
        raise ValueError(f"Unknown pruning method {method!r}; choose one of "
                         f"{', '.join(method_names())}.")
    if method == ITERATIVE_SYNFLOW:
        return lambda sparsity: synflow_iterative(model, sparsity, scope=scope, x=x, **options)
    s = scores(model, method, x, y, loss, **options)
    return lambda sparsity: masks(s, sparsity, scope)


def finetune(model: nn.Module, data: Dataset, steps: int, config: Optional[TrainConfig] = None,
             device=None, should_stop: Callable[[], bool] = lambda: False) -> Optional[nn.Module]:
    """Train the model `steps` more steps in place (nothing for 0); masks stay in force.
    Returns the model, or None when `should_stop` (polled every step) ended it early."""
    if steps > 0:
        config = dataclasses.replace(config or FINETUNE, steps=steps, eval_every=steps,
                                     checkpoint_every=steps)
        trainer = Trainer(model, data, config, device=device or _device(model), keep_checkpoints=False)
        if trainer.run(should_stop=should_stop).status == "stopped":
            return None
    return model


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def one_shot(model: nn.Module, method: str, sparsity: float, data: Dataset,
             finetune_steps: int = 0, *, train_config: Optional[TrainConfig] = None,
             scope: str = "global", loss: str = "auto", score_samples: int = SCORE_SAMPLES,
             device=None, **options) -> Pruned:
    """Score once, prune to `sparsity`, fine-tune: the classic one-shot schedule.

    Args:
        model: the model to prune; left unchanged (a copy is pruned).
        method: a name from `method_names()`.
        sparsity: the fraction of prunable weights removed.
        data: scores use a fixed subset of `score_samples` training samples; fine-tuning the
            training split.
        finetune_steps: optimizer steps after pruning (0 for none).
        train_config: the fine-tuning settings (its `steps` are replaced); Adam, lr 1e-3 by
            default.
        scope, options: as for `masks` and `scores`.
        loss: "auto" (cross-entropy for classes, MSE otherwise), "ce" or "mse", for scoring.
        device: where to work; the model's device by default.
    """
    device = device or _device(model)
    data = data.to(device)
    start = time.perf_counter()
    x, y = score_batch(data, score_samples)
    new_masks = masker(model, method, x, y, loss_for_task(loss, data.task), scope, **options)(sparsity)
    scored = time.perf_counter()
    pruned = apply(copy.deepcopy(model).to(device), new_masks)
    finetune(pruned, data, finetune_steps, train_config, device)
    return Pruned(pruned, new_masks, scored - start, time.perf_counter() - scored)


def _shuffled(values: Mapping[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Each tensor's entries in a random order: the same init distribution, new positions."""
    g = torch.Generator().manual_seed(seed)
    return {n: v.reshape(-1)[torch.randperm(v.numel(), generator=g).to(v.device)].reshape(v.shape)
            for n, v in values.items()}


@torch.no_grad()
def load_weights(model: nn.Module, values: Mapping[str, torch.Tensor]) -> nn.Module:
    """Copy values (by plain name) into the model's parameters; masks stay in force."""
    for name, p in model.named_parameters():
        if plain_name(name) in values:
            p.copy_(values[plain_name(name)])
    return model


def iterative_magnitude(model: nn.Module, data: Dataset, rounds: int, rate: float,
                        rewind_step: int = 0, train_config: Optional[TrainConfig] = None, *,
                        control: Optional[str] = "random_reinit", scope: str = "layer",
                        device=None, seed: int = 0,
                        progress: Optional[Callable[[float], None]] = None
                        ) -> tuple[LotteryTickets, nn.Module]:
    """Lottery tickets by iterative magnitude pruning (Frankle & Carbin 2019).

    Train; prune the fraction `rate` of the surviving weights with the smallest magnitude;
    rewind the survivors to their values at `rewind_step` (0: the init; later: Frankle et al.
    2020); train again; repeat. After n rounds the density is (1 - rate)^n. The control
    trains the same masks from a random re-initialisation: each tensor's initial values
    shuffled (the same distribution, the ticket's particular init destroyed), for as many
    steps as the ticket.

    Args:
        model: the untrained model; left unchanged.
        data: trained on its training split, measured on its test split.
        rounds: pruning rounds.
        rate: the fraction of survivors pruned per round (Frankle & Carbin: 0.2).
        rewind_step: the training step the survivors return to.
        train_config: one round's training; `steps` must exceed `rewind_step`.
        control: "random_reinit" or None.
        scope: "layer" (each layer at the same rate, as Frankle & Carbin's MLPs) or "global".
        device: where to train; the model's device by default.
        seed: the seed of the control's shuffle.
        progress: called with the fraction done after each training; may raise to cancel.

    Returns:
        (the curves as LotteryTickets, the last ticket, trained).
    """
    config = train_config or TrainConfig()
    if not 0 <= rewind_step < config.steps:
        raise ValueError("The rewind step must be at least 0 and below the training steps.")
    device = device or _device(model)
    data, loss = data.to(device), loss_for_task(config.loss, data.task)
    model = copy.deepcopy(model).to(device)
    ticket = copy.deepcopy(model)
    rewind = train_dense(ticket, data, config, rewind_step)
    accuracy, loss_value = evaluate(ticket, data.x_test, data.y_test, loss)
    curves = {"density": [1.0], "ticket_accuracy": [accuracy], "ticket_loss": [loss_value],
              "control_accuracy": [accuracy], "control_loss": [loss_value]}
    trainings = rounds * (2 if control else 1)
    for r in range(1, rounds + 1):
        kept = ticket_masks(ticket, rate, r, scope)
        train_ticket(ticket, kept, rewind, data, config, rewind_step)
        _append(curves, "ticket", evaluate(ticket, data.x_test, data.y_test, loss))
        curves["density"].append(1 - sparsity_of(ticket)["total"])
        if control:
            reinit = train_control(model, kept, data, config, rewind_step, seed + r)
            _append(curves, "control", evaluate(reinit, data.x_test, data.y_test, loss))
        else:
            _append(curves, "control", (math.nan, math.nan))
        if progress is not None:
            progress(r * (2 if control else 1) / trainings)
    result = LotteryTickets(**{k: np.array(v) for k, v in curves.items()}, settings={
        "rounds": rounds, "rate": rate, "rewind_step": rewind_step, "scope": scope,
        "control": control, "train": config.to_dict()})
    return result, ticket


def _append(curves: dict, who: str, measured: tuple[float, float]) -> None:
    curves[f"{who}_accuracy"].append(measured[0])
    curves[f"{who}_loss"].append(measured[1])


def train_dense(model: nn.Module, data: Dataset, config: TrainConfig, rewind_step: int = 0,
                should_stop: Callable[[], bool] = lambda: False) -> Optional[dict[str, torch.Tensor]]:
    """Lottery round 0, in place: train the dense model all of `config`'s steps. Returns its
    weights at `rewind_step`, which every later round rewinds to (None when `should_stop`
    ended the training early)."""
    return _train(model, data, config, rewind_step, should_stop=should_stop)


def ticket_masks(ticket: nn.Module, rate: float, r: int, scope: str = "layer") -> Masks:
    """The masks of lottery round r: the survivors of the trained `ticket` (pruned by the
    rounds before) with the smallest magnitude pruned, to a density of (1 - rate)^r."""
    return masks(scores(ticket, "magnitude"), 1 - (1 - rate) ** r, scope)


def train_ticket(ticket: nn.Module, kept: Masks, rewind: Mapping[str, torch.Tensor], data: Dataset,
                 config: TrainConfig, rewind_step: int = 0,
                 should_stop: Callable[[], bool] = lambda: False) -> Optional[nn.Module]:
    """One lottery round, in place: mask the ticket to `kept`, rewind its weights to `rewind`
    (their values at `rewind_step`), and train it the rest of `config`'s steps. Returns the
    ticket, or None when `should_stop` ended the training early."""
    load_weights(apply(ticket, kept), rewind)
    stopped = _train(ticket, data, config, steps=config.steps - rewind_step, should_stop=should_stop) is None
    return None if stopped else ticket


def train_control(model: nn.Module, kept: Masks, data: Dataset, config: TrainConfig, rewind_step: int = 0,
                  seed: int = 0, should_stop: Callable[[], bool] = lambda: False) -> Optional[nn.Module]:
    """A lottery round's control: the untrained `model` with each tensor's initial values
    shuffled (`seed`), masked to `kept` and trained as long as the ticket (None when
    `should_stop` ended the training early)."""
    fresh = load_weights(copy.deepcopy(model), _shuffled(weights(model), seed))
    reinit = apply(fresh, kept)
    stopped = _train(reinit, data, config, steps=config.steps - rewind_step, should_stop=should_stop) is None
    return None if stopped else reinit


def _train(model: nn.Module, data: Dataset, config: TrainConfig, rewind_step: int = 0,
           steps: Optional[int] = None, should_stop: Callable[[], bool] = lambda: False
           ) -> Optional[dict[str, torch.Tensor]]:
    """Train `steps` steps (all of config's by default); return the weights at `rewind_step`
    (None when `should_stop`, polled every step, ended the training early)."""
    config = dataclasses.replace(config, steps=steps or config.steps)
    trainer = Trainer(model, data, config, device=_device(model), keep_checkpoints=False)
    if rewind_step > 0 and trainer.run(steps=rewind_step, should_stop=should_stop).status == "stopped":
        return None
    snapshot = {n: w.clone() for n, w in weights(model).items()}
    return None if trainer.run(should_stop=should_stop).status == "stopped" else snapshot


@dataclass(frozen=True)
class PruneSettings:
    """How each pruned model of a schedule is made: scored, masked, fine-tuned.

    Attributes:
        finetune_steps: optimizer steps after pruning (0: none). To prune at initialisation,
            this is the training budget of the pruned network.
        train_config: the fine-tuning settings (its `steps` are replaced by `finetune_steps`);
            None for FINETUNE (Adam, lr 1e-3, batches of 64).
        scope: "global" ranks all weights together; "layer" prunes each tensor alike.
        loss: the scoring loss: "auto" (cross-entropy for classes, MSE otherwise), "ce", "mse".
        score_samples: training samples the scores look at (a fixed subset, `score_batch`).
        options: score options by method, e.g. {"obd": {"samples": 50}, "random": {"seed": 1}}.
    """

    finetune_steps: int = 0
    train_config: Optional[TrainConfig] = None
    scope: str = "global"
    loss: str = "auto"
    score_samples: int = SCORE_SAMPLES
    options: Mapping[str, dict] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.finetune_steps, (int, np.integer)) or self.finetune_steps < 0:
            raise ValueError(f"Fine-tuning steps must be a whole number, 0 or more, not {self.finetune_steps!r}.")
        if self.scope not in ("global", "layer"):
            raise ValueError(f"Scope must be 'global' or 'layer', not {self.scope!r}.")
        if not isinstance(self.score_samples, (int, np.integer)) or self.score_samples < 1:
            raise ValueError(f"Scores need at least one sample (score_samples), not {self.score_samples!r}.")
        unknown = [m for m in self.options if m not in method_names()]
        if unknown:
            raise ValueError(f"Options are given by method; {', '.join(map(repr, unknown))} is not one of "
                             f"{', '.join(method_names())}.")

    def options_of(self, method: str) -> dict:
        """The score options of one method ({} when none are given)."""
        return dict(self.options.get(method, {}))


@dataclass(frozen=True)
class SweepSettings(PruneSettings):
    """What `sweep` does in each cell: `PruneSettings`, and what it measures.

    Attributes:
        corruptions: (kind, level) pairs the accuracy is measured under;
            `default_corruptions(data.input_shape)` when None, none for ().
        cka_samples: test samples for the CKA of each layer to the dense model.
        sharpness_iters: power iterations of the sharpness (0: not measured, NaN).
    """

    corruptions: Optional[Sequence[tuple[str, float]]] = None
    cka_samples: int = CKA_SAMPLES
    sharpness_iters: int = SHARPNESS_ITERS

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.cka_samples, (int, np.integer)) or self.cka_samples < 1:
            raise ValueError(f"CKA needs at least one sample (cka_samples), not {self.cka_samples!r}.")
        if not isinstance(self.sharpness_iters, (int, np.integer)) or self.sharpness_iters < 0:
            raise ValueError(f"Sharpness iterations must be a whole number, 0 or more, not {self.sharpness_iters!r}.")


@dataclass(frozen=True)
class GallerySettings(PruneSettings):
    """What `flip_gallery` does: `PruneSettings`, and how many samples it picks.

    Attributes:
        count: how many fragile and how many robust samples.
    """

    count: int = 8

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.count, (int, np.integer)) or self.count < 1:
            raise ValueError(f"The gallery shows at least one sample of each kind (count), not {self.count!r}.")


def _checked(settings, kind: type):
    """The settings, if they are of the kind the schedule takes (a sentence otherwise: the
    schedules once took their settings as separate arguments)."""
    if not isinstance(settings, kind):
        raise TypeError(f"The settings are a {kind.__name__}, e.g. {kind.__name__}(finetune_steps=100), "
                        f"not {type(settings).__name__} {settings!r}.")
    return settings


def sweep(model: nn.Module, data: Dataset, methods: Sequence[str], sparsities: Sequence[float],
          settings: SweepSettings = SweepSettings(), *, device=None,
          progress: Optional[Callable[[float], None]] = None,
          reference: Optional[nn.Module] = None) -> PruningSweep:
    """Prune `model` by every method at every sparsity, fine-tune, and measure each result.

    Each (method, sparsity) cell prunes a fresh copy of the model, fine-tunes it
    `settings.finetune_steps` steps, and measures test and train accuracy and loss, accuracy
    under corruptions, per-layer sparsity, linear CKA of each layer to the dense model, the
    fraction of test predictions that differ from the dense model's, and the sharpness (the
    top Hessian eigenvalue over the kept weights, on the scoring samples). Masks of the
    methods at each sparsity are compared by their Jaccard overlap.

    All in this process; `engine.pruning_cells` runs the same cells (`sweep_setup`,
    `prune_cell`, `finish_sweep`) as tasks of the sweep mechanism, here or on Ray.

    Args:
        model: the trained dense model; left unchanged.
        data: the dataset (scores use `settings.score_samples` training samples; measures
            the test split).
        methods: names from `method_names()`.
        sparsities: fractions pruned.
        settings: how each cell is pruned and fine-tuned, and what is measured.
        device: where to work; the model's device by default.
        progress: called with the fraction done after each cell; may raise to cancel.
        reference: the dense model the pruned ones are measured against (CKA, flips, the
            dense accuracy); `model` itself by default. To prune at initialisation, give the
            untrained `model`, the training budget as `finetune_steps`, and as reference a
            dense model trained from the same initialisation.
    """
    setup = sweep_setup(model, data, settings, device=device, reference=reference)
    out = setup.empty(methods, sparsities)
    all_masks = [[None] * len(methods) for _ in sparsities]
    for i, method in enumerate(methods):
        start = time.perf_counter()
        make_masks = setup.masker(method)
        out.scoring_seconds[i, :] = (time.perf_counter() - start) / max(len(sparsities), 1)
        for j, sparsity in enumerate(sparsities):
            start = time.perf_counter()
            all_masks[j][i] = make_masks(sparsity)
            out.scoring_seconds[i, j] += time.perf_counter() - start
            prune_cell(setup, out, (i, j), all_masks[j][i])
            if progress is not None:
                progress((i * len(sparsities) + j + 1) / (len(methods) * len(sparsities)))
    return finish_sweep(setup, out, all_masks)


@dataclass
class SweepSetup:
    """What every cell of a pruning sweep starts from and is measured against: the model to
    prune, the dense reference and its activations, the data, the corrupted test inputs and
    the scoring samples (each drawn the same way wherever a cell runs)."""

    start_point: nn.Module
    dense: nn.Module
    data: Dataset
    loss: LossArg
    settings: SweepSettings
    corruptions: list
    corrupted: dict
    x_cka: torch.Tensor
    dense_activations: dict
    batch: tuple
    device: torch.device

    def empty(self, methods: Sequence[str], sparsities: Sequence[float]) -> PruningSweep:
        """A sweep of these methods and sparsities with nothing measured yet (NaN)."""
        return _empty_sweep(methods, sparsities, prunable(self.dense), layers_of(self.dense), list(self.corrupted))

    def masker(self, method: str) -> Callable[[float], Masks]:
        """sparsity -> masks of `method` on the scoring samples (see `masker`)."""
        s = self.settings
        return masker(self.start_point, method, *self.batch, self.loss, s.scope, **s.options_of(method))


def sweep_setup(model: nn.Module, data: Dataset, settings: SweepSettings = SweepSettings(), *, device=None,
                reference: Optional[nn.Module] = None) -> SweepSetup:
    """The `SweepSetup` of a pruning sweep of `model` (arguments as for `sweep`)."""
    s = _checked(settings, SweepSettings)
    device = torch.device(device) if device is not None else _device(model)
    data, loss = data.to(device), loss_for_task(s.loss, data.task)
    dense = copy.deepcopy(reference if reference is not None else model).to(device)
    corruptions = default_corruptions(data.input_shape) if s.corruptions is None else s.corruptions
    x_cka = data.x_test[:s.cka_samples]
    return SweepSetup(copy.deepcopy(model).to(device), dense, data, loss, s, list(corruptions),
                      corrupted_inputs(data, corruptions), x_cka,
                      geometry.activations(dense, x_cka, layers_of(dense)), score_batch(data, s.score_samples),
                      device)


def prune_cell(setup: SweepSetup, out: PruningSweep, cell: tuple[int, int], kept: Masks,
               should_stop: Callable[[], bool] = lambda: False) -> Optional[nn.Module]:
    """Prune a fresh copy of the setup's model to the masks `kept`, fine-tune it, and fill the
    cell (method index, sparsity index) of `out`; returns the pruned model (None when
    `should_stop` ended the fine-tuning early, with the cell left unmeasured)."""
    s, start = setup.settings, time.perf_counter()
    pruned = apply(copy.deepcopy(setup.start_point), kept)
    if finetune(pruned, setup.data, s.finetune_steps, s.train_config, setup.device, should_stop) is None:
        return None
    out.finetune_seconds[cell] = time.perf_counter() - start
    _measure(out, cell, pruned, setup.dense, setup.data, setup.loss, setup.corrupted, setup.x_cka,
             setup.dense_activations)
    _measure_training(out, cell, pruned, setup.data, setup.loss, setup.batch, s.sharpness_iters)
    return pruned


def finish_sweep(setup: SweepSetup, out: PruningSweep, all_masks: Sequence[Sequence[Masks]]) -> PruningSweep:
    """Measure what spans the cells: the overlap of the methods' masks at each sparsity
    (`all_masks[j][i]`: method i at sparsity j), the dense model, and the settings."""
    s, data, loss = setup.settings, setup.data, setup.loss
    out.overlap = np.stack([overlap_matrix(row) for row in all_masks]) if len(out.methods) else out.overlap
    _measure_dense(out, setup.dense, data, loss, setup.corrupted)
    _measure_training(out, None, setup.dense, data, loss, setup.batch, s.sharpness_iters)
    out.settings = {"finetune_steps": s.finetune_steps, "scope": s.scope, "loss": loss_name(loss),
                    "score_samples": s.score_samples, "cka_samples": len(setup.x_cka),
                    "train": dataclasses.asdict(s.train_config or FINETUNE), "device": str(setup.device),
                    "corruptions": [list(c) for c in setup.corruptions], "options": dict(s.options),
                    "sharpness_iters": s.sharpness_iters}
    return out


def _empty_sweep(methods, sparsities, layers, cka_layers, corruption_names) -> PruningSweep:
    m, s = len(methods), len(sparsities)
    nan = lambda *shape: np.full(shape, np.nan)  # noqa: E731
    return PruningSweep(
        methods=list(methods), sparsities=np.asarray(sparsities, dtype=float),
        accuracy=nan(m, s), loss=nan(m, s), corrupted_accuracy=nan(m, s),
        corruptions={name: nan(m, s) for name in corruption_names},
        layers=list(layers), layer_sparsity=nan(m, s, len(layers)), overlap=nan(s, m, m),
        cka_layers=list(cka_layers), cka=nan(m, s, len(cka_layers)), flipped=nan(m, s),
        scoring_seconds=np.zeros((m, s)), finetune_seconds=np.zeros((m, s)),
        train_accuracy=nan(m, s), train_loss=nan(m, s), sharpness=nan(m, s))


def _measure(out: PruningSweep, cell: tuple[int, int], pruned: nn.Module, dense: nn.Module,
             data: Dataset, loss: str, corrupted: Mapping[str, torch.Tensor], x_cka,
             dense_activations) -> None:
    """Fill one (method, sparsity) cell of the sweep."""
    out.accuracy[cell], out.loss[cell] = evaluate(pruned, data.x_test, data.y_test, loss)
    under = corrupted_accuracy(pruned, corrupted, data.y_test, loss)
    for name, value in under.items():
        out.corruptions[name][cell] = value
    out.corrupted_accuracy[cell] = np.mean(list(under.values())) if under else np.nan
    by_layer = sparsity_of(pruned)
    out.layer_sparsity[cell] = [by_layer[name] for name in out.layers]
    cka = cka_to_dense(pruned, dense, x_cka, out.cka_layers, dense_activations)
    out.cka[cell] = [cka[name] for name in out.cka_layers]
    if data.task == "classification":
        out.flipped[cell] = len(flips(pruned, dense, data.x_test)) / len(data.x_test)


def _measure_training(out: PruningSweep, cell: Optional[tuple[int, int]], model: nn.Module,
                      data: Dataset, loss: str, batch: tuple, sharpness_iters: int) -> None:
    """Train accuracy and loss, and sharpness on `batch`, of one cell (None: the dense model).

    A pruned model's Hessian is taken over its parameters as they are stored, the masked
    originals, so the pruned coordinates have zero curvature: the sharpness is that of the
    loss over the kept weights."""
    accuracy, loss_value = evaluate(model, data.x_train, data.y_train, loss)
    sharp = top_eigenvalue(model, *batch, loss, sharpness_iters) if sharpness_iters else np.nan
    if cell is None:
        out.dense_train_accuracy, out.dense_train_loss, out.dense_sharpness = \
            accuracy, loss_value, sharp
    else:
        out.train_accuracy[cell], out.train_loss[cell], out.sharpness[cell] = \
            accuracy, loss_value, sharp


def _measure_dense(out: PruningSweep, dense: nn.Module, data: Dataset, loss: str,
                   corrupted: Mapping[str, torch.Tensor]) -> None:
    out.dense_accuracy, out.dense_loss = evaluate(dense, data.x_test, data.y_test, loss)
    under = corrupted_accuracy(dense, corrupted, data.y_test, loss)
    out.dense_corrupted_accuracy = float(np.mean(list(under.values()))) if under else math.nan


# ---------------------------------------------------------------- sample by sample, and over the plane


def flip_sparsity(flipped: np.ndarray, sparsities: Sequence[float]) -> np.ndarray:
    """For each sample, the lowest sparsity at which its prediction differs from the dense one.

    Args:
        flipped: (S, N) bool, True where sample n's prediction at sparsity s differs from the
            dense model's.
        sparsities: (S,) the sparsity of each row.

    Returns:
        (N,) floats; inf for a sample that never flips.
    """
    flipped = np.asarray(flipped, dtype=bool)
    at = np.where(flipped, np.asarray(sparsities, dtype=float)[:, None], np.inf)
    return at.min(axis=0, initial=np.inf)


def fragile_and_robust(flipped: np.ndarray, sparsities: Sequence[float], count: int
                       ) -> tuple[np.ndarray, np.ndarray]:
    """The samples pruning changes first, and samples it never changes.

    Args:
        flipped: (S, N) bool, as for `flip_sparsity`.
        sparsities: (S,) the sparsity of each row.
        count: at most this many of each.

    Returns:
        (fragile, robust) indices. Fragile: the samples that flip at the lowest sparsity,
        those flipped at more of the sparsities first, then by position. Robust: samples that
        keep the dense prediction at every sparsity, by position.
    """
    flipped = np.asarray(flipped, dtype=bool)
    first = flip_sparsity(flipped, sparsities)
    order = np.lexsort((np.arange(len(first)), -flipped.sum(axis=0), first))
    fragile = order[np.isfinite(first[order])][:count]
    robust = np.flatnonzero(~np.isfinite(first))[:count]
    return fragile, robust


def flip_gallery(model: nn.Module, data: Dataset, method: str, sparsities: Sequence[float],
                 settings: GallerySettings = GallerySettings(), *, device=None,
                 progress: Optional[Callable[[float], None]] = None,
                 reference: Optional[nn.Module] = None) -> FlipGallery:
    """Which test samples pruning by `method` changes first, and which it never changes.

    The model is pruned to each sparsity (the scores computed once), fine-tuned, and its
    predicted classes on the test split compared with the dense model's: a sample flips
    when they differ (`flips`; Hooker et al. 2019 call such samples pruning identified
    exemplars).

    Args:
        model: the trained dense classifier; left unchanged.
        data: a classification dataset; its test split is looked at.
        method: a name from `method_names()`.
        sparsities: the fractions pruned.
        settings: how each pruned model is made, and how many samples to pick (`count`).
        device: where to work; the model's device by default.
        progress: called with the fraction done after each sparsity; may raise to cancel.
        reference: the dense model whose predictions count as unflipped; `model` by default
            (see `sweep`).
    """
    if data.task != "classification":
        raise ValueError("A flip is a change of the predicted class; this data is a regression.")
    if not len(sparsities):
        raise ValueError("Give at least one sparsity.")
    s = _checked(settings, GallerySettings)
    sparsities = sorted(float(sparsity) for sparsity in sparsities)
    device = device or _device(model)
    data, loss = data.to(device), loss_for_task(s.loss, data.task)
    start_point = copy.deepcopy(model).to(device)
    x, y = score_batch(data, s.score_samples)
    make_masks = masker(start_point, method, x, y, loss, s.scope, **s.options_of(method))
    dense_prediction = predicted_classes(reference if reference is not None else model,
                                         data.x_test)
    predictions = []
    for k, sparsity in enumerate(sparsities):
        pruned = finetune(apply(copy.deepcopy(start_point), make_masks(sparsity)), data,
                          s.finetune_steps, s.train_config, device)
        predictions.append(predicted_classes(pruned, data.x_test))
        if progress is not None:
            progress((k + 1) / len(sparsities))
    predictions = np.stack(predictions)
    flipped = predictions != dense_prediction[None, :]
    fragile, robust = fragile_and_robust(flipped, sparsities, s.count)
    return FlipGallery(
        method=method, sparsities=np.array(sparsities), inputs=data.x_test.cpu().numpy(),
        labels=data.y_test.cpu().numpy(), dense_prediction=dense_prediction,
        predictions=predictions, flip_sparsity=flip_sparsity(flipped, sparsities),
        fragile=fragile, robust=robust, input_shape=tuple(data.input_shape),
        settings={"finetune_steps": s.finetune_steps, "scope": s.scope, "count": s.count,
                  "options": s.options_of(method)})


def pruned_regions(model: nn.Module, data: Dataset, methods: Sequence[str], sparsity: float,
                   finetune_steps: int = 0, *, train_config: Optional[TrainConfig] = None,
                   scope: str = "global", device=None, grid: int = views.GRID,
                   progress: Optional[Callable[[float], None]] = None,
                   reference: Optional[nn.Module] = None) -> PrunedRegions:
    """The decision regions (or regression surface) of the dense model and of the model
    pruned by each method to one sparsity, on one grid over 2-D inputs (`engine.views`).

    Args:
        model: the trained dense model; left unchanged.
        data: data with two input features.
        methods: names from `method_names()`.
        sparsity, finetune_steps, train_config, scope, device: as for `one_shot`.
        grid: grid points per axis.
        progress: called with the fraction done after each method; may raise to cancel.
        reference: the dense model of the first panel; `model` by default (see `sweep`).
    """
    if data.n_features != 2:
        raise ValueError(f"Decision regions are drawn for data with two input features; this "
                         f"data has {data.n_features}.")
    device = device or _device(model)
    models = {"dense": copy.deepcopy(reference if reference is not None else model).to(device)}
    for k, method in enumerate(methods):
        models[method] = one_shot(model, method, sparsity, data, finetune_steps, scope=scope,
                                  train_config=train_config, device=device).model
        if progress is not None:
            progress((k + 1) / max(len(methods), 1))
    panels = [views.decision_regions(m, data, grid) for m in models.values()]
    loss = loss_for_task("auto", data.task)
    accuracy = [evaluate(m, data.x_test, data.y_test, loss)[0] for m in models.values()]
    first = panels[0]
    return PrunedRegions(
        names=list(models), grid_x=first.grid_x, grid_y=first.grid_y,
        values=np.stack([p.value for p in panels]),
        confidence=np.stack([p.confidence for p in panels]), points=first.points,
        labels=first.labels, accuracy=np.array(accuracy), task=data.task,
        n_classes=data.n_classes,
        settings={"sparsity": sparsity, "finetune_steps": finetune_steps, "scope": scope})
