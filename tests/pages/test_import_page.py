"""The Runs page's "Import your own model" panel: it offers only the factories the server was
started with, and turns uploaded weights and data into a run."""
import io

import numpy as np
import safetensors.torch
import torch

from engine import external
from engine.store import RunStore

MODEL = '''
from torch import nn


def make_net(width=4):
    return nn.Sequential(nn.Conv2d(1, width, 3), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.Flatten(), nn.Linear(width * 36, 3))
'''


def uploads(tmp_path):
    """The model file (named in DYNAMICS_LAB_MODELS), and its weights and data as uploads."""
    (tmp_path / "user_net.py").write_text(MODEL)
    factory = f"{tmp_path / 'user_net.py'}:make_net"
    weights = safetensors.torch.save(external.build_model(factory).state_dict())
    data = io.BytesIO()
    np.savez(data, x=torch.randn(30, 1, 8, 8).numpy(), y=np.arange(30) % 3)
    return factory, weights, data.getvalue()


def test_without_offered_models_the_panel_says_how_to_offer_them(open_page, monkeypatch):
    monkeypatch.delenv(external.MODELS_VAR, raising=False)
    at = open_page("runs")
    assert any(external.MODELS_VAR in info.value for info in at.info)
    assert "own-model:import" not in [b.key for b in at.button]


def test_uploaded_weights_and_data_become_a_run(open_page, lab_home, tmp_path, monkeypatch):
    factory, weights, data = uploads(tmp_path)
    monkeypatch.setenv(external.MODELS_VAR, factory)
    at = open_page("runs")
    at.file_uploader(key="own-model:weights").set_value([("net.safetensors", weights, "application/octet-stream")])
    at.file_uploader(key="own-model:data").set_value(("digits.npz", data, "application/octet-stream"))
    at.text_input(key="own-model:name").set_value("uploaded net")
    at.run()
    at.button(key="own-model:import").click().run()
    assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
    runs = RunStore(lab_home / "runs").list()
    assert [r.name for r in runs] == ["uploaded net"] and at.query_params["runs"] == runs[0].id


def test_weights_that_do_not_fit_are_refused_on_the_page(open_page, lab_home, tmp_path, monkeypatch):
    factory, _, data = uploads(tmp_path)
    monkeypatch.setenv(external.MODELS_VAR, factory)
    at = open_page("runs")
    wrong = safetensors.torch.save({"weight": torch.zeros(2, 2)})
    at.file_uploader(key="own-model:weights").set_value([("net.safetensors", wrong, "application/octet-stream")])
    at.run()
    at.button(key="own-model:import").click().run()
    assert any("do not fit the model" in e.value for e in at.error)
    assert RunStore(lab_home / "runs").list() == []


def link_labels(at) -> list[str]:
    return [element.proto.label for element in at.get("link_button")]


def test_a_lab_run_offers_training_again(open_page, stored_run):
    at = open_page("runs")
    at.multiselect[0].set_value([stored_run]).run()
    assert "Train again with these settings" in link_labels(at)


def test_an_imported_model_on_built_in_data_is_not_offered_for_training_again(open_page, lab_home, tmp_path):
    (tmp_path / "mlp.py").write_text("from torch import nn\n\n\ndef make_mlp():\n"
                                     "    return nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2))\n")
    factory = f"{tmp_path / 'mlp.py'}:make_mlp"
    safetensors.torch.save_file(external.build_model(factory).state_dict(), str(tmp_path / "w.safetensors"))
    run_id = external.import_run(factory, tmp_path / "w.safetensors", "moons", store=RunStore(lab_home / "runs"))
    at = open_page("runs")
    at.multiselect[0].set_value([run_id]).run()
    assert not at.exception, at.exception
    assert "Train again with these settings" not in link_labels(at)
