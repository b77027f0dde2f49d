"""What to measure while a network trains, besides its losses.

A probe watches a `Trainer`: it may act after every optimizer step and at every checkpoint,
and it holds a result (a dataclass of `engine.results`) that grows as training goes on. The
training job reports the results live and saves them with the run, so a lens page can draw
them during training and after it.

- `SharpnessProbe`: the top Hessian eigenvalue every k steps, for the 2 / lr line of the edge
  of stability (Cohen et al. 2021).
- `LazyProbe`: at every checkpoint, how far the weights, the kernel and the representation
  have moved from initialisation, and how well the kernel fits the targets (Chizat et al.
  2019; Fort et al. 2020; Kornblith et al. 2019).
- `TwinProbe`: the network's linearization at w0 trained alongside it with the same optimizer
  on the same minibatches, and the distance between the two functions (Lee et al. 2019).

`WatchConfig` says which probes a run has; `make_probes` builds them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from engine import geometry, hessian, lazy, ntk
from engine.modes import evaluating
from engine.results import LazyMeasures, Sharpness
from engine.settings import Section, is_whole
from engine.train import Trainer

__all__ = ["WatchConfig", "Probe", "make_probes", "fixed_indices", "fixed_subset", "SharpnessProbe", "TwinTrainer",
           "LazyProbe", "NAMES"]


@dataclass
class WatchConfig(Section):
    """What to measure while training (everything off by default).

    Attributes:
        sharpness_every: steps between estimates of the top Hessian eigenvalue; 0 for never.
        lazy: the lazy/rich measures at every checkpoint.
        twin: train the linearized twin alongside (implies the lazy measures).
        samples: the size of the fixed training subset the probes measure on.
    """

    sharpness_every: int = 0
    lazy: bool = False
    twin: bool = False
    samples: int = 128

    def errors(self) -> dict[str, str]:
        """A sentence for each invalid field, keyed by field name (empty when valid)."""
        e = {}
        if not is_whole(self.sharpness_every) or not 0 <= self.sharpness_every <= 1_000_000:
            e["sharpness_every"] = "Sharpness every must be a whole number of steps from 0 (off) to 1,000,000."
        for name in ("lazy", "twin"):
            if not isinstance(getattr(self, name), bool):
                e[name] = f"{name.capitalize()} must be true or false."
        if not is_whole(self.samples) or not 8 <= self.samples <= 2000:
            e["samples"] = "Probe samples must be a whole number from 8 to 2,000."
        return e

    @property
    def active(self) -> bool:
        return bool(self.sharpness_every or self.lazy or self.twin)




NAMES = ("sharpness", "lazy")  # every probe's name: its live report key and artifact "watch-<name>"


class Probe:
    """A measurement taken while training. Subclasses override what they need."""

    name = "probe"

    def after_step(self, trainer: Trainer) -> None:
        """Called after every optimizer step."""

    def at_checkpoint(self, trainer: Trainer) -> None:
        """Called at every checkpoint (step 0 included), after the evaluation."""

    def result(self):
        """The measurements so far, as a dataclass of `engine.results` (None before any)."""
        return None


def make_probes(watch: WatchConfig, trainer: Trainer) -> list[Probe]:
    """The probes `watch` asks for, attached to `trainer`."""
    probes: list[Probe] = []
    if watch.sharpness_every:
        probes.append(SharpnessProbe(trainer, watch.sharpness_every, watch.samples))
    if watch.lazy or watch.twin:
        twin = TwinTrainer(trainer) if watch.twin else None
        probes.append(LazyProbe(trainer, watch.samples, twin))
    return probes


def fixed_indices(trainer: Trainer, samples: int) -> torch.Tensor:
    """The indices of the first `samples` training samples of a fixed shuffle (the same for every probe)."""
    order = torch.randperm(len(trainer.data.x_train), generator=torch.Generator().manual_seed(12345))[:samples]
    return order.to(trainer.data.x_train.device)


def fixed_subset(trainer: Trainer, samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The training samples at `fixed_indices`: inputs and targets."""
    order = fixed_indices(trainer, samples)
    return trainer.data.x_train[order], trainer.data.y_train[order]


# ---------------------------------------------------------------- sharpness


class SharpnessProbe(Probe):
    """The top eigenvalue of the training loss' Hessian every `every` steps, on a fixed subset."""

    name = "sharpness"
    ITERS = 50  # the most power iterations per estimate (it stops at a relative change of 1e-4)

    def __init__(self, trainer: Trainer, every: int, samples: int):
        self.every = every
        self.x, self.y = fixed_subset(trainer, samples)
        self.lr = trainer.config.lr
        self.steps: list[int] = []
        self.values: list[float] = []
        self.measure(trainer)

    def after_step(self, trainer: Trainer) -> None:
        if trainer.step_count % self.every == 0:
            self.measure(trainer)

    def measure(self, trainer: Trainer) -> None:
        model = trainer.model
        try:
            with evaluating(model):
                values, _ = hessian.top_eigenvalues(model, trainer.loss_fn, self.x, self.y, k=1, iters=self.ITERS)
            value = float(values[0])
        except (RuntimeError, ValueError):
            value = math.nan  # a diverged model: the trainer ends the run and says why
        self.steps.append(trainer.step_count)
        self.values.append(value)

    def result(self) -> Sharpness:
        return Sharpness(np.array(self.steps), np.array(self.values).reshape(-1, 1), self.lr)


# ---------------------------------------------------------------- lazy versus rich


class TwinTrainer:
    """The network's linearization at its initial weights, trained alongside it with the same
    settings: the same optimizer, learning rates and minibatch order (drawn from the same
    seed), one step for each of the network's steps.

    Two methods follow the same twin. "kernel" (`lazy.KernelTwin`): for (S)GD on a stack of
    linear layers the twin's outputs move by its NTK at init times the loss' gradient, exactly,
    so a step is one kernel product. "jvp": a second `Trainer` trains `lazy.linearize(model)`,
    a forward and backward through a jvp per step, for every other run (Adam, weight decay,
    other models). "auto" takes the kernel wherever `lazy.kernel_twin_refusal` allows it.
    """

    METHODS = ("auto", "kernel", "jvp")

    def __init__(self, trainer: Trainer, method: str = "auto"):
        if method not in self.METHODS:
            raise ValueError(f"The twin's method must be one of {', '.join(self.METHODS)}, not '{method}'.")
        if method == "auto":
            method = "jvp" if lazy.kernel_twin_refusal(trainer.model, trainer.data, trainer.config) else "kernel"
        self.method = method
        self.kernel = self.trainer = None
        if method == "kernel":
            self.kernel = lazy.KernelTwin(trainer.model, trainer.data, trainer.config,
                                          device=trainer.device, base_width=trainer.base_width)
        else:
            self.trainer = Trainer(lazy.linearize(trainer.model), trainer.data, trainer.config,
                                   device=trainer.device, base_width=trainer.base_width, keep_checkpoints=False)

    def step(self) -> None:
        if self.kernel is not None:
            self.kernel.step()
        elif self.trainer.diverged_at is None:
            self.trainer.step()

    @torch.no_grad()
    def outputs(self, index: torch.Tensor) -> torch.Tensor:
        """The twin's outputs on the training samples at `index` (the network's in eval mode)."""
        if self.kernel is not None:
            return self.kernel.outputs(index)
        with evaluating(self.trainer.model):
            return self.trainer.model(self.trainer.data.x_train[index])



class LazyProbe(Probe):
    """At every checkpoint: relative weight change (total, per layer), the kernel's relative
    change and distance from init, kernel-target alignment, linear CKA of the last hidden
    layer to itself at init, its effective rank, and with a twin the gap to the linearization."""

    name = "lazy"

    def __init__(self, trainer: Trainer, samples: int, twin: Optional[TwinTrainer] = None):
        self.index = fixed_indices(trainer, samples)
        self.x, self.y = fixed_subset(trainer, samples)
        model = trainer.model
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.w0 = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        self.layer = _last_hidden_layer(model)
        self.loss_fn, self.loss_unit = trainer.loss_fn, trainer.loss_unit
        self.K0 = self.K_previous = self.kernel(model)
        self.H0 = self.hidden(model)
        self.f0 = self.outputs(model)
        self.twin = twin
        self.rows: list[dict] = []
        self.at_checkpoint(trainer)

    def kernel(self, model) -> torch.Tensor:
        return ntk.empirical_ntk(model, self.x, kind="trace")

    def hidden(self, model) -> Optional[torch.Tensor]:
        if self.layer is None:
            return None
        return geometry.activations(model, self.x, [self.layer])[self.layer]

    def after_step(self, trainer: Trainer) -> None:
        if self.twin is not None:
            self.twin.step()

    def at_checkpoint(self, trainer: Trainer) -> None:
        model = trainer.model
        if any(not torch.isfinite(p).all() for p in model.parameters()):
            return  # diverged: nothing to measure; the trainer says so
        if self.rows and self.rows[-1]["step"] == trainer.step_count:
            return
        K = self.kernel(model)
        previous = self.rows[-1]["step"] if self.rows else None
        speed = (1000.0 * lazy.relative_kernel_change(self.K_previous, K) / (trainer.step_count - previous)
                 if previous is not None else math.nan)
        self.K_previous = K
        change = lazy.relative_weight_change(self.w0, {n: p.detach() for n, p in model.named_parameters()},
                                             self.names)
        row = {"step": trainer.step_count, "weight_change": change.total, "layers": change.layers,
               "kernel_change": lazy.relative_kernel_change(self.K0, K),
               "kernel_distance": lazy.kernel_distance(self.K0, K), "kernel_speed": speed,
               "alignment": lazy.kernel_alignment(K, self.y)}
        H = self.hidden(model)
        if H is not None:
            row["cka_to_init"] = geometry.linear_cka(H, self.H0)
            row["effective_rank"] = geometry.effective_rank(H)
        if self.twin is not None:
            f, f_lin = self.outputs(model), self.twin.outputs(self.index)
            row["twin_gap"] = self.gap(f, f_lin)
            row["loss"] = float(self.loss_fn(f, self.y)) * self.loss_unit
            row["twin_loss"] = float(self.loss_fn(f_lin, self.y)) * self.loss_unit
        self.rows.append(row)

    @torch.no_grad()
    def outputs(self, model) -> torch.Tensor:
        """The model's outputs on the probe's samples, in eval mode (the mode is restored)."""
        with evaluating(model):
            return model(self.x)

    def gap(self, f: torch.Tensor, f_lin: torch.Tensor) -> float:
        """||f - f_lin|| / ||f - f0||: the distance between the network and its linearization,
        relative to how far the network's function has moved from init (0 while it has not)."""
        moved = torch.linalg.norm(f - self.f0)
        return float(torch.linalg.norm(f - f_lin) / moved) if moved > 0 else 0.0

    def result(self) -> Optional[LazyMeasures]:
        if not self.rows:
            return None
        column = lambda key: np.array([r.get(key, math.nan) for r in self.rows], dtype=float)  # noqa: E731
        layers = list(self.rows[0]["layers"])
        return LazyMeasures(
            steps=np.array([r["step"] for r in self.rows]),
            weight_change=column("weight_change"),
            layer_weight_change=np.array([[r["layers"].get(l, math.nan) for l in layers] for r in self.rows]),
            layers=layers,
            kernel_change=column("kernel_change"),
            kernel_distance=column("kernel_distance"),
            alignment=column("alignment"),
            cka_to_init=column("cka_to_init"),
            effective_rank=column("effective_rank"),
            twin_gap=column("twin_gap") if self.twin is not None else None,
            twin_loss=column("twin_loss") if self.twin is not None else None,
            loss=column("loss") if self.twin is not None else None,
            kernel_speed=column("kernel_speed"),
        )


def _last_hidden_layer(model: torch.nn.Module) -> Optional[str]:
    """The last activation module: the representation the readout sees."""
    hidden = [n for n in geometry.layer_names(model)
              if isinstance(model.get_submodule(n), geometry.ACTIVATION_TYPES)]
    return hidden[-1] if hidden else None
