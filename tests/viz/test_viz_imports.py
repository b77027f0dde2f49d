"""viz/ never pulls in torch or streamlit."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_viz_imports_neither_torch_nor_streamlit():
    code = ("import viz.style, viz.training, viz.predictions, sys; "
            "assert 'torch' not in sys.modules and 'streamlit' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
