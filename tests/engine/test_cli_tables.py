"""Every result with per-row data is a whole table as .csv: named columns, one row per point
of its axes (what `python -m engine <lens> ... --out DIR` writes and a spreadsheet opens)."""
import csv
import dataclasses
import io

import numpy as np
import pytest

from engine import results as r
from engine import tables

M, S, L, T, N, K = 2, 3, 4, 5, 6, 3  # methods, sparsities, layers, steps, samples, eigen-things
GY, GX = 2, 3  # a grid's rows and columns


def ones(*shape):
    return np.ones(shape)


def sweep() -> r.PruningSweep:
    rng = np.random.default_rng(0)
    return r.PruningSweep(
        methods=["magnitude", "random"], sparsities=np.array([0.5, 0.8, 0.9]), accuracy=rng.random((M, S)),
        loss=rng.random((M, S)), corrupted_accuracy=ones(M, S), corruptions={"noise 0.5": ones(M, S)},
        layers=[f"fc{i}.weight" for i in range(L)], layer_sparsity=ones(M, S, L), overlap=ones(S, M, M),
        cka_layers=["fc0", "fc1"], cka=ones(M, S, 2), flipped=ones(M, S), scoring_seconds=ones(M, S),
        finetune_seconds=ones(M, S))


# result -> the number of rows its table has (the product of its axes' lengths)
EXAMPLES = [
    (r.History(step=[1, 2, 3], train_loss=[1.0, 0.5, 0.2], eval_step=[0, 3], eval_train_loss=[1.0, 0.2],
               eval_train_accuracy=[0.5, 0.9], test_loss=[1.0, 0.3], test_accuracy=[0.5, 0.8]), 2),
    (r.DecisionRegions(np.arange(GX), np.arange(GY), ones(GY, GX), ones(GY, GX), ones(N, 2), np.zeros(N),
                       "classification", 2), GY * GX),
    (r.FunctionFit(np.arange(T), ones(T), ones(T), ones(N), ones(N)), T),
    (r.Confusion(np.eye(2), ["a", "b"]), 4),
    (r.Parity(ones(N), ones(N)), N),
    (r.Surface(np.arange(GX), np.arange(GY), ones(GY, GX), ones(GY, GX)), GY * GX),
    (r.Surface(np.arange(GX), None, ones(GX)), GX),
    (r.LinearPath(np.linspace(0, 1, T), ones(T), ones(T)), T),
    (r.Trajectory(np.arange(T), ones(T, 2), ones(2), ones(T), ones(T)), T),
    (r.Sharpness(np.arange(T), ones(T, K)), T),
    (r.ConvexityMap(np.arange(GX), np.arange(GY), ones(GY, GX), ones(GY, GX), ones(GY, GX)), GY * GX),
    (r.KernelSpectrum(ones(N)), N),
    (r.Eigenfunctions(ones(K), ones(K, T), np.arange(T)), T),
    (r.Eigenfunctions(ones(K), ones(K, GY, GX), np.arange(GX), np.arange(GY), "x1"), GY * GX),
    (r.TargetPower(ones(K), ones(K)), K),
    (r.ModeCurves(np.arange(T), ones(T, K), ones(T, K), ones(K)), T),
    (r.KernelTrajectory(np.arange(T), ones(T), ones(T), ones(T), ones(T), ones(T)), T),
    (r.WeightChange(0.5, {"fc1": 0.1, "fc2": 0.2}), 2),
    (r.Embedding(ones(N, 2), np.arange(N)), N),
    (r.SimilarityMatrix(ones(L, 2), [f"a{i}" for i in range(L)], ["b0", "b1"]), L * 2),
    (r.RDMSet(ones(K, N, N), ["input", "target", "fc1"]), K * N * N),
    (r.GeometryCurves(np.arange(T), ["a", "b"], {"nc1": ones(T, 2), "effective_rank": ones(T, 2)}), T * 2),
    (r.UnitMatch(ones(N), np.arange(N)), N),
    (r.SpectralDensity(np.linspace(0, 1, T), ones(T)), T),
    (r.LevelSetPath(ones(T, 2), ones(T), np.arange(T), np.ones(T - 1, bool), ones(T), ones(T), ones(2),
                    np.array(1)), T),
    (r.LevelSetPath(ones(T, 2, 3), ones(T, 2), np.arange(T), np.ones((T - 1, 2), bool), ones(T, 2), ones(T, 2),
                    ones(2, 3), np.array([1, 0])), T * 2),
    (r.TriangleConfidence(ones(N, 2), ones(N, 2), ones(3, 2), ones(N), 1, 0.9, 0.8, ones(2), ones(2), ones(3)), N),
    (r.WidthProbe(np.linspace(0, 1, T), ones(K, T), 0.9, 1), K * T),
    (r.ConfidenceMap(np.arange(GX), np.arange(GY), ones(GY, GX), 0), GY * GX),
    (sweep(), M * S),
    (r.LotteryTickets(ones(K), ones(K), ones(K), ones(K), ones(K)), K),
    (r.LastLayerGeometry(ones(N), ones(N), ones(N), np.ones(N, bool), np.zeros(N, int)), N),
    (r.LazyMeasures(np.arange(T), ones(T), ones(T, 2), ["fc1", "fc2"], ones(T), ones(T), ones(T), ones(T), ones(T)), T),
    (r.EmbeddingFrames(np.arange(T), ones(T, N, 2), np.arange(N)), T * N),
    (r.ExtremeSamples(ones(K), np.zeros((K, 4), int), ones(K, 4), ones(K, 4, 1, 2, 2), np.zeros((K, 4))), K * 4),
    (r.FourierContent(ones(K), np.arange(T), ones(K, T), np.zeros(K)), K * T),
    (r.LayerKernels(["fc1", "fc2"], ones(2), ones(2, N), ones(N)), 2 * N),
    (r.TargetPowerTrajectory(np.arange(T), np.array([1, 2, 4]), ones(T, 3)), T * 3),
    (r.PrunedRegions(["dense", "magnitude"], np.arange(GX), np.arange(GY), ones(2, GY, GX), ones(2, GY, GX),
                     ones(N, 2), np.zeros(N), ones(2)), 2 * GY * GX),
    (r.FlipGallery("magnitude", np.array([0.5, 0.9]), ones(N, 2), np.zeros(N), np.zeros(N), np.zeros((2, N)),
                   np.full(N, np.inf), np.arange(2), np.arange(2)), N),
    (r.PhaseDiagram(*(ones(2) for _ in range(3)), *(ones(2, 2, 2) for _ in range(8)), np.zeros((2, 2, 2), bool),
                    np.array([["a", "b"], ["c", "d"]])), 8),
    (r.SampleGallery(np.arange(N), ones(N, 2), np.zeros(N), np.zeros(N)), N),
    (r.ChannelRemoval(["conv1", "conv2"], np.array([[4, 2], [8, 4]]), np.array([100, 40]), ones(3), 0.0), 2),
]
NOT_TABLES = {r.PruningMasks}  # one array per weight, each its own shape


def rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def test_every_result_type_is_a_table_or_said_not_to_be():
    types = {t for t in vars(r).values() if dataclasses.is_dataclass(t) and t.__module__ == r.__name__}
    assert types - NOT_TABLES == {type(result) for result, _ in EXAMPLES} == set(tables.TABLES)


@pytest.mark.parametrize("result, n_rows", EXAMPLES, ids=lambda x: type(x).__name__)
def test_a_table_has_named_columns_and_one_row_per_point(result, n_rows):
    text = tables.to_csv(result)
    header = text.splitlines()[0].split(",")
    assert len(header) == len(set(header)) >= 2 and all(name and not name.isdigit() for name in header)
    assert len(rows(text)) == n_rows


def test_results_that_are_not_tables_have_no_csv():
    assert tables.to_csv(r.PruningMasks({"fc1.weight": np.ones((2, 3), bool)})) is None


def test_the_pruning_sweeps_csv_holds_each_methods_accuracy_and_loss_at_each_sparsity():
    result = sweep()
    table = rows(tables.to_csv(result))
    for i, method in enumerate(result.methods):
        for j, sparsity in enumerate(result.sparsities):
            row, = [t for t in table if t["method"] == method and float(t["sparsity"]) == sparsity]
            assert float(row["accuracy"]) == pytest.approx(result.accuracy[i, j], rel=1e-8)
            assert float(row["loss"]) == pytest.approx(result.loss[i, j], rel=1e-8)


def test_an_axis_more_spreads_into_labelled_columns():
    header = tables.to_csv(sweep()).splitlines()[0].split(",")
    assert "layer_sparsity[fc3.weight]" in header and "cka[fc1]" in header and "corrupted_accuracy[noise 0.5]" in header


def test_a_grid_has_one_row_per_point_with_its_coordinates():
    surface = r.Surface(xs=np.array([0.0, 1.0, 2.0]), ys=np.array([5.0, 6.0]), loss=np.arange(6.0).reshape(2, 3))
    table = rows(tables.to_csv(surface))
    assert [(float(t["x"]), float(t["y"]), float(t["loss"])) for t in table] == [
        (x, y, surface.loss[j, i]) for j, y in enumerate(surface.ys) for i, x in enumerate(surface.xs)]


def test_values_with_fewer_axes_repeat_along_the_others():
    spectrum = r.FourierContent(np.array([3.0, 2.0]), np.arange(3), np.arange(6.0).reshape(2, 3), np.array([1, 2]))
    table = rows(tables.to_csv(spectrum))
    assert [t["eigenvalue"] for t in table] == ["3"] * 3 + ["2"] * 3
    assert [t["power"] for t in table] == [str(v) for v in range(6)]


def test_missing_values_are_empty_cells():
    path = r.LinearPath(np.arange(2.0), np.array([1.0, np.nan]))
    assert tables.to_csv(path).splitlines() == ["t,loss", "0,1", "1,"]
