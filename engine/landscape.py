"""The loss-landscape lens: directions in weight space and the loss along lines and planes.

After Li, Xu, Taylor, Studer & Goldstein 2018 ("Visualizing the Loss Landscape of Neural
Nets"). A landscape is the loss at w + a*d1 + b*d2 for a grid of (a, b): the centre w (usually
the trained weights) and two directions d1, d2 in weight space. The directions can be

- random and filter-normalized (`random_direction`), so that the scale of a step means the
  same for every layer and the pictures of different networks compare;
- the difference of two models (`difference_direction`, `linear_path`): the straight path
  between two solutions and its barrier (Goodfellow et al. 2015; Frankle et al. 2020);
- the plane through three models (`plane_through`), e.g. three solutions (Garipov et al. 2018);
- the top two principal components of a training trajectory (`pca_directions`), with the
  checkpoints projected onto the plane (`trajectory_faithfulness` says how well the plane's
  loss matches the loss the checkpoints really had).

Fast by construction: `surface` never sets the model's weights, and it picks its strategy by
the shape of the work (`choose_strategy`). Batched: the weights of many grid points are
stacked along a new leading dimension and evaluated in one call of
`torch.func.functional_call` under `torch.func.vmap`, in chunks sized to a memory budget, with
the data kept on the model's device. Per point: when one point's forward already keeps the
cores busy, the points go one at a time, their weights written in place into buffers made
once. A plain stack of linear layers and elementwise activations (the app's MLP, or an
`nn.Sequential` of them; see `linear_chain`) skips vmap: batched, its forward is a few batched
matrix products on activations kept features-first; per point, plain GEMMs into buffers. Its
first layer is linear in its weights, so X (W + a D1 + b D2)^T = X W^T + a X D1^T + b X D2^T
is computed once per grid, not once per point.

Weights and directions are dicts keyed like `model.named_parameters()`. A dict with more keys
(a `state_dict` with buffers, such as a `Centered` model's frozen w0) is accepted; the extra
keys are ignored.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, NamedTuple, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from engine import memory
from engine.device import float64_device, to_float64
from engine.losses import LossArg, loss_function, loss_name
from engine.models import MLP, Dense, Square
from engine.modes import evaluating
from engine.results import LinearPath, Surface, Trajectory

__all__ = ["parameters", "as_parameters", "flatten", "unflatten", "random_direction", "random_part",
           "difference_direction", "Plane", "plane_through", "PCAPlane", "pca_directions", "steps_and_states",
           "grid_around", "as_data", "probe", "plan_chunks", "Chain", "linear_chain", "choose_strategy",
           "chain_flops", "evaluation_mode", "PlanePoints", "plane_points", "losses_at", "surface", "linear_path",
           "trajectory_faithfulness", "Params", "Weights", "DEFAULT_COORDINATES", "CPU_MEMORY_BUDGET",
           "PER_POINT_FLOPS"]

Params = dict[str, torch.Tensor]
Weights = Union[nn.Module, dict]  # a model, or a dict of tensors keyed like its parameters

NORMS = ("filter", "layer", "model", None)
IGNORES = ("biasbn", None)
DEFAULT_COORDINATES = np.linspace(-1.0, 1.0, 21)
# Bytes one chunk of weight points may use on the CPU: cache-sized, a speed choice (see
# engine.memory.CPU_CACHE_CHUNK_BYTES for the measurement); bench/landscape.py and the tests
# set it to try others. On a GPU big chunks keep it busy: a share of its free memory.
CPU_MEMORY_BUDGET = memory.CPU_CACHE_CHUNK_BYTES
# On the CPU the samples of one point are split into batches only beyond this many bytes:
# memory is plentiful there, and smaller batches make smaller matrix products, which keep
# the cores less busy.
CPU_BATCH_BUDGET = 256 * 2**20


# ---------------------------------------------------------------- weights as dicts


def parameters(model: nn.Module) -> Params:
    """The model's parameters, detached (views that share storage), keyed by name."""
    return {name: p.detach() for name, p in model.named_parameters()}


def as_parameters(weights: Weights, model: nn.Module) -> Params:
    """`weights` (a model or a dict) as tensors shaped, placed and typed like `model`'s parameters.

    Args:
        weights: a model of the same architecture, or a dict such as a direction, a
            `state_dict` or a checkpoint. Keys that are not parameters of `model` are ignored.
        model: the model whose parameter names, shapes, device and dtype to follow.

    Raises:
        ValueError: with a sentence, when a parameter is missing or has another shape.
    """
    values = parameters(weights) if isinstance(weights, nn.Module) else weights
    out = {}
    for name, p in model.named_parameters():
        if name not in values:
            raise ValueError(f"The weights have no entry for the parameter '{name}'.")
        value = torch.as_tensor(values[name])
        if value.shape != p.shape:
            raise ValueError(f"The parameter '{name}' has shape {tuple(p.shape)}, but the "
                             f"weights give it shape {tuple(value.shape)}.")
        out[name] = value.detach().to(device=p.device, dtype=p.dtype)
    return out


def flatten(params: Params) -> torch.Tensor:
    """All tensors of a dict, one after another, as one vector."""
    return torch.cat([t.reshape(-1) for t in params.values()])


def unflatten(vector: torch.Tensor, like: Params) -> Params:
    """The inverse of `flatten`: a vector cut into tensors shaped like `like`'s."""
    out, start = {}, 0
    for name, t in like.items():
        out[name] = vector[start:start + t.numel()].reshape(t.shape)
        start += t.numel()
    return out


def _dot(u: Params, v: Params) -> float:
    """<u, v> over all entries, accumulated in float64 (on the CPU for a device without it)."""
    return sum(float((to_float64(u[k]) * to_float64(v[k])).sum()) for k in u)


def _floating(weights: Weights) -> Params:
    """The floating-point tensors of a model's parameters or of a dict, detached copies."""
    values = parameters(weights) if isinstance(weights, nn.Module) else weights
    tensors = {k: torch.as_tensor(v) for k, v in values.items()}
    return {k: t.detach().clone() for k, t in tensors.items() if t.is_floating_point()}


# ---------------------------------------------------------------- directions


def random_direction(model: nn.Module, norm: Optional[str] = "filter",
                     ignore: Optional[str] = "biasbn", seed: int = 0) -> Params:
    """A Gaussian direction in weight space, normalized like the weights (Li et al. 2018).

    Args:
        model: the model whose parameters the direction is shaped like.
        norm: how the random part is rescaled to the weights' scale:
            "filter": every slice along dim 0 (a conv filter, a row of a linear layer) gets
                the norm of the same slice of the weights;
            "layer": every tensor gets the norm of its weight tensor;
            "model": the whole vector gets the norm of the weights it covers;
            None: raw N(0, 1) entries.
            Only parameters with more than one dimension are random, except those of
            normalization layers (BatchNorm, LayerNorm, GroupNorm...); see `ignore`.
        ignore: "biasbn" gives the other parameters (biases, BatchNorm weights and biases,
            every normalization layer's parameters) a zero direction, so they stay put; None
            gives them d = w (they scale with the step).
        seed: the random seed (the same seed gives the same direction on every device).

    Returns:
        A dict name -> tensor like `named_parameters()`, on the model's device and dtype.
    """
    if norm not in NORMS:
        raise ValueError(f"The direction's norm must be one of {NORMS}, not {norm!r}.")
    if ignore not in IGNORES:
        raise ValueError(f"'ignore' must be one of {IGNORES}, not {ignore!r}.")
    generator = torch.Generator().manual_seed(seed)  # on the CPU: the same draw everywhere
    weights = parameters(model)
    random = random_part(model)
    direction = {}
    for name, w in weights.items():
        if name not in random:
            direction[name] = torch.zeros_like(w) if ignore == "biasbn" else w.clone()
        else:
            d = torch.randn(w.shape, generator=generator, dtype=w.dtype)
            direction[name] = _normalize_tensor(d.to(w.device), w, norm)
    if norm == "model":
        _normalize_whole(direction, weights, random)
    return direction


# Layers that rescale their inputs: a step along their parameters means something else than
# a step along a filter's, so random directions leave them alone (Li et al. 2018, sec. 4).
NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)


def random_part(model: nn.Module) -> list[str]:
    """The parameters a random direction draws: those with more than one dimension (the
    weights of linear and conv layers, embeddings), except normalization layers' ones."""
    normalizing = {f"{prefix}.{name}" if prefix else name
                   for prefix, module in model.named_modules() if isinstance(module, NORM_LAYERS)
                   for name, _ in module.named_parameters(recurse=False)}
    return [name for name, w in model.named_parameters() if w.dim() > 1 and name not in normalizing]


def _normalize_tensor(d: torch.Tensor, w: torch.Tensor, norm: Optional[str]) -> torch.Tensor:
    """Rescale one random tensor: per slice along dim 0 ("filter") or as a whole ("layer").

    A slice along dim 0 is one output unit: a row of a linear layer, or one conv filter
    with all its input channels and kernel positions (Li et al.'s filter normalization).
    """
    if norm == "filter":
        dims = tuple(range(1, d.dim()))
        d_norms = torch.linalg.vector_norm(d, dim=dims, keepdim=True)
        return d * (torch.linalg.vector_norm(w, dim=dims, keepdim=True) / d_norms.clamp_min(1e-12))
    if norm == "layer":
        return d * (w.norm() / d.norm().clamp_min(1e-12))
    return d


def _normalize_whole(direction: Params, weights: Params, random: list[str]) -> None:
    """Rescale the random tensors together to the norm of the weights they cover."""
    d_norm = math.sqrt(sum(float(to_float64(direction[n]).pow(2).sum()) for n in random))
    w_norm = math.sqrt(sum(float(to_float64(weights[n]).pow(2).sum()) for n in random))
    for name in random:
        direction[name].mul_(w_norm / max(d_norm, 1e-12))


def difference_direction(a: Weights, b: Weights) -> Params:
    """b - a: the direction from weights a to weights b (models or dicts with the same keys).

    With centre a, the step 0 is a and the step 1 is b: the straight path between two models.
    """
    a, b = _floating(a), _floating(b)
    if set(a) != set(b):
        raise ValueError("The two sets of weights have different parameter names; "
                         "they must come from the same architecture.")
    return {k: b[k].to(a[k].device, a[k].dtype) - a[k] for k in a}


class Plane(NamedTuple):
    """The plane through three models: the origin, two directions, their coordinates.

    `origin + a * d1 + b * d2` is the first model at (0, 0), the second at (1, 0) and the
    third at `coords[2]`. d1 and d2 are orthogonal and equally long, so the plane is shown
    without distortion.
    """

    origin: Params
    d1: Params
    d2: Params
    coords: np.ndarray  # (3, 2): the three models' coordinates


def plane_through(w0: Weights, w1: Weights, w2: Weights) -> Plane:
    """The plane through three weight vectors, by Gram-Schmidt that keeps lengths.

    d1 = w1 - w0; d2 is the part of w2 - w0 orthogonal to d1, rescaled to the length of d1.

    Args:
        w0, w1, w2: three models of one architecture, or their weights as dicts.

    Raises:
        ValueError: when the three lie on one line (there is no single plane).
    """
    origin = _floating(w0)
    d1 = difference_direction(origin, w1)
    v = difference_direction(origin, w2)
    length_sq = _dot(d1, d1)
    along = _dot(v, d1) / max(length_sq, 1e-300)
    across = {k: v[k] - along * d1[k] for k in v}
    across_length = math.sqrt(max(_dot(across, across), 0.0))
    if length_sq == 0.0 or across_length <= 1e-9 * math.sqrt(length_sq + _dot(v, v)):
        raise ValueError("The three models lie on one line (or two are equal), so no single "
                         "plane passes through them.")
    scale = math.sqrt(length_sq) / across_length
    d2 = {k: t * scale for k, t in across.items()}
    coords = np.array([[0.0, 0.0], [1.0, 0.0], [along, 1.0 / scale]])
    return Plane(origin, d1, d2, coords)


@dataclass
class PCAPlane:
    """The plane of a training trajectory's top two principal components.

    Attributes:
        origin: the final weights (the plane passes through them).
        d1, d2: orthonormal directions (unit vectors), dicts like `named_parameters()`.
        explained_variance: (2,) the share of sum ||w_t - w_final||^2 along d1 and d2.
        coords: (T, 2) each checkpoint's coordinates (a, b) on the plane.
        steps: (T,) each checkpoint's step (its position in the list when steps are unknown).
    """

    origin: Params
    d1: Params
    d2: Params
    explained_variance: np.ndarray
    coords: np.ndarray
    steps: np.ndarray


def pca_directions(checkpoints: Union[list, dict], final: Weights,
                   names: Optional[Iterable[str]] = None) -> PCAPlane:
    """The top two principal directions of w_t - w_final over checkpoints (Li et al. 2018, 7).

    The PCA is not centred on the checkpoints' mean: the plane has to pass through w_final,
    the centre of the surface drawn on it. When every checkpoint lies in one plane through
    w_final the projection is exact (the coordinates reproduce the checkpoints).

    Args:
        checkpoints: a list of weight dicts (state_dicts), or a dict {step: weights} such as
            `Trainer.checkpoints`.
        final: the final model, or its weights as a dict.
        names: which entries are the trainable parameters. By default the parameter names of
            `final` when it is a model; for a dict, give them (e.g.
            `[n for n, _ in model.named_parameters()]`) to leave out buffers. Without names
            every floating-point entry counts.

    Raises:
        ValueError: with fewer than two checkpoints.
    """
    steps, states = steps_and_states(checkpoints)
    if len(states) < 2:
        raise ValueError("A trajectory plane needs at least two checkpoints.")
    if names is None:
        names = list(parameters(final)) if isinstance(final, nn.Module) else list(_floating(final))
    final_weights = _floating(final)
    origin = {n: final_weights[n] for n in names}
    base = flatten(origin).cpu().double()  # to the CPU first: a device may have no float64
    deltas = torch.stack([flatten({n: torch.as_tensor(s[n]) for n in names}).cpu().double() - base
                          for s in states])  # (T, P), in float64 for an exact projection
    _, singular, vh = torch.linalg.svd(deltas, full_matrices=False)
    components = vh[:2]
    coords = deltas @ components.T
    # An eigenvector's sign is arbitrary: choose the one that puts the start at a >= 0, b >= 0.
    signs = torch.where(coords[0] < 0, -1.0, 1.0).double()
    components, coords = components * signs[:, None], coords * signs
    variance = singular.pow(2)
    explained = (variance[:2] / variance.sum().clamp_min(1e-300)).numpy()
    d1, d2 = (_cast_like(unflatten(c, origin), origin) for c in components)
    return PCAPlane(origin, d1, d2, explained, coords.numpy(), steps)


def _cast_like(params: Params, like: Params) -> Params:
    return {k: t.to(device=like[k].device, dtype=like[k].dtype) for k, t in params.items()}


def steps_and_states(checkpoints: Union[list, dict]) -> tuple[np.ndarray, list]:
    """(steps, states) from a list of states or a {step: state} dict (sorted by step)."""
    if isinstance(checkpoints, dict):
        steps = sorted(checkpoints)
        return np.asarray(steps, dtype=float), [checkpoints[s] for s in steps]
    return np.arange(len(checkpoints), dtype=float), list(checkpoints)


def grid_around(coords: np.ndarray, n: int = 41,
                margin: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """Grid coordinates (xs, ys) that cover some points and the origin, with a margin.

    Args:
        coords: (T, 2) points, e.g. a `PCAPlane`'s projected checkpoints.
        n: grid points along each axis.
        margin: extra room on every side, as a fraction of each axis's span.
    """
    coords = np.vstack([np.asarray(coords, dtype=float).reshape(-1, 2), [[0.0, 0.0]]])
    low, high = coords.min(axis=0), coords.max(axis=0)
    pad = margin * np.maximum(high - low, 1e-6)
    return tuple(np.linspace(lo - p, hi + p, n) for lo, hi, p in zip(low, high, pad))


# ---------------------------------------------------------------- losses and data


def as_data(model: nn.Module, x, y) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets as tensors on the model's device: inputs in the model's dtype,
    class labels as int64, real targets in the model's dtype. Accepts numpy arrays too."""
    p = next(model.parameters())
    x = torch.as_tensor(x).to(device=p.device, dtype=p.dtype)
    y = torch.as_tensor(y).to(p.device)
    y = y.to(p.dtype) if y.is_floating_point() else y.long()
    return x, y


eval_mode = evaluating  # the old name, still imported by other modules


# ---------------------------------------------------------------- memory planning


def probe(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """One sample's output, and the elements that all modules' outputs hold for it.

    The count is a generous estimate of the activation memory per sample and per weight
    point (containers count their children's output again, which leaves headroom).
    """
    total = 0

    def count(module, inputs, output):
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output.numel()

    hooks = [m.register_forward_hook(count) for m in model.modules()]
    try:
        with torch.no_grad(), eval_mode(model):
            output = model(x[:1])
    finally:
        for h in hooks:
            h.remove()
    return output, total


def plan_chunks(n_points: int, n_samples: int, point_bytes: int, sample_bytes: int,
                budget: int, batch_size: Optional[int] = None,
                batch_budget: Optional[int] = None) -> tuple[int, int]:
    """How many weight points and samples to evaluate at once to stay within `budget`.

    Args:
        n_points: weight points to evaluate.
        n_samples: data points to average over.
        point_bytes: memory of one point's weights.
        sample_bytes: activation memory of one sample at one point.
        budget: bytes a chunk may use.
        batch_size: samples per forward; by default all, halved until one point fits in
            `batch_budget` (by default `budget`).

    Returns:
        (points per chunk, samples per batch), both at least 1.
    """
    batch = min(n_samples, batch_size or n_samples)
    batch_budget = budget if batch_budget is None else batch_budget
    while batch_size is None and batch > 1 and point_bytes + batch * sample_bytes > batch_budget:
        batch = (batch + 1) // 2
    points = budget // (point_bytes + batch * sample_bytes)
    return int(max(1, min(n_points, points))), int(batch)


# ---------------------------------------------------------------- stacks of linear layers

# Activations that act on every entry alone, so they apply to activations of any shape.
ELEMENTWISE = (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.LeakyReLU, nn.ELU, nn.Softplus,
               nn.Identity, nn.Dropout, Square)  # dropout: the identity in eval mode


class Chain(NamedTuple):
    """A model that is a stack of linear layers and elementwise activations.

    layers: (parameter prefix, module) in the order the forward applies them.
    flattens: whether the model flattens its input to (N, features) first (the app's MLP).
    """

    layers: list
    flattens: bool


def linear_chain(model: nn.Module) -> Optional[Chain]:
    """The model as a `Chain` when it is one (an `engine.models.MLP`, or an `nn.Sequential`
    of `nn.Linear` / `Dense` layers and the `ELEMENTWISE` activations, nested or not), else None.

    Only these exact types count: a subclass may change what its forward does. Hooks, which a
    chain would not run, rule a model out as well.
    """
    if any(m._forward_hooks or m._forward_pre_hooks for m in model.modules()):
        return None
    if type(model) is MLP:
        inner = linear_chain(model.layers)
        return None if inner is None else Chain([("layers." + p, m) for p, m in inner.layers], True)
    if type(model) is not nn.Sequential:
        return None
    layers = []
    for name, child in model.named_children():
        if type(child) is nn.Sequential:
            inner = linear_chain(child)
            if inner is None:
                return None
            layers += [(f"{name}.{p}", m) for p, m in inner.layers]
        elif type(child) in (nn.Linear, Dense) or type(child) in ELEMENTWISE:
            layers.append((f"{name}.", child))
        else:
            return None
    return Chain(layers, False)


def _chain_forward(chain: Chain, weights: Params, x: torch.Tensor) -> torch.Tensor:
    """The outputs of a chain at many weight points, as (points, outputs, samples).

    Activations stay features-first, (points, features, samples): a layer is then one
    (batched) product W @ h, the first layer a single matrix product for all the points, and
    the bias and the activation act in place. A weight shaped like its parameter (one that the
    directions leave alone) is shared by all the points through broadcasting.
    """
    return _chain_apply(chain.layers, weights, _chain_input(chain, x), owned=False)


def _chain_input(chain: Chain, x: torch.Tensor) -> torch.Tensor:
    """The chain's input features-first, (features, samples): a view of the caller's data."""
    return (x.flatten(1) if chain.flattens else x).T


# Activations with an in-place form: applied to a buffer of ours, they allocate nothing.
IN_PLACE = {nn.ReLU: torch.relu_, nn.Tanh: torch.tanh_, nn.Sigmoid: torch.sigmoid_,
            nn.Identity: lambda h: h, nn.Dropout: lambda h: h}
# Activations that leave 1 as it is: a column of ones (a bias's input) may go through them,
# so that they run over a whole contiguous buffer rather than a strided view of it.
KEEP_ONE = (nn.ReLU, nn.Identity, nn.Dropout)


def _activate(module: nn.Module, h: torch.Tensor, owned: bool) -> torch.Tensor:
    """An elementwise activation, in place where it has that form. The caller's data (not
    `owned`) is copied first: a module built with inplace=True would change it too."""
    h = h if owned else h.clone()
    return IN_PLACE[type(module)](h) if type(module) in IN_PLACE else module(h)


def _chain_apply(layers: list, weights: Params, h: torch.Tensor, owned: bool) -> torch.Tensor:
    """Run `layers` of a chain on features-first activations h ((features, samples), or
    (points, features, samples)); `owned` says whether h may be changed in place."""
    for prefix, module in layers:
        if type(module) not in (nn.Linear, Dense):
            h = _activate(module, h, owned)
            owned = True
            continue
        h = torch.matmul(weights[prefix + "weight"], h)
        multiplier = getattr(module, "multiplier", 1.0)  # Dense: y = multiplier * x W^T + b
        if multiplier != 1.0:
            h.mul_(multiplier)
        bias = weights.get(prefix + "bias")
        if bias is not None:
            bias = bias.unsqueeze(-1)
            h = h.add_(bias) if torch.broadcast_shapes(h.shape, bias.shape) == h.shape else h + bias
        owned = True
    return h


def _chain_loss_and_correct(loss_fn, chain: Chain, classify: bool, weights: Params,
                            x: torch.Tensor, y: torch.Tensor, count: int):
    """Mean loss and correct count at `count` weight points of a chain, one per point."""
    out = _chain_forward(chain, weights, x).expand(count, -1, -1)  # (points, outputs, samples)
    return _outputs_loss_and_correct(loss_fn, classify, out, y)


def _outputs_loss_and_correct(loss_fn, classify: bool, out: torch.Tensor, y: torch.Tensor):
    """Mean loss and correct count per point of outputs (points, outputs, samples)."""
    count = len(out)
    if loss_fn is F.cross_entropy and classify:
        # cross-entropy takes the classes in dim 1: no transpose, and one call for all points
        # (on rows of a few logits each, log_softmax ran about 10x slower)
        loss = F.cross_entropy(out, y.expand(count, -1), reduction="none").mean(dim=1)
    else:
        loss = vmap(loss_fn, in_dims=(0, None))(out.transpose(1, 2), y)
    if not classify:
        return loss, out.new_zeros(count)
    predicted = out.max(dim=1).indices  # the first largest, as argmax; faster along dim 1
    return loss, (predicted == y).sum(dim=1)


# ---------------------------------------------------------------- evaluating many weights


STRATEGIES = ("auto", "batched", "per point")
# Above this many FLOPs per weight point (one point's forward over one batch of samples, 2
# per multiply-add, a chain's first layer left out: it is computed once per grid), a chain is
# evaluated one point at a time as plain GEMMs with the weights written in place; below it,
# many points at once as batched products. Measured with `bench/landscape.py --parts 4`
# (2-W-W-2 MLPs on 500 and 4000 samples, 144 grid points) on the shared 2-core CPU this was
# written on, 2 threads, load 1.0: batched was as fast or 1.05-1.4x faster up to 1.3e8 FLOPs
# per point, per point 1.07x faster at 5.3e8; the crossover lies between. (At load 7.4 with
# one thread per point won from about 1e6; at load 7-9 with two threads nothing repeated.)
PER_POINT_FLOPS = 2.5e8


def choose_strategy(flops_per_point: float, device: torch.device) -> str:
    """'per point' when one point's forward keeps the CPU's cores busy on its own, else
    'batched'. A GPU is only kept busy by many points at once: always 'batched' there."""
    if device.type != "cpu":
        return "batched"
    return "per point" if flops_per_point >= PER_POINT_FLOPS else "batched"


def chain_flops(layers: list, n_samples: int) -> int:
    """Floating-point operations of one point's forward through the linear layers of `layers`
    over n_samples (2 per multiply-add; the activations and biases are small beside them)."""
    return sum(2 * m.in_features * m.out_features * n_samples
               for _, m in layers if type(m) in (nn.Linear, Dense))


def _evaluate(model: nn.Module, loss: LossArg, x, y, weights_of: Callable[[int, int], Params],
              n_points: int, batch_size: Optional[int] = None,
              progress: Optional[Callable[[float], None]] = None, strategy: str = "auto"):
    """Mean loss (and accuracy) over all of (x, y) at `n_points` weight points.

    Args:
        weights_of: (start, stop) -> the weights of points start..stop-1, stacked along a
            new dim 0 (tensors of shape (stop - start, *parameter shape)); a tensor of the
            parameter's own shape is shared by all the points. A `PlanePoints` also lets the
            points be written in place and a chain's first layer be computed once.
        batch_size, progress, strategy: see `surface`.

    Returns:
        (losses (n_points,), accuracies (n_points,) or None, the plan as a dict).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"The strategy must be one of {STRATEGIES}, not {strategy!r}.")
    loss_fn = loss_function(loss)
    x, y = as_data(model, x, y)
    n = len(x)
    buffers = dict(model.named_buffers())  # shared by every point: passed unbatched
    p = next(model.parameters())
    output, activations = probe(model, x)
    classify = not y.is_floating_point() and output.dim() == 2
    point_bytes = sum(t.numel() for t in model.parameters()) * p.element_size()
    sample_bytes = activations * p.element_size()
    budget = memory.chunk_budget(p.device, CPU_MEMORY_BUDGET)
    batch_budget = max(budget, CPU_BATCH_BUDGET) if p.device.type == "cpu" else budget
    chunk, batch = plan_chunks(n_points, n, point_bytes, sample_bytes, budget, batch_size,
                               batch_budget)
    plan = {"n_samples": n, "batch_size": batch, "points_per_chunk": chunk, "device": str(p.device),
            "mode": evaluation_mode(model)}

    chain = linear_chain(model)
    if chain is not None and not (chain.flattens or x.dim() == 2):
        chain = None  # nn.Linear on inputs with more dimensions maps the last one: not a chain
    if chain is not None and isinstance(weights_of, PlanePoints):
        with torch.no_grad():
            losses, corrects, route = _chain_plane(loss_fn, chain, classify, weights_of, x, y,
                                                   batch, strategy, progress)
        accuracy = corrects.cpu().numpy() if classify else None
        return losses.cpu().numpy(), accuracy, {**plan, **route}

    def loss_and_correct(weights, xb, yb):
        out = functional_call(model, (weights, buffers), (xb,))
        correct = (out.argmax(-1) == yb).sum() if classify else out.new_zeros(())
        return loss_fn(out, yb), correct

    shapes = {name: t.shape for name, t in model.named_parameters()}
    # vmap over points, until an operation refuses it; or one point at a time on request
    route = {"batched": strategy != "per point"}
    in_place = strategy == "per point" and isinstance(weights_of, PlanePoints)
    point_buffers = weights_of.buffers() if in_place else None

    def evaluate_chunk(weights: Optional[Params], start: int, count: int, xb: torch.Tensor,
                       yb: torch.Tensor):
        """Loss and correct count at each of the `count` points from `start` on.

        A tensor with a leading point dimension differs between points; one shaped like its
        parameter (a bias the directions leave alone) serves all of them unbatched. Without
        `weights`, each point's weights are written into `point_buffers` in turn.
        """
        if weights is None:
            points = [loss_and_correct(weights_of.write_point(start + i, point_buffers), xb, yb)
                      for i in range(count)]
            return tuple(torch.stack(values) for values in zip(*points))
        batched = {k: None if t.shape == shapes[k] else 0 for k, t in weights.items()}
        if count == 1 or all(dim is None for dim in batched.values()):
            # one point, or points that coincide: one plain forward, no vmap
            single = {k: t if batched[k] is None else t[0] for k, t in weights.items()}
            loss_value, correct = loss_and_correct(single, xb, yb)
            return loss_value.expand(count), correct.expand(count)
        if chain is not None and route["batched"]:
            return _chain_loss_and_correct(loss_fn, chain, classify, weights, xb, yb, count)
        if route["batched"]:
            try:
                return vmap(loss_and_correct, in_dims=(batched, None, None))(weights, xb, yb)
            except RuntimeError:
                # An operation vmap cannot batch (a .item(), control flow on values): from
                # now on one point at a time. A genuine error raises again in the loop.
                route["batched"] = False
        points = [loss_and_correct({k: t if batched[k] is None else t[i] for k, t in weights.items()},
                                   xb, yb) for i in range(count)]
        return tuple(torch.stack(values) for values in zip(*points))

    losses, corrects = [], []
    with torch.no_grad(), eval_mode(model):
        for start in range(0, n_points, chunk):
            stop = min(start + chunk, n_points)
            weights = None if in_place else weights_of(start, stop)
            total_loss = torch.zeros(stop - start, dtype=torch.float64, device=float64_device(p.device))
            total_correct = torch.zeros_like(total_loss)
            for s in range(0, n, batch):
                xb, yb = x[s:s + batch], y[s:s + batch]
                batch_loss, correct = evaluate_chunk(weights, start, stop - start, xb, yb)
                total_loss += to_float64(batch_loss) * len(xb)  # the mean of means, weighted by size
                total_correct += to_float64(correct)
            losses.append(total_loss / n)
            corrects.append(total_correct / n)
            if progress is not None:
                progress(stop / n_points)
    plan["points_at_once"] = ("chain" if chain is not None and route["batched"]
                              else "vmap" if route["batched"] else "one by one")
    accuracy = torch.cat(corrects).cpu().numpy() if classify else None
    return torch.cat(losses).cpu().numpy(), accuracy, plan


def _chain_plane(loss_fn, chain: Chain, classify: bool, plane: PlanePoints, x: torch.Tensor,
                 y: torch.Tensor, batch: int, strategy: str,
                 progress: Optional[Callable[[float], None]]):
    """Mean loss and accuracy of a chain at every point of a plane, and the route taken
    (a dict for the plan: `points_at_once`, `points_per_chunk`).

    The first linear layer is linear in its weights and bias, so at the point origin +
    sum_k c_k d_k its outputs are Z_0 + sum_k c_k Z_k, with Z_0 = W h + b from the origin's
    weights and Z_k = D_k h + d_k from direction k's: computed once per batch of samples,
    combined per point (2 multiply-adds per output instead of a matrix product). The rest of
    the chain runs either batched over many points or one point at a time (`choose_strategy`).
    """
    n, n_points = len(x), len(plane)
    losses = torch.zeros(n_points, dtype=torch.float64, device=float64_device(x.device))
    corrects = torch.zeros_like(losses)
    batches = range(0, n, batch)
    done, routes = 0, []
    for s in batches:
        xb, yb = x[s:s + batch], y[s:s + batch]
        parts, rest = _first_layer_parts(chain, plane, xb)
        chosen = strategy if strategy != "auto" else choose_strategy(chain_flops(rest, len(xb)),
                                                                      x.device)
        margin = chosen != "per point" and _two_class_margin(loss_fn, classify, rest)
        if chosen == "per point":
            per_chunk, per_pass = _outputs_chunk(parts, rest, n_points), 1
        else:
            per_chunk, per_pass = _chain_chunks(parts, rest, n_points, margin)
        evaluate = _chain_points_in_place if chosen == "per point" else _chain_points_batched
        routes.append((chosen, per_chunk, per_pass, margin))
        state = {"per_pass": per_pass, "margin": margin}  # and the buffers a route reuses
        for start in range(0, n_points, per_chunk):
            stop = min(start + per_chunk, n_points)
            loss, correct = evaluate(loss_fn, classify, plane, parts, rest, yb, start, stop, state)
            losses[start:stop] += to_float64(loss) * len(xb)  # the mean of means, weighted by size
            corrects[start:stop] += to_float64(correct)
            done += stop - start
            if progress is not None:
                progress(done / (n_points * len(batches)))
    chosen, per_chunk, per_pass, margin = routes[0]  # the first batch's: a last, smaller one may differ
    how = "one point at a time in place" if chosen == "per point" else "batched"
    if margin:
        how += ", two logits as their difference"
    route = {"points_at_once": f"chain, first layer once per grid, {how}", "points_per_chunk": per_chunk,
             "points_per_pass": per_pass}
    return losses / n, corrects / n, route


# Bytes of the outputs of one chunk of a chain's points on the CPU: the loss is taken once per
# chunk, over all of its points. Larger than the generic CPU_MEMORY_BUDGET: the loss's steps
# are a few elementwise passes, each a parallel region whose start costs the same for any size.
CHAIN_CHUNK_BYTES = 32 * 2**20
# Bytes of the activations and weights of the points that go through the chain's layers
# together (a part of a chunk): about the size of a core's L2 cache, so that each layer's
# output is still there when the activation and the next layer read it. Measured on the
# 51 x 51 moons surface (2-32-32-2, 500 samples, one thread; bench/landscape.py): a pass over
# a few MiB of activations that fell out of the cache cost as much as the matrix products.
CHAIN_CACHE_BYTES = 2 * 2**20


def _outputs_chunk(parts: torch.Tensor, rest: list, n_points: int) -> int:
    """Points per chunk of a chain's per-point route: as many outputs as fit the CPU chunk
    budget, for one loss call over all of them."""
    outputs = [m.out_features for _, m in rest if type(m) in (nn.Linear, Dense)]
    width = outputs[-1] if outputs else parts.shape[1]
    point_bytes = width * parts.shape[-1] * parts.element_size()
    return int(max(1, min(n_points, memory.chunk_budget(parts.device, CPU_MEMORY_BUDGET) // point_bytes)))


def _chain_chunks(parts: torch.Tensor, rest: list, n_points: int, margin: bool) -> tuple[int, int]:
    """(points per chunk, points per pass) of a chain's batched route. A pass takes its points
    through all the layers at once and fits CHAIN_CACHE_BYTES, counting every layer's output
    and the stacked weights; a chunk is a whole number of passes whose outputs fit
    CHAIN_CHUNK_BYTES (on a GPU both are the device's chunk budget)."""
    samples = parts.shape[-1]
    linear = [m for _, m in rest if type(m) in (nn.Linear, Dense)]
    widths = parts.shape[1] + 1 + sum(m.out_features for m in linear)
    weights = sum(sum(p.numel() for p in m.parameters()) for m in linear)
    size = parts.element_size()
    per_pass = memory.chunk_budget(parts.device, CHAIN_CACHE_BYTES) // ((widths * samples + weights) * size)
    outputs = 1 if margin else (linear[-1].out_features if linear else parts.shape[1])
    per_chunk = memory.chunk_budget(parts.device, CHAIN_CHUNK_BYTES) // (outputs * samples * size)
    per_pass = int(max(1, min(n_points, per_pass, per_chunk)))
    passes = max(1, min(-(-n_points // per_pass), per_chunk // per_pass))
    return min(n_points, passes * per_pass), per_pass


def _first_layer_parts(chain: Chain, plane: PlanePoints, x: torch.Tensor):
    """The first linear layer's outputs from the origin's weights and from each direction's,
    stacked as (1 + directions, features, samples), and the layers after it."""
    layers = chain.layers
    first = next(i for i, (_, m) in enumerate(layers) if type(m) in (nn.Linear, Dense))
    h = _chain_apply(layers[:first], {}, _chain_input(chain, x), owned=False)
    prefix, module = layers[first]
    multiplier = getattr(module, "multiplier", 1.0)
    parts = []
    for weights in [plane.origin] + plane.directions:
        z = torch.matmul(weights[prefix + "weight"], h)
        if multiplier != 1.0:
            z.mul_(multiplier)
        bias = weights.get(prefix + "bias")
        if bias is not None:
            z.add_(bias.unsqueeze(-1))
        parts.append(z)
    return torch.stack(parts), layers[first + 1:]


def _two_class_margin(loss_fn, classify: bool, rest: list) -> bool:
    """Whether a chain's outputs are two logits under cross-entropy, straight from its last
    linear layer: the loss and the prediction then depend on their difference alone."""
    if loss_fn is not F.cross_entropy or not classify or not rest:
        return False
    last = rest[-1][1]
    return type(last) in (nn.Linear, Dense) and last.out_features == 2


def _chain_points_batched(loss_fn, classify, plane, parts, rest, y, start, stop, state):
    """Points start..stop-1 at once, into buffers made once per batch of samples (`state`,
    which holds the points per pass and whether to take two logits' difference).

    As in `_chain_points_in_place`, everything linear in the plane's coordinates (the first
    layer's outputs and the later layers' weights) is one row per plane vector, so a pass's
    all of them are one product [1, c_i] @ rows. The activations are kept samples-first,
    (points, samples, features): a layer is then one batched product h @ W^T, which on the CPU
    ran about 3x faster than W @ h for the narrow layers this route serves (bench/landscape.py,
    moons: 32 x 32 weights on 500 samples, 245 points, one thread). Two logits under
    cross-entropy are computed as their difference only (`_margin_loss_and_correct`).
    """
    if "chain" not in state:
        state["chain"] = _BatchedChain(plane, parts, rest, stop - start, state["per_pass"], state["margin"])
    chain = state["chain"]
    out = chain.forward(start, stop)  # (points, outputs, samples)
    if chain.margin:
        return _margin_loss_and_correct(out[:, 0], y, chain.scratch[:stop - start])
    return _outputs_loss_and_correct(loss_fn, classify, out, y)


def _margin_loss_and_correct(margin: torch.Tensor, y: torch.Tensor, scratch: torch.Tensor):
    """Mean cross-entropy and correct count per point from the logits' difference
    m = z_1 - z_0, (points, samples), each pass written into `scratch` (a buffer of that
    shape: fresh tensors of a whole chunk's size cost more in page faults than the passes).

    A sample's cross-entropy is log(1 + exp(z_other - z_label)): softplus(m) for class 0 and
    softplus(-m) for class 1. Class 1 is predicted where m > 0 (a tie goes to class 0, the
    first largest, as with argmax), so the correct count is (class-0 samples) + sum over
    samples of [m > 0] (2 y - 1): one matrix-vector product.
    """
    signs = 1.0 - 2.0 * y.to(margin.dtype)  # +1 for class 0, -1 for class 1
    loss = F.softplus(torch.mul(margin, signs, out=scratch), out=scratch).mean(dim=1)
    second = torch.gt(margin, 0, out=scratch)  # 1.0 where class 1 is predicted
    return loss, (y == 0).sum() + second @ -signs


class _BatchedChain:
    """The buffers of `_chain_points_batched`.

    `rows` (1 + directions, N) holds, for the origin and each direction, the first layer's
    outputs (samples, features) with a column of ones (zeros for a direction), then each later
    linear layer's weights: [W | b] for the first of them (the column of ones brings in its
    bias), W and then b for the others; for a two-class margin the last layer's second row
    minus its first. `flat` (pass, N) holds a pass's points' all of them, `hidden` the layers'
    outputs of a pass, `outputs` (chunk, outputs, samples) a chunk's outputs.
    """

    def __init__(self, plane: PlanePoints, parts: torch.Tensor, rest: list, chunk: int,
                 per_pass: int, margin: bool):
        self.samples, self.per_pass, self.margin = parts.shape[-1], per_pass, margin
        linear = [i for i, (_, m) in enumerate(rest) if type(m) in (nn.Linear, Dense)]
        self.last = linear[-1] if linear else -1
        self.ones = bool(linear)  # a column of ones for the next layer's bias
        first = parts.transpose(1, 2)  # (1 + directions, samples, features)
        if self.ones:
            ones = torch.zeros_like(first[:, :, :1])
            ones[0] = 1.0
            first = torch.cat([first, ones], dim=2)
        self.leading = first[0].numel()

        def layout(weights: Params, prefix: str, module: nn.Module) -> torch.Tensor:
            index = next(i for i, (p, _) in enumerate(rest) if p == prefix)
            return _layer_row(weights, prefix, module, augmented=index == linear[0],
                              margin=margin and index == self.last)

        self.rows = _plane_rows(plane, rest, list(first.reshape(len(parts), -1)), layout)
        self.coefficients = _with_ones(plane, parts)
        self.flat = parts.new_empty(per_pass, self.rows.shape[1])
        self.layers, offset = [], self.leading
        for index, (prefix, module) in enumerate(rest):
            if index not in linear:
                self.layers.append((module, None, None))
                continue
            n_out = 1 if margin and index == self.last else module.out_features
            n_in = module.in_features + (index == linear[0])  # the column of ones is an input
            bias = index != linear[0] and prefix + "bias" in plane.origin
            shape = (n_out, self.samples) if index == self.last else (self.samples, n_out)
            hidden = parts.new_empty(per_pass, *shape)
            self.layers.append((module, (offset, n_out, n_in, bias), hidden))
            offset += n_out * (n_in + bias)
        width = self.layers[self.last][2].shape[1] if self.last >= 0 else parts.shape[1]
        self.outputs = parts.new_empty(chunk, width, self.samples)
        self.scratch = parts.new_empty(chunk, self.samples) if margin else None

    def forward(self, start: int, stop: int) -> torch.Tensor:
        """The outputs of points start..stop-1, features-first: (points, outputs, samples)
        (the layout the loss takes fastest), a pass of `per_pass` points at a time."""
        for first in range(start, stop, self.per_pass):
            last = min(first + self.per_pass, stop)
            self._one_pass(first, last, self.outputs[first - start:last - start])
        return self.outputs[:stop - start]

    def _one_pass(self, start: int, stop: int, out: torch.Tensor) -> None:
        """Points start..stop-1 through every layer, their outputs written into `out`."""
        count = stop - start
        flat = torch.mm(self.coefficients[start:stop], self.rows, out=self.flat[:count])
        h = flat[:, :self.leading].view(count, self.samples, -1)
        ones = self.ones
        for index, (module, place, hidden) in enumerate(self.layers):
            if place is None:  # an activation, on the features; on the ones only if it keeps them
                _activate_into(module, h[..., :-1] if ones and type(module) not in KEEP_ONE else h)
                continue
            offset, n_out, n_in, has_bias = place
            weight = flat[:, offset:offset + n_out * n_in].view(count, n_out, n_in)
            bias = flat[:, offset + n_out * n_in:offset + n_out * (n_in + 1)]  # right after it
            if index == self.last:  # W @ h^T: the outputs features-first
                h = torch.bmm(weight, h.transpose(1, 2), out=out)
                bias = bias.unsqueeze(2)
            else:
                h = torch.bmm(h, weight.transpose(1, 2), out=hidden[:count])
                bias = bias.unsqueeze(1)
            if has_bias:  # as an addition: baddbmm's copy of the bias first took longer
                h.add_(bias)
            ones = False
        if self.last < 0:
            out.copy_(h.transpose(1, 2))


def _plane_rows(plane: PlanePoints, rest: list, leading: list, layout: Callable) -> torch.Tensor:
    """(1 + directions, N): for the origin and each direction, `leading[k]` (a flat tensor)
    followed by each linear layer's weights in `rest` as `layout(weights, prefix, module)`
    lays them out."""
    rows = []
    for k, weights in enumerate([plane.origin] + plane.directions):
        pieces = [leading[k]] + [layout(weights, prefix, module).reshape(-1)
                                 for prefix, module in rest if type(module) in (nn.Linear, Dense)]
        rows.append(torch.cat(pieces))
    return torch.stack(rows)


def _with_ones(plane: PlanePoints, like: torch.Tensor) -> torch.Tensor:
    """[1, c_i] for every point i: the row that multiplies `_plane_rows`."""
    c = torch.as_tensor(plane.coefficients, dtype=like.dtype, device=like.device)
    return torch.cat([c.new_ones(len(c), 1), c], dim=1)


def _chain_points_in_place(loss_fn, classify, plane, parts, rest, y, start, stop, state):
    """Points start..stop-1 one at a time, as plain GEMMs into buffers made once (`state`).

    Everything that is linear in the plane's coordinates, the first layer's outputs and every
    later layer's weights with its bias as an extra column, is laid out in one vector, so a
    point's all of them are written by one product [1, c_i] @ rows (`_InPlaceChain`). Each
    layer is then one matrix product (the bias through a row of ones under the activations)
    and one in-place activation: few operations per point, which matters on a crowded machine
    where each parallel operation may wait for its threads. The loss is taken once per chunk,
    over the outputs of its points.
    """
    if "chain" not in state:
        state["chain"] = _InPlaceChain(plane, parts, rest, stop - start)
    chain = state["chain"]
    outputs = chain.outputs[:stop - start]
    for j, i in enumerate(range(start, stop)):
        chain.forward(i, outputs[j])
    return _outputs_loss_and_correct(loss_fn, classify, outputs, y)


class _InPlaceChain:
    """The buffers of `_chain_points_in_place`: `rows` (1 + directions, N) holds the origin's
    and each direction's first-layer outputs and augmented weights [W | b] (the multiplier of
    a `Dense` layer folded in), `flat` (N,) one point's; `hidden` are the layers' outputs,
    each with a last row of ones that multiplies the next layer's bias column."""

    def __init__(self, plane: PlanePoints, parts: torch.Tensor, rest: list, chunk: int):
        samples, first_width = parts.shape[-1], parts.shape[1]
        ones = parts.new_ones(samples)
        leading = [torch.cat([parts[k].reshape(-1), ones if k == 0 else torch.zeros_like(ones)])
                   for k in range(len(parts))]  # each first-layer output, a row of ones below
        self.rows = _plane_rows(plane, rest, leading, _layer_row)
        self.coefficients = _with_ones(plane, parts)
        self.flat = parts.new_empty(1, self.rows.shape[1])
        self.first = self.flat[0, :(first_width + 1) * samples].view(first_width + 1, samples)
        self.layers, offset = [], (first_width + 1) * samples
        for prefix, module in rest:
            if type(module) not in (nn.Linear, Dense):
                self.layers.append((module, None, None))
                continue
            size = module.out_features * (module.in_features + 1)
            weight = self.flat[0, offset:offset + size].view(module.out_features, -1)
            hidden = parts.new_ones(module.out_features + 1, samples)
            self.layers.append((module, weight, hidden))
            offset += size
        # the last linear layer writes the outputs; with none after the first, the first does
        self.last = max((i for i, (_, weight, _) in enumerate(self.layers) if weight is not None),
                        default=-1)
        width = self.layers[self.last][1].shape[0] if self.last >= 0 else first_width
        self.outputs = parts.new_empty(chunk, width, samples)

    def forward(self, i: int, out: torch.Tensor) -> torch.Tensor:
        """Point i's outputs (outputs, samples), written into `out`."""
        torch.mm(self.coefficients[i:i + 1], self.rows, out=self.flat)
        h, ones_below = self.first, True  # (features + 1, samples): the last row is ones
        for index, (module, weight, hidden) in enumerate(self.layers):
            if weight is None:  # an activation, on the features, never on the row of ones
                _activate_into(module, h[:-1] if ones_below else h)
            elif index == self.last:
                h, ones_below = torch.mm(weight, h, out=out), False
            else:
                torch.mm(weight, h, out=hidden[:-1])
                h = hidden
        if self.last < 0:
            out.copy_(h[:-1])
        return out


def _layer_row(weights: Params, prefix: str, module: nn.Module, augmented: bool = True,
               margin: bool = False) -> torch.Tensor:
    """A linear layer's multiplier * W and b, flat: as one matrix [W | b] when `augmented` (b
    zero when the layer has none; applied to a column of inputs with a 1 below them it gives
    multiplier * W x + b), else W and then b when the layer has one. With `margin`, the layer's
    second row minus its first: the difference of two logits."""
    weight = weights[prefix + "weight"] * getattr(module, "multiplier", 1.0)
    bias = weights.get(prefix + "bias")
    if margin:
        weight = weight[1:] - weight[:1]
        bias = None if bias is None else bias[1:] - bias[:1]
    if augmented:
        bias = torch.zeros_like(weight[:, 0]) if bias is None else bias
        return torch.cat([weight, bias.unsqueeze(1)], dim=1).reshape(-1)
    return weight.reshape(-1) if bias is None else torch.cat([weight.reshape(-1), bias])


def _activate_into(module: nn.Module, h: torch.Tensor) -> None:
    """An elementwise activation of a buffer, in place (through a copy where it has no
    in-place form)."""
    if type(module) in IN_PLACE:
        IN_PLACE[type(module)](h)
    else:
        h.copy_(module(h))


def evaluation_mode(model: nn.Module) -> str:
    """How `_evaluate` runs the model, for a result's settings: always in eval mode, so that
    BatchNorm normalizes with the checkpoint's running statistics (its buffers), the same at
    every weight point, rather than with each batch's own statistics."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return "eval"
    if all(m.track_running_stats for m in norms):
        return "eval, BatchNorm with the checkpoint's running statistics"
    return "eval, BatchNorm without running statistics uses each batch's own"


class PlanePoints:
    """The weights origin + sum_k c[i, k] * d_k at the rows i of a coefficient matrix.

    Called with (start, stop), it gives the weights of points start..stop-1 stacked along a
    new dim 0 (the `weights_of` of `_evaluate`). A parameter that every direction leaves alone
    (a bias under ignore="biasbn") is given once, unstacked: it is the same at every point.
    Knowing the plane, and not only its points, lets `_evaluate` write one point's weights
    into buffers in place (`write_point`) and compute a chain's first layer once per grid.
    """

    def __init__(self, origin: Params, directions: list[Params], coefficients: np.ndarray):
        self.origin, self.directions = origin, directions
        self.coefficients = np.asarray(coefficients, dtype=float).reshape(len(coefficients), -1)
        self.still = {name for name in origin
                      if all(torch.count_nonzero(d[name]) == 0 for d in directions)}

    def __len__(self) -> int:
        return len(self.coefficients)

    def __call__(self, start: int, stop: int) -> Params:
        first = next(iter(self.origin.values()))
        c = torch.as_tensor(self.coefficients[start:stop], dtype=first.dtype, device=first.device)
        out = {}
        for name, w in self.origin.items():
            if name in self.still:  # zero in every direction: one tensor serves all points
                out[name] = w
                continue
            shape = (stop - start,) + (1,) * w.dim()  # one coefficient per point, broadcast
            total = w.unsqueeze(0).expand(stop - start, *w.shape)
            for k, d in enumerate(self.directions):
                total = total + c[:, k].reshape(shape) * d[name]
            out[name] = total
        return out

    def buffers(self) -> Params:
        """Room for one point's weights: a buffer per moving parameter, the others shared."""
        return {name: w if name in self.still else torch.empty_like(w)
                for name, w in self.origin.items()}

    def write_point(self, i: int, buffers: Params) -> Params:
        """Point i's weights written into `buffers` (from `buffers()`): no new tensors."""
        for name, out in buffers.items():
            if name not in self.still:
                self.combine_into(out, [self.origin[name]] + [d[name] for d in self.directions], i)
        return buffers

    def combine_into(self, out: torch.Tensor, parts: list, i: int) -> torch.Tensor:
        """parts[0] + sum_k c[i, k] * parts[k + 1], written into `out`."""
        c = self.coefficients[i]
        torch.add(parts[0], parts[1], alpha=float(c[0]), out=out)
        for k in range(1, len(c)):
            out.add_(parts[k + 1], alpha=float(c[k]))
        return out


def plane_points(origin: Params, directions: list[Params], coefficients: np.ndarray) -> PlanePoints:
    """(start, stop) -> stacked weights origin + sum_k c[i, k] * d_k for rows i of coefficients."""
    return PlanePoints(origin, directions, coefficients)


def losses_at(model: nn.Module, loss: LossArg, x, y, weights: Union[list, dict],
              batch_size: Optional[int] = None) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Mean loss and accuracy over (x, y) at each of several weights (e.g. checkpoints).

    Args:
        model: the architecture (its own weights are not used, and not changed).
        weights: a list of weight dicts, or a {step: weights} dict (taken in step order).

    Returns:
        (losses (T,), accuracies (T,) or None when the targets are not class labels).
    """
    _, states = steps_and_states(weights)
    states = [as_parameters(s, model) for s in states]

    def weights_of(start: int, stop: int) -> Params:
        return {name: torch.stack([s[name] for s in states[start:stop]]) for name in states[0]}

    losses, accuracy, _ = _evaluate(model, loss, x, y, weights_of, len(states), batch_size)
    return losses, accuracy


def surface(model: nn.Module, loss: LossArg, x, y, d1: Weights, d2: Optional[Weights] = None,
            xs=DEFAULT_COORDINATES, ys=None, batch_size: Optional[int] = None,
            center: Optional[Weights] = None,
            progress: Optional[Callable[[float], None]] = None, strategy: str = "auto") -> Surface:
    """The loss at center + a*d1 (+ b*d2) for every a in xs (and b in ys).

    The model is evaluated in eval mode, averaged over all of (x, y), and left exactly as it
    was (weights and train/eval modes). Many grid points are evaluated per forward (vmap over
    stacked weights, or batched matrix products for a `linear_chain`), in chunks sized to fit
    the memory budget of the model's device.

    Args:
        model: any nn.Module (buffers, such as a `Centered` model's w0, stay as they are).
        loss: "ce", "mse" (one-hot for class labels) or a callable (output, target) -> mean.
        x, y: inputs and targets (tensors on any device, or numpy arrays).
        d1, d2: directions (dicts like `named_parameters()`, or models); d2 None gives a line.
        xs, ys: coordinates along d1 and d2; ys defaults to xs. Any lengths.
        batch_size: samples per forward; by default as many as the memory budget allows.
        center: the weights at (0, 0); the model's own by default.
        progress: called with the fraction done after each chunk (it may raise to cancel).
        strategy: "batched" (many grid points per forward: batched products for a chain, vmap
            otherwise), "per point" (one point at a time, its weights written in place into
            buffers made once: plain matrix products for a chain), or "auto": per point for a
            chain whose one point's forward keeps the CPU busy (`choose_strategy`), else batched.
            For a chain the first layer is computed once per grid whatever the strategy.

    Returns:
        A `Surface` whose `loss` (and `accuracy` for class labels) has shape
        (len(ys), len(xs)), or (len(xs),) for a line.
    """
    xs = np.asarray(xs, dtype=float)
    origin = as_parameters(model if center is None else center, model)
    if d2 is None:
        ys, directions, coefficients = None, [as_parameters(d1, model)], xs[:, None]
    else:
        ys = xs if ys is None else np.asarray(ys, dtype=float)
        directions = [as_parameters(d1, model), as_parameters(d2, model)]
        b, a = np.meshgrid(ys, xs, indexing="ij")  # row j is ys[j], column i is xs[i]
        coefficients = np.stack([a.ravel(), b.ravel()], axis=1)
    points = plane_points(origin, directions, coefficients)
    losses, accuracy, plan = _evaluate(model, loss, x, y, points, len(coefficients), batch_size,
                                       progress, strategy)
    shape = (len(xs),) if ys is None else (len(ys), len(xs))
    return Surface(xs=xs, ys=ys, loss=losses.reshape(shape),
                   accuracy=None if accuracy is None else accuracy.reshape(shape),
                   settings={"loss": loss_name(loss), **plan})


def linear_path(model_a: Weights, model_b: Weights, loss: LossArg, x, y,
                ts=np.linspace(0.0, 1.0, 21), batch_size: Optional[int] = None,
                model: Optional[nn.Module] = None) -> LinearPath:
    """The loss along the straight path (1 - t) a + t b, and its barrier.

    barrier = max over t in [0, 1] of L(t) - ((1 - t) L(a) + t L(b)), the bump above the
    chord between the endpoints' losses (Garipov et al. 2018, Frankle et al. 2020): about zero
    when a and b are linearly mode connected. Points of `ts` outside [0, 1] are drawn but do
    not count: beyond an endpoint the loss rises above the extended chord for any convex
    valley, which is no barrier between a and b. The endpoints are always evaluated, whatever
    `ts` holds.

    Args:
        model_a, model_b: two models of one architecture, or their weights as dicts.
        ts: the path coordinates (0 is a, 1 is b; outside [0, 1] extrapolates).
        model: the architecture to evaluate with; model_a by default (needed when both
            endpoints are dicts).
    """
    model = model if model is not None else model_a
    if not isinstance(model, nn.Module):
        raise ValueError("Give `model` (the architecture) when both endpoints are weight dicts.")
    a = as_parameters(model_a, model)
    ts = np.asarray(ts, dtype=float)
    curve = surface(model, loss, x, y, difference_direction(a, as_parameters(model_b, model)),
                    xs=np.concatenate([ts, [0.0, 1.0]]), center=a, batch_size=batch_size)
    loss_a, loss_b = curve.loss[-2:]
    all_ts = curve.xs
    between = (all_ts >= 0.0) & (all_ts <= 1.0)  # never empty: the endpoints are in all_ts
    bump = curve.loss - ((1 - all_ts) * loss_a + all_ts * loss_b)
    barrier = float(np.max(bump[between]))
    accuracy = None if curve.accuracy is None else curve.accuracy[:-2]
    return LinearPath(xs=ts, loss=curve.loss[:-2], accuracy=accuracy, barrier=barrier,
                      settings={**curve.settings, "loss_a": float(loss_a), "loss_b": float(loss_b)})


def trajectory_faithfulness(model: nn.Module, loss: LossArg, x, y, checkpoints: Union[list, dict],
                            plane: PCAPlane, batch_size: Optional[int] = None) -> Trajectory:
    """How faithful a trajectory's picture is: the loss each checkpoint really had, next to
    the loss at its projection on the plane (what the contour shows under its marker).

    The two agree when the trajectory lies in the plane (explained variance near 1); where
    they differ, the path drawn on the contour passes over ground the run never walked.

    Args:
        checkpoints: the checkpoints `plane` was computed from, in the same order.
        plane: from `pca_directions`.
    """
    measured, _ = losses_at(model, loss, x, y, checkpoints, batch_size)
    origin = as_parameters(plane.origin, model)
    directions = [as_parameters(plane.d1, model), as_parameters(plane.d2, model)]
    on_plane, _, plan = _evaluate(model, loss, x, y, plane_points(origin, directions, plane.coords),
                                  len(plane.coords), batch_size)
    return Trajectory(steps=plane.steps, coords=plane.coords,
                      explained_variance=plane.explained_variance, loss=measured,
                      loss_on_plane=on_plane, settings={"loss": loss_name(loss), **plan})
