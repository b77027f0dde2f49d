"""The lab as a package: importable anywhere, a wheel with everything, a command that serves the app."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from app_pages import launch
from engine import external

ROOT = Path(__file__).resolve().parents[2]


def run(*args, cwd, timeout=300, **kw):
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, **kw)


def test_the_engine_runs_from_any_folder(tmp_path):
    result = run(sys.executable, "-m", "engine", "--store", str(tmp_path / "runs"), "list", cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_the_wheel_holds_the_packages_the_entry_script_and_the_presets(tmp_path):
    source = tmp_path / "source"  # a copy: building in place would leave build/ in the repository
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".*", "*.egg-info", "build", "tests", "bench",
                                                                 "__pycache__", "test-artifacts"))
    result = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                 "-w", str(tmp_path), str(source), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("dynamics_lab-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"app.py", "engine/__main__.py", "viz/__init__.py", "app_pages/train.py", "app_pages/launch.py"} <= names
    assert any(n.endswith("data/share/dynamics-lab/presets/skip-connections.json") for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "dynamics-lab = app_pages.launch:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_the_command_listens_on_localhost_only_unless_told_otherwise():
    command = launch.command(["--server.port=9999"])
    assert command[-1] == "--server.port=9999"
    assert "--server.address=localhost" in command and command[4] == str(ROOT / "app.py")


def test_models_named_at_start_are_offered_to_the_runs_page():
    env = launch.environment("nets.py:resnet,nets.py:vgg", base={"PATH": "/bin"})
    assert env == {"PATH": "/bin", "DYNAMICS_LAB_MODELS": "nets.py:resnet,nets.py:vgg"}
    assert launch.MODELS_VAR == external.MODELS_VAR


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_dynamics_lab_command_serves_the_app(tmp_path):
    script = Path(sys.executable).with_name("dynamics-lab")
    if not script.exists():
        pytest.fail(f"{script} is missing: install the lab with `pip install -e .` (requirements.txt does)")
    port = _free_port()
    env = dict(os.environ, DYNAMICS_LAB_HOME=str(tmp_path))
    server = subprocess.Popen([str(script), f"--server.port={port}"], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120  # a safety net: we wait for the health check
        while True:
            assert server.poll() is None, f"dynamics-lab exited with {server.returncode}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as response:
                    if response.read().decode().strip() == "ok":
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the app never became healthy"
            time.sleep(0.2)
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
