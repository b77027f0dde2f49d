"""Loss landscape: the loss around trained weights, the path training took, the curvature."""
from __future__ import annotations

import streamlit as st

from app_pages.lab import analysis_result, chart, checkpoint_picker, run_picker
from engine import recipes
from viz import landscape as figures

COARSE = 11  # grid points per axis of the quick first picture


def introduction() -> None:
    st.title("Loss landscape")
    st.write(
        "The training loss on a plane of weights through a checkpoint, along two random "
        "directions rescaled filter by filter to the weights' own norms (Li et al. 2018), so "
        "that pictures of different networks compare. Flat, wide basins tend to generalize; "
        "skip connections and large batches change the picture. The trajectory view puts the "
        "plane through the path training took instead."
    )
    st.latex(r"L(a, b) = \mathcal{L}\big(w + a\,d_1 + b\,d_2\big), \quad "
             r"d_{i,\text{filter } j} \leftarrow \frac{d_{i,j}}{\lVert d_{i,j}\rVert}\,\lVert w_j\rVert")


def settings() -> dict:
    with st.sidebar:
        st.header("Landscape")
        plane = st.radio("Plane", ["random directions", "training trajectory (PCA)"], key="ls:plane")
        split = st.radio("Data", ["train", "test"], horizontal=True, key="ls:split")
        samples = st.select_slider("Samples", [250, 500, 1000, 2000, 4000], value=1000, key="ls:samples")
        resolution = st.select_slider("Resolution", [21, 31, 41, 51], value=31, key="ls:resolution")
        span = st.select_slider("Range (random directions)", [0.25, 0.5, 1.0, 2.0], value=1.0, key="ls:span")
        log = st.toggle("Log scale", value=True, key="ls:log")
        clip = st.number_input("Clip loss above (0: none)", min_value=0.0, value=0.0, key="ls:clip")
    return {"plane": plane, "split": split, "samples": samples, "resolution": resolution,
            "span": span, "log": log, "clip": clip or None}


def surface_for(run_id: str, step: int, s: dict, resolution: int):
    """The surface of one run at one resolution (a stored or running analysis)."""
    if s["plane"] == "random directions":
        options = dict(step=step, split=s["split"], samples=s["samples"], span=s["span"], resolution=resolution)
        return analysis_result("surface", run_id, options, recipes.random_plane_surface,
                               label=f"Surface {resolution}x{resolution}")
    options = dict(split=s["split"], samples=s["samples"], resolution=resolution)
    return analysis_result("pca-surface", run_id, options, recipes.trajectory_surface,
                           label=f"Trajectory plane {resolution}x{resolution}")


def slice_for(run_id: str, step: int, s: dict, split: str):
    """The loss and accuracy along the first random direction (the contour's middle row)."""
    options = dict(step=step, split=split, samples=s["samples"], span=s["span"], resolution=s["resolution"],
                   one_dimensional=True)
    return analysis_result("slice", run_id, options, recipes.random_plane_surface, label=f"1-D slice ({split})")


def trajectory_for(run_id: str, s: dict):
    options = dict(split=s["split"], samples=s["samples"])
    return analysis_result("trajectory", run_id, options, recipes.trajectory, label="Trajectory")


def refined(surface_at, resolution: int):
    """Show fast, then refine: the full-resolution surface if ready, else the coarse one
    (computed first; the full one's progress bar shows above it), else None.

    Args:
        surface_at: resolution -> the surface at that resolution, or None while it computes.
    """
    coarse = surface_at(COARSE)
    if coarse is None:
        return None
    full = surface_at(resolution)
    if full is None:
        st.caption(f"A quick {COARSE}x{COARSE} picture; the {resolution}x{resolution} grid follows.")
    return full if full is not None else coarse


def best_surface(run_id: str, step: int, s: dict):
    """The surface of one run: coarse first, then at the chosen resolution."""
    return refined(lambda resolution: surface_for(run_id, step, s, resolution), s["resolution"])


def slices(run_id: str, step: int, s: dict) -> None:
    """Loss and accuracy on train and test along one random direction."""
    st.subheader("1-D slice along the first direction")
    curves = {split: slice_for(run_id, step, s, split) for split in ("train", "test")}
    if all(c is not None for c in curves.values()):
        chart(figures.curves(curves["train"], curves["test"], x_title="step a along direction 1 (b = 0)",
                             log_y=s["log"]), "ls-slice", result=curves["train"], name=f"slice-{run_id}")


def single_run(run_id: str, s: dict) -> None:
    step = checkpoint_picker(run_id) if s["plane"] == "random directions" else None
    surface = best_surface(run_id, step, s)
    if surface is None:
        return
    trajectory = trajectory_for(run_id, s) if s["plane"] != "random directions" else None
    left, right = st.columns(2)
    chart(figures.contour(surface, trajectory, log=s["log"], clip=s["clip"]), "ls-contour",
          result=surface, name=f"landscape-{run_id}", container=left)
    chart(figures.surface_3d(surface, log=s["log"], clip=s["clip"]), "ls-3d", container=right)
    if trajectory is not None:
        st.caption(
            f"The plane explains {100 * trajectory.explained_variance.sum():.1f}% of the trajectory's "
            "variance. Where the loss measured at a checkpoint differs from the plane's loss under its "
            "marker, the picture passes over ground the run never walked.")
    else:
        slices(run_id, step, s)
    curvature(run_id, step, s)


def curvature(run_id: str, step, s: dict) -> None:
    with st.expander("Curvature: Hessian eigenvalues over training and spectral density"):
        if not st.toggle("Compute (a few hundred Hessian-vector products)", key="ls:hessian"):
            return
        options = dict(split=s["split"], samples=min(s["samples"], 1000))
        sharp = analysis_result("sharpness", run_id, options, recipes.sharpness,
                                label="Top eigenvalue per checkpoint")
        density = analysis_result("density", run_id, dict(options, step=step), recipes.spectral_density,
                                  label="Spectral density")
        left, right = st.columns(2)
        if sharp is not None:
            chart(figures.sharpness(sharp), "ls-sharpness", result=sharp, container=left)
        if density is not None:
            chart(figures.spectral_density(density.grid, density.density), "ls-density", result=density,
                  container=right)
        if step is not None and st.toggle("Local convexity over the plane (one Lanczos run per point)",
                                          key="ls:convexity"):
            ratio = analysis_result("convexity", run_id, dict(step=step, split=s["split"],
                                                              samples=min(s["samples"], 500), span=s["span"]),
                                    recipes.convexity, label="Convexity map")
            if ratio is not None:
                chart(figures.convexity(ratio), "ls-convexity", result=ratio)


def compare_runs(run_ids: list[str], s: dict) -> None:
    """Two to four runs at their last checkpoints, on one colour scale and shared axes, and
    the straight path between the first two (its bump is the barrier of mode connectivity)."""
    surfaces = [best_surface(run_id, None, s) for run_id in run_ids]
    if all(surface is not None for surface in surfaces):
        st.plotly_chart(figures.compare(surfaces, titles=[r[-6:] for r in run_ids], log=s["log"], clip=s["clip"]),
                        key="ls-compare", width="stretch")
    if len(run_ids) == 3 and st.toggle("Plane through the three runs", key="ls:three"):
        three_run_plane(run_ids, s)
    st.subheader("Straight path between the first two runs")
    st.caption("The barrier is the largest bump of the loss above the straight line between the two runs' "
               "losses, for t between 0 and 1. The path is drawn a quarter beyond each run for context (there "
               "the loss leaves the runs' valley); the barrier counts only the part between them.")
    st.latex(r"B = \max_{0 \le t \le 1} \; L\big((1-t)\,w_a + t\,w_b\big) - \big((1-t)\,L(w_a) + t\,L(w_b)\big)")
    paths = {split: analysis_result("interpolation", run_ids[0], dict(other=run_ids[1], split=split,
                                                                        samples=s["samples"]),
                                    recipes.interpolation, label=f"Interpolation ({split})")
             for split in ("train", "test")}
    if all(path is not None for path in paths.values()):
        chart(figures.curves(paths["train"], paths["test"], x_title="t (0: first run, 1: second run)",
                             log_y=s["log"]), "ls-interpolation", result=paths["train"],
              name=f"interpolation-{run_ids[0]}-{run_ids[1]}")


def three_run_plane(run_ids: list[str], s: dict) -> None:
    """The loss on the plane through the three runs' final weights, the runs marked."""
    st.caption("The first run sits at (0, 0) and the second at (1, 0); the second axis is the part of "
               "the third run's offset orthogonal to the first, scaled to the same length.")

    def surface_at(resolution: int):
        options = dict(others=list(run_ids[1:]), split=s["split"], samples=s["samples"], resolution=resolution)
        return analysis_result("three-plane", run_ids[0], options, recipes.three_run_plane,
                               label=f"Plane through three runs {resolution}x{resolution}")

    surface = refined(surface_at, s["resolution"])
    if surface is not None:
        chart(figures.contour(surface, log=s["log"], clip=s["clip"]), "ls-three", result=surface,
              name="plane-" + "-".join(r[-6:] for r in run_ids))


def landscape_page() -> None:
    introduction()
    s = settings()
    compare = st.toggle("Compare runs", key="ls:compare")
    if compare:
        run_ids = run_picker("Runs (two to four)", key="runs", multi=True)
        if len(run_ids) >= 2:
            compare_runs(run_ids, s)
        else:
            st.info("Choose two to four runs.")
        return
    run_id = run_picker()
    if run_id:
        single_run(run_id, s)


landscape_page()
