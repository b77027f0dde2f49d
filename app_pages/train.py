"""Train: pick data, model and optimizer; train live; watch the curves and the predictions.

The settings live in the URL's query parameters, so a copied link reproduces the
experiment; what the page cannot read from a link is shown as given, with its sentence, and
keeps Start off (nothing is silently replaced by a default). The link also names the run
(`run=`): another browser watches it live, read-only. Training runs as a job; a fragment
polls it, so only the live panel reruns.
"""
from __future__ import annotations

import streamlit as st

from app_pages.lab import (
    POLL_S,
    error_sentence,
    history_version,
    is_mine,
    jobs,
    kept_figure,
    outcome,
    owner,
    status_text,
    steady,
    store,
    submit_training,
    training_of_run,
)
from engine import data as datasets
from engine import presets as preset_files
from engine.experiment import Experiment, as_text, parse
from engine.models import ACTIVATIONS, KINDS, PARAMETRIZATIONS
from engine.train import LOSSES, OPTIMIZERS
from viz import landscape as landscape_figures
from viz import lazy as lazy_figures
from viz.predictions import prediction_figure
from viz.training import training_curves

UPLOAD = "your own file"

# (flat key, label, choices or None, help); the type of each setting comes from its default.
MODEL_SETTINGS = [
    ("model.kind", "Model", KINDS, "mlp: fully connected; resmlp: with skip connections; cnn: convolutional (digits, mnist1d); "
     "resnet, resnet-noskip: He et al.'s ResNet with and without skips (depth blocks per stage: 3 is ResNet-20); "
     "vgg: VGG-style with BatchNorm."),
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


def shown_as_text() -> set:
    """The settings whose link text did not fit their widget (a number field given "abc", a
    checkbox given "maybe"): for this session they are text fields that show the text, so
    the sentence under them says what is wrong with what the user sees."""
    return st.session_state.setdefault("settings_as_text", set())


UNFIT = object()  # a link's text that the setting's widget cannot show


def setting_widget(key: str, label: str, default, choices=None, help=None) -> str:
    """One setting's widget; returns its value as text (the flat form).

    Its first value is the link's text, never a silent stand-in: a choice the lab does not
    offer stays selected beside the real ones, and a text that a number field or a checkbox
    cannot hold makes the widget a text field. Either way the settings' check says why.
    """
    wkey = f"setting:{key}"
    if wkey not in st.session_state:
        text = url_settings().get(key, as_text(default))
        value = fitted(text, default, choices)
        if value is UNFIT:
            value = text
            if choices is None:
                shown_as_text().add(key)
        st.session_state[wkey] = value
    if choices is not None:
        current = st.session_state[wkey]
        options = list(choices) + ([current] if current not in choices else [])
        value = st.selectbox(label, options, key=wkey, help=help)
    elif key in shown_as_text():
        value = st.text_input(label, key=wkey, help=help)
    elif isinstance(default, bool):
        value = st.checkbox(label, key=wkey, help=help)
    elif isinstance(default, int):
        value = st.number_input(label, step=1, key=wkey, help=help)
    else:
        value = st.text_input(label, key=wkey, help=help)
    return as_text(value)


def fitted(text: str, default, choices):
    """The link's text as the widget's value, or UNFIT where the widget cannot hold it."""
    if choices is not None:
        return text if text in choices else UNFIT
    if isinstance(default, (bool, int)):
        try:
            return parse(text, default)
        except ValueError:
            return UNFIT
    return text


def settings_sidebar() -> tuple[Experiment, dict[str, str], object]:
    """Draw the settings; return the experiment, a sentence per reason it cannot train, and
    the uploaded data. Nothing is replaced behind the user's back: an upload that is missing
    or unreadable, a link's value that cannot be read, are each a reason."""
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
            for option, default in data_options(flat["data"]).items():
                key = f"data.{option}"
                flat[key] = setting_widget(key, option.replace("_", " ").capitalize(), default)
                slots[key] = st.empty()
        for title, rows, values in (("Model", MODEL_SETTINGS, defaults.model),
                                    ("Training", TRAIN_SETTINGS, defaults.train),
                                    ("Watch while training", WATCH_SETTINGS, defaults.watch)):
            st.header(title)
            for key, label, choices, help in rows:
                if key in ADVERSARIAL_KEYS and not classifies(flat["data"], uploaded) and key not in url_settings():
                    continue  # attacks on class confidence: classification only
                default = getattr(values, key.split(".", 1)[1])
                flat[key] = setting_widget(key, label, default, choices, help)
                slots[key] = st.empty()
        flat |= unshown_link_settings(flat)
    experiment, errors = Experiment.from_flat(flat)
    errors |= experiment.errors()
    if flat["data"] == UPLOAD:
        errors.pop("data", None)
        if uploaded is None:  # the upload's own slot says what is wrong with the file
            errors["data"] = "Upload a valid data file (.npz or .csv) to train on your own data."
    elif not classifies(flat["data"], uploaded) and experiment.train.adversarial:
        errors["train.adversarial_eps"] = "Adversarial training (PGD) needs a classification dataset."
    for key, sentence in errors.items():
        if key == "data" and flat["data"] == UPLOAD:
            continue
        slot = slots.get(key)
        (slot.error if slot else st.sidebar.error)(sentence)
    share_settings(experiment, uploaded is not None)
    return experiment, errors, uploaded


def data_options(name: str) -> dict:
    """A built-in dataset's options and their defaults; none for a name the lab lacks (the
    settings' check says so)."""
    return datasets.options(name) if name in datasets.names() else {}


def unshown_link_settings(flat: dict) -> dict:
    """The link's settings that no widget shows (`model.base_width`, a misspelt key): they
    apply as given, or their sentence disables Start until the user drops them. The link's
    options of another dataset than the chosen one are not these: they went with the change."""
    dropped = st.session_state.setdefault("dropped_link_settings", set())
    link_data = url_settings().get("data", Experiment().data)
    unshown = {k: v for k, v in url_settings().items()
               if k not in flat and k not in dropped and not (k.startswith("data.") and flat["data"] != link_data)}
    if unshown:
        st.caption("From the link, without a field here: " + ", ".join(f"{k}={v}" for k, v in unshown.items()))
        if st.button("Drop these", key="drop-link-settings"):
            dropped.update(unshown)
            st.rerun()
    return unshown


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
    """Write the settings that differ from the defaults into the URL (an upload as
    `data=your own file`: a link cannot carry the file, and says so)."""
    options = {} if custom_data else data_options(experiment.data)
    defaults = Experiment(experiment.data, dict(options)).to_flat()
    flat = experiment.to_flat()
    for key in [k for k in st.query_params if (k == "data" or "." in k) and k not in flat]:
        del st.query_params[key]  # another dataset's options, a dropped link setting
    for key, text in flat.items():
        if defaults.get(key) == text and key != "data":
            st.query_params.pop(key, None)
        else:
            st.query_params[key] = text


# ---------------------------------------------------------------- training


def controls(experiment: Experiment, errors: dict, uploaded) -> None:
    """Start (off, with the reasons beside it, until the settings describe something
    trainable), Stop (for this session's own running training only) and the run's name."""
    state = current_job()
    running = is_mine(state) and not state.done
    left, right, name_col = st.columns([1, 1, 4])
    name = name_col.text_input("Run name", placeholder="(a name is made from the settings)",
                               label_visibility="collapsed")
    start = left.button("Start", type="primary", disabled=bool(errors) or running, width="stretch")
    stop = right.button("Stop", disabled=not running, width="stretch")
    if errors:
        st.error("Start is off until the settings can train: " + " ".join(errors.values()))
    if start:
        label = name or (uploaded.name if uploaded is not None else experiment.data)
        st.session_state.job_id = submit_training(label, experiment, name.strip(), uploaded)
        st.rerun()
    if stop and running:
        jobs().cancel(state.id, owner())


def current_job():
    """The training this page shows: this session's latest, else the running training of the
    run the link names (read-only: only the session that started it may stop it)."""
    job_id = st.session_state.get("job_id")
    state = jobs().get(job_id, owner()) if job_id else None
    if state is None and st.query_params.get("run"):
        state = training_of_run(st.query_params["run"])
    if "job" in st.query_params:
        del st.query_params["job"]  # links of older versions named the job: a run id does now
    return state


def live_panel() -> None:
    """The job's progress, curves and predictions; polls while the job runs."""
    state = current_job()
    if state is None:
        linked_run()
        return
    with steady("train-live"):
        st.fragment(run_every=None if state.done else POLL_S)(_draw_job)()


def linked_run() -> None:
    """What the page says when the link names a run that no job of this server trains."""
    run_id = st.query_params.get("run")
    if not run_id:
        st.info("Choose settings in the sidebar and press Start.")
        return
    if run_id in {r.id for r in store().list()}:
        st.info("The link's run is not training on this server any more; its settings are in the sidebar.")
        st.page_link("app_pages/runs.py", label="Open the run on the Runs page", icon=":material/arrow_forward:",
                     query_params={"runs": run_id})
    else:
        st.warning(f"The link names a run ({run_id}) that this lab does not have; its settings are in the sidebar.")


def _draw_job() -> None:
    state = current_job()
    if state is None:
        return
    partial = state.partial
    if is_mine(state) and partial.get("run_id"):
        st.query_params["run"] = partial["run_id"]  # a link to this page shows this run (read-only)
    if not is_mine(state):
        st.caption("The link's run, trained in another browser: it can be watched here and stopped only there.")
    status_line(state)
    history, view = partial.get("history"), partial.get("view")
    left, right = st.columns(2)
    if history is not None:
        curves = kept_figure("train:curves", (state.id, history_version(history)), lambda: training_curves(history))
        left.plotly_chart(curves, key="live-curves", width="stretch")
    if view is not None:
        predictions = kept_figure("train:view", (state.id, partial.get("view_step")), lambda: prediction_figure(view))
        right.plotly_chart(predictions, key="live-view", width="stretch")
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
    """The job's progress bar, saying how it stands (running, done, diverged, cancelled), and
    how it ended. A job that failed before its first step has no bar: only its reason."""
    partial = state.partial
    word, step = outcome(state)
    text = status_text(state)
    if "steps_per_second" in partial:
        text += (f" · {partial['steps_per_second']:,.0f} steps/s · {partial.get('device', '?')}"
                 f" · {partial.get('dataset', '')}")
    if not (word == "failed" and step is None):
        st.progress(min(max(state.progress, 0.0), 1.0), text=text)
    if word == "failed":
        st.error(state.error or "Training failed.")
    elif word == "diverged":
        st.warning(state.result["message"])
    elif word == "done":
        st.success(f"{state.result['message']} Saved as a run: open it on the Runs page.")
    elif word == "cancelled":
        st.info(f"Stopped at step {step or 0:,}; the run is saved.")


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
            st.session_state.preset_jobs = [submit_training(run.name, run.experiment, f"{chosen.title}: {run.name}")
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
            st.progress(min(max(state.progress, 0.0), 1.0), text=status_text(state, state.label))
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
