"""Train: pick data, model and optimizer; train live; watch the curves and the predictions.

The settings live in the URL's query parameters, so a copied link reproduces the
experiment. Training runs as a job; a fragment polls it, so only the live panel reruns.
"""
from __future__ import annotations

import streamlit as st

from engine import data as datasets
from engine import presets as preset_files
from engine.experiment import Experiment, as_text, train_job
from engine.models import ACTIVATIONS, KINDS, PARAMETRIZATIONS
from engine.train import LOSSES, OPTIMIZERS
from app_pages.lab import POLL_S, error_sentence, jobs, owner, store
from viz import landscape as landscape_figures
from viz import lazy as lazy_figures
from viz.predictions import prediction_figure
from viz.training import training_curves

UPLOAD = "your own file"

# (flat key, label, choices or None, help); the type of each setting comes from its default.
MODEL_SETTINGS = [
    ("model.kind", "Model", KINDS, "mlp: fully connected; resmlp: with skip connections; cnn: convolutional (digits, mnist1d)."),
    ("model.width", "Width", None, "Hidden units per layer (channels for the CNN)."),
    ("model.depth", "Depth", None, "Hidden layers; 0 is a linear model."),
    ("model.activation", "Activation", tuple(ACTIVATIONS), None),
    ("model.parametrization", "Parametrization", PARAMETRIZATIONS,
     "Where the width enters: init variance, forward multipliers and per-layer learning rates."),
    ("model.init_scale", "Init scale", None, "Multiplies every initial weight's standard deviation."),
    ("model.alpha", "Output scale alpha", None,
     "Empty: plain model. A number: train alpha*(f(w) - f(w0)); large alpha is lazy, small is rich."),
    ("model.rank", "Initial rank", None, "Empty: full rank. A number: low-rank initial weights."),
    ("model.bias", "Biases", None, None),
    ("model.seed", "Init seed", None, None),
]
TRAIN_SETTINGS = [
    ("train.optimizer", "Optimizer", OPTIMIZERS, "sgd with momentum, adam, or full-batch gradient descent."),
    ("train.lr", "Learning rate", None, None),
    ("train.momentum", "Momentum", None, "SGD only."),
    ("train.weight_decay", "Weight decay", None, None),
    ("train.batch_size", "Batch size", None, None),
    ("train.steps", "Steps", None, None),
    ("train.loss", "Loss", LOSSES, "auto: cross-entropy for classes, MSE for regression."),
    ("train.eval_every", "Evaluate every", None, "Steps between test evaluations."),
    ("train.checkpoint_every", "Checkpoint every", None, "Steps between saved weights."),
    ("train.seed", "Batch seed", None, None),
    ("train.adversarial_eps", "Adversarial eps (PGD)", None,
     "0: standard training. A radius, in input units: every step trains on the worst case of each "
     "input within this L∞ box, found by projected gradient ascent (Madry et al. 2018). Robust "
     "models have smoother, more input-aligned level sets: compare them on the Level sets page."),
    ("train.adversarial_steps", "PGD steps", None,
     "Attack steps per training step; each costs one more forward and backward pass."),
    ("train.adversarial_step_size", "PGD step size", None, "Per coordinate. Empty: 2.5 eps / steps."),
]
ADVERSARIAL_KEYS = {"train.adversarial_eps", "train.adversarial_steps", "train.adversarial_step_size"}
WATCH_SETTINGS = [
    ("watch.sharpness_every", "Sharpness every (steps)", None,
     "0: off. The top Hessian eigenvalue every this many steps, beside 2 / learning rate: "
     "under gradient descent it climbs to the edge of stability (Cohen et al. 2021)."),
    ("watch.lazy", "Lazy/rich measures", None,
     "At every checkpoint: how far the weights, the NTK and the last hidden layer have moved from init."),
    ("watch.twin", "Linearized twin", None,
     "Train the network's linearization at init alongside, with the same optimizer and batches."),
    ("watch.samples", "Probe samples", None, "The fixed training samples the measures use."),
]


# ---------------------------------------------------------------- settings


def url_settings() -> dict[str, str]:
    """The settings the page was opened with (read once per browser session)."""
    if "url_settings" not in st.session_state:
        st.session_state.url_settings = {k: v for k, v in st.query_params.items()
                                         if k == "data" or "." in k}
    return st.session_state.url_settings


def setting_widget(key: str, label: str, default, choices=None, help=None) -> str:
    """One setting's widget; returns its value as text (the flat form)."""
    wkey = f"setting:{key}"
    if wkey not in st.session_state:
        text = url_settings().get(key, as_text(default))
        st.session_state[wkey] = _initial(text, default, choices)
    if choices is not None:
        value = st.selectbox(label, choices, key=wkey, help=help)
    elif isinstance(default, bool):
        value = st.checkbox(label, key=wkey, help=help)
    elif isinstance(default, int):
        value = st.number_input(label, step=1, key=wkey, help=help)
    else:
        value = st.text_input(label, key=wkey, help=help)
    return as_text(value)


def _initial(text: str, default, choices):
    """The widget's first value: the URL's text where it fits the widget, else the default."""
    if choices is not None:
        return text if text in choices else default
    if isinstance(default, bool):
        return text.lower() in ("true", "1", "yes", "on")
    if isinstance(default, int):
        try:
            return int(text)
        except ValueError:
            return default
    return text


def settings_sidebar() -> tuple[Experiment, dict[str, str], object]:
    """Draw the settings; return the experiment, a sentence per bad setting, and uploaded data."""
    flat, slots, uploaded = {}, {}, None
    defaults = Experiment()
    with st.sidebar:
        st.header("Data")
        names = datasets.names() + [UPLOAD]
        flat["data"] = setting_widget("data", "Dataset", defaults.data, names)
        slots["data"] = st.empty()
        if flat["data"] == UPLOAD:
            uploaded = upload_widget(slots["data"])
        else:
            for option, default in datasets.options(flat["data"]).items():
                key = f"data.{option}"
                flat[key] = setting_widget(key, option.replace("_", " ").capitalize(), default)
                slots[key] = st.empty()
        for title, rows, values in (("Model", MODEL_SETTINGS, defaults.model),
                                    ("Training", TRAIN_SETTINGS, defaults.train),
                                    ("Watch while training", WATCH_SETTINGS, defaults.watch)):
            st.header(title)
            for key, label, choices, help in rows:
                if key in ADVERSARIAL_KEYS and not classifies(flat["data"], uploaded):
                    continue  # attacks on class confidence: classification only
                default = getattr(values, key.split(".", 1)[1])
                flat[key] = setting_widget(key, label, default, choices, help)
                slots[key] = st.empty()
    if flat["data"] == UPLOAD:
        flat["data"] = "moons"  # the settings parser needs a built-in; the upload replaces it
    experiment, errors = Experiment.from_flat(flat)
    errors |= experiment.errors()
    for key, sentence in errors.items():
        slot = slots.get(key)
        (slot.error if slot else st.sidebar.error)(sentence)
    share_settings(experiment, uploaded is not None)
    return experiment, errors, uploaded


@st.cache_data(show_spinner=False)
def builtin_task(name: str) -> str:
    """A built-in dataset's task (the same for all its options)."""
    return datasets.load(name).task


def classifies(name: str, uploaded) -> bool:
    """Whether the chosen data is a classification (an upload knows; a built-in is loaded once)."""
    if uploaded is not None:
        return uploaded.task == "classification"
    return name in datasets.names() and builtin_task(name) == "classification"


def upload_widget(slot):
    """A .npz or .csv file of the user's own data, checked; None until a valid one is given."""
    file = st.file_uploader("Data file (.npz or .csv)", type=["npz", "csv"])
    if file is None:
        slot.info("An .npz with x_train, y_train, x_test, y_test (or x, y), or a .csv whose last column is the target.")
        return None
    try:
        reader = datasets.from_npz if file.name.lower().endswith(".npz") else datasets.from_csv
        dataset = reader(file)
    except ValueError as exc:
        slot.error(error_sentence(exc))
        return None
    slot.success(dataset.describe())
    return dataset


def share_settings(experiment: Experiment, custom_data: bool) -> None:
    """Write the settings that differ from the defaults into the URL."""
    defaults = Experiment(experiment.data, dict(datasets.options(experiment.data))).to_flat()
    for key, text in experiment.to_flat().items():
        if custom_data and key.startswith("data"):
            continue
        if defaults.get(key) == text and key != "data":
            st.query_params.pop(key, None)
        else:
            st.query_params[key] = text


# ---------------------------------------------------------------- training


def controls(experiment: Experiment, errors: dict, uploaded) -> None:
    running = current_job() is not None and not current_job().done
    left, right, name_col = st.columns([1, 1, 4])
    name = name_col.text_input("Run name", placeholder="(a name is made from the settings)",
                               label_visibility="collapsed")
    start = left.button("Start", type="primary", disabled=bool(errors) or running, width="stretch")
    stop = right.button("Stop", disabled=not running, width="stretch")
    if errors:
        st.error("Fix the settings marked in the sidebar to start training.")
    if start:
        job_id = jobs().submit(train_job, owner=owner(), kind="train", label=name or experiment.data,
                               experiment=experiment, store=store(), name=name.strip(),
                               dataset=uploaded)
        st.session_state.job_id = job_id
        st.query_params["job"] = job_id
        st.rerun()
    if stop:
        jobs().cancel(st.session_state.job_id, owner())


def current_job():
    """This session's latest training job (found again through the URL after a reload)."""
    job_id = st.session_state.get("job_id") or st.query_params.get("job")
    if not job_id:
        return None
    state = jobs().get(job_id, owner())
    if state is not None:
        st.session_state.job_id = job_id
    return state


def live_panel() -> None:
    """The job's progress, curves and predictions; polls while the job runs."""
    state = current_job()
    if state is None:
        st.info("Choose settings in the sidebar and press Start.")
        return
    st.fragment(run_every=None if state.done else POLL_S)(_draw_job)()


def _draw_job() -> None:
    state = current_job()
    if state is None:
        return
    partial = state.partial
    status_line(state)
    history, view = partial.get("history"), partial.get("view")
    left, right = st.columns(2)
    if history is not None:
        left.plotly_chart(training_curves(history), key="live-curves", width="stretch")
    if view is not None:
        right.plotly_chart(prediction_figure(view), key="live-view", width="stretch")
    watched_charts(partial.get("watch", {}))
    if state.done and st.session_state.get("drawn_done") != state.id:
        st.session_state.drawn_done = state.id
        st.rerun()  # the whole page, so the fragment stops polling and the buttons update


def watched_charts(watched: dict) -> None:
    """What the probes measure while the run trains (see the sidebar's "Watch while training")."""
    left, right = st.columns(2)
    if "sharpness" in watched:
        left.plotly_chart(landscape_figures.sharpness(watched["sharpness"], title="Sharpness (top Hessian eigenvalue)"),
                          key="live-sharpness", width="stretch")
    if "lazy" in watched:
        figure = lazy_figures.measures_figure({"this run": watched["lazy"]}, columns=2, title="Lazy or rich")
        right.plotly_chart(figure, key="live-lazy", width="stretch")


def status_line(state) -> None:
    partial = state.partial
    step, speed = partial.get("step", 0), partial.get("steps_per_second", 0.0)
    device, dataset = partial.get("device", "?"), partial.get("dataset", "")
    text = (f"{state.status} · step {step:,} · {speed:,.0f} steps/s · {device} · {dataset}"
            if "step" in partial else state.message or "Preparing the data and the model…")
    st.progress(min(max(state.progress, 0.0), 1.0), text=text)
    if state.status == "failed":
        st.error(state.error or "Training failed.")
    elif state.result and state.result.get("status") == "diverged":
        st.warning(state.result["message"])
    elif state.status == "done":
        st.success(f"{state.result['message']} Saved as a run: open it on the Runs page.")
    elif state.status == "cancelled":
        st.info(f"Stopped at step {step:,}; the run is saved.")


# ---------------------------------------------------------------- presets

LENS_PAGES = {"landscape": ("app_pages/landscape.py", "Loss landscape"), "ntk": ("app_pages/ntk.py", "Neural tangent kernel"),
              "lazy": ("app_pages/lazy.py", "Lazy versus rich"),
              "geometry": ("app_pages/geometry.py", "Representation geometry"),
              "levelset": ("app_pages/levelset.py", "Level sets"), "pruning": ("app_pages/pruning.py", "Pruning")}


@st.cache_data
def known_presets():
    return preset_files.all_presets()


def preset_panel() -> None:
    """Train the runs of a preset that reproduces a known result, then open its lens."""
    with st.expander("Presets: reproduce a known result in one click"):
        chosen = st.selectbox("Preset", known_presets(), format_func=lambda p: p.title, key="preset")
        st.write(chosen.description)
        st.caption("Runs: " + "; ".join(run.name for run in chosen.runs))
        if st.button(f"Train {'these runs' if len(chosen.runs) > 1 else 'this run'}", key="preset-start"):
            st.session_state.preset_jobs = [
                jobs().submit(train_job, owner=owner(), kind="train", label=run.name, experiment=run.experiment,
                              store=store(), name=f"{chosen.title}: {run.name}")
                for run in chosen.runs]
            st.session_state.preset_lens = chosen.lens
    if st.session_state.get("preset_jobs"):
        states = [jobs().get(j, owner()) for j in st.session_state.preset_jobs]
        running = any(state is not None and not state.done for state in states)
        st.fragment(run_every=POLL_S if running else None)(_preset_progress)()


def _preset_progress() -> None:
    states = [jobs().get(j, owner()) for j in st.session_state.preset_jobs]
    for state in states:
        if state is not None:
            st.progress(min(max(state.progress, 0.0), 1.0), text=f"{state.label}: {state.status} · {state.message}")
    if all(state is None or state.done for state in states):
        page = LENS_PAGES.get(st.session_state.get("preset_lens"))
        if page:
            st.page_link(page[0], label=f"Open {page[1]} (choose the runs there; compare mode takes several)",
                         icon=":material/arrow_forward:")
        if st.session_state.get("preset_drawn") != st.session_state.preset_jobs:
            st.session_state.preset_drawn = st.session_state.preset_jobs
            st.rerun()


def train_page() -> None:
    st.title("Train")
    owner()
    experiment, errors, uploaded = settings_sidebar()
    preset_panel()
    controls(experiment, errors, uploaded)
    live_panel()


train_page()
