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

Fast by construction: `surface` never sets the model's weights. It stacks the weights of many
grid points along a new leading dimension and evaluates them in one call of
`torch.func.functional_call` under `torch.func.vmap`, in chunks sized to a memory budget, with
the data kept on the model's device. A plain stack of linear layers and elementwise
activations (the app's MLP, or an `nn.Sequential` of them) skips vmap: its batched forward is
a few batched matrix products on activations kept features-first (see `linear_chain`).

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
from engine.losses import LossArg, loss_function, loss_name
from engine.models import MLP, Dense, Square
from engine.modes import evaluating
from engine.results import LinearPath, Surface, Trajectory

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
    """<u, v> over all entries, accumulated in float64."""
    return sum(float((u[k].double() * v[k].double()).sum()) for k in u)


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
    d_norm = math.sqrt(sum(float(direction[n].double().pow(2).sum()) for n in random))
    w_norm = math.sqrt(sum(float(weights[n].double().pow(2).sum()) for n in random))
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
    base = flatten(origin).double().cpu()
    deltas = torch.stack([flatten({n: torch.as_tensor(s[n]) for n in names}).double().cpu() - base
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
    h = (x.flatten(1) if chain.flattens else x).T  # (features, samples), shared by the points
    owned = False  # whether h is a tensor of ours, which may be changed in place
    for prefix, module in chain.layers:
        if type(module) not in (nn.Linear, Dense):
            if not owned:  # an activation before the first layer: keep the caller's data intact
                h = h.clone()
            h = h.relu_() if type(module) is nn.ReLU else module(h)
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
    if loss_fn is F.cross_entropy and classify:
        # cross-entropy takes the classes in dim 1: no transpose, and one call for all points
        loss = F.cross_entropy(out, y.expand(count, -1), reduction="none").mean(dim=1)
    else:
        loss = vmap(loss_fn, in_dims=(0, None))(out.transpose(1, 2), y)
    if not classify:
        return loss, out.new_zeros(count)
    predicted = out.max(dim=1).indices  # the first largest, as argmax; faster along dim 1
    return loss, (predicted == y).sum(dim=1)


# ---------------------------------------------------------------- evaluating many weights


def _evaluate(model: nn.Module, loss: LossArg, x, y, weights_of: Callable[[int, int], Params],
              n_points: int, batch_size: Optional[int] = None,
              progress: Optional[Callable[[float], None]] = None):
    """Mean loss (and accuracy) over all of (x, y) at `n_points` weight points.

    Args:
        weights_of: (start, stop) -> the weights of points start..stop-1, stacked along a
            new dim 0 (tensors of shape (stop - start, *parameter shape)); a tensor of the
            parameter's own shape is shared by all the points.
        batch_size, progress: see `surface`.

    Returns:
        (losses (n_points,), accuracies (n_points,) or None, the plan as a dict).
    """
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

    def loss_and_correct(weights, xb, yb):
        out = functional_call(model, (weights, buffers), (xb,))
        correct = (out.argmax(-1) == yb).sum() if classify else out.new_zeros(())
        return loss_fn(out, yb), correct

    shapes = {name: t.shape for name, t in model.named_parameters()}
    chain = linear_chain(model)
    if chain is not None and not (chain.flattens or x.dim() == 2):
        chain = None  # nn.Linear on inputs with more dimensions maps the last one: not a chain

    route = {"batched": True}  # vmap over points, until an operation refuses it

    def evaluate_chunk(weights: Params, count: int, xb: torch.Tensor, yb: torch.Tensor):
        """Loss and correct count at each of the `count` points whose weights are given.

        A tensor with a leading point dimension differs between points; one shaped like its
        parameter (a bias the directions leave alone) serves all of them unbatched.
        """
        batched = {k: None if t.shape == shapes[k] else 0 for k, t in weights.items()}
        if count == 1 or all(dim is None for dim in batched.values()):
            # one point, or points that coincide: one plain forward, no vmap
            single = {k: t if batched[k] is None else t[0] for k, t in weights.items()}
            loss_value, correct = loss_and_correct(single, xb, yb)
            return loss_value.expand(count), correct.expand(count)
        if chain is not None:
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
            weights = weights_of(start, stop)
            total_loss = torch.zeros(stop - start, dtype=torch.float64, device=p.device)
            total_correct = torch.zeros(stop - start, dtype=torch.float64, device=p.device)
            for s in range(0, n, batch):
                xb, yb = x[s:s + batch], y[s:s + batch]
                batch_loss, correct = evaluate_chunk(weights, stop - start, xb, yb)
                total_loss += batch_loss.double() * len(xb)  # the mean of means, weighted by size
                total_correct += correct.double()
            losses.append(total_loss / n)
            corrects.append(total_correct / n)
            if progress is not None:
                progress(stop / n_points)
    plan = {"n_samples": n, "batch_size": batch, "points_per_chunk": chunk, "device": str(p.device),
            "mode": evaluation_mode(model),
            "points_at_once": "chain" if chain is not None else "vmap" if route["batched"] else "one by one"}
    accuracy = torch.cat(corrects).cpu().numpy() if classify else None
    return torch.cat(losses).cpu().numpy(), accuracy, plan


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


def plane_points(origin: Params, directions: list[Params], coefficients: np.ndarray):
    """(start, stop) -> stacked weights origin + sum_k c[i, k] * d_k for rows i of coefficients.

    A parameter that every direction leaves alone (a bias under ignore="biasbn") is given
    once, unstacked: it is the same at every point.
    """
    first = next(iter(origin.values()))
    c = torch.as_tensor(coefficients, dtype=first.dtype, device=first.device)

    still = {name for name in origin if all(torch.count_nonzero(d[name]) == 0 for d in directions)}

    def weights_of(start: int, stop: int) -> Params:
        out = {}
        for name, w in origin.items():
            if name in still:  # zero in every direction: one tensor serves all points
                out[name] = w
                continue
            shape = (stop - start,) + (1,) * w.dim()  # one coefficient per point, broadcast
            total = w.unsqueeze(0).expand(stop - start, *w.shape)
            for k, d in enumerate(directions):
                total = total + c[start:stop, k].reshape(shape) * d[name]
            out[name] = total
        return out

    return weights_of


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
            progress: Optional[Callable[[float], None]] = None) -> Surface:
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
                                       progress)
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
