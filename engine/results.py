"""Plain results: small dataclasses of numpy arrays that viz/ turns into figures.

This module imports numpy only (no torch), so viz/ and pages can use it freely and
results can be saved, compared and plotted without the engine's heavy imports.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

__all__ = [
    "to_arrays",
    "from_arrays",
    "to_npz_bytes",
    "is_image_shape",
    "History",
    "DecisionRegions",
    "FunctionFit",
    "Confusion",
    "Parity",
    "Surface",
    "LinearPath",
    "Trajectory",
    "Sharpness",
    "ConvexityMap",
    "KernelSpectrum",
    "Eigenfunctions",
    "TargetPower",
    "ModeCurves",
    "KernelTrajectory",
    "WeightChange",
    "Embedding",
    "SimilarityMatrix",
    "RDMSet",
    "GeometryCurves",
    "UnitMatch",
    "SpectralDensity",
    "LevelSetPath",
    "TriangleConfidence",
    "WidthProbe",
    "ConfidenceMap",
    "PruningSweep",
    "LotteryTickets",
    "LastLayerGeometry",
    "LazyMeasures",
    "EmbeddingFrames",
    "ExtremeSamples",
    "FourierContent",
    "LayerKernels",
    "TargetPowerTrajectory",
    "PruningMasks",
    "ChannelRemoval",
    "PrunedRegions",
    "FlipGallery",
    "PhaseDiagram",
    "SampleGallery",
]


@dataclass
class History:
    """What a training run measured.

    Attributes:
        step: the step of each entry of `train_loss` (every step).
        train_loss: the minibatch loss at each step.
        eval_step: the steps at which the evaluation ran (every `eval_every` steps).
        eval_train_loss, eval_train_accuracy: loss and accuracy on the (whole or a fixed
            subset of the) training split at each evaluation.
        test_loss, test_accuracy: the same on the test split. Accuracies are NaN for
            regression.
    """

    step: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    eval_step: list[int] = field(default_factory=list)
    eval_train_loss: list[float] = field(default_factory=list)
    eval_train_accuracy: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, list]:
        return {f.name: list(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        return cls(**{f.name: list(d.get(f.name, [])) for f in fields(cls)})

    def copy(self) -> "History":
        return History.from_dict(self.to_dict())

    @property
    def last_step(self) -> int:
        return self.step[-1] if self.step else 0


@dataclass
class DecisionRegions:
    """A model's predictions over a 2-D grid, with the data points on top.

    Attributes:
        grid_x: (Gx,) grid coordinates along the first input.
        grid_y: (Gy,) grid coordinates along the second input.
        value: (Gy, Gx) predicted class (classification) or predicted value of the first
            output (regression).
        confidence: (Gy, Gx) probability of the predicted class; ones for regression.
        points: (N, 2) data points shown on top.
        labels: (N,) their class or target value.
        task: "classification" or "regression".
        n_classes: number of classes (0 for regression).
    """

    grid_x: np.ndarray
    grid_y: np.ndarray
    value: np.ndarray
    confidence: np.ndarray
    points: np.ndarray
    labels: np.ndarray
    task: str
    n_classes: int


@dataclass
class FunctionFit:
    """A 1-D function: the model against the target along one coordinate.

    Attributes:
        x: (G,) the coordinate (the input for 1-D data, the angle for the circle).
        prediction: (G,) the model's output.
        target: (G,) the true function, or None if it is unknown.
        points_x, points_y: the training points.
        x_label: what the coordinate is ("x" or "angle").
    """

    x: np.ndarray
    prediction: np.ndarray
    target: np.ndarray | None
    points_x: np.ndarray
    points_y: np.ndarray
    x_label: str = "x"


@dataclass
class Confusion:
    """Counts of (true class, predicted class) on the test split."""

    matrix: np.ndarray  # (C, C), rows true, columns predicted
    labels: list[str]


@dataclass
class Parity:
    """Predicted against true targets on the test split (regression of many inputs)."""

    target: np.ndarray  # (N,)
    prediction: np.ndarray  # (N,)


# ---------------------------------------------------------------- saving any result

def to_arrays(result) -> tuple[dict[str, np.ndarray], dict]:
    """Split a result dataclass into its numpy arrays and the JSON-friendly rest.

    The pair is what `engine.store.RunStore.save_artifact` takes; `from_arrays` reverses it.
    Nested dicts of arrays are flattened with '/' in their keys.
    """
    arrays, meta = {}, {"type": type(result).__name__, "fields": {}}
    for f in fields(result):
        value = getattr(result, f.name)
        if isinstance(value, np.ndarray):
            arrays[f.name] = value
        elif isinstance(value, dict) and value and all(isinstance(v, np.ndarray) for v in value.values()):
            arrays.update({f"{f.name}/{k}": v for k, v in value.items()})
            meta["fields"][f.name] = {"$arrays": list(value)}
        else:
            meta["fields"][f.name] = value
    return arrays, meta


def from_arrays(cls, arrays: dict[str, np.ndarray], meta: dict):
    """The result `to_arrays` split (cls is its dataclass)."""
    values = {}
    for f in fields(cls):
        if f.name in arrays:
            values[f.name] = arrays[f.name]
        elif isinstance(meta["fields"].get(f.name), dict) and "$arrays" in meta["fields"][f.name]:
            values[f.name] = {k: arrays[f"{f.name}/{k}"] for k in meta["fields"][f.name]["$arrays"]}
        elif f.name in meta["fields"]:
            values[f.name] = meta["fields"][f.name]
    return cls(**values)


# ---------------------------------------------------------------- loss landscapes


def to_npz_bytes(result) -> bytes:
    """A result as one .npz file: its arrays, and its other fields as JSON in `meta`."""
    import io
    import json

    arrays, meta = to_arrays(result)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays, meta=np.array(json.dumps(meta, default=str)))
    return buffer.getvalue()


@dataclass
class Surface:
    """The loss over a line or a plane of weights: L(center + a*d1 + b*d2).

    Attributes:
        xs: (Nx,) coordinates a along the first direction.
        ys: (Ny,) coordinates b along the second direction; None for a line.
        loss: (Ny, Nx) mean loss, row j at b = ys[j]; (Nx,) for a line.
        accuracy: the same shape, for class labels; None otherwise.
        settings: what made it (loss name, samples, batch and chunk sizes, device).
        marks: (K, 2) points of the plane to mark, such as the models a plane passes
            through; None for none.
        mark_names: K names of the marks.
    """

    xs: np.ndarray
    ys: np.ndarray | None
    loss: np.ndarray
    accuracy: np.ndarray | None = None
    settings: dict = field(default_factory=dict)
    marks: np.ndarray | None = None
    mark_names: list[str] | None = None


@dataclass
class LinearPath:
    """The loss along the straight path (1 - t) a + t b between two weight vectors.

    Attributes:
        xs: (T,) the path coordinates t (0 is a, 1 is b).
        loss: (T,) mean loss at each t.
        accuracy: (T,) for class labels; None otherwise.
        barrier: max over t in [0, 1] of L(t) minus the chord between the endpoints' losses.
        settings: what made it, with the endpoints' losses `loss_a` and `loss_b`.
    """

    xs: np.ndarray
    loss: np.ndarray
    accuracy: np.ndarray | None = None
    barrier: float = 0.0
    settings: dict = field(default_factory=dict)


@dataclass
class Trajectory:
    """Checkpoints projected onto a plane (the top two principal components of training).

    Attributes:
        steps: (T,) the checkpoints' steps.
        coords: (T, 2) their coordinates on the plane.
        explained_variance: (2,) the share of the trajectory's variance along each axis.
        loss: (T,) the loss measured at each checkpoint, or None.
        loss_on_plane: (T,) the loss at each checkpoint's projection, or None.
        settings: what made it.
    """

    steps: np.ndarray
    coords: np.ndarray
    explained_variance: np.ndarray
    loss: np.ndarray | None = None
    loss_on_plane: np.ndarray | None = None
    settings: dict = field(default_factory=dict)


@dataclass
class Sharpness:
    """The Hessian's top eigenvalues over training (edge of stability: 2 / lr).

    Attributes:
        steps: (T,) checkpoint steps.
        eigenvalues: (T, k) the top k eigenvalues at each checkpoint, descending.
        lr: the learning rate, for the 2 / lr line; None when unknown.
    """

    steps: np.ndarray
    eigenvalues: np.ndarray
    lr: float | None = None


@dataclass
class ConvexityMap:
    """Local convexity over a plane: |lambda_min / lambda_max| of the Hessian at each point.

    Attributes:
        xs, ys: (Nx,), (Ny,) coordinates along the two directions.
        ratio: (Ny, Nx) |lambda_min / lambda_max|, the size of the most negative curvature
            next to the most positive: near 0 the surface is nearly convex there (Li et al.
            2018). Where lambda_min > 0 the point is strictly convex.
        lambda_max, lambda_min: (Ny, Nx) the extreme eigenvalues.
        settings: what made it.
    """

    xs: np.ndarray
    ys: np.ndarray
    ratio: np.ndarray
    lambda_max: np.ndarray
    lambda_min: np.ndarray
    settings: dict = field(default_factory=dict)


# ---------------------------------------------------------------- NTK and lazy/rich results


@dataclass
class KernelSpectrum:
    """The eigenvalues of a kernel matrix (an empirical NTK), largest first.

    Attributes:
        values: (n,) eigenvalues in descending order.
        kind: the kernel's kind ("trace", "pseudo" or "full").
    """

    values: np.ndarray
    kind: str = "trace"


@dataclass
class Eigenfunctions:
    """The top-k eigenfunctions of a kernel, evaluated over a line, the circle or a plane.

    Attributes:
        values: (k,) their eigenvalues, largest first.
        functions: (k, G) along a line or the circle's angle, or (k, Gy, Gx) over a plane.
        grid_x: (G,) or (Gx,) coordinates (the angle on the circle).
        grid_y: (Gy,) coordinates over a plane, None along a line.
        x_label: what grid_x is ("x", "x1" or "angle").
        kind: the kernel's kind.
    """

    values: np.ndarray
    functions: np.ndarray
    grid_x: np.ndarray
    grid_y: np.ndarray | None = None
    x_label: str = "x"
    kind: str = "trace"


@dataclass
class TargetPower:
    """How much of the target lies in the kernel's top eigenvectors.

    Attributes:
        cumulative: (k,) share of ||y||^2 in the top 1, 2, ..., k eigenvectors (rises to 1).
        values: (k,) the eigenvalues of those eigenvectors.
        kind: the kernel's kind.
    """

    cumulative: np.ndarray
    values: np.ndarray
    kind: str = "trace"


@dataclass
class ModeCurves:
    """The residual along each kernel eigenvector during training: predicted and measured.

    Attributes:
        steps: (T,) training steps.
        predicted: (T, k) residual size along each mode predicted by the fixed initial kernel.
        actual: (T, k) the measured residual's size along the same modes, or None.
        values: (k,) the modes' eigenvalues.
    """

    steps: np.ndarray
    predicted: np.ndarray
    actual: np.ndarray | None
    values: np.ndarray


@dataclass
class KernelTrajectory:
    """How far the kernel and the weights move during training (lazy versus rich).

    Attributes:
        steps: (T,) the checkpoints' steps.
        relative_change: (T,) ||K_t - K_0||_F / ||K_0||_F.
        distance: (T,) kernel distance 1 - <K_0, K_t>_F / (||K_0||_F ||K_t||_F).
        subspace_overlap: (T,) mean squared cosine of the principal angles between the top-k
            eigenvector spans of K_0 and K_t (1: same span, 0: orthogonal).
        weight_change: (T,) ||w_t - w_0|| / ||w_0||.
        alignment: (T,) kernel-target alignment of K_t, or None without targets.
        kind: the kernel's kind.
    """

    steps: np.ndarray
    relative_change: np.ndarray
    distance: np.ndarray
    subspace_overlap: np.ndarray
    weight_change: np.ndarray
    alignment: np.ndarray | None = None
    kind: str = "trace"


@dataclass
class WeightChange:
    """||w_t - w_0|| / ||w_0||, over all the weights and layer by layer.

    Attributes:
        total: over all the compared parameters together.
        layers: per layer (the module that owns the parameters, e.g. "layers.fc1").
    """

    total: float
    layers: dict[str, float]


@dataclass
class Embedding:
    """Points that picture a representation, one per sample (engine.geometry.embed).

    Attributes:
        points: (N, 2) or (N, 3) coordinates.
        values: (N,) what colours each point: integer classes when `categorical`, else reals.
        categorical: classes (palette and legend) or real values (colour bar).
        hover: (N,) text shown when pointing at a sample, or None.
        method: "pca" or "umap", for the axis titles.
        value_name: what the values are ("class", "target", "loss", ...).
        class_names: names of classes 0..C-1 for the legend, or None for "class k".
        inputs: (N, D) the samples themselves (flattened), for pictures of them in the hover
            text and beside the chart; None to leave them out.
        input_shape: the natural shape of one sample, e.g. [1, 8, 8] (an image), [1, 40] (a
            signal) or [2] (a point); None when unknown.
    """

    points: np.ndarray
    values: np.ndarray
    categorical: bool = True
    hover: np.ndarray | None = None
    method: str = "pca"
    value_name: str = "class"
    class_names: list[str] | None = None
    inputs: np.ndarray | None = None
    input_shape: list[int] | None = None


@dataclass
class SimilarityMatrix:
    """A similarity between representations, rows against columns (e.g. layer x layer CKA).

    Attributes:
        values: (R, C) similarities.
        rows, columns: their names (layers, or "run A: layers.fc1", ...).
        measure: what the values are, e.g. "linear CKA".
    """

    values: np.ndarray
    rows: list[str]
    columns: list[str]
    measure: str = "linear CKA"


@dataclass
class RDMSet:
    """Representational dissimilarity matrices over the same samples, shown side by side.

    Attributes:
        matrices: (K, N, N) dissimilarities (engine.geometry.rdm).
        names: K titles (layers, runs or checkpoints).
        metric: "correlation" or "euclidean".
        sample_labels: N labels for the axes' hover text (e.g. "class 3 #17"), or None.
    """

    matrices: np.ndarray
    names: list[str]
    metric: str = "correlation"
    sample_labels: list[str] | None = None


@dataclass
class GeometryCurves:
    """Measures of each layer's representation over training.

    Attributes:
        steps: (T,) the checkpoints' steps.
        layers: L layer names.
        values: measure name -> (T, L) array, NaN where a layer was not measured. Names are
            those of engine.geometry: "nc1", "nc2_norm", "nc2_angle", "nc3", "nc4",
            "effective_rank", "participation_ratio", or any other.
    """

    steps: np.ndarray
    layers: list[str]
    values: dict[str, np.ndarray]


@dataclass
class UnitMatch:
    """Units of one representation matched one-to-one to another's (engine.geometry.match_units).

    Attributes:
        correlations: (p,) the correlation of each unit with its match (NaN when unmatched).
        permutation: (p,) the matched unit of the other representation (-1 when unmatched).
        label: the name of the pair, e.g. "layers.fc1: seed 0 vs seed 1".
    """

    correlations: np.ndarray
    permutation: np.ndarray
    label: str = ""


@dataclass
class SpectralDensity:
    """The Hessian's eigenvalue density (stochastic Lanczos quadrature); integrates to 1."""

    grid: np.ndarray  # (B,) eigenvalue axis
    density: np.ndarray  # (B,)
    settings: dict = field(default_factory=dict)


# ---------------------------------------------------------------- level sets


@dataclass
class LevelSetPath:
    """A level-set traversal: paths that keep the source class's confidence while they walk
    toward target inputs (engine.levelset.traverse, after Balasubramanian & Feizi 2023).

    The layout follows the input: one pair (a source of shape (D,)) gives arrays without a
    pair axis, a batch of B pairs puts the pair axis second. Points are flattened like the
    models' inputs; `images()` gives them in `input_shape`.

    Attributes:
        path: (T, D) or (T, B, D) the recorded points; path[0] is the source.
        confidence: (T,) or (T, B) the source class's probability at each recorded point.
        step: (T,) the traversal step of each recorded point (0 is the source).
        accepted: (steps,) or (steps, B) whether each step's proposal was accepted.
        l2, linf: (T,) or (T, B) the distance of each recorded point to the target.
        ssim: (T,) or (T, B) structural similarity to the target, for images; else None.
        target: (D,) or (B, D) the targets.
        source_class: () or (B,) the class whose confidence is kept.
        input_shape: one sample's natural shape, e.g. (1, 8, 8); None when unknown.
        settings: what made it (steps, step_size, eps, threshold, bounds, device, ...).
    """

    path: np.ndarray
    confidence: np.ndarray
    step: np.ndarray
    accepted: np.ndarray
    l2: np.ndarray
    linf: np.ndarray
    target: np.ndarray
    source_class: np.ndarray
    ssim: np.ndarray | None = None
    input_shape: tuple | None = None
    settings: dict = field(default_factory=dict)

    @property
    def batched(self) -> bool:
        """Whether the result holds a batch of pairs (a pair axis after the steps)."""
        return self.path.ndim == 3

    @property
    def n_pairs(self) -> int:
        return self.path.shape[1] if self.batched else 1

    def pair(self, i: int) -> "LevelSetPath":
        """The i-th pair alone, in the single-pair layout (itself when not batched)."""
        if not self.batched:
            return self
        take = lambda a: None if a is None else a[:, i]  # noqa: E731 (step axis first)
        return LevelSetPath(
            path=self.path[:, i], confidence=self.confidence[:, i], step=self.step,
            accepted=self.accepted[:, i], l2=self.l2[:, i], linf=self.linf[:, i],
            target=self.target[i], source_class=self.source_class[i], ssim=take(self.ssim),
            input_shape=self.input_shape, settings=self.settings,
        )

    def images(self) -> np.ndarray:
        """The path as images: (T, *input_shape) or (T, B, *input_shape)."""
        if self.input_shape is None:
            raise ValueError("This path has no input shape to draw its points as images.")
        return self.path.reshape(*self.path.shape[:-1], *self.input_shape)


@dataclass
class TriangleConfidence:
    """The source class's confidence over the triangle spanned by a source and two end points.

    A star-shaped level set keeps the whole triangle confident (Balasubramanian & Feizi 2023).

    Attributes:
        weights: (P, 2) barycentric weights (u, w) of end A and end B at each grid point;
            the point is source + u (A - source) + w (B - source).
        plane: (P, 2) the points' coordinates in the triangle's plane (source at the origin,
            end A on the positive first axis), in input units.
        vertices: (3, 2) plane coordinates of the source, end A and end B.
        confidence: (P,) the source class's probability at each point.
        source_class: the class whose confidence is measured.
        p_source: its probability at the source.
        mean: the mean confidence over the grid points.
        drops: (K,) confidence drops d.
        fraction_above: (K,) the share of grid points with confidence above p_source - d.
        edge_min: (3,) the least confidence along the edges source-A, source-B and A-B.
        settings: what made it.
    """

    weights: np.ndarray
    plane: np.ndarray
    vertices: np.ndarray
    confidence: np.ndarray
    source_class: int
    p_source: float
    mean: float
    drops: np.ndarray
    fraction_above: np.ndarray
    edge_min: np.ndarray
    settings: dict = field(default_factory=dict)


@dataclass
class WidthProbe:
    """The source class's confidence along random directions orthogonal to a path.

    Attributes:
        radii: (R,) distances from the path point (l2, input units).
        confidence: (K, R) the confidence at point + r * u_k for each direction u_k.
        p_point: the confidence at the path point itself.
        source_class: the class whose confidence is measured.
        settings: what made it.
    """

    radii: np.ndarray
    confidence: np.ndarray
    p_point: float
    source_class: int
    settings: dict = field(default_factory=dict)

    @property
    def mean(self) -> np.ndarray:
        """(R,) the confidence averaged over the directions."""
        return self.confidence.mean(axis=0)


@dataclass
class ConfidenceMap:
    """One class's probability over a 2-D grid of inputs, for drawing level-set contours.

    Attributes:
        grid_x: (Gx,) coordinates along the first input.
        grid_y: (Gy,) coordinates along the second input.
        confidence: (Gy, Gx) the class's probability, row j at grid_y[j].
        class_index: the class.
    """

    grid_x: np.ndarray
    grid_y: np.ndarray
    confidence: np.ndarray
    class_index: int


# ---------------------------------------------------------------- pruning


@dataclass
class PruningSweep:
    """Pruning methods compared over sparsities (engine.pruning.sweep), after fine-tuning.

    Attributes:
        methods: M method names.
        sparsities: (S,) fractions of the prunable weights removed.
        accuracy, loss: (M, S) on the clean test split (accuracy NaN for regression).
        corrupted_accuracy: (M, S) the mean test accuracy over the corruptions.
        corruptions: corruption name ("noise 0.5", "blur 1", ...) -> (M, S) test accuracy.
        layers: L prunable weights' names; layer_sparsity: (M, S, L) their zero fractions.
        overlap: (S, M, M) Jaccard index of the weights two methods keep, at each sparsity.
        cka_layers: K module names; cka: (M, S, K) linear CKA of each layer's output to the
            dense model's on test samples.
        flipped: (M, S) the fraction of test predictions that differ from the dense model's.
        scoring_seconds, finetune_seconds: (M, S) time spent scoring and making masks (the
            scores' one-off cost shared over the sparsities) and fine-tuning, per cell.
        dense_accuracy, dense_loss, dense_corrupted_accuracy: the unpruned model's.
        train_accuracy, train_loss: (M, S) on the whole training split.
        sharpness: (M, S) the top Hessian eigenvalue of the training loss (on the scoring
            samples) over the kept weights.
        dense_train_accuracy, dense_train_loss, dense_sharpness: the unpruned model's.
        settings: what made it.
    """

    methods: list[str]
    sparsities: np.ndarray
    accuracy: np.ndarray
    loss: np.ndarray
    corrupted_accuracy: np.ndarray
    corruptions: dict[str, np.ndarray]
    layers: list[str]
    layer_sparsity: np.ndarray
    overlap: np.ndarray
    cka_layers: list[str]
    cka: np.ndarray
    flipped: np.ndarray
    scoring_seconds: np.ndarray
    finetune_seconds: np.ndarray
    dense_accuracy: float = float("nan")
    dense_loss: float = float("nan")
    dense_corrupted_accuracy: float = float("nan")
    settings: dict = field(default_factory=dict)
    train_accuracy: np.ndarray | None = None
    train_loss: np.ndarray | None = None
    sharpness: np.ndarray | None = None
    dense_train_accuracy: float = float("nan")
    dense_train_loss: float = float("nan")
    dense_sharpness: float = float("nan")


@dataclass
class LotteryTickets:
    """Iterative magnitude pruning with rewinding (engine.pruning.iterative_magnitude).

    Attributes:
        density: (R + 1,) the fraction of prunable weights kept after each round, 1 first.
        ticket_accuracy, ticket_loss: (R + 1,) test accuracy and loss of the rewound and
            retrained ticket (entry 0: the dense model).
        control_accuracy, control_loss: (R + 1,) the same masks trained from a random
            re-initialisation; NaN after entry 0 when no control ran.
        settings: rounds, rate, rewind step, scope and the training settings.
    """

    density: np.ndarray
    ticket_accuracy: np.ndarray
    ticket_loss: np.ndarray
    control_accuracy: np.ndarray
    control_loss: np.ndarray
    settings: dict = field(default_factory=dict)


@dataclass
class LastLayerGeometry:
    """The geometry of the classifier's input (Li et al. 2022), one entry per sample.

    The logit of class c is ||w_c|| ||f|| cos(theta_c) (plus a bias).

    Attributes:
        feature_norm: (N,) ||f||, the norm of the last layer's input.
        angle: (N,) theta_y in degrees, between f and the true class's weight w_y.
        margin: (N,) min over c != y of theta_c, minus theta_y, in degrees (positive: f points
            closer to its own class's weight than to any other).
        correct: (N,) whether the prediction is right.
        labels: (N,) the true classes.
        settings: what made it (e.g. the method and sparsity).
    """

    feature_norm: np.ndarray
    angle: np.ndarray
    margin: np.ndarray
    correct: np.ndarray
    labels: np.ndarray
    settings: dict = field(default_factory=dict)


@dataclass
class LazyMeasures:
    """Lazy versus rich, measured at every checkpoint while training (see `engine.probes`).

    Attributes:
        steps: (T,) checkpoint steps.
        weight_change: (T,) ||w_t - w_0|| / ||w_0|| over all trainable weights.
        layer_weight_change: (T, L) the same per layer, in the order of `layers`.
        layers: the L layer names.
        kernel_change: (T,) ||K_t - K_0||_F / ||K_0||_F of the trace NTK on the probe's samples.
        kernel_distance: (T,) 1 - <K_0, K_t>_F / (||K_0||_F ||K_t||_F).
        alignment: (T,) centred kernel-target alignment of K_t.
        cka_to_init: (T,) linear CKA of the last hidden layer with itself at init (NaN without one).
        effective_rank: (T,) effective rank of the last hidden layer's representation.
        kernel_speed: (T,) the kernel's rate of change, ||K_t - K_prev||_F / ||K_prev||_F per
            1,000 steps since the previous checkpoint (Fort et al. 2020's kernel velocity;
            NaN at step 0).
        twin_gap: (T,) ||f - f_lin|| / ||f - f_0|| against the linearized twin, or None.
        twin_loss: (T,) the twin's training loss on the probe's samples, or None.
        loss: (T,) the network's training loss on the same samples, or None (without a twin).
    """

    steps: np.ndarray
    weight_change: np.ndarray
    layer_weight_change: np.ndarray
    layers: list
    kernel_change: np.ndarray
    kernel_distance: np.ndarray
    alignment: np.ndarray
    cka_to_init: np.ndarray
    effective_rank: np.ndarray
    twin_gap: np.ndarray | None = None
    twin_loss: np.ndarray | None = None
    loss: np.ndarray | None = None
    kernel_speed: np.ndarray | None = None


@dataclass
class EmbeddingFrames:
    """One layer's embedding at successive checkpoints, aligned so that frames compare
    (engine.geometry.aligned_embed): the frames of an animation over training.

    Attributes:
        steps: (T,) the checkpoints' steps.
        points: (T, N, dim) coordinates of the same N samples in every frame.
        values, categorical, hover, method, value_name, class_names, inputs, input_shape:
            as for `Embedding`, the same in every frame.
    """

    steps: np.ndarray
    points: np.ndarray
    values: np.ndarray
    categorical: bool = True
    hover: np.ndarray | None = None
    method: str = "pca"
    value_name: str = "class"
    class_names: list[str] | None = None
    inputs: np.ndarray | None = None
    input_shape: list[int] | None = None

    def frame(self, t: int) -> Embedding:
        """Frame t as an `Embedding`."""
        shared = {f.name: getattr(self, f.name) for f in fields(Embedding) if f.name != "points"}
        return Embedding(points=self.points[t], **shared)


# ---------------------------------------------------------------- NTK: extreme samples, Fourier content, layers


@dataclass
class ExtremeSamples:
    """The samples at the two ends of each top kernel eigenvector (for image or signal data).

    Column j of row i is a sample of the kernel's subset: the first m columns hold the m most
    negative entries of eigenvector i (most negative first), the last m the m most positive
    (most positive last).

    Attributes:
        values: (k,) the eigenvalues, largest first.
        indices: (k, 2m) the samples' indices in the subset the kernel was computed on.
        entries: (k, 2m) the eigenvector's entries at those samples.
        inputs: (k, 2m, *input_shape) the samples, in the data's natural shape ((1, 8, 8)
            for digits, (1, 40) for MNIST-1D).
        labels: (k, 2m) their labels (classes, or the first regression target).
        kind: the kernel's kind.
    """

    values: np.ndarray
    indices: np.ndarray
    entries: np.ndarray
    inputs: np.ndarray
    labels: np.ndarray
    kind: str = "trace"


@dataclass
class FourierContent:
    """How each eigenfunction's power spreads over frequencies (spectral bias made visible).

    Attributes:
        values: (k,) the eigenfunctions' eigenvalues, largest first.
        frequencies: (F,) 0, 1, 2, ...: cycles around the circle, or half-cycles over the span
            of a line (a cosine series there, so the ends add no spurious frequencies).
        power: (k, F) the share of each eigenfunction's squared norm at each frequency; a row
            sums to 1 less what lies above the highest frequency kept.
        dominant: (k,) the frequency with the largest share, for each eigenfunction.
        periodic: True around the circle, False along a line.
        kind: the kernel's kind.
    """

    values: np.ndarray
    frequencies: np.ndarray
    power: np.ndarray
    dominant: np.ndarray
    periodic: bool = True
    kind: str = "trace"


@dataclass
class LayerKernels:
    """Each layer's part of the NTK, K = sum_l K_l, with K_l from that layer's parameters alone.

    Attributes:
        layers: the layers' names (their modules, e.g. "layers.fc1"), input to output.
        traces: (L,) trace of each layer's kernel; they add up to the trace of K.
        values: (L, n) each layer's eigenvalues, largest first.
        total_values: (n,) the eigenvalues of K itself.
        kind: the kernel's kind.
    """

    layers: list
    traces: np.ndarray
    values: np.ndarray
    total_values: np.ndarray
    kind: str = "trace"


@dataclass
class TargetPowerTrajectory:
    """The share of the target's squared norm in the kernel's top-k eigenvectors, over training.

    Attributes:
        steps: (T,) the checkpoints' steps.
        top_k: (K,) the numbers of top eigenvectors.
        share: (T, K) the cumulative share in the top top_k[j] eigenvectors at step t.
        kind: the kernel's kind.
    """

    steps: np.ndarray
    top_k: np.ndarray
    share: np.ndarray
    kind: str = "trace"


@dataclass
class PruningMasks:
    """Which weights one pruning keeps (engine.pruning.masks), for drawing as images.

    Attributes:
        masks: weight name -> bool array of the weight's shape, True where the weight is kept.
        input_shape: one sample's shape, so a first layer's rows can be drawn as inputs.
        settings: the method, sparsity and scope.
    """

    masks: dict[str, np.ndarray]
    input_shape: tuple = ()
    settings: dict = field(default_factory=dict)


@dataclass
class ChannelRemoval:
    """Conv channels removed for real (engine.pruning.remove_channels): the smaller model beside
    the masked one it must equal.

    Attributes:
        layers: the L conv layers whose channels could go.
        channels: (L, 2) each layer's channels before and after.
        parameters: (2,) the model's parameters before and after.
        accuracy: (3,) test accuracy of the dense, the masked and the smaller model (NaN for
            regression).
        largest_difference: the largest |output| difference of the masked and the smaller
            model over the test split (float rounding only).
        unsafe: {conv layer: why its channels cannot go (a residual connection, ...)}.
        settings: the sparsity and scope of the channel scores (filter L1 norms).
    """

    layers: list
    channels: np.ndarray
    parameters: np.ndarray
    accuracy: np.ndarray
    largest_difference: float
    unsafe: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)


@dataclass
class PrunedRegions:
    """Decision regions of the dense model and of pruned ones, side by side on one grid.

    Attributes:
        names: K panel names: "dense", then one per method.
        grid_x, grid_y, points, labels, task, n_classes: as in `DecisionRegions`.
        values, confidence: (K, Gy, Gx) each panel's `DecisionRegions.value` and `.confidence`.
        accuracy: (K,) each model's test accuracy (NaN for regression).
        settings: the methods, sparsity, fine-tuning and scope.
    """

    names: list[str]
    grid_x: np.ndarray
    grid_y: np.ndarray
    values: np.ndarray
    confidence: np.ndarray
    points: np.ndarray
    labels: np.ndarray
    accuracy: np.ndarray
    task: str = "classification"
    n_classes: int = 0
    settings: dict = field(default_factory=dict)

    def panel(self, k: int) -> DecisionRegions:
        """Panel k as the `DecisionRegions` that viz.predictions draws."""
        return DecisionRegions(self.grid_x, self.grid_y, self.values[k], self.confidence[k],
                               self.points, self.labels, self.task, self.n_classes)


@dataclass
class FlipGallery:
    """Fragile and robust test samples under pruning (Hooker et al. 2019's "pruning identified
    exemplars"): a sample flips when the pruned model's predicted class differs from the dense
    model's (engine.pruning.flips).

    Attributes:
        method: the pruning method.
        sparsities: (S,) the sparsities tried, ascending.
        inputs: (N, ...) the test inputs, each of `input_shape`.
        labels: (N,) their true classes.
        dense_prediction: (N,) the dense model's predicted classes.
        predictions: (S, N) the pruned model's predicted classes at each sparsity.
        flip_sparsity: (N,) the lowest sparsity at which the sample flips; inf if it never does.
        fragile: indices of the samples that flip earliest (lowest sparsity first).
        robust: indices of samples that keep the dense prediction at every sparsity.
        input_shape: one sample's shape.
        settings: fine-tuning, scope and how many samples were chosen.
    """

    method: str
    sparsities: np.ndarray
    inputs: np.ndarray
    labels: np.ndarray
    dense_prediction: np.ndarray
    predictions: np.ndarray
    flip_sparsity: np.ndarray
    fragile: np.ndarray
    robust: np.ndarray
    input_shape: tuple = ()
    settings: dict = field(default_factory=dict)


# ---------------------------------------------------------------- lazy versus rich


@dataclass
class PhaseDiagram:
    """Lazy versus rich over output scale alpha x width, for several seeds (Geiger et al. 2020).

    Every cell trains the centred network alpha * (f(w) - f(w0)) with the loss divided by
    alpha^2 (engine.lazy.phase_diagram). Arrays indexed [alpha, width, seed]:

    Attributes:
        alphas: (A,) output scales; widths: (W,) hidden widths; seeds: (S,) init seeds.
        weight_change: (A, W, S) final ||w - w0|| / ||w0|| over the network's weights.
        kernel_distance: (A, W, S) 1 - <K0, K>_F / (||K0||_F ||K||_F) between the NTK at
            init and at the end, on a fixed subset of the training inputs.
        kernel_change: (A, W, S) ||K - K0||_F / ||K0||_F on the same subset.
        alignment, initial_alignment: (A, W, S) centred kernel-target alignment of the final
            and the initial NTK with the subset's targets.
        train_loss, test_loss: (A, W, S) the loss of the network's output (NOT divided by
            alpha^2, so cells with different alphas compare) on the fixed evaluation subsets.
        test_accuracy: (A, W, S) NaN for regression.
        diverged: (A, W, S) True where the training loss became NaN or infinite (the measures
            are NaN there).
        run_ids: (A, W) the stored run of each cell's first seed; "" where none was stored.
        settings: the data, model, training settings and the kernel subset that made it.
    """

    alphas: np.ndarray
    widths: np.ndarray
    seeds: np.ndarray
    weight_change: np.ndarray
    kernel_distance: np.ndarray
    kernel_change: np.ndarray
    alignment: np.ndarray
    initial_alignment: np.ndarray
    train_loss: np.ndarray
    test_loss: np.ndarray
    test_accuracy: np.ndarray
    diverged: np.ndarray
    run_ids: np.ndarray
    settings: dict = field(default_factory=dict)

    def seed_mean(self, name: str) -> np.ndarray:
        """(A, W) the mean of a measure over the seeds that did not diverge (NaN if none)."""
        values = np.where(self.diverged, np.nan, getattr(self, name).astype(float))
        counts = (~np.isnan(values)).sum(axis=2)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(counts > 0, np.nansum(values, axis=2) / counts, np.nan)


# ---------------------------------------------------------------- level sets: picking samples


def is_image_shape(shape) -> bool:
    """Whether one sample's natural shape is an image, (H, W) or (C, H, W) with H, W > 1; a
    signal such as MNIST-1D's (1, 40) is not."""
    return shape is not None and len(shape) >= 2 and shape[-2] > 1 and shape[-1] > 1


@dataclass
class SampleGallery:
    """Test samples to pick a level-set traversal's source and targets from
    (engine.recipes.levelset_gallery).

    Attributes:
        index: (N,) each sample's position in the test split.
        x: (N, D) the samples, flattened.
        label: (N,) their classes.
        predicted: (N,) the model's predictions.
        input_shape: one sample's natural shape, e.g. (1, 8, 8); None when unknown.
        settings: what made it (step, per_class, seed).
    """

    index: np.ndarray
    x: np.ndarray
    label: np.ndarray
    predicted: np.ndarray
    input_shape: tuple | None = None
    settings: dict = field(default_factory=dict)

    def position(self, sample: int) -> int | None:
        """Where test sample `sample` is in the gallery, or None."""
        hits = np.flatnonzero(self.index == sample)
        return int(hits[0]) if len(hits) else None
