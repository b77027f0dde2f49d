"""Tests for engine.geometry: each measure against an independent numpy/scipy reference."""
import importlib
import sys
import threading

import numpy as np
import pytest
import torch
from scipy.spatial.distance import pdist, squareform
from scipy.stats import ortho_group, pearsonr, spearmanr

from engine import geometry
from engine.models import ModelSpec, build


def gaussian(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape)


# ---------------------------------------------------------------- references in numpy


def reference_linear_cka(X, Y):
    """||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F) with centred columns (Kornblith et al. 2019)."""
    X, Y = X - X.mean(0), Y - Y.mean(0)
    return np.linalg.norm(Y.T @ X) ** 2 / (np.linalg.norm(X.T @ X) * np.linalg.norm(Y.T @ Y))


def song_hsic(K, L):
    """The unbiased HSIC estimator of Song et al. (2012), term by term from raw Gram matrices."""
    n = len(K)
    K, L = K.copy(), L.copy()
    np.fill_diagonal(K, 0)
    np.fill_diagonal(L, 0)
    one = np.ones(n)
    return (np.trace(K @ L) + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * one @ K @ L @ one) / (n * (n - 3))


def biased_hsic(K, L):
    H = np.eye(len(K)) - 1 / len(K)
    return np.trace(K @ H @ L @ H)


def gram_cka(K, L, hsic):
    return hsic(K, L) / np.sqrt(hsic(K, K) * hsic(L, L))


def reference_rbf_gram(X, sigma_frac):
    distances = pdist(X)
    sigma = sigma_frac * np.median(distances)
    return np.exp(-squareform(distances) ** 2 / (2 * sigma**2))


# ---------------------------------------------------------------- CKA


def test_linear_cka_equals_the_formula():
    X, Y = gaussian(100, 5), gaussian(100, 7, seed=1) + gaussian(100, 5) @ gaussian(5, 7, seed=2)
    assert geometry.linear_cka(X, Y) == pytest.approx(reference_linear_cka(X, Y), rel=1e-10)


def test_linear_cka_of_wide_layers_goes_through_gram_matrices_and_agrees():
    X, Y = gaussian(20, 300), gaussian(20, 200, seed=1)
    assert geometry.linear_cka(X, Y) == pytest.approx(reference_linear_cka(X, Y), rel=1e-10)


def test_debiased_linear_cka_equals_song_estimator():
    X, Y = gaussian(60, 8), gaussian(60, 8, seed=1) + gaussian(60, 8)
    expected = gram_cka(X @ X.T, Y @ Y.T, song_hsic)
    assert geometry.linear_cka(X, Y, debiased=True) == pytest.approx(expected, rel=1e-9)


def test_rbf_cka_equals_hsic_of_median_bandwidth_grams():
    X, Y = gaussian(50, 6), np.tanh(gaussian(50, 6))
    expected = gram_cka(reference_rbf_gram(X, 0.5), reference_rbf_gram(Y, 0.5), biased_hsic)
    assert geometry.rbf_cka(X, Y, sigma_frac=0.5) == pytest.approx(expected, rel=1e-9)


def test_debiased_rbf_cka_equals_song_estimator():
    X, Y = gaussian(50, 6), np.tanh(gaussian(50, 6))
    expected = gram_cka(reference_rbf_gram(X, 0.8), reference_rbf_gram(Y, 0.8), song_hsic)
    assert geometry.rbf_cka(X, Y, debiased=True) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("cka", [geometry.linear_cka, geometry.rbf_cka])
def test_cka_is_one_under_an_orthogonal_map(cka):
    X = gaussian(80, 10)
    Q = ortho_group.rvs(10, random_state=1)
    assert cka(X, X @ Q) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("cka", [geometry.linear_cka, geometry.rbf_cka])
def test_cka_is_one_under_isotropic_scaling_and_a_shift(cka):
    X = gaussian(80, 10)
    assert cka(X, 3.5 * X + gaussian(1, 10, seed=2)) == pytest.approx(1.0, abs=1e-9)


def test_debiased_cka_of_independent_data_is_near_zero():
    X, Y = gaussian(500, 50), gaussian(500, 50, seed=1)
    assert abs(geometry.linear_cka(X, Y, debiased=True)) < 0.05


def test_minibatch_cka_is_close_to_full_debiased_cka():
    X = gaussian(2000, 16)
    Y = np.tanh(X @ gaussian(16, 24, seed=1)) + gaussian(2000, 24, seed=2)
    full = geometry.linear_cka(X, Y, debiased=True)
    assert geometry.minibatch_cka(X, Y, batch=200) == pytest.approx(full, abs=0.02)


def test_cka_accepts_torch_tensors():
    X, Y = gaussian(40, 5), gaussian(40, 3, seed=1)
    assert geometry.linear_cka(torch.tensor(X, dtype=torch.float32), torch.tensor(Y)) == pytest.approx(
        reference_linear_cka(X, Y), rel=1e-5)


def test_input_target_alignment_is_one_for_a_rotated_one_hot_representation():
    labels = np.arange(90) % 3
    H = np.eye(3)[labels] @ ortho_group.rvs(3, random_state=0)
    alignment = geometry.input_target_alignment(H, gaussian(90, 4), torch.tensor(labels))
    assert alignment["target"] == pytest.approx(1.0, abs=1e-9)


# ---------------------------------------------------------------- RSA


@pytest.mark.parametrize("metric", ["correlation", "euclidean"])
def test_rdm_equals_scipy_pdist(metric):
    X = gaussian(30, 12)
    np.testing.assert_allclose(geometry.rdm(X, metric), squareform(pdist(X, metric)), atol=1e-12)


@pytest.mark.parametrize("method, reference", [("spearman", spearmanr), ("pearson", pearsonr)])
def test_compare_rdms_correlates_the_upper_triangles(method, reference):
    A = geometry.rdm(gaussian(25, 6))
    B = A + 0.3 * squareform(pdist(gaussian(25, 2, seed=1)))
    upper = np.triu_indices(25, k=1)
    expected = reference(A[upper], B[upper])[0]
    assert geometry.compare_rdms(A, B, method) == pytest.approx(expected, rel=1e-10)


# ---------------------------------------------------------------- neural collapse


def simplex_etf(n_classes, dim, seed=0):
    """(C, D) rows of a simplex equiangular tight frame: equal norms, cosines -1/(C-1)."""
    basis = np.linalg.qr(gaussian(dim, n_classes, seed=seed))[0]  # (D, C) orthonormal
    return (np.eye(n_classes) - 1 / n_classes) @ basis.T * np.sqrt(n_classes / (n_classes - 1))


def test_neural_collapse_measures_vanish_on_a_simplex_etf():
    M = simplex_etf(4, 10)
    labels = np.repeat(np.arange(4), 25)
    metrics = geometry.neural_collapse(M[labels], labels, weight=M)
    assert all(abs(metrics[name]) < 1e-9 for name in ("nc1", "nc2_norm", "nc2_angle", "nc3", "nc4"))


def test_nc1_is_within_over_between_variance():
    # Two classes at -e and +e along one axis with within-class spread s along it:
    # S_B = e e^T and S_W has s^2 along e, so tr(S_W S_B^+) / C = s^2 / 2.
    labels = np.repeat([0, 1], 2)
    features = np.array([[-1.0 - 0.1, 0], [-1.0 + 0.1, 0], [1.0 - 0.1, 0], [1.0 + 0.1, 0]])
    assert geometry.neural_collapse(features, labels)["nc1"] == pytest.approx(0.01 / 2)


def test_nc4_counts_disagreements_with_the_nearest_class_mean():
    M = simplex_etf(3, 5)
    labels = np.repeat(np.arange(3), 10)
    swapped = M[[1, 0, 2]]  # the classifier confuses classes 0 and 1
    assert geometry.neural_collapse(M[labels], labels, weight=swapped)["nc4"] == pytest.approx(20 / 30)


# ---------------------------------------------------------------- dimensionality


def test_effective_rank_of_k_equal_singular_values_is_k():
    U = np.linalg.qr(gaussian(50, 4))[0]
    V = np.linalg.qr(gaussian(20, 4, seed=1))[0]
    assert geometry.effective_rank(3.0 * U @ V.T) == pytest.approx(4.0)


@pytest.mark.parametrize("spectrum, expected", [([1.0], 1.0), ([1, 1, 1, 1], 4.0), ([3, 2, 1], 36 / 14)])
def test_participation_ratio_of_known_spectra(spectrum, expected):
    # Orthonormal columns orthogonal to the ones vector: already centred, covariance ~ diag(spectrum).
    n = 40
    basis = np.linalg.qr(np.column_stack([np.ones(n), gaussian(n, len(spectrum))]))[0][:, 1:]
    X = basis * np.sqrt(spectrum) @ ortho_group.rvs(6, random_state=2)[: len(spectrum)]
    assert geometry.participation_ratio(X) == pytest.approx(expected)


# ---------------------------------------------------------------- matching units


def test_hungarian_matching_recovers_a_permutation_of_units():
    A = gaussian(300, 12)
    shuffle = np.random.default_rng(3).permutation(12)
    B = A[:, shuffle] + 0.3 * gaussian(300, 12, seed=4)
    permutation, correlations = geometry.match_units(A, B)
    assert np.array_equal(permutation, np.argsort(shuffle)) and (correlations > 0.9).all()


# ---------------------------------------------------------------- activations


def small_mlp():
    return build(ModelSpec(width=8, depth=2, activation="tanh"), (3,), 2)


def test_layer_names_of_the_mlp():
    assert geometry.layer_names(small_mlp()) == [
        "layers.fc1", "layers.act1", "layers.fc2", "layers.act2", "layers.out"]


def test_hooked_activation_equals_the_forward_of_the_submodules():
    model, x = small_mlp(), torch.randn(50, 3)
    hooked = geometry.activations(model, x, ["layers.act2"], batch_size=16)["layers.act2"]
    torch.testing.assert_close(hooked, model.layers[:4](x).detach())


def test_activations_remove_their_hooks_and_restore_train_mode():
    model = small_mlp().train()
    geometry.activations(model, torch.randn(5, 3))
    assert model.training and not any(m._forward_hooks for m in model.modules())


def test_activations_over_checkpoints_load_each_state():
    model, x = small_mlp(), torch.randn(10, 3)
    later = {k: v + 0.5 for k, v in model.state_dict().items()}
    out = geometry.activations_over_checkpoints(model, {0: model.state_dict(), 7: later}, x, ["layers.out"])
    model.load_state_dict(later)
    torch.testing.assert_close(out[7]["layers.out"], model(x).detach())


# ---------------------------------------------------------------- embeddings


def test_pca_embedding_equals_sklearn_up_to_sign():
    from sklearn.decomposition import PCA

    X = gaussian(100, 8) * np.arange(1, 9)
    ours, theirs = geometry.embed(X, "pca", dim=3), PCA(3).fit_transform(X)
    np.testing.assert_allclose(np.abs(ours), np.abs(theirs), atol=1e-9)


def reference_pca(X, dim):
    """Scores and explained-variance ratios from numpy's SVD of the centred data, each
    component's sign set so that its largest loading is positive (scikit-learn's rule)."""
    Xc = X - X.mean(axis=0)
    U, S, Vt = np.linalg.svd(Xc, full_matrices=False)
    signs = np.sign(Vt[np.arange(dim), np.abs(Vt[:dim]).argmax(axis=1)])
    return U[:, :dim] * S[:dim] * signs, S[:dim] ** 2 / (S**2).sum()


# More samples than features (the scatter matrix route) and more features than samples (Gram).
PCA_SHAPES = [(120, 9), (9, 120)]


@pytest.mark.parametrize("shape", PCA_SHAPES)
def test_pca_equals_numpy_svd_up_to_sign(shape):
    X = gaussian(*shape) * np.linspace(3, 1, shape[1])
    scores, ratios = geometry.pca(X, dim=4)
    reference_scores, reference_ratios = reference_pca(X, 4)
    np.testing.assert_allclose(np.abs(scores), np.abs(reference_scores), atol=1e-9)
    np.testing.assert_allclose(ratios, reference_ratios, atol=1e-12)


@pytest.mark.parametrize("shape", PCA_SHAPES)
def test_pca_signs_make_each_largest_loading_positive(shape):
    X = gaussian(*shape, seed=3)
    np.testing.assert_allclose(geometry.pca(X, dim=3)[0], reference_pca(X, 3)[0], atol=1e-9)


@pytest.mark.parametrize("shape", [(400, 300), (300, 400)])
def test_pca_of_a_large_matrix_by_lobpcg_equals_numpy_svd_up_to_sign(shape):
    X = gaussian(*shape, seed=5) * np.linspace(3, 1, shape[1])
    assert min(shape) >= geometry.ITERATIVE_FROM  # the iterative route
    scores, ratios = geometry.pca(X, dim=3)
    reference_scores, reference_ratios = reference_pca(X, 3)
    np.testing.assert_allclose(np.abs(scores), np.abs(reference_scores), atol=1e-9)
    np.testing.assert_allclose(ratios, reference_ratios, atol=1e-12)


def test_lobpcg_answers_only_within_its_tolerance():
    C = torch.from_numpy(gaussian(300, 300, seed=6))
    C = C @ C.T
    values, vectors = geometry._iterative_top_eigenvectors(C, 2)
    exact = torch.linalg.eigvalsh(C)[-2:].flip(0)
    torch.testing.assert_close(values, exact, rtol=1e-10, atol=0)
    residual = torch.linalg.vector_norm(C @ vectors - vectors * values, dim=0).max()
    assert residual <= geometry.ITERATIVE_TOLERANCE * values[0]


def test_pca_beyond_the_rank_gives_zero_components_not_nans():
    X = gaussian(5, 2) @ gaussian(2, 40, seed=1)  # 5 samples of rank 2 in 40 features
    scores, ratios = geometry.pca(X, dim=4)
    # Zero up to rounding of the squared problem: sqrt(eps) of the largest score.
    np.testing.assert_allclose(scores[:, 2:], 0, atol=1e-7 * np.abs(scores).max())
    np.testing.assert_allclose(ratios.sum(), 1, atol=1e-12)


def test_aligned_pca_undoes_a_rotation_between_frames():
    X = gaussian(60, 5) * np.arange(5, 0, -1)
    Q = ortho_group.rvs(5, random_state=7)
    first, second = geometry.aligned_embed([X, X @ Q], method="pca")
    np.testing.assert_allclose(second, first, atol=1e-9)


@pytest.mark.parametrize("n", [20, 130])  # cdist's direct route (up to 25) and its matrix product
def test_nearest_neighbours_are_those_of_scipys_distances(n):
    X = gaussian(n, 6)
    indices, distances = geometry.nearest_neighbors(X, k=5, batch_size=32)
    reference = squareform(pdist(X))
    np.fill_diagonal(reference, -1.0)  # each sample first among its own
    np.testing.assert_array_equal(indices, np.argsort(reference, axis=1, kind="stable")[:, :5])
    np.testing.assert_allclose(distances[:, 1:], np.sort(reference, axis=1)[:, 1:5], rtol=1e-6)
    assert (distances[:, 0] == 0).all()


@pytest.mark.parametrize("rows, n", [(20, 20), (32, 130)])  # cdist by differences (up to 25), by a product
def test_distances_are_torch_cdists_bit_for_bit(rows, n):
    # What umap was given before, so embeddings stay as they were.
    X = torch.from_numpy(gaussian(n, 6))
    ours = geometry._euclidean_distances(X[:rows], X, geometry._with_squared_norms(X, first=False))
    assert torch.equal(ours, torch.cdist(X[:rows], X))


def test_umap_epochs_shrink_in_proportion_past_2000_samples_to_a_floor_of_100():
    assert [geometry.umap_epochs(n) for n in (10, 2000, 3000, 4000, 10**6)] == [200, 200, 133, 100, 100]
    assert geometry._umap_options(4000, 2, 0, {"n_epochs": 500})["n_epochs"] == 500  # the caller's word wins


def test_umap_is_deterministic_with_a_seed():
    # Compiled code comes from geometry.numba_cache_dir(): slow only on a machine's first run.
    X = gaussian(200, 10)
    first = geometry.embed(X, "umap", seed=3, n_epochs=50)
    assert first.shape == (200, 2) and np.array_equal(first, geometry.embed(X, "umap", seed=3, n_epochs=50))


EAGER_MODULE = 'import numba\n\n@numba.njit("i8(i8)")\ndef plus_one(x):\n    return x + 1\n'


def test_functions_with_a_signature_compile_on_first_use_then_load_from_the_disk_cache(tmp_path, monkeypatch):
    # numba compiles such functions at import; umap.utils's have no cache=True, and most of
    # pynndescent's are never called by embed.
    (tmp_path / "eager_module.py").write_text(EAGER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(geometry, "DISK_CACHED_PACKAGES", ("eager_module",))

    def import_afresh():
        sys.modules.pop("eager_module", None)
        with geometry._eager_jits_disk_cached():
            return importlib.import_module("eager_module").plus_one

    first = import_afresh()
    assert first.signatures == []  # importing compiled nothing
    assert first(41) == 42 and sum(first.stats.cache_misses.values()) == 1
    second = import_afresh()
    assert second(41) == 42 and sum(second.stats.cache_hits.values()) == 1


def test_importing_umap_leaves_pynndescents_declared_functions_for_first_use():
    geometry.import_umap()
    import pynndescent.rp_trees

    from engine.deferred_jit import DeferredDispatcher

    assert isinstance(pynndescent.rp_trees.euclidean_random_projection_split, DeferredDispatcher)


def test_umap_warm_up_does_nothing_unless_the_launcher_asks(monkeypatch):
    monkeypatch.delenv(geometry.WARM_UP_VAR, raising=False)
    monkeypatch.setattr(geometry, "_warm_up_started", threading.Event())
    assert geometry.warm_up_umap_in_background() is None


def test_umap_warm_up_fills_the_cache_in_a_child_then_loads_it_here_once(monkeypatch):
    children, here = [], []
    monkeypatch.setenv(geometry.WARM_UP_VAR, "1")
    monkeypatch.setattr(geometry, "_warm_up_started", threading.Event())
    monkeypatch.setattr(geometry.subprocess, "run", lambda command, env, **kw: children.append((command, env)))
    monkeypatch.setattr(geometry, "warm_up_umap", lambda: here.append(len(children)))
    geometry.warm_up_umap_in_background().join(timeout=60)
    assert geometry.warm_up_umap_in_background() is None  # once per process
    (command, env), = children
    assert "warm_up_umap()" in command[-1] and env["NUMBA_CACHE_DIR"] == str(geometry.numba_cache_dir())
    assert here == [1]  # after the child


# ---------------------------------------------------------------- margins


def test_margin_is_the_true_logit_minus_the_largest_other():
    logits = gaussian(20, 4)
    labels = np.random.default_rng(1).integers(4, size=20)
    expected = [row[y] - max(v for k, v in enumerate(row) if k != y) for row, y in zip(logits, labels)]
    np.testing.assert_allclose(geometry.classification_margin(logits, labels), expected)
