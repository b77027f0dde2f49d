"""An experiment: data + model + training settings, as one value.

The same value travels everywhere: the Train page's widgets, the URL's query parameters
(so a copied link reproduces the experiment), the run store's settings.json, and the
command line (`python -m engine train model.width=128 ...`). Flat keys name each setting:
`data`, `data.<option>`, `model.<field>`, `train.<field>`.

`train_job` runs an experiment as a job: it trains, reports live partial results (the
history, the prediction view, steps per second), and saves the run to the store.
"""
from __future__ import annotations

import io
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, get_args, get_type_hints

import numpy as np
import torch

from engine import data as datasets
from engine import external, results
from engine.models import ModelSpec, build
from engine.probes import NAMES as PROBE_NAMES
from engine.probes import WatchConfig, make_probes
from engine.protocols import JobContext, RunReader, RunWriter
from engine.status import TRAINING_OUTCOME
from engine.train import Outcome, TrainConfig, Trainer
from engine.views import prediction_view

__all__ = ["Experiment", "as_text", "parse_typed", "parse", "build_experiment", "LiveReport", "train_job", "watched",
           "load_watched", "dataset_arrays", "summary", "default_name", "load_model", "load_dataset", "STORE_STATUS"]

REPORT_EVERY_S = 0.25  # progress reports at most this often (the page polls about as often)
VIEW_EVERY_S = 1.0  # live curves and prediction views at most this often...
VIEW_SHARE = 0.03  # ...and taking at most this share of the training time


@dataclass
class Experiment:
    """What to train and how, and what to watch while it trains. `errors()` says what is
    wrong with it, field by field."""

    data: str = "moons"
    data_options: dict = field(default_factory=dict)
    model: ModelSpec = field(default_factory=ModelSpec)
    train: TrainConfig = field(default_factory=TrainConfig)
    watch: WatchConfig = field(default_factory=WatchConfig)

    def errors(self) -> dict[str, str]:
        """A sentence for each invalid setting, keyed by its flat key."""
        e = {}
        if self.data not in datasets.names():
            e["data"] = f"Unknown dataset '{self.data}'. Choose one of: {', '.join(datasets.names())}."
        for section in SECTIONS:
            e.update({f"{section}.{k}": v for k, v in getattr(self, section).errors().items()})
        return e

    def to_dict(self) -> dict:
        return {"data": self.data, "data_options": dict(self.data_options)} | {
            section: getattr(self, section).to_dict() for section in SECTIONS}

    @classmethod
    def from_dict(cls, d: dict) -> "Experiment":
        return cls(d.get("data", "moons"), dict(d.get("data_options", {})),
                   **{section: kind.from_dict(d.get(section, {})) for section, kind in SECTIONS.items()})

    # -- flat keys (query parameters, command line)

    def to_flat(self) -> dict[str, str]:
        """Every setting as `key -> text`, the form query parameters take."""
        flat = {"data": self.data}
        flat.update({f"data.{k}": as_text(v) for k, v in self.data_options.items()})
        for section in SECTIONS:
            flat.update({f"{section}.{k}": as_text(v) for k, v in getattr(self, section).to_dict().items()})
        return flat

    @classmethod
    def from_flat(cls, flat: dict[str, str]) -> tuple["Experiment", dict[str, str]]:
        """Parse flat text settings over the defaults.

        Returns the experiment and a sentence for each key that could not be read (unknown
        keys, text that is not a number); those keys keep their defaults.
        """
        errors: dict[str, str] = {}
        name = flat.get("data", "moons")
        try:
            option_defaults = datasets.options(name)
        except ValueError as exc:
            option_defaults, errors["data"] = {}, str(exc)
        values: dict[str, dict] = {"data": {}} | {section: {} for section in SECTIONS}
        for key, text in flat.items():
            if key == "data":
                continue
            section, _, item = key.partition(".")
            try:
                values[section][item] = _read_setting(section, item, text, option_defaults)
            except KeyError:
                errors[key] = f"'{key}' is not a setting of this lab."
            except ValueError as exc:
                errors[key] = str(exc)
        sections = {section: kind(**values[section]) for section, kind in SECTIONS.items()}
        return cls(name, values["data"], **sections), errors


# flat-key prefix -> the dataclass it sets (each has errors, to_dict and from_dict)
SECTIONS = {"model": ModelSpec, "train": TrainConfig, "watch": WatchConfig}


def _read_setting(section: str, item: str, text: str, option_defaults: dict):
    """One flat setting's text as its value (KeyError for a name the section lacks)."""
    if section == "data":
        return parse(text, option_defaults[item])
    hints = get_type_hints(SECTIONS[section])
    return parse_typed(text, hints[item], getattr(SECTIONS[section](), item))


def as_text(value) -> str:
    """A setting's value as the text of a flat key (None is empty; lists are comma-separated)."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ",".join(as_text(v) for v in value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def parse_typed(text: str, hint, default):
    """Read `text` as the type `hint` names (Optional[...] accepts an empty text as None)."""
    args = [a for a in get_args(hint) if a is not type(None)]
    if args and type(None) in get_args(hint):
        if text.strip().lower() in ("", "none"):
            return None
        return parse(text, args[0]())
    return parse(text, default)


def parse(text: str, like):
    """Read `text` as a value of the same type as `like`."""
    text = str(text).strip()
    if isinstance(like, bool):
        if text.lower() in ("true", "1", "yes", "on"):
            return True
        if text.lower() in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"'{text}' is not true or false.")
    if isinstance(like, int):
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"'{text}' is not a whole number.") from None
    if isinstance(like, float):
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"'{text}' is not a number.") from None
    if isinstance(like, (list, tuple)):
        item = like[0] if like else 0.0
        parts = [p for p in text.split(",") if p.strip()]
        return [parse(p, item) for p in parts]
    return text


# ---------------------------------------------------------------- running


def build_experiment(experiment: Experiment, dataset: Optional[datasets.Dataset] = None):
    """The dataset (unless given) and the freshly initialised model of an experiment.

    Raises ValueError with the sentences of every invalid setting.
    """
    errors = experiment.errors()
    if dataset is not None:
        errors.pop("data", None)
    if errors:
        raise ValueError(" ".join(errors.values()))
    if dataset is None:
        dataset = datasets.load(experiment.data, **experiment.data_options)
    model = build(experiment.model, dataset.input_shape, dataset.n_outputs)
    return dataset, model


class LiveReport:
    """Sends the job's partial results while it trains, cheaply.

    Progress (step, steps per second) goes out every REPORT_EVERY_S seconds. The history and
    the prediction view cost more, so they go out at most every VIEW_EVERY_S seconds and
    take at most VIEW_SHARE of the time: a slow view is refreshed less often. With
    `save_history` the history is also saved then (to the run store), so a page of another
    session or process draws the curves live from the store.
    """

    def __init__(self, ctx: JobContext, trainer: Trainer, total_steps: int, probes=(),
                 save_history: Optional[Callable[[dict], None]] = None):
        self.ctx, self.trainer, self.total, self.probes = ctx, trainer, total_steps, probes
        self.save_history = save_history
        self.started = time.perf_counter()
        self.next_progress = 0.0
        self.next_view = 0.0

    def steps_per_second(self) -> float:
        elapsed = time.perf_counter() - self.started
        return self.trainer.step_count / elapsed if elapsed > 0 else 0.0

    def tick(self, force: bool = False) -> None:
        now = time.perf_counter()
        if force or now >= self.next_view:
            self.report_view()
            cost = time.perf_counter() - now
            self.next_view = now + max(VIEW_EVERY_S, cost / VIEW_SHARE)
        elif now >= self.next_progress:
            self.report_progress()
        self.next_progress = now + REPORT_EVERY_S

    def report_progress(self, **extra) -> None:
        t = self.trainer
        self.ctx.report(progress=t.step_count / self.total,
                        message=f"Step {t.step_count:,} of {self.total:,}",
                        step=t.step_count, steps_per_second=self.steps_per_second(), **extra)

    def report_view(self) -> None:
        t = self.trainer
        t.flush()
        history = t.history.copy()
        if self.save_history is not None:
            self.save_history(history.to_dict())
        self.report_progress(history=history, view=prediction_view(t.model, t.data), view_step=t.step_count,
                             watch=watched(self.probes))


def train_job(ctx: JobContext, experiment: Experiment, store: Optional[RunWriter] = None, name: str = "", device=None,
              dataset: Optional[datasets.Dataset] = None) -> dict:
    """Train `experiment` as a job (see `engine.jobs`), saving the run to `store` if given.

    Args:
        ctx: the job's context (progress reports, stop requests).
        experiment: what to train.
        store: a `RunStore` (any `engine.protocols.RunWriter`); the run, its checkpoints and
            metrics are saved there.
        name: the run's display name (made from the settings when empty).
        device: where to train (`engine.device.pick()` by default).
        dataset: the user's own data, used instead of `experiment.data`; its arrays are
            saved with the run so the run stays reproducible.

    Returns `{"run_id", "status", "step", "message"}`. A stop request ends the run as
    "stopped" and keeps what was trained; divergence ends it as "diverged" with a sentence.
    """
    ctx.report(progress=0.0, message="Preparing the data and the model…")
    dataset, model = build_experiment(experiment, dataset)
    trainer = Trainer(model, dataset, experiment.train, device=device,
                      base_width=experiment.model.base_width, keep_checkpoints=store is None)
    run_id = None
    if store is not None:
        settings = experiment.to_dict() | {"dataset": dataset.name,
                                           "input_shape": list(dataset.input_shape),
                                           "n_outputs": dataset.n_outputs,
                                           "device": str(trainer.device)}
        run_id = store.create(name or default_name(experiment, dataset.name), settings)
        if dataset.name != experiment.data:
            store.save_artifact(run_id, "dataset", dataset_arrays(dataset), {"name": dataset.name})
    ctx.report(progress=0.0, message=f"Training on {trainer.device}", run_id=run_id,
               device=str(trainer.device), dataset=dataset.describe())
    probes = make_probes(experiment.watch, trainer)
    live = LiveReport(ctx, trainer, experiment.train.steps, probes,
                      save_history=(lambda history: store.save_metrics(run_id, history)) if store is not None else None)

    def on_step(trainer: Trainer) -> None:
        for probe in probes:
            probe.after_step(trainer)

    def on_checkpoint(step: int, state: dict) -> None:
        for probe in probes:
            probe.at_checkpoint(trainer)
        if store is not None:
            store.save_checkpoint(run_id, step, state)

    def should_stop() -> bool:
        live.tick()
        return ctx.cancelled

    try:
        outcome = trainer.run(should_stop=should_stop, on_checkpoint=on_checkpoint,
                              on_step=on_step if probes else None)
    except Exception as exc:  # a failure mid-run still keeps the history so far
        _save(store, run_id, trainer, Outcome("failed", trainer.step_count, str(exc)), probes)
        raise
    live.tick(force=True)
    _save(store, run_id, trainer, outcome, probes)
    return {"run_id": run_id, "status": outcome.status, "step": outcome.step, "message": outcome.message}


STORE_STATUS = TRAINING_OUTCOME  # the trainer's outcome -> the run's status in the store


def _save(store: RunWriter, run_id: str, trainer: Trainer, outcome: Outcome, probes=()) -> None:
    if store is None:
        return
    trainer.flush()
    store.save_metrics(run_id, trainer.history.to_dict())
    for name, result in watched(probes).items():
        arrays, meta = results.to_arrays(result)
        store.save_artifact(run_id, f"watch-{name}", arrays, meta)
    store.finish(run_id, STORE_STATUS[outcome.status], summary=summary(trainer), message=outcome.message)


def watched(probes) -> dict:
    """What the probes have measured so far: {probe name: result}."""
    return {p.name: r for p in probes if (r := p.result()) is not None}


def load_watched(store: RunReader, run_id: str) -> dict:
    """What was measured while a stored run trained: {probe name: result} (see `engine.probes`)."""
    found = {}
    for name in PROBE_NAMES:
        saved = store.load_artifact(run_id, f"watch-{name}")
        if saved is not None:
            arrays, meta = saved
            found[name] = results.from_arrays(getattr(results, meta["type"]), arrays, meta)
    return found


def dataset_arrays(dataset: datasets.Dataset) -> dict:
    return {k: getattr(dataset, k).cpu().numpy() for k in ("x_train", "y_train", "x_test", "y_test")}


def summary(trainer: Trainer) -> dict:
    h = trainer.history
    out = {"steps": trainer.step_count}
    if h.test_loss:
        out["test_loss"] = h.test_loss[-1]
        if not math.isnan(h.test_accuracy[-1]):
            out["test_accuracy"] = h.test_accuracy[-1]
    return out


def default_name(experiment: Experiment, data_name: str) -> str:
    m, t = experiment.model, experiment.train
    name = f"{data_name} {m.kind} {m.width}x{m.depth} {m.activation} {t.optimizer} lr={t.lr:g}"
    if m.alpha is not None:
        name += f" alpha={m.alpha:g}"
    return name + (f" PGD eps={t.adversarial_eps:g}" if t.adversarial else "")


def load_model(store: RunReader, run_id: str, step: Optional[int] = None, device="cpu") -> torch.nn.Module:
    """Rebuild a stored run's model with the weights of a checkpoint (the last by default)."""
    settings = store.settings(run_id)
    if external.is_imported(settings):  # a user's own model: rebuilt through its factory
        return external.load_model(store, run_id, step, device)
    experiment = Experiment.from_dict(settings)
    model = build(experiment.model, tuple(settings["input_shape"]), settings["n_outputs"])
    model.load_state_dict(store.load_checkpoint(run_id, step))
    return model.to(device)



def load_dataset(store: RunReader, run_id: str) -> datasets.Dataset:
    """The data a stored run was trained on: rebuilt from its settings, or its saved arrays."""
    settings = store.settings(run_id)
    if external.is_imported(settings):  # labels kept as the user's model numbers them
        return external.load_dataset(store, run_id)
    saved = store.load_artifact(run_id, "dataset")
    if saved is None:
        return datasets.load(settings["data"], **settings.get("data_options", {}))
    arrays, _ = saved
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # the same split, through the same checks as an upload
    buffer.seek(0)
    return datasets.from_npz(buffer)
