"""A sweep joins a Ray cluster by its address: a real head started with `ray start`, the
command `python -m engine sweep --backend ray --address HOST:PORT`, and the same CSV rows as
the sweep trained on this machine."""
import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from test_sweep import wait_for

pytest.importorskip("ray")

RAY = Path(sys.executable).with_name("ray")
TINY = ["data=moons", "data.n=100", "model.width=4,8", "model.depth=1", "train.steps=20",
        "train.eval_every=10", "train.checkpoint_every=10", "--device", "cpu"]
COMPARED = ["model.width", "status", "train_loss", "test_loss", "test_accuracy"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.fixture
def ray_head(tmp_path):
    """A one-node cluster as a user starts it; `--block` ties its processes to this one. Its
    workers run at nice 0, as the lab's own Ray runs them (engine.sweep.LOCAL_RAY_CONFIG):
    at Ray's default nice 15 the cells crawl when the machine is busy."""
    port = free_port()
    env = os.environ | {"OMP_NUM_THREADS": "1", "RAY_worker_niceness": "0"}
    head = subprocess.Popen([str(RAY), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
                             "--include-dashboard=false", "--disable-usage-stats"],
                            env=env, stdout=subprocess.DEVNULL, stderr=(tmp_path / "head.log").open("w"))
    try:
        wait_for(lambda: answers(port) or head.poll() is not None, "the Ray head to listen")
        assert head.poll() is None, (tmp_path / "head.log").read_text()
        yield f"127.0.0.1:{port}"
    finally:
        head.terminate()
        head.wait(timeout=60)


def sweep_rows(tmp_path: Path, name: str, *backend: str) -> list[dict]:
    out = tmp_path / name
    env = os.environ | {"DYNAMICS_LAB_HOME": str(tmp_path / f"{name}-runs"), "OMP_NUM_THREADS": "1"}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run([sys.executable, "-m", "engine", "sweep", *TINY, *backend, "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    (table,) = out.glob("sweep-*.csv")
    with table.open() as f:
        return [{k: row[k] for k in COMPARED} for row in csv.DictReader(f)]


def test_a_sweep_joins_a_running_cluster_by_its_address_and_gives_this_machines_numbers(tmp_path, ray_head):
    there = sweep_rows(tmp_path, "cluster", "--backend", "ray", "--address", ray_head)
    here = sweep_rows(tmp_path, "here")
    assert there == here and [r["status"] for r in there] == ["done", "done"]
