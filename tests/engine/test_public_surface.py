"""The engine's and viz's public surface is explicit: every module lists it in `__all__`, every
listed name exists, and every name that other code of the lab imports from a module
(`from engine.X import a, b`, found by reading the sources) is in that module's `__all__`.
`import engine` stays cheap: the notebook API it re-exports is imported on first use."""
import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("engine", "viz")
MODULES = sorted(f"{package}.{path.stem}" for package in PACKAGES for path in (ROOT / package).glob("*.py"))
CODE = sorted(path for folder in (*PACKAGES, "app_pages") for path in (ROOT / folder).rglob("*.py")) + [ROOT / "app.py"]


def imports_between_modules() -> list[tuple[str, str, str]]:
    """(the importing file, the module, the name) for each `from engine.X import name` (or
    viz.X) in the lab's code, private names (a leading _) left out."""
    found = []
    for path in CODE:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in MODULES:
                found += [(str(path.relative_to(ROOT)), node.module, alias.name) for alias in node.names
                          if not alias.name.startswith("_")]
    return found


def test_the_scan_sees_the_lab_importing_its_modules():
    assert ("app_pages/runs.py", "engine.experiment", "Experiment") in imports_between_modules()


@pytest.mark.parametrize("name", MODULES)
def test_every_module_lists_its_public_names_and_each_exists(name):
    module = importlib.import_module(name)
    listed = getattr(module, "__all__", None)
    assert isinstance(listed, list), f"{name} has no __all__ list"
    assert len(set(listed)) == len(listed), f"{name}.__all__ names something twice"
    assert [n for n in listed if not hasattr(module, n)] == [], f"{name}.__all__ names what it lacks"


def test_every_name_imported_from_a_module_is_in_its_all():
    unlisted = [f"{where} imports {name} from {module}" for where, module, name in imports_between_modules()
                if name not in getattr(importlib.import_module(module), "__all__", ())]
    assert unlisted == []


def test_importing_engine_imports_no_torch_until_the_notebook_api_is_used():
    code = ("import sys, engine; assert 'torch' not in sys.modules, 'torch at import'; "
            "engine.import_run; assert 'torch' in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_the_notebook_api_is_the_modules_own():
    import engine
    from engine import experiment, external, store

    assert (engine.import_run, engine.load_model, engine.load_dataset, engine.RunStore) == \
        (external.import_run, experiment.load_model, experiment.load_dataset, store.RunStore)
