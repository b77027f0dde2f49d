"""The Geometry page offers what the readout reads ("input of" the final Linear) for every model:
the lab's own MLP, and an imported conv net whose pooling is no module (so no module's output
is that representation), and draws its embedding."""
from __future__ import annotations

import time

import numpy as np
import safetensors.torch
import torch
from apptest_helpers import plotly_specs

import app_pages.lab as lab
from engine import external

POOLED_NET = '''
import torch.nn.functional as F
from torch import nn


class PooledNet(nn.Module):
    """conv -> relu -> a mean over the pixels (no module) -> the readout."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(F.relu(self.conv(x)).mean(dim=(2, 3)))


def make_net():
    return PooledNet()
'''


def imported_pooled_net(folder) -> str:
    """The pooled net, its weights and 60 images of 3 classes, imported into the app's store."""
    (folder / "pooled_net.py").write_text(POOLED_NET)
    factory = f"{folder / 'pooled_net.py'}:make_net"
    safetensors.torch.save_file(external.build_model(factory).state_dict(), str(folder / "net.safetensors"))
    images = torch.rand(60, 1, 8, 8, generator=torch.Generator().manual_seed(0)).numpy()
    np.savez(folder / "images.npz", x=images, y=np.arange(60) % 3)
    return external.import_run(factory, folder / "net.safetensors", str(folder / "images.npz"), store=lab.store())


def embedding_title(at, timeout: float = 120.0) -> str:
    """The embedding chart's title, once the page has drawn it (rerunning as its timer would)."""
    deadline = time.monotonic() + timeout
    while True:
        assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
        titles = [str(spec["layout"].get("title", {}).get("text", "")) for spec in plotly_specs(at)]
        found = [t for t in titles if " at step " in t]
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"no embedding after {timeout} s: {titles}"
        time.sleep(0.3)
        at.run()


def test_the_labs_own_model_offers_the_input_of_its_readout(open_page, stored_run):
    at = open_page("geometry")
    layer = at.selectbox(key="geo:layer")
    readouts = [o for o in layer.options if o.startswith("input of ")]
    assert len(readouts) == 1, layer.options
    at.select_slider(key="geo:samples").set_value(200)
    layer.set_value(readouts[0].split(" · ")[0]).run()
    assert embedding_title(at).startswith(readouts[0].split(" · ")[0] + " at step ")


def test_an_imported_model_offers_what_its_readout_reads_and_draws_it(open_page, tmp_path):
    run_id = imported_pooled_net(tmp_path)
    at = open_page("geometry")
    at.selectbox(key="picker:run").set_value(run_id).run()
    layer = at.selectbox(key="geo:layer")
    assert "input of fc · what the readout reads" in layer.options
    assert layer.value == "input of fc"  # no module computes it: the last hidden representation is this
    at.select_slider(key="geo:samples").set_value(200).run()
    assert embedding_title(at).startswith("input of fc at step ")
