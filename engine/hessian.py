"""Curvature of the loss: the Hessian, seen through Hessian-vector products.

After PyHessian (Yao, Gholami, Keutzer & Mahoney 2020). The Hessian H of the mean loss over
(x, y) is never formed: every method needs only products H v, which `torch.func` gives as the
gradient of the gradient's dot product with v, batch by batch over the data.

- `top_eigenvalues`: the largest eigenvalues by power iteration, deflating the ones found.
- `min_eigenvalue`: the most negative one, by Lanczos (both ends of the spectrum at once).
- `trace`: Hutchinson's estimate E[z^T H z] with Rademacher vectors z.
- `density`: the spectral density by stochastic Lanczos quadrature.
- `convexity_map`: |lambda_min / lambda_max| over a plane of weights (Li et al. 2018).
- `sharpness`: the top eigenvalues at each checkpoint of a run (edge of stability: 2 / lr).

The algorithms work on flat vectors (one entry per parameter); eigenvectors come back as
dicts like `named_parameters()`. Every function takes `weights` to look at other weights than
the model's own; the model itself is never changed (weights and train/eval modes). Any model
works: it is evaluated in eval mode (`engine.modes.evaluating`), so a batch norm uses its
running statistics and dropout is off, and the loss is a function of the weights alone.

The long computations take `progress`, a function called with the share done (0..1) after
every HVP; a job passes one that reports and raises when the job is cancelled.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from engine import memory
from engine.landscape import (
    Params,
    Weights,
    as_data,
    as_parameters,
    flatten,
    plan_chunks,
    probe,
    steps_and_states,
    unflatten,
)
from engine.losses import LossArg, loss_function, loss_name
from engine.modes import evaluating
from engine.results import ConvexityMap, Sharpness

__all__ = ["hvp_function", "top_eigenvalues", "lanczos", "quadrature_nodes", "min_eigenvalue", "trace", "density",
           "ConvexitySettings", "convexity_map", "sharpness", "BACKWARD_FACTOR", "MAX_VECTORS_AT_ONCE"]

Matvec = Callable[[torch.Tensor], torch.Tensor]
Progress = Optional[Callable[[float], None]]  # called with the share of the work done
BACKWARD_FACTOR = 4  # activation memory of a gradient of a gradient relative to a forward pass
MAX_VECTORS_AT_ONCE = 64  # Hessian-vector products batched in one vmap call (Hutchinson), on a GPU


# ---------------------------------------------------------------- Hessian-vector products


def hvp_function(model: nn.Module, loss: LossArg, x, y, weights: Optional[Weights] = None,
                 batch_size: Optional[int] = None, vectors: Optional[int] = None,
                 memory_limit: Optional[float] = None) -> tuple[Matvec, Params]:
    """v -> H v, for the Hessian of the mean loss over all of (x, y), on flat vectors.

    Args:
        model: any nn.Module; evaluated in eval mode, with its buffers as they are.
        loss: "ce", "mse" or a callable (output, target) -> scalar mean.
        x, y: inputs and targets (tensors on any device, or numpy arrays).
        weights: where to take the Hessian; the model's own weights by default.
        batch_size: samples per HVP batch; by default as many as the memory budget allows.
        vectors: at most this many products per backward pass when several vectors come as
            rows; by default 1 on a CPU and MAX_VECTORS_AT_ONCE on a GPU.
        memory_limit: bytes the products may plan with; by default `engine.memory.budget`
            (half the free memory). When the gradient's graph over all the data fits, it is
            built once and every product is one backward pass through it.

    Returns:
        (hvp, w): the product as a function of a flat vector (n,) or of several stacked as
        rows (k, n), and the weights as a dict (its order is the order of the flat vectors;
        see `engine.landscape.unflatten`). `hvp.vectors_at_once` says how many rows one
        backward pass takes.

    Raises:
        ValueError: with a sentence, when even one sample's product would not fit.
    """
    loss_fn = loss_function(loss)
    x, y = as_data(model, x, y)
    w = as_parameters(model if weights is None else weights, model)
    w = {k: t.clone() for k, t in w.items()}  # a snapshot: later training cannot change it
    buffers = dict(model.named_buffers())
    first = next(iter(w.values()))
    _, activations = probe(model, x)
    # On a CPU a vmap over several vectors only adds memory traffic: one product at a time is
    # fastest there (75 against 168 ms per product with 64 at once, for an MLP 40-256-256-256-10
    # on 4000 samples); a GPU gains from the batch.
    most_vectors = vectors or (1 if first.device.type == "cpu" else MAX_VECTORS_AT_ONCE)
    n_parameters = sum(t.numel() for t in w.values())
    vector_bytes = n_parameters * first.element_size() * BACKWARD_FACTOR
    sample_bytes = activations * first.element_size() * BACKWARD_FACTOR
    memory.check_fits(vector_bytes + sample_bytes, first.device,
                      f"A Hessian-vector product of {n_parameters:,} parameters on one sample",
                      "use a smaller model, or a device with more memory", limit=memory_limit)
    budget = memory.budget(first.device) if memory_limit is None else int(memory_limit)
    vectors_at_once, batch = plan_chunks(most_vectors, len(x), vector_bytes, sample_bytes, budget, batch_size)

    def batch_loss(params: Params, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return loss_fn(functional_call(model, (params, buffers), (xb,)), yb)

    def pullback(xb: torch.Tensor, yb: torch.Tensor) -> Matvec:
        """v -> H_batch v (v one vector, or several as rows), as the gradient of g . v with the
        batch's gradient g built once with its own graph (double backward, as pyhessian does).

        Reverse over reverse: forward over reverse (jvp of grad) fails on mse_loss in
        torch 2.13 with "ZeroTensors are immutable".
        """
        params = {k: t.detach().requires_grad_(True) for k, t in w.items()}
        with torch.enable_grad(), evaluating(model):
            gradient = torch.autograd.grad(batch_loss(params, xb, yb), list(params.values()), create_graph=True)
        sizes = [t.numel() for t in params.values()]

        def product(v: torch.Tensor) -> torch.Tensor:
            rows = v.dim() == 2
            pieces = [piece.reshape((len(v),) + t.shape if rows else t.shape)
                      for piece, t in zip(v.split(sizes, dim=-1), params.values())]
            hv = torch.autograd.grad(gradient, list(params.values()), grad_outputs=pieces, retain_graph=True,
                                     is_grads_batched=rows)
            return torch.cat([h.reshape(len(v), -1) if rows else h.reshape(-1) for h in hv], dim=-1)

        return product

    batches = [(x[s:s + batch], y[s:s + batch]) for s in range(0, len(x), batch)]
    # All the data in one batch: build the gradient's graph once; each product is then one
    # backward pass through it. Otherwise the graphs would not fit together: rebuild per call.
    cached = [pullback(*batches[0])] if len(batches) == 1 else None

    def hvp(v: torch.Tensor) -> torch.Tensor:
        if v.dim() == 2 and vectors_at_once == 1:  # several vectors as rows, one at a time
            return torch.stack([over_the_data(row) for row in v])
        if v.dim() == 2:  # in blocks, each one batched backward pass
            return torch.cat([over_the_data(block) for block in v.split(vectors_at_once)])
        return over_the_data(v)

    def over_the_data(v: torch.Tensor) -> torch.Tensor:
        total = torch.zeros_like(v)
        for i, (xb, yb) in enumerate(batches):
            product = cached[i] if cached else pullback(xb, yb)
            total += product(v) * len(xb)  # each batch's mean, weighted by its size
        return total / len(x)

    hvp.vectors_at_once = vectors_at_once  # rows per backward pass: callers size their blocks by it
    return hvp, w


def _random_vector(like: torch.Tensor, generator: torch.Generator,
                   kind: str = "gaussian") -> torch.Tensor:
    """A random vector of like's size, dtype and device, Gaussian or Rademacher (+-1).

    Drawn on the CPU, so the same seed gives the same vector on every device.
    """
    if kind == "rademacher":
        v = torch.randint(0, 2, (like.numel(),), generator=generator).to(like.dtype) * 2 - 1
    else:
        v = torch.randn(like.numel(), generator=generator, dtype=like.dtype)
    return v.to(like.device)


def _reporting(matvec: Matvec, products: int, progress: Progress) -> Matvec:
    """`matvec`, reporting to `progress` the share of `products` HVPs done after every call
    (several vectors as rows count one each)."""
    if progress is None:
        return matvec
    done = 0

    def counted(v: torch.Tensor) -> torch.Tensor:
        nonlocal done
        result = matvec(v)
        done += len(v) if v.dim() == 2 else 1
        progress(min(done / products, 1.0))
        return result

    return counted


def _part(progress: Progress, index: int, parts: int) -> Progress:
    """The progress of part `index` of `parts` equal parts, as a share of the whole."""
    if progress is None:
        return None
    return lambda share: progress((index + share) / parts)


def _finish(progress: Progress) -> None:
    """Report the work done: iterations that converge early end short of their budget."""
    if progress is not None:
        progress(1.0)


# ---------------------------------------------------------------- eigenvalues


def _power_iteration(matvec: Matvec, v: torch.Tensor, found: list[torch.Tensor],
                     iters: int, tol: float) -> tuple[float, torch.Tensor]:
    """The eigenvalue of largest magnitude of a symmetric map, outside the span of `found`.

    Keeps v orthogonal to the (orthonormal) vectors found so far, which deflates them.
    Stops when the Rayleigh quotient changes by less than `tol` relative to its size.
    """
    value = None
    for _ in range(iters):
        v = _orthonormalize(v, found)
        hv = matvec(v)
        new = float(torch.dot(v, hv))
        converged = value is not None and abs(new - value) <= tol * (abs(value) + 1e-12)
        value, v = new, hv
        if converged:
            break
    return value, _orthonormalize(v, found)


def _orthonormalize(v: torch.Tensor, basis: list[torch.Tensor]) -> torch.Tensor:
    """v minus its projection on orthonormal `basis`, made unit length."""
    for b in basis:
        v = v - torch.dot(v, b) * b
    return v / v.norm().clamp_min(1e-30)


def top_eigenvalues(model: nn.Module, loss: LossArg, x, y, k: int = 1, iters: int = 100,
                    tol: float = 1e-4, seed: int = 0, weights: Optional[Weights] = None,
                    batch_size: Optional[int] = None,
                    progress: Progress = None) -> tuple[np.ndarray, list[Params]]:
    """The k eigenvalues of the Hessian of largest magnitude, by deflated power iteration.

    Near a minimum these are the k largest (positive) ones, the sharpness of the loss.

    Args:
        model, loss, x, y, weights, batch_size: see `hvp_function`.
        k: how many eigenvalues.
        iters: the most HVPs per eigenvalue.
        tol: relative change of the eigenvalue estimate at which to stop.
        seed: the seed of the random starting vectors.
        progress: called with the share done (of k * iters HVPs at most) after every HVP.

    Returns:
        (values (k,) descending, eigenvectors as unit-norm dicts like `named_parameters()`).
    """
    hvp, w = hvp_function(model, loss, x, y, weights, batch_size)
    hvp = _reporting(hvp, k * iters, progress)
    flat, generator = flatten(w), torch.Generator().manual_seed(seed)
    values, vectors = [], []
    for _ in range(k):
        value, vector = _power_iteration(hvp, _random_vector(flat, generator), vectors, iters, tol)
        values.append(value)
        vectors.append(vector)
    _finish(progress)
    order = np.argsort(values)[::-1]
    return np.array(values)[order], [unflatten(vectors[i], w) for i in order]


# ---------------------------------------------------------------- Lanczos


def lanczos(matvec: Matvec, v: torch.Tensor, iters: int,
            tol: Optional[float] = None) -> tuple[np.ndarray, np.ndarray]:
    """The Lanczos tridiagonalization T of a symmetric map, from a start vector.

    T's eigenvalues (Ritz values) approximate the map's, the two ends of the spectrum first.
    Full reorthogonalization keeps the basis orthogonal in floating point; it holds `iters`
    vectors of the parameters' size.

    Args:
        matvec: the map, on flat vectors.
        v: the start vector.
        iters: the most steps (HVPs).
        tol: if given, stop once both extreme Ritz values are within tol times the
            spectrum's size of an eigenvalue of the map: their residuals ||H x - theta x|| =
            beta |last component of T's eigenvector| bound that distance. (A rule on how much
            the Ritz values changed since the last step stops too early: the low end can
            stall for a few steps before it moves on.)

    Returns:
        (alphas (m,), betas (m - 1,)): the diagonal and off-diagonal of T. Stops early when
        the Krylov space stops growing (the next vector vanishes).

    Raises:
        ValueError: with a sentence, when the basis would not fit in memory.
    """
    memory.check_fits(min(iters, v.numel()) * v.numel() * v.element_size(), v.device,
                      f"The Lanczos basis of {min(iters, v.numel())} vectors of {v.numel():,} parameters",
                      "use fewer Lanczos steps (iters)")
    basis = [v / v.norm()]
    alphas, betas = [], []
    small = math.sqrt(torch.finfo(v.dtype).eps)
    for _ in range(min(iters, v.numel())):
        w = matvec(basis[-1])
        alphas.append(float(torch.dot(w, basis[-1])))
        stacked = torch.stack(basis)
        for _ in range(2):  # twice is enough to be orthogonal to working precision
            w = w - stacked.T @ (stacked @ w)
        beta = float(w.norm())
        ritz, vectors = np.linalg.eigh(_tridiagonal(np.array(alphas), np.array(betas)))
        scale = np.abs(ritz).max()
        residuals = beta * np.abs(vectors[-1, [0, -1]])  # of the lowest and the highest Ritz pair
        converged = tol is not None and residuals.max() <= tol * scale
        if converged or len(alphas) == min(iters, v.numel()) or beta <= small * scale:
            break
        betas.append(beta)
        basis.append(w / beta)
    return np.array(alphas), np.array(betas)


def _tridiagonal(alphas: np.ndarray, betas: np.ndarray) -> np.ndarray:
    return np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)


def quadrature_nodes(alphas: np.ndarray, betas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gauss quadrature from a Lanczos run: nodes (Ritz values) and weights summing to 1.

    The weights are the squared first components of T's eigenvectors: how much of the
    start vector lies along each Ritz vector.
    """
    nodes, vectors = np.linalg.eigh(_tridiagonal(alphas, betas))
    return nodes, vectors[0] ** 2


def _extreme_eigenvalues(matvec: Matvec, v: torch.Tensor, iters: int,
                         tol: float) -> tuple[float, float]:
    """(lambda_max, lambda_min) of a symmetric map: the extreme Ritz values of one Lanczos run.

    Lanczos finds both ends of the spectrum at once, and much faster than power iteration on
    a shifted map when lambda_min is small next to lambda_max.
    """
    ritz = np.linalg.eigvalsh(_tridiagonal(*lanczos(matvec, v, iters, tol)))
    return float(ritz[-1]), float(ritz[0])


def min_eigenvalue(model: nn.Module, loss: LossArg, x, y, iters: int = 100, tol: float = 1e-4,
                   seed: int = 0, weights: Optional[Weights] = None,
                   batch_size: Optional[int] = None, progress: Progress = None) -> float:
    """The smallest (most negative) eigenvalue of the Hessian, by Lanczos.

    The smallest Ritz value approaches lambda_min from above; it stops when it changes by
    less than tol times the largest eigenvalue's size.

    Args:
        iters: the most HVPs (Lanczos steps).
        model, loss, x, y, tol, seed, weights, batch_size, progress: see `top_eigenvalues`.
    """
    hvp, w = hvp_function(model, loss, x, y, weights, batch_size)
    start = _random_vector(flatten(w), torch.Generator().manual_seed(seed))
    lowest = _extreme_eigenvalues(_reporting(hvp, iters, progress), start, iters, tol)[1]
    _finish(progress)
    return lowest


# ---------------------------------------------------------------- trace and density


def trace(model: nn.Module, loss: LossArg, x, y, samples: int = 100, seed: int = 0,
          weights: Optional[Weights] = None, batch_size: Optional[int] = None,
          progress: Progress = None) -> float:
    """Hutchinson's estimate of the Hessian's trace: the mean of z^T H z over Rademacher z.

    Unbiased; its standard deviation is sqrt(2 * sum_{i != j} H_ij^2 / samples), so it is
    exact for a diagonal Hessian and sharper the more diagonal the Hessian is.

    Args:
        samples: how many random vectors (one HVP each).
        model, loss, x, y, seed, weights, batch_size, progress: see `top_eigenvalues`.
    """
    hvp, w = hvp_function(model, loss, x, y, weights, batch_size)
    block = hvp.vectors_at_once  # as many vectors as one backward pass takes, so progress is timely
    hvp = _reporting(hvp, samples, progress)
    flat, generator = flatten(w), torch.Generator().manual_seed(seed)
    total = 0.0
    for start in range(0, samples, block):
        k = min(block, samples - start)
        z = torch.stack([_random_vector(flat, generator, kind="rademacher") for _ in range(k)])
        total += float((z * hvp(z)).sum())  # the sum of z_i^T H z_i over the block
    return total / samples


def density(model: nn.Module, loss: LossArg, x, y, iters: int = 50, runs: int = 1, seed: int = 0,
            bins: int = 1000, sigma: Optional[float] = None, weights: Optional[Weights] = None,
            batch_size: Optional[int] = None, progress: Progress = None) -> tuple[np.ndarray, np.ndarray]:
    """The Hessian's eigenvalue density by stochastic Lanczos quadrature (Ghorbani et al. 2019).

    Each run starts Lanczos from a random unit vector; its Ritz values, weighted by the
    quadrature weights, are a discrete spectrum that Gaussians of width sigma smooth.
    The runs are averaged; the density integrates to 1.

    Args:
        iters: Lanczos steps (HVPs) per run.
        runs: independent random start vectors.
        bins: grid points.
        sigma: the Gaussians' width; by default 1% of the spectrum's span.
        model, loss, x, y, seed, weights, batch_size, progress: see `top_eigenvalues`.

    Returns:
        (grid (bins,), density (bins,)).
    """
    hvp, w = hvp_function(model, loss, x, y, weights, batch_size)
    hvp = _reporting(hvp, runs * iters, progress)
    flat, generator = flatten(w), torch.Generator().manual_seed(seed)
    nodes, node_weights = [], []
    for _ in range(runs):
        theta, tau = quadrature_nodes(*lanczos(hvp, _random_vector(flat, generator), iters))
        nodes.append(theta)
        node_weights.append(tau / runs)
    _finish(progress)
    nodes, node_weights = np.concatenate(nodes), np.concatenate(node_weights)
    span = nodes.max() - nodes.min()
    sigma = sigma or 0.01 * max(span, abs(nodes).max(), 1e-12)
    grid = np.linspace(nodes.min() - 6 * sigma, nodes.max() + 6 * sigma, bins)
    gaussians = np.exp(-0.5 * ((grid[:, None] - nodes[None, :]) / sigma) ** 2)
    gaussians /= sigma * math.sqrt(2 * math.pi)
    return grid, gaussians @ node_weights


# ---------------------------------------------------------------- maps and runs


@dataclass(frozen=True)
class ConvexitySettings:
    """The grid and the Lanczos runs of `convexity_map`.

    Attributes:
        xs: the grid's coordinates along d1.
        ys: along d2; the same as xs when None.
        iters: the most Lanczos steps (HVPs) per grid point.
        tol: stop a point's run when both extreme Ritz values are within tol times the
            spectrum's size of an eigenvalue (see `lanczos`).
        seed: the seed of the runs' random start vectors.
        batch_size: samples per HVP batch; by default as many as the memory budget allows.
    """

    xs: Sequence[float] = tuple(np.linspace(-1.0, 1.0, 7))
    ys: Optional[Sequence[float]] = None
    iters: int = 50
    tol: float = 1e-4
    seed: int = 0
    batch_size: Optional[int] = None

    def __post_init__(self):
        for axis in ("xs", "ys"):
            values = getattr(self, axis)
            if values is not None and (np.ndim(values) != 1 or len(values) == 0
                                       or not np.isfinite(np.asarray(values, dtype=float)).all()):
                raise ValueError(f"The convexity map's {axis} must be a non-empty list of finite numbers.")
        if not isinstance(self.iters, (int, np.integer)) or self.iters < 2:
            raise ValueError(f"The convexity map needs at least 2 Lanczos steps (iters), not {self.iters!r}.")
        if not isinstance(self.tol, (int, float)) or not self.tol >= 0:
            raise ValueError(f"The convexity map's tolerance (tol) must be at least 0, not {self.tol!r}.")

    @property
    def grid(self) -> tuple[np.ndarray, np.ndarray]:
        """(xs, ys) as float arrays."""
        xs = np.asarray(self.xs, dtype=float)
        return xs, xs if self.ys is None else np.asarray(self.ys, dtype=float)


def convexity_map(model: nn.Module, loss: LossArg, x, y, d1: Weights, d2: Weights,
                  settings: ConvexitySettings = ConvexitySettings(), *, center: Optional[Weights] = None,
                  progress: Progress = None) -> ConvexityMap:
    """|lambda_min / lambda_max| of the Hessian at every point of a (coarse) plane grid.

    Each point costs one Lanczos run (up to `settings.iters` HVPs), so keep the grid small.

    Args:
        model, loss, x, y: see `top_eigenvalues`.
        d1, d2, center: the plane, as in `engine.landscape.surface` (centred on the model's
            own weights by default).
        settings: the grid and the Lanczos runs.
        progress: called with the share done after every HVP.
    """
    xs, ys = settings.grid
    origin = as_parameters(model if center is None else center, model)
    d1, d2 = as_parameters(d1, model), as_parameters(d2, model)
    b, a = np.meshgrid(ys, xs, indexing="ij")  # row j is ys[j], column i is xs[i]
    generator = torch.Generator().manual_seed(settings.seed)
    highs, lows = [], []
    for i, (alpha, beta) in enumerate(zip(a.ravel(), b.ravel())):
        weights = {k: w + alpha * d1[k] + beta * d2[k] for k, w in origin.items()}
        hvp, w = hvp_function(model, loss, x, y, weights, settings.batch_size)
        hvp = _reporting(hvp, settings.iters, _part(progress, i, a.size))
        high, low = _extreme_eigenvalues(hvp, _random_vector(flatten(w), generator), settings.iters, settings.tol)
        highs.append(high)
        lows.append(low)
    _finish(progress)
    high, low = np.array(highs).reshape(a.shape), np.array(lows).reshape(a.shape)
    ratio = np.abs(low) / np.maximum(np.abs(high), 1e-30)
    return ConvexityMap(xs=xs, ys=ys, ratio=ratio, lambda_max=high, lambda_min=low,
                        settings={"loss": loss_name(loss), "iters": settings.iters, "tol": settings.tol,
                                  "seed": settings.seed})


def sharpness(model: nn.Module, loss: LossArg, x, y, checkpoints: Union[list, dict], k: int = 1,
              lr: Optional[float] = None, iters: int = 100, tol: float = 1e-4, seed: int = 0,
              batch_size: Optional[int] = None, progress: Progress = None) -> Sharpness:
    """The top k Hessian eigenvalues at every checkpoint of a run.

    With gradient descent at learning rate lr, the top eigenvalue rises to about 2 / lr and
    hovers there (Cohen et al. 2021, the edge of stability).

    Args:
        checkpoints: a {step: weights} dict such as `Trainer.checkpoints`, or a list.
        lr: the run's learning rate, kept for the 2 / lr line.
        model, loss, x, y, k, iters, tol, seed, batch_size, progress: see `top_eigenvalues`.
    """
    steps, states = steps_and_states(checkpoints)
    values = [top_eigenvalues(model, loss, x, y, k, iters, tol, seed, weights=state, batch_size=batch_size,
                              progress=_part(progress, i, len(states)))[0] for i, state in enumerate(states)]
    return Sharpness(steps=steps, eigenvalues=np.array(values).reshape(len(states), k), lr=lr)
