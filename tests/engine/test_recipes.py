import numpy as np
import pytest
import torch
from scipy.spatial.distance import pdist

from engine import geometry, landscape, recipes
from engine.experiment import Experiment, train_job
from engine.models import ModelSpec
from engine.store import RunStore
from engine.train import TrainConfig


class Quiet:
    cancelled = False

    def report(self, *args, **kwargs):
        pass

    def check(self):
        pass


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    store = RunStore(tmp_path_factory.mktemp("store"))
    experiment = Experiment("moons", {"n": 200}, ModelSpec(width=8),
                            TrainConfig(steps=60, eval_every=20, checkpoint_every=20))
    return store, train_job(Quiet(), experiment, store=store, device="cpu")["run_id"]


def test_run_data_is_the_stored_model_on_a_fixed_subset(run):
    store, run_id = run
    a = recipes.run_data(store, run_id, samples=50)
    b = recipes.run_data(store, run_id, samples=50)
    assert len(a.x) == 50 and torch.equal(a.x, b.x)
    assert torch.equal(a.model(a.x), b.model(b.x))


def test_random_plane_surface_is_the_landscape_surface_of_the_run(run):
    store, run_id = run
    result = recipes.random_plane_surface(Quiet(), store, run_id, samples=100, resolution=5, seed=3)
    data = recipes.run_data(store, run_id, samples=100)
    d1 = landscape.random_direction(data.model, seed=3)
    d2 = landscape.random_direction(data.model, seed=4)
    direct = landscape.surface(data.model, data.loss, data.x, data.y, d1, d2, xs=np.linspace(-1, 1, 5))
    assert np.allclose(result.loss, direct.loss)
    assert result.loss[2, 2] == pytest.approx(data.loss(data.model(data.x), data.y).item(), rel=1e-5)


def test_trajectory_covers_every_checkpoint(run):
    store, run_id = run
    result = recipes.trajectory(Quiet(), store, run_id, samples=100)
    assert list(result.steps) == store.checkpoint_steps(run_id)


def test_an_unknown_split_is_refused_with_a_sentence(run):
    store, run_id = run
    with pytest.raises(ValueError, match="split"):
        recipes.run_data(store, run_id, split="validation")


def test_ntk_spectrum_is_the_kernel_eigenvalues_of_the_run(run):
    from engine import ntk
    store, run_id = run
    result = recipes.ntk_spectrum(Quiet(), store, run_id, samples=40)
    data = recipes.run_data(store, run_id, samples=40)
    values, _ = ntk.eigen(ntk.empirical_ntk(data.model, data.x, kind="trace"))
    assert np.allclose(result.values, values.numpy(), rtol=1e-4, atol=1e-6)


def test_eigenfunctions_cover_the_plane_of_two_feature_data(run):
    store, run_id = run
    result = recipes.ntk_eigenfunctions(Quiet(), store, run_id, samples=40, k=3)
    grid = recipes.EIGENFUNCTION_GRID
    assert result.functions.shape == (3, grid, grid)


def test_kernel_trajectory_starts_at_zero_change(run):
    store, run_id = run
    result = recipes.ntk_trajectory(Quiet(), store, run_id, samples=30)
    assert result.relative_change[0] == 0 and len(result.steps) == len(store.checkpoint_steps(run_id))


def test_layer_similarity_is_symmetric_with_ones_on_the_diagonal(run):
    store, run_id = run
    result = recipes.layer_similarity(Quiet(), store, run_id, samples=60)
    assert np.allclose(result.values, result.values.T) and np.allclose(np.diag(result.values), 1)


def test_geometry_curves_start_with_cka_one_to_init(run):
    store, run_id = run
    result = recipes.geometry_over_training(Quiet(), store, run_id, samples=60)
    assert np.allclose(result.values["cka_to_init"][0], 1.0)
    assert result.values["nc1"].shape == (len(result.steps), len(result.layers))


def test_levelset_traversal_keeps_the_source_confidence(run):
    store, run_id = run
    source, a, b = recipes.levelset_pairs(store, run_id)
    path = recipes.levelset_traversal(Quiet(), store, run_id, source=source, targets=(a, b), steps=30,
                                      threshold=0.05)
    assert path.path.shape[:2] == (31, 2)
    assert np.all(path.confidence[0] - path.confidence < 0.05 + 1e-6)


def test_levelset_gallery_draws_per_class_adds_the_included_and_predicts(run):
    from engine.experiment import load_dataset, load_model
    store, run_id = run
    gallery = recipes.levelset_gallery(store, run_id, per_class=3, seed=1, include=(5,))
    data, model = load_dataset(store, run_id), load_model(store, run_id)
    assert 5 in gallery.index and len(gallery.index) in (6, 7)
    assert np.all(np.diff(gallery.label) >= 0), "grouped by class"
    np.testing.assert_array_equal(gallery.label, data.y_test[gallery.index].numpy())
    with torch.no_grad():
        expected = model(data.x_test[gallery.index]).argmax(dim=1).numpy()
    np.testing.assert_array_equal(gallery.predicted, expected)


def test_levelset_width_probes_sideways_from_the_walks_point(run):
    store, run_id = run
    source, a, b = recipes.levelset_pairs(store, run_id)
    walk = dict(source=source, targets=(a, b), steps=20)
    path = recipes.levelset_traversal(Quiet(), store, run_id, **walk).pair(0)
    probe = recipes.levelset_width(Quiet(), store, run_id, along=0.5, directions=4, **walk)
    assert probe.confidence.shape == (4, 11) and probe.settings["orthogonal_to_path"]
    np.testing.assert_allclose(probe.confidence[:, 0], path.confidence[10], rtol=1e-5)
    assert probe.radii[-1] == pytest.approx(np.linalg.norm(path.path[-1] - path.path[0]))


def test_levelset_refuses_sample_numbers_outside_the_split(run):
    store, run_id = run
    with pytest.raises(ValueError, match="between 0 and"):
        recipes.levelset_traversal(Quiet(), store, run_id, source=10**6)


def test_pruning_sweep_at_zero_fine_tuning_matches_one_shot(run):
    from engine import pruning
    from engine.experiment import load_dataset, load_model
    store, run_id = run
    sweep = recipes.pruning_sweep(Quiet(), store, run_id, methods=("magnitude",), sparsities=(0.5,))
    data = load_dataset(store, run_id)
    pruned = pruning.one_shot(load_model(store, run_id), "magnitude", 0.5, data, 0, device="cpu")
    accuracy, _ = pruning.evaluate(pruned.model, data.x_test, data.y_test, "ce")
    assert sweep.accuracy[0, 0] == pytest.approx(accuracy)


def test_grasp_masks_at_initialisation_are_scored_on_the_runs_initial_weights(run):
    from engine import pruning
    from engine.experiment import load_dataset, load_model
    store, run_id = run
    result = recipes.pruning_masks(Quiet(), store, run_id, method="grasp", sparsity=0.5, at_init=True)
    data = load_dataset(store, run_id)
    x, y = pruning.score_batch(data)
    expected = pruning.masks(pruning.scores(load_model(store, run_id, step=0), "grasp", x, y), 0.5)
    assert result.masks.keys() == expected.keys()
    assert all(np.array_equal(result.masks[n], expected[n].numpy()) for n in expected)


def test_interpolation_ends_at_the_two_runs_losses(run):
    store, run_id = run
    experiment = Experiment("moons", {"n": 200}, ModelSpec(width=8, seed=1),
                            TrainConfig(steps=60, eval_every=20, checkpoint_every=20))
    other = train_job(Quiet(), experiment, store=store, device="cpu")["run_id"]
    path = recipes.interpolation(Quiet(), store, run_id, other=other, samples=100)
    a, b = (recipes.run_data(store, r, samples=100) for r in (run_id, other))
    assert path.settings["loss_a"] == pytest.approx(a.loss(a.model(a.x), a.y).item(), rel=1e-5)
    assert path.settings["loss_b"] == pytest.approx(b.loss(b.model(b.x), b.y).item(), rel=1e-5)


def test_interpolation_barrier_is_the_bump_between_the_runs_not_beyond(run):
    store, run_id = run
    experiment = Experiment("moons", {"n": 200}, ModelSpec(width=8, seed=2),
                            TrainConfig(steps=60, eval_every=20, checkpoint_every=20))
    other = train_job(Quiet(), experiment, store=store, device="cpu")["run_id"]
    path = recipes.interpolation(Quiet(), store, run_id, other=other, samples=100)
    t, between = path.xs, (path.xs >= 0) & (path.xs <= 1)
    bump = path.loss - ((1 - t) * path.settings["loss_a"] + t * path.settings["loss_b"])
    assert t.min() < 0 and t.max() > 1  # the drawn path extrapolates on both sides
    assert path.barrier == pytest.approx(bump[between].max(), abs=1e-6)


def test_interpolation_refuses_different_architectures(run):
    store, run_id = run
    experiment = Experiment("moons", {"n": 200}, ModelSpec(width=5), TrainConfig(steps=5))
    other = train_job(Quiet(), experiment, store=store, device="cpu")["run_id"]
    with pytest.raises(ValueError, match="different architectures"):
        recipes.interpolation(Quiet(), store, run_id, other=other)


def test_mode_curves_follow_the_kernel_prediction_in_the_lazy_regime(tmp_path):
    store = RunStore(tmp_path)
    experiment = Experiment("circle", {"n": 64}, ModelSpec(width=512, depth=1, parametrization="ntk"),
                            TrainConfig(optimizer="gd", lr=0.2, steps=100, eval_every=50, checkpoint_every=10))
    run_id = train_job(Quiet(), experiment, store=store, device="cpu")["run_id"]
    curves = recipes.ntk_mode_curves(Quiet(), store, run_id, k=3)
    measured, predicted = np.abs(curves.actual[-1]), np.abs(curves.predicted[-1])
    assert np.allclose(measured, predicted, rtol=0.2, atol=0.02 * np.abs(curves.actual[0]).max())


def test_mode_curves_refuse_runs_not_trained_by_full_batch_mse(run):
    store, run_id = run
    with pytest.raises(ValueError, match="full-batch gradient descent on MSE"):
        recipes.ntk_mode_curves(Quiet(), store, run_id)


def test_lottery_density_follows_the_rounds(run):
    store, run_id = run
    tickets = recipes.lottery_tickets(Quiet(), store, run_id, rounds=2, rate=0.5, steps=10)
    assert np.allclose(tickets.density, [1.0, 0.5, 0.25], atol=0.02)


def test_a_run_compared_with_itself_has_cka_one_and_matches_each_unit_to_itself(run):
    store, run_id = run
    cka = recipes.cross_run_similarity(Quiet(), store, run_id, other=run_id, samples=60)
    assert np.allclose(np.diag(cka.values), 1.0)
    match = recipes.matched_units(Quiet(), store, run_id, other=run_id, layer="layers.act1", samples=60)
    alive = np.isfinite(match.correlations)
    assert np.array_equal(match.permutation[alive], np.arange(len(match.permutation))[alive])


def test_convexity_map_centre_matches_the_extreme_eigenvalues_there(run):
    from engine import hessian
    store, run_id = run
    result = recipes.convexity(Quiet(), store, run_id, samples=100, resolution=3)
    data = recipes.run_data(store, run_id, samples=100)
    top, _ = hessian.top_eigenvalues(data.model, data.loss, data.x, data.y, k=1, iters=200, tol=1e-6)
    assert result.lambda_max[1, 1] == pytest.approx(top[0], rel=1e-2)


# ---------------------------------------------------------------- recipes of the geometry page


def test_frame_steps_spread_evenly_and_keep_the_ends():
    from engine.recipes import frame_steps

    assert frame_steps(list(range(0, 1001, 10)), 5) == [0, 250, 500, 750, 1000]
    assert frame_steps([0, 20, 40], 20) == [0, 20, 40]


def test_embedding_frames_are_each_checkpoints_pca_up_to_an_orthogonal_map(run):
    from engine import recipes
    from engine.experiment import load_model

    store, run_id = run
    film = recipes.embedding_over_training(Quiet(), store, run_id, layer="layers.act1", samples=50)
    assert list(film.steps) == store.checkpoint_steps(run_id)
    x = recipes.run_data(store, run_id, samples=50).x
    for step, points in zip(film.steps, film.points):
        H = geometry.activations(load_model(store, run_id, int(step)), x, ["layers.act1"])["layers.act1"]
        np.testing.assert_allclose(pdist(points), pdist(geometry.embed(H, "pca")), atol=1e-6)


def test_embedding_coloured_by_margin_is_positive_exactly_where_the_model_is_right(run):
    from engine import recipes

    store, run_id = run
    view = recipes.embedding(Quiet(), store, run_id, samples=100, colour="margin")
    run = recipes.run_data(store, run_id, samples=100)
    right = (run.model(run.x).argmax(dim=1) == run.y).numpy()
    assert not view.categorical and np.array_equal(view.values > 0, right)


def test_embedding_carries_its_samples_for_pictures(run):
    from engine import recipes

    store, run_id = run
    view = recipes.embedding(Quiet(), store, run_id, samples=100)
    np.testing.assert_array_equal(view.inputs, recipes.run_data(store, run_id, samples=100).x.numpy())
    assert view.input_shape == [2]


def test_an_unknown_colouring_is_refused_with_a_sentence(run):
    from engine import recipes

    store, run_id = run
    with pytest.raises(ValueError, match="coloured by label, prediction, margin"):
        recipes.embedding(Quiet(), store, run_id, samples=50, colour="loss")
