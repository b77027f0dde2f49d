"""Results as tables: the .csv a user opens in a spreadsheet.

A result's table is long form: one row per point of its axes (every method at every
sparsity, every point of a grid, every checkpoint), a column naming each axis' value, then
one column per measure. `TABLES` says, for each result type of `engine.results`, what its
axes and measures are; `to_csv` writes any result through it. Like `engine.results`, this
module imports numpy only.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import numpy as np

from engine.results import (
    ChannelRemoval,
    ConfidenceMap,
    Confusion,
    ConvexityMap,
    DecisionRegions,
    Eigenfunctions,
    Embedding,
    EmbeddingFrames,
    ExtremeSamples,
    FlipGallery,
    FourierContent,
    FunctionFit,
    GeometryCurves,
    History,
    KernelSpectrum,
    KernelTrajectory,
    LastLayerGeometry,
    LayerKernels,
    LazyMeasures,
    LevelSetPath,
    LinearPath,
    LotteryTickets,
    ModeCurves,
    Parity,
    PhaseDiagram,
    PrunedRegions,
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
    WeightChange,
    WidthProbe,
)

__all__ = ["to_csv", "Axis", "Column", "Table", "count", "grid", "line", "table_columns", "TABLES"]


def to_csv(result) -> str | None:
    """A result as the table a user opens in a spreadsheet, where it is one (see `TABLES`):
    one row per point of its axes (a method and a sparsity, a grid point, a checkpoint) with
    named columns; empty cells for NaN. None for results that are not tables."""
    columns = table_columns(result)
    if columns is None:
        return None
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(zip(*(map(_cell, values) for values in columns.values())))
    return out.getvalue()


def _cell(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return "" if np.isnan(value) else f"{value:.9g}"
    return str(value)


#
# A result's table is long form: one row per point of its axes (every method at every
# sparsity, every point of a grid, every checkpoint), a column naming each axis' value, then
# one column per measure. A measure with an axis more than the table spreads over several
# columns, `name[label]` (the eigenvalues 1..k, the layers); one with fewer repeats along the
# axes it lacks (an eigenvalue beside each point of its eigenfunction).


@dataclass(frozen=True)
class Axis:
    """One axis of a table: its column's name and its values, a field of the result or a
    function of it (`count` for positions 0, 1, ...)."""

    name: str
    labels: object


@dataclass(frozen=True)
class Column:
    """A measure of a table: one column, or a group of them.

    Attributes:
        name: the column's name; a group's columns are `name[label]` (their labels alone
            when name is ""). A dict of arrays is a group by its keys.
        source: the field holding the values, or a function of the result; None leaves the
            column out.
        axes: the table's axes that the values' axes run along, in order (None: all); the
            values repeat along the others.
        spread: the labels of the columns that one more axis of the values spreads into: a
            field, a tuple of labels, or a number to count from.
        spread_axis: that axis of the values (the last by default).
    """

    name: str
    source: object = None
    axes: tuple | None = None
    spread: object = None
    spread_axis: int = -1


@dataclass(frozen=True)
class Table:
    """How a result type is a table: its axes, its measures (Columns, or field names for one
    column over all the axes), and the order of the axes' columns (None: as the axes)."""

    axes: tuple
    columns: tuple
    order: tuple | None = None


def count(field_name: str, axis: int = 0, start: int = 0):
    """Positions start, start + 1, ... along `axis` of a field, as an axis' labels."""
    return lambda result: np.arange(start, start + np.shape(getattr(result, field_name))[axis])


def grid(*columns, x: str = "xs", y: str = "ys") -> Table:
    """A table over a 2-D grid whose arrays are (len(y), len(x)), with x's column first."""
    return Table((Axis("y", y), Axis("x", x)), columns, order=(1, 0))


def line(*columns, x: str = "xs", name: str = "x") -> Table:
    return Table((Axis(name, x),), columns)


def _read(result, source):
    if source is None or isinstance(source, (tuple, int)):
        return source
    return source(result) if callable(source) else getattr(result, source)


def _over_axes(values, axes: tuple, shape: tuple) -> np.ndarray:
    """Values whose axes run along the table's `axes`, repeated along the others, flattened."""
    values = np.asarray(values)
    if values.shape != tuple(shape[a] for a in axes):
        raise ValueError(f"A table column of shape {values.shape} does not fit the table's axes {shape}.")
    placed = values.reshape([shape[a] if a in axes else 1 for a in range(len(shape))])
    return np.broadcast_to(placed, shape).ravel()


def _measure(result, column: Column, shape: tuple) -> dict[str, np.ndarray]:
    """A measure's column(s), name -> flat values."""
    values = _read(result, column.source or column.name)
    if values is None:
        return {}
    axes = column.axes if column.axes is not None else tuple(range(len(shape)))
    if isinstance(values, dict):
        return {f"{column.name}[{key}]" if column.name else str(key): _over_axes(v, axes, shape)
                for key, v in values.items()}
    if column.spread is None:
        return {column.name: _over_axes(values, axes, shape)}
    values = np.moveaxis(np.asarray(values), column.spread_axis, -1)
    labels = column.spread if not isinstance(column.spread, (int, str)) else _read(result, column.spread)
    if isinstance(labels, int):
        labels = range(labels, labels + values.shape[-1])
    return {f"{column.name}[{label}]" if column.name else str(label): _over_axes(values[..., k], axes, shape)
            for k, label in enumerate(labels)}


def table_columns(result) -> dict[str, np.ndarray] | None:
    """A result's table as column name -> values (one per row), or None if it is not one."""
    spec = TABLES.get(type(result))
    if spec is not None and not isinstance(spec, Table):
        spec = spec(result)
    if spec is None:
        return None
    labels = [np.asarray(_read(result, axis.labels)) for axis in spec.axes]
    shape = tuple(len(values) for values in labels)
    columns = {}
    for a in spec.order or range(len(spec.axes)):
        columns[spec.axes[a].name] = _over_axes(labels[a], (a,), shape)
    for column in spec.columns:
        columns |= _measure(result, Column(column) if isinstance(column, str) else column, shape)
    return columns


def _surface_table(r: Surface) -> Table:
    return grid("loss", "accuracy") if r.ys is not None else line("loss", "accuracy")


def _eigenfunction_table(r: Eigenfunctions) -> Table:
    functions = Column("eigenfunction", "functions", spread=1, spread_axis=0)
    if r.grid_y is None:
        return line(functions, x="grid_x", name=r.x_label)
    y = "x2" if r.x_label == "x1" else "y"
    return Table((Axis(y, "grid_y"), Axis(r.x_label, "grid_x")), (functions,), order=(1, 0))


def _levelset_table(r: LevelSetPath) -> Table:
    pairs = (Axis("pair", count("path", axis=1)),) if r.batched else ()
    return Table((Axis("step", "step"), *pairs), (
        "confidence", "l2", "linf", "ssim", Column("source_class", axes=(1,) if r.batched else ()),
        Column("input", "path", spread=1)))


def _phase_table(r: PhaseDiagram) -> Table:
    return Table((Axis("alpha", "alphas"), Axis("width", "widths"), Axis("seed", "seeds")), (
        "weight_change", "kernel_distance", "kernel_change", "alignment", "initial_alignment", "train_loss",
        "test_loss", "test_accuracy", "diverged", Column("run_id", "run_ids", axes=(0, 1))))


# result type -> its Table, or a function of the result that gives it; results not named here
# (PruningMasks: one array per weight, each its own shape) have no table.
TABLES = {
    History: line("eval_train_loss", "eval_train_accuracy", "test_loss", "test_accuracy", x="eval_step", name="step"),
    DecisionRegions: grid("value", "confidence", x="grid_x", y="grid_y"),
    FunctionFit: line("prediction", "target", x="x"),
    Confusion: Table((Axis("true", "labels"), Axis("predicted", "labels")), (Column("count", "matrix"),)),
    Parity: line("target", "prediction", x=count("target"), name="sample"),
    Surface: _surface_table,
    LinearPath: line("loss", "accuracy", name="t"),
    Trajectory: line(Column("pc", "coords", spread=1), "loss", "loss_on_plane", x="steps", name="step"),
    Sharpness: line(Column("eigenvalue", "eigenvalues", spread=1), x="steps", name="step"),
    ConvexityMap: grid("ratio", "lambda_max", "lambda_min"),
    KernelSpectrum: line(Column("eigenvalue", "values"), x=count("values", start=1), name="rank"),
    Eigenfunctions: _eigenfunction_table,
    TargetPower: line(Column("eigenvalue", "values"), "cumulative", x=count("values", start=1), name="rank"),
    ModeCurves: line(Column("predicted", spread=1), Column("actual", spread=1), x="steps", name="step"),
    KernelTrajectory: line("relative_change", "distance", "subspace_overlap", "weight_change", "alignment",
                           x="steps", name="step"),
    WeightChange: line(Column("weight_change", lambda r: list(r.layers.values())), x=lambda r: list(r.layers),
                       name="layer"),
    Embedding: lambda r: line(Column("point", "points", spread=1), Column(r.value_name, "values"),
                              x=count("values"), name="sample"),
    SimilarityMatrix: lambda r: Table((Axis("row", "rows"), Axis("column", "columns")), (Column(r.measure, "values"),)),
    RDMSet: lambda r: Table((Axis("matrix", "names"), Axis("sample_a", count("matrices", 1)),
                             Axis("sample_b", count("matrices", 2))), (Column(f"{r.metric} dissimilarity", "matrices"),)),
    GeometryCurves: Table((Axis("step", "steps"), Axis("layer", "layers")), (Column("", "values"),)),
    UnitMatch: line(Column("correlation", "correlations"), Column("matched_unit", "permutation"),
                    x=count("correlations"), name="unit"),
    SpectralDensity: line("density", x="grid", name="eigenvalue"),
    LevelSetPath: _levelset_table,
    TriangleConfidence: line(Column("weight", "weights", spread=("end_a", "end_b")), Column("plane", spread=1),
                             "confidence", x=count("confidence"), name="point"),
    WidthProbe: Table((Axis("direction", count("confidence")), Axis("radius", "radii")), ("confidence",)),
    ConfidenceMap: grid("confidence", x="grid_x", y="grid_y"),
    PruningSweep: Table((Axis("method", "methods"), Axis("sparsity", "sparsities")), (
        "accuracy", "loss", "corrupted_accuracy", Column("corrupted_accuracy", "corruptions"), "flipped",
        "train_accuracy", "train_loss", "sharpness", "scoring_seconds", "finetune_seconds",
        Column("layer_sparsity", spread="layers"), Column("cka", spread="cka_layers"))),
    LotteryTickets: line("density", "ticket_accuracy", "ticket_loss", "control_accuracy", "control_loss",
                         x=count("density"), name="round"),
    LastLayerGeometry: line(Column("label", "labels"), "feature_norm", "angle", "margin", "correct",
                            x=count("labels"), name="sample"),
    LazyMeasures: line("weight_change", Column("layer_weight_change", spread="layers"), "kernel_change",
                       "kernel_distance", "kernel_speed", "alignment", "cka_to_init", "effective_rank", "twin_gap",
                       "twin_loss", "loss", x="steps", name="step"),
    EmbeddingFrames: lambda r: Table((Axis("step", "steps"), Axis("sample", count("values"))), (
        Column("point", "points", spread=1), Column(r.value_name, "values", axes=(1,)))),
    ExtremeSamples: Table((Axis("eigenvector", count("values", start=1)), Axis("position", count("indices", 1))), (
        Column("eigenvalue", "values", axes=(0,)), Column("sample", "indices"), Column("entry", "entries"),
        Column("label", "labels"))),
    FourierContent: Table((Axis("eigenfunction", count("values", start=1)), Axis("frequency", "frequencies")), (
        Column("eigenvalue", "values", axes=(0,)), "power", Column("dominant_frequency", "dominant", axes=(0,)))),
    LayerKernels: Table((Axis("layer", "layers"), Axis("rank", count("values", 1, start=1))), (
        Column("trace", "traces", axes=(0,)), Column("eigenvalue", "values"),
        Column("total_eigenvalue", "total_values", axes=(1,)))),
    TargetPowerTrajectory: Table((Axis("step", "steps"), Axis("top_k", "top_k")), ("share",)),
    PrunedRegions: Table((Axis("model", "names"), Axis("y", "grid_y"), Axis("x", "grid_x")), (
        Column("value", "values"), "confidence", Column("accuracy", axes=(0,))), order=(0, 2, 1)),
    FlipGallery: line(Column("label", "labels"), "dense_prediction", "flip_sparsity",
                      Column("prediction", "predictions", spread="sparsities", spread_axis=0),
                      x=count("labels"), name="sample"),
    PhaseDiagram: _phase_table,
    SampleGallery: line("label", "predicted", x="index", name="sample"),
    ChannelRemoval: line(Column("channels", spread=("before", "after")), x="layers", name="layer"),
}
