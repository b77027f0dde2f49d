"""Importing a user's own model: a model file written the way a researcher writes one (a small
ResNet with BatchNorm), a trajectory of safetensors checkpoints and an .npz, imported with
`python -m engine import`, then looked at by the lens commands; and every bad input refused
with a sentence, exit 2 and an untouched store."""
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

from engine import external
from engine.__main__ import main
from engine.experiment import load_dataset, load_model
from engine.store import RunStore

pytestmark = pytest.mark.usefixtures("one_thread")

USER_MODEL = textwrap.dedent('''
    """A researcher's model file: a tiny ResNet with BatchNorm, and an MLP for tables."""
    import torch
    from torch import nn


    class Block(nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(channels)
            self.relu1 = nn.ReLU()
            self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(channels)
            self.relu2 = nn.ReLU()

        def forward(self, x):
            return self.relu2(x + self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))))


    class TinyResNet(nn.Module):
        def __init__(self, width, classes):
            super().__init__()
            self.stem = nn.Conv2d(1, width, 3, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(width)
            self.relu = nn.ReLU()
            self.block = Block(width)
            self.head = nn.Linear(width, classes)

        def forward(self, x):
            h = self.block(self.relu(self.bn(self.stem(x))))
            return self.head(h.mean(dim=(2, 3)))


    def make_resnet(width=4, classes=3):
        return TinyResNet(width, classes)


    def make_mlp(inputs=3, outputs=1):
        return nn.Sequential(nn.Linear(inputs, 8), nn.Tanh(), nn.Linear(8, outputs))


    def not_a_model():
        return "a string"


    def broken(width=4):
        raise RuntimeError("the factory fell over")
''')


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The model file, three checkpoints of a short training run (BatchNorm statistics
    included) in a folder, and the data as an .npz of (N, 1, 8, 8) images."""
    folder = tmp_path_factory.mktemp("user")
    (folder / "resnet_user.py").write_text(USER_MODEL)
    factory = external.load_factory(f"{folder / 'resnet_user.py'}:make_resnet")
    g = torch.Generator().manual_seed(0)
    y = torch.arange(60) % 3
    x = torch.randn(60, 1, 8, 8, generator=g) + y.float().reshape(-1, 1, 1, 1)
    np.savez(folder / "images.npz", x_train=x[:48].numpy(), y_train=y[:48].numpy(),
             x_test=x[48:].numpy(), y_test=y[48:].numpy())
    torch.manual_seed(0)
    model = factory()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    (folder / "trajectory").mkdir()
    for step in range(11):
        if step % 5 == 0:
            safetensors.torch.save_file(model.state_dict(), str(folder / "trajectory" / f"step-{step}.safetensors"))
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x[:48]), y[:48]).backward()
        optimizer.step()
    return folder


def import_args(files, store, *extra, model="make_resnet", weights="trajectory", data="images.npz"):
    """The import command's arguments; `weights` and `data` are relative to the user's folder
    (or absolute)."""
    args = ["--store", str(store), "import", "--model", f"{files / 'resnet_user.py'}:{model}",
            "--weights", str(files / weights)]
    return args + (["--data", str(files / data)] if data else []) + list(extra)


@pytest.fixture(scope="module")
def imported(files, tmp_path_factory):
    """A store with the trajectory imported once, and the run's id."""
    store = tmp_path_factory.mktemp("store")
    assert main(import_args(files, store, "--name", "my resnet")) == 0
    return RunStore(store), RunStore(store).list()[0].id


# ---------------------------------------------------------------- a good import


def test_import_prints_the_run_id_and_list_shows_the_run(files, tmp_path, capsys):
    assert main(import_args(files, tmp_path, "--name", "my resnet")) == 0
    run_id = RunStore(tmp_path).list()[0].id
    assert f"Saved as run {run_id}" in capsys.readouterr().out
    assert main(["--store", str(tmp_path), "list"]) == 0
    listed = capsys.readouterr().out
    assert run_id in listed and "my resnet" in listed and "10 steps" in listed


def test_the_checkpoints_are_the_files_in_step_order(files, imported):
    store, run_id = imported
    assert store.checkpoint_steps(run_id) == [0, 5, 10]
    for step in (0, 5, 10):
        saved = safetensors.torch.load_file(str(files / "trajectory" / f"step-{step}.safetensors"))
        stored = store.load_checkpoint(run_id, step)
        assert stored.keys() == saved.keys() and all(torch.equal(stored[k], saved[k]) for k in saved)


def test_the_rebuilt_model_gives_the_users_outputs_on_flat_and_natural_inputs(files, imported):
    store, run_id = imported
    reference = external.load_factory(f"{files / 'resnet_user.py'}:make_resnet")()
    reference.load_state_dict(safetensors.torch.load_file(str(files / "trajectory" / "step-5.safetensors")))
    x = torch.randn(7, 1, 8, 8)
    model = load_model(store, run_id, step=5).eval()
    with torch.no_grad():
        expected = reference.eval()(x)
        torch.testing.assert_close(model(x), expected)
        torch.testing.assert_close(model(x.flatten(1)), expected)


def test_the_data_keeps_its_split_labels_and_image_shape(files, imported):
    store, run_id = imported
    data = load_dataset(store, run_id)
    saved = np.load(files / "images.npz")
    assert data.input_shape == (1, 8, 8) and data.task == "classification" and data.n_classes == 3
    np.testing.assert_array_equal(data.y_test.numpy(), saved["y_test"])
    np.testing.assert_allclose(data.x_train.numpy(), saved["x_train"].reshape(48, -1))


def test_the_summary_is_the_last_checkpoints_test_accuracy(files, imported):
    store, run_id = imported
    model, data = load_model(store, run_id).eval(), load_dataset(store, run_id)
    with torch.no_grad():
        accuracy = float((model(data.x_test).argmax(1) == data.y_test).float().mean())
    assert store.settings(run_id)["summary"]["test_accuracy"] == pytest.approx(accuracy)


@pytest.mark.parametrize("lens, what, settings", [
    ("landscape", "surface", ["resolution=3", "samples=20"]),
    ("ntk", "spectrum", ["samples=12"]),
    ("geometry", "embedding", ["samples=30"]),
    ("prune", "sweep", ["sparsities=0.5,0.9"]),
])
def test_lens_commands_run_on_the_imported_run(imported, tmp_path, lens, what, settings):
    store, run_id = imported
    code = main(["--store", str(store.root), lens, run_id, "--what", what, "--out", str(tmp_path), *settings])
    assert code == 0
    assert (tmp_path / f"{lens}-{what}-{run_id}.npz").exists()


def test_a_pytorch_state_dict_file_is_read_without_pickle(files, tmp_path):
    torch.save(safetensors.torch.load_file(str(files / "trajectory" / "step-10.safetensors")), tmp_path / "w.pt")
    assert main(import_args(files, tmp_path / "store", weights=str(tmp_path / "w.pt"))) == 0
    assert RunStore(tmp_path / "store").checkpoint_steps(RunStore(tmp_path / "store").list()[0].id) == [0]


def test_a_csv_of_quantities_imports_as_regression(files, tmp_path):
    rows = np.random.default_rng(0).normal(size=(30, 4))
    np.savetxt(tmp_path / "table.csv", rows, delimiter=",", header="a,b,c,target", comments="")
    safetensors.torch.save_file(external.build_model(f"{files / 'resnet_user.py'}:make_mlp").state_dict(),
                                str(tmp_path / "mlp.safetensors"))
    store = RunStore(tmp_path / "store")
    run_id = external.import_run(f"{files / 'resnet_user.py'}:make_mlp", tmp_path / "mlp.safetensors",
                                 str(tmp_path / "table.csv"), store=store)
    data = load_dataset(store, run_id)
    assert data.task == "regression" and data.input_shape == (3,) and len(data.x_train) == 24


# ---------------------------------------------------------------- bad inputs


def refused(files, store, capsys, *extra, **where) -> str:
    """Run an import that must fail: exit 2, nothing in the store; return its sentence."""
    assert main(import_args(files, store, *extra, **where)) == 2
    assert RunStore(store).list() == [] and not [p for p in store.iterdir() if not p.name.startswith(".")]
    return capsys.readouterr().err


def test_a_missing_model_file_is_refused(files, tmp_path, capsys):
    args = ["--store", str(tmp_path), "import", "--model", str(files / "nowhere.py") + ":make",
            "--weights", str(files / "trajectory")]
    assert main(args) == 2 and "There is no Python file at" in capsys.readouterr().err
    assert RunStore(tmp_path).list() == []


def test_a_missing_factory_is_refused_naming_what_the_file_defines(files, tmp_path, capsys):
    err = refused(files, tmp_path, capsys, model="make_vgg")
    assert "defines no 'make_vgg'" in err and "make_resnet" in err


def test_a_factory_that_returns_no_module_is_refused(files, tmp_path, capsys):
    assert "returned a str, not a torch.nn.Module" in refused(files, tmp_path, capsys, model="not_a_model")


def test_a_factory_that_fails_is_refused_with_its_error(files, tmp_path, capsys):
    assert "the factory fell over" in refused(files, tmp_path, capsys, model="broken")


def test_model_args_that_are_not_a_json_object_are_refused(files, tmp_path, capsys):
    assert "not valid JSON" in refused(files, tmp_path, capsys, "--model-args", "{width: 4}")


def test_weights_of_another_width_are_refused_naming_the_shapes(files, tmp_path, capsys):
    err = refused(files, tmp_path, capsys, "--model-args", '{"width": 6}')
    assert "do not fit the model" in err and "stem.weight is (6, 1, 3, 3) in the model but (4, 1, 3, 3)" in err


def test_weights_with_missing_and_unexpected_keys_are_refused_naming_them(files, tmp_path, capsys):
    state = safetensors.torch.load_file(str(files / "trajectory" / "step-0.safetensors"))
    state["extra.weight"] = state.pop("head.weight")
    safetensors.torch.save_file(state, str(tmp_path / "renamed.safetensors"))
    err = refused(files, tmp_path / "store", capsys, weights=str(tmp_path / "renamed.safetensors"))
    assert "missing keys head.weight" in err and "unexpected keys extra.weight" in err


def test_a_pickled_model_is_refused_saying_how_to_convert_it(files, tmp_path, capsys):
    torch.save({"model": torch.nn.Linear(2, 2)}, tmp_path / "pickled.pt")
    err = refused(files, tmp_path / "store", capsys, weights=str(tmp_path / "pickled.pt"))
    assert "refuses" in err and "safetensors.torch.save_file(model.state_dict()" in err


def test_data_the_model_rejects_is_refused_after_one_batch(files, tmp_path, capsys):
    np.savez(tmp_path / "rgb.npz", x=np.zeros((20, 3, 8, 8), np.float32), y=np.arange(20) % 3)
    err = refused(files, tmp_path / "store", capsys, data=str(tmp_path / "rgb.npz"))
    assert "The model rejects the data: a batch of inputs shaped (8, 3, 8, 8)" in err


def test_regression_targets_that_do_not_match_the_outputs_are_refused(files, tmp_path, capsys):
    np.savez(tmp_path / "two.npz", x=np.zeros((20, 1, 8, 8), np.float32), y=np.random.rand(20, 2))
    err = refused(files, tmp_path / "store", capsys, data=str(tmp_path / "two.npz"))
    assert "2 value(s) per sample but the model gives 3 outputs" in err


def test_labels_beyond_the_outputs_are_refused_as_classification(files, tmp_path, capsys):
    np.savez(tmp_path / "five.npz", x=np.zeros((20, 1, 8, 8), np.float32), y=np.arange(20) % 5)
    err = refused(files, tmp_path / "store", capsys, "--task", "classification",
                  data=str(tmp_path / "five.npz"))
    assert "labels run from 0 to 4, but the model has 3 outputs" in err


def test_a_failure_while_writing_leaves_no_run_behind(files, tmp_path, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(RunStore, "save_artifact", full_disk)
    with pytest.raises(OSError):
        external.import_run(f"{files / 'resnet_user.py'}:make_resnet", files / "trajectory",
                            str(files / "images.npz"), store=RunStore(tmp_path))
    assert RunStore(tmp_path).list() == [] and not [p for p in tmp_path.iterdir() if not p.name.startswith(".")]


def test_a_run_imported_without_data_asks_for_data_in_the_lenses(files, tmp_path, capsys):
    assert main(import_args(files, tmp_path, data=None)) == 0
    run_id = RunStore(tmp_path).list()[0].id
    assert main(["--store", str(tmp_path), "landscape", run_id, "--out", str(tmp_path)]) == 2
    assert "imported without data; import it again with --data" in capsys.readouterr().err


# ---------------------------------------------------------------- the README's example


def readme_example() -> str:
    """The Python block of the README's "Your own model" paragraph."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("**Your own model**", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readme_example_runs_and_imports_a_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("DYNAMICS_LAB_HOME", str(tmp_path / "home"))
    try:
        namespace = {"__name__": "readme"}
        exec(compile(readme_example(), "README.md", "exec"), namespace)
    finally:
        sys.modules.pop("my_model", None)  # the example's model file, imported from tmp_path
    printed = capsys.readouterr().out
    run_id = printed.split("Saved as run ", 1)[1].split()[0]
    assert [r.id for r in RunStore(tmp_path / "home" / "runs").list()] == [run_id]
    assert "(5, 5)" in printed and "running statistics" in printed
    assert namespace["figure"].data, "the contour figure has no traces"


# ---------------------------------------------------------------- only model code the user named


def tampered_zip(data: bytes, factory: str) -> bytes:
    """An exported run whose settings name another factory (what a stranger's upload could say)."""
    import io
    import json
    import zipfile
    source, target = zipfile.ZipFile(io.BytesIO(data)), io.BytesIO()
    with zipfile.ZipFile(target, "w") as out:
        for member in source.namelist():
            content = source.read(member)
            if member == "settings.json":
                settings = json.loads(content)
                settings["imported_model"]["factory"] = factory
                content = json.dumps(settings).encode()
            out.writestr(member, content)
    return target.getvalue()


def test_an_uploaded_run_naming_any_module_is_not_imported(imported, monkeypatch):
    store, run_id = imported
    called = []
    monkeypatch.setattr("os.getcwd", lambda: called.append(True) or "/")
    upload = store.import_zip(tampered_zip(store.export_zip(run_id), "os:getcwd"))
    with pytest.raises(ValueError, match="not imported on this machine"):
        load_model(store, upload)
    assert not called


def test_a_run_uploaded_into_another_store_needs_its_factory_named_there(files, imported, tmp_path, monkeypatch):
    store, run_id = imported
    other = RunStore(tmp_path)
    upload = other.import_zip(store.export_zip(run_id))
    with pytest.raises(ValueError, match="not imported on this machine"):
        load_model(other, upload)
    monkeypatch.setenv(external.MODELS_VAR, f"{files / 'resnet_user.py'}:make_resnet")
    assert load_model(other, upload) is not None


# ---------------------------------------------------------------- uploads through the Runs page


def test_an_upload_may_only_pick_a_factory_the_server_was_started_with(files, tmp_path, monkeypatch):
    monkeypatch.setenv(external.MODELS_VAR, f"{files / 'resnet_user.py'}:make_resnet")
    weights = (files / "trajectory" / "step-0.safetensors").read_bytes()
    with pytest.raises(ValueError, match="not one of the models this lab was started with"):
        external.import_uploaded("os:getcwd", [("w.safetensors", weights)], store=RunStore(tmp_path))
    assert RunStore(tmp_path).list() == []


def test_uploaded_step_files_become_the_runs_trajectory(files, tmp_path, monkeypatch):
    factory = f"{files / 'resnet_user.py'}:make_resnet"
    monkeypatch.setenv(external.MODELS_VAR, factory)
    uploads = [(f"step-{s}.safetensors", (files / "trajectory" / f"step-{s}.safetensors").read_bytes()) for s in (10, 0, 5)]
    data = ("images.npz", (files / "images.npz").read_bytes())
    store = RunStore(tmp_path)
    run_id = external.import_uploaded(factory, uploads, data, store=store)
    assert store.checkpoint_steps(run_id) == [0, 5, 10] and load_dataset(store, run_id).input_shape == (1, 8, 8)


def test_an_uploaded_run_records_the_uploads_and_keeps_its_data_and_weights(files, tmp_path, monkeypatch):
    """The uploads lived in a temporary folder, gone after the import: the run names what was
    uploaded, not that folder, and loads its model and data from the store alone."""
    factory = f"{files / 'resnet_user.py'}:make_resnet"
    monkeypatch.setenv(external.MODELS_VAR, factory)
    weights = [("step-10.safetensors", (files / "trajectory" / "step-10.safetensors").read_bytes())]
    store = RunStore(tmp_path)
    run_id = external.import_uploaded(factory, weights, ("images.npz", (files / "images.npz").read_bytes()), store=store)
    settings = store.settings(run_id)
    assert settings[external.SETTINGS_KEY]["weights"] == "uploaded: step-10.safetensors"
    assert settings["data"] == "uploaded: images.npz"
    expected = np.load(files / "images.npz")["x_test"]
    data = load_dataset(store, run_id)
    assert np.allclose(data.x_test.numpy().reshape(expected.shape), expected)
    assert load_model(store, run_id)(data.x_test).shape == (12, 3)
