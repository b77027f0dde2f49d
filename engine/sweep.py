"""Sweeps: many experiments as one value, trained on this machine or on a Ray cluster.

A sweep is a list of cells; each cell is an experiment's flat settings (the keys of
`engine.experiment.Experiment`: `model.width`, `train.lr`, ...). Each cell is trained as an
ordinary run in the run store, so every lens can open it. The sweep itself is kept too, as a
record in the store's `.sweeps/` folder: its cells, and for each the run, status and final
losses. `grid` makes the cells of a product (`model.width=16,32 train.lr=0.05,0.1` spans four).

One mechanism, two backends:

- "local" runs the cells in a pool of threads of this process;
- "ray" runs each cell as a Ray task (asking for a GPU when the cell trains on CUDA, a CPU
  otherwise), in an embedded Ray started here, or on a cluster (`address` or RAY_ADDRESS).

Where results go: the workers write each cell's run straight into the store, which must
therefore be a folder every worker sees (one machine, or a shared filesystem on a cluster).

Idempotent and resumable. A cell's run has an id made from its settings (`cell-<hash>`), and
appears in the store whole or not at all: it is trained in a staging folder
(`<store>/.staging/`) and renamed into place when it ends done or diverged. So:

- running the same sweep again skips every cell whose run exists and trains only the rest
  (missing, failed or cancelled cells);
- a worker killed in the middle of a cell leaves only a staging folder, which the cell's next
  attempt (Ray retries it) removes; attempts at one cell take turns (a file lock the kernel
  drops when its holder dies), and a later one finds the run and trains nothing, so no cell
  ever has two runs;
- a cell that diverges is a result like any other: recorded as diverged with its sentence.
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import itertools
import json
import math
import os
import shutil
import socket
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

__all__ = ["cell_key", "cell_run_id", "Sweep", "experiment_errors", "grid", "CellResult", "QuietContext",
           "train_cell", "once", "existing_result", "publish", "CellKind", "LocalBackend", "task_resources",
           "read_errors", "RayBackend", "authenticate_with_token_if_any", "configured_backend", "where", "make_backend",
           "cell_device", "SweepRecord", "record_key",
           "save_record", "open_sweep", "list_sweeps", "run_sweep", "sweep_job", "summary_line", "command",
           "STAGING_FOLDER", "FINISHED"]

try:
    import fcntl  # POSIX; elsewhere a cell's attempts are not locked against each other
except ImportError:
    fcntl = None

from engine import data as datasets
from engine.experiment import Experiment, build_experiment, train_job
from engine.store import RunStore, _fsync_folder

BACKENDS = ("local", "ray")
MAX_CELLS = 10_000
STAGING_FOLDER = ".staging"  # inside the store; a dot-name is never listed as a run
FINISHED = ("done", "diverged")  # a cell whose run ended so is never trained again
RAY_RETRIES = 3  # attempts after a worker dies mid-cell
RECORD_EVERY_S = 1.0  # the sweep's record is rewritten at most this often while cells end
CELL_VERSION = 1  # part of each cell's id: bump it when training changes its numbers
LIST_SEPARATOR = ";"  # between the cells of a setting whose value is itself a list


# ---------------------------------------------------------------- cells and sweeps


def cell_key(settings: dict[str, str]) -> str:
    """The id of a cell: a hash of every setting of its experiment (defaults included), so
    two spellings of the same experiment (`train.lr=0.1`, `train.lr=.10`) are one cell."""
    experiment, _ = Experiment.from_flat(settings)
    canonical = {"version": CELL_VERSION, "settings": experiment.to_flat()}
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()[:16]


def cell_run_id(key: str) -> str:
    """The run id a cell's run gets in the store."""
    return f"cell-{key}"


@dataclass
class Sweep:
    """A list of cells (flat settings), and a name to show.

    Attributes:
        cells: each cell's settings as `key -> text`, as the command line writes them.
        name: a display name ("" for one made from the varied settings).
    """

    cells: list[dict[str, str]]
    name: str = ""
    kind: Optional["CellKind"] = None  # what a cell is; None: an experiment trained as one run

    @property
    def cell_kind(self) -> "CellKind":
        return self.kind or RUNS

    @property
    def keys(self) -> list[str]:
        return [self.cell_kind.key(c) for c in self.cells]

    @property
    def id(self) -> str:
        """A hash of the sorted cells: the same cells in any order are the same sweep."""
        joined = ",".join(sorted(self.keys))
        return hashlib.sha256(joined.encode()).hexdigest()[:16]

    @property
    def varied(self) -> list[str]:
        """The settings that differ between cells, in the order they first appear."""
        names = list(dict.fromkeys(k for c in self.cells for k in c))
        return [k for k in names if len({c.get(k) for c in self.cells}) > 1]

    def title(self) -> str:
        return self.name or (" x ".join(self.varied) + " sweep" if self.varied else "one-cell sweep")

    def errors(self) -> list[str]:
        """A sentence for each invalid setting of any cell (each bad value named once)."""
        if not self.cells:
            return ["A sweep needs at least one cell."]
        if len(self.cells) > MAX_CELLS:
            return [f"This sweep has {len(self.cells):,} cells; the lab's limit is {MAX_CELLS:,}."]
        return self.cell_kind.errors(self.cells)


def experiment_errors(cells: list[dict[str, str]]) -> list[str]:
    """A sentence for each invalid setting of any experiment cell (each bad value named once)."""
    sentences, valid = {}, []
    for cell in cells:
        experiment, errors = Experiment.from_flat(cell)
        errors |= experiment.errors()
        for key, sentence in errors.items():
            shown = f"{key}={cell[key]}" if key in cell else key
            sentences.setdefault(f"{shown}: {sentence}", None)
        if not errors:
            valid.append((cell, experiment))
    for sentence in _build_errors(valid):
        sentences.setdefault(sentence, None)
    return list(sentences)


def _build_errors(cells: list[tuple[dict, Experiment]]) -> list[str]:
    """Sentences for the cells whose data cannot be made or whose model cannot be built on
    it (a CNN on points, say): each distinct data and model is tried once, on the CPU."""
    sentences, tried, loaded = [], set(), {}
    for cell, experiment in cells:
        data_id = json.dumps([experiment.data, experiment.data_options], sort_keys=True, default=str)
        model_id = json.dumps(experiment.model.to_dict(), sort_keys=True, default=str)
        if (data_id, model_id) in tried:
            continue
        tried.add((data_id, model_id))
        try:
            if data_id not in loaded:
                loaded[data_id] = datasets.load(experiment.data, **experiment.data_options)
            build_experiment(experiment, loaded[data_id])
        except ValueError as exc:
            shown = " ".join(f"{k}={v}" for k, v in cell.items())
            sentences.append(f"The cell {shown} cannot be trained: {exc}")
    return sentences


def grid(settings: dict[str, str]) -> Sweep:
    """The sweep spanned by flat settings whose values may list several choices.

    `{"model.width": "16,32", "train.lr": "0.05,0.1"}` gives the four cells of the product.
    A setting whose value is itself a list (a dataset's `frequencies`, say) is one value with
    commas; its choices are separated by ";" instead: `data.frequencies=1,4;2,8` is two cells.
    Raises ValueError when the product is larger than MAX_CELLS.
    """
    data_names = settings.get("data", "moons").split(",")
    axes = []
    for key, text in settings.items():
        separator = LIST_SEPARATOR if _is_list_setting(key, data_names) else ","
        choices = [part.strip() for part in text.split(separator)] if separator in text else [text]
        axes.append([(key, choice) for choice in choices])
    size = math.prod(len(axis) for axis in axes)
    if size > MAX_CELLS:  # refuse before making them all
        raise ValueError(f"These lists span {size:,} cells; the lab's limit is {MAX_CELLS:,}.")
    return Sweep([dict(combination) for combination in itertools.product(*axes)])


def _is_list_setting(key: str, data_names: list[str]) -> bool:
    """Whether a setting's single value is a comma-separated list (only some data options)."""
    section, _, item = key.partition(".")
    if section != "data":
        return False
    for name in data_names:
        try:
            if isinstance(datasets.options(name.strip()).get(item), (list, tuple)):
                return True
        except ValueError:
            continue  # an unknown dataset: its own cell's validation says so
    return False


# ---------------------------------------------------------------- one cell, on any worker


@dataclass
class CellResult:
    """How one cell ended: its run, status ("done", "diverged", "failed", "cancelled" or
    "pending"), the sentence that says why, and its final losses (NaN when unknown)."""

    key: str
    run_id: str = ""
    status: str = "pending"
    message: str = ""
    train_loss: float = math.nan
    test_loss: float = math.nan
    test_accuracy: float = math.nan
    trained: bool = False  # trained by this call, rather than found in the store
    seconds: float = 0.0  # how long the training took on its worker (0 when found)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class QuietContext:
    """A job context for a cell on a worker: progress goes nowhere, a stop request comes from
    an event the driver may set (threads of this process only)."""

    def __init__(self, stop: Optional[threading.Event] = None):
        self.stop = stop

    @property
    def cancelled(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    def report(self, progress=None, message=None, **partial) -> None:
        pass

    def check(self) -> None:
        pass


def train_cell(settings: dict[str, str], root: str, device: Optional[str] = None, ctx=None) -> dict:
    """Train one cell into the store at `root` (unless its run is there already).

    The run is trained in a staging folder and renamed into the store only when it ends done
    or diverged, so the store never lists half a run. One attempt at a cell runs at a time
    (a lock beside the staging folders); a later one finds the run, or clears what a dead
    attempt left. Runs on the driver or on a Ray worker; returns a `CellResult` as a dict
    (plain data travels well).
    """
    store, key = RunStore(root), cell_key(settings)
    return once(store, key, lambda: existing_result(store, key),
                lambda staging: _train_staged(settings, key, store, staging, device, ctx))


def once(store: RunStore, key: str, find: Callable[[], Optional[CellResult]],
         compute: Callable[[Path], CellResult]) -> dict:
    """Compute cell `key` unless `find` finds it in the store: the one way any kind of cell
    is made. Under the cell's lock, `compute` gets an empty staging folder (removed after) to
    build its runs in, and publishes them with `publish`; returns its `CellResult` as a dict."""
    with _cell_lock(store, key):
        found = find()
        if found is not None:
            return found.to_dict()
        staging = _fresh_staging(store, key)
        try:
            return compute(staging).to_dict()
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _train_staged(settings, key: str, store: RunStore, staging: Path, device, ctx) -> CellResult:
    """Train the cell into `staging`; publish its run if it ended done or diverged."""
    experiment, _ = Experiment.from_flat(settings)
    started = time.perf_counter()
    try:
        outcome = train_job(ctx or QuietContext(), experiment, store=RunStore(staging), name=_cell_name(settings),
                            device=device)
    except Exception as exc:  # a cell that cannot train fails alone; the sweep goes on
        return CellResult(key, status="failed", message=str(exc), trained=True)
    seconds = time.perf_counter() - started
    if outcome["status"] not in FINISHED:
        return CellResult(key, status="cancelled", message=outcome["message"], trained=True, seconds=seconds)
    publish(staging / outcome["run_id"], store.root / cell_run_id(key))
    result = existing_result(store, key)
    result.trained, result.seconds = True, seconds
    return result


@contextlib.contextmanager
def _cell_lock(store: RunStore, key: str):
    """Hold `.staging/<key>.lock` exclusively: two drivers, or a retry and a straggler, never
    train one cell at once. The kernel releases the lock when its process dies (a killed
    worker), so a retry never waits on the dead."""
    folder = store.root / STAGING_FOLDER
    folder.mkdir(exist_ok=True)
    with open(folder / f"{key}.lock", "a") as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def existing_result(store: RunStore, key: str) -> Optional[CellResult]:
    """The result of the cell's run in the store, or None when it has none."""
    run_id = cell_run_id(key)
    if not (store.root / run_id / "settings.json").exists():
        return None
    record, metrics = store.settings(run_id), store.metrics(run_id)
    summary = record.get("summary") or {}
    return CellResult(key, run_id, record["status"], record.get("message", ""),
                      train_loss=_last(metrics.get("eval_train_loss")),
                      test_loss=float(summary.get("test_loss", math.nan)),
                      test_accuracy=float(summary.get("test_accuracy", math.nan)))


def _last(values) -> float:
    return float(values[-1]) if values else math.nan


def _cell_name(settings: dict[str, str]) -> str:
    text = " ".join(f"{k}={v}" for k, v in settings.items())
    return ("sweep " + text)[:100]


def _fresh_staging(store: RunStore, key: str) -> Path:
    """An empty staging folder for this cell, after removing what an attempt that died left
    (called under the cell's lock, so no live attempt is using it)."""
    folder = store.root / STAGING_FOLDER
    for old in folder.glob(f"{key}-*"):
        shutil.rmtree(old, ignore_errors=True)
    staging = folder / f"{key}-{os.getpid()}-{time.time_ns()}"
    staging.mkdir()
    return staging


def publish(staged_run: Path, target: Path) -> None:
    """Move a finished run into the store in one rename; if an earlier attempt of the same
    cell got there first, keep that one (the rename fails) and drop this copy."""
    if target.exists():
        return
    try:
        os.rename(staged_run, target)
    except OSError:
        if not target.exists():
            raise
    _fsync_folder(target.parent)


@dataclass(frozen=True)
class CellKind:
    """What a sweep's cells are, told to the one sweep mechanism.

    `RUNS` (the default) is an experiment's flat settings trained as one run; a phase
    diagram's width (`engine.lazy.WIDTHS`: an ensemble, published as one run per member) is
    another. Every function is module-level, so a Ray worker imports it rather than unpickling it.

    Attributes:
        compute: (settings, root, device, ctx) -> the `CellResult` as a dict; runs on a worker
            and makes the cell's runs in the store at `root` through `once`.
        key: settings -> the cell's id.
        find: (store, settings, key) -> the cell's `CellResult` when it is finished in the
            store, else None.
        errors: the cells -> a sentence for each thing wrong with them (before any work).
        needs: settings -> the keys of the cells of the same sweep that must be finished
            before this one starts (a chain, such as lottery rounds: each round prunes what
            the round before trained); None when every cell can start at once.
    """

    compute: Callable[..., dict]
    key: Callable[[dict], str]
    find: Callable[[RunStore, dict, str], Optional[CellResult]]
    errors: Callable[[list[dict]], list[str]]
    needs: Optional[Callable[[dict], list[str]]] = None


def read_errors(cells: list[dict[str, str]], read: Callable[[dict], object]) -> list[str]:
    """The sentences `read` raises (as ValueError) for `cells`, each once: a kind's `errors`."""
    sentences = {}
    for cell in cells:
        try:
            read(cell)
        except ValueError as exc:
            sentences.setdefault(str(exc), None)
    return list(sentences)


def _find_run(store: RunStore, settings: dict, key: str) -> Optional[CellResult]:
    return existing_result(store, key)


RUNS = CellKind(compute=train_cell, key=cell_key, find=_find_run, errors=experiment_errors)


# ---------------------------------------------------------------- backends


class LocalBackend:
    """Cells on this machine, in a pool of threads (one by default: cells one after another)."""

    name = "this machine"

    def __init__(self, workers: int = 1):
        self.pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="sweep-cell")
        self.stop = threading.Event()

    def submit(self, cell_fn, settings, root, device):
        return self.pool.submit(cell_fn, settings, root, device, QuietContext(self.stop))

    def wait(self, pending: list, timeout: float) -> list:
        done, _ = wait_futures(pending, timeout=timeout, return_when=FIRST_COMPLETED)
        return list(done)

    def result(self, handle) -> dict:
        return handle.result()

    def cancel(self, pending: list) -> None:
        self.stop.set()  # running cells stop at their next step; queued ones never start
        for future in pending:
            future.cancel()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def task_resources(device: Optional[str]) -> dict:
    """What a cell's Ray task asks for: a GPU (and a CPU to drive it) for CUDA, else a CPU."""
    if device is not None and str(device).startswith("cuda"):
        return {"num_gpus": 1, "num_cpus": 1}
    return {"num_cpus": 1}


class RayBackend:
    """Cells as Ray tasks: an embedded Ray on this machine, or a cluster at `address`.

    A task asks for one GPU when the cell trains on CUDA, one CPU otherwise, and is retried
    (up to RAY_RETRIES times) when its worker dies.
    """

    def __init__(self, address: Optional[str] = None, workers: Optional[int] = None):
        address = address or os.environ.get("RAY_ADDRESS") or None
        if address:
            authenticate_with_token_if_any()
        import ray  # only a Ray sweep needs Ray

        self.ray = ray
        self.started_here = not ray.is_initialized()
        if self.started_here:
            if address:
                _check_reachable(address)
                ray.init(address=address, log_to_driver=False)
            else:
                start_local_ray(workers or os.cpu_count() or 2)
        self.name = f"Ray at {address}" if address else "Ray on this machine"
        self.remote = {}

    def submit(self, cell_fn, settings, root, device):
        if cell_fn not in self.remote:
            self.remote[cell_fn] = self.ray.remote(max_retries=RAY_RETRIES)(cell_fn)
        return self.remote[cell_fn].options(**task_resources(device)).remote(settings, root, device)

    def wait(self, pending: list, timeout: float) -> list:
        done, _ = self.ray.wait(pending, num_returns=1, timeout=timeout)
        return done

    def result(self, handle) -> dict:
        return self.ray.get(handle)

    def cancel(self, pending: list) -> None:
        for ref in pending:
            self.ray.cancel(ref, force=True)

    def close(self) -> None:
        if self.started_here:
            self.ray.shutdown()


# Ray starts its workers at nice 15, to keep them behind its own processes. On the lab's
# machine the cells are the work the user asked for, and the local backend's threads run at
# the lab's own priority; at nice 15 they crawl behind any other busy process (beside two
# busy loops a Ray sweep of four 20-step cells took minutes instead of seconds). So the Ray the
# lab starts runs them at the driver's priority. A cluster someone started keeps its own.
LOCAL_RAY_CONFIG = {"worker_niceness": 0}


def start_local_ray(cpus: int) -> None:
    """Start a Ray of this process's own on this machine, with `cpus` CPUs for cells.

    "local" always starts a new one: with no address Ray would join a cluster that `ray start`
    left running on this machine, which nobody named."""
    import ray

    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False,
             configure_logging=False, _system_config=LOCAL_RAY_CONFIG)


def authenticate_with_token_if_any() -> None:
    """Join a cluster with Ray's token when this machine has one and RAY_AUTH_MODE is unset.

    Since Ray 2.59 `ray start --head` turns token authentication on when a token exists
    (~/.ray/auth_token), but a process that joins by address sends the token only in token
    mode, and is refused otherwise. A server without authentication ignores the token, so
    sending it is always safe. Ray's own switch is used because Ray caches the mode when it is
    imported: setting RAY_AUTH_MODE alone would leave this process and the Ray it may start
    later disagreeing.
    """
    if "RAY_AUTH_MODE" in os.environ:
        return  # the user's choice
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # a Ray without token authentication (before 2.52)
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Refuse, with a sentence, an address where nothing listens (Ray itself would retry for
    minutes). "auto" and "local" are Ray's own names and pass."""
    if address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"A Ray address is HOST:PORT (or ray://HOST:PORT), not '{address}'.")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ValueError(f"Nothing answers at {address} ({exc.strerror or exc}): is the Ray head running "
                         "there (ray start --head)?") from None


RAY_SETTING = "DYNAMICS_LAB_RAY"  # the app's Ray cluster (an address); RAY_ADDRESS is Ray's own


def configured_backend() -> tuple[str, Optional[str]]:
    """Where the app runs its sweeps: ("ray", address) when DYNAMICS_LAB_RAY or RAY_ADDRESS
    names a Ray cluster, else ("local", None): this machine, as the lab runs without Ray."""
    address = os.environ.get(RAY_SETTING) or os.environ.get("RAY_ADDRESS")
    return ("ray", address) if address else ("local", None)


def where(backend: str, address: Optional[str]) -> str:
    """Where a sweep runs, in words: "this machine", "Ray at ADDRESS" or "Ray on this machine"."""
    if backend != "ray":
        return "this machine"
    return f"Ray at {address}" if address else "Ray on this machine"


def make_backend(backend: str = "local", address: Optional[str] = None, workers: Optional[int] = None):
    """The backend named `backend` ("local" or "ray"); ValueError with a sentence otherwise."""
    if backend == "local":
        if address:
            raise ValueError("An address names a Ray cluster; use --backend ray with it.")
        return LocalBackend(workers or 1)
    if backend == "ray":
        try:
            return RayBackend(address, workers)
        except ImportError:
            raise ValueError("The Ray backend needs Ray: pip install ray.") from None
        except ConnectionError as exc:
            raise ValueError(f"Could not join the Ray cluster at {address or os.environ.get('RAY_ADDRESS')}: {exc}. "
                             "If the cluster uses token authentication (Ray's default since 2.59), give this "
                             "machine the cluster's token (~/.ray/auth_token or RAY_AUTH_TOKEN) and set "
                             "RAY_AUTH_MODE=token.") from None
    raise ValueError(f"The backend is one of {', '.join(BACKENDS)}, not '{backend}'.")


def cell_device(device: Optional[str], backend) -> Optional[str]:
    """Where cells train: as asked, or on a Ray cluster CUDA when it has GPUs, or (None) the
    best device each worker finds (`engine.device.pick`)."""
    if device is not None or not isinstance(backend, RayBackend):
        return device
    return "cuda" if backend.ray.cluster_resources().get("GPU", 0) > 0 else "cpu"


# ---------------------------------------------------------------- the sweep, driven


@dataclass
class SweepRecord:
    """A sweep as stored: its cells and how each ended."""

    id: str
    name: str
    cells: list[dict[str, str]]
    results: list[CellResult]
    varied: list[str] = field(default_factory=list)
    backend: str = ""
    updated: float = 0.0

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.results:
            counts[r.status] = counts.get(r.status, 0) + 1
        return counts

    @property
    def complete(self) -> bool:
        return all(r.status in FINISHED for r in self.results)

    def to_meta(self) -> dict:
        return {"kind": "cells", "id": self.id, "name": self.name, "varied": self.varied,
                "backend": self.backend, "updated": self.updated,
                "cells": [{"settings": c, **r.to_dict()} for c, r in zip(self.cells, self.results)]}

    @classmethod
    def from_meta(cls, meta: dict) -> "SweepRecord":
        cells = [dict(c["settings"]) for c in meta["cells"]]
        results = [CellResult(**{k: v for k, v in c.items() if k != "settings"}) for c in meta["cells"]]
        return cls(meta["id"], meta["name"], cells, results, list(meta["varied"]), meta["backend"], meta["updated"])

    def to_csv(self) -> str:
        """One row per cell: the varied settings, run_id, status and the final losses (and
        test_accuracy when any cell is a classifier)."""
        columns = self.varied + ["run_id", "status", "train_loss", "test_loss"]
        accuracy = any(not math.isnan(r.test_accuracy) for r in self.results)
        columns += ["test_accuracy"] if accuracy else []
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        for cell, r in zip(self.cells, self.results):
            values = r.to_dict()
            writer.writerow([cell.get(k, "") for k in self.varied] + [values[c] for c in columns[len(self.varied):]])
        return out.getvalue()


def record_key(sweep_id: str) -> str:
    return f"sweep-{sweep_id}"


def save_record(store: RunStore, record: SweepRecord) -> None:
    record.updated = time.time()
    store.save_sweep(record_key(record.id), {}, record.to_meta())


def open_sweep(store: RunStore, sweep_id: str) -> Optional[SweepRecord]:
    """The stored record of sweep `sweep_id`, or None."""
    saved = store.load_sweep(record_key(sweep_id))
    if saved is None or saved[1].get("kind") != "cells":
        return None
    return SweepRecord.from_meta(saved[1])


def list_sweeps(store: RunStore) -> list[SweepRecord]:
    """Every stored sweep of cells, newest first (phase diagrams cached by `engine.lazy` are
    kept in the same folder and left out)."""
    return [SweepRecord.from_meta(meta) for _, meta in store.list_sweeps() if meta.get("kind") == "cells"]


def run_sweep(sweep: Sweep, store: RunStore, *, backend: str = "local", address: Optional[str] = None,
              workers: Optional[int] = None, device: Optional[str] = None, ctx=None,
              on_cell: Optional[Callable[[int, dict, CellResult], None]] = None,
              cell_fn: Optional[Callable] = None) -> SweepRecord:
    """Train every cell of `sweep` not yet in the store, and keep the sweep's record.

    Args:
        sweep: the cells.
        store: the run store (on a cluster: a folder every worker sees at the same path).
        backend: "local" (threads of this process) or "ray".
        address: a Ray cluster to join (default: RAY_ADDRESS, else an embedded Ray).
        workers: threads (local) or the embedded Ray's CPUs; default 1 and all CPUs.
        device: where cells train (default: CUDA where the workers have it, else the CPU).
        ctx: a job context (see `engine.jobs`): progress per cell, and cancelling.
        on_cell: called as each cell ends or is found done: (index, settings, result).
        cell_fn: what computes a cell (default: the sweep's kind's `compute`, `train_cell` for
            experiments; tests wrap it to play a fault).

    Returns the `SweepRecord`, also saved in the store as cells end (at most every
    RECORD_EVERY_S seconds) and at the end. A cell whose kind says it needs others starts
    when they are finished, and fails (with a sentence) when one of them does not finish.
    Raises ValueError with sentences for invalid cells, before any work.
    """
    errors = sweep.errors()
    if errors:
        raise ValueError(" ".join(errors))
    keys, kind = sweep.keys, sweep.cell_kind
    needs = _needs(sweep, keys)
    cell_fn = cell_fn or kind.compute
    results = [kind.find(store, cell, key) or CellResult(key) for cell, key in zip(sweep.cells, keys)]
    chosen = make_backend(backend, address, workers)
    record = SweepRecord(sweep.id, sweep.title(), sweep.cells, results, sweep.varied, chosen.name)
    finished, saved = 0, -math.inf

    def ended(i: int, result: CellResult) -> None:
        nonlocal finished, saved
        results[i], finished = result, finished + 1
        if time.monotonic() - saved > RECORD_EVERY_S:  # the store's runs, not the record, say what
            save_record(store, record)                 # is done, so a late record loses nothing
            saved = time.monotonic()
        if on_cell is not None:
            on_cell(i, sweep.cells[i], result)
        if ctx is not None:
            ctx.report(progress=finished / len(keys), message=f"{finished} of {len(keys)} cells on {chosen.name}",
                       cells=[r.to_dict() for r in results])

    if ctx is not None:  # every cell's state from the start, so a page can list them all
        ctx.report(progress=0.0, message=f"{len(keys)} cells on {chosen.name}", cells=[r.to_dict() for r in results])
    try:
        waiting = {i for i, r in enumerate(results) if r.status not in FINISHED}
        for i in sorted(set(range(len(keys))) - waiting):
            ended(i, results[i])
        where, pending, lost = cell_device(device, chosen), {}, set()

        def release() -> None:
            """Submit the waiting cells whose needs are finished; fail those whose needs will not
            be (one needed ended unfinished, or nothing runs that could finish it)."""
            for i in sorted(waiting):
                if all(results[j].status in FINISHED for j in needs[i]):
                    waiting.discard(i)
                    pending[chosen.submit(cell_fn, sweep.cells[i], str(store.root), where)] = i
            stuck, changed = not pending, True
            while changed:
                changed = False
                for i in sorted(waiting):
                    if stuck or lost & needs[i]:
                        waiting.discard(i)
                        lost.add(i)
                        ended(i, CellResult(keys[i], status="failed", message=_unmet(needs[i], results)))
                        changed = True

        release()
        while pending:
            if ctx is not None and ctx.cancelled:
                chosen.cancel(list(pending))
                for i in [*pending.values(), *waiting]:
                    results[i] = CellResult(keys[i], status="cancelled", message="The sweep was cancelled.")
                save_record(store, record)
                break
            for handle in chosen.wait(list(pending), timeout=0.5):
                i = pending.pop(handle)
                ended(i, _result_of(chosen, handle, keys[i]))
                if results[i].status not in FINISHED:
                    lost.add(i)
            release()
    finally:
        chosen.close()
    save_record(store, record)
    return record


def _needs(sweep: Sweep, keys: list[str]) -> list[set[int]]:
    """For each cell, the indices of the cells it needs finished first; ValueError with a
    sentence when a cell needs one the sweep does not have."""
    if sweep.cell_kind.needs is None:
        return [set() for _ in keys]
    index = {key: i for i, key in enumerate(keys)}
    needs = []
    for cell in sweep.cells:
        wanted = sweep.cell_kind.needs(cell)
        missing = [key for key in wanted if key not in index]
        if missing:
            raise ValueError(f"A cell needs the cell {missing[0]}, which is not in this sweep.")
        needs.append({index[key] for key in wanted})
    return needs


def _unmet(needs: set[int], results: list[CellResult]) -> str:
    """Why a cell could not start: the first cell it needs that did not finish."""
    for j in sorted(needs):
        if results[j].status == "pending":
            return "A cell it needs could not start (the cells' needs go round in a loop)."
        if results[j].status not in FINISHED:
            why = f": {results[j].message}" if results[j].message else "."
            return f"A cell it needs ended {results[j].status}{why}"
    return "A cell it needs did not finish."


def _result_of(backend, handle, key: str) -> CellResult:
    """A finished task's result; a task that failed past its retries fails its cell alone."""
    try:
        return CellResult(**backend.result(handle))
    except Exception as exc:
        return CellResult(key, status="failed", message=f"The cell's worker failed: {exc}")


def sweep_job(ctx, store: RunStore, sweep: Sweep, backend: str = "local", address: Optional[str] = None,
              device: Optional[str] = None) -> dict:
    """`run_sweep` as a job of `engine.jobs`: per-cell progress, cancelling; returns the record's meta."""
    return run_sweep(sweep, store, backend=backend, address=address, device=device, ctx=ctx).to_meta()


def summary_line(record: SweepRecord) -> str:
    """One sentence: how many cells ended how, and how many were trained now."""
    counts = ", ".join(f"{n} {status}" for status, n in sorted(record.counts().items()))
    trained = sum(r.trained for r in record.results)
    return (f"{len(record.results)} cells ({counts}); {trained} trained now, "
            f"{len(record.results) - trained} found in the store.")


# ---------------------------------------------------------------- the command line


def command(pairs: list[str], *, store_root=None, backend: str = "local", address: Optional[str] = None,
            out: str = ".", name: str = "", device: Optional[str] = None, workers: Optional[int] = None,
            echo: Callable[[str], None] = print) -> int:
    """`python -m engine sweep SETTINGS...`: run the sweep, write DIR/sweep-<id>.csv.

    Progress and the summary go to `echo` (stderr from the command line). Returns the exit
    code: 0 when every cell ended done or diverged, 1 when some failed, 2 for invalid input.
    """
    settings = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            echo(f"Settings are key=value pairs; '{pair}' has no '='.")
            return 2
        settings[key.strip()] = value
    try:
        sweep = grid(settings)
    except ValueError as exc:
        echo(str(exc))
        return 2
    sweep.name = name
    errors = sweep.errors()
    if errors:
        for sentence in errors:
            echo(sentence)
        return 2
    store = RunStore(store_root)
    total = len(sweep.cells)

    def progress(i: int, cell: dict, result: CellResult) -> None:
        varied = " ".join(f"{k}={cell.get(k, '')}" for k in sweep.varied) or "the cell"
        how = "trained" if result.trained else "already in the store"
        losses = f", test loss {result.test_loss:.4g}" if not math.isnan(result.test_loss) else ""
        why = f": {result.message}" if result.status not in ("done",) and result.message else ""
        echo(f"[{i + 1}/{total}] {varied}: {result.status} ({how}{losses}){why}")

    echo(f"Sweep {sweep.id}: {total} cell{'s' if total != 1 else ''} on the {backend} backend.")
    try:
        record = run_sweep(sweep, store, backend=backend, address=address, workers=workers,
                           device=device, on_cell=progress)
    except ValueError as exc:
        echo(str(exc))
        return 2
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    table = folder / f"sweep-{record.id}.csv"
    table.write_text(record.to_csv())
    echo(summary_line(record))
    echo(f"Wrote {table}")
    return 0 if all(r.status in FINISHED for r in record.results) else 1
