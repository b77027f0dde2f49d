"""Lazy versus rich training: how far the weights and the kernel move, and how well it fits.

In the lazy (kernel) regime a network stays close to its linearization at w0: the weights
barely move relative to their size and the NTK stays put. In the rich regime the features,
and with them the kernel, change (Chizat, Oyallon & Bach 2019; Geiger et al. 2020; Fort et
al. 2020; Kumar et al. 2023). The measures:

- relative weight change ||w_t - w_0|| / ||w_0||, in total and per layer;
- relative kernel change ||K_t - K_0||_F / ||K_0||_F;
- kernel distance 1 - <K_0, K_t>_F / (||K_0||_F ||K_t||_F), blind to the kernel's scale;
- centred kernel-target alignment (Cortes, Mohri & Rostamizadeh 2012);
- the gap between the network and its linearization at w0 (`linearize`) trained alongside;
  for (S)GD the linearization is followed exactly in function space through its NTK at w0
  (`KernelTwin`), a kernel product per step instead of a jvp forward and backward.

`phase_diagram` sweeps output scale x width x seeds (Geiger et al. 2020), training each
width's members together as one vmap'd ensemble (`engine.ensemble`); `sweep_job` runs it on
the sweep mechanism (`engine.sweep`, one cell per width, here or on Ray) as a resumable,
cached job that keeps one ordinary run per network.

Kernels and targets may be numpy arrays or torch tensors; scalar measures are computed in
float64 and returned as Python floats.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import threading
import time
from typing import Callable, Iterable, Optional, Sequence

import numpy as np
import torch
from torch import nn

# Forward-mode AD loads (and TorchScript-compiles) its decompositions on first use; two
# training threads doing that at once fail. Loading them here, once, at import avoids it.
from torch._decomp import decompositions_for_jvp  # noqa: F401
from torch.func import functional_call, jvp

from engine import data as datasets
from engine.device import pick, to_float64
from engine.ensemble import EnsembleTrainer
from engine.models import Centered, ModelSpec, build, lr_multipliers
from engine.modes import evaluating
from engine.ntk import (
    as_tensor,
    eigen,
    empirical_ntk,
    kernel_over_checkpoints,
    layer_of,
    structured,
    subspace_overlap,
    target_matrix,
)
from engine.results import KernelTrajectory, PhaseDiagram, WeightChange, from_arrays, to_arrays
from engine.train import FLUSH_EVERY, Minibatches, TrainConfig, evaluation_subset, make_loss

__all__ = ["relative_weight_change", "relative_kernel_change", "kernel_distance", "centred", "kernel_alignment",
           "kernel_trajectory", "Linearized", "linearize", "kernel_twin_refusal", "KernelTwin", "check_grid",
           "phase_diagram", "train_width", "width_cells", "read_width_cell", "width_key", "member_run_id",
           "find_width", "width_errors", "compute_width", "width_kind", "sweep_key", "check_sweep", "sweep_job"]


def _float64(K) -> torch.Tensor:
    return to_float64(as_tensor(K))  # on the CPU for a device without float64


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
        start = to_float64(as_tensor(w0[name]))
        now = to_float64(as_tensor(w[name]))
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
    return float(torch.linalg.norm(_float64(K).to(K0.device) - K0) / torch.linalg.norm(K0))


def kernel_distance(K0, K) -> float:
    """1 - <K0, K>_F / (||K0||_F ||K||_F) (Fort et al. 2020): 0 for kernels equal up to scale."""
    K0 = _float64(K0)
    K = _float64(K).to(K0.device)
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
    Y = target_matrix(as_tensor(y).to(K.device), like=K, rows=K.shape[0])  # made where K's float64 is
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


# ---------------------------------------------------------------- the linearized twin

# Forward-mode AD keeps its nesting level in a process-wide global, so two threads inside a
# jvp at once (two twins training side by side) corrupt each other's level. The lock
# serialises only the forward pass; the backward through its output is ordinary autograd.
_FORWARD_AD = threading.Lock()


class Linearized(nn.Module):
    """f_lin(x; w) = f(x; w0) + J(x; w0) (w - w0): the first-order Taylor model at w0.

    `model` is a copy of the network (its parameters, registered as `model.<name>`, are what
    trains; the original is never touched) and w0 is kept as buffers. The forward pass is
    one `torch.func.jvp` of `functional_call` at w0 along w - w0, so the Jacobian J is
    never formed. Training backpropagates through the jvp (reverse-over-forward), which
    torch 2.13 supports directly, so no double-vjp trick is needed.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = copy.deepcopy(model)
        self.w0 = nn.Module()
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                self.w0.register_buffer(name.replace(".", "__"), p.detach().clone())

    def initial_parameters(self) -> dict[str, torch.Tensor]:
        return {name.replace("__", "."): b for name, b in self.w0.named_buffers()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w0 = self.initial_parameters()
        weights = dict(self.model.named_parameters())
        moved = {name: weights[name] - start for name, start in w0.items()}

        def network(params):
            return functional_call(self.model, params, (x,))

        with _FORWARD_AD:
            at_w0, change = jvp(network, (w0,), (moved,))
        return at_w0 + change


def linearize(model: nn.Module) -> nn.Module:
    """The linearized twin of `model` at its current weights w0, as a trainable copy.

    Its trainable parameters are copies of the model's, named `model.<original name>` (for a
    `Centered` model `model.model.<name>`), so `engine.models.lr_multipliers` gives them the
    same per-layer learning rates and `Trainer(linearize(model), data, config)` trains the
    twin exactly as it would train the network.

    A `Centered` model alpha * (f(w) - f(w0)) is linearized at its w0, where it is the zero
    function: the twin is alpha * J(w0) (w - w0), returned as `Centered(Linearized(f), alpha)`
    so that `Trainer` divides its loss by alpha^2 as it does the network's.

    Raises:
        ValueError: for a `Centered` model whose weights have moved from its w0 (linearize the
            network inside it, `model.model`, at those weights instead).
    """
    if not isinstance(model, Centered):
        return Linearized(model)
    start = model.initial_parameters()
    if any(not torch.equal(p.detach(), start[n]) for n, p in model.model.named_parameters()):
        raise ValueError("A Centered model is linearized at its starting weights w0, but this one has "
                         "been trained away from them; linearize the network inside it (model.model).")
    return Centered(Linearized(model.model), model.alpha)


# ---------------------------------------------------------------- the twin in function space

# The most rows (training samples x outputs) of the kernel a `KernelTwin` keeps: 64 MB in float32.
MAX_KERNEL_TWIN_ROWS = 4096


def kernel_twin_refusal(model: nn.Module, data, config: TrainConfig) -> Optional[str]:
    """Why `KernelTwin` cannot follow the linearized twin of this run exactly (a sentence), or
    None when it can: plain (S)GD, with or without momentum, on a stack of linear layers and
    elementwise activations, with a training set whose full kernel is small enough."""
    if config.optimizer not in ("gd", "sgd"):
        return "Adam divides each step by a running gradient size, so its steps are not kernel steps."
    if config.weight_decay:
        return "Weight decay pulls the weights themselves toward 0, which the outputs alone do not show."
    if config.adversarial:
        return "Adversarial training moves the inputs at every step, away from the kernel's rows."
    if not structured(model, data.x_train[:1]):
        return "The kernel twin needs a stack of linear layers and elementwise activations."
    if any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules()):
        return "Dropout makes every training step's function random, which a fixed kernel does not."
    rows = len(data.x_train) * data.n_outputs
    if rows > MAX_KERNEL_TWIN_ROWS:
        return (f"The training set's full kernel would have {rows:,} rows (samples x outputs), more than "
                f"the {MAX_KERNEL_TWIN_ROWS:,} the kernel twin keeps.")
    return None


class KernelTwin:
    """The linearized twin of a (stochastic) gradient-descent run, followed in function space.

    The twin f_lin(x; w) = f(x; w0) + J(x) (w - w0) is linear in w. A step
    w <- w - eta * J_B^T g, with eta each parameter's learning rate and g = dL/df the loss'
    gradient in the batch's outputs, therefore moves its outputs anywhere by exactly

        f_lin(x) <- f_lin(x) - Theta(x, X_B) g,    Theta = sum_p eta_p J_p J_p^T at w0,

    the NTK with each parameter's rate as its weight (`empirical_ntk(..., rates=...)`). For the
    lab's MSE (a mean over B samples and O outputs, divided by alpha^2 for a centred model,
    whose kernel carries alpha^2) g = 2 (f - y) / (B O alpha^2): full-batch GD is
    u <- u - (2 / (N O)) Theta(X, X) (u - y). For cross-entropy g = (softmax(f) - onehot(y)) / B.
    g is taken by autograd from the trainer's own loss, so every loss follows one rule.
    Momentum mu (torch's SGD: buffer <- mu buffer + gradient, the first buffer the gradient)
    keeps its velocity in function space: V <- mu V + Theta(X, X_B) g, u <- u - V.

    The kernel of the training inputs (N*O x N*O) is computed once; a step then costs a product
    with its B*O columns of the batch. Outputs elsewhere come from the accumulated coefficients
    a (N, O): f_lin(x) = f(x; w0) + Theta(x, X) a (`predict`).

    Args:
        model: the network at w0 (its weights are read, never changed).
        data: the dataset; config: the run's settings (minibatches drawn like `Trainer`'s).
        device: where the data and model are; base_width: muP's base width, as for `Trainer`.

    Raises:
        ValueError: with `kernel_twin_refusal`'s sentence when the run cannot be followed so.
    """

    def __init__(self, model: nn.Module, data, config: TrainConfig, *,
                 device: torch.device | str | None = None, base_width: int = 64):
        refusal = kernel_twin_refusal(model, data, config)
        if refusal is not None:
            raise ValueError(refusal)
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model0 = copy.deepcopy(model).to(self.device)
        self.data = data.to(self.device)
        alpha = model.alpha if isinstance(model, Centered) else None
        self.loss_fn = make_loss(config.loss, data.task, data.n_classes, alpha)
        self.loss_unit = alpha**2 if alpha else 1.0
        multipliers = lr_multipliers(model, config.optimizer, base_width)
        self.rates = {n: config.lr * multipliers.get(n, 1.0) for n, p in model.named_parameters() if p.requires_grad}
        self.momentum = config.momentum if config.optimizer == "sgd" else 0.0
        x = self.data.x_train
        self.u = self._at_w0(x)  # (N, O): the twin's outputs on the training inputs
        self.kernel = empirical_ntk(self.model0, x, kind="full", rates=self.rates).to(self.u.dtype)
        self.coefficients = torch.zeros_like(self.u)
        self._velocity = self._coefficient_velocity = None
        self._batches = Minibatches(len(x), config, self.device)
        self._pending: list[torch.Tensor] = []  # losses not yet read back (one sync per FLUSH_EVERY steps)
        self._losses: list[float] = []
        self.step_count = 0

    @torch.no_grad()
    def _at_w0(self, x: torch.Tensor) -> torch.Tensor:
        with evaluating(self.model0):
            return self.model0(x).reshape(len(x), -1)

    def step(self) -> None:
        """One step on the next minibatch (the network's, drawn from the same seed)."""
        index = self._batches.next()
        u, y = (self.u, self.data.y_train) if index is None else (self.u[index], self.data.y_train[index])
        g = self._output_gradient(u, y)
        n, o = self.u.shape
        if index is None:
            move, coefficients = self.kernel @ g.reshape(-1), g
        else:  # Theta(X, X_B) g from the batch's rows: the kernel is symmetric
            rows = self.kernel.view(n, o, n * o)[index].reshape(-1, n * o)
            move = rows.T @ g.reshape(-1)
            coefficients = torch.zeros_like(self.u).index_put_((index,), g)
        if self.momentum:
            if self._velocity is not None:
                move = move + self.momentum * self._velocity
                coefficients = coefficients + self.momentum * self._coefficient_velocity
            self._velocity, self._coefficient_velocity = move, coefficients
        self.u = self.u - move.reshape(n, o)
        self.coefficients = self.coefficients - coefficients
        self.step_count += 1

    def _output_gradient(self, u: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """dL/du of the batch's loss at the outputs u (the loss is recorded)."""
        with torch.enable_grad():
            u = u.detach().requires_grad_(True)
            loss = self.loss_fn(u, y)
            (g,) = torch.autograd.grad(loss, u)
        self._pending.append(loss.detach())
        if len(self._pending) >= FLUSH_EVERY:
            self._flush()
        return g

    def _flush(self) -> None:
        if self._pending:
            self._losses += (torch.stack(self._pending) * self.loss_unit).tolist()
            self._pending = []

    def outputs(self, index: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The twin's outputs on the training inputs (those at `index`, or all)."""
        return self.u if index is None else self.u[index]

    @torch.no_grad()
    def predict(self, x) -> torch.Tensor:
        """The twin's outputs on any inputs: f(x; w0) + Theta(x, X) a."""
        x = as_tensor(x, like=self.u)
        K = empirical_ntk(self.model0, x, self.data.x_train, kind="full", rates=self.rates).to(self.u.dtype)
        return self._at_w0(x) + (K @ self.coefficients.reshape(-1)).reshape(len(x), -1)

    @property
    def train_loss(self) -> list[float]:
        """Each step's minibatch loss before the step, in the loss' plain unit (as `Trainer`'s history)."""
        self._flush()
        return list(self._losses)


# ---------------------------------------------------------------- the phase diagram


KERNEL_SAMPLES = 64  # training inputs on which the phase diagram's kernels are compared
PROGRESS_EVERY_S = 0.1  # the progress callback is called at most this often while training


def _grid(values, what: str, kind: type) -> list:
    """A sweep axis as a list, with a sentence for an empty, repeated or ill-typed one."""
    values = list(np.asarray(values).tolist()) if isinstance(values, np.ndarray) else list(values)
    if not values:
        raise ValueError(f"The sweep needs at least one {what}.")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and not float(v).is_integer()):
            raise ValueError(f"Every {what} must be a {'whole ' if kind is int else ''}number; got {v!r}.")
    values = [kind(v) for v in values]
    if len(set(values)) != len(values):
        raise ValueError(f"The {what}s of a sweep must differ from each other; got {values}.")
    return values


def _cell_spec(spec: ModelSpec, alpha: float, width: int, seed: int) -> ModelSpec:
    return dataclasses.replace(spec, alpha=alpha, width=width, seed=seed)


def check_grid(spec: ModelSpec, alphas, widths, seeds) -> tuple[list[float], list[int], list[int]]:
    """The three axes of a sweep as lists, or a ValueError whose sentences say what is wrong."""
    alphas = _grid(alphas, "output scale alpha", float)
    widths = _grid(widths, "width", int)
    seeds = _grid(seeds, "seed", int)
    errors = {}
    for alpha in alphas:
        for width in widths:
            errors.update(_cell_spec(spec, alpha, width, seeds[0]).errors())
    if any(s < 0 for s in seeds):
        errors["seed"] = "Seeds must be 0 or more."
    if errors:
        raise ValueError(" ".join(errors.values()))
    return alphas, widths, seeds


def _rough_cost(spec: ModelSpec, width: int, data) -> float:
    """A width's weights per member, roughly (for sharing out progress and refusing sweeps
    that would take too long; not an exact parameter count)."""
    return data.n_features * width + spec.depth * width * (width + 1) + width * data.n_outputs


def phase_diagram(data, spec: ModelSpec | dict, config: TrainConfig, alphas: Sequence[float],
                  widths: Sequence[int], seeds: Sequence[int], *, device=None,
                  progress: Optional[Callable[[float], None]] = None, kernel_samples: int = KERNEL_SAMPLES,
                  on_width: Optional[Callable[[int, EnsembleTrainer], None]] = None) -> PhaseDiagram:
    """Train alpha * (f(w) - f(w0)) over output scales x widths x seeds and measure each cell,
    all in this process (`sweep_job` computes the same diagram on the sweep mechanism).

    All alphas and seeds of one width are trained together as an `EnsembleTrainer` (each
    member exactly as `Trainer` would train it alone, on the same minibatches).

    With Adam the loss scaling 1/alpha^2 does not change the step size (Adam normalises the
    gradient), so the weights move about as far whatever alpha is: use "sgd" or "gd" to see
    the lazy regime at large alpha (Chizat et al. 2019).

    Args:
        data: a `engine.data.Dataset`.
        spec: the model (its alpha, width and seed are replaced by each cell's).
        config: the training settings, shared by every cell.
        alphas, widths, seeds: the grid's axes.
        device: where to train; `engine.device.pick()` by default.
        progress: called with the fraction done (0..1) often; it may raise (e.g. a job's
            `Cancelled`) to stop the sweep.
        kernel_samples: the NTKs at init and at the end are compared on this many training
            inputs (a fixed subset).
        on_width: called with (width index, the trained ensemble) after each width; its
            member m is alpha index m // len(seeds), seed index m % len(seeds), and it keeps
            the checkpoints of each alpha's first seed (`ensemble.checkpoints[m]`).

    Returns:
        A `PhaseDiagram` (its run_ids empty: `sweep_job` stores runs).
    """
    spec = ModelSpec.from_dict(spec) if isinstance(spec, dict) else spec
    alphas, widths, seeds = check_grid(spec, alphas, widths, seeds)
    _check_kernel_samples(kernel_samples)
    device = torch.device(device) if device is not None else pick()
    diagram = _empty_diagram(data, spec, config, alphas, widths, seeds, kernel_samples)
    costs = np.array([_rough_cost(spec, w, data) for w in widths], dtype=float)
    shares = costs / costs.sum()
    kernel_x, kernel_y = _kernel_inputs(data, config, kernel_samples)
    report = progress or (lambda fraction: None)
    for j, width in enumerate(widths):
        first_seeds = [i * len(seeds) for i in range(len(alphas))]
        done = float(shares[:j].sum())
        ensemble, cells = train_width(data, spec, config, alphas, width, seeds, device=device, kernel_x=kernel_x,
                                      kernel_y=kernel_y, checkpoint_members=first_seeds if on_width else (),
                                      should_stop=_ticker(report, done, 0.9 * shares[j], config.steps))
        for m, cell in enumerate(cells):
            _put_member(diagram, j, m, cell, ensemble.diverged_at[m] is not None)
        if on_width is not None:
            on_width(j, ensemble)
        report(done + float(shares[j]))
    return diagram


_MEASURES = ("weight_change", "kernel_distance", "kernel_change", "alignment", "initial_alignment",
             "train_loss", "test_loss", "test_accuracy")


def _check_kernel_samples(kernel_samples) -> None:
    if not isinstance(kernel_samples, int) or kernel_samples < 2:
        raise ValueError("The kernels need at least 2 samples.")


def _kernel_inputs(data, config: TrainConfig, kernel_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed training inputs (and targets) on which the kernels are compared."""
    index = evaluation_subset(len(data.x_train), config, torch.device("cpu"))[:kernel_samples]
    return data.x_train[index], data.y_train[index]


def _empty_diagram(data, spec: ModelSpec, config: TrainConfig, alphas, widths, seeds,
                   kernel_samples: int) -> PhaseDiagram:
    """A diagram of the grid with every measure NaN and no run, to fill width by width."""
    shape = (len(alphas), len(widths), len(seeds))
    return PhaseDiagram(
        alphas=np.array(alphas, dtype=float), widths=np.array(widths), seeds=np.array(seeds),
        **{name: np.full(shape, np.nan) for name in _MEASURES},
        diverged=np.zeros(shape, dtype=bool), run_ids=np.full(shape[:2], "", dtype=str),
        settings={"data": data.name, "data_options": dict(data.options), "model": spec.to_dict(),
                  "train": config.to_dict(), "kernel_samples": min(kernel_samples, len(data.x_train)),
                  "kernel": "trace"},
    )


def _put_member(diagram: PhaseDiagram, j: int, m: int, measures: dict, diverged: bool) -> None:
    """Member m of width j's ensemble (alpha index m // seeds, seed index m % seeds) into the diagram."""
    i, k = divmod(m, len(diagram.seeds))
    diagram.diverged[i, j, k] = diverged
    for name, value in measures.items():
        getattr(diagram, name)[i, j, k] = value


def train_width(data, spec: ModelSpec, config: TrainConfig, alphas: list[float], width: int, seeds: list[int], *,
                device: torch.device, kernel_x: torch.Tensor, kernel_y: torch.Tensor,
                should_stop: Callable[[EnsembleTrainer], bool] = lambda ensemble: False,
                checkpoint_members: Sequence[int] = ()) -> tuple[EnsembleTrainer, Optional[list[dict]]]:
    """One width of a phase diagram: its alphas x seeds trained as one ensemble, then measured.

    Returns the ensemble (member m is alpha index m // len(seeds), seed index m % len(seeds))
    and each member's measures ({} for a diverged member), or None for the measures when
    `should_stop` stopped the training.
    """
    models = [build(_cell_spec(spec, a, width, s), data.input_shape, data.n_outputs) for a in alphas for s in seeds]
    ensemble = EnsembleTrainer(models, data, config, device=device, base_width=spec.base_width,
                               checkpoint_members=checkpoint_members)
    outcome = ensemble.run(should_stop=lambda: should_stop(ensemble))
    if outcome.status == "stopped":
        return ensemble, None
    return ensemble, _measure(ensemble, kernel_x.to(device), kernel_y.to(device))


def _ticker(report, done: float, share: float, steps: int):
    """A `should_stop(ensemble)` that reports progress at most every PROGRESS_EVERY_S (the
    report may raise to cancel) and never asks to stop by itself."""
    next_report = [0.0]

    def should_stop(ensemble: EnsembleTrainer) -> bool:
        now = time.perf_counter()
        if now >= next_report[0]:
            report(done + share * ensemble.step_count / steps)
            next_report[0] = now + PROGRESS_EVERY_S
        return False

    return should_stop


def _measure(ensemble: EnsembleTrainer, x: torch.Tensor, y: torch.Tensor) -> list[dict[str, float]]:
    """Each member's final measures: weight and kernel movement, alignment, losses.

    The kernels are the NTK of the network f inside alpha * (f - f0): the centred model's is
    alpha^2 times it, which no measure here sees (each is blind to the kernel's scale).
    """
    train_loss = ensemble.output_losses("train").tolist()
    test_loss = ensemble.output_losses("test").tolist()
    test_accuracy = ensemble.output_accuracy("test")
    cells = []
    for m in range(ensemble.size):
        if ensemble.diverged_at[m] is not None:
            cells.append({})
            continue
        K0 = empirical_ntk(ensemble.network(m, initial=True), x)
        K = empirical_ntk(ensemble.network(m), x)
        cells.append({
            "weight_change": relative_weight_change(ensemble.parameters_of(m, initial=True),
                                                    ensemble.parameters_of(m)).total,
            "kernel_distance": kernel_distance(K0, K),
            "kernel_change": relative_kernel_change(K0, K),
            "alignment": kernel_alignment(K, y),
            "initial_alignment": kernel_alignment(K0, y),
            "train_loss": train_loss[m], "test_loss": test_loss[m], "test_accuracy": test_accuracy[m],
        })
    return cells


# ---------------------------------------------------------------- a width as a sweep cell

# A phase diagram runs on the one sweep mechanism (`engine.sweep`): a cell is one width, its
# alphas x seeds trained as one ensemble (`train_width`) on any worker, each member published
# as its own run `cell-<width key>-<m>` through the mechanism's staging folder and rename. A
# width is finished when all its members' runs are in the store; their summaries carry the
# member's measures, from which the driver assembles the diagram.

GRID_SETTINGS = ("phase.alphas", "phase.seeds", "phase.kernel_samples")  # a width cell's own settings
PER_MEMBER = ("model.alpha", "model.seed")  # set by each member, so not part of a width's experiment


def width_cells(experiment, alphas, widths, seeds, kernel_samples: int = KERNEL_SAMPLES) -> list[dict[str, str]]:
    """The sweep cells of a phase diagram: one per width, as flat text settings (the
    experiment's, less what each member sets, plus the grid's alphas, seeds and kernel samples)."""
    flat = {k: v for k, v in experiment.to_flat().items() if k not in PER_MEMBER + ("model.width",)}
    grid = {"phase.alphas": ",".join(repr(float(a)) for a in alphas), "phase.seeds": ",".join(str(s) for s in seeds),
            "phase.kernel_samples": str(kernel_samples)}
    return [flat | grid | {"model.width": str(width)} for width in widths]


def read_width_cell(settings: dict[str, str]):
    """A width cell's (experiment, alphas, seeds, kernel samples); ValueError with a sentence."""
    from engine.experiment import Experiment  # engine.experiment imports this module

    experiment, errors = Experiment.from_flat({k: v for k, v in settings.items() if k not in GRID_SETTINGS})
    errors |= {k: v for k, v in experiment.errors().items() if k not in PER_MEMBER}
    if errors:
        raise ValueError(" ".join(errors.values()))
    try:
        alphas = [float(a) for a in settings["phase.alphas"].split(",")]
        seeds = [int(s) for s in settings["phase.seeds"].split(",")]
        kernel_samples = int(settings["phase.kernel_samples"])
    except (KeyError, ValueError):
        raise ValueError("A phase diagram's cell names its phase.alphas, phase.seeds and phase.kernel_samples "
                         "as comma-separated numbers.") from None
    alphas, _, seeds = check_grid(experiment.model, alphas, [experiment.model.width], seeds)
    _check_kernel_samples(kernel_samples)
    return experiment, alphas, seeds, kernel_samples


def width_key(settings: dict[str, str]) -> str:
    """A width cell's id: a hash of everything that makes its numbers (its experiment with
    defaults filled in, its alphas, seeds and kernel samples)."""
    experiment, alphas, seeds, kernel_samples = read_width_cell(settings)
    flat = {k: v for k, v in experiment.to_flat().items() if k not in PER_MEMBER}
    described = {"version": SWEEP_VERSION, "cell": "phase-diagram width", "settings": flat, "alphas": alphas,
                 "seeds": seeds, "kernel_samples": kernel_samples}
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]


def member_run_id(key: str, m: int) -> str:
    """The run of member m of the width cell `key`."""
    return f"cell-{key}-{m}"


def find_width(store, settings: dict[str, str], key: str):
    """The width's `CellResult` when every member's run is in the store, else None."""
    from engine.sweep import CellResult

    _, alphas, seeds, _ = read_width_cell(settings)
    members = [member_run_id(key, m) for m in range(len(alphas) * len(seeds))]
    if not all((store.root / run_id / "settings.json").exists() for run_id in members):
        return None
    diverged = sum(store.settings(run_id)["status"] == "diverged" for run_id in members)
    return CellResult(key, members[0], "done", f"{len(members)} networks, {diverged} diverged.")


def width_errors(cells: list[dict[str, str]]) -> list[str]:
    """A sentence for each width cell that cannot be read (each sentence once)."""
    from engine.sweep import read_errors

    return read_errors(cells, read_width_cell)


def compute_width(settings: dict[str, str], root: str, device: Optional[str] = None, ctx=None) -> dict:
    """Train and measure one width cell into the store at `root`, on any worker (the cell kind's
    `compute`); does nothing when its runs are there. Returns its `CellResult` as a dict."""
    from engine.store import RunStore
    from engine.sweep import once

    store, key = RunStore(root), width_key(settings)
    return once(store, key, lambda: find_width(store, settings, key),
                lambda staging: _train_width_cell(settings, key, store, staging, device, ctx))


def _train_width_cell(settings, key: str, store, staging, device, ctx):
    """Train the width's ensemble; publish each member's run from `staging` unless stopped."""
    from engine.store import RunStore
    from engine.sweep import CellResult, publish

    experiment, alphas, seeds, kernel_samples = read_width_cell(settings)
    width, members = experiment.model.width, len(alphas) * len(seeds)
    started = time.perf_counter()
    try:
        data = datasets.load(experiment.data, **experiment.data_options)
        device = torch.device(device) if device is not None else pick()
        kernel_x, kernel_y = _kernel_inputs(data, experiment.train, kernel_samples)
        ensemble, cells = train_width(data, experiment.model, experiment.train, alphas, width, seeds, device=device,
                                      kernel_x=kernel_x, kernel_y=kernel_y, checkpoint_members=range(members),
                                      should_stop=lambda _: ctx is not None and ctx.cancelled)
    except Exception as exc:  # a width that cannot train fails alone; the sweep goes on
        return CellResult(key, status="failed", message=str(exc), trained=True)
    seconds = time.perf_counter() - started
    if cells is None:
        return CellResult(key, status="cancelled", message="The sweep was cancelled.", trained=True, seconds=seconds)
    staged = RunStore(staging)
    for m, measures in enumerate(cells):
        i, k = divmod(m, len(seeds))
        member = dataclasses.replace(experiment, model=_cell_spec(experiment.model, alphas[i], width, seeds[k]))
        run_id = _save_member(staged, ensemble, m, member, data, device, key, measures)
        publish(staging / run_id, store.root / member_run_id(key, m))
    result = find_width(store, settings, key)
    result.trained, result.seconds = True, seconds
    return result


def width_kind():
    """The sweep mechanism's kind of cell for a phase diagram's width (made on use: engine.sweep
    imports the trainer, whose probes import this module)."""
    from engine.sweep import CellKind

    return CellKind(compute=compute_width, key=width_key, find=find_width, errors=width_errors)


# ---------------------------------------------------------------- the sweep as a job


MAX_SWEEP_RUNS = 120  # cells x seeds
MAX_SWEEP_WORK = 2e13  # rough floating-point operations; beyond this a CPU takes far too long
SWEEP_VERSION = 2  # part of the cache and cell keys: bump it when the computation changes


def sweep_key(experiment, alphas, widths, seeds, kernel_samples: int = KERNEL_SAMPLES) -> str:
    """The cache key of a sweep: a hash of the data, the model and training settings (less the
    alpha, width and seed each cell sets) and the grid."""
    model = experiment.model.to_dict() | {"alpha": None, "width": None, "seed": None}
    described = {"version": SWEEP_VERSION, "data": experiment.data, "data_options": experiment.data_options,
                 "model": model, "train": experiment.train.to_dict(), "alphas": list(alphas),
                 "widths": list(widths), "seeds": list(seeds), "kernel_samples": kernel_samples}
    digest = hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()
    return f"sweep-{digest[:32]}"


def check_sweep(experiment, alphas, widths, seeds, data=None) -> tuple[list[float], list[int], list[int]]:
    """The grid as lists, or a ValueError with sentences: invalid settings, an empty or
    repeated axis, a model that cannot be built on the data, or a sweep too large to run."""
    errors = {k: v for k, v in experiment.errors().items() if k not in ("model.alpha", "model.width", "model.seed")}
    if errors:
        raise ValueError(" ".join(errors.values()))
    alphas, widths, seeds = check_grid(experiment.model, alphas, widths, seeds)
    runs = len(alphas) * len(widths) * len(seeds)
    if runs > MAX_SWEEP_RUNS:
        raise ValueError(f"This sweep would train {runs} networks; the lab's limit is {MAX_SWEEP_RUNS}. "
                         "Use fewer output scales, widths or seeds.")
    if data is not None:
        build(_cell_spec(experiment.model, alphas[0], min(widths), seeds[0]), data.input_shape, data.n_outputs)
        t = experiment.train
        batch = len(data.x_train) if t.optimizer == "gd" else min(t.batch_size, len(data.x_train))
        work = 6 * batch * t.steps * len(alphas) * len(seeds) * sum(_rough_cost(experiment.model, w, data)
                                                                   for w in widths)
        if work > MAX_SWEEP_WORK:
            raise ValueError(f"This sweep would take about {work:.1e} floating-point operations, more than "
                             f"the lab's limit of {MAX_SWEEP_WORK:.0e}; use fewer steps, smaller widths "
                             "or fewer cells.")
    return alphas, widths, seeds


def sweep_job(ctx, store, experiment, alphas, widths, seeds, *, device=None,
              kernel_samples: int = KERNEL_SAMPLES, backend: str = "local", address: Optional[str] = None,
              workers: Optional[int] = None) -> PhaseDiagram:
    """Compute (or fetch from the store's cache) the phase diagram of `experiment`, as a job,
    on the sweep mechanism (`engine.sweep`): one cell per width, on this machine or on Ray.

    Every network of the grid is kept as an ordinary run (its settings are the experiment with
    that member's model.alpha, model.width and model.seed; checkpoints at step 0, every
    `train.checkpoint_every` and the end; the training history as metrics), so the page can
    open a cell's run in any lens. Resumable: a cancelled, failed or killed sweep keeps the
    widths that finished, and running it again trains only the others; it caches the diagram
    only when every width is done.

    Args:
        ctx: the job's context (per-width progress, cancelling).
        store: a `RunStore` (on a Ray cluster, a folder every worker sees).
        experiment: an `engine.experiment.Experiment` with a built-in dataset.
        alphas, widths, seeds: the grid.
        device: where to train; each worker's `engine.device.pick()` by default.
        kernel_samples: see `phase_diagram`.
        backend, address, workers: as for `engine.sweep.run_sweep`.

    Returns:
        The `PhaseDiagram`, with `run_ids` naming each (alpha, width)'s first seed's run (""
        where a cached sweep's run has since been deleted).
    """
    from engine.sweep import FINISHED, Sweep, run_sweep

    ctx.report(progress=0.0, message="Preparing the sweep…")
    data = datasets.load(experiment.data, **experiment.data_options)
    alphas, widths, seeds = check_sweep(experiment, alphas, widths, seeds, data)
    _check_kernel_samples(kernel_samples)
    key = sweep_key(experiment, alphas, widths, seeds, kernel_samples)
    cached = store.load_sweep(key)
    if cached is not None:
        ctx.report(progress=1.0, message="This sweep was computed before; showing the saved result.")
        return _with_existing_runs(store, from_arrays(PhaseDiagram, *cached))
    cells = width_cells(experiment, alphas, widths, seeds, kernel_samples)
    sweep = Sweep(cells, name=f"Phase diagram on {data.name}", kind=width_kind())
    record = run_sweep(sweep, store, backend=backend, address=address, workers=workers,
                       device=None if device is None else str(device), ctx=ctx)
    ctx.check()  # a cancelled sweep ends here, keeping its finished widths
    unfinished = [r.message for r in record.results if r.status not in FINISHED]
    if unfinished:
        raise ValueError(f"{len(unfinished)} of {len(widths)} widths failed: {unfinished[0]}")
    diagram = _assemble(store, data, experiment, alphas, widths, seeds, kernel_samples, sweep.keys)
    diagram.settings["sweep"] = key
    store.save_sweep(key, *to_arrays(diagram))
    ctx.report(progress=1.0, message=f"Trained {len(alphas) * len(widths) * len(seeds)} networks.")
    return diagram


def _assemble(store, data, experiment, alphas, widths, seeds, kernel_samples: int, keys: list[str]) -> PhaseDiagram:
    """The diagram from the members' runs: each run's summary carries its measures."""
    diagram = _empty_diagram(data, experiment.model, experiment.train, alphas, widths, seeds, kernel_samples)
    run_ids = np.full((len(alphas), len(widths)), "", dtype=object)
    for j, key in enumerate(keys):
        for m in range(len(alphas) * len(seeds)):
            record = store.settings(member_run_id(key, m))
            _put_member(diagram, j, m, record["summary"].get("phase", {}), record["status"] == "diverged")
        for i in range(len(alphas)):
            run_ids[i, j] = member_run_id(key, i * len(seeds))
    diagram.run_ids = run_ids.astype(str)
    return diagram


def _save_member(store, ensemble: EnsembleTrainer, m: int, experiment, data, device, key: str,
                 measures: dict) -> str:
    """Save ensemble member m as an ordinary run of `experiment`, its measures in the
    summary; returns its id."""
    model = experiment.model
    settings = experiment.to_dict() | {"dataset": data.name, "input_shape": list(data.input_shape),
                                       "n_outputs": data.n_outputs, "device": str(device), "sweep_cell": key}
    run_id = store.create(f"{data.name} sweep alpha={model.alpha:g} width={model.width} seed={model.seed}", settings)
    for step, state in sorted(ensemble.checkpoints[m].items()):
        store.save_checkpoint(run_id, step, state)
    history = ensemble.histories[m]
    store.save_metrics(run_id, history.to_dict())
    summary = {"steps": ensemble.step_count, "phase": measures}
    if history.test_loss:
        summary["test_loss"] = history.test_loss[-1]
        if not math.isnan(history.test_accuracy[-1]):
            summary["test_accuracy"] = history.test_accuracy[-1]
    if ensemble.diverged_at[m] is not None:
        store.finish(run_id, "diverged", summary, f"The loss became NaN or infinite at step {ensemble.diverged_at[m]}.")
    else:
        store.finish(run_id, "done", summary, f"Finished {ensemble.step_count} steps in a sweep.")
    return run_id


def _with_existing_runs(store, diagram: PhaseDiagram) -> PhaseDiagram:
    """The diagram with the ids of runs deleted since it was cached blanked out."""
    existing = {run.id for run in store.list()}
    diagram.run_ids = np.array([[r if r in existing else "" for r in row] for row in diagram.run_ids.tolist()], dtype=str)
    return diagram
