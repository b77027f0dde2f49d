"""The engine makes torch's OpenMP threads sleep at barriers instead of spinning, read back
from OpenMP itself (OMP_DISPLAY_ENV=VERBOSE prints its settings when torch loads it)."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def openmp_spin_count(code: str, **env: str) -> str:
    """GOMP_SPINCOUNT as the OpenMP runtime reports it in a fresh process running `code`."""
    environment = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    environment |= {"OMP_DISPLAY_ENV": "VERBOSE", "PYTHONPATH": str(ROOT)} | env
    result = subprocess.run([sys.executable, "-c", code], env=environment, cwd=ROOT,
                            capture_output=True, text=True, check=True)
    line = next(line for line in result.stderr.splitlines() if "GOMP_SPINCOUNT" in line)
    return line.split("=")[1].strip().strip("'")


def test_engine_imported_first_makes_threads_sleep_at_once():
    assert openmp_spin_count("import engine, torch") == "0"


def test_the_app_pages_import_the_engine_before_torch():
    assert openmp_spin_count("import app_pages, torch") == "0"


def test_torch_imported_first_keeps_openmp_defaults():
    assert openmp_spin_count("import torch, engine") != "0"


def test_a_policy_the_user_set_wins():
    assert openmp_spin_count("import engine, torch", OMP_WAIT_POLICY="ACTIVE") != "0"
