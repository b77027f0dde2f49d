"""The pruning page removes conv channels of a stored VGG and shows the smaller model beside the
masked one (AppTest)."""
from __future__ import annotations

import time

from apptest_helpers import Quiet, plotly_specs

import app_pages.lab as lab
from engine.experiment import Experiment, train_job
from engine.models import ModelSpec
from engine.train import TrainConfig


def rerun_until(at, done, timeout: float = 180.0) -> None:
    """Rerun the page (as the progress fragment's timer would) until `done()` holds."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"not there after {timeout} s"
        assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
        time.sleep(0.3)
        at.run()


def with_half_the_channels_removed(open_page, kind: str):
    """The pruning page of a freshly trained `kind` net, pruned by magnitude to 50% without
    fine-tuning, with "remove the channels" on and its job done."""
    experiment = Experiment("digits", {}, ModelSpec(kind=kind, width=4, depth=1),
                            TrainConfig(steps=10, eval_every=10, checkpoint_every=10))
    train_job(Quiet(), experiment, store=lab.store(), device="cpu")
    at = open_page("pruning")
    at.multiselect(key="pr:methods").set_value(["magnitude"]).run()
    at.multiselect(key="pr:sparsities").set_value([0.5]).run()
    at.select_slider(key="pr:finetune").set_value(0).run()
    rerun_until(at, lambda: any(t.key == "pr:channels" for t in at.toggle))  # after the sweep's job
    at.toggle(key="pr:channels").set_value(True).run()
    rerun_until(at, lambda: len(at.metric) >= 3)  # after the removal's job
    return at


def test_the_pruning_page_shows_a_vgg_with_half_its_channels_removed(open_page, lab_home):
    at = with_half_the_channels_removed(open_page, "vgg")
    parameters = next(m for m in at.metric if m.label == "Parameters")
    masked = next(m for m in at.metric if m.label == "Test accuracy, masked")
    smaller = next(m for m in at.metric if m.label == "Test accuracy, smaller model")
    assert masked.value == smaller.value and parameters.delta.startswith("-")
    bars = next(spec for spec in plotly_specs(at) if "channels removed" in str(spec["layout"].get("title")))
    assert [trace["name"] for trace in bars["data"]] == ["before", "after"]


def test_the_pruning_page_removes_the_inner_channels_of_every_resnet_block(open_page, lab_home):
    at = with_half_the_channels_removed(open_page, "resnet")
    masked = next(m for m in at.metric if m.label == "Test accuracy, masked")
    smaller = next(m for m in at.metric if m.label == "Test accuracy, smaller model")
    assert masked.value == smaller.value
    bars = next(spec for spec in plotly_specs(at) if "channels removed" in str(spec["layout"].get("title")))
    assert bars["data"][0]["x"] == ["blocks.0.conv1", "blocks.1.conv1", "blocks.2.conv1"]  # blocks 1, 2 downsample
    kept_whole = [c.value for c in at.caption if "kept whole" in c.value]
    assert any(c.startswith("stem:") for c in kept_whole) and any(c.startswith("blocks.2.conv2:") for c in kept_whole)
