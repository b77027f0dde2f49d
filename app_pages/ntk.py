"""Neural tangent kernel: its spectrum, its eigenfunctions over input space, how far it moves."""
from __future__ import annotations

import streamlit as st

from app_pages.lab import NTK_SPECTRUM, analysis_result, chart, checkpoint_picker, run_picker, store
from engine import ntk, recipes
from viz import ntk as figures

KINDS = {"trace": "trace (sum over outputs)", "pseudo": "pseudo-NTK (sum of logits)"}
SPECTRUM_DEFAULTS = NTK_SPECTRUM  # shared with the overview's panel (see lab.NTK_SPECTRUM)
MAX_SAMPLE_ROWS = 6  # eigenvectors whose extreme samples are shown (images or signals)


def introduction() -> None:
    st.title("Neural tangent kernel")
    st.write(
        "The empirical NTK compares two inputs by how much a gradient step on one moves the "
        "output on the other. Under gradient flow on a fixed kernel, the residual along each "
        "eigenvector decays at the rate of its eigenvalue: the top eigenfunctions are what the "
        "network learns first (spectral bias). How far the kernel moves in training tells lazy "
        "from rich learning. Images and signals have no input plane to draw eigenfunctions on: "
        "there each eigenvector is shown by the samples at its two ends."
    )
    # the lab's MSE is a plain mean over N samples and O outputs (no 1/2), hence 2 / (N O)
    st.latex(r"\Theta(x, x') = J(x)\,J(x')^\top, \qquad r_i(t) \approx r_i(0)\, e^{-2 \eta \lambda_i t / (N O)}")


def settings() -> dict:
    with st.sidebar:
        st.header("Kernel")
        kind = st.radio("Kind", list(KINDS), index=list(KINDS).index(SPECTRUM_DEFAULTS["kind"]), format_func=KINDS.get,
                        key="ntk:kind")
        samples = st.select_slider("Points", [100, 200, 300, 500, 1000], value=SPECTRUM_DEFAULTS["samples"],
                                   key="ntk:samples")
        k = st.slider("Eigenvectors shown", 2, 12, 8, key="ntk:k")
    return {"kind": kind, "samples": samples, "k": k}


def at_checkpoint(run_id: str, step: int, view: str, s: dict, column) -> None:
    """Spectrum, target power, layers and eigenvectors of the kernel at one checkpoint."""
    common = dict(step=step, samples=s["samples"], kind=s["kind"])
    spectrum = analysis_result("ntk-spectrum", run_id, common, recipes.ntk_spectrum, label="NTK spectrum")
    power = analysis_result("ntk-power", run_id, common, recipes.ntk_target_power, label="Target power")
    layers = analysis_result("ntk-layers", run_id, common, recipes.ntk_layers, label="Kernel per layer")
    with column:
        st.subheader(f"Step {step:,}")
        if spectrum is not None:
            chart(figures.spectrum_figure(spectrum), f"ntk-spectrum-{step}", result=spectrum)
        if power is not None:
            chart(figures.target_power_figure(power), f"ntk-power-{step}", result=power)
        if layers is not None:
            chart(figures.layer_kernels_figure(layers), f"ntk-layers-{step}", result=layers)
    eigenvectors(run_id, step, view, s, column)


def eigenvectors(run_id: str, step: int, view: str, s: dict, column) -> None:
    """The top eigenvectors as the data allows: eigenfunctions over a line, the circle (with
    their Fourier content) or the plane; for images and signals, the samples at their ends."""
    settings = dict(step=step, samples=min(s["samples"], 300), kind=s["kind"])
    if view == "samples":
        extremes = analysis_result("ntk-extremes", run_id, dict(settings, k=min(s["k"], MAX_SAMPLE_ROWS)),
                                   recipes.ntk_extreme_samples, label="Extreme samples of the eigenvectors")
        if extremes is not None:
            with column:
                chart(figures.extreme_samples_figure(extremes, max_rows=MAX_SAMPLE_ROWS), f"ntk-extremes-{step}",
                      result=extremes)
        return
    functions = analysis_result("ntk-functions", run_id, dict(settings, k=s["k"]), recipes.ntk_eigenfunctions,
                                label="Eigenfunctions")
    if functions is None:
        return
    with column:
        chart(figures.eigenfunctions_figure(functions), f"ntk-functions-{step}", result=functions)
        if view in ("circle", "line"):
            content = ntk.fourier_content(functions)
            chart(figures.fourier_figure(content), f"ntk-fourier-{step}", result=content)


def ntk_page() -> None:
    introduction()
    s = settings()
    run_id = run_picker()
    if not run_id:
        return
    view = recipes.ntk_view(store(), run_id)
    first = store().checkpoint_steps(run_id)[0]
    step = checkpoint_picker(run_id, label="Compare initialisation with step")
    left, right = st.columns(2)
    at_checkpoint(run_id, first, view, s, left)
    at_checkpoint(run_id, step, view, s, right)
    st.subheader("How far the kernel moves")
    st.caption("Relative change ||K_t - K_0|| / ||K_0||, kernel distance 1 - <K_0, K_t> / (||K_0|| ||K_t||), "
               "overlap of the top eigenvector spans, relative weight change, and kernel-target alignment.")
    over_training = dict(samples=min(s["samples"], 200), kind=s["kind"])
    trajectory = analysis_result("ntk-trajectory", run_id, over_training, recipes.ntk_trajectory,
                                 label="Kernel at every checkpoint")
    if trajectory is not None:
        chart(figures.kernel_trajectory_figure(trajectory), "ntk-trajectory", result=trajectory)
    power = analysis_result("ntk-power-trajectory", run_id, over_training, recipes.ntk_power_over_training,
                            label="Target power at every checkpoint")
    if power is not None:
        chart(figures.target_power_trajectory_figure(power), "ntk-power-trajectory", result=power)
    mode_curves(run_id)


def mode_curves(run_id: str) -> None:
    """Predicted against measured learning of each kernel mode (full-batch GD on MSE runs)."""
    settings = store().settings(run_id)["train"]
    if settings.get("optimizer") != "gd":
        st.caption("Per-mode learning curves need a run trained by full-batch gradient descent on MSE "
                   "(try the preset \"Spectral bias on the circle\").")
        return
    st.subheader("Learning by modes: the kernel's prediction against the network")
    curves = analysis_result("ntk-modes", run_id, dict(k=6, kind="pseudo"), recipes.ntk_mode_curves,
                             label="Residual along each kernel mode")
    if curves is not None:
        chart(figures.mode_curves_figure(curves), "ntk-modes", result=curves)


ntk_page()
