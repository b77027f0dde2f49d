"""Geometry recipes on imported models of any layout: activations that are functions (F.relu in
forward) rather than modules, and a conv net whose readout reads a pooled map, not the last
activation. The last hidden layer is what the last Linear reads, found by hooks; each
representation is checked against the same computation written out by hand."""
import textwrap

import numpy as np
import pytest
import safetensors.torch
import torch
import torch.nn.functional as F

from engine import external, geometry, recipes
from engine.__main__ import main
from engine.experiment import load_dataset, load_model
from engine.store import RunStore

pytestmark = pytest.mark.usefixtures("one_thread")

MODELS = textwrap.dedent('''
    import torch
    import torch.nn.functional as F
    from torch import nn


    class FunctionalMLP(nn.Module):
        """Activations as functions: no ReLU module anywhere."""

        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(4, 6)
            self.fc2 = nn.Linear(6, 3)

        def forward(self, x):
            return self.fc2(F.relu(self.fc1(x)))


    class PooledConv(nn.Module):
        """A conv net whose readout reads a global average, not the last activation's map."""

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 5, 3, padding=1)
            self.bn = nn.BatchNorm2d(5)
            self.relu = nn.ReLU()
            self.head = nn.Linear(5, 3)

        def forward(self, x):
            return self.head(self.relu(self.bn(self.conv(x))).mean(dim=(2, 3)))


    def functional_mlp():
        return FunctionalMLP()


    def pooled_conv():
        return PooledConv()
''')


def imported_run(tmp_path, factory: str, x: np.ndarray, steps=(0,)) -> tuple[RunStore, str]:
    """The factory's model imported with a checkpoint per step (weights nudged between them)
    and data (x, labels 0-2)."""
    (tmp_path / "user_models.py").write_text(MODELS)
    spec = f"{tmp_path / 'user_models.py'}:{factory}"
    torch.manual_seed(0)
    model = external.build_model(spec)
    (tmp_path / "weights").mkdir()
    for step in steps:
        safetensors.torch.save_file(model.state_dict(), str(tmp_path / "weights" / f"step-{step}.safetensors"))
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1 * torch.randn_like(p))
    y = np.arange(len(x)) % 3
    np.savez(tmp_path / "data.npz", x_train=x, y_train=y, x_test=x[:6], y_test=y[:6])
    store = RunStore(tmp_path / "store")
    return store, external.import_run(spec, tmp_path / "weights", str(tmp_path / "data.npz"), store=store)


@pytest.fixture
def mlp_run(tmp_path):
    return imported_run(tmp_path, "functional_mlp", np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32))


@pytest.fixture
def conv_run(tmp_path):
    x = np.random.default_rng(0).normal(size=(30, 1, 6, 6)).astype(np.float32)
    return imported_run(tmp_path, "pooled_conv", x, steps=(0, 5, 10))


def test_the_readout_of_a_functional_mlp_reads_a_function_output(mlp_run):
    store, run_id = mlp_run
    model = load_model(store, run_id)
    assert recipes.readout_and_hidden(model, torch.zeros(2, 4)) == ("fc2", "input of fc2")


def test_the_last_hidden_layer_of_a_module_chain_is_its_last_activation():
    chain = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    assert recipes.readout_and_hidden(chain, torch.zeros(2, 2)) == ("2", "1")


def test_a_model_without_a_linear_layer_has_no_readout():
    conv = torch.nn.Sequential(torch.nn.Conv1d(1, 2, 3), torch.nn.ReLU())
    assert recipes.readout_and_hidden(conv, torch.zeros(2, 1, 5)) == (None, None)


def test_the_input_of_a_layer_is_what_it_reads(mlp_run):
    store, run_id = mlp_run
    model, x = load_model(store, run_id), load_dataset(store, run_id).x_train
    caught = recipes.layer_outputs(model, x, ["input of fc2", "fc1"], batch_size=7)
    with torch.no_grad():
        assert torch.allclose(caught["input of fc2"], F.relu(model.fc1(x)))
        assert torch.allclose(caught["fc1"], model.fc1(x))


def test_the_default_embedding_of_a_functional_mlp_pictures_its_hidden_layer(mlp_run):
    store, run_id = mlp_run
    result = recipes.embedding(None, store, run_id, samples=1000)
    model, x = load_model(store, run_id), load_dataset(store, run_id).x_train
    with torch.no_grad():
        expected = geometry.embed(F.relu(model.fc1(x)), method="pca")
    assert np.allclose(result.points, expected, atol=1e-5)


def test_geometry_curves_of_a_conv_net_measure_the_pooled_features_the_readout_reads(conv_run):
    store, run_id = conv_run
    curves = recipes.geometry_over_training(None, store, run_id, samples=1000)
    assert curves.layers == ["relu", "input of head", "head"]
    model, data = load_model(store, run_id), load_dataset(store, run_id)
    model.eval()
    with torch.no_grad():
        pooled = model.relu(model.bn(model.conv(data.x_train.reshape(-1, 1, 6, 6)))).mean(dim=(2, 3))
    expected = geometry.neural_collapse(pooled, data.y_train, model.head.weight)["nc3"]
    assert curves.values["nc3"][-1, 1] == pytest.approx(expected, rel=1e-5)
    assert np.isnan(curves.values["nc3"][-1, 0])  # the conv map is not what the readout classifies


def test_the_geometry_curves_command_runs_on_a_conv_net(conv_run, tmp_path):
    store, run_id = conv_run
    code = main(["--store", str(store.root), "geometry", run_id, "--what", "curves", "--out", str(tmp_path),
                 "samples=30"])
    assert code == 0 and (tmp_path / f"geometry-curves-{run_id}.npz").exists()


def test_an_unknown_input_layer_is_a_sentence(mlp_run):
    store, run_id = mlp_run
    with pytest.raises(ValueError, match="no module named 'fc9'"):
        recipes.layer_outputs(load_model(store, run_id), torch.zeros(2, 4), ["input of fc9"])
