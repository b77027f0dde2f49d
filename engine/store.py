"""The run store: finished runs and cached analyses in a folder, so a restart loses nothing.

One folder per run, named by its id (time-sortable, e.g. "20261122-063512-a1b2c3"):

    <root>/<run id>/settings.json                       name, created, status, summary + the run's settings
                    .writer.lock                        locked (flock) by the process training the run
                    metrics.json                        what training measured
                    checkpoints/step-00000100.safetensors
                    artifacts/<key>.npz + <key>.json    cached analysis results
    <root>/.sweeps/<key>.npz + <key>.json                results that span many runs (phase diagrams)

The root is $DYNAMICS_LAB_HOME/runs, or ~/.dynamics-lab/runs when the variable is unset.

Safety rules, kept everywhere below:
- every write goes to a temporary file beside its target, is flushed and fsynced, then
  renamed over the target (`os.replace`), so readers see the old file or the new one;
- weights go through safetensors and arrays through `np.savez`/`np.load(allow_pickle=False)`:
  nothing is ever unpickled;
- run ids and artifact keys must match a strict pattern and stay inside the root; the names
  users type are kept inside settings.json only and never become paths;
- every problem is a ValueError with a sentence a page can show.

A run being trained has status "running" and its writer holds an exclusive `flock` on its
.writer.lock. The kernel drops that lock when the process dies, however it dies (even kill -9),
so a "running" run whose lock is free was abandoned: it is listed as "interrupted" with its
last whole checkpoint, and the temporary files its writer left are removed. A run whose files
cannot be read is "damaged", with the reason; `list(damaged=True)` reports those too.
"""
from __future__ import annotations

import io
import json
import math
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
import zipfile
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch

from engine.status import RUN_ENDINGS, STORED, Status

__all__ = ["default_root", "RunInfo", "RunStore", "ENV_VAR", "SWEEPS_FOLDER", "CELLS_FOLDER", "RESERVED_KEYS"]

try:  # POSIX; elsewhere a writer's death goes unnoticed and its run stays "running"
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

ENV_VAR = "DYNAMICS_LAB_HOME"
STATUSES = STORED  # what a settings.json may say
FINISHED_STATUSES = RUN_ENDINGS  # what `finish` may record
WRITER_LOCK = ".writer.lock"
# Runs computed from a run (the cells of its pruning sweep or lottery rounds) live in a store of
# their own in this folder, each naming its source in settings["cell_of"]["run"]: they are
# deleted with their source, as its cached analyses are.
CELLS_FOLDER = ".cells"
# Keys that the store writes into settings.json itself; a run's own settings may not use them.
RESERVED_KEYS = frozenset({"name", "created", "status", "summary", "message", "finished", "imported"})
MAX_NAME_LENGTH = 100
MAX_IMPORT_BYTES = 2 * 1024**3  # refuse zips that unpack to more than this (zip bombs)

_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,80}$")
_CHECKPOINT_PATTERN = re.compile(r"^step-(\d{8,})\.safetensors$")
_ZIP_CHECKPOINT_PATTERN = re.compile(r"^checkpoints/step-\d{8,}\.safetensors$")
SWEEPS_FOLDER = ".sweeps"  # inside the root; a dot-name is never a run id
_FLOAT_TAG = "$float"  # JSON has no NaN or infinity: they are written as {"$float": "nan"}


def default_root() -> Path:
    """The store folder: $DYNAMICS_LAB_HOME/runs, or ~/.dynamics-lab/runs."""
    home = os.environ.get(ENV_VAR) or Path.home() / ".dynamics-lab"
    return Path(home).expanduser() / "runs"


@dataclass
class RunInfo:
    """One row of a run listing.

    Attributes:
        id: the run id (its folder name).
        name: the display name the user chose.
        created: `time.time()` when the run was created.
        status: a `Status`: running, done, diverged, cancelled, failed, interrupted (its
            training process died) or damaged (its files cannot be read; see `message`).
        dataset: the dataset named in the run's settings ("" if none).
        steps: the steps the run made (summary["steps"]) or, before it has a summary,
            the steps it was set to make (settings["steps"]); 0 if neither is known.
        summary: a small dict of final metrics.
        message: the sentence given when the run finished (why it failed, for example), or
            why a damaged run cannot be read.
    """

    id: str
    name: str
    created: float
    status: Status
    dataset: str
    steps: int
    summary: dict = field(default_factory=dict)
    message: str = ""


# ----- small helpers: JSON with NaN, atomic writes, validation -------------------------

def _encode(value: Any) -> Any:
    """Turn `value` into plain JSON data; non-finite floats become {"$float": "nan"} etc."""
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, (np.ndarray, np.generic, torch.Tensor)):
        return _encode(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return {_FLOAT_TAG: repr(value)}  # 'nan', 'inf' or '-inf'; float() reads them back
    return value


def _decode_object(obj: dict) -> Any:
    """`json.loads` object hook: turn {"$float": "nan"} back into float('nan')."""
    if len(obj) == 1 and _FLOAT_TAG in obj:
        return float(obj[_FLOAT_TAG])
    return obj


def _dumps(value: Any) -> bytes:
    try:
        return json.dumps(_encode(value), allow_nan=False, indent=1).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"Could not save this as JSON: {exc}.") from exc


def _loads(data: bytes | str) -> Any:
    return json.loads(data, object_hook=_decode_object)


def _atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see either the old file or the whole new one."""
    handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False)
    try:
        with handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    """Make a rename durable; some file systems cannot fsync a folder, which is fine."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _check_key(key: Any, what: str) -> str:
    """Return `key` if it is a safe file name (run id or artifact key), else raise ValueError."""
    if not isinstance(key, str) or not _ID_PATTERN.match(key) or ".." in key:
        raise ValueError(f"{key!r} is not a valid {what}: use 1 to 81 letters, digits, '-', '_' or '.', "
                         "starting with a letter or digit, without '..'.")
    return key


def _clean_name(name: Any) -> str:
    """A run's display name, trimmed; any text of 1 to 100 characters."""
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= MAX_NAME_LENGTH:
        raise ValueError(f"A run name needs 1 to {MAX_NAME_LENGTH} characters; got {name!r}.")
    return name.strip()


def _whole_number(value: Any) -> int:
    """`value` as an int for a listing, or 0 when it is missing or not a finite number."""
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return 0


def _save_arrays(folder: Path, key: str, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Write <key>.npz (the arrays) then <key>.json (meta) into `folder`, atomically each."""
    arrays = {str(k): np.asarray(v) for k, v in arrays.items()}
    for name, array in arrays.items():
        if array.dtype.hasobject:
            raise ValueError(f"Array {name!r} holds Python objects; only numeric and text arrays are saved.")
    folder.mkdir(exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    _atomic_write(folder / f"{key}.npz", buffer.getvalue())
    # The .json goes second: once it is there, the matching .npz is complete.
    _atomic_write(folder / f"{key}.json", _dumps(dict(meta)))


def _load_arrays(folder: Path, key: str) -> tuple[dict[str, np.ndarray], dict] | None:
    """The (arrays, meta) `_save_arrays` wrote under `key`, or None when there are none."""
    npz, meta = folder / f"{key}.npz", folder / f"{key}.json"
    if not (npz.exists() and meta.exists()):
        return None
    with np.load(npz, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    return arrays, _loads(meta.read_bytes())


def _checkpoint_name(step: int) -> str:
    return f"step-{step:08d}.safetensors"


def _cpu_copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU copies that share no storage (safetensors refuses shared storage)."""
    copies = {}
    for name, tensor in state.items():
        if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
            raise ValueError(f"A checkpoint maps names to tensors; {name!r} maps to {type(tensor).__name__}.")
        copies[name] = tensor.detach().to("cpu").contiguous().clone()
    return copies


# ----- the store ----------------------------------------------------------------------

class RunStore:
    """Runs, their checkpoints and metrics, and cached analyses, in one folder.

    Safe to share between threads and processes: files are replaced atomically, and the
    read-modify-write of settings.json (finish, rename) happens under a lock. The store that
    creates a run is its writer: it holds the run's writer lock until `finish` (or until the
    store itself is garbage-collected or its process ends, which leaves the run interrupted).
    """

    def __init__(self, root: str | Path | None = None):
        """Args:
            root: the store folder; None uses `default_root()`. It is created if missing.
        """
        self.root = Path(root).expanduser() if root is not None else default_root()
        self.root.mkdir(parents=True, exist_ok=True)
        self.root = self.root.resolve()
        self._settings_lock = threading.Lock()
        self._writer_locks: dict[str, io.BufferedWriter] = {}  # run id -> its locked .writer.lock

    # ----- creating and finishing runs ----------------------------------------------

    def create(self, name: str, settings: dict) -> str:
        """Make a new run with status "running" and return its id.

        Args:
            name: the display name (any text, 1 to 100 characters after trimming).
            settings: what made the run (JSON-able); stored beside name, created and status,
                so it may not use the keys in `RESERVED_KEYS`.
        """
        name = _clean_name(name)
        clash = RESERVED_KEYS & set(settings)
        if clash:
            raise ValueError(f"Run settings may not use the store's own keys: {', '.join(sorted(clash))}.")
        record = {**settings, "name": name, "created": time.time(), "status": "running",
                  "summary": {}, "message": ""}
        data = _dumps(record)  # fail on unsaveable settings before making a folder
        # Made under a dot-name and renamed into place, so a listing never sees a run without
        # its settings or its writer lock; the lock stays on the file across the rename.
        staging = Path(tempfile.mkdtemp(prefix=".create-", dir=self.root))
        try:
            lock = _hold_writer_lock(staging)
            _atomic_write(staging / "settings.json", data)
            run_id = self._move_into_place(staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self._writer_locks[run_id] = lock
        return run_id

    def finish(self, run_id: str, status: str, summary: dict | None = None, message: str = "") -> None:
        """Record how a run ended.

        Args:
            run_id: the run.
            status: "done", "diverged", "cancelled" or "failed".
            summary: a small dict of final metrics (replaces the previous summary when given).
            message: a sentence, e.g. why it failed.
        """
        if status not in FINISHED_STATUSES:
            raise ValueError(f"A run finishes as one of {', '.join(sorted(FINISHED_STATUSES))}, not {status!r}.")
        changes = {"status": Status(status), "message": str(message), "finished": time.time()}
        if summary is not None:
            changes["summary"] = dict(summary)
        self._update_settings(run_id, changes)
        self._release_writer_lock(run_id)  # only now: a reader that finds it free sees the end

    def rename(self, run_id: str, new_name: str) -> None:
        """Change a run's display name; the folder keeps its id."""
        self._update_settings(run_id, {"name": _clean_name(new_name)})

    def delete(self, run_id: str) -> None:
        """Remove a run and everything saved with it."""
        folder = self._existing(run_id)
        self._release_writer_lock(run_id)
        # Rename first so that a listing never sees a half-deleted run.
        doomed = self.root / f".deleting-{run_id}-{secrets.token_hex(3)}"
        os.replace(folder, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
        self._delete_cells_of(run_id)

    def _delete_cells_of(self, run_id: str) -> None:
        """Delete the runs computed from `run_id` (see CELLS_FOLDER)."""
        if not (self.root / CELLS_FOLDER).is_dir():
            return
        cells = RunStore(self.root / CELLS_FOLDER)
        for run in cells.list(damaged=True):
            try:
                source = (cells.settings(run.id).get("cell_of") or {}).get("run")
            except (ValueError, OSError):
                continue
            if source == run_id:
                cells.delete(run.id)

    # ----- reading runs --------------------------------------------------------------

    def list(self, *, damaged: bool = False) -> list[RunInfo]:
        """The runs, newest first.

        Args:
            damaged: also list runs that cannot be read, with status `Status.DAMAGED` and the
                reason as their message; by default they are left out.
        """
        runs = []
        for folder in self.root.iterdir():
            if not _ID_PATTERN.match(folder.name) or not folder.is_dir():
                continue
            try:
                info = self._info(folder.name, self.settings(folder.name))
            except (ValueError, OSError, TypeError, KeyError, AttributeError) as exc:
                if not folder.is_dir():
                    continue  # deleted while we looked
                info = _damaged(folder.name, str(exc), created=_modified(folder))
            if info.status != Status.DAMAGED:
                problem = self._checkpoint_problem(info)
                info = _damaged(info.id, problem, info) if problem else info
            if damaged or info.status != Status.DAMAGED:
                runs.append(info)
        runs.sort(key=lambda run: (run.created, run.id), reverse=True)
        return runs

    def exists(self, run_id: str) -> bool:
        """True while a run of this id is in the store."""
        return self._path(run_id).is_dir()

    def settings(self, run_id: str) -> dict:
        """The run's settings.json: its settings plus name, created, status, summary, message.

        A "running" run whose writer died is recorded as "interrupted" on the way (see the
        module's notes), so every reader agrees on its status.
        """
        record = self._read_settings(run_id)
        if record.get("status") == Status.RUNNING and not _writer_alive(self._path(run_id)):
            record = self._mark_interrupted(run_id)
        return record

    def _read_settings(self, run_id: str) -> dict:
        """settings.json as written, without looking at its writer."""
        path = self._existing(run_id) / "settings.json"
        if not path.exists():
            raise ValueError(f"Run {run_id!r} has no settings.json.")
        try:
            record = _loads(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise ValueError(f"The settings of run {run_id!r} cannot be read: {exc}.") from exc
        if not isinstance(record, dict):
            raise ValueError(f"The settings of run {run_id!r} are not a JSON object.")
        return record

    def _mark_interrupted(self, run_id: str) -> dict:
        """Record that the run's writer died: its last whole checkpoint is where it stands."""
        with self._settings_lock:
            record = self._read_settings(run_id)  # again: the writer may have finished meanwhile
            if record.get("status") != Status.RUNNING:
                return record
            _remove_temporary_files(self._path(run_id))
            steps = self.checkpoint_steps(run_id)
            if steps:
                message = (f"Training was interrupted: its process ended before the run finished. "
                           f"The last whole checkpoint is step {steps[-1]:,}.")
            else:
                message = "Training was interrupted before its first checkpoint: there are no weights."
            record.update(status=Status.INTERRUPTED, message=message, finished=time.time(),
                          summary=dict(record.get("summary") or {}, steps=steps[-1] if steps else 0))
            _atomic_write(self._path(run_id) / "settings.json", _dumps(record))
            return record

    def save_metrics(self, run_id: str, metrics: dict) -> None:
        """Save the run's metrics (dict of lists of numbers; NaN and infinities survive)."""
        _atomic_write(self._existing(run_id) / "metrics.json", _dumps(dict(metrics)))

    def metrics(self, run_id: str) -> dict:
        """The run's metrics, or {} before any were saved."""
        path = self._existing(run_id) / "metrics.json"
        if not path.exists():
            return {}
        try:
            return _loads(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise ValueError(f"The metrics of run {run_id!r} cannot be read: {exc}.") from exc

    # ----- checkpoints ---------------------------------------------------------------

    def save_checkpoint(self, run_id: str, step: int, state: dict[str, torch.Tensor]) -> None:
        """Save a state dict (any device; shared or strided tensors are fine) for `step`."""
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"A checkpoint step is a whole number from 0 up, not {step!r}.")
        folder = self._existing(run_id) / "checkpoints"
        folder.mkdir(exist_ok=True)
        data = safetensors.torch.save(_cpu_copy(state))
        _atomic_write(folder / _checkpoint_name(int(step)), data)

    def checkpoint_steps(self, run_id: str) -> list[int]:
        """The steps that have checkpoints, ascending."""
        folder = self._existing(run_id) / "checkpoints"
        if not folder.is_dir():
            return []
        matches = (_CHECKPOINT_PATTERN.match(p.name) for p in folder.iterdir())
        return sorted(int(m.group(1)) for m in matches if m)

    def load_checkpoint(self, run_id: str, step: int | None = None,
                        device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        """The state dict saved at `step` (None: the last one), on `device`."""
        steps = self.checkpoint_steps(run_id)
        if not steps:
            raise ValueError(f"Run {run_id!r} has no checkpoints.")
        if step is None:
            step = steps[-1]
        if step not in steps:
            raise ValueError(f"Run {run_id!r} has no checkpoint at step {step}; it has {steps}.")
        path = self._path(run_id) / "checkpoints" / _checkpoint_name(step)
        try:
            return safetensors.torch.load_file(path, device=str(torch.device(device)))
        except (safetensors.SafetensorError, OSError) as exc:
            raise ValueError(f"The checkpoint at step {step} of run {run_id!r} cannot be read: "
                             f"{_safetensors_problem(path) or exc}.") from exc

    def _checkpoint_problem(self, info: RunInfo) -> str:
        """Why the run's weights cannot be used, or "" when they can (the last checkpoint is checked)."""
        steps = self.checkpoint_steps(info.id)
        if not steps:
            if info.status in (Status.DONE, Status.DIVERGED, Status.CANCELLED):
                return f"Run {info.id!r} finished as {info.status} but has no checkpoints: its weights are missing."
            return ""
        problem = _safetensors_problem(self._path(info.id) / "checkpoints" / _checkpoint_name(steps[-1]))
        return f"The checkpoint at step {steps[-1]} of run {info.id!r} cannot be read: {problem}." if problem else ""

    # ----- artifacts (cached analysis results) ----------------------------------------

    def save_artifact(self, run_id: str, key: str, arrays: dict[str, np.ndarray], meta: dict) -> None:
        """Cache an analysis result as artifacts/<key>.npz (arrays) and <key>.json (meta).

        Args:
            run_id: the run the result belongs to.
            key: a name like "landscape-step100" (same rules as a run id).
            arrays: numeric arrays by name (object arrays would need pickle: refused).
            meta: the settings that made the result, JSON-able.
        """
        _check_key(key, "artifact key")
        _save_arrays(self._existing(run_id) / "artifacts", key, arrays, meta)

    def load_artifact(self, run_id: str, key: str) -> tuple[dict[str, np.ndarray], dict] | None:
        """The cached (arrays, meta) for `key`, or None when nothing is cached under it."""
        _check_key(key, "artifact key")
        return _load_arrays(self._existing(run_id) / "artifacts", key)

    # ----- sweeps (results that span many runs, e.g. a phase diagram) -----------------

    def _sweeps(self) -> Path:
        """<root>/.sweeps: a dot-folder, so run listings never mistake it for a run."""
        return self.root / SWEEPS_FOLDER

    def save_sweep(self, key: str, arrays: dict[str, np.ndarray], meta: dict) -> None:
        """Cache a sweep's result as .sweeps/<key>.npz (arrays) and <key>.json (meta).

        Args:
            key: a name like "sweep-3f2a..." (same rules as a run id).
            arrays: numeric or text arrays by name (object arrays would need pickle: refused).
            meta: the settings that made the result, JSON-able.
        """
        _check_key(key, "sweep key")
        _save_arrays(self._sweeps(), key, arrays, meta)

    def load_sweep(self, key: str) -> tuple[dict[str, np.ndarray], dict] | None:
        """The cached (arrays, meta) of a sweep, or None when nothing is cached under `key`."""
        _check_key(key, "sweep key")
        return _load_arrays(self._sweeps(), key)

    def list_sweeps(self) -> list[tuple[str, dict]]:
        """Every complete cached sweep as (key, meta), newest first."""
        folder = self._sweeps()
        if not folder.is_dir():
            return []
        found = []
        for meta in folder.glob("*.json"):
            key = meta.stem
            if not _ID_PATTERN.match(key) or ".." in key or not (folder / f"{key}.npz").exists():
                continue
            try:
                found.append((meta.stat().st_mtime, key, _loads(meta.read_bytes())))
            except (OSError, ValueError):
                continue  # a broken cache entry is left out, not fatal
        found.sort(key=lambda item: (item[0], item[1]), reverse=True)
        return [(key, meta) for _, key, meta in found]

    # ----- one file to download and upload ---------------------------------------------

    def export_zip(self, run_id: str) -> bytes:
        """The run as a zip: settings.json, metrics.json (if any) and checkpoints/*.safetensors."""
        folder = self._existing(run_id)
        members = [folder / "settings.json", folder / "metrics.json"]
        members += [folder / "checkpoints" / _checkpoint_name(s) for s in self.checkpoint_steps(run_id)]
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for path in members:
                if path.exists():
                    # Weights hardly compress; JSON does.
                    method = zipfile.ZIP_STORED if path.suffix == ".safetensors" else zipfile.ZIP_DEFLATED
                    archive.write(path, path.relative_to(folder).as_posix(), compress_type=method)
        return buffer.getvalue()

    def import_zip(self, data: bytes, name: str | None = None) -> str:
        """Add a run from a zip made by `export_zip` and return its new id.

        Every member is checked before anything is written: only settings.json, metrics.json
        and checkpoints/step-NNNNNNNN.safetensors are accepted, each must parse, and the
        whole unpacks to at most `MAX_IMPORT_BYTES`. Anything else raises ValueError.

        Args:
            data: the zip file's bytes.
            name: a new display name; None keeps the one in the zip.
        """
        files = _read_run_zip(data)
        record = _loads(files["settings.json"])
        if name is not None:
            record["name"] = _clean_name(name)
        record["imported"] = time.time()
        files["settings.json"] = _dumps(record)

        staging = Path(tempfile.mkdtemp(prefix=".import-", dir=self.root))
        try:
            (staging / "checkpoints").mkdir()
            for member, content in files.items():
                _atomic_write(staging / member, content)
            run_id = self._move_into_place(staging)  # the run appears whole or not at all
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return run_id

    # ----- paths and ids -------------------------------------------------------------

    def _path(self, run_id: str) -> Path:
        """The folder of `run_id`, after checking the id is safe (it need not exist)."""
        _check_key(run_id, "run id")
        path = (self.root / run_id).resolve()
        if path.parent != self.root:
            raise ValueError(f"{run_id!r} is not a valid run id: it points outside the run store.")
        return path

    def _existing(self, run_id: str) -> Path:
        """The folder of an existing run; ValueError with a sentence when there is none."""
        path = self._path(run_id)
        if not path.is_dir():
            raise ValueError(f"No run named {run_id!r} in {self.root}.")
        return path

    def _new_id(self) -> str:
        """A fresh, time-sortable id such as "20261122-063512-a1b2c3"."""
        return f"{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"

    def _move_into_place(self, staging: Path) -> str:
        """Rename a finished staging folder to a fresh run id and return the id."""
        while True:
            run_id = self._new_id()
            if not self._path(run_id).exists():  # a rename would replace an empty folder
                os.rename(staging, self._path(run_id))
                return run_id

    def _release_writer_lock(self, run_id: str) -> None:
        lock = self._writer_locks.pop(run_id, None)
        if lock is not None:
            lock.close()  # closing the file releases its flock

    def _update_settings(self, run_id: str, changes: dict) -> None:
        with self._settings_lock:
            record = self._read_settings(run_id)
            record.update(changes)
            _atomic_write(self._path(run_id) / "settings.json", _dumps(record))

    @staticmethod
    def _info(run_id: str, record: dict) -> RunInfo:
        summary = record.get("summary") or {}
        dataset = record.get("dataset") or ""
        if isinstance(dataset, dict):  # settings may describe the dataset with its options
            dataset = dataset.get("name", "")
        if record.get("status") not in STATUSES:
            raise ValueError(f"Run {run_id!r} has an unknown status {record.get('status')!r}.")
        return RunInfo(
            id=run_id, name=str(record["name"]), created=float(record["created"]),
            status=Status(record["status"]), dataset=str(dataset),
            steps=_whole_number(summary.get("steps", record.get("steps"))),
            summary=dict(summary), message=str(record.get("message", "")),
        )


def _damaged(run_id: str, reason: str, info: RunInfo | None = None, created: float = 0.0) -> RunInfo:
    """A listing row for a run that cannot be used, saying why (keeps what was readable)."""
    if info is None:
        info = RunInfo(id=run_id, name=run_id, created=created, status=Status.DAMAGED, dataset="", steps=0)
    return RunInfo(id=info.id, name=info.name, created=info.created, status=Status.DAMAGED,
                   dataset=info.dataset, steps=info.steps, summary=info.summary, message=reason)


def _modified(path: Path) -> float:
    with suppress(OSError):
        return path.stat().st_mtime
    return 0.0


def _hold_writer_lock(folder: Path) -> io.BufferedWriter:
    """Create folder/.writer.lock and lock it exclusively; the open file keeps the lock."""
    lock = open(folder / WRITER_LOCK, "wb")
    if fcntl is not None:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    return lock


def _writer_alive(folder: Path) -> bool:
    """True while some open file (in any process, this one included) holds the run's writer lock."""
    if fcntl is None:
        return True  # cannot tell: never call a run interrupted
    try:
        probe = open(folder / WRITER_LOCK, "rb")
    except FileNotFoundError:
        return False  # a run written before writer locks existed, or by a store that lost it
    with probe:
        try:
            fcntl.flock(probe.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False  # closing the probe releases the shared lock it just took


def _remove_temporary_files(folder: Path) -> None:
    """Delete the half-written `.*.tmp` files a dead writer left in a run and its checkpoints."""
    for place in (folder, folder / "checkpoints"):
        for leftover in place.glob(".*.tmp"):
            with suppress(OSError):
                leftover.unlink()


def _safetensors_problem(path: Path) -> str:
    """Why `path` is not a whole safetensors file, or "" when its header and size agree.

    Reads only the header: 8 bytes of little-endian length, then that much JSON naming each
    tensor's byte range; the ranges must end exactly at the end of the file.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as file:
            length = int.from_bytes(file.read(8), "little")
            if size < 8 or length > size - 8:
                return "it is not a safetensors file (its header is damaged)"
            header = json.loads(file.read(length))
        ends = [entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"]
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError, UnicodeDecodeError):
        return "it is not a safetensors file"
    if max(ends, default=0) != size - 8 - length:
        return "the file is cut short or has extra bytes"
    return ""


def _read_run_zip(data: bytes) -> dict[str, bytes]:
    """Check an uploaded run zip member by member and return its files' contents.

    Raises ValueError for anything but a well-formed export: a bad zip, an unexpected or
    unsafe member name ('..', an absolute path, another file), a duplicate, too much data,
    or a settings.json, metrics.json or checkpoint that does not parse.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise ValueError(f"This is not a zip file: {exc}.") from exc
    with archive:
        infos = [info for info in archive.infolist() if info.filename != "checkpoints/"]
        for info in infos:
            _check_member_name(info.filename)
        names = [info.filename for info in infos]
        if len(set(names)) != len(names):
            raise ValueError("The zip lists the same file twice.")
        if "settings.json" not in names:
            raise ValueError("The zip has no settings.json, so it is not an exported run.")
        if sum(info.file_size for info in infos) > MAX_IMPORT_BYTES:
            raise ValueError(f"The zip unpacks to more than {MAX_IMPORT_BYTES // 1024**3} GiB.")
        files = {info.filename: archive.read(info) for info in infos}
    _check_member_contents(files)
    return files


def _check_member_name(member: str) -> None:
    """Accept only the names `export_zip` writes; say why anything else is refused."""
    if member.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", member):
        raise ValueError(f"The zip member {member!r} is an absolute path; refusing the upload.")
    if ".." in member.replace("\\", "/").split("/"):
        raise ValueError(f"The zip member {member!r} climbs out of its folder; refusing the upload.")
    if member not in ("settings.json", "metrics.json") and not _ZIP_CHECKPOINT_PATTERN.match(member):
        raise ValueError(f"The zip member {member!r} is not part of an exported run; refusing the upload.")


def _check_member_contents(files: dict[str, bytes]) -> None:
    """Parse every file once, so a broken upload is refused instead of stored."""
    for member, content in files.items():
        try:
            if member.endswith(".json"):
                value = _loads(content)
                if not isinstance(value, dict):
                    raise ValueError("not a JSON object")
            else:
                safetensors.torch.load(content)
        except Exception as exc:
            raise ValueError(f"The zip member {member!r} cannot be read: {exc}.") from exc
    settings = _loads(files["settings.json"])
    _clean_name(settings.get("name"))
    if settings.get("status") not in STATUSES or not isinstance(settings.get("created"), (int, float)):
        raise ValueError("The zip's settings.json lacks a valid status or creation time.")
