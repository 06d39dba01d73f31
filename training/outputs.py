"""What a run writes, written atomically: a crash never leaves a half-written
file under its final name."""

import glob
import hashlib
import json
import os
import shutil
import tempfile

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import zoo
from zoo import ZooError
from zoo.saving import atomic_path

# A run directory holding this file is finished and is not overwritten silently.
FINISHED_MARKER = "metrics.json"
# What a run writes epoch by epoch, and so what a run starting over clears: an
# earlier run's logs would otherwise mix with its own.
EPOCH_LOGS = ("tensorboard", "samples_epoch_*.png")


def prepare_dir(path, *, overwrite: bool, resuming: bool = False) -> str:
    """Creates `path` and checks it can take a run's files, before any training.

    A run that starts at its first epoch (not `resuming`) clears the epoch
    logs (`EPOCH_LOGS`) of the run it replaces; a finished run's model,
    history and metrics stay until the new run writes its own.
    """
    path = os.fspath(path)
    if os.path.exists(os.path.join(path, FINISHED_MARKER)) and not overwrite:
        raise ZooError(
            f"Output dir {path!r} holds a finished run; expected a new or empty "
            "dir, or pass overwrite=True (--overwrite) to replace it"
        )
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise ZooError(
            f"Expected a writable output dir. Received: {path!r} ({exc.strerror})"
        ) from exc
    if not resuming:
        for pattern in EPOCH_LOGS:
            for old in glob.glob(os.path.join(glob.escape(path), pattern)):
                if os.path.isdir(old) and not os.path.islink(old):
                    shutil.rmtree(old)
                else:
                    os.remove(old)
    return path


def sha256(path) -> str:
    """The hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def read_run_config(model_path) -> dict | None:
    """The `config.json` of the run that wrote `model_path`, if beside it."""
    path = os.path.join(os.path.dirname(os.path.abspath(model_path)), "config.json")
    try:
        with open(path) as f:
            run = json.load(f)
    except (OSError, ValueError):
        return None
    return run if isinstance(run, dict) and isinstance(run.get("seed"), int) else None


def write_json(path, obj) -> None:
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def save_model(model, path) -> None:
    """Writes `path` and its `path.sha256`, which `zoo.load_model` checks."""
    zoo.save_model(model, path)


def plot_history(history: dict, path, *, title: str) -> None:
    """Plots each metric's train and validation curve per epoch into one PNG."""
    metrics = [name for name in history if not name.startswith("val_")]
    figure = new_figure(figsize=(5 * len(metrics), 4), layout="constrained")
    figure.suptitle(title)
    for ax, name in zip(figure.subplots(1, len(metrics), squeeze=False)[0], metrics, strict=True):
        epochs = range(1, len(history[name]) + 1)
        ax.plot(epochs, history[name], marker="o", label="train")
        if f"val_{name}" in history:
            ax.plot(epochs, history[f"val_{name}"], marker="o", label="validation")
        ax.set(xlabel="epoch", ylabel=name, title=name)
        ax.grid(alpha=0.3)
        ax.legend()
    save_png(figure, path, dpi=100)


def new_figure(**kwargs) -> Figure:
    """A matplotlib Figure on the Agg canvas: no pyplot, no global state."""
    figure = Figure(**kwargs)
    FigureCanvasAgg(figure)
    return figure


def save_png(figure, path, *, dpi) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi)
