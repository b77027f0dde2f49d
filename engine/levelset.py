"""The level-set lens: walk inside a class's confidence level set toward another input.

After Balasubramanian & Feizi 2023. From a source input x_s, correctly classified as y_s, the
traversal walks toward a target input x_t while the confidence p(y_s | x) stays where it
started. Each step

    g       = grad_x CE(f(x), y_s)                   (the direction that lowers the confidence)
    v       = x_t - x                                (toward the target)
    v_perp  = v - (<g, v> / <g, g>) g                (that move, along the level set)
    delta   = clip(delta + (eps / 2) g, -eps, eps)   (a small, bounded confidence restorer)
    x'      = clip(x + eta v_perp - delta, bounds)

and the proposal x' is accepted only if p0 - p(x')[y_s] < threshold, p0 being the
confidence at the source. Paths can end close to a target of another class at the source's
confidence: the level sets are large and connected. The triangle spanned by the source and two
end points stays confident too (`triangle_confidence`): the level set is star-shaped around
the source. `width_probe` measures how far the level set extends sideways from a path, and
`confidence_map` draws a 2-D model's level sets.

Fast by construction: B pairs walk at once, each with its own acceptance, on the model's
device; one forward and backward pass per step serves both the proposal's test and the next
step's gradient.

Inputs are one sample or a batch, as numpy arrays or torch tensors on any device, either
flat, (D,) or (B, D), like the lab's datasets, or in their natural shape, e.g. a batch of
images (B, C, H, W) for a conv net that takes images. Inside, points are flat rows (a step
is arithmetic on vectors); the model gets them back in the shape they were given in
(`row_model`). The model is put in eval mode (BatchNorm on its running statistics) and given
back in the mode it came in; its parameters are never changed and never receive gradients.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine import memory
from engine.device import to_float64
from engine.landscape import probe
from engine.modes import evaluating
from engine.results import ConfidenceMap, LevelSetPath, TriangleConfidence, WidthProbe, is_image_shape

__all__ = ["placement", "as_rows", "natural_shape", "RowModel", "row_model", "clip_to", "rows_per_pass", "probabilities",
           "class_confidence", "confidence_and_gradient", "orthogonal_component", "restoring_step", "proposal",
           "traverse", "gaussian_window", "ssim", "barycentric_grid", "plane_coordinates", "triangle_confidence",
           "orthogonal_directions", "width_probe", "confidence_map", "pgd_attack", "adversarial_loss"]

Array = Union[np.ndarray, torch.Tensor]
Bounds = Optional[tuple[float, float]]
ClassArg = Union[None, int, Sequence[int], Array]

DEFAULT_DROPS = (0.01, 0.05, 0.1, 0.2)
DEFAULT_RADII = tuple(np.linspace(0.0, 2.0, 11))
SSIM_SIGMA = 1.5  # the Gaussian window of Wang et al. 2004
SSIM_WINDOW = 11  # its size, shrunk to fit small images
SSIM_K1, SSIM_K2 = 0.01, 0.03


# ---------------------------------------------------------------- models and arrays


def placement(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Where the model computes and in which floating dtype (CPU float32 when it has no weights)."""
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    return torch.device("cpu"), torch.float32


def as_rows(x: Array, model: nn.Module, input_shape: Optional[tuple] = None) -> tuple[torch.Tensor, bool]:
    """`x` as a (B, D) tensor on the model's device and dtype, and whether it was one sample.

    Args:
        x: one sample, (D,) or `input_shape`, or a batch, (B, D) or (B, *input_shape).
        model: the model whose device and dtype to use.
        input_shape: one sample's natural shape, to recognise unflattened samples.
    """
    device, dtype = placement(model)
    x = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    x = x.to(device=device, dtype=dtype)
    shape = tuple(x.shape)
    natural = tuple(input_shape) if input_shape is not None else None
    if len(shape) == 1 or shape == natural:
        return x.reshape(1, -1), True
    if len(shape) == 2 or (natural is not None and shape[1:] == natural):
        return x.reshape(len(x), -1), False
    if natural is not None:
        raise ValueError(f"Inputs of shape {shape} are neither one sample of shape {natural} nor a "
                         f"batch of them (B, {', '.join(map(str, natural))}), flat or not.")
    raise ValueError("Expected one flattened input (D,) or a batch (B, D), not an array of "
                     f"shape {shape}.")


def natural_shape(x: Array, input_shape: Optional[tuple]) -> Optional[tuple]:
    """One sample's shape when `x` comes in its natural (unflattened) shape, else None.

    A batch with more than two dimensions, (B, C, H, W), is natural with the shape (C, H, W);
    so is one sample or a batch shaped like `input_shape` when it has more than one dimension.
    Flat inputs, (D,) or (B, D), are not.
    """
    shape = tuple(np.shape(x))
    if input_shape is not None and len(input_shape) > 1:
        natural = tuple(int(s) for s in input_shape)
        return natural if shape in (natural, shape[:1] + natural) else None
    return shape[1:] if len(shape) > 2 else None


class RowModel(nn.Module):
    """A model seen as a function of flat rows: (B, D) rows are reshaped to (B, *shape) first.

    The level-set walk does its arithmetic on flat vectors; a conv net that takes images
    gets each batch of points back as images."""

    def __init__(self, model: nn.Module, shape: tuple):
        super().__init__()
        self.model, self.shape = model, tuple(shape)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return self.model(rows.reshape(len(rows), *self.shape))


def row_model(model: nn.Module, x: Array, input_shape: Optional[tuple] = None
              ) -> tuple[nn.Module, Optional[tuple]]:
    """(the model as a function of flat rows, one sample's shape).

    Inputs given in their natural shape (see `natural_shape`) reach the model in that shape,
    through a `RowModel`; flat inputs reach it flat, as before. The shape is `input_shape`
    or, for a natural batch, the shape of one of its samples.
    """
    shape = natural_shape(x, input_shape)
    if shape is None:
        return model, None if input_shape is None else tuple(input_shape)
    return RowModel(model, shape), shape


def _class_rows(source_class: ClassArg, n: int, device: torch.device) -> Optional[torch.Tensor]:
    """The class of each of n rows as a (n,) long tensor; None stays None (use predictions)."""
    if source_class is None:
        return None
    c = torch.as_tensor(np.asarray(source_class)) if not isinstance(source_class, torch.Tensor) \
        else source_class.detach()
    return c.to(device=device, dtype=torch.long).reshape(-1).expand(n).clone()


def clip_to(x: torch.Tensor, bounds: Bounds) -> torch.Tensor:
    """x clipped into the box [low, high] in every coordinate; unchanged when bounds is None."""
    return x if bounds is None else x.clamp(float(bounds[0]), float(bounds[1]))


def rows_per_pass(model: nn.Module, x: torch.Tensor, memory_limit: Optional[float] = None) -> int:
    """Rows of x one forward pass without gradients may take, within the memory budget.

    One row's activations are measured by running it through the model, so that a big
    conv net on images takes few rows at a time and a small MLP many.

    Args:
        model: the model, as a function of the rows.
        x: the (N, D) rows, on the model's device.
        memory_limit: the bytes a pass may use; by default `engine.memory.budget` of the device.
    """
    if len(x) == 0:
        return 1
    _, activations = probe(model, x)
    return memory.rows_per_chunk(activations * x.element_size(), len(x), x.device, memory_limit)


def probabilities(model: nn.Module, x: torch.Tensor, chunk: Optional[int] = None,
                  memory_limit: Optional[float] = None) -> torch.Tensor:
    """softmax(model(x)) for (N, D) rows, in chunks, without gradients.

    Args:
        model: a classifier of the rows.
        x: (N, D) rows on the model's device.
        chunk: rows per forward pass; by default `rows_per_pass` within `memory_limit`.
        memory_limit: the bytes a pass may use; by default `engine.memory.budget`.
    """
    chunk = chunk or rows_per_pass(model, x, memory_limit)
    with torch.no_grad():
        return torch.cat([F.softmax(model(part), dim=1) for part in x.split(chunk)])


def class_confidence(model: nn.Module, x: torch.Tensor, classes: torch.Tensor,
                     chunk: Optional[int] = None, memory_limit: Optional[float] = None) -> torch.Tensor:
    """p(classes[i] | x[i]) for (N, D) rows; `classes` is (N,) or one class for all rows.
    `chunk` and `memory_limit` as in `probabilities`."""
    p = probabilities(model, x, chunk, memory_limit)
    return p.gather(1, classes.expand(len(x)).reshape(-1, 1)).squeeze(1)


def confidence_and_gradient(model: nn.Module, x: torch.Tensor,
                            classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(p(classes | x), grad_x CE(f(x), classes)) for each row of x, in one backward pass.

    Summing the per-row losses gives each row its own gradient, because rows do not
    interact in eval mode. Gradients go to x only, never to the parameters.
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        losses = F.cross_entropy(logits, classes, reduction="none")
        (g,) = torch.autograd.grad(losses.sum(), x)
    # p = exp(-CE), the softmax probability of the class, without a second softmax
    return torch.exp(-losses.detach()), g


# ---------------------------------------------------------------- one traversal step


def orthogonal_component(v: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """v_perp = v - (<g, v> / <g, g>) g, row by row: the part of v along the level set.

    To first order the confidence does not change along v_perp. Rows with g = 0 (a flat
    confidence) keep all of v.
    """
    gg = (g * g).sum(dim=1, keepdim=True)
    gv = (g * v).sum(dim=1, keepdim=True)
    coefficient = torch.where(gg > 0, gv / gg.clamp_min(torch.finfo(g.dtype).tiny), torch.zeros_like(gg))
    return v - coefficient * g


def restoring_step(delta: torch.Tensor, g: torch.Tensor, eps: float) -> torch.Tensor:
    """delta + (eps/2) g, clipped to [-eps, eps]: subtracted from x, it raises the confidence."""
    return (delta + 0.5 * eps * g).clamp(-eps, eps)


def proposal(x: torch.Tensor, target: torch.Tensor, g: torch.Tensor, delta: torch.Tensor,
             step_size: float, bounds: Bounds) -> torch.Tensor:
    """x' = clip(x + eta v_perp - delta, bounds), the point a step proposes."""
    return clip_to(x + step_size * orthogonal_component(target - x, g) - delta, bounds)


# ---------------------------------------------------------------- the traversal


def traverse(model: nn.Module, source: Array, target: Array, *, steps: int = 200,
             step_size: float = 0.02, eps: float = 1e-3, threshold: float = 0.05,
             bounds: Bounds = (0.0, 1.0), source_class: ClassArg = None, record_every: int = 1,
             input_shape: Optional[tuple] = None) -> LevelSetPath:
    """Walk from each source toward its target inside the source class's level set.

    Args:
        model: any classifier: of flat inputs (N, D), or of inputs in their natural shape,
            e.g. a conv net of images (N, C, H, W); it gets the points in the shape that
            `source` comes in. Outputs are (N, C) logits.
        source: one input (D,) or B inputs (B, D), or in their natural shape: B inputs
            (B, C, H, W), or one input of `input_shape`. A batch walks B independent pairs
            at once.
        target: the targets, shaped like `source` (one target is shared by all sources).
        steps: how many steps to propose.
        step_size: eta, the share of the remaining way to the target a step moves.
        eps: the bound on the confidence-restoring step delta, per coordinate. delta
            accumulates, so a large eps keeps the path a standing distance (about
            eps sqrt(D) / step_size) from the target: the default is small. On a digits
            MLP, 1e-3 accepted most steps and came closest to the targets in 200 steps.
        threshold: a proposal is accepted only if the confidence fell by less than this
            from the source's.
        bounds: (low, high) box for every coordinate (e.g. a dataset's `bounds`), or None.
        source_class: the class whose confidence is kept: one class for all pairs, one per
            pair, or None for the model's prediction at each source.
        record_every: keep every k-th point of the path (and always the last).
        input_shape: one sample's natural shape (taken from `source` when it comes as a
            batch of images); for images, e.g. (1, 8, 8), the result also measures SSIM to
            the target (not for signals such as (1, 40)).

    Returns:
        A `LevelSetPath`: (T, D) arrays of flat points for one source, (T, B, D) for a batch,
        with the samples' shape as `input_shape`.
    """
    _check_settings(steps, step_size, eps, threshold, record_every)
    model, input_shape = row_model(model, source, input_shape)
    x, single = as_rows(source, model, input_shape)
    x_target, _ = as_rows(target, model, input_shape)
    x_target = x_target.expand_as(x)
    with evaluating(model):
        classes = _class_rows(source_class, len(x), x.device)
        if classes is None:
            classes = probabilities(model, x).argmax(dim=1)
        p0, g = confidence_and_gradient(model, x, classes)
        delta = torch.zeros_like(x)
        p = p0
        points, confidences, recorded, accepted = [x], [p0], [0], []
        for step in range(1, steps + 1):
            delta = restoring_step(delta, g, eps)
            x_new = proposal(x, x_target, g, delta, step_size, bounds)
            p_new, g_new = confidence_and_gradient(model, x_new, classes)
            accept = (p0 - p_new) < threshold
            # Each pair keeps its own point: a rejected pair stays where it was, with its
            # old gradient, and tries again with a larger restoring step.
            x = torch.where(accept[:, None], x_new, x)
            g = torch.where(accept[:, None], g_new, g)
            p = torch.where(accept, p_new, p)
            accepted.append(accept)
            if step % record_every == 0 or step == steps:
                points.append(x)
                confidences.append(p)
                recorded.append(step)
    settings = {"steps": steps, "step_size": step_size, "eps": eps, "threshold": threshold,
                "bounds": None if bounds is None else [float(b) for b in bounds],
                "record_every": record_every, "device": str(x.device),
                "source_confidence": p0.tolist()}
    return _path_result(torch.stack(points), torch.stack(confidences), recorded,
                        torch.stack(accepted) if accepted else torch.zeros(0, len(x), dtype=torch.bool),
                        x_target, classes, input_shape, bounds, settings, single)


def _check_settings(steps: int, step_size: float, eps: float, threshold: float, record_every: int) -> None:
    if not isinstance(steps, int) or steps < 0:
        raise ValueError("Steps must be a whole number, 0 or more.")
    if not step_size > 0 or not eps >= 0 or not threshold > 0:
        raise ValueError("Step size and threshold must be positive, and eps 0 or more.")
    if not isinstance(record_every, int) or record_every < 1:
        raise ValueError("Record every must be a whole number of at least 1.")


def _path_result(points: torch.Tensor, confidence: torch.Tensor, recorded: list[int],
                 accepted: torch.Tensor, target: torch.Tensor, classes: torch.Tensor,
                 input_shape: Optional[tuple], bounds: Bounds, settings: dict,
                 single: bool) -> LevelSetPath:
    """Measure the recorded points' distances to the targets and pack the arrays as numpy."""
    difference = points - target  # (T, B, D)
    l2 = difference.norm(dim=2)
    linf = difference.abs().amax(dim=2)
    similarity = None
    if is_image_shape(input_shape):
        data_range = 1.0 if bounds is None else float(bounds[1]) - float(bounds[0])
        similarity = ssim(points, target.expand_as(points), input_shape, data_range=data_range)
    squeeze = (lambda a: a[:, 0]) if single else (lambda a: a)  # noqa: E731 (drop the pair axis)
    numpy = lambda t: t.detach().cpu().numpy()  # noqa: E731
    return LevelSetPath(
        path=squeeze(numpy(points)), confidence=squeeze(numpy(confidence)),
        step=np.asarray(recorded), accepted=squeeze(numpy(accepted)), l2=squeeze(numpy(l2)),
        linf=squeeze(numpy(linf)), target=numpy(target[0] if single else target),
        source_class=numpy(classes[0] if single else classes),
        ssim=None if similarity is None else squeeze(similarity),
        input_shape=None if input_shape is None else tuple(int(s) for s in input_shape),
        settings=settings,
    )


# ---------------------------------------------------------------- SSIM


def gaussian_window(size: int, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """A normalized 1-D Gaussian of `size` taps (odd), in float64."""
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    w = torch.exp(-offsets ** 2 / (2 * sigma ** 2))
    return w / w.sum()


def ssim(a: Array, b: Array, shape: tuple, *, data_range: float = 1.0,
         sigma: float = SSIM_SIGMA) -> np.ndarray:
    """Structural similarity (Wang et al. 2004) of images, with a Gaussian window.

    Local means, variances and the covariance are Gaussian-weighted averages over each
    window that fits inside the image (no padding); SSIM is the mean of

        (2 mu_a mu_b + C1)(2 s_ab + C2) / ((mu_a^2 + mu_b^2 + C1)(s_a^2 + s_b^2 + C2))

    over windows and channels, with C1 = (0.01 L)^2 and C2 = (0.03 L)^2. The window has
    11 taps, or the largest odd size that fits a smaller image.

    Args:
        a, b: images flattened to (..., D) (or shaped (..., *shape)), same shape.
        shape: one image's shape, (H, W) or (C, H, W).
        data_range: L, the range of the pixel values (1 for images in [0, 1]).
        sigma: the window's standard deviation in pixels.

    Returns:
        (...) SSIM of each pair of images; 1 for identical images.
    """
    channels, height, width = (1, *shape) if len(shape) == 2 else tuple(shape[-3:])
    a, b = (t.detach() if isinstance(t, torch.Tensor) else torch.from_numpy(np.array(t, dtype=np.float64))
            for t in (a, b))
    if a.shape != b.shape:
        raise ValueError(f"SSIM compares images of one shape, not {tuple(a.shape)} and {tuple(b.shape)}.")
    unflattened = tuple(a.shape[-len(shape):]) == tuple(shape)
    lead = a.shape[:-len(shape)] if unflattened else a.shape[:-1]  # the images' own axes
    a = to_float64(a).reshape(-1, channels, height, width)  # on the CPU for a device without float64
    b = to_float64(b).to(a.device).reshape(-1, channels, height, width)
    size = min(SSIM_WINDOW, height, width)
    size -= 1 - size % 2  # odd, so the window has a centre
    w = gaussian_window(size, sigma).to(a.device)
    kernel = (w[:, None] * w[None, :]).expand(channels, 1, size, size)

    def local_mean(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel, groups=channels)

    mu_a, mu_b = local_mean(a), local_mean(b)
    var_a = local_mean(a * a) - mu_a ** 2
    var_b = local_mean(b * b) - mu_b ** 2
    cov = local_mean(a * b) - mu_a * mu_b
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    index = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return index.mean(dim=(1, 2, 3)).reshape(lead).cpu().numpy()


# ---------------------------------------------------------------- star statistics


def barycentric_grid(resolution: int) -> np.ndarray:
    """(P, 2) weights (u, w) = (i, j) / n with i + j <= n: a triangular grid, edges included."""
    n = resolution
    return np.array([(i / n, j / n) for i in range(n + 1) for j in range(n + 1 - i)])


def plane_coordinates(source: torch.Tensor, end_a: torch.Tensor, end_b: torch.Tensor) -> np.ndarray:
    """(3, 2) coordinates of source, A and B in their plane: source at 0, A on the first axis.

    Gram-Schmidt on A - source and B - source keeps the triangle's true side lengths and
    angles. A degenerate (flat) triangle lies on the first axis.
    """
    da, db = to_float64(end_a - source), to_float64(end_b - source)
    length_a = da.norm()
    e1 = da / length_a if length_a > 0 else torch.zeros_like(da)
    along = (db @ e1)
    across = (db - along * e1).norm()
    return np.array([[0.0, 0.0], [float(length_a), 0.0], [float(along), float(across)]])


def triangle_confidence(model: nn.Module, source: Array, end_a: Array, end_b: Array, *,
                        resolution: int = 20, source_class: Optional[int] = None,
                        drops: Sequence[float] = DEFAULT_DROPS,
                        input_shape: Optional[tuple] = None) -> TriangleConfidence:
    """The source class's confidence over the triangle (source, end A, end B).

    With A and B the end points of two traversals from the same source, a confident
    triangle says the level set is star-shaped: the straight paths from the source to the
    end points, and between them, stay in it.

    Args:
        model: the classifier.
        source, end_a, end_b: three inputs of shape (D,).
        resolution: n, the grid has (n + 1)(n + 2) / 2 points, n + 1 on each edge.
        source_class: the class to measure; the model's prediction at the source if None.
        drops: confidence drops d for the fraction of points above p_source - d.
        input_shape: one sample's natural shape: inputs of that shape reach the model in it.
    """
    model, input_shape = row_model(model, source, input_shape)
    (s, a, b) = (as_rows(t, model, input_shape)[0][0] for t in (source, end_a, end_b))
    weights = barycentric_grid(resolution)
    wt = torch.as_tensor(weights, dtype=s.dtype, device=s.device)
    points = s + wt[:, :1] * (a - s) + wt[:, 1:] * (b - s)
    with evaluating(model):
        if source_class is None:
            source_class = int(probabilities(model, s[None]).argmax())
        classes = torch.tensor(source_class, device=s.device)
        confidence = class_confidence(model, points, classes).cpu().double().numpy()
        p_source = float(class_confidence(model, s[None], classes)[0])
    vertices = plane_coordinates(s, a, b)
    plane = weights @ (vertices[1:] - vertices[0])
    drops = np.asarray(drops, dtype=float)
    on_edge = [np.isclose(weights[:, 1], 0), np.isclose(weights[:, 0], 0),
               np.isclose(weights.sum(axis=1), 1)]  # source-A, source-B, A-B
    return TriangleConfidence(
        weights=weights, plane=plane, vertices=vertices, confidence=confidence,
        source_class=int(source_class), p_source=p_source, mean=float(confidence.mean()),
        drops=drops, fraction_above=np.array([(confidence > p_source - d).mean() for d in drops]),
        edge_min=np.array([confidence[edge].min() for edge in on_edge]),
        settings={"resolution": resolution},
    )


def orthogonal_directions(tangent: Optional[torch.Tensor], n_features: int, count: int,
                          seed: int, dtype=torch.float64) -> torch.Tensor:
    """(count, D) random unit directions, each orthogonal to `tangent` (any when None)."""
    generator = torch.Generator().manual_seed(seed)
    u = torch.randn(count, n_features, generator=generator, dtype=dtype)
    if tangent is not None and tangent.norm() > 0:
        t = tangent.to(dtype) / tangent.to(dtype).norm()
        u = u - (u @ t)[:, None] * t
    return u / u.norm(dim=1, keepdim=True)


def width_probe(model: nn.Module, path_point: Array, tangent: Optional[Array] = None, *,
                directions: int = 16, radii: Sequence[float] = DEFAULT_RADII,
                source_class: Optional[int] = None, bounds: Bounds = None,
                seed: int = 0, input_shape: Optional[tuple] = None) -> WidthProbe:
    """The confidence at path_point + r u for random unit directions u orthogonal to the path.

    A level set that stays confident far from the path is wide there; one whose confidence
    falls within a small r is a thin tube.

    Args:
        model: the classifier.
        path_point: a point of a traversal, (D,).
        tangent: the path's direction at that point, (D,), e.g. path[k + 1] - path[k - 1];
            None for directions with no constraint.
        directions: how many random directions.
        radii: the distances r (l2, in input units).
        source_class: the class to measure; the model's prediction at the point if None.
        bounds: clip the probe points into this box, or None to leave them (the default:
            the probe measures the function's geometry, not only valid images).
        seed: the directions' seed.
        input_shape: one sample's natural shape: inputs of that shape reach the model in it.
    """
    model, input_shape = row_model(model, path_point, input_shape)
    x = as_rows(path_point, model, input_shape)[0][0]
    t = None if tangent is None else as_rows(tangent, model, input_shape)[0][0].cpu()
    u = orthogonal_directions(t, len(x), directions, seed).to(x.dtype).to(x.device)  # cast where float64 is
    r = torch.as_tensor(np.asarray(radii, dtype=float), device=x.device, dtype=x.dtype)
    points = clip_to(x + r[None, :, None] * u[:, None, :], bounds)  # (K, R, D)
    with evaluating(model):
        if source_class is None:
            source_class = int(probabilities(model, x[None]).argmax())
        classes = torch.tensor(source_class, device=x.device)
        confidence = class_confidence(model, points.reshape(-1, len(x)), classes)
        p_point = float(class_confidence(model, x[None], classes)[0])
    return WidthProbe(
        radii=np.asarray(radii, dtype=float),
        confidence=confidence.reshape(directions, len(r)).cpu().double().numpy(),
        p_point=p_point, source_class=int(source_class),
        settings={"directions": directions, "seed": seed,
                  "bounds": None if bounds is None else [float(v) for v in bounds],
                  "orthogonal_to_path": tangent is not None},
    )


# ---------------------------------------------------------------- 2-D maps


def confidence_map(model: nn.Module, class_index: int, grid_x: Array, grid_y: Array) -> ConfidenceMap:
    """The probability of one class over a grid of 2-D inputs (for level-set contours).

    Args:
        model: a classifier of 2-D inputs.
        class_index: the class.
        grid_x: (Gx,) coordinates of the first input.
        grid_y: (Gy,) coordinates of the second input.
    """
    gx, gy = np.asarray(grid_x, dtype=float), np.asarray(grid_y, dtype=float)
    xx, yy = np.meshgrid(gx, gy)  # (Gy, Gx): row j at grid_y[j]
    points = as_rows(np.column_stack([xx.ravel(), yy.ravel()]), model)[0]
    with evaluating(model):
        p = class_confidence(model, points, torch.tensor(int(class_index), device=points.device))
    return ConfidenceMap(gx, gy, p.cpu().double().numpy().reshape(xx.shape), int(class_index))


# ---------------------------------------------------------------- adversarial examples


def pgd_attack(model: nn.Module, x: Array, y: Array, eps: float, alpha: float, steps: int,
               bounds: Bounds = (0.0, 1.0), *, random_start: bool = False,
               seed: Optional[int] = None) -> torch.Tensor:
    """L_inf projected gradient ascent on the cross-entropy (Madry et al. 2018).

    Each step moves every coordinate by alpha in the sign of the loss gradient, then
    projects back into the eps-box around x and into `bounds`. The model runs in eval mode
    and is given back in its own mode; its parameters get no gradients.

    Args:
        model: the classifier.
        x: (N, D) clean inputs (or one (D,) input), or (N, C, H, W) for a model of images.
        y: (N,) their labels.
        eps: the attack's L_inf radius.
        alpha: the step per coordinate.
        steps: how many steps.
        bounds: the valid input box, or None.
        random_start: start from a uniform point of the eps-box (seeded by `seed`).
        seed: the random start's seed; None draws from torch's global generator.

    Returns:
        adversarial inputs on the model's device, detached: (N, D), or shaped as `x` when
        it comes in its natural shape.
    """
    shape = tuple(np.shape(x))
    model, input_shape = row_model(model, x)
    x, _ = as_rows(x, model, input_shape)
    y = _class_rows(y, len(x), x.device)
    x_adv = x.clone()
    if random_start:
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        noise = torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        x_adv = clip_to(x + eps * (2 * noise - 1), bounds)
    with evaluating(model):
        for _ in range(steps):
            _, g = confidence_and_gradient(model, x_adv, y)
            x_adv = x_adv + alpha * g.sign()
            x_adv = clip_to(torch.min(torch.max(x_adv, x - eps), x + eps), bounds)
    return x_adv.detach().reshape(shape) if input_shape is not None else x_adv.detach()


def adversarial_loss(model: nn.Module, x: Array, y: Array, *, eps: float = 0.1,
                     alpha: Optional[float] = None, steps: int = 7, bounds: Bounds = (0.0, 1.0),
                     random_start: bool = True, seed: Optional[int] = None) -> torch.Tensor:
    """The mean cross-entropy on PGD adversarial examples: adversarial training's loss.

    The attack is found without tracking the parameters; the returned loss is computed in
    the model's own mode and carries gradients to the parameters, so a training loop can
    use it in place of the clean loss.

    Args:
        model, x, y: the classifier and a batch (N, D) with labels (N,).
        eps, steps, bounds, random_start, seed: as in `pgd_attack`.
        alpha: the step per coordinate; 2.5 eps / steps when None (Madry et al.'s rule).
    """
    alpha = 2.5 * eps / max(steps, 1) if alpha is None else alpha
    x_adv = pgd_attack(model, x, y, eps, alpha, steps, bounds, random_start=random_start, seed=seed)
    y = _class_rows(y, len(x_adv), x_adv.device)  # x_adv keeps x's shape: the model takes it
    return F.cross_entropy(model(x_adv), y)
