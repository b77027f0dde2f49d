"""Pruning: exact mask counts, masks that survive training, each score against its formula
computed independently (explicit autograd, the dense Hessian from
torch.autograd.functional.hessian, numpy products), structured removal, schedules, measures."""
import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from engine import data as datasets
from engine import pruning
from engine.models import ModelSpec, build
from engine.train import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def tiny():
    """A 3-4-3 tanh MLP in float64 (31 parameters) with random biases, on 40 points."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    with torch.no_grad():
        for layer in (model[0], model[2]):
            layer.bias.normal_()
    x = torch.randn(40, 3, dtype=torch.float64)
    return model, x, torch.randint(0, 3, (40,))


@pytest.fixture(scope="module")
def digits():
    """A small slice of digits (8 x 8 images) to train on quickly."""
    d = datasets.load("digits")
    return d.__class__(**{**d.__dict__, "x_train": d.x_train[:300], "y_train": d.y_train[:300],
                          "x_test": d.x_test[:100], "y_test": d.y_test[:100]})


def mlp(width=8, n_in=10, n_out=3, activation="relu", seed=0):
    return build(ModelSpec(width=width, depth=2, activation=activation, seed=seed), (n_in,), n_out)


def weight_names(model):
    return [n for n, p in model.named_parameters() if p.dim() > 1]


def dense_hessian(model, x, y):
    """The Hessian of the mean cross-entropy over all parameters (flat, in parameter order)."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    shapes = [p.shape for p in params.values()]

    def loss_of(vector):
        parts = vector.split([s.numel() for s in shapes])
        pieces = {name: part.reshape(s) for name, part, s in zip(params, parts, shapes)}
        return F.cross_entropy(functional_call(model, pieces, (x,)), y)

    flat = torch.cat([p.reshape(-1) for p in params.values()])
    return torch.autograd.functional.hessian(loss_of, flat)


def explicit_gradient(model, x, y):
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def as_dict(flat, model):
    out, start = {}, 0
    for n, p in model.named_parameters():
        out[n] = flat[start:start + p.numel()].reshape(p.shape)
        start += p.numel()
    return out


def flat_of(values, model, names):
    return torch.cat([values[n].reshape(-1) if n in names else torch.zeros(p.numel(), dtype=p.dtype)
                      for n, p in model.named_parameters()])


# ---------------------------------------------------------------- masks


def test_global_masks_break_ties_by_position():
    scores = {"a": torch.zeros(10), "b": torch.ones(5)}
    kept = pruning.masks(scores, 0.3, "global")  # round(0.3 * 15) = 5 of the ten tied zeros
    assert kept["a"].tolist() == [False] * 5 + [True] * 5 and kept["b"].all()


@pytest.mark.parametrize("sparsity", [0.0, 0.25, 0.5, 0.9, 1.0])
def test_layer_masks_prune_each_tensor_exactly(sparsity):
    scores = {"a": torch.randint(0, 3, (7, 5)).float(), "b": torch.randint(0, 3, (13,)).float()}
    kept = pruning.masks(scores, sparsity, "layer")
    for name, s in scores.items():
        assert int((~kept[name]).sum()) == int(math.floor(sparsity * s.numel() + 0.5))


def test_global_magnitude_keeps_exactly_the_largest_weights():
    model = mlp()
    kept = pruning.masks(pruning.scores(model, "magnitude"), 0.7, "global")
    w = np.concatenate([p.detach().abs().numpy().ravel()
                        for n, p in model.named_parameters() if p.dim() > 1])
    n_keep = len(w) - round(0.7 * len(w))
    expected = np.zeros(len(w), dtype=bool)
    expected[np.argsort(w)[-n_keep:]] = True
    assert np.array_equal(np.concatenate([k.numpy().ravel() for k in kept.values()]), expected)


@pytest.mark.parametrize("make_optimizer", [
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.1),
    lambda p: torch.optim.Adam(p, lr=0.05, weight_decay=0.1)], ids=["sgd", "adam"])
def test_pruned_weights_stay_zero_through_training(make_optimizer):
    model = mlp()
    kept = pruning.masks(pruning.scores(model, "random"), 0.6)
    pruning.apply(model, kept)
    optimizer = make_optimizer(model.parameters())
    x, y = torch.randn(32, 10), torch.randint(0, 3, (32,))
    for _ in range(20):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    effective = pruning.weights(model)
    assert all((effective[n][~kept[n]] == 0).all() for n in kept)


def test_remove_makes_the_zeros_permanent_with_plain_names():
    model = mlp()
    kept = pruning.masks(pruning.scores(model, "magnitude"), 0.5)
    pruning.remove(pruning.apply(model, kept))
    params = dict(model.named_parameters())
    assert all((params[n][~kept[n]] == 0).all() for n in kept) and set(kept) <= set(params)


def test_removing_the_masks_of_a_copy_leaves_the_original_working():
    model = pruning.apply(mlp(), pruning.masks(pruning.scores(mlp(), "magnitude"), 0.5))
    x = torch.randn(4, 10)
    before = model(x)
    pruning.remove(copy.deepcopy(model))
    assert torch.equal(model(x), before)


def test_already_pruned_weights_stay_pruned_under_a_new_method():
    model = mlp()
    first = pruning.masks(pruning.scores(model, "magnitude"), 0.5)
    pruning.apply(model, first)
    x, y = torch.randn(32, 10), torch.randint(0, 3, (32,))
    second = pruning.masks(pruning.scores(model, "taylor", x, y), 0.7)
    assert all((second[n] <= first[n]).all() for n in first)


def test_sparsity_of_counts_zeros_per_layer_and_in_total():
    model = mlp()
    kept = pruning.masks(pruning.scores(model, "random"), 0.4, "layer")
    measured = pruning.sparsity_of(pruning.apply(model, kept))
    sizes = {n: k.numel() for n, k in kept.items()}
    pruned = {n: int((~k).sum()) for n, k in kept.items()}
    total = sum(pruned.values()) / sum(sizes.values())
    assert measured == {**{n: pruned[n] / sizes[n] for n in kept}, "total": total}


# ---------------------------------------------------------------- scores against formulas


def test_taylor_is_weight_times_gradient(tiny):
    model, x, y = tiny
    g = explicit_gradient(model, x, y)
    scores = pruning.scores(model, "taylor", x, y)
    params = dict(model.named_parameters())
    assert all(torch.allclose(scores[n], (params[n] * g[n]).abs().detach())
               for n in weight_names(model))


def test_snip_is_the_taylor_score_normalised_to_sum_one(tiny):
    model, x, y = tiny
    g = explicit_gradient(model, x, y)
    raw = {n: (p * g[n]).abs().detach() for n, p in model.named_parameters() if p.dim() > 1}
    total = sum(r.sum() for r in raw.values())
    scores = pruning.scores(model, "snip", x, y)
    assert all(torch.allclose(scores[n], raw[n] / total) for n in raw)


def test_snip_scores_are_the_taylor_scores_times_one_constant(tiny):
    model, x, y = tiny
    taylor, snip = (pruning.scores(model, m, x, y) for m in ("taylor", "snip"))
    ratios = torch.cat([(snip[n] / taylor[n]).reshape(-1) for n in taylor])
    assert torch.allclose(ratios, ratios[0].expand_as(ratios))


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_snip_and_taylor_give_the_same_masks(tiny, scope):
    model, x, y = tiny
    taylor, snip = (pruning.scores(model, m, x, y) for m in ("taylor", "snip"))
    for sparsity in (0.3, 0.5, 0.9):
        a, b = pruning.masks(taylor, sparsity, scope), pruning.masks(snip, sparsity, scope)
        assert all(torch.equal(a[n], b[n]) for n in a)


def test_same_masks_names_taylor_and_snip_when_both_are_chosen():
    assert list(pruning.same_masks(["magnitude", "snip", "taylor"])) == [("taylor", "snip")]
    assert pruning.same_masks(["magnitude", "snip"]) == {}


def test_obd_exact_uses_the_dense_hessian_diagonal(tiny):
    model, x, y = tiny
    diagonal = as_dict(torch.diagonal(dense_hessian(model, x, y)), model)
    scores = pruning.scores(model, "obd", x, y, exact=True)
    for n in weight_names(model):
        w = dict(model.named_parameters())[n].detach()
        assert torch.allclose(scores[n], 0.5 * diagonal[n] * w ** 2, atol=1e-12)


def test_obd_hutchinson_estimate_approaches_the_exact_one(tiny):
    model, x, y = tiny
    exact = pruning.scores(model, "obd", x, y, exact=True)
    estimate = pruning.scores(model, "obd", x, y, samples=4000)
    a, b = (torch.cat([s[n].reshape(-1) for n in exact]) for s in (exact, estimate))
    assert (a - b).norm() / a.norm() < 0.1


def test_grasp_is_weight_times_hessian_gradient_product(tiny):
    model, x, y = tiny
    g = explicit_gradient(model, x, y)
    hg = as_dict(dense_hessian(model, x, y) @ flat_of(g, model, list(g)), model)
    scores = pruning.scores(model, "grasp", x, y)
    params = dict(model.named_parameters())
    assert all(torch.allclose(scores[n], params[n].detach() * hg[n], atol=1e-12)
               for n in weight_names(model))


@pytest.mark.parametrize("sparsity", [0.5, 0.75])
def test_grasp_prunes_the_largest_minus_w_hg_as_the_reference_code(tiny, sparsity):
    """alecwangcq/GraSP: S = -theta * Hg over the weights, the top int(sparsity n) removed."""
    model, x, y = tiny
    names, params = weight_names(model), dict(model.named_parameters())
    g = explicit_gradient(model, x, y)
    hg = as_dict(dense_hessian(model, x, y) @ flat_of(g, model, list(g)), model)
    s = torch.cat([(-params[n].detach() * hg[n]).reshape(-1) for n in names])
    removed = torch.zeros_like(s, dtype=torch.bool)
    removed[torch.topk(s, int(len(s) * sparsity)).indices] = True
    kept = pruning.masks(pruning.scores(model, "grasp", x, y), sparsity)
    assert torch.equal(torch.cat([kept[n].reshape(-1) for n in names]), ~removed)


def test_grasp_scores_vanish_at_a_minimum():
    """Least squares solved exactly: g = 0, so w (H g) = 0 whatever w: GraSP cannot rank
    trained weights, which is why it is meant for pruning at initialisation."""
    torch.manual_seed(0)
    x, y = torch.randn(20, 3, dtype=torch.float64), torch.randn(20, 1, dtype=torch.float64)
    solution = torch.linalg.lstsq(torch.cat([x, torch.ones(20, 1, dtype=torch.float64)], 1), y).solution
    model = nn.Linear(3, 1).double()
    with torch.no_grad():
        model.weight.copy_(solution[:3].T)
        model.bias.copy_(solution[3])
    scores = pruning.scores(model, "grasp", x, y, "mse")
    assert scores["weight"].abs().max() < 1e-12 < model.weight.abs().min()


def test_grasp_alone_is_meant_only_for_pruning_at_initialisation():
    assert pruning.init_only(pruning.method_names()) == ["grasp"]


def test_oba_is_the_second_order_share_of_each_weight(tiny):
    model, x, y = tiny
    names, params = weight_names(model), dict(model.named_parameters())
    g = explicit_gradient(model, x, y)
    w = {n: params[n].detach() for n in names}
    hw = as_dict(dense_hessian(model, x, y) @ flat_of(w, model, names), model)
    scores = pruning.scores(model, "oba", x, y)
    expected = {n: (w[n] * g[n] - 0.5 * w[n] * hw[n]).abs() for n in names}
    assert all(torch.allclose(scores[n], expected[n], atol=1e-12) for n in names)


def test_synflow_gives_every_layer_the_same_total_path_norm():
    """Tanaka et al. 2020, Theorem 1: each layer's scores sum to R = 1^T |W3||W2||W1| 1."""
    model = mlp(width=6, n_in=5)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.dim() == 1:
                p.normal_()  # biases are ignored: they must not matter
    layers = [p.detach().abs().double().numpy() for n, p in model.named_parameters() if p.dim() > 1]
    R = np.ones(5)
    for W in layers:
        R = W @ R
    scores = pruning.scores(model, "synflow")
    assert all(math.isclose(float(s.sum()), R.sum(), rel_tol=1e-10) for s in scores.values())


def test_synflow_uses_no_data():
    model = mlp()
    without = pruning.scores(model, "synflow")
    x, y = torch.randn(16, 10) * 5, torch.randint(0, 3, (16,))
    with_data = pruning.scores(model, "synflow", x, y)
    assert all(torch.equal(without[n], with_data[n]) for n in without)


def test_iterative_synflow_keeps_every_layer_alive_at_extreme_sparsity():
    model = mlp(width=32, n_in=20)
    kept = pruning.synflow_iterative(model, 0.99, rounds=20)
    n = sum(k.numel() for k in kept.values())
    assert sum(int(k.sum()) for k in kept.values()) == n - round(0.99 * n)
    assert all(k.any() for k in kept.values())


def test_neuron_scores_are_each_units_norm_on_all_its_weights():
    model = mlp()
    scores = pruning.scores(model, "l1_neuron")
    for n, p in model.named_parameters():
        if p.dim() > 1:
            assert torch.allclose(scores[n], p.detach().abs().sum(1, keepdim=True).expand_as(p))


def test_random_scores_repeat_with_the_seed_and_change_with_it():
    model = mlp()
    a, b, c = (pruning.scores(model, "random", seed=s) for s in (1, 1, 2))
    assert all(torch.equal(a[n], b[n]) and not torch.equal(a[n], c[n]) for n in a)


def test_biases_are_scored_only_when_asked():
    model = mlp()
    assert set(pruning.scores(model, "magnitude")) == set(weight_names(model))
    everything = {n for n, _ in model.named_parameters()}
    assert set(pruning.scores(model, "magnitude", include_biases=True)) == everything


# ---------------------------------------------------------------- structured removal


def test_structured_removal_keeps_the_outputs_with_fewer_parameters():
    model = mlp(width=12, activation="tanh")
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.dim() == 1:
                p.normal_()  # dead units then output tanh(bias), folded into the next bias
    scores = pruning.scores(model, "l2_neuron")
    kept = {n: pruning.masks({n: s}, 0.5, "layer")[n] for n, s in scores.items() if "out" not in n}
    x = torch.randn(50, 10)
    small, counts = pruning.structured_remove(model, kept)
    reference = pruning.apply(copy.deepcopy(model), kept)(x)
    assert torch.allclose(small(x), reference, atol=1e-6)
    before, after = counts["parameters"]
    assert after < before == sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------- schedules


def test_lottery_density_follows_one_minus_rate_to_the_rounds(digits):
    model = build(ModelSpec(width=16, depth=1), digits.input_shape, digits.n_classes)
    config = TrainConfig(steps=10, eval_every=10, checkpoint_every=10)
    tickets, ticket = pruning.iterative_magnitude(model, digits, rounds=3, rate=0.3, rewind_step=2,
                                                  train_config=config)
    assert np.allclose(tickets.density, 0.7 ** np.arange(4), atol=1e-3)
    assert np.isfinite(tickets.control_accuracy).all()


def test_one_shot_prunes_a_copy_to_the_sparsity(digits):
    model = build(ModelSpec(width=16, depth=1), digits.input_shape, digits.n_classes)
    before = copy.deepcopy(model.state_dict())
    result = pruning.one_shot(model, "taylor", 0.8, digits, finetune_steps=5)
    assert math.isclose(pruning.sparsity_of(result.model)["total"], 0.8, abs_tol=1e-3)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_sweep_fills_every_cell_and_reports_progress(digits):
    model = build(ModelSpec(width=16, depth=1), digits.input_shape, digits.n_classes)
    seen = []
    result = pruning.sweep(model, digits, ["magnitude", "snip"], [0.5, 0.9],
                           pruning.SweepSettings(finetune_steps=3), progress=seen.append)
    assert np.isfinite(result.accuracy).all() and np.isfinite(result.cka).all()
    assert np.isfinite(result.train_accuracy).all() and np.isfinite(result.sharpness).all()
    sizes = [p.numel() for p in model.parameters() if p.dim() > 1]
    overall = np.average(result.layer_sparsity, axis=2, weights=sizes)
    assert np.allclose(overall, [[0.5, 0.9]] * 2, atol=1e-3)
    assert seen == [0.25, 0.5, 0.75, 1.0] and set(result.corruptions) == {
        "noise 0.5", "noise 1", "blur 1", "contrast 0.5", "dropout 0.25"}


def test_sweep_stops_when_progress_raises(digits):
    model = build(ModelSpec(width=8, depth=1), digits.input_shape, digits.n_classes)

    def cancel(fraction):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pruning.sweep(model, digits, ["magnitude"], [0.5, 0.9], progress=cancel)


# ---------------------------------------------------------------- measures


@pytest.mark.parametrize("kind,level", [("noise", 1.0), ("blur", 1.0), ("contrast", 0.5),
                                        ("dropout", 0.3)])
def test_corruptions_keep_shape_and_bounds(digits, kind, level):
    out = pruning.corrupt(digits.x_test, kind, level, input_shape=digits.input_shape,
                          bounds=(0.0, 1.0))
    assert out.shape == digits.x_test.shape and out.min() >= 0 and out.max() <= 1
    assert not torch.equal(out, digits.x_test)


def test_image_corruptions_refuse_data_that_is_not_images():
    with pytest.raises(ValueError, match="images"):
        pruning.corrupt(torch.rand(5, 2), "blur", 1.0, input_shape=(2,))


def test_mask_overlap_is_the_jaccard_index_of_the_kept_weights():
    a = {"w": torch.rand(6, 7) > 0.5, "v": torch.rand(9) > 0.3}
    b = {"w": torch.rand(6, 7) > 0.5, "v": torch.rand(9) > 0.3}

    def kept(m):
        return {(n, i) for n, t in m.items() for i in t.reshape(-1).nonzero().flatten().tolist()}

    assert math.isclose(pruning.mask_overlap(a, b), len(kept(a) & kept(b)) / len(kept(a) | kept(b)))


def test_last_layer_geometry_matches_angles_computed_by_hand(tiny):
    model, x, y = tiny
    f = torch.tanh(model[0](x)).detach().numpy()
    W = model[2].weight.detach().numpy()
    cos = (f @ W.T) / np.linalg.norm(f, axis=1)[:, None] / np.linalg.norm(W, axis=1)
    angles = np.degrees(np.arccos(cos))
    true = angles[np.arange(len(y)), y.numpy()]
    others = np.where(np.eye(3, dtype=bool)[y.numpy()], np.inf, angles).min(1)
    geometry = pruning.last_layer_geometry(model, x, y)
    assert np.allclose(geometry.angle, true) and np.allclose(geometry.margin, others - true)
    assert np.allclose(geometry.feature_norm, np.linalg.norm(f, axis=1))


def test_unpruned_model_has_cka_one_and_no_flips():
    model, x = mlp(), torch.randn(64, 10)
    cka = pruning.cka_to_dense(model, model, x)
    assert all(math.isclose(v, 1.0, rel_tol=1e-6) for v in cka.values())
    assert len(pruning.flips(model, model, x)) == 0


def test_top_eigenvalue_is_the_dense_hessians_largest_in_size(tiny):
    model, x, y = tiny
    eigenvalues = torch.linalg.eigvalsh(dense_hessian(model, x, y))
    largest = float(eigenvalues[eigenvalues.abs().argmax()])
    assert math.isclose(pruning.top_eigenvalue(model, x, y, iters=500), largest, rel_tol=1e-3)


# ---------------------------------------------------------------- sample by sample


def test_flip_sparsity_is_the_lowest_sparsity_at_which_a_sample_flips():
    flipped = np.array([[0, 1, 0, 0],
                        [1, 1, 0, 0],
                        [1, 0, 0, 1]], dtype=bool)
    at = pruning.flip_sparsity(flipped, [0.5, 0.8, 0.9])
    assert at.tolist() == [0.8, 0.5, math.inf, 0.9]


def test_fragile_samples_flip_first_and_robust_ones_never():
    flipped = np.array([[0, 1, 0, 0, 1, 0],
                        [1, 1, 0, 0, 0, 0],
                        [1, 1, 0, 1, 0, 0]], dtype=bool)
    fragile, robust = pruning.fragile_and_robust(flipped, [0.5, 0.8, 0.9], count=3)
    # samples 1 and 4 flip at 50%, 1 at more sparsities; then sample 0 at 80%
    assert fragile.tolist() == [1, 4, 0] and robust.tolist() == [2, 5]


def test_flip_gallery_predictions_are_those_of_the_model_pruned_by_one_shot(digits):
    model = build(ModelSpec(width=16, depth=1), digits.input_shape, digits.n_classes)
    gallery = pruning.flip_gallery(model, digits, "magnitude", [0.9, 0.5], pruning.GallerySettings(count=4))
    assert gallery.sparsities.tolist() == [0.5, 0.9]
    for row, sparsity in zip(gallery.predictions, gallery.sparsities):
        pruned = pruning.one_shot(model, "magnitude", sparsity, digits).model
        flipped = pruning.flips(pruned, model, digits.x_test)
        assert np.array_equal(np.flatnonzero(row != gallery.dense_prediction), flipped)
    assert np.isfinite(gallery.flip_sparsity[gallery.fragile]).all()
    assert not np.isfinite(gallery.flip_sparsity[gallery.robust]).any()


def test_flip_gallery_refuses_a_regression():
    data = datasets.load("wave")
    model = build(ModelSpec(width=8, depth=1), data.input_shape, data.n_outputs)
    with pytest.raises(ValueError, match="regression"):
        pruning.flip_gallery(model, data, "magnitude", [0.5])


def test_pruned_regions_are_the_decision_regions_of_each_model():
    from engine import views

    data = datasets.load("moons", n=100)
    model = build(ModelSpec(width=8, depth=1), data.input_shape, data.n_classes)
    regions = pruning.pruned_regions(model, data, ["magnitude"], 0.7, grid=12)
    pruned = pruning.one_shot(model, "magnitude", 0.7, data).model
    assert regions.names == ["dense", "magnitude"] and regions.values.shape == (2, 12, 12)
    for k, m in enumerate((model, pruned)):
        expected = views.decision_regions(m, data, 12)
        assert np.array_equal(regions.panel(k).value, expected.value)
        assert math.isclose(regions.accuracy[k], pruning.evaluate(m, data.x_test, data.y_test)[0])


def test_pruned_regions_need_two_input_features(digits):
    model = build(ModelSpec(width=8, depth=1), digits.input_shape, digits.n_classes)
    with pytest.raises(ValueError, match="two input features"):
        pruning.pruned_regions(model, digits, ["magnitude"], 0.5)


def test_a_sweep_at_initialisation_is_measured_against_the_trained_reference(digits):
    init = build(ModelSpec(width=8, depth=1), digits.input_shape, digits.n_classes)
    trained = pruning.finetune(copy.deepcopy(init), digits, 20)
    result = pruning.sweep(init, digits, ["snip"], [0.5],
                           pruning.SweepSettings(finetune_steps=2, corruptions=()), reference=trained)
    assert math.isclose(result.dense_accuracy,
                        pruning.evaluate(trained, digits.x_test, digits.y_test)[0])
    assert not math.isclose(result.dense_accuracy,
                            pruning.evaluate(init, digits.x_test, digits.y_test)[0])


def test_sharpness_of_a_pruned_model_is_that_of_the_hessian_over_the_kept_weights(tiny):
    model, x, y = tiny
    kept = pruning.masks(pruning.scores(model, "magnitude"), 0.5)
    plain = pruning.plain_copy(pruning.apply(copy.deepcopy(model), kept))
    pruned = pruning.apply(copy.deepcopy(model), kept)
    free = torch.cat([kept[n].reshape(-1) if n in kept else torch.ones(p.numel(), dtype=torch.bool)
                      for n, p in plain.named_parameters()])
    restricted = dense_hessian(plain, x, y)[free][:, free]  # at the pruned point
    eigenvalues = torch.linalg.eigvalsh(restricted)
    largest = float(eigenvalues[eigenvalues.abs().argmax()])
    # power iteration stops at a tolerance; over all weights the value would be 20% larger
    assert math.isclose(pruning.top_eigenvalue(pruned, x, y, iters=500), largest, rel_tol=1e-2)


def test_sweep_measures_each_cell_as_the_model_pruned_by_one_shot(digits):
    model = build(ModelSpec(width=16, depth=1), digits.input_shape, digits.n_classes)
    result = pruning.sweep(model, digits, ["magnitude"], [0.8],
                           pruning.SweepSettings(corruptions=(), sharpness_iters=30))
    pruned = pruning.one_shot(model, "magnitude", 0.8, digits).model
    train_accuracy, train_loss = pruning.evaluate(pruned, digits.x_train, digits.y_train)
    x, y = pruning.score_batch(digits)
    assert math.isclose(result.train_accuracy[0, 0], train_accuracy)
    assert math.isclose(result.train_loss[0, 0], train_loss, rel_tol=1e-6)
    assert math.isclose(result.sharpness[0, 0], pruning.top_eigenvalue(pruned, x, y, iters=30),
                        rel_tol=1e-4)
    assert math.isclose(result.dense_sharpness, pruning.top_eigenvalue(model, x, y, iters=30),
                        rel_tol=1e-4)


# ---------------------------------------------------------------- settings


@pytest.mark.parametrize("settings, message", [
    (dict(finetune_steps=-1), "Fine-tuning steps"),
    (dict(scope="row"), "Scope must be"),
    (dict(score_samples=0), "at least one sample"),
    (dict(options={"magnitud": {}}), "Options are given by method"),
    (dict(cka_samples=0), "CKA needs"),
    (dict(sharpness_iters=-2), "Sharpness iterations"),
])
def test_sweep_settings_refuse_bad_values_with_a_sentence(settings, message):
    with pytest.raises(ValueError, match=message):
        pruning.SweepSettings(**settings)


def test_gallery_settings_refuse_an_empty_gallery():
    with pytest.raises(ValueError, match="at least one sample of each kind"):
        pruning.GallerySettings(count=0)


def test_a_methods_options_reach_its_scores(digits):
    model = build(ModelSpec(width=8, depth=1), digits.input_shape, digits.n_classes)
    settings = pruning.GallerySettings(options={"random": {"seed": 5}}, count=2)
    gallery = pruning.flip_gallery(model, digits, "random", [0.9], settings)
    pruned = pruning.apply(copy.deepcopy(model), pruning.masks(pruning.scores(model, "random", seed=5), 0.9))
    assert np.array_equal(gallery.predictions[0], pruning.predicted_classes(pruned, digits.x_test))
    assert gallery.settings["options"] == {"seed": 5}


def test_settings_given_the_old_way_get_a_sentence(digits):
    model = build(ModelSpec(width=8, depth=1), digits.input_shape, digits.n_classes)
    with pytest.raises(TypeError, match="The settings are a SweepSettings"):
        pruning.sweep(model, digits, ["magnitude"], [0.5], 10)
