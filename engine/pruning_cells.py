"""A run's pruning sweep and its lottery tickets, as cells of the sweep mechanism (`engine.sweep`).

Pruning sweep: a cell is one (method, sparsity) of a run's sweep. Its worker loads the run,
prunes it (`pruning.sweep_setup`, `pruning.prune_cell`: the very steps `pruning.sweep` takes
in one process), fine-tunes and measures it, and publishes the pruned model as an ordinary
run `cell-<key>` (its weights with the pruned ones zero, so it opens in every lens; its
masks and its measures as artifacts) through the mechanism's staging folder and rename.
The driver then assembles the `PruningSweep` from the cells' runs and measures what spans
the cells (`pruning.finish_sweep`): the overlap of the methods' masks at each sparsity, and
the dense model. The result equals `pruning.sweep`'s.

Lottery tickets: a chain. Round 0 trains the run's initial weights (and keeps the weights to
rewind to); round k's ticket prunes what round k-1 trained, rewinds and trains again; its
control trains round k's masks from a shuffled initialisation. Each is a cell whose run holds
its trained weights, masks and measures; the ticket of round k and its control *need* round
k-1's ticket (`CellKind.needs`), so the mechanism starts them when it is finished, side by
side. The curves assembled from the runs equal `pruning.iterative_magnitude`'s.

Both are resumable like every sweep: a cancelled, failed or killed sweep keeps its finished
cells, and running it again computes only the others.

Where the cells' runs go: a run store of their own inside the run store, `<store>/.cells/`
(`cells_store`). They are ordinary runs there (`RunStore(root / ".cells")` lists and opens
them), but the lab's run list shows the runs people trained, not the dozens of pruned copies
an analysis makes of each (the Overview alone prunes every run it shows).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from typing import Optional, Sequence

import numpy as np
import torch

from engine import pruning, recipes
from engine.experiment import Experiment, load_dataset, load_model
from engine.losses import loss_for_task
from engine.results import LotteryTickets, PruningSweep, from_arrays, to_arrays
from engine.store import CELLS_FOLDER, RESERVED_KEYS, RunStore
from engine.sweep import CellKind, CellResult, Sweep, cell_run_id, existing_result, once, publish, read_errors, run_sweep

__all__ = ["PruningCell", "pruning_cells", "read_pruning_cell", "pruning_key", "compute_pruned", "pruning_errors",
           "pruning_kind", "pruning_sweep_job", "assemble_pruning_sweep", "LotteryCell", "lottery_cells",
           "read_lottery_cell", "lottery_key", "lottery_needs", "compute_round", "lottery_errors", "lottery_kind",
           "lottery_job", "assemble_lottery", "cells_store", "find_cell_run", "PER_CELL", "CELL_VERSION", "CELLS_FOLDER"]

CELL_VERSION = 1  # part of every cell's key: bump it when a cell's computation changes its numbers
MEASURES = "pruning-cell"  # the artifact of a pruning cell's run: its 1 x 1 PruningSweep
MASKS = "masks"  # the artifact of a cell's run: the masks its network was pruned to
REWIND = "lottery-rewind"  # the artifact of lottery round 0's run: the weights every round rewinds to
DATA = "dataset"  # a source run's data artifact (uploaded or imported data), copied into each cell's run

# The fields of a PruningSweep that are one value (or one row) per (method, sparsity) cell.
PER_CELL = ("accuracy", "loss", "corrupted_accuracy", "layer_sparsity", "cka", "flipped", "scoring_seconds",
            "finetune_seconds", "train_accuracy", "train_loss", "sharpness")


# ---------------------------------------------------------------- shared by both kinds


def _key(described: dict) -> str:
    return hashlib.sha256(json.dumps({"version": CELL_VERSION} | described, sort_keys=True).encode()).hexdigest()[:16]


def cells_store(store: RunStore) -> RunStore:
    """The run store of the cells' runs, inside `store` (made when first needed)."""
    return RunStore(store.root / CELLS_FOLDER)


def find_cell_run(store: RunStore, settings: dict, key: str) -> Optional[CellResult]:
    """The cell's `CellResult` when its run is in the cells' store, else None (the kinds' `find`)."""
    return existing_result(cells_store(store), key)


def _stopper(ctx):
    return lambda: ctx is not None and ctx.cancelled


def _publish_run(store: RunStore, staging, key: str, source: str, name: str, state: dict, step: int,
                 summary: dict, artifacts: dict, cell: dict) -> None:
    """Publish a cell's network as the run `cell-<key>`: the source run's settings (so it
    rebuilds and opens like the source, its data too), one checkpoint, the artifacts, and the
    summary; made in `staging` and renamed into the cells' store whole."""
    staged = RunStore(staging)
    settings = {k: v for k, v in store.settings(source).items() if k not in RESERVED_KEYS}
    run_id = staged.create(name, settings | {"sweep_cell": key, "cell_of": cell})
    staged.save_checkpoint(run_id, step, state)
    data = store.load_artifact(source, DATA)
    if data is not None:
        staged.save_artifact(run_id, DATA, *data)
    for artifact, (arrays, meta) in artifacts.items():
        staged.save_artifact(run_id, artifact, arrays, meta)
    staged.finish(run_id, "done", summary, "Computed as a cell of a sweep.")
    publish(staging / run_id, cells_store(store).root / cell_run_id(key))


def _losses(accuracy: float, loss: float) -> dict:
    """The summary entries the sweep's record reads: the test loss (and accuracy, for classes)."""
    return {"test_loss": loss} | ({} if math.isnan(accuracy) else {"test_accuracy": accuracy})


def _mask_arrays(masks: dict) -> tuple[dict, dict]:
    return {name: mask.cpu().numpy() for name, mask in masks.items()}, {}


def _masks_of(store: RunStore, run_id: str, device) -> dict[str, torch.Tensor]:
    arrays, _ = store.load_artifact(run_id, MASKS)
    return {name: torch.from_numpy(a).to(device) for name, a in arrays.items()}


def _device(device) -> torch.device:
    return torch.device(device) if device is not None else torch.device("cpu")


# ---------------------------------------------------------------- pruning sweep cells


@dataclasses.dataclass(frozen=True)
class PruningCell:
    """One (method, sparsity) of run `run`'s pruning sweep, as `recipes.pruning_sweep` takes it."""

    run: str
    method: str
    sparsity: float
    finetune_steps: int = 0
    scope: str = "global"
    at_init: bool = False


def pruning_cells(run_id: str, methods: Sequence[str], sparsities: Sequence[float], *, finetune_steps: int = 0,
                  scope: str = "global", at_init: bool = False) -> list[dict[str, str]]:
    """The cells of a run's pruning sweep, method by method, as flat text settings."""
    return [{"pruning.run": run_id, "pruning.method": method, "pruning.sparsity": repr(float(sparsity)),
             "pruning.finetune_steps": str(int(finetune_steps)), "pruning.scope": scope,
             "pruning.at_init": str(bool(at_init)).lower()}
            for method in methods for sparsity in sparsities]


def read_pruning_cell(settings: dict[str, str]) -> PruningCell:
    """The cell its settings describe; ValueError with a sentence for a bad one."""
    try:
        cell = PruningCell(settings["pruning.run"], settings["pruning.method"], float(settings["pruning.sparsity"]),
                           int(settings["pruning.finetune_steps"]), settings["pruning.scope"],
                           settings["pruning.at_init"] == "true")
    except (KeyError, ValueError):
        raise ValueError("A pruning cell names its pruning.run, method, sparsity (a number), finetune_steps "
                         "(a whole number), scope and at_init.") from None
    if cell.method not in pruning.method_names():
        raise ValueError(f"Unknown pruning method {cell.method!r}; choose one of {', '.join(pruning.method_names())}.")
    if not 0 <= cell.sparsity < 1:
        raise ValueError(f"A sparsity is a fraction from 0 up to (not including) 1, not {cell.sparsity:g}.")
    if cell.finetune_steps < 0 or (cell.at_init and cell.finetune_steps == 0):
        raise ValueError("Networks pruned at initialisation must be trained: choose some fine-tuning steps."
                         if cell.at_init else "Fine-tuning steps are a whole number, 0 or more.")
    if cell.scope not in ("global", "layer"):
        raise ValueError(f"Scope must be 'global' or 'layer', not {cell.scope!r}.")
    return cell


def pruning_key(settings: dict[str, str]) -> str:
    """A pruning cell's id: a hash of what makes its numbers."""
    return _key({"cell": "pruning"} | dataclasses.asdict(read_pruning_cell(settings)))


def pruning_errors(cells: list[dict[str, str]]) -> list[str]:
    """A sentence for each pruning cell that cannot be read (each sentence once)."""
    return read_errors(cells, read_pruning_cell)


def _setup(store: RunStore, cell: PruningCell, device) -> pruning.SweepSetup:
    """The sweep's setup of the cell's run, made as `recipes.pruning_sweep` makes it."""
    model, reference, data = recipes._to_prune(store, cell.run, cell.at_init, cell.finetune_steps)
    settings = pruning.SweepSettings(finetune_steps=cell.finetune_steps, scope=cell.scope,
                                     train_config=recipes._finetune_config(store, cell.run, cell.finetune_steps))
    return pruning.sweep_setup(model, data, settings, device=device, reference=reference)


def compute_pruned(settings: dict[str, str], root: str, device: Optional[str] = None, ctx=None) -> dict:
    """Prune, fine-tune and measure one cell into the store at `root`, on any worker (the kind's
    `compute`); does nothing when its run is there. Returns its `CellResult` as a dict."""
    store, key = RunStore(root), pruning_key(settings)
    return once(store, key, lambda: find_cell_run(store, settings, key),
                lambda staging: _prune_staged(settings, key, store, staging, device, ctx))


def _cancelled(key: str, seconds: float = 0.0) -> CellResult:
    return CellResult(key, status="cancelled", message="The sweep was cancelled.", trained=seconds > 0, seconds=seconds)


def _prune_staged(settings, key: str, store: RunStore, staging, device, ctx) -> CellResult:
    cell = read_pruning_cell(settings)
    if _stopper(ctx)():  # cancelled before it began (a cell without fine-tuning never looks again)
        return _cancelled(key)
    started = time.perf_counter()
    try:
        setup = _setup(store, cell, _device(device))
        out = setup.empty([cell.method], [cell.sparsity])
        scoring = time.perf_counter()
        kept = setup.masker(cell.method)(cell.sparsity)
        out.scoring_seconds[0, 0] = time.perf_counter() - scoring
        pruned = pruning.prune_cell(setup, out, (0, 0), kept, should_stop=_stopper(ctx))
    except Exception as exc:  # a cell that cannot be computed fails alone; the sweep goes on
        return CellResult(key, status="failed", message=str(exc), trained=True)
    seconds = time.perf_counter() - started
    if pruned is None:
        return _cancelled(key, seconds)
    name = f"{store.settings(cell.run)['name']} pruned by {cell.method} to {cell.sparsity:.1%}"[:100]
    summary = _losses(float(out.accuracy[0, 0]), float(out.loss[0, 0])) | {"steps": cell.finetune_steps}
    _publish_run(store, staging, key, cell.run, name, pruning.plain_copy(pruned).state_dict(), cell.finetune_steps,
                 summary, {MEASURES: to_arrays(out), MASKS: _mask_arrays(kept)}, dataclasses.asdict(cell))
    result = find_cell_run(store, settings, key)
    result.trained, result.seconds = True, seconds
    return result


def pruning_kind() -> CellKind:
    """The sweep mechanism's kind of cell for a (method, sparsity) of a run's pruning sweep."""
    return CellKind(compute=compute_pruned, key=pruning_key, find=find_cell_run, errors=pruning_errors)


def pruning_sweep_job(ctx, store: RunStore, run_id: str, methods: Sequence[str], sparsities: Sequence[float], *,
                      finetune_steps: int = 0, scope: str = "global", at_init: bool = False,
                      backend: str = "local", address: Optional[str] = None, workers: Optional[int] = None,
                      device: Optional[str] = None) -> PruningSweep:
    """A run's pruning sweep on the sweep mechanism: one cell per (method, sparsity), on this
    machine or on Ray; equal to `recipes.pruning_sweep` computed in one process.

    Args:
        ctx: a job context (per-cell progress, cancelling) or None.
        store: the run store (on a Ray cluster, a folder every worker sees).
        run_id: the run whose final (or, with `at_init`, initial) weights are pruned.
        methods, sparsities: the grid (names from `pruning.method_names()`, fractions pruned).
        finetune_steps, scope, at_init: as for `recipes.pruning_sweep`.
        backend, address, workers: as for `engine.sweep.run_sweep`.
        device: where the cells and the driver's measures run (the CPU by default here; on
            Ray, CUDA where the cluster has GPUs).

    Raises ValueError with a sentence for bad settings, or when a cell failed (the finished
    ones are kept; running again computes only the others).
    """
    cells = pruning_cells(run_id, methods, sparsities, finetune_steps=finetune_steps, scope=scope, at_init=at_init)
    name = f"Pruning sweep of {store.settings(run_id)['name']}"[:100]
    sweep = Sweep(cells, name=name, kind=pruning_kind())
    _run(ctx, store, sweep, backend, address, workers, device, "cells")
    return assemble_pruning_sweep(store, run_id, methods, sparsities, sweep.keys, finetune_steps=finetune_steps,
                                  scope=scope, at_init=at_init, device=device)


def _run(ctx, store, sweep: Sweep, backend, address, workers, device, what: str) -> None:
    """Run the sweep; stop here if it was cancelled, and say why if a cell did not finish."""
    record = run_sweep(sweep, store, backend=backend, address=address, workers=workers, device=device, ctx=ctx)
    if ctx is not None:
        ctx.check()  # a cancelled sweep ends here, keeping its finished cells
    unfinished = [r.message for r in record.results if r.status not in ("done", "diverged")]
    if unfinished:
        raise ValueError(f"{len(unfinished)} of {len(record.results)} {what} did not finish: {unfinished[0]}")


def assemble_pruning_sweep(store: RunStore, run_id: str, methods: Sequence[str], sparsities: Sequence[float],
                           keys: Sequence[str], *, finetune_steps: int = 0, scope: str = "global",
                           at_init: bool = False, device: Optional[str] = None) -> PruningSweep:
    """The `PruningSweep` from its finished cells' runs (`keys`, method by method): each
    cell's measures, then the mask overlaps and the dense model's measures (`finish_sweep`)."""
    cell = PruningCell(run_id, methods[0] if methods else "magnitude", 0.0, finetune_steps, scope, at_init)
    setup, cells = _setup(store, cell, _device(device)), cells_store(store)
    out = setup.empty(methods, sparsities)
    all_masks = [[None] * len(methods) for _ in sparsities]
    for n, key in enumerate(keys):
        i, j = divmod(n, len(sparsities))
        one = from_arrays(PruningSweep, *cells.load_artifact(cell_run_id(key), MEASURES))
        for field in PER_CELL:
            getattr(out, field)[i, j] = getattr(one, field)[0, 0]
        for name, values in one.corruptions.items():
            out.corruptions[name][i, j] = values[0, 0]
        all_masks[j][i] = _masks_of(cells, cell_run_id(key), setup.device)
    result = pruning.finish_sweep(setup, out, all_masks)
    result.settings["at_init"] = at_init
    return result


# ---------------------------------------------------------------- lottery rounds


@dataclasses.dataclass(frozen=True)
class LotteryCell:
    """Round `round` of run `run`'s lottery tickets: its ticket, or its control ("control")
    trained from an initialisation shuffled with seed `seed + round`."""

    run: str
    round: int
    network: str = "ticket"
    rate: float = 0.2
    steps: int = 100
    rewind_step: int = 0
    scope: str = "layer"
    seed: int = 0

    def described(self) -> dict:
        """What makes the cell's numbers: round 0 trains the dense model, whatever the rate,
        scope or control seed; a ticket does not depend on the control's seed."""
        if self.round == 0:
            return {"run": self.run, "round": 0, "steps": self.steps, "rewind_step": self.rewind_step}
        mine = dataclasses.asdict(self)
        return mine if self.network == "control" else {k: v for k, v in mine.items() if k != "seed"}


def lottery_cells(run_id: str, rounds: int, rate: float = 0.2, steps: int = 100, rewind_step: int = 0, *,
                  scope: str = "layer", control: bool = True, seed: int = 0) -> list[dict[str, str]]:
    """The cells of a run's lottery tickets, in order: round 0, then each round's ticket and
    (with `control`) its control."""
    base = {"lottery.run": run_id, "lottery.rate": repr(float(rate)), "lottery.steps": str(int(steps)),
            "lottery.rewind_step": str(int(rewind_step)), "lottery.scope": scope, "lottery.seed": str(int(seed))}
    cells = [base | {"lottery.round": "0", "lottery.network": "ticket"}]
    for r in range(1, rounds + 1):
        cells.append(base | {"lottery.round": str(r), "lottery.network": "ticket"})
        if control:
            cells.append(base | {"lottery.round": str(r), "lottery.network": "control"})
    return cells


def read_lottery_cell(settings: dict[str, str]) -> LotteryCell:
    """The cell its settings describe; ValueError with a sentence for a bad one."""
    try:
        cell = LotteryCell(settings["lottery.run"], int(settings["lottery.round"]), settings["lottery.network"],
                           float(settings["lottery.rate"]), int(settings["lottery.steps"]),
                           int(settings["lottery.rewind_step"]), settings["lottery.scope"],
                           int(settings["lottery.seed"]))
    except (KeyError, ValueError):
        raise ValueError("A lottery cell names its lottery.run, round, network, rate, steps, rewind_step, scope "
                         "and seed.") from None
    if cell.network not in ("ticket", "control") or cell.round < 0 or (cell.round == 0 and cell.network != "ticket"):
        raise ValueError("A lottery cell is a round's ticket (round 0 and up) or its control (round 1 and up).")
    if not 0 < cell.rate < 1:
        raise ValueError(f"The pruning rate per round is a fraction between 0 and 1, not {cell.rate:g}.")
    if not 0 <= cell.rewind_step < cell.steps:
        raise ValueError("The rewind step must be at least 0 and below the training steps.")
    if cell.scope not in ("global", "layer"):
        raise ValueError(f"Scope must be 'global' or 'layer', not {cell.scope!r}.")
    return cell


def lottery_key(settings: dict[str, str]) -> str:
    """A lottery cell's id: a hash of what makes its numbers (`LotteryCell.described`)."""
    return _key({"cell": "lottery"} | read_lottery_cell(settings).described())


def _round_settings(settings: dict[str, str], r: int) -> dict[str, str]:
    """The settings of round r's ticket of the same lottery."""
    return settings | {"lottery.round": str(r), "lottery.network": "ticket"}


def lottery_needs(settings: dict[str, str]) -> list[str]:
    """The cells a round needs finished: its ticket round 0 (the weights to rewind to) and the
    ticket of the round before (what it prunes); its control only the latter."""
    cell = read_lottery_cell(settings)
    if cell.round == 0:
        return []
    before = lottery_key(_round_settings(settings, cell.round - 1))
    first = lottery_key(_round_settings(settings, 0))
    return [before] if cell.network == "control" or first == before else [first, before]


def lottery_errors(cells: list[dict[str, str]]) -> list[str]:
    """A sentence for each lottery cell that cannot be read (each sentence once)."""
    return read_errors(cells, read_lottery_cell)


def _config(store: RunStore, cell: LotteryCell):
    """One round's training, as `recipes.lottery_tickets` sets it: the run's own, `steps` long."""
    config = Experiment.from_dict(store.settings(cell.run)).train
    return dataclasses.replace(config, steps=cell.steps, eval_every=cell.steps, checkpoint_every=cell.steps)


def _ticket_after(store: RunStore, cell: LotteryCell, r: int, device) -> torch.nn.Module:
    """Round r's trained ticket, rebuilt from its run: the weights and the masks in force."""
    cells, run_id = cells_store(store), cell_run_id(lottery_key(_round_settings(_lottery_settings(cell), r)))
    ticket = load_model(store, cell.run, step=0, device=device)
    ticket.load_state_dict(cells.load_checkpoint(run_id, device=device))
    return pruning.apply(ticket, _masks_of(cells, run_id, device)) if r > 0 else ticket


def _lottery_settings(cell: LotteryCell) -> dict[str, str]:
    return lottery_cells(cell.run, 0, cell.rate, cell.steps, cell.rewind_step, scope=cell.scope, seed=cell.seed)[0]


def compute_round(settings: dict[str, str], root: str, device: Optional[str] = None, ctx=None) -> dict:
    """Train one lottery cell (a round's ticket or control) into the store at `root`, on any
    worker (the kind's `compute`); does nothing when its run is there."""
    store, key = RunStore(root), lottery_key(settings)
    return once(store, key, lambda: find_cell_run(store, settings, key),
                lambda staging: _round_staged(settings, key, store, staging, device, ctx))


def _round_staged(settings, key: str, store: RunStore, staging, device, ctx) -> CellResult:
    cell, device = read_lottery_cell(settings), _device(device)
    if _stopper(ctx)():
        return _cancelled(key)
    started = time.perf_counter()
    try:
        data, config = load_dataset(store, cell.run).to(device), _config(store, cell)
        network, artifacts = _train_round(store, cell, data, config, device, ctx)
    except Exception as exc:  # a round that cannot be trained fails alone; its dependants fail with it
        return CellResult(key, status="failed", message=str(exc), trained=True)
    seconds = time.perf_counter() - started
    if network is None:
        return _cancelled(key, seconds)
    accuracy, loss = pruning.evaluate(network, data.x_test, data.y_test, loss_for_task(config.loss, data.task))
    density = 1 - pruning.sparsity_of(network)["total"] if cell.round > 0 else 1.0
    summary = _losses(accuracy, loss) | {"steps": cell.steps,
                                         "lottery": {"accuracy": accuracy, "loss": loss, "density": density}}
    name = f"{store.settings(cell.run)['name']} lottery round {cell.round} {cell.network}"[:100]
    _publish_run(store, staging, key, cell.run, name, pruning.plain_copy(network).state_dict(), cell.steps, summary,
                 artifacts, dataclasses.asdict(cell))
    result = find_cell_run(store, settings, key)
    result.trained, result.seconds = True, seconds
    return result


def _train_round(store: RunStore, cell: LotteryCell, data, config, device, ctx):
    """(the cell's trained network or None when cancelled, the artifacts its run keeps)."""
    stop = _stopper(ctx)
    if cell.round == 0:
        ticket = load_model(store, cell.run, step=0, device=device)
        rewind = pruning.train_dense(ticket, data, config, cell.rewind_step, should_stop=stop)
        arrays = None if rewind is None else {n: w.cpu().numpy() for n, w in rewind.items()}
        return (None if rewind is None else ticket), {REWIND: (arrays, {})}
    before = _ticket_after(store, cell, cell.round - 1, device)
    kept = pruning.ticket_masks(before, cell.rate, cell.round, cell.scope)
    if cell.network == "control":
        model = load_model(store, cell.run, step=0, device=device)
        network = pruning.train_control(model, kept, data, config, cell.rewind_step, cell.seed + cell.round, stop)
    else:
        first = cell_run_id(lottery_key(_round_settings(_lottery_settings(cell), 0)))
        saved, _ = cells_store(store).load_artifact(first, REWIND)
        rewind = {n: torch.from_numpy(a).to(device) for n, a in saved.items()}
        network = pruning.train_ticket(before, kept, rewind, data, config, cell.rewind_step, stop)
    return network, {MASKS: _mask_arrays(kept)}


def lottery_kind() -> CellKind:
    """The sweep mechanism's kind of cell for a lottery round's ticket or control: a chain."""
    return CellKind(compute=compute_round, key=lottery_key, find=find_cell_run, errors=lottery_errors,
                    needs=lottery_needs)


def lottery_job(ctx, store: RunStore, run_id: str, rounds: int = 4, rate: float = 0.2, steps: Optional[int] = None,
                rewind_step: int = 0, *, scope: str = "layer", control: bool = True, seed: int = 0,
                backend: str = "local", address: Optional[str] = None, workers: Optional[int] = None,
                device: Optional[str] = None) -> LotteryTickets:
    """A run's lottery tickets on the sweep mechanism: round by round (each round's ticket and
    its control side by side), on this machine or on Ray; equal to `recipes.lottery_tickets`
    (`pruning.iterative_magnitude`) computed in one process.

    Args:
        ctx: a job context (per-cell progress, cancelling) or None.
        store: the run store (on a Ray cluster, a folder every worker sees).
        run_id: the run whose initial weights the tickets start from.
        rounds, rate, rewind_step, scope, control, seed: as for `pruning.iterative_magnitude`.
        steps: one round's training steps (the run's own by default).
        backend, address, workers, device: as for `pruning_sweep_job`.
    """
    if not isinstance(rounds, (int, np.integer)) or rounds < 1:
        raise ValueError(f"Lottery tickets take at least one round, not {rounds!r}.")
    steps = steps or Experiment.from_dict(store.settings(run_id)).train.steps
    cells = lottery_cells(run_id, rounds, rate, steps, rewind_step, scope=scope, control=control, seed=seed)
    sweep = Sweep(cells, name=f"Lottery tickets of {store.settings(run_id)['name']}"[:100], kind=lottery_kind())
    _run(ctx, store, sweep, backend, address, workers, device, "networks")
    return assemble_lottery(store, [read_lottery_cell(c) for c in cells], sweep.keys, control)


def assemble_lottery(store: RunStore, cells: Sequence[LotteryCell], keys: Sequence[str],
                     control: bool = True) -> LotteryTickets:
    """The `LotteryTickets` curves from the finished rounds' runs (the cells in `lottery_cells`'
    order)."""
    runs = cells_store(store)
    measured = {(c.round, c.network): runs.settings(cell_run_id(k))["summary"]["lottery"] for c, k in zip(cells, keys)}
    rounds = max(c.round for c in cells)
    dense = measured[(0, "ticket")]
    curves = {"density": [1.0], "ticket_accuracy": [dense["accuracy"]], "ticket_loss": [dense["loss"]],
              "control_accuracy": [dense["accuracy"]], "control_loss": [dense["loss"]]}
    for r in range(1, rounds + 1):
        ticket = measured[(r, "ticket")]
        other = measured.get((r, "control"), {"accuracy": math.nan, "loss": math.nan})
        curves["density"].append(ticket["density"])
        for who, values in (("ticket", ticket), ("control", other)):
            curves[f"{who}_accuracy"].append(values["accuracy"])
            curves[f"{who}_loss"].append(values["loss"])
    first = cells[0]
    config = _config(store, first)
    return LotteryTickets(**{k: np.array(v) for k, v in curves.items()}, settings={
        "rounds": rounds, "rate": first.rate, "rewind_step": first.rewind_step, "scope": first.scope,
        "control": "random_reinit" if control else None, "train": config.to_dict()})
