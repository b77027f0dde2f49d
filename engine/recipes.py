"""Analyses of a stored run, one call each: what the lens pages run as jobs.

Each recipe takes the job's context (for progress and cancelling), the run store, a run id
and plain settings, loads the run's model and data, calls the lens' engine functions, and
returns one result dataclass of `engine.results` (which `engine.analysis` caches).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from engine import geometry, hessian, landscape, lazy, levelset, ntk, pruning
from engine.experiment import Experiment, load_dataset, load_model
from engine.losses import loss_for_task
from engine.models import Centered
from engine.modes import evaluating
from engine.protocols import JobContext, RunReader
from engine.results import (
    ChannelRemoval,
    ConfidenceMap,
    ConvexityMap,
    Eigenfunctions,
    Embedding,
    EmbeddingFrames,
    ExtremeSamples,
    FlipGallery,
    FourierContent,
    GeometryCurves,
    KernelSpectrum,
    KernelTrajectory,
    LastLayerGeometry,
    LayerKernels,
    LevelSetPath,
    LinearPath,
    LotteryTickets,
    ModeCurves,
    PrunedRegions,
    PruningMasks,
    PruningSweep,
    RDMSet,
    SampleGallery,
    Sharpness,
    SimilarityMatrix,
    SpectralDensity,
    Surface,
    TargetPower,
    TargetPowerTrajectory,
    Trajectory,
    TriangleConfidence,
    UnitMatch,
    WidthProbe,
)
from engine.train import TrainConfig, make_loss

__all__ = ["RunData", "run_data", "random_plane_surface", "trajectory_surface", "interpolation", "three_run_plane",
           "trajectory", "sharpness", "spectral_density", "ntk_spectrum", "ntk_view", "ntk_eigenfunctions",
           "ntk_fourier", "ntk_extreme_samples", "ntk_layers", "ntk_power_over_training", "ntk_target_power",
           "ntk_trajectory", "representation_layers", "readout_and_hidden", "layer_outputs", "last_hidden_layer",
           "embedding", "frame_steps", "embedding_over_training", "layer_similarity",
           "representational_dissimilarity", "geometry_over_training", "curve_layers", "levelset_pairs",
           "levelset_gallery", "levelset_traversal", "levelset_triangle", "levelset_width", "levelset_map",
           "pruning_sweep", "pruning_masks", "pruning_gallery", "pruning_regions", "channel_removal",
           "pruned_geometry", "ntk_mode_curves", "lottery_tickets", "cross_run_similarity", "matched_units",
           "convexity", "EIGENFUNCTION_GRID", "COLOURS", "ANIMATION_FRAMES"]


Context = Optional[JobContext]  # None runs a recipe without progress or cancelling (tests, notebooks)


@dataclass
class RunData:
    """A run's model at one checkpoint, the data to evaluate on, and its training loss."""

    model: torch.nn.Module
    x: torch.Tensor
    y: torch.Tensor
    loss: object
    lr: float


def run_data(store: RunReader, run_id: str, step: Optional[int] = None, split: str = "train",
             samples: Optional[int] = None, device="cpu") -> RunData:
    """The model of `run_id` at `step` (the last by default) and a fixed subset of a split.

    Args:
        split: "train" or "test".
        samples: at most this many samples (the first ones of a fixed shuffle); all by default.
    """
    if split not in ("train", "test"):
        raise ValueError(f"The split must be 'train' or 'test', not '{split}'.")
    model = load_model(store, run_id, step, device=device)
    data = load_dataset(store, run_id)
    x, y = (data.x_train, data.y_train) if split == "train" else (data.x_test, data.y_test)
    if samples is not None and samples < len(x):
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:samples]
        x, y = x[order], y[order]
    experiment = Experiment.from_dict(store.settings(run_id))
    alpha = model.alpha if isinstance(model, Centered) else None
    loss = make_loss(experiment.train.loss, data.task, data.n_classes, alpha)
    return RunData(model, x.to(device), y.to(device), loss, experiment.train.lr)


def _progress(ctx: Context, share: float = 1.0, offset: float = 0.0):
    """A progress callback that reports to the job and stops it when cancelled."""
    def report(fraction: float) -> None:
        if ctx is not None:
            ctx.check()
            ctx.report(progress=offset + share * fraction)
    return report


def _checkpoints(store: RunReader, run_id: str) -> dict[int, dict]:
    return {step: store.load_checkpoint(run_id, step) for step in store.checkpoint_steps(run_id)}


def random_plane_surface(ctx: Context, store: RunReader, run_id: str, *, step: Optional[int] = None, split: str = "train",
                         samples: Optional[int] = 2000, span: float = 1.0, resolution: int = 31,
                         norm: str = "filter", seed: int = 0, one_dimensional: bool = False) -> Surface:
    """The loss around a checkpoint along filter-normalized random directions (Li et al. 2018)."""
    run = run_data(store, run_id, step, split, samples)
    d1 = landscape.random_direction(run.model, norm=norm, seed=seed)
    d2 = None if one_dimensional else landscape.random_direction(run.model, norm=norm, seed=seed + 1)
    xs = np.linspace(-span, span, resolution)
    return landscape.surface(run.model, run.loss, run.x, run.y, d1, d2, xs=xs, progress=_progress(ctx))


def trajectory_surface(ctx: Context, store: RunReader, run_id: str, *, split: str = "train", samples: Optional[int] = 2000,
                       resolution: int = 31, margin: float = 0.25) -> Surface:
    """The loss on the plane of the run's top two principal components of w_t - w_final."""
    run = run_data(store, run_id, None, split, samples)
    plane = _pca_plane(store, run_id, run.model)
    xs, ys = landscape.grid_around(plane.coords, resolution, margin)
    return landscape.surface(run.model, run.loss, run.x, run.y, plane.d1, plane.d2, xs=xs, ys=ys,
                             center=plane.origin, progress=_progress(ctx))


def interpolation(ctx: Context, store: RunReader, run_id: str, *, other: str, split: str = "train", samples: Optional[int] = 2000,
                  points: int = 25) -> LinearPath:
    """The loss along the straight line from this run's final weights to another run's, and its
    barrier (linear mode connectivity; Goodfellow et al. 2015, Frankle et al. 2020)."""
    run = run_data(store, run_id, None, split, samples)
    end = _same_architecture(run.model, load_model(store, other))
    ts = np.linspace(-0.25, 1.25, points)
    return landscape.linear_path(run.model, end, run.loss, run.x, run.y, ts=ts)


def _same_architecture(model: torch.nn.Module, other: torch.nn.Module) -> torch.nn.Module:
    """`other`, after checking that its weights have the same names and shapes as `model`'s."""
    mine, theirs = model.state_dict(), other.state_dict()
    if mine.keys() != theirs.keys() or any(mine[k].shape != theirs[k].shape for k in mine):
        raise ValueError("The runs have different architectures; a path or a plane through "
                         "their weights needs the same model.")
    return other


def three_run_plane(ctx: Context, store: RunReader, run_id: str, *, others: tuple = ("", ""), split: str = "train",
                    samples: Optional[int] = 2000, resolution: int = 31, margin: float = 0.25) -> Surface:
    """The loss on the plane through the final weights of three runs (Garipov et al. 2018):
    this run at (0, 0), the first of `others` (two run ids) at (1, 0), the second where
    Gram-Schmidt puts it; the three are the surface's marks."""
    if len(others) != 2 or "" in others or len({run_id, *others}) != 3:
        raise ValueError("A plane through three runs needs two other runs, different from this one.")
    run = run_data(store, run_id, None, split, samples)
    second, third = (_same_architecture(run.model, load_model(store, o)) for o in others)
    plane = landscape.plane_through(run.model, second, third)
    xs, ys = landscape.grid_around(plane.coords, resolution, margin)
    result = landscape.surface(run.model, run.loss, run.x, run.y, plane.d1, plane.d2, xs=xs, ys=ys,
                               center=plane.origin, progress=_progress(ctx))
    names = {r.id: r.name for r in store.list()}
    return dataclasses.replace(result, marks=plane.coords, mark_names=[
        f"{letter}: {names.get(r, r)}" for letter, r in zip("ABC", (run_id, *others))])


def trajectory(ctx: Context, store: RunReader, run_id: str, *, split: str = "train", samples: Optional[int] = 2000) -> Trajectory:
    """The run's checkpoints on its PCA plane, with their measured loss and the plane's loss."""
    run = run_data(store, run_id, None, split, samples)
    checkpoints = _checkpoints(store, run_id)
    plane = _pca_plane(store, run_id, run.model, checkpoints)
    return landscape.trajectory_faithfulness(run.model, run.loss, run.x, run.y, checkpoints, plane)


def _pca_plane(store: RunReader, run_id: str, model, checkpoints: Optional[dict] = None):
    checkpoints = checkpoints if checkpoints is not None else _checkpoints(store, run_id)
    if len(checkpoints) < 2:
        raise ValueError("This run has a single checkpoint; a trajectory needs at least two.")
    names = [n for n, _ in model.named_parameters()]
    return landscape.pca_directions(checkpoints, model, names=names)


def sharpness(ctx: Context, store: RunReader, run_id: str, *, split: str = "train", samples: Optional[int] = 1000,
              k: int = 1, iters: int = 50) -> Sharpness:
    """The top Hessian eigenvalues at every checkpoint, beside 2 / learning rate."""
    run = run_data(store, run_id, None, split, samples)
    checkpoints = _checkpoints(store, run_id)
    return hessian.sharpness(run.model, run.loss, run.x, run.y, checkpoints, k=k, lr=run.lr, iters=iters,
                             progress=_progress(ctx))


def spectral_density(ctx: Context, store: RunReader, run_id: str, *, step: Optional[int] = None, split: str = "train",
                     samples: Optional[int] = 1000, iters: int = 60, runs: int = 2) -> SpectralDensity:
    """The Hessian's eigenvalue density at a checkpoint (stochastic Lanczos quadrature)."""
    run = run_data(store, run_id, step, split, samples)
    grid, values = hessian.density(run.model, run.loss, run.x, run.y, iters=iters, runs=runs, progress=_progress(ctx))
    return SpectralDensity(grid=grid, density=values, settings={"iters": iters, "runs": runs})


# ---------------------------------------------------------------- the neural tangent kernel

EIGENFUNCTION_GRID = 40  # points per axis of a 2-D eigenfunction map (200 on a line)


def ntk_spectrum(ctx: Context, store: RunReader, run_id: str, *, step: Optional[int] = None, samples: int = 500,
                 kind: str = "trace") -> KernelSpectrum:
    """The eigenvalues of the empirical NTK on a fixed subset of the training inputs."""
    run = run_data(store, run_id, step, "train", samples)
    return ntk.kernel_spectrum(run.model, run.x, kind=kind)


def ntk_view(store: RunReader, run_id: str) -> str:
    """How the kernel's eigenvectors are shown for a run's data: as eigenfunctions around the
    "circle", along a "line" or over a "plane", or as the "samples" at the ends of each
    eigenvector (images, signals: more than two features)."""
    settings = store.settings(run_id)
    if settings["data"] == "circle":
        return "circle"
    return {1: "line", 2: "plane"}.get(int(np.prod(settings["input_shape"])), "samples")


def ntk_eigenfunctions(ctx: Context, store: RunReader, run_id: str, *, step: Optional[int] = None, samples: int = 300,
                       k: int = 8, kind: str = "trace") -> Eigenfunctions:
    """The top-k NTK eigenfunctions over input space: a line, the circle, or the plane."""
    view = ntk_view(store, run_id)
    if view == "samples":
        raise ValueError("Eigenfunctions are drawn over input space for data with one or two features, or "
                         "points on the circle; for images and signals compute the eigenvectors' extreme "
                         "samples instead (`python -m engine ntk RUN_ID --what extremes`).")
    run = run_data(store, run_id, step, "train", samples)
    if view == "circle":
        angles = np.linspace(-np.pi, np.pi, 200)
        return ntk.eigenfunction_map(run.model, run.x, k, angles, on_circle=True, kind=kind)
    if view == "line":
        return ntk.eigenfunction_map(run.model, run.x, k, _span(run.x[:, 0], 200), kind=kind)
    return ntk.eigenfunction_map(run.model, run.x, k, _span(run.x[:, 0], EIGENFUNCTION_GRID),
                                 _span(run.x[:, 1], EIGENFUNCTION_GRID), kind=kind)


def ntk_fourier(ctx: Context, store: RunReader, run_id: str, *, step: Optional[int] = None, samples: int = 300, k: int = 8,
                kind: str = "trace", max_frequency: int = 16) -> FourierContent:
    """The power of each top eigenfunction per frequency, around the circle or along a line."""
    functions = ntk_eigenfunctions(ctx, store, run_id, step=step, samples=samples, k=k, kind=kind)
    return ntk.fourier_content(functions, max_frequency)


def ntk_extreme_samples(ctx: Context, store: RunReader, run_id: str, *, step: Optional[int] = None, samples: int = 300,
                        k: int = 6, per_side: int = 3, kind: str = "trace") -> ExtremeSamples:
    """The samples at both ends of the kernel's top-k eigenvectors, in the data's own shape
    (8 x 8 images for digits, 40-point signals for MNIST-1D)."""
    run = run_data(store, run_id, step, "train", samples)
    shape = store.settings(run_id)["input_shape"]
    return ntk.extreme_samples(run.model, run.x, k, per_side, labels=run.y, input_shape=shape, kind=kind)


def ntk_layers(ctx: Context, store: RunReader, run_id: str, *, step: Optional[int] = None, samples: int = 300,
               kind: str = "trace") -> LayerKernels:
    """Each layer's share of the kernel's trace, and its spectrum."""
    run = run_data(store, run_id, step, "train", samples)
    return ntk.layer_kernels(run.model, run.x, kind=kind)


def ntk_power_over_training(ctx: Context, store: RunReader, run_id: str, *, samples: int = 200, kind: str = "trace",
                            top_k: tuple = (1, 2, 4, 8, 16)) -> TargetPowerTrajectory:
    """The share of the targets' power in the kernel's top-k eigenvectors at every checkpoint."""
    run = run_data(store, run_id, None, "train", samples)
    return ntk.target_power_over_training(run.model, _checkpoints(store, run_id), run.x, run.y, top_k, kind=kind)


def _span(values: torch.Tensor, n: int) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    pad = 0.1 * (high - low) + 1e-6
    return np.linspace(low - pad, high + pad, n)


def ntk_target_power(ctx: Context, store: RunReader, run_id: str, *, step: Optional[int] = None, samples: int = 500,
                     kind: str = "trace") -> TargetPower:
    """The share of the targets' power in the kernel's top eigenvectors (cumulative)."""
    run = run_data(store, run_id, step, "train", samples)
    return ntk.target_power_curve(run.model, run.x, run.y, kind=kind)


def ntk_trajectory(ctx: Context, store: RunReader, run_id: str, *, samples: int = 200, kind: str = "trace") -> KernelTrajectory:
    """How far the kernel and the weights move from initialisation, checkpoint by checkpoint."""
    run = run_data(store, run_id, None, "train", samples)
    return lazy.kernel_trajectory(run.model, _checkpoints(store, run_id), run.x, run.y, kind=kind)


# ---------------------------------------------------------------- representation geometry


def representation_layers(model: torch.nn.Module) -> list[str]:
    """The layers whose outputs are representations: every activation, then the readout."""
    names = geometry.layer_names(model)
    hidden = [n for n in names if isinstance(model.get_submodule(n), geometry.ACTIVATION_TYPES)]
    return hidden + [names[-1]]


INPUT_OF = "input of "  # a layer named "input of M" is what module M reads (not any module's output)


@torch.no_grad()
def readout_and_hidden(model: torch.nn.Module, x: torch.Tensor) -> tuple[Optional[str], Optional[str]]:
    """The readout and the last hidden layer, found by running two samples with hooks.

    The readout is the last `nn.Linear` the forward pass calls (wherever the model registers
    it); the last hidden layer is what the readout reads: the module whose output that is,
    or "input of READOUT" when no module produced it (an `F.relu`, a pooling by `.mean()`).
    (None, None) when no Linear runs.
    """
    outputs: dict[str, object] = {}  # each module's latest output, in the order they finished
    read: dict[str, object] = {}  # the latest Linear to run: {name: its input}

    def keep_output(name):
        def hook(module, inputs, output):
            outputs.pop(name, None)
            outputs[name] = output
        return hook

    def keep_input(name):
        def hook(module, inputs):
            read.clear()
            read[name] = inputs[0]
        return hook

    hooks = [module.register_forward_hook(keep_output(name)) for name, module in model.named_modules() if name]
    hooks += [module.register_forward_pre_hook(keep_input(name)) for name, module in model.named_modules()
              if isinstance(module, torch.nn.Linear)]
    try:
        _outputs(model, x[:2])
    finally:
        for hook in hooks:
            hook.remove()
    if not read:
        return None, None
    (readout, features), = read.items()
    producer = next((name for name, output in outputs.items() if output is features), None)  # innermost first
    return readout, producer or INPUT_OF + readout


def layer_outputs(model: torch.nn.Module, x: torch.Tensor, layers: list[str],
                  batch_size: int = 1024) -> dict[str, torch.Tensor]:
    """`geometry.activations` of `layers`, where a layer may also be "input of M": what module M
    reads (caught by a forward pre-hook; its latest call in each batch, as for outputs).

    Returns:
        {layer: (N, features) float32 tensor on the CPU}, in the order of `layers`.
    """
    modules = dict(model.named_modules())
    read_by = {name: name[len(INPUT_OF):] for name in layers if name.startswith(INPUT_OF)}
    missing = [m for m in read_by.values() if m not in modules or not m]
    if missing:
        raise ValueError(f"The model has no module named {missing[0]!r}.")
    outputs = [name for name in layers if name not in read_by]
    latest: dict[str, torch.Tensor] = {}

    def keep_input(name):
        def hook(module, inputs):
            latest[name] = inputs[0]
        return hook

    hooks = [modules[m].register_forward_pre_hook(keep_input(name)) for name, m in read_by.items()]
    parts: dict[str, list] = {name: [] for name in layers}
    try:
        for start in range(0, len(x), batch_size):
            latest.clear()
            batch = geometry.activations(model, x[start:start + batch_size], outputs, batch_size)
            for name in layers:
                parts[name].append(batch[name] if name in batch else _rows(latest.get(name), name))
    finally:
        for hook in hooks:
            hook.remove()
    return {name: torch.cat(rows) for name, rows in parts.items()}


def _rows(features, name: str) -> torch.Tensor:
    if not isinstance(features, torch.Tensor):
        raise ValueError(f"The {name} is not a tensor the forward pass computed, so it cannot be looked at.")
    return features.detach().flatten(1).float().cpu()


def last_hidden_layer(model: torch.nn.Module, x: torch.Tensor) -> str:
    """The layer an embedding shows by default: what the readout reads, else the last
    activation module, else the last layer."""
    hidden = readout_and_hidden(model, x)[1]
    if hidden is not None:
        return hidden
    layers = representation_layers(model)
    return layers[max(len(layers) - 2, 0)]


def _labels(run: RunData) -> tuple[np.ndarray, bool]:
    """What colours the points: the class, or the first target for regression."""
    y = run.y.cpu().numpy()
    return (y, True) if y.ndim == 1 else (y[:, 0], False)


COLOURS = ("label", "prediction", "margin")  # what an embedding's points can be coloured by


@torch.no_grad()
def _outputs(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's outputs in eval mode (its modes restored)."""
    with evaluating(model):
        return model(x)


def _sample_colours(run: RunData, colour: str) -> tuple[np.ndarray, bool, str, np.ndarray]:
    """What colours each sample's point, and its hover text.

    Args:
        colour: "label" (the class, or the first target), "prediction" (the predicted class or
            value) or "margin" (true-class logit minus the largest other; classifiers only).

    Returns:
        values (N,), whether they are classes, their name, and (N,) hover texts.
    """
    if colour not in COLOURS:
        raise ValueError(f"Points are coloured by {', '.join(COLOURS)}, not '{colour}'.")
    labels, categorical = _labels(run)
    outputs = _outputs(run.model, run.x).cpu()
    if categorical:
        predicted = outputs.argmax(dim=1).numpy()
        margin = geometry.classification_margin(outputs, run.y)
        hover = [f"sample {i} · class {labels[i]} · predicted {predicted[i]} · margin {margin[i]:.2f}"
                 for i in range(len(labels))]
        chosen = {"label": (labels, True, "class"), "prediction": (predicted, True, "predicted class"),
                  "margin": (margin, False, "margin")}[colour]
    else:
        if colour == "margin":
            raise ValueError("Margins are defined for classifiers; colour a regression by label or prediction.")
        predicted = outputs[:, 0].numpy()
        hover = [f"sample {i} · target {labels[i]:.3g} · predicted {predicted[i]:.3g}" for i in range(len(labels))]
        chosen = {"label": (labels, False, "target"), "prediction": (predicted, False, "prediction")}[colour]
    return (*chosen, np.array(hover))


def _inputs(store: RunReader, run_id: str, run: RunData) -> tuple[np.ndarray, list[int]]:
    """The samples themselves, for pictures of them: (N, D) float32 and one sample's shape."""
    return run.x.flatten(1).cpu().numpy().astype(np.float32), list(load_dataset(store, run_id).input_shape)


def embedding(ctx: Context, store: RunReader, run_id: str, *, step: Optional[int] = None, layer: Optional[str] = None,
              method: str = "pca", samples: int = 1000, dim: int = 2, seed: int = 0,
              colour: str = "label") -> Embedding:
    """A 2-D or 3-D picture of a layer's representation (PCA or UMAP), one point per sample,
    coloured by label, prediction or margin, carrying the samples for hover pictures."""
    run = run_data(store, run_id, step, "train", samples)
    layer = layer or last_hidden_layer(run.model, run.x)
    values, categorical, name, hover = _sample_colours(run, colour)
    features = layer_outputs(run.model, run.x, [layer])[layer]
    inputs, shape = _inputs(store, run_id, run)
    return Embedding(geometry.embed(features, method=method, dim=dim, seed=seed), values, categorical,
                     hover, method, name, inputs=inputs, input_shape=shape)


# Checkpoints in an animation by method: AlignedUMAP takes seconds per frame, PCA milliseconds.
ANIMATION_FRAMES = {"pca": 20, "umap": 8}


def frame_steps(steps: list[int], frames: int) -> list[int]:
    """At most `frames` of the steps, evenly spread, the first and the last always included."""
    if frames < 2:
        raise ValueError("An animation needs at least 2 frames.")
    if len(steps) <= frames:
        return list(steps)
    chosen = np.unique(np.round(np.linspace(0, len(steps) - 1, frames)).astype(int))
    return [steps[i] for i in chosen]


def embedding_over_training(ctx: Context, store: RunReader, run_id: str, *, layer: Optional[str] = None, method: str = "pca",
                            samples: int = 500, dim: int = 2, seed: int = 0, frames: int = 20) -> EmbeddingFrames:
    """One layer's embedding at (up to `frames`) checkpoints, aligned from frame to frame:
    PCA rotated onto the frame before (Procrustes) or AlignedUMAP. Points keep their colour
    (the label) in every frame, so what moves is the representation."""
    run = run_data(store, run_id, None, "train", samples)
    layer = layer or last_hidden_layer(run.model, run.x)
    steps = frame_steps(store.checkpoint_steps(run_id), frames)
    report = _progress(ctx, share=0.5)
    acts = []
    for t, step in enumerate(steps):  # one checkpoint at a time, for progress and cancelling
        run.model.load_state_dict(store.load_checkpoint(run_id, step))
        acts.append(layer_outputs(run.model, run.x, [layer])[layer])
        report((t + 1) / len(steps))
    points = geometry.aligned_embed(acts, method=method, dim=dim, seed=seed)
    labels, categorical = _labels(run)
    hover = np.array([f"sample {i} · {'class' if categorical else 'target'} {v:g}" for i, v in enumerate(labels)])
    inputs, shape = _inputs(store, run_id, run)
    return EmbeddingFrames(np.asarray(steps), np.stack(points), labels, categorical, hover, method,
                           "class" if categorical else "target", inputs=inputs, input_shape=shape)


def layer_similarity(ctx: Context, store: RunReader, run_id: str, *, step: Optional[int] = None,
                     samples: int = 1000) -> SimilarityMatrix:
    """Linear CKA between every pair of layers at one checkpoint (the input included)."""
    run = run_data(store, run_id, step, "train", samples)
    layers = representation_layers(run.model)
    acts = {"input": run.x.flatten(1).cpu()} | geometry.activations(run.model, run.x, layers)
    names = list(acts)
    values = np.array([[geometry.linear_cka(acts[a], acts[b]) for b in names] for a in names])
    return SimilarityMatrix(values, names, names, "linear CKA")


def representational_dissimilarity(ctx: Context, store: RunReader, run_id: str, *, step: Optional[int] = None,
                                   layer: Optional[str] = None, samples: int = 200) -> RDMSet:
    """RSA: the dissimilarity matrices of the inputs, the targets and a layer, samples sorted by label."""
    run = run_data(store, run_id, step, "train", samples)
    layer = layer or last_hidden_layer(run.model, run.x)
    values, categorical = _labels(run)
    order = np.argsort(values, kind="stable")
    targets = geometry.target_matrix(run.y)[order]
    features = layer_outputs(run.model, run.x, [layer])[layer][order]
    matrices = np.stack([geometry.rdm(run.x.flatten(1).cpu()[order]), geometry.rdm(targets, "euclidean"),
                         geometry.rdm(features)])
    labels = [f"{'class' if categorical else 'target'} {values[i]:g}" for i in order]
    return RDMSet(matrices, ["input", "target", layer], "correlation", labels)


def geometry_over_training(ctx: Context, store: RunReader, run_id: str, *, samples: int = 500) -> GeometryCurves:
    """Per layer and checkpoint: CKA to the layer at init, effective rank, participation ratio,
    CKA with the inputs and with the targets, and neural collapse (NC1-NC4) for classification."""
    run = run_data(store, run_id, None, "train", samples)
    layers, readout, hidden = curve_layers(run.model, run.x)
    checkpoints = _checkpoints(store, run_id)
    acts = {}
    for step in sorted(checkpoints):
        run.model.load_state_dict(checkpoints[step])
        acts[step] = layer_outputs(run.model, run.x, layers)
    steps = sorted(acts)
    classification = not run.y.is_floating_point()
    measures: dict[str, np.ndarray] = {}

    def put(name: str, t: int, l: int, value: float) -> None:
        measures.setdefault(name, np.full((len(steps), len(layers)), np.nan))[t, l] = value

    for t, step in enumerate(steps):
        for l, layer in enumerate(layers):
            H = acts[step][layer]
            put("cka_to_init", t, l, geometry.linear_cka(H, acts[steps[0]][layer]))
            put("effective_rank", t, l, geometry.effective_rank(H))
            put("participation_ratio", t, l, geometry.participation_ratio(H))
            alignment = geometry.input_target_alignment(H, run.x.flatten(1).cpu(), run.y.cpu())
            put("cka_input", t, l, alignment["input"])
            put("cka_target", t, l, alignment["target"])
            if classification and layer != readout:
                weight = _readout_weight(checkpoints[step], readout, H) if layer == hidden else None
                for name, value in geometry.neural_collapse(H, run.y.cpu(), weight).items():
                    put(name, t, l, value)
        if ctx is not None:
            ctx.check()
            ctx.report(progress=(t + 1) / len(steps))
    return GeometryCurves(np.asarray(steps), layers, measures)


def curve_layers(model: torch.nn.Module, x: torch.Tensor) -> tuple[list[str], Optional[str], Optional[str]]:
    """The layers geometry_over_training follows: every activation module, the last hidden
    layer (what the readout reads, found by hooks, see `readout_and_hidden`) and the readout;
    and the names of the readout and the last hidden layer (None without a Linear readout)."""
    readout, hidden = readout_and_hidden(model, x)
    layers = representation_layers(model)
    if readout is None:
        return layers, None, None
    hidden_layers = [n for n in layers[:-1] if n not in (hidden, readout)]
    return hidden_layers + [hidden, readout], readout, hidden


def _readout_weight(state: dict, readout: str, features: torch.Tensor) -> Optional[torch.Tensor]:
    """The readout's weight in a checkpoint, when it classifies `features` (one weight column
    per feature; a readout applied per token, say, does not)."""
    weight = state.get(f"{readout}.weight")
    if weight is None or weight.dim() != 2 or weight.shape[1] != features.shape[1]:
        return None
    return weight.float()


# ---------------------------------------------------------------- level sets


def _test_split(store: RunReader, run_id: str, step: Optional[int]):
    model = load_model(store, run_id, step)
    data = load_dataset(store, run_id)
    if data.task != "classification":
        raise ValueError("Level sets of a class's confidence need a classifier; this run is a regression.")
    return model, data


def levelset_pairs(store: RunReader, run_id: str, step: Optional[int] = None, seed: int = 0) -> tuple[int, int, int]:
    """A correctly classified test sample and two test samples of other classes (indices)."""
    model, data = _test_split(store, run_id, step)
    with torch.no_grad(), evaluating(model):
        predicted = model(data.x_test).argmax(dim=1)
    order = torch.randperm(len(data.x_test), generator=torch.Generator().manual_seed(seed))
    source = next((int(i) for i in order if predicted[i] == data.y_test[i]), int(order[0]))
    others = [int(i) for i in order if data.y_test[i] != data.y_test[source]]
    if len(others) < 2:
        raise ValueError("The test split needs samples of at least two classes.")
    return source, others[0], others[1]


def levelset_gallery(store: RunReader, run_id: str, step: Optional[int] = None, *, per_class: Optional[int] = None,
                     seed: int = 0, include: tuple = (), limit: int = 2000) -> SampleGallery:
    """Test samples to pick sources and targets from, with the model's predictions.

    Args:
        per_class: this many samples of each class, the first of a seeded shuffle; None for
            the whole test split (at most `limit`, for 2-D data drawn as points).
        seed: the shuffle's seed.
        include: test samples to add whatever the draw (e.g. the chosen pair).
    """
    model, data = _test_split(store, run_id, step)
    n = len(data.x_test)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    labels = data.y_test[order]
    if per_class is None:
        chosen = order[:limit]
    else:
        chosen = torch.cat([order[labels == c][:per_class] for c in range(data.n_classes)])
    extra = torch.tensor([i for i in include if 0 <= i < n], dtype=torch.long)
    index = torch.unique(torch.cat([chosen, extra]))  # sorted: stable positions
    index = index[torch.argsort(data.y_test[index], stable=True)]  # grouped by class
    with torch.no_grad(), evaluating(model):
        predicted = model(data.x_test[index]).argmax(dim=1)
    return SampleGallery(index=index.numpy(), x=data.x_test[index].numpy(), label=data.y_test[index].numpy(),
                         predicted=predicted.numpy(), input_shape=tuple(data.input_shape),
                         settings={"step": step, "per_class": per_class, "seed": seed})


def levelset_traversal(ctx: Context, store: RunReader, run_id: str, *, step: Optional[int] = None, source: int = 0,
                       targets: tuple = (1, 2), steps: int = 200, step_size: float = 0.02,
                       threshold: float = 0.05) -> LevelSetPath:
    """From one test sample toward others, keeping the model's confidence in the source's class."""
    model, data = _test_split(store, run_id, step)
    n = len(data.x_test)
    if not all(0 <= i < n for i in (source, *targets)):
        raise ValueError(f"Sample numbers must be between 0 and {n - 1}.")
    sources = data.x_test[[source] * len(targets)]
    return levelset.traverse(model, sources, data.x_test[list(targets)], steps=steps, step_size=step_size,
                             threshold=threshold, bounds=data.bounds, input_shape=data.input_shape)


def levelset_triangle(ctx: Context, store: RunReader, run_id: str, *, resolution: int = 20, **traversal) -> TriangleConfidence:
    """The confidence over the triangle spanned by the source and two traversals' end points."""
    path = levelset_traversal(ctx, store, run_id, **traversal)
    model, _ = _test_split(store, run_id, traversal.get("step"))
    source, end_a, end_b = path.path[0, 0], path.path[-1, 0], path.path[-1, 1]
    return levelset.triangle_confidence(model, source, end_a, end_b, resolution=resolution,
                                        source_class=int(path.source_class[0]))


def levelset_width(ctx: Context, store: RunReader, run_id: str, *, along: float = 0.5, directions: int = 16,
                   radius: float = 0.0, **traversal) -> WidthProbe:
    """How far the level set reaches sideways from the walk toward target A, at one point.

    Args:
        along: where on the path, from 0 (the source) to 1 (the end).
        directions: random unit directions orthogonal to the path there.
        radius: the largest distance probed (l2, input units); 0 for the distance the walk
            covered (source to end).
        **traversal: the walk's settings, as in `levelset_traversal`.
    """
    if not 0 <= along <= 1:
        raise ValueError("The point along the path must be between 0 (the source) and 1 (the end).")
    path = levelset_traversal(ctx, store, run_id, **traversal).pair(0)
    model, _ = _test_split(store, run_id, traversal.get("step"))
    k = int(round(along * (len(path.path) - 1)))
    tangent = path.path[min(k + 1, len(path.path) - 1)] - path.path[max(k - 1, 0)]
    reach = radius or float(np.linalg.norm(path.path[-1] - path.path[0])) or 1.0
    return levelset.width_probe(model, path.path[k], tangent, directions=directions,
                                radii=np.linspace(0.0, reach, 11), source_class=int(path.source_class))


def levelset_map(ctx: Context, store: RunReader, run_id: str, *, step: Optional[int] = None, class_index: int = 0,
                 grid: int = 80) -> ConfidenceMap:
    """The confidence of one class over the plane of 2-D data (where level sets can be drawn)."""
    model, data = _test_split(store, run_id, step)
    if data.n_features != 2:
        raise ValueError("The confidence map is drawn for data with two features.")
    if not 0 <= class_index < data.n_classes:
        raise ValueError(f"class_index is a class of this run's data: from 0 to {data.n_classes - 1}.")
    x = torch.cat([data.x_train, data.x_test])
    return levelset.confidence_map(model, class_index, _span(x[:, 0], grid), _span(x[:, 1], grid))


# ---------------------------------------------------------------- pruning


def _finetune_config(store: RunReader, run_id: str, steps: int) -> TrainConfig:
    """The run's own optimizer settings, for `steps` steps of fine-tuning."""
    config = Experiment.from_dict(store.settings(run_id)).train
    return dataclasses.replace(config, steps=max(steps, 1), eval_every=max(steps, 1),
                               checkpoint_every=max(steps, 1))


def _to_prune(store: RunReader, run_id: str, at_init: bool, finetune_steps: Optional[int] = None):
    """(the model to prune, the dense model it is compared with or None for itself, the data).

    With `at_init` the run's initial weights are pruned (pruning at initialisation) and then
    need training; they are compared with the run's final, dense model."""
    if at_init and finetune_steps is not None and finetune_steps <= 0:
        raise ValueError("Networks pruned at initialisation must be trained: choose some "
                         "fine-tuning steps.")
    final = load_model(store, run_id)
    if at_init:
        return load_model(store, run_id, step=0), final, load_dataset(store, run_id)
    return final, None, load_dataset(store, run_id)


def pruning_sweep(ctx: Context, store: RunReader, run_id: str, *, methods: tuple = ("magnitude", "random"),
                  sparsities: tuple = (0.5, 0.8, 0.9), finetune_steps: int = 0,
                  scope: str = "global", at_init: bool = False) -> PruningSweep:
    """Prune the run's final model by every method at every sparsity, fine-tune, measure.

    With `at_init` the run's initial weights are pruned instead (pruning at initialisation:
    SNIP, GraSP, SynFlow) and then trained `finetune_steps` steps with the run's optimizer;
    they are measured against the run's final, dense model.

    Runs on the sweep mechanism (`engine.pruning_cells`), one cell per (method, sparsity),
    where the lab runs its sweeps (`engine.sweep.configured_backend`: this machine, or a Ray
    cluster); each pruned model is kept as a run, so a cancelled sweep resumes. The numbers
    are those of `pruning.sweep` in one process."""
    from engine import pruning_cells
    from engine.sweep import configured_backend

    backend, address = configured_backend()
    return pruning_cells.pruning_sweep_job(ctx, store, run_id, list(methods), list(sparsities),
                                           finetune_steps=finetune_steps, scope=scope, at_init=at_init,
                                           backend=backend, address=address, device=_sweep_device(backend))


def _sweep_device(backend: str) -> Optional[str]:
    """Where a recipe's sweep cells run: the CPU on this machine, as every recipe; on Ray, CUDA
    where the cluster has GPUs."""
    return "cpu" if backend == "local" else None


def pruning_masks(ctx: Context, store: RunReader, run_id: str, *, method: str = "magnitude", sparsity: float = 0.9,
                  scope: str = "global", at_init: bool = False) -> PruningMasks:
    """Which weights one method keeps at one sparsity, layer by layer (before any fine-tuning,
    which never changes a mask)."""
    model, _, data = _to_prune(store, run_id, at_init)
    pruned = pruning.one_shot(model, method, sparsity, data, scope=scope, device="cpu")
    return PruningMasks({name: mask.cpu().numpy() for name, mask in pruned.masks.items()},
                        tuple(data.input_shape),
                        {"method": method, "sparsity": sparsity, "scope": scope, "at_init": at_init})


def pruning_gallery(ctx: Context, store: RunReader, run_id: str, *, method: str = "magnitude",
                    sparsities: tuple = (0.5, 0.8, 0.9), finetune_steps: int = 0, scope: str = "global",
                    at_init: bool = False, count: int = 8) -> FlipGallery:
    """The test samples whose prediction pruning by `method` changes first (fragile), and ones it
    keeps up to the highest sparsity (robust), against the run's final, dense model."""
    model, reference, data = _to_prune(store, run_id, at_init, finetune_steps)
    settings = pruning.GallerySettings(finetune_steps=finetune_steps, scope=scope, count=count,
                                       train_config=_finetune_config(store, run_id, finetune_steps))
    return pruning.flip_gallery(model, data, method, list(sparsities), settings, device="cpu",
                                progress=_progress(ctx), reference=reference)


def pruning_regions(ctx: Context, store: RunReader, run_id: str, *, methods: tuple = ("magnitude", "random"),
                    sparsity: float = 0.9, finetune_steps: int = 0, scope: str = "global",
                    at_init: bool = False) -> PrunedRegions:
    """Decision regions of the run's dense model and of each pruned one, side by side (2-D data)."""
    model, reference, data = _to_prune(store, run_id, at_init, finetune_steps)
    regions = pruning.pruned_regions(model, data, list(methods), sparsity, finetune_steps,
                                     train_config=_finetune_config(store, run_id, finetune_steps),
                                     scope=scope, device="cpu", progress=_progress(ctx), reference=reference)
    regions.settings["at_init"] = at_init
    return regions


def channel_removal(ctx: Context, store: RunReader, run_id: str, *, sparsity: float = 0.5,
                    scope: str = "layer") -> ChannelRemoval:
    """Remove the conv channels with the smallest filters (L1 norm, Li et al. 2017) for real: a
    smaller model, its size and accuracy beside the model with those channels masked."""
    model, data = load_model(store, run_id), load_dataset(store, run_id)
    example = data.x_test[:2].reshape(-1, *data.input_shape)  # the shape a conv net's forward takes
    scores = pruning.channel_scores(model, example)
    unsafe = {name: why for name, why in pruning.channel_paths(model, example).items() if isinstance(why, str)}
    if not scores:
        raise ValueError("This model has no conv layer whose channels can be removed"
                         + (f": {next(iter(unsafe.values()))}" if unsafe else " (it has no conv layers)."))
    keep = pruning.channel_masks(scores, sparsity, scope)
    small, counts = pruning.remove_channels(model, keep, example)
    masked = pruning.mask_channels(model, keep, example)
    loss = loss_for_task("auto", data.task)
    accuracy = [pruning.evaluate(m, data.x_test, data.y_test, loss)[0] for m in (model, masked, small)]
    with torch.no_grad(), evaluating(masked), evaluating(small):
        difference = float((masked(data.x_test) - small(data.x_test)).abs().max())
    return ChannelRemoval(list(counts["channels"]), np.array(list(counts["channels"].values())),
                          np.array(counts["parameters"]), np.array(accuracy), difference, unsafe,
                          {"sparsity": sparsity, "scope": scope})


def pruned_geometry(ctx: Context, store: RunReader, run_id: str, *, method: str = "magnitude", sparsity: float = 0.9,
                    finetune_steps: int = 0, scope: str = "global", at_init: bool = False) -> LastLayerGeometry:
    """Last-layer geometry (feature norm, angle to the true class, margin) of one pruned model
    (pruned at initialisation and trained `finetune_steps` steps with `at_init`)."""
    model, _, data = _to_prune(store, run_id, at_init, finetune_steps)
    if data.task != "classification":
        raise ValueError("Last-layer geometry needs a classifier; this run is a regression.")
    pruned = pruning.one_shot(model, method, sparsity, data, finetune_steps, scope=scope, device="cpu",
                              train_config=_finetune_config(store, run_id, finetune_steps))
    return pruning.last_layer_geometry(pruned.model, data.x_test, data.y_test)


def ntk_mode_curves(ctx: Context, store: RunReader, run_id: str, *, k: int = 6, kind: str = "pseudo") -> ModeCurves:
    """The residual along each of the initial kernel's top eigenvectors during training, beside
    the kernel regime's prediction exp(-2 eta lambda_i t / (N O)) (full-batch GD on MSE only)."""
    experiment = Experiment.from_dict(store.settings(run_id))
    run = run_data(store, run_id, None, "train", None)
    loss = experiment.train.loss
    if experiment.train.optimizer != "gd" or loss == "ce" or (loss == "auto" and not run.y.is_floating_point()):
        raise ValueError("Per-mode predictions hold for full-batch gradient descent on MSE; this run used "
                         f"{experiment.train.optimizer} on {'cross-entropy' if loss != 'mse' else 'MSE'}.")
    return ntk.mode_curves(run.model, _checkpoints(store, run_id), run.x, run.y, run.lr, k=k, kind=kind)


def lottery_tickets(ctx: Context, store: RunReader, run_id: str, *, rounds: int = 4, rate: float = 0.2,
                    steps: Optional[int] = None,
                    rewind_step: int = 0) -> LotteryTickets:
    """Lottery tickets from the run's initial weights (Frankle & Carbin 2019): train, prune the
    smallest `rate` of the survivors, rewind, repeat; against the same masks re-initialised.

    Runs on the sweep mechanism (`engine.pruning_cells`): each round's ticket, and its control
    beside it, is a cell that starts when the round before has finished, where the lab runs
    its sweeps (this machine, or a Ray cluster); every network is kept as a run, so a
    cancelled chain resumes from its last finished round. The numbers are those of
    `pruning.iterative_magnitude` in one process."""
    from engine import pruning_cells
    from engine.sweep import configured_backend

    backend, address = configured_backend()
    return pruning_cells.lottery_job(ctx, store, run_id, rounds, rate, steps, rewind_step, backend=backend,
                                     address=address, device=_sweep_device(backend))


def cross_run_similarity(ctx: Context, store: RunReader, run_id: str, *, other: str, step: Optional[int] = None,
                         samples: int = 500) -> SimilarityMatrix:
    """Linear CKA between every layer of this run and every layer of another, on this run's
    inputs (two seeds, two activations, dense against pruned: convergent learning)."""
    run = run_data(store, run_id, step, "train", samples)
    second = load_model(store, other)
    try:
        theirs = geometry.activations(second, run.x, representation_layers(second))
    except RuntimeError:
        raise ValueError("The other run's model does not take this run's inputs; choose a run on the same data.") from None
    mine = geometry.activations(run.model, run.x, representation_layers(run.model))
    values = np.array([[geometry.linear_cka(a, b) for b in theirs.values()] for a in mine.values()])
    return SimilarityMatrix(values, [f"this: {n}" for n in mine], [f"other: {n}" for n in theirs], "linear CKA")


def matched_units(ctx: Context, store: RunReader, run_id: str, *, other: str, layer: str, samples: int = 500) -> UnitMatch:
    """One layer's units matched one-to-one to the other run's (Hungarian on correlations,
    Li et al. 2015), with each match's correlation."""
    run = run_data(store, run_id, None, "train", samples)
    second = load_model(store, other)
    module = layer[len(INPUT_OF):] if layer.startswith(INPUT_OF) else layer
    if module not in geometry.module_names(second):
        raise ValueError(f"The other run has no module '{module}'.")
    mine = layer_outputs(run.model, run.x, [layer])[layer]
    theirs = layer_outputs(second, run.x, [layer])[layer]
    permutation, correlations = geometry.match_units(mine, theirs)
    return UnitMatch(correlations, permutation, f"{layer}: this run against the other")


def convexity(ctx: Context, store: RunReader, run_id: str, *, step: Optional[int] = None, split: str = "train",
              samples: Optional[int] = 500, span: float = 1.0, resolution: int = 7, seed: int = 0) -> ConvexityMap:
    """|lambda_min / lambda_max| of the Hessian over a coarse grid of the random plane that
    `random_plane_surface` draws with the same seed (Li et al. 2018: near 0 is locally convex)."""
    run = run_data(store, run_id, step, split, samples)
    d1 = landscape.random_direction(run.model, seed=seed)
    d2 = landscape.random_direction(run.model, seed=seed + 1)
    xs = np.linspace(-span, span, resolution)
    return hessian.convexity_map(run.model, run.loss, run.x, run.y, d1, d2, hessian.ConvexitySettings(xs=xs),
                                 progress=_progress(ctx))
