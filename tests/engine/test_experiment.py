import io
import math

import numpy as np
import pytest
import torch

from engine import data as datasets
from engine.experiment import Experiment, load_dataset, load_model, train_job
from engine.jobs import JobManager
from engine.models import ModelSpec, build
from engine.results import DecisionRegions, FunctionFit, History
from engine.store import RunStore
from engine.train import TrainConfig
from engine.views import predict, prediction_view


def small(data="moons", steps=40, **model):
    return Experiment(data, {}, ModelSpec(width=16, **model),
                      TrainConfig(steps=steps, eval_every=10, checkpoint_every=20))


class FakeContext:
    """Enough of engine.jobs.JobContext to run a job function inline."""

    def __init__(self):
        self.reports, self.cancelled = [], False

    def report(self, progress=None, message=None, **partial):
        self.reports.append(partial)


def test_flat_settings_round_trip():
    e = Experiment("wave", {"frequencies": [1, 2], "n": 64}, ModelSpec(width=7, alpha=3.5, rank=None),
                   TrainConfig(lr=0.003, optimizer="sgd"))
    back, errors = Experiment.from_flat(e.to_flat())
    assert errors == {} and back == e


def test_unreadable_text_and_unknown_keys_get_sentences():
    _, errors = Experiment.from_flat({"data": "moons", "model.width": "wide", "train.colour": "red"})
    assert "whole number" in errors["model.width"]
    assert "not a setting" in errors["train.colour"]


def test_invalid_values_are_keyed_by_their_flat_key():
    experiment, _ = Experiment.from_flat({"model.width": "0", "train.lr": "-1"})
    assert set(experiment.errors()) == {"model.width", "train.lr"}


def test_train_job_saves_a_run_that_reloads_exactly(tmp_path):
    store = RunStore(tmp_path)
    result = train_job(FakeContext(), small(), store=store, device="cpu")
    run_id = result["run_id"]
    assert store.settings(run_id)["status"] == "done"
    assert store.checkpoint_steps(run_id) == [0, 20, 40]
    history = History.from_dict(store.metrics(run_id))
    assert history.step == list(range(1, 41))
    # the reloaded weights are the trained weights: rerunning the same job gives the same outputs
    again = train_job(FakeContext(), small(), store=store, device="cpu")
    x = datasets.load("moons").x_test
    assert torch.equal(predict(load_model(store, run_id), x), predict(load_model(store, again["run_id"]), x))
    assert History.from_dict(store.metrics(again["run_id"])) == history


def test_reloaded_centered_model_keeps_its_initial_weights(tmp_path):
    store = RunStore(tmp_path)
    run_id = train_job(FakeContext(), small(alpha=4.0), store=store, device="cpu")["run_id"]
    at_init = load_model(store, run_id, step=0)
    assert torch.equal(at_init(torch.randn(5, 2)), torch.zeros(5, 2))


def test_train_job_reports_history_and_view():
    ctx = FakeContext()
    train_job(ctx, small(), device="cpu")
    last = ctx.reports[-1]
    assert isinstance(last["view"], DecisionRegions) and last["history"].step[-1] == 40


def test_a_stopped_job_keeps_the_run(tmp_path):
    store, ctx = RunStore(tmp_path), FakeContext()
    ctx.cancelled = True
    result = train_job(ctx, small(steps=1000), store=store, device="cpu")
    assert result["status"] == "stopped"
    assert store.settings(result["run_id"])["status"] == "cancelled"


def test_a_diverging_job_ends_with_a_sentence(tmp_path):
    experiment = small(steps=500, init_scale=8.0)
    experiment.train = TrainConfig(optimizer="sgd", lr=90.0, momentum=0.99, loss="mse", steps=500)
    result = train_job(FakeContext(), experiment, store=RunStore(tmp_path), device="cpu")
    assert result["status"] == "diverged" and "learning rate" in result["message"]


def test_jobs_run_training_in_the_background_and_can_be_cancelled(tmp_path):
    manager = JobManager()
    try:
        job = manager.submit(train_job, owner="a", kind="train", experiment=small(steps=10**6),
                             store=RunStore(tmp_path), device="cpu")
        while "history" not in (manager.get(job, "a").partial or {}):
            pass
        manager.cancel(job, "a")
        state = manager.wait(job, "a", timeout=5)
        assert state.status == "cancelled"
    finally:
        manager.shutdown()


def test_user_data_is_saved_with_the_run(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 3)).astype(np.float32), rng.integers(0, 2, 60)
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=y)
    buffer.seek(0)
    mine = datasets.from_npz(buffer)
    store = RunStore(tmp_path)
    run_id = train_job(FakeContext(), small(), store=store, device="cpu", dataset=mine)["run_id"]
    again = load_dataset(store, run_id)
    assert torch.equal(again.x_train, mine.x_train) and torch.equal(again.y_test, mine.y_test)


@pytest.mark.parametrize("name, kind", [("wave", FunctionFit), ("circle", FunctionFit),
                                        ("moons", DecisionRegions)])
def test_prediction_view_suits_the_data(name, kind):
    data = datasets.load(name)
    model = build(ModelSpec(width=8), data.input_shape, data.n_outputs)
    assert isinstance(prediction_view(model, data), kind)


def test_circle_view_target_matches_the_data():
    data = datasets.load("circle")
    view = prediction_view(build(ModelSpec(width=8), (2,), 1), data)
    angle = math.atan2(data.x_train[0, 1].item(), data.x_train[0, 0].item())
    i = np.argmin(np.abs(view.x - angle))
    assert abs(view.target[i] - data.y_train[0, 0].item()) < 0.1


def test_a_runs_default_name_tells_robust_and_centred_runs_apart():
    from engine.experiment import default_name

    experiment = Experiment(model=ModelSpec(alpha=10.0), train=TrainConfig(adversarial_eps=0.1))
    assert default_name(experiment, "moons").endswith("alpha=10 PGD eps=0.1")


def test_a_training_run_saves_its_history_while_it_trains(tmp_path):
    """Another session or process draws the live curves from the store (the first report of a
    history stops this endless run: what was saved by then is what was reported)."""
    store = RunStore(tmp_path)

    class StopAtFirstHistory(FakeContext):
        def report(self, progress=None, message=None, **partial):
            super().report(progress, message, **partial)
            self.run_id = partial.get("run_id", getattr(self, "run_id", None))
            if "history" in partial and not self.cancelled:
                self.saved, self.reported, self.cancelled = store.metrics(self.run_id), partial["history"], True

    ctx = StopAtFirstHistory()
    train_job(ctx, small(steps=10_000_000), store=store, device="cpu")
    assert ctx.saved == ctx.reported.to_dict()
    assert store.settings(ctx.run_id)["status"] == "cancelled"


def test_a_live_view_says_the_step_it_shows():
    ctx = FakeContext()
    train_job(ctx, small(), device="cpu")
    views = [r for r in ctx.reports if "view" in r]
    assert [r["view_step"] for r in views] == [r["step"] for r in views] and views[-1]["view_step"] == 40
