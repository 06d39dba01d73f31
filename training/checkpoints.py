"""Per-epoch checkpoints of a run, so a killed `fit` resumes where it stopped.

`OUTPUT_DIR/checkpoint/` holds `epoch-NNNN.keras` files (the model with its
optimizer state, written atomically with a sha256 sidecar), the arrays of the
run's callbacks' state (`epoch-NNNN.callbacks.npz`, where a callback keeps
weights) and `latest.json`, which names the last complete checkpoint. It is
replaced atomically only after the files it names are in place, and older
files are removed only after that, so a crash at any point leaves a loadable
checkpoint behind.

`Checkpointer` is the callback that writes them: the last in `model.fit`'s
list, so that every other callback has updated its state for the epoch when
the checkpoint takes it (Keras' `BackupAndRestore` is the model). A checkpoint
carries what the run needs to go on exactly as an uninterrupted one: the
weights, the optimizer's state, the seed generators' states, the history, the
backend's global random state, and the state of the user's Keras callbacks
that keep any (`EarlyStopping`, `ReduceLROnPlateau`, `ModelCheckpoint`'s best
value, `CSVLogger`'s file), and whether one of them stopped the run.
"""

import collections
import dataclasses
import glob
import json
import os
import shutil

import keras
import numpy as np

import zoo
from training import seeding
from training.outputs import atomic_path, write_json
from zoo import ZooError

DIRNAME = "checkpoint"
POINTER = "latest.json"
# Settings a run can change on resume: how long to train, how to print it and
# how it shares the GPU.
RESUMABLE = ("epochs", "verbose", "overwrite", "gpu_memory")

# The attributes of Keras' stateful callbacks that a checkpoint carries. Keras
# resets them in `on_train_begin`, so they are restored after it.
CALLBACK_STATE = {
    keras.callbacks.EarlyStopping: ("wait", "stopped_epoch", "best", "best_epoch"),
    keras.callbacks.ReduceLROnPlateau: ("wait", "best", "cooldown_counter"),
    keras.callbacks.ModelCheckpoint: ("best",),
}


def save(output_dir, net, *, epoch, history, config, run=None, callbacks=(), stopped=False) -> None:
    """Writes the checkpoint after `epoch` (1-based) epochs.

    Args:
        output_dir: the run's output dir.
        net: the model, compiled.
        epoch: epochs completed.
        history: the run's history so far.
        config: the run's `FitConfig`.
        run: what else makes the run the same run (its model and data), as
            JSON. Defaults to `None`.
        callbacks: the user's Keras callbacks, whose state is saved.
            Defaults to `()`.
        stopped: whether a callback stopped training after this epoch.
            Defaults to `False`.
    """
    directory = os.path.join(output_dir, DIRNAME)
    os.makedirs(directory, exist_ok=True)
    prefix = f"epoch-{epoch:04d}"
    zoo.save_model(net, os.path.join(directory, f"{prefix}.keras"))
    states, arrays = _callback_states(callbacks)
    arrays_name = f"{prefix}.callbacks.npz" if arrays else None
    if arrays:
        with atomic_path(os.path.join(directory, arrays_name)) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
    write_json(
        os.path.join(directory, POINTER),
        {
            "epoch": epoch,
            "model": f"{prefix}.keras",
            "history": history,
            "config": _identity(config, run),
            # Seed generators' states are variables a .keras file does not hold;
            # without them, dropout after a resume would draw other masks.
            "seed_states": [
                keras.ops.convert_to_numpy(v.value).tolist() for v in _unsaved_variables(net)
            ],
            "global_rng_state": seeding.global_rng_state(),
            "callbacks": states,
            "callback_arrays": arrays_name,
            "stopped": stopped,
        },
    )
    for old in glob.glob(os.path.join(directory, "epoch-*")):
        if not os.path.basename(old).startswith(f"{prefix}."):
            os.remove(old)


@dataclasses.dataclass
class Checkpoint:
    """A loaded checkpoint: the model after `epoch` epochs and what it needs to
    go on exactly as an uninterrupted run would."""

    net: keras.Model
    epoch: int
    history: dict
    #: For `seeding.set_global_rng_state`, once Keras has set up the `fit`
    #: call (its symbolic build draws dropout masks on torch).
    global_rng_state: list | None
    #: Per user callback, by `_callback_key`: its state, for `restore_callbacks`.
    callback_states: dict = dataclasses.field(default_factory=dict)
    #: Whether a callback (`EarlyStopping`) ended training at `epoch`.
    stopped: bool = False


def load(output_dir, config, run=None) -> Checkpoint | None:
    """Returns the last checkpoint in `output_dir`, or `None`.

    A checkpoint of the same settings resumes, with `overwrite` or without,
    so that the command that was killed resumes when run again. One of other
    settings, or one that does not load, is ignored with `overwrite`, and the
    new run's first checkpoint replaces it.

    Raises:
        ZooError: the checkpoint is of a run with other settings (or on a
            changed data set) or does not load, and `config.overwrite` is off.
    """
    directory = os.path.join(output_dir, DIRNAME)
    pointer = os.path.join(directory, POINTER)
    if not os.path.exists(pointer):
        return None
    with open(pointer) as f:
        state = json.load(f)
    identity = _identity(config, run)
    changed = sorted(
        key
        for key in {*state["config"], *identity}
        if state["config"].get(key) != identity.get(key)
    )
    if changed and config.overwrite:
        return None
    if changed:
        raise ZooError(_refusal(output_dir, changed, state["config"], identity))
    try:
        net = zoo.load_model(os.path.join(directory, state["model"]))
    except ZooError as error:
        if config.overwrite:
            return None
        raise ZooError(
            f"{error}. To start the run over, pass overwrite=True (--overwrite)"
        ) from error
    for variable, value in zip(_unsaved_variables(net), state["seed_states"], strict=True):
        variable.assign(np.asarray(value, dtype=variable.dtype))
    states = state.get("callbacks", {})
    if state.get("callback_arrays"):
        with np.load(os.path.join(directory, state["callback_arrays"]), allow_pickle=False) as f:
            arrays = {name: f[name] for name in f.files}
        for key, value in states.items():
            count = value.get("best_weights")
            if count is not None:
                value["best_weights"] = [arrays[f"{key}/{i}"] for i in range(count)]
    return Checkpoint(
        net,
        state["epoch"],
        state["history"],
        state["global_rng_state"],
        states,
        state.get("stopped", False),
    )


def remove(output_dir) -> None:
    """Deletes the checkpoints of a finished (or restarted) run."""
    shutil.rmtree(os.path.join(output_dir, DIRNAME), ignore_errors=True)


class Checkpointer(keras.callbacks.Callback):
    """Writes a checkpoint after every epoch, and puts the user's callbacks
    back in the state a resumed checkpoint holds when training begins.

    It must be the last callback in the list: its `on_train_begin` restores
    state after the callbacks' own reset it, and its `on_epoch_end` takes
    their state once they have updated it for the epoch.

    Args:
        output_dir: the run's output dir.
        config: the run's `FitConfig`.
        run: the run's model and data, as JSON, for the checkpoint's identity.
        callbacks: the user's Keras callbacks.
        resumed: the `Checkpoint` the run resumes from, or `None`.
        skip: called at the end of an epoch; where it returns true (a NaN
            loss), no checkpoint is written.
    """

    def __init__(self, output_dir, config, run, callbacks, resumed=None, skip=lambda: False):
        super().__init__()
        self.output_dir, self.config, self.run = output_dir, config, run
        self.callbacks = list(callbacks)
        self.resumed = resumed
        self.skip = skip
        self.history = dict(resumed.history) if resumed else {}

    def on_train_begin(self, logs=None):
        if self.resumed:
            restore_callbacks(self.callbacks, self.resumed.callback_states)

    def on_epoch_end(self, epoch, logs=None):
        if self.skip():
            return
        for key, value in (logs or {}).items():
            self.history[key] = [*self.history.get(key, []), float(value)]
        save(
            self.output_dir,
            self.model,
            epoch=epoch + 1,
            history=self.history,
            config=self.config,
            run=self.run,
            callbacks=self.callbacks,
            stopped=bool(self.model.stop_training),
        )


def rewind_files(callbacks, states) -> None:
    """Before a resumed `fit`: cuts each `CSVLogger`'s file back to the rows of
    the checkpoint's epochs, and has the logger append to it.

    The rows of epochs run after the checkpoint, before the run was killed,
    are run again.
    """
    for key, callback in _keyed(callbacks):
        size = states.get(key, {}).get("size")
        if not isinstance(callback, keras.callbacks.CSVLogger) or size is None:
            continue
        if os.path.exists(callback.filename) and os.path.getsize(callback.filename) >= size:
            with open(callback.filename, "r+b") as f:
                f.truncate(size)
        callback.append = True


def restore_callbacks(callbacks, states) -> None:
    """Puts each callback in the state a checkpoint saved for it."""
    for key, callback in _keyed(callbacks):
        state = states.get(key)
        if state is None or isinstance(callback, keras.callbacks.CSVLogger):
            continue
        for name in _stateful_attributes(callback):
            if name in state:
                setattr(callback, name, state[name])
        if state.get("best_weights") is not None:
            callback.best_weights = list(state["best_weights"])


def _callback_states(callbacks):
    """The JSON state and the arrays of each stateful callback."""
    states, arrays = {}, {}
    for key, callback in _keyed(callbacks):
        if isinstance(callback, keras.callbacks.CSVLogger):
            if callback.csv_file is not None and not callback.csv_file.closed:
                callback.csv_file.flush()
            exists = os.path.exists(callback.filename)
            states[key] = {"size": os.path.getsize(callback.filename) if exists else 0}
            continue
        names = _stateful_attributes(callback)
        if not names:
            continue
        states[key] = {name: _plain(getattr(callback, name, None)) for name in names}
        weights = getattr(callback, "best_weights", None)
        if isinstance(callback, keras.callbacks.EarlyStopping) and weights is not None:
            states[key]["best_weights"] = len(weights)
            arrays.update({f"{key}/{i}": np.asarray(w) for i, w in enumerate(weights)})
    return states, arrays


def _keyed(callbacks):
    """`(key, callback)` pairs: the class name and its count so far, so that a
    resumed run matches the state of its second `EarlyStopping` to its second."""
    seen = collections.Counter()
    for callback in callbacks:
        name = type(callback).__name__
        yield f"{name}#{seen[name]}", callback
        seen[name] += 1


def _stateful_attributes(callback):
    return next((names for cls, names in CALLBACK_STATE.items() if isinstance(callback, cls)), ())


def _plain(value):
    """A callback attribute as JSON: numpy numbers as Python ones."""
    if isinstance(value, np.generic | np.ndarray):
        return value.item() if np.ndim(value) == 0 else value.tolist()
    return value


def _identity(config, run=None):
    """The settings that make two runs the same run, as JSON."""
    settings = {k: v for k, v in config.to_dict().items() if k not in RESUMABLE}
    return json.loads(json.dumps({**settings, **(run or {})}, default=str))


def _refusal(output_dir, changed, saved, identity):
    path = (saved.get("data") or {}).get("path")
    if "data" in changed and path and path == (identity.get("data") or {}).get("path"):
        return (
            f"Output dir {output_dir!r} holds an interrupted run on {saved['data']['name']!r}, "
            f"which has changed since ({saved['data'].get('fingerprint')}; now "
            f"{identity['data'].get('fingerprint')}); expected the same data to resume it, or "
            "pass overwrite=True (--overwrite) to start over"
        )
    return (
        f"Output dir {output_dir!r} holds an interrupted run with other settings "
        f"({', '.join(changed)}); expected the same command to resume it, or pass "
        "overwrite=True (--overwrite) to start over. Received: "
        + ", ".join(f"{k}={identity.get(k)!r}" for k in changed)
    )


def _unsaved_variables(net):
    saved = {id(v) for v in net.weights}
    if net.optimizer is not None:
        saved |= {id(v) for v in net.optimizer.variables}
    return [v for v in net.variables if id(v) not in saved and v.name == "seed_generator_state"]
