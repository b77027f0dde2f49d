"""The empirical neural tangent kernel, its eigenfunctions, and what they predict about training.

Theta(x, x') = J(x) J(x')^T, with J(x) the (O x P) Jacobian of a model's O outputs in its P
trainable parameters (Jacot et al. 2018). `empirical_ntk` computes four kinds:

| kind       | shape        | entry                                                         |
|------------|--------------|---------------------------------------------------------------|
| "full"     | (N*O, M*O)   | Theta_ab(x_n, x'_m) at row n*O + a, column m*O + b            |
| "trace"    | (N, M)       | sum_a Theta_aa(x_n, x'_m)                                     |
| "diagonal" | (N, M, O)    | Theta_aa(x_n, x'_m)                                           |
| "pseudo"   | (N, M)       | g(x_n) . g(x'_m), g = gradient of sum_a f_a(x) / sqrt(O)      |

The pseudo-NTK (Mohamadi et al. 2023) works out as (1/O) sum_{a,b} Theta_ab: the *sum* of each
O x O block divided by O, which is O times the block's mean. That constant makes the pNTK equal
the blocks' common diagonal when the full kernel is pNTK (x) I (a wide readout), so it is on
the scale of one output's kernel.

Two methods give the same numbers:

- "contraction" (the reference, for any nn.Module): per-sample Jacobians from torch.func
  (`vmap` over samples of `jacrev`), contracted block by block over chunks of samples.
- "structured" (stacks of linear layers and elementwise activations: the lab's MLP, a plain
  nn.Sequential, or `Centered` around either). For a layer z = m * h W^T + b, the derivative
  of output a in W[i, j] is m * delta_a[i] * h[j], with h the layer's input and
  delta_a = d f_a / d z. So the layer's share of the kernel is

      Theta_ab(x, x') = (m^2 h(x).h(x') + [has bias]) * delta_a(x).delta_b(x'),

  a Gram matrix of layer inputs times a Gram matrix of backpropagated deltas; the deltas of
  all O outputs come from one explicit backward pass with O columns (one column, ones(O) /
  sqrt(O), for the pseudo kernel). No P-sized Jacobian is ever formed. `Centered(model, alpha)`
  has alpha^2 times its inner model's kernel.

- "structured" on any other module graph with Linear or Conv1d/Conv2d layers (ResNets with
  BatchNorm in eval mode, residual blocks, layers outside one nn.Sequential): forward hooks keep
  each such layer's input, and one vmap of jacrev in zero perturbations of the layers' outputs
  gives their deltas; with input patches U (S positions x K, a conv's unfolded input) and deltas
  G (S x C_out) the layer's share is sum_{s,t} (U U'^T)_st (G_a G'_b^T)_st, or the per-sample
  derivatives G_a^T U formed and dotted where that is cheaper (`_HookedLayers`). Every other
  parameter (BatchNorm's scale and shift, ...) has its per-sample Jacobian from the same jacrev.

`method="auto"` takes the structured path whenever the model qualifies. Before computing, the
memory a kernel needs is estimated: the work is chunked to fit, or refused with a ValueError
that says how much would be needed.

The rest of the module reads the kernel: its parts layer by layer, `eigen` and the Nystrom
extension of eigenvectors to eigenfunctions, the Fourier content of eigenfunctions on the circle
or a line, the samples at the two ends of each eigenvector (images and signals, where no input
plane can be drawn), how much of a target lies in the top eigenvectors, the per-mode learning
curves the kernel predicts (spectral bias), and the kernel over training checkpoints.

Routines on kernels take numpy arrays or torch tensors and give back the same kind.
"""
from __future__ import annotations

import collections
import copy
import functools
import math
from contextlib import contextmanager
from typing import Iterator, NamedTuple, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jacrev, vmap

from engine import device, memory
from engine.models import MLP, Centered, Dense
from engine.modes import evaluating
from engine.results import (
    Eigenfunctions,
    ExtremeSamples,
    FourierContent,
    KernelSpectrum,
    LayerKernels,
    ModeCurves,
    TargetPower,
    TargetPowerTrajectory,
)

KINDS = ("full", "trace", "diagonal", "pseudo")
METHODS = ("auto", "structured", "contraction")
MATRIX_KINDS = ("full", "trace", "pseudo")  # the kinds that are square matrices for x2 = x1


# Activations the structured path can differentiate entry by entry (exact types only, so a
# subclass with another forward falls back to the contraction). Dropout is the identity in
# eval mode, in which every kernel is computed.
ELEMENTWISE = (
    nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.ELU, nn.Softplus,
    nn.Hardtanh, nn.Mish, nn.Identity, nn.Dropout,
)
LINEAR = (nn.Linear, Dense)


# ---------------------------------------------------------------- arrays


def as_tensor(x, like: Optional[torch.Tensor] = None) -> torch.Tensor:
    """`x` (numpy or torch) as a tensor; with `like`, on its device and, if floating, its dtype."""
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if like is None:
        return t
    return t.to(device=like.device, dtype=like.dtype if t.is_floating_point() else t.dtype)


def _to_numpy(value):
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, tuple):
        return tuple(_to_numpy(v) for v in value)
    return value


def same_kind_out(fn):
    """Decorate a torch routine so that numpy arguments give numpy results."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        got_numpy = any(isinstance(a, np.ndarray) for a in (*args, *kwargs.values()))
        result = fn(*args, **kwargs)
        return _to_numpy(result) if got_numpy else result

    return wrapper


def target_matrix(y, like: Optional[torch.Tensor] = None, rows: Optional[int] = None) -> torch.Tensor:
    """Targets as a float matrix with one row per kernel row.

    Integer labels become one-hot columns (class c -> column c); a vector becomes one column.
    For a full kernel (N*O rows) pass rows=N*O: (N, O) targets are then flattened
    sample-major into one column, matching the kernel's row n*O + a.

    Args:
        y: (N,) or (N, C) targets, or (N,) integer class labels.
        like: a tensor whose device and floating dtype the result takes.
        rows: the number of rows wanted (default: len(y)).
    """
    y = as_tensor(y)
    if not y.is_floating_point():
        y = F.one_hot(y.long().reshape(-1)).to(like.dtype if like is not None else torch.get_default_dtype())
    y = y.reshape(rows or len(y), -1)
    return y if like is None else as_tensor(y, like)


def layer_of(name: str) -> str:
    """The layer a parameter belongs to: its owning module's name ("layers.fc1.weight" -> "layers.fc1")."""
    return name.rpartition(".")[0] or name


# ---------------------------------------------------------------- the kernel


class LayerwiseNTK(NamedTuple):
    """A kernel and its parts: `layers[name]` is the kernel of that layer's parameters alone."""

    total: torch.Tensor
    layers: dict[str, torch.Tensor]


def empirical_ntk(model: nn.Module, x1, x2=None, kind: str = "trace", layerwise: bool = False,
                  method: str = "auto", dtype: Optional[torch.dtype] = None,
                  chunk: Optional[int] = None, memory_limit: Optional[float] = None,
                  rates: Optional[dict[str, float]] = None):
    """The empirical NTK of `model` between the inputs x1 and x2 (see the module docstring).

    The model is evaluated in eval mode (and left in the mode it was in); its weights are not
    changed. Only parameters with requires_grad count; buffers pass through unchanged.

    Args:
        model: any nn.Module mapping a batch of inputs to (batch, O) or (batch,) outputs.
        x1: (N, ...) inputs, numpy or torch.
        x2: (M, ...) inputs; None for x1 itself (then the kernel is symmetric and each
            block is computed once).
        kind: "full", "trace", "diagonal" or "pseudo".
        layerwise: also return each layer's part (keyed by module name, e.g. "layers.fc1").
        method: "auto", "structured" or "contraction".
        dtype: compute in this dtype (e.g. torch.float64) on a cast copy of the weights.
        chunk: samples per block; chosen from the memory budget when None.
        memory_limit: bytes the computation may use; by default `engine.memory.budget`
            (half the free memory).
        rates: a factor per parameter, keyed like `named_parameters()` (missing ones count
            1): the kernel sum_p rates[p] J_p(x) J_p(x')^T. With each parameter's learning
            rate this is the kernel of one gradient step: the outputs move by -Theta dL/df.

    Returns:
        The kernel as a tensor on the model's device, or a `LayerwiseNTK` (total, layers)
        whose layers sum to the total when layerwise is True.

    Raises:
        ValueError: for an unknown kind or method, a model the structured method cannot
            take (no Linear or Conv layer), a kernel too large for the memory budget (with the size it needs), or
            rates for unknown parameters or not finite and at least 0.
    """
    _check_choice("kind", kind, KINDS)
    _check_choice("method", method, METHODS)
    _check_dtype(model, dtype)
    with evaluating(model):  # fixed dropout and batch-norm statistics
        params, constants = _split_state(model, dtype)
        rates = _checked_rates(rates, params)
        like = next(iter(params.values()))
        x1 = as_tensor(x1, like)
        x2 = None if x2 is None else as_tensor(x2, like)
        source = _feature_source(model, params, constants, x1, method, kind, rates)
        n_outputs = _output_count(model, params, constants, x1)
        chunk, keep_columns = _plan(source, x1, x2, kind, n_outputs, layerwise, chunk, memory_limit)
        parts = _assemble(source, x1, x2, kind, n_outputs, chunk, layerwise, keep_columns)
    parts = {name: _public_layout(k, kind) for name, k in parts.items()}
    if not layerwise:
        return parts["total"]
    return LayerwiseNTK(sum(parts.values()), parts)


def _check_choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"The NTK {what} must be one of {', '.join(choices)}, not '{value}'.")


def _check_dtype(model: nn.Module, dtype: Optional[torch.dtype]) -> None:
    """Refuse float64 on a device that has none (Apple's MPS), with what to do instead."""
    where = next((t.device for t in model.parameters()), torch.device("cpu"))
    if dtype == torch.float64 and not device.supports_float64(where):
        raise ValueError(f"The model's device ({where.type}) has no float64: compute the NTK in float32 "
                         f"(leave dtype unset), or move the model to the CPU for float64.")


def _checked_rates(rates: Optional[dict], params: dict) -> dict[str, float]:
    """Every trainable parameter's factor (1 unless given), or a ValueError that says which is wrong."""
    rates = dict(rates or {})
    unknown = sorted(set(rates) - set(params))
    if unknown:
        raise ValueError(f"The NTK rates name parameters the model does not train: {', '.join(unknown)}.")
    for name, rate in rates.items():
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate < 0:
            raise ValueError(f"The NTK rate of {name} must be a finite number of at least 0, not {rate!r}.")
    return {name: float(rates.get(name, 1.0)) for name in params}


def _split_state(model: nn.Module, dtype: Optional[torch.dtype]):
    """Detached copies of the trainable parameters, and of everything else the forward reads."""

    def cast(t: torch.Tensor) -> torch.Tensor:
        t = t.detach()
        return t.to(dtype) if dtype is not None and t.is_floating_point() else t

    params = {n: cast(p) for n, p in model.named_parameters() if p.requires_grad}
    constants = {n: cast(p) for n, p in model.named_parameters() if not p.requires_grad}
    constants.update({n: cast(b) for n, b in model.named_buffers()})
    if not params:
        raise ValueError("The model has no trainable parameters, so its NTK is zero.")
    return params, constants


@torch.no_grad()
def _output_count(model, params, constants, x) -> int:
    return functional_call(model, (params, constants), (x[:1],)).reshape(1, -1).shape[1]


def _feature_source(model, params, constants, x, method, kind, rates):
    """The structured source when asked or possible, else the Jacobian contraction.

    A stack of linear layers takes `_LinearStack` (no autograd at all); any other model with
    Linear or Conv layers takes `_HookedLayers`; a model without them the contraction.
    """
    if method == "contraction":
        return _Jacobians(model, params, constants, kind, rates)
    stack = _linear_stack(model, x)
    if stack is not None:
        layers, scale, flatten = stack
        return _LinearStack(layers, scale, flatten, params, constants, kind, rates)
    hooked = _hookable_layers(model, params, constants, x)
    if hooked:
        return _HookedLayers(model, hooked, params, constants, kind, rates, x)
    if method == "structured":
        raise ValueError(
            "The structured NTK needs Linear or Conv1d/Conv2d layers with trainable weights, "
            "each called once per forward; use method='contraction' for this model."
        )
    return _Jacobians(model, params, constants, kind, rates)


def _directions(kind: str, n_outputs: int) -> int:
    """How many output directions a source differentiates: the O unit vectors, or for the
    pseudo kernel the single direction ones(O) / sqrt(O).

    The pNTK is g(x).g(x') with g the gradient of sum_a f_a / sqrt(O), so one backward
    column gives it; summing the O columns' blocks afterwards would pay O of them.
    """
    return 1 if kind == "pseudo" else n_outputs


# -- the two feature sources: per-sample derivatives of a chunk, and the blocks they make


class _Jacobians:
    """Per-sample Jacobians of the outputs in every parameter (the reference method)."""

    def __init__(self, model: nn.Module, params: dict, constants: dict, kind: str, rates: dict):
        self.params = params
        self.rates = rates
        self.groups = sorted({layer_of(n) for n in params})

        def outputs(p, x):  # one sample's outputs as a flat (O,) vector
            return functional_call(model, (p, constants), (x.unsqueeze(0),)).reshape(-1)

        def summed_output(p, x):  # the pseudo kernel's one direction: sum_a f_a / sqrt(O), as (1,)
            f = outputs(p, x)
            return f.sum(0, keepdim=True) / math.sqrt(f.shape[0])

        self._jacobian = vmap(jacrev(summed_output if kind == "pseudo" else outputs), in_dims=(None, 0))

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """name -> (n, C, size of the parameter) Jacobian of the chunk's C output directions
        (see `_directions`)."""
        jacobians = self._jacobian(self.params, x)
        return {name: j.reshape(j.shape[0], j.shape[1], -1) for name, j in jacobians.items()}

    def blocks(self, fa: dict, fb: dict, kind: str) -> dict[str, torch.Tensor]:
        """layer -> kernel block between two chunks, summed over the layer's parameters."""
        out: dict[str, torch.Tensor] = {}
        for name in fa:
            block = _contract(fa[name], fb[name], kind)
            if self.rates[name] != 1.0:
                block = self.rates[name] * block
            group = layer_of(name)
            out[group] = out[group] + block if group in out else block
        return out

    def floats_per_sample(self, directions: int) -> int:
        # The Jacobian itself plus about as much for jacrev's intermediates (an estimate).
        return 2 * directions * sum(p.numel() for p in self.params.values())

    def floats_per_pair(self, directions: int) -> int:
        return 0  # blocks are dot products of the kept features


class _LinearStack:
    """Layer inputs and backpropagated deltas of linear layers and elementwise activations."""

    def __init__(self, layers: list, scale: float, flatten: bool, params: dict, constants: dict, kind: str,
                 rates: dict):
        self.layers = layers  # [(module name, module)] in forward order
        self.scale = scale
        self.flatten = flatten
        self.pseudo = kind == "pseudo"
        self.tensors = {**constants, **params}
        self.rates = rates  # every trainable parameter's factor; frozen ones are absent
        self.groups = [name for name, m in layers if isinstance(m, LINEAR)]

    def _linear(self, name: str, module: nn.Linear, h: torch.Tensor) -> torch.Tensor:
        bias = self.tensors.get(f"{name}.bias")
        z = _multiplier(module) * (h @ self.tensors[f"{name}.weight"].T)
        return z + bias if bias is not None else z

    def features(self, x: torch.Tensor) -> list[tuple]:
        """Per linear layer: (name, input h (n, fan_in), deltas (n, C, fan_out), weight factor,
        bias factor) for the C output directions of `_directions`. A factor is zero for a
        frozen or missing parameter."""
        h = x.flatten(1) if self.flatten else x
        tape = []  # forward: linear layers' inputs, activations' slopes
        for name, module in self.layers:
            if isinstance(module, LINEAR):
                tape.append((name, module, h))
                h = self._linear(name, module, h)
            else:
                h, slope = _value_and_slope(module, h)
                tape.append((None, None, slope))
        delta = self._output_directions(h.shape[1], h).expand(len(h), -1, -1)
        features = []
        for name, module, saved in reversed(tape):  # backward, all directions at once
            if module is None:
                delta = delta * saved.unsqueeze(1)
                continue
            features.append((name, saved, delta, *self._factors(name, module)))
            delta = _multiplier(module) * (delta @ self.tensors[f"{name}.weight"])
        return features[::-1]

    def _output_directions(self, n_outputs: int, like: torch.Tensor) -> torch.Tensor:
        """(C, O): the rows are the output directions v whose derivatives d(v . f) are wanted."""
        if self.pseudo:
            return torch.full((1, n_outputs), n_outputs**-0.5, dtype=like.dtype, device=like.device)
        return torch.eye(n_outputs, dtype=like.dtype, device=like.device)

    def _factors(self, name: str, module: nn.Linear) -> tuple[float, float]:
        weight = _multiplier(module) ** 2 * self.rates.get(f"{name}.weight", 0.0)
        bias = self.rates.get(f"{name}.bias", 0.0)
        return weight, bias

    def blocks(self, fa: list, fb: list, kind: str) -> dict[str, torch.Tensor]:
        """layer -> (weight factor * input Gram + bias factor) times the delta kernel.

        The factors go into the (n, m) Gram matrix, which then multiplies the delta kernel
        (up to O^2 times larger) in place: one pass over the block.
        """
        out = {}
        for (name, ha, da, weight, bias), (_, hb, db, _, _) in zip(fa, fb):
            gram = self.scale**2 * (weight * (ha @ hb.T) + bias)
            out[name] = _times_gram(_contract(da, db, kind), gram, kind)
        return out

    def floats_per_sample(self, directions: int) -> int:
        # Inputs, deltas and slopes of each layer, twice over for temporaries (an estimate).
        sizes = [(m.in_features, m.out_features) for _, m in self.layers if isinstance(m, LINEAR)]
        return 2 * sum(fan_in + 2 * directions * fan_out for fan_in, fan_out in sizes)

    def floats_per_pair(self, directions: int) -> int:
        return 0  # blocks are products of Gram matrices of the kept features


# -- any module graph: Linear and Conv layers through hooks, every other parameter by jacrev

CONV = (nn.Conv1d, nn.Conv2d)
HOOKED = LINEAR + CONV


def _parameter_name(module_name: str, attribute: str) -> str:
    return f"{module_name}.{attribute}" if module_name else attribute


def _hookable_layers(model: nn.Module, params: dict, constants: dict, x: torch.Tensor) -> list:
    """[(name, module)]: the Linear and Conv layers whose kernels `_HookedLayers` forms from
    their inputs and output deltas.

    Exact types only (a subclass may compute something else), a trainable weight shared with
    no other module (a tied weight's derivative has a term from each user), convs with one
    group and zero padding given as numbers, and one call per forward (a layer called twice
    has two inputs per sample; calls without autograd, such as `Centered`'s frozen copy, do
    not count). The rest go through jacrev.
    """
    owners = collections.Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))
    candidates = {name: m for name, m in model.named_modules()
                  if type(m) in HOOKED and _parameter_name(name, "weight") in params and _plain_conv(m)
                  and all(owners[id(p)] == 1 for p in m.parameters(recurse=False))}
    calls = dict.fromkeys(candidates, 0)

    def counter(name):
        def hook(module, args, output):
            calls[name] += torch.is_grad_enabled()
        return hook

    handles = [m.register_forward_hook(counter(name)) for name, m in candidates.items()]
    try:
        with torch.enable_grad():
            functional_call(model, (params, constants), (x[:1],))
    finally:
        for handle in handles:
            handle.remove()
    return [(name, m) for name, m in candidates.items() if calls[name] == 1]


def _plain_conv(module: nn.Module) -> bool:
    """Whether a layer is a Linear or a conv whose input unfolds with F.unfold as it convolves."""
    if not isinstance(module, CONV):
        return True
    return module.groups == 1 and module.padding_mode == "zeros" and not isinstance(module.padding, str)


def _unfolded(conv: nn.Module, a: torch.Tensor) -> torch.Tensor:
    """(n, S, K): the conv's input patches, one row per output position, so that the output
    is patches @ W.reshape(C_out, K)^T (a Conv1d is a Conv2d of height 1)."""
    if isinstance(conv, nn.Conv1d):
        patches = F.unfold(a.unsqueeze(2), (1, conv.kernel_size[0]), dilation=(1, conv.dilation[0]),
                           padding=(0, conv.padding[0]), stride=(1, conv.stride[0]))
    else:
        patches = F.unfold(a, conv.kernel_size, dilation=conv.dilation, padding=conv.padding, stride=conv.stride)
    return patches.transpose(1, 2)


class _Taps:
    """Forward hooks that, while armed, keep each hooked layer's input and add a perturbation
    to its output. The perturbation is zero, so the forward is unchanged, and the derivative
    of the outputs in it is the layer's delta d f / d z."""

    def __init__(self, layers: list):
        self.layers = layers
        self.perturbations: Optional[dict] = None
        self.inputs: dict[str, torch.Tensor] = {}

    @contextmanager
    def attached(self) -> Iterator[None]:
        handles = [m.register_forward_hook(self._hook(name)) for name, m in self.layers]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _hook(self, name: str):
        def hook(module, args, output):
            if self.perturbations is None or not torch.is_grad_enabled():
                return None
            self.inputs[name] = args[0]
            return output + self.perturbations[name]
        return hook


class _LayerShape(NamedTuple):
    """A hooked layer's sizes for one sample: S output positions, K inputs per position (the
    patch size of a conv), C_out outputs per position, and the per-sample output's shape."""

    positions: int
    patch: int
    channels: int
    output_shape: tuple


class _HookedLayers:
    """Per-sample inputs and output deltas of Linear and Conv layers in any module graph,
    and per-sample Jacobians of every other parameter (BatchNorm's affine, biases of other
    modules, ...).

    One vmap over samples of jacrev in (the other parameters, zero perturbations of the
    hooked layers' outputs) gives both: C backward columns per sample (O, or 1 for pseudo),
    and no P-sized Jacobian of a hooked weight. A layer with input patches U_i (S positions
    x K) and deltas G_ic (S x C_out) has the per-sample weight derivative G_ic^T U_i, so its
    kernel entry is

        <G_ic^T U_i, G_jd^T U_j>_F = sum_{s,t} (U_i U_j^T)_st (G_ic G_jd^T)_st,

    a Linear being the case S = 1 (or its positions, when it acts on (n, ..., d)). Each layer
    takes the cheaper, by a count of multiply-adds, of forming the derivatives (C x P per
    sample, then dot products) and this Gram form (S x S per pair of samples): `routes`.
    """

    def __init__(self, model: nn.Module, layers: list, params: dict, constants: dict, kind: str, rates: dict,
                 x: torch.Tensor):
        self.layers = dict(layers)
        self.kind = kind
        self.rates = rates
        hooked = {_parameter_name(name, a) for name in self.layers for a in ("weight", "bias")}
        self.fixed = {n: p for n, p in params.items() if n in hooked}
        self.rest = {n: p for n, p in params.items() if n not in hooked}
        self.groups = sorted({layer_of(n) for n in params})
        self.shapes = self._probe(model, constants, x)
        self.zeros = {name: x.new_zeros(shape.output_shape) for name, shape in self.shapes.items()}
        self.n_samples = len(x)
        self.routes: dict[str, str] = {}  # layer -> "derivatives" or "gram", set once O is known
        taps = _Taps(layers)
        self.taps = taps
        pseudo = kind == "pseudo"

        def outputs(rest, perturbations, sample):  # one sample's outputs (O,), or (1,) for pseudo
            taps.perturbations, taps.inputs = perturbations, {}
            try:
                f = functional_call(model, ({**self.fixed, **rest}, constants), (sample.unsqueeze(0),)).reshape(-1)
            finally:
                taps.perturbations = None
            if pseudo:
                f = f.sum(0, keepdim=True) / math.sqrt(f.shape[0])
            return f, dict(taps.inputs)

        self._derivatives = vmap(jacrev(outputs, argnums=(0, 1), has_aux=True), in_dims=(None, None, 0))

    def _probe(self, model: nn.Module, constants: dict, x: torch.Tensor) -> dict[str, _LayerShape]:
        """Each hooked layer's sizes, from a forward on one sample."""
        shapes = {}

        def recorder(name):
            def hook(module, args, output):
                if torch.is_grad_enabled():
                    shapes[name] = _layer_shape(module, args[0], output)
            return hook

        handles = [m.register_forward_hook(recorder(name)) for name, m in self.layers.items()]
        try:
            with torch.enable_grad():
                functional_call(model, ({**self.fixed, **self.rest}, constants), (x[:1],))
        finally:
            for handle in handles:
                handle.remove()
        return shapes

    def _route(self, name: str, directions: int) -> str:
        if name not in self.routes:
            self.routes[name] = _cheaper_route(self.shapes[name], self.n_samples, directions, self.kind)
        return self.routes[name]

    def features(self, x: torch.Tensor) -> dict[str, list]:
        """layer -> its parts: ("derivatives", (n, C, F) per-sample derivatives, factor) or
        ("gram", patches (n, S, K), deltas (n, C, S, C_out), factor)."""
        with self.taps.attached():
            (rest, deltas), inputs = self._derivatives(self.rest, self.zeros, x)
        parts: dict[str, list] = {}
        for name, jacobian in rest.items():
            parts.setdefault(layer_of(name), []).append(
                ("derivatives", jacobian.reshape(*jacobian.shape[:2], -1), self.rates[name]))
        for name, module in self.layers.items():
            patches, g = self._patches_and_deltas(name, module, inputs[name], deltas[name])
            layer = parts.setdefault(name, [])
            bias = _parameter_name(name, "bias")
            if bias in self.rates:
                layer.append(("derivatives", g.sum(2), self.rates[bias]))
            factor = _multiplier(module) ** 2 * self.rates[_parameter_name(name, "weight")]
            if self._route(name, g.shape[1]) == "gram":
                layer.append(("gram", patches, g, factor))
            else:
                derivatives = torch.einsum("ncso,nsk->ncok", g, patches)
                layer.append(("derivatives", derivatives.reshape(*derivatives.shape[:2], -1), factor))
        return parts

    def _patches_and_deltas(self, name, module, a, g):
        """(n, S, K) input patches and (n, C, S, C_out) deltas of a layer, from its per-sample
        input (n, 1, ...) and the Jacobian (n, C, 1, ...) of the outputs in its output."""
        s, k, c_out, _ = self.shapes[name]
        n, c = g.shape[:2]
        a = a.squeeze(1)
        if isinstance(module, CONV):
            return _unfolded(module, a), g.reshape(n, c, c_out, s).transpose(2, 3)
        return a.reshape(n, s, k), g.reshape(n, c, s, c_out)

    def blocks(self, fa: dict, fb: dict, kind: str) -> dict[str, torch.Tensor]:
        """layer -> kernel block between two chunks, summed over the layer's parts."""
        out = {}
        for layer, parts in fa.items():
            for pa, pb in zip(parts, fb[layer]):
                factor = pa[-1]
                if pa[0] == "gram":
                    block = _gram_block(pa[1], pa[2], pb[1], pb[2], kind)
                else:
                    block = _contract(pa[1], pb[1], kind)
                block = block if factor == 1.0 else factor * block
                out[layer] = out[layer] + block if layer in out else block
        return out

    def floats_per_sample(self, directions: int) -> int:
        # jacrev's deltas and the other parameters' Jacobians, twice over for its
        # intermediates, plus each layer's kept input and features (an estimate).
        c = directions
        total = 2 * c * sum(p.numel() for p in self.rest.values())
        for name, (s, k, c_out, output_shape) in self.shapes.items():
            total += 2 * c * math.prod(output_shape) + s * k + c * c_out
            total += s * k + c * s * c_out if self._route(name, c) == "gram" else c * c_out * k
        return total

    def floats_per_pair(self, directions: int) -> int:
        # The Gram form's (S x S) products of one layer at a time, per pair of samples.
        c, largest = directions, 0
        for name, (s, k, c_out, _) in self.shapes.items():
            if self._route(name, c) == "gram":
                largest = max(largest, s * s + (s * s if self.kind in ("trace", "pseudo") else c * s * c_out))
        return largest


def _cheaper_route(shape: _LayerShape, n: int, directions: int, kind: str) -> str:
    """"gram" when the Gram form costs fewer multiply-adds over an n x n kernel than forming
    each sample's weight derivatives (C x P) and their dot products, else "derivatives"."""
    s, k, c_out, _ = shape
    c = directions
    pairs = c * c if kind == "full" else c  # direction pairs per pair of samples
    p = c_out * k
    derivatives = n * c * s * p + n * n * pairs * p
    gram = n * n * (s * s * k + s * s * c * c_out + (pairs * s * c_out if kind in ("full", "diagonal") else 0))
    return "gram" if gram < derivatives else "derivatives"


def _layer_shape(module: nn.Module, a: torch.Tensor, z: torch.Tensor) -> _LayerShape:
    """The sizes of a hooked layer's call on a batch of one: input a, output z."""
    if isinstance(module, CONV):
        positions = math.prod(z.shape[2:])
        return _LayerShape(positions, module.in_channels * math.prod(module.kernel_size), module.out_channels,
                           tuple(z.shape))
    positions = math.prod(a.shape[1:-1])  # a Linear on (1, ..., d) shares its weight across positions
    return _LayerShape(positions, module.in_features, module.out_features, tuple(z.shape))


def _gram_block(patches_a, deltas_a, patches_b, deltas_b, kind: str) -> torch.Tensor:
    """sum_{s,t} (U_i U_j^T)_st (G_ic G_jd^T)_st for chunks of patches U (n, S, K) and deltas
    G (n, C, S, C_out), in the internal layout of `kind` (see `_contract`)."""
    patch_gram = torch.einsum("isk,jtk->ijst", patches_a, patches_b)
    if kind in ("trace", "pseudo"):  # summed over the directions before meeting the patches
        return (patch_gram * torch.einsum("icso,jcto->ijst", deltas_a, deltas_b)).sum((2, 3))
    weighted = torch.einsum("ijst,jdto->ijdso", patch_gram, deltas_b)
    if kind == "diagonal":
        return torch.einsum("icso,ijcso->ijc", deltas_a, weighted)
    return torch.einsum("icso,ijdso->icjd", deltas_a, weighted)


def _value_and_slope(activation: nn.Module, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """phi(z) and phi'(z) of an elementwise activation.

    Its Jacobian is diagonal, so the vector-Jacobian product with ones is the slope. Plain
    autograd rather than torch.func, whose first use imports torch._dynamo (seconds).
    """
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        value = activation(z)
        (slope,) = torch.autograd.grad(value, z, torch.ones_like(value))
    return value.detach(), slope


def _multiplier(module: nn.Linear) -> float:
    return float(getattr(module, "multiplier", 1.0))


def _linear_stack(model: nn.Module, x: torch.Tensor):
    """(layers, output scale, flatten inputs) if the structured path applies, else None."""
    scale, prefix = 1.0, ""
    while isinstance(model, Centered):  # alpha * (f(w) - f(w0)): alpha times f's derivatives
        scale, prefix, model = scale * model.alpha, prefix + "model.", model.model
    if type(model) is MLP:
        sequence, flatten, prefix = model.layers, True, prefix + "layers."
    elif type(model) is nn.Sequential:
        sequence, flatten = model, False
    else:
        return None
    layers = list(sequence.named_children())
    if layers and _flattens_samples(layers[0][1]):
        layers, flatten = layers[1:], True
    if not any(type(m) in LINEAR for _, m in layers):
        return None
    if not all(type(m) in LINEAR + ELEMENTWISE for _, m in layers):
        return None
    if not flatten and x.ndim != 2:
        return None  # a Linear on (n, ..., d) shares weights across positions
    return [(prefix + name, m) for name, m in layers], scale, flatten


def structured(model: nn.Module, x) -> bool:
    """Whether `empirical_ntk` takes the structured path for this model and these inputs."""
    return _linear_stack(model, as_tensor(x)) is not None


def _flattens_samples(module: nn.Module) -> bool:
    """Whether a module is nn.Flatten turning (n, ...) into (n, features)."""
    return type(module) is nn.Flatten and module.start_dim == 1 and module.end_dim == -1


# -- contracting derivatives into kernel blocks


def _contract(a: torch.Tensor, b: torch.Tensor, kind: str) -> torch.Tensor:
    """The kernel block of per-sample derivatives a (n, C, F) and b (m, C, F) of C output
    directions (see `_directions`).

    Internal layouts: full (n, O, m, O), diagonal (n, m, O), trace and pseudo (n, m).
    """
    n, o, m = a.shape[0], a.shape[1], b.shape[0]
    if kind == "full":
        return (a.reshape(n * o, -1) @ b.reshape(m * o, -1).T).reshape(n, o, m, o)
    if kind == "diagonal":
        return (a.transpose(0, 1) @ b.permute(1, 2, 0)).permute(1, 2, 0)
    # trace sums over the O directions; pseudo has its one direction, sum_a f_a / sqrt(O)
    return a.reshape(n, -1) @ b.reshape(m, -1).T


def _times_gram(block: torch.Tensor, gram: torch.Tensor, kind: str) -> torch.Tensor:
    """Multiply a fresh kernel block in place by an (n, m) Gram matrix, sample pair by sample pair."""
    if kind == "full":
        return block.mul_(gram[:, None, :, None])
    if kind == "diagonal":
        return block.mul_(gram[:, :, None])
    return block.mul_(gram)


def _summed(blocks: list[torch.Tensor]) -> torch.Tensor:
    """The sum of fresh blocks, accumulated in place into the first (none is used again):
    a full kernel's blocks are large, and each new one is memory to allocate and fill."""
    total = blocks[0]
    for block in blocks[1:]:
        total += block
    return total


def _zeros(kind: str, n: int, m: int, n_outputs: int, like: torch.Tensor) -> torch.Tensor:
    shape = {"full": (n, n_outputs, m, n_outputs), "diagonal": (n, m, n_outputs)}.get(kind, (n, m))
    return torch.zeros(shape, dtype=like.dtype, device=like.device)


def _put(kernel: torch.Tensor, block: torch.Tensor, kind: str, rows: slice, cols: slice) -> None:
    if kind == "full":
        kernel[rows, :, cols, :] = block
    else:
        kernel[rows, cols] = block


def _transposed(block: torch.Tensor, kind: str) -> torch.Tensor:
    """The block of (x', x) from the block of (x, x')."""
    if kind == "full":
        return block.permute(2, 3, 0, 1)
    if kind == "diagonal":
        return block.permute(1, 0, 2)
    return block.T


def _public_layout(kernel: torch.Tensor, kind: str) -> torch.Tensor:
    """Full kernels become (N*O, M*O) matrices, sample-major."""
    if kind == "full":
        n, o, m, _ = kernel.shape
        return kernel.reshape(n * o, m * o)
    return kernel


def _slices(n: int, chunk: int) -> list[slice]:
    return [slice(start, min(start + chunk, n)) for start in range(0, n, chunk)]


def _assemble(source, x1, x2, kind, n_outputs, chunk, layerwise, keep_columns) -> dict:
    """Fill the kernel (or one per layer) block by block over chunks of samples.

    For x2 None only the blocks on and above the diagonal are computed; the rest are their
    transposes. Column chunks' features are kept between rows when `keep_columns`.
    """
    symmetric = x2 is None
    x2 = x1 if symmetric else x2
    rows, cols = _slices(len(x1), chunk), _slices(len(x2), chunk)
    kept: dict[int, object] = {}

    def column_features(j: int):
        if j not in kept:
            features = source.features(x2[cols[j]])
            if not keep_columns:
                return features
            kept[j] = features
        return kept[j]

    kernels: dict[str, torch.Tensor] = {}
    for i, r in enumerate(rows):
        fr = column_features(i) if symmetric else source.features(x1[r])
        for j, c in enumerate(cols):
            if symmetric and j < i:
                continue
            fc = fr if symmetric and j == i else column_features(j)
            blocks = source.blocks(fr, fc, kind)
            if not layerwise:
                blocks = {"total": _summed(list(blocks.values()))}
            if len(rows) == len(cols) == 1:  # the one block is the whole kernel
                return {name: block.contiguous() for name, block in blocks.items()}
            for name, block in blocks.items():
                kernel = kernels.setdefault(name, _zeros(kind, len(x1), len(x2), n_outputs, block))
                _put(kernel, block, kind, r, c)
                if symmetric and j > i:
                    _put(kernel, _transposed(block, kind), kind, c, r)
    return kernels


# -- memory


def _entries(kind: str, n_outputs: int) -> int:
    """Kernel entries per pair of samples."""
    return {"full": n_outputs**2, "diagonal": n_outputs}.get(kind, 1)


def _gb(n_bytes: float) -> str:
    return f"{n_bytes / 1e9:.2g}"


def _plan(source, x1, x2, kind, n_outputs, layerwise, chunk, memory_limit) -> tuple[int, bool]:
    """The chunk size, and whether column features can be kept, within the memory budget."""
    n, m = len(x1), len(x1) if x2 is None else len(x2)
    budget = float(memory_limit) if memory_limit is not None else float(memory.budget(x1.device))
    item = x1.element_size()
    copies = len(source.groups) + 1 if layerwise else 1
    kernel_bytes = n * m * _entries(kind, n_outputs) * item * copies
    if kernel_bytes > budget:
        raise ValueError(
            f"This kernel needs about {_gb(kernel_bytes)} GB ({n} x {m} samples, kind '{kind}', "
            f"{n_outputs} outputs{', per layer' if layerwise else ''}), more than the "
            f"{_gb(budget)} GB it may use. Use kind 'trace' or 'pseudo', fewer samples, or a "
            "larger memory_limit."
        )
    sample_bytes = source.floats_per_sample(_directions(kind, n_outputs)) * item
    pair_bytes = source.floats_per_pair(_directions(kind, n_outputs)) * item

    def work(c: int) -> float:  # features of a row and a column chunk, and a few blocks
        return kernel_bytes + 2 * c * sample_bytes + c * c * (3 * _entries(kind, n_outputs) * item + pair_bytes)

    if chunk is None:
        chunk = max(n, m)
        while chunk > 1 and work(chunk) > budget:
            chunk = (chunk + 1) // 2
    if work(chunk) > budget:
        raise ValueError(
            f"Even one sample's derivatives need about {_gb(sample_bytes)} GB besides the "
            f"{_gb(kernel_bytes)} GB kernel, more than the {_gb(budget)} GB it may use. Use "
            "a smaller model or kind, fewer samples, or a larger memory_limit."
        )
    keep_columns = work(chunk) + m * sample_bytes <= budget
    return int(chunk), keep_columns


# ---------------------------------------------------------------- eigenvectors and eigenfunctions


@same_kind_out
def eigen(K):
    """Eigenvalues (descending) and unit eigenvectors (as columns) of a symmetric kernel.

    K is symmetrised, (K + K^T) / 2, to remove rounding asymmetry. Each eigenvector's sign is
    chosen so that its largest-magnitude entry is positive, so the eigenvectors of nearby
    kernels compare.

    Args:
        K: an (n, n) kernel matrix (kinds "trace", "pseudo" or "full"), numpy or torch.

    Returns:
        (values (n,), vectors (n, n)), numpy for numpy input.
    """
    K = as_tensor(K)
    if K.ndim != 2 or K.shape[0] != K.shape[1]:
        raise ValueError(
            "eigen needs a square kernel matrix (kind 'trace', 'pseudo' or 'full'), "
            f"not shape {tuple(K.shape)}."
        )
    values, vectors = torch.linalg.eigh((K + K.T) / 2)
    vectors = vectors.flip(1)
    peak = vectors.abs().argmax(0)
    signs = torch.sign(vectors[peak, torch.arange(vectors.shape[1], device=K.device)])
    return values.flip(0), vectors * torch.where(signs == 0, 1.0, signs).to(vectors.dtype)


@same_kind_out
def nystrom(K_new_train, eigvecs, eigvals):
    """Extend kernel eigenvectors to eigenfunctions at new points (the Nystrom method).

    phi_i(x) = sum_j K(x, x_j) u_ji / lambda_i, so that phi_i(x_j) = u_ji at the training
    points: the eigenfunctions are scaled like the unit eigenvectors.

    Args:
        K_new_train: (M, N) kernel between the new points and the training points.
        eigvecs: (N, k) eigenvectors of the training kernel, as columns.
        eigvals: (k,) their eigenvalues, all positive.

    Returns:
        (M, k): phi_i at each new point.
    """
    K = as_tensor(K_new_train)
    vectors, values = as_tensor(eigvecs, like=K), as_tensor(eigvals, like=K)
    if (values <= 0).any():
        raise ValueError("The Nystrom extension divides by the eigenvalues; pass only positive ones "
                         "(the top of the spectrum).")
    return K @ vectors / values


def eigenfunctions(model: nn.Module, x_train, x_eval, k: int, kind: str = "trace", **ntk_options):
    """The top-k eigenvalues of the NTK on x_train and their eigenfunctions at x_eval.

    Args:
        model: the network.
        x_train: (N, ...) inputs whose kernel is decomposed.
        x_eval: (M, ...) inputs where the eigenfunctions are evaluated (Nystrom).
        k: how many eigenfunctions.
        kind: "trace", "pseudo" or "full" (then rows are (point, output) pairs).
        **ntk_options: passed to `empirical_ntk` (method, dtype, chunk, memory_limit).

    Returns:
        (values (k,), functions (M, k)) tensors.
    """
    _check_choice("kind", kind, MATRIX_KINDS)
    values, vectors = eigen(empirical_ntk(model, x_train, kind=kind, **ntk_options))
    values, vectors = values[:k], vectors[:, :k]
    return values, nystrom(empirical_ntk(model, x_eval, x_train, kind=kind, **ntk_options), vectors, values)


def eigenfunction_map(model: nn.Module, x_train, k: int, grid_x, grid_y=None, *, on_circle: bool = False,
                      kind: str = "trace", **ntk_options) -> Eigenfunctions:
    """The top-k eigenfunctions over a line, the unit circle or a plane, for the figures.

    Args:
        model: the network (one or two input features).
        x_train: (N, D) training inputs.
        k: how many eigenfunctions.
        grid_x: coordinates along the line, angles on the circle, or the plane's first axis.
        grid_y: the plane's second axis (two input features), None otherwise.
        on_circle: evaluate at (cos t, sin t) for the angles t in grid_x.
        kind: "trace" or "pseudo".
        **ntk_options: passed to `empirical_ntk`.
    """
    _check_choice("kind", kind, ("trace", "pseudo"))
    grid_x = np.asarray(grid_x, dtype=np.float64)
    if on_circle:
        points, label = np.stack([np.cos(grid_x), np.sin(grid_x)], axis=1), "angle"
    elif grid_y is not None:
        xx, yy = np.meshgrid(grid_x, np.asarray(grid_y, dtype=np.float64))
        points, label = np.stack([xx.ravel(), yy.ravel()], axis=1), "x1"
    else:
        points, label = grid_x[:, None], "x"
    values, phi = eigenfunctions(model, x_train, points, k, kind, **ntk_options)
    shape = (len(grid_y), len(grid_x)) if grid_y is not None and not on_circle else (len(grid_x),)
    functions = _to_numpy(phi).T.reshape(-1, *shape)
    return Eigenfunctions(_to_numpy(values), functions, grid_x,
                          None if grid_y is None or on_circle else np.asarray(grid_y, dtype=np.float64),
                          label, kind)


def kernel_spectrum(model: nn.Module, x, kind: str = "trace", **ntk_options) -> KernelSpectrum:
    """The eigenvalues of the NTK on x, largest first, for the figures."""
    _check_choice("kind", kind, MATRIX_KINDS)
    values, _ = eigen(empirical_ntk(model, x, kind=kind, **ntk_options))
    return KernelSpectrum(_to_numpy(values), kind)


def layer_kernels(model: nn.Module, x, kind: str = "trace", **ntk_options) -> LayerKernels:
    """Each layer's part of the NTK on x (its trace and its spectrum) beside the whole kernel's.

    The kernel is a sum over parameters, so it splits into one kernel per layer, K = sum_l K_l;
    the shares tr(K_l) / tr(K) say which layers' weights the kernel's geometry comes from.

    Args:
        model: the network.
        x: (N, ...) inputs.
        kind: "trace", "pseudo" or "full".
        **ntk_options: passed to `empirical_ntk`.
    """
    _check_choice("kind", kind, MATRIX_KINDS)
    total, layers = empirical_ntk(model, x, kind=kind, layerwise=True, **ntk_options)
    return LayerKernels(
        layers=list(layers),
        traces=np.array([float(K.trace()) for K in layers.values()]),
        values=np.stack([_to_numpy(_eigenvalues(K)) for K in layers.values()]),
        total_values=_to_numpy(_eigenvalues(total)),
        kind=kind,
    )


def _eigenvalues(K: torch.Tensor) -> torch.Tensor:
    """The eigenvalues of a symmetric kernel, largest first."""
    return torch.linalg.eigvalsh((K + K.T) / 2).flip(0)


# ---------------------------------------------------------------- eigenvectors over samples (images, signals)


@same_kind_out
def extreme_indices(eigvecs, per_side: int):
    """The rows of the most negative and the most positive entries of each eigenvector.

    Args:
        eigvecs: (n, k) eigenvectors as columns.
        per_side: m, how many rows at each end (1 to n // 2).

    Returns:
        (k, 2m) row indices: for each eigenvector its m most negative entries (most negative
        first), then its m most positive (most positive last).
    """
    vectors = as_tensor(eigvecs)
    n = vectors.shape[0]
    if not 1 <= per_side <= n // 2:
        raise ValueError(f"Each end of an eigenvector over {n} samples can show 1 to {n // 2} samples, "
                         f"not {per_side}.")
    order = torch.argsort(vectors, dim=0, stable=True)
    return torch.cat([order[:per_side], order[n - per_side:]]).T


def extreme_samples(model: nn.Module, x, k: int = 4, per_side: int = 3, *, labels=None, input_shape=None,
                    kind: str = "trace", **ntk_options) -> ExtremeSamples:
    """The samples at both ends of the top-k eigenvectors of the NTK on x.

    For images or signals an eigenfunction over input space cannot be drawn; what an
    eigenvector separates shows in the samples where it is most negative and most positive.

    Args:
        model: the network.
        x: (N, ...) inputs, the samples the kernel is computed on.
        k: how many eigenvectors, largest eigenvalue first.
        per_side: how many samples at each end.
        labels: (N,) labels, or (N, O) targets (the first column is kept); None for none (NaN).
        input_shape: the natural shape of one sample, e.g. (1, 8, 8); by default x's own.
        kind: "trace" or "pseudo" (one kernel row per sample).
        **ntk_options: passed to `empirical_ntk`.
    """
    _check_choice("kind", kind, ("trace", "pseudo"))
    values, vectors = eigen(empirical_ntk(model, x, kind=kind, **ntk_options))
    k = min(k, len(values))
    vectors = vectors[:, :k]
    rows = extreme_indices(vectors, per_side)
    entries = torch.gather(vectors.T, 1, rows)
    samples = _to_numpy(as_tensor(x))
    shape = tuple(input_shape) if input_shape is not None else samples.shape[1:]
    if labels is None:
        tags = np.full(len(samples), np.nan)
    else:
        tags = _to_numpy(as_tensor(labels)).reshape(len(samples), -1)[:, 0]
    rows = _to_numpy(rows)
    return ExtremeSamples(_to_numpy(values[:k]), rows, _to_numpy(entries),
                          samples[rows].reshape(*rows.shape, *shape), tags[rows], kind)


# ---------------------------------------------------------------- Fourier content of eigenfunctions


def fourier_content(ef: Eigenfunctions, max_frequency: int = 16) -> FourierContent:
    """The share of each eigenfunction's power at each frequency.

    Around the circle (ef.x_label "angle") an eigenfunction is periodic: the discrete Fourier
    transform of its values at equal angles gives its power at 0, 1, 2, ... cycles per turn
    (a last sample 2 pi after the first repeats it and is dropped). Along a line the values
    are first extended by their mirror image, which makes the transform a cosine series
    (the DCT-II): the two ends then count as no jump, and frequency j is j half-cycles over
    the span. Shares follow Parseval's identity, so each row sums to 1 over all frequencies.
    For a wide ReLU network on the circle the top eigenfunctions are Fourier modes of
    increasing frequency (a cos and sin pair per frequency): its spectral bias.

    Args:
        ef: eigenfunctions along a line or around the circle, sampled at equal spacing.
        max_frequency: the highest frequency kept in `power` (the dominant frequency is
            found among all of them).

    Raises:
        ValueError: for eigenfunctions over a plane, or not at equal spacing.
    """
    if ef.grid_y is not None:
        raise ValueError("Fourier content is measured along a line or around the circle; these "
                         "eigenfunctions are over a plane.")
    grid = np.asarray(ef.grid_x, dtype=float)
    functions = np.asarray(ef.functions, dtype=float).reshape(len(ef.values), -1)
    periodic = ef.x_label == "angle"
    if periodic and len(grid) > 1 and np.isclose(grid[-1] - grid[0], 2 * np.pi):
        grid, functions = grid[:-1], functions[:, :-1]
    spacing = np.diff(grid)
    if len(grid) < 4 or not np.allclose(spacing, spacing[0], rtol=1e-6):
        raise ValueError("Fourier content needs eigenfunctions sampled at four or more equally spaced points.")
    if periodic and not np.isclose(len(grid) * spacing[0], 2 * np.pi, rtol=1e-6):
        raise ValueError("Fourier content on the circle needs samples at equal angles all the way around.")
    signal = functions if periodic else np.concatenate([functions, functions[:, ::-1]], axis=1)
    shares = frequency_shares(signal)
    kept = min(max_frequency + 1, shares.shape[1])
    return FourierContent(np.asarray(ef.values, dtype=float), np.arange(kept), shares[:, :kept],
                          shares.argmax(axis=1), periodic, ef.kind)


def frequency_shares(signal: np.ndarray) -> np.ndarray:
    """(k, n // 2 + 1): the share of each row's squared norm at 0, 1, ..., n // 2 cycles.

    Parseval: sum_t x_t^2 = (1/n) sum_f |X_f|^2 over all n frequencies; a real signal's
    frequencies f and n - f carry the same power, so each counts twice except 0 (and n / 2
    for even n).
    """
    n = signal.shape[1]
    power = np.abs(np.fft.rfft(signal, axis=1)) ** 2
    counted = np.full(power.shape[1], 2.0)
    counted[0] = 1.0
    if n % 2 == 0:
        counted[-1] = 1.0
    energy = n * (signal**2).sum(axis=1, keepdims=True)
    return counted * power / np.where(energy > 0, energy, 1.0)


# ---------------------------------------------------------------- how well the kernel fits a task


@same_kind_out
def target_power(eigvecs, y, k: Optional[int] = None):
    """Cumulative share of the target's squared norm in the top eigenvectors.

    Entry i is sum_{j <= i} ||u_j^T Y||^2 / ||Y||^2 (the target is not centred). With all the
    eigenvectors it reaches 1.

    Args:
        eigvecs: (n, K) eigenvectors as columns, largest eigenvalue first.
        y: targets for the kernel's rows (see `target_matrix`: labels become one-hot).
        k: how many eigenvectors (default all).

    Returns:
        (k,) the cumulative shares.
    """
    vectors = as_tensor(eigvecs)
    Y = target_matrix(y, like=vectors, rows=vectors.shape[0])
    k = vectors.shape[1] if k is None else min(k, vectors.shape[1])
    power = ((vectors[:, :k].T @ Y) ** 2).sum(1)
    return power.cumsum(0) / (Y**2).sum()


def target_power_curve(model: nn.Module, x, y, k: Optional[int] = None, kind: str = "trace",
                       **ntk_options) -> TargetPower:
    """`target_power` of the NTK on x for the targets y, for the figures."""
    _check_choice("kind", kind, MATRIX_KINDS)
    values, vectors = eigen(empirical_ntk(model, x, kind=kind, **ntk_options))
    cumulative = target_power(vectors, y, k)
    return TargetPower(_to_numpy(cumulative), _to_numpy(values[: len(cumulative)]), kind)


@same_kind_out
def kernel_regression(K_train, K_test_train, y_train, ridge: float = 0.0):
    """Kernel (ridge) regression: K_test_train (K_train + ridge I)^-1 Y.

    With ridge 0 this is the end point of gradient flow on MSE from a zero function with the
    kernel fixed (a lazy, centred network); a singular kernel then takes the minimum-norm
    solution (pseudo-inverse).

    Args:
        K_train: (N, N) kernel of the training inputs.
        K_test_train: (M, N) kernel between test and training inputs.
        y_train: (N,) or (N, C) targets, or integer labels (one-hot).
        ridge: added to the diagonal.

    Returns:
        (M,) for a float vector of targets, else (M, C).
    """
    K = as_tensor(K_train)
    K_test = as_tensor(K_test_train, like=K)
    y = as_tensor(y_train)
    Y = target_matrix(y, like=K, rows=K.shape[0])
    if ridge > 0:
        coefficients = torch.linalg.solve(K + ridge * torch.eye(len(K), dtype=K.dtype, device=K.device), Y)
    else:
        coefficients = torch.linalg.pinv(K, hermitian=True) @ Y
    prediction = K_test @ coefficients
    return prediction[:, 0] if y.ndim == 1 and y.is_floating_point() else prediction


# ---------------------------------------------------------------- spectral bias: learning by modes


def _time_axis(steps, like: torch.Tensor) -> torch.Tensor:
    if isinstance(steps, int):
        return torch.arange(steps + 1, dtype=like.dtype, device=like.device)
    return as_tensor(steps).to(dtype=like.dtype, device=like.device).reshape(-1)


@same_kind_out
def mode_learning_curves(eigvals, eigvecs, y, lr: float, steps, n: int, *, outputs: int = 1,
                         loss_scale: float = 1.0, f0=None, flow: bool = True):
    """The residual along each kernel eigenvector that a fixed kernel predicts.

    Convention (the lab's trainer): the loss is loss_scale times the mean over n samples and
    `outputs` outputs of (f - y)^2, i.e. loss_scale / (n * outputs) * ||f - y||^2, minimised
    by full-batch gradient descent with learning rate lr. If the model stays at its
    linearization (kernel Theta fixed), a step maps the residual r = f - y to (I - c Theta) r
    with c = 2 * lr * loss_scale / (n * outputs). Along eigenvector u_i (eigenvalue
    lambda_i):

        gradient descent (flow=False): r_i(t) = r_i(0) (1 - c lambda_i)^t
        gradient flow    (flow=True):  r_i(t) = r_i(0) exp(-c lambda_i t)

    The science notes' exp(-eta lambda_i t / N) is the same flow for the loss
    (1 / 2N) ||f - y||^2 of one output; the lab's MSE has no 1/2, hence the 2.
    Exact with the full kernel (N*O eigenvectors, (N, O) targets); the pseudo kernel with
    (N, O) targets assumes each output evolves with the same kernel (Theta = pNTK (x) I),
    exactly so for a linear readout of fixed features. For a `Centered` model pass
    loss_scale = 1 / alpha^2 (its kernel already carries alpha^2).

    Args:
        eigvals: (k,) eigenvalues of the kernel at the start.
        eigvecs: (rows, k) eigenvectors as columns.
        y: the training targets for the kernel's rows (see `target_matrix`).
        lr: learning rate.
        steps: a number of steps (curves at 0..steps) or the steps to predict at.
        n: the number of samples in the loss's mean.
        outputs: the number of outputs in the loss's mean.
        loss_scale: the factor on the MSE (1 / alpha^2 for a centred model).
        f0: the model's outputs at the start (default zero, as for a centred model).
        flow: the gradient-flow exponential, else the exact gradient-descent power.

    Returns:
        (T, k): ||u_i^T R(t)|| with R(0) = f0 - y (the norm over output columns; the
        absolute value for one column).
    """
    values = as_tensor(eigvals)
    vectors = as_tensor(eigvecs, like=values)
    residual = -target_matrix(y, like=vectors, rows=vectors.shape[0])
    if f0 is not None:
        residual = residual + target_matrix(f0, like=vectors, rows=vectors.shape[0])
    t = _time_axis(steps, values)[:, None]
    rate = 2 * lr * loss_scale / (n * outputs) * values
    decay = torch.exp(-rate * t) if flow else (1 - rate) ** t
    return decay.abs() * (vectors.T @ residual).norm(dim=1)


@same_kind_out
def project_residual(residuals, eigvecs):
    """The size of actual residuals along each eigenvector: ||u_i^T R_t|| for every t.

    Args:
        residuals: (T, rows) or (T, N, O) residuals f_t - y at T times (for a full kernel's
            N*O rows, (T, N, O) is flattened sample-major).
        eigvecs: (rows, k) eigenvectors as columns.

    Returns:
        (T, k) the norms over output columns.
    """
    vectors = as_tensor(eigvecs)
    R = as_tensor(residuals, like=vectors)
    R = R.reshape(R.shape[0], vectors.shape[0], -1)
    return torch.einsum("rk,trc->tkc", vectors, R).norm(dim=2)


@torch.no_grad()
def residuals_over_checkpoints(model: nn.Module, checkpoints: dict, x, y):
    """Steps and the residuals f_t(x) - y (T, N, C) at each checkpoint (labels one-hot)."""
    work = copy.deepcopy(model).eval()
    like = next(work.parameters())
    x = as_tensor(x, like)
    steps = sorted(checkpoints)
    targets = None
    residuals = []
    for step in steps:
        work.load_state_dict(checkpoints[step])
        out = work(x).reshape(len(x), -1)
        targets = target_matrix(y, like=out, rows=len(x)) if targets is None else targets
        residuals.append(out - targets)
    return steps, torch.stack(residuals)


def mode_curves(model: nn.Module, checkpoints: dict, x, y, lr: float, *, k: int = 8, kind: str = "pseudo",
                loss_scale: Optional[float] = None, flow: bool = True, **ntk_options) -> ModeCurves:
    """Predicted against measured per-mode residuals over a full-batch MSE training run.

    The kernel is taken at the first checkpoint; predictions follow `mode_learning_curves`
    from the model's outputs there.

    Args:
        model: the network (its architecture; the weights come from the checkpoints).
        checkpoints: {step: state_dict}, e.g. `Trainer.checkpoints`.
        x, y: the training inputs and targets (labels are one-hot, as the trainer's MSE does).
        lr: the learning rate of the run.
        k: how many modes.
        kind: "pseudo", "trace" (both per output) or "full".
        loss_scale: the MSE's factor; 1 / alpha^2 for a `Centered` model by default.
        flow: predict with gradient flow (else the exact gradient-descent steps).
        **ntk_options: passed to `empirical_ntk`.
    """
    _check_choice("kind", kind, MATRIX_KINDS)
    steps, residuals = residuals_over_checkpoints(model, checkpoints, x, y)
    n, outputs = residuals.shape[1], residuals.shape[2]
    if loss_scale is None:
        loss_scale = 1.0 / model.alpha**2 if isinstance(model, Centered) else 1.0
    start = copy.deepcopy(model)
    start.load_state_dict(checkpoints[steps[0]])
    values, vectors = eigen(empirical_ntk(start, x, kind=kind, **ntk_options))
    values, vectors = values[:k], vectors[:, :k].to(residuals)
    # R(0) = f0 - y is passed as y = -R(0) with f0 = 0.
    predicted = mode_learning_curves(values.to(residuals), vectors, -residuals[0], lr,
                                     torch.tensor(steps), n, outputs=outputs,
                                     loss_scale=loss_scale, flow=flow)
    actual = project_residual(residuals, vectors)
    return ModeCurves(np.asarray(steps), _to_numpy(predicted), _to_numpy(actual), _to_numpy(values))


# ---------------------------------------------------------------- the kernel over training


def kernel_over_checkpoints(model: nn.Module, checkpoints: dict, x, kind: str = "trace", **ntk_options):
    """The NTK on x at each checkpoint.

    Args:
        model: the network (its architecture; a copy loads each checkpoint in turn).
        checkpoints: {step: state_dict}.
        x: the inputs.
        kind: as in `empirical_ntk`.
        **ntk_options: passed to `empirical_ntk`.

    Returns:
        (steps sorted ascending, kernels stacked along a first axis of length T).
    """
    work = copy.deepcopy(model)
    steps = sorted(checkpoints)
    kernels = []
    for step in steps:
        work.load_state_dict(checkpoints[step])
        kernels.append(empirical_ntk(work, x, kind=kind, **ntk_options))
    return steps, torch.stack(kernels)


def target_power_over_training(model: nn.Module, checkpoints: dict, x, y, top_k=(1, 2, 4, 8, 16),
                               kind: str = "trace", **ntk_options) -> TargetPowerTrajectory:
    """The share of ||y||^2 in the top-k eigenvectors of the kernel at each checkpoint.

    As the kernel aligns with the task (rich learning), the target concentrates in fewer top
    eigenvectors and the shares rise.

    Args:
        model: the network (its architecture; the weights come from the checkpoints).
        checkpoints: {step: state_dict}.
        x, y: the inputs and their targets (labels become one-hot).
        top_k: the numbers of top eigenvectors (those above the number of kernel rows are left out).
        kind: "trace", "pseudo" or "full".
        **ntk_options: passed to `empirical_ntk`.
    """
    _check_choice("kind", kind, MATRIX_KINDS)
    steps, kernels = kernel_over_checkpoints(model, checkpoints, x, kind=kind, **ntk_options)
    top_k = np.array(sorted({int(k) for k in top_k if 1 <= k <= kernels.shape[1]}))
    share = np.stack([_to_numpy(target_power(eigen(K)[1], y))[top_k - 1] for K in kernels])
    return TargetPowerTrajectory(np.asarray(steps), top_k, share, kind)


@same_kind_out
def eigenvector_rotation(U0, U, k: int):
    """Principal angles (radians, ascending) between the spans of the top-k eigenvectors.

    cos(angle_i) are the singular values of U0_k^T U_k: all angles 0 for the same span
    (however rotated within it), pi/2 for orthogonal spans. mean(cos^2) is the subspace
    overlap ||U0_k^T U_k||_F^2 / k.

    Args:
        U0, U: (n, >= k) eigenvectors as columns, largest eigenvalue first.
        k: the size of the compared top subspaces.
    """
    A = as_tensor(U0)[:, :k]
    B = as_tensor(U, like=A)[:, :k]
    cosines = torch.linalg.svdvals(A.T @ B).clamp(-1.0, 1.0)
    return torch.arccos(cosines)


def subspace_overlap(U0, U, k: int) -> float:
    """||U0_k^T U_k||_F^2 / k: 1 for the same top-k span, 0 for orthogonal spans."""
    angles = as_tensor(eigenvector_rotation(U0, U, k))
    return float((torch.cos(angles) ** 2).mean())


__all__ = [
    "KINDS", "METHODS", "LayerwiseNTK", "as_tensor", "eigen", "eigenfunction_map", "eigenfunctions",
    "eigenvector_rotation", "empirical_ntk", "extreme_indices", "extreme_samples", "fourier_content",
    "frequency_shares", "kernel_over_checkpoints", "kernel_regression", "kernel_spectrum",
    "layer_kernels", "layer_of", "mode_curves", "mode_learning_curves", "nystrom", "project_residual",
    "residuals_over_checkpoints", "structured", "subspace_overlap", "target_matrix", "target_power",
    "target_power_curve", "target_power_over_training",
]
