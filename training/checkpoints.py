"""Per-epoch checkpoints of a run, so a killed `fit` resumes where it stopped.

`OUTPUT_DIR/checkpoint/` holds `epoch-NNNN.keras` files (the model with its
optimizer state, written atomically with a sha256 sidecar) and `latest.json`,
which names the last complete one. `latest.json` is replaced atomically only
after its model file is in place, and older files are removed only after that,
so a crash at any point leaves a loadable checkpoint behind.
"""

import dataclasses
import glob
import json
import os
import shutil

import keras
import numpy as np

import zoo
from training import seeding
from training.outputs import write_json
from zoo import ZooError

DIRNAME = "checkpoint"
POINTER = "latest.json"
# Settings a run can change on resume: how long to train and how to print it.
RESUMABLE = ("epochs", "verbose", "overwrite")


def save(output_dir, net, *, epoch, history, config) -> None:
    """Writes the checkpoint after `epoch` (1-based) epochs."""
    directory = os.path.join(output_dir, DIRNAME)
    os.makedirs(directory, exist_ok=True)
    name = f"epoch-{epoch:04d}.keras"
    zoo.save_model(net, os.path.join(directory, name))
    write_json(
        os.path.join(directory, POINTER),
        {
            "epoch": epoch,
            "model": name,
            "history": history,
            "config": _identity(config),
            # Seed generators' states are variables a .keras file does not hold;
            # without them, dropout after a resume would draw other masks.
            "seed_states": [
                keras.ops.convert_to_numpy(v.value).tolist() for v in _unsaved_variables(net)
            ],
            "global_rng_state": seeding.global_rng_state(),
        },
    )
    for old in glob.glob(os.path.join(directory, "epoch-*.keras*")):
        if not os.path.basename(old).startswith(name):
            os.remove(old)


@dataclasses.dataclass
class Checkpoint:
    """A loaded checkpoint: the model after `epoch` epochs and what it needs to
    go on exactly as an uninterrupted run would."""

    net: keras.Model
    epoch: int
    history: dict
    #: For `seeding.set_global_rng_state`, once Keras has set up the first
    #: `fit` call (its symbolic build draws dropout masks on torch).
    global_rng_state: list | None


def load(output_dir, config) -> Checkpoint | None:
    """Returns the last checkpoint in `output_dir`, or `None`.

    A checkpoint of the same settings resumes, with `overwrite` or without,
    so that the command that was killed resumes when run again. One of other
    settings, or one that does not load, is ignored with `overwrite`, and the
    new run's first checkpoint replaces it.

    Raises:
        ZooError: the checkpoint is of a run with other settings or does not
            load, and `config.overwrite` is off.
    """
    pointer = os.path.join(output_dir, DIRNAME, POINTER)
    if not os.path.exists(pointer):
        return None
    with open(pointer) as f:
        state = json.load(f)
    changed = sorted(
        key
        for key in {*state["config"], *_identity(config)}
        if state["config"].get(key) != _identity(config).get(key)
    )
    if changed and config.overwrite:
        return None
    if changed:
        raise ZooError(
            f"Output dir {output_dir!r} holds an interrupted run with other settings "
            f"({', '.join(changed)}); expected the same command to resume it, or pass "
            f"overwrite=True (--overwrite) to start over. Received: "
            + ", ".join(f"{k}={_identity(config).get(k)!r}" for k in changed)
        )
    try:
        net = zoo.load_model(os.path.join(output_dir, DIRNAME, state["model"]))
    except ZooError as error:
        if config.overwrite:
            return None
        raise ZooError(
            f"{error}. To start the run over, pass overwrite=True (--overwrite)"
        ) from error
    for variable, value in zip(_unsaved_variables(net), state["seed_states"], strict=True):
        variable.assign(np.asarray(value, dtype=variable.dtype))
    return Checkpoint(net, state["epoch"], state["history"], state["global_rng_state"])


def remove(output_dir) -> None:
    """Deletes the checkpoints of a finished (or restarted) run."""
    shutil.rmtree(os.path.join(output_dir, DIRNAME), ignore_errors=True)


def _identity(config):
    """The settings that make two runs the same run, as JSON."""
    return json.loads(
        json.dumps({k: v for k, v in config.to_dict().items() if k not in RESUMABLE}, default=str)
    )


def _unsaved_variables(net):
    saved = {id(v) for v in net.weights}
    if net.optimizer is not None:
        saved |= {id(v) for v in net.optimizer.variables}
    return [v for v in net.variables if id(v) not in saved and v.name == "seed_generator_state"]
