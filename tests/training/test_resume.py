"""Crash safety of `fit`: a run killed with SIGKILL at any point resumes from
its last checkpoint to the result of an uninterrupted run."""

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from runs import interrupt

import training
import zoo
from training import backends, checkpoints, performance
from zoo import ZooError

EPOCHS = 10
# Dropout draws from a seed generator, whose state a checkpoint must carry too.
FIT = ["fit", "--model", "mlp", "--dataset", "digits", "--epochs", str(EPOCHS), "--verbose", "0"]
FIT += ["--model-arg", "hidden_units=[32]", "--model-arg", "dropout=0.2", "--optimizer", "adam"]


def _start(output_dir):
    return subprocess.Popen(
        [sys.executable, "-m", "training", *FIT, "--output-dir", str(output_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(output_dir):
    process = _start(output_dir)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr


def _kill_early(output_dir, rng):
    """Kills the run at a random moment soon after it made its output dir,
    which it does once its arguments are checked: while the model compiles or
    in its first epochs."""
    process = _start(output_dir)
    _wait(process, output_dir.exists)
    time.sleep(rng.uniform(0, 0.2))
    _kill(process)


def _kill_after_checkpoint(output_dir, epoch, rng):
    """Kills the run at a random moment of the epoch after its checkpoint of
    `epoch` or a later one: in the middle of training, of validation or of
    writing the next checkpoint.

    The moment is a random fraction of the run's own epoch time, measured
    between the checkpoints it wrote, so that a fast backend is not
    killed after it finished and a slow one not always early in an epoch.
    """
    pointer = output_dir / checkpoints.DIRNAME / checkpoints.POINTER
    resumed_from = _checkpointed_epoch(pointer)
    process = _start(output_dir)
    seen = {}  # epoch -> when this run's checkpoint of it was first seen

    def timed():
        if (checkpointed := _checkpointed_epoch(pointer)) != resumed_from:
            seen.setdefault(checkpointed, time.monotonic())
        return len(seen) >= 2 and max(seen) >= epoch

    _wait(process, timed, poll=0.005)
    first, last = min(seen), max(seen)
    assert last <= EPOCHS - 2, f"checkpoints seen: {sorted(seen)}"
    epoch_time = (seen[last] - seen[first]) / (last - first)
    time.sleep(rng.uniform(0, 1) * epoch_time)
    _kill(process)


def _wait(process, condition, poll=0.01):
    deadline = time.monotonic() + 300
    while not condition():
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(poll)


def _kill(process):
    assert process.poll() is None, "the run ended before it was killed"
    process.send_signal(signal.SIGKILL)
    process.wait()


def _checkpointed_epoch(pointer):
    return json.loads(pointer.read_text())["epoch"] if pointer.exists() else 0


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("straight")
    _finish(output_dir)
    return output_dir


def _state(output_dir):
    model = zoo.load_model(output_dir / "model.keras")
    history = json.loads((output_dir / "history.json").read_text())
    return model, history


def test_a_run_killed_three_times_resumes_to_the_uninterrupted_result(uninterrupted, tmp_path):
    rng = random.Random()  # other kill moments each time; the result must not depend on them
    output_dir = tmp_path / "run"
    _kill_early(output_dir, rng)
    # Each run writes two checkpoints before its kill, so the third is killed
    # after epoch 8 at the latest, two epochs before the end.
    _kill_after_checkpoint(output_dir, 2, rng)
    _kill_after_checkpoint(output_dir, rng.randint(4, EPOCHS - 2), rng)
    assert not (output_dir / "metrics.json").exists()
    _finish(output_dir)

    expected, expected_history = _state(uninterrupted)
    resumed, history = _state(output_dir)
    for want, got in zip(expected.get_weights(), resumed.get_weights(), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6)
    assert int(resumed.optimizer.iterations) == int(expected.optimizer.iterations)
    np.testing.assert_allclose(history["loss"], expected_history["loss"], rtol=1e-6)
    assert len(history["loss"]) == EPOCHS
    assert not (tmp_path / checkpoints.DIRNAME).exists()  # cleared once finished


def test_a_crash_while_checkpointing_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    config = training.FitConfig(epochs=3, output_dir=str(tmp_path))
    net = zoo.create_model("mlp", input_shape=(4,), hidden_units=(8,), num_classes=2)
    net.compile("sgd", "sparse_categorical_crossentropy")
    checkpoints.save(tmp_path, net, epoch=1, history={"loss": [1.0]}, config=config)
    saved = net.get_weights()
    net.set_weights([w + 1 for w in saved])

    def crash(model, path):
        with open(path, "wb") as f:  # a half-written file, then the crash
            f.write(b"PK\x03\x04")
        raise KeyboardInterrupt

    monkeypatch.setattr(zoo, "save_model", crash)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.save(tmp_path, net, epoch=2, history={"loss": [1.0, 0.5]}, config=config)
    monkeypatch.undo()

    restored = checkpoints.load(tmp_path, config)
    assert restored.epoch == 1 and restored.history == {"loss": [1.0]}
    for want, got in zip(saved, restored.net.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)


def test_resuming_with_other_settings_is_refused(tmp_path):
    run = dict(epochs=2, output_dir=str(tmp_path), verbose=0)
    with pytest.raises(KeyboardInterrupt):
        training.fit("mlp", "digits", learning_rate=0.1, keras_callbacks=[interrupt(at=1)], **run)
    with pytest.raises(ZooError, match=r"interrupted run with other settings \(learning_rate\)"):
        training.fit("mlp", "digits", **run)


def test_overwrite_resumes_its_own_interrupted_run(tmp_path):
    run = dict(epochs=3, output_dir=str(tmp_path), verbose=0)
    training.fit("mlp", "digits", **{**run, "epochs": 1})
    finished = (tmp_path / "metrics.json").read_bytes()
    with pytest.raises(KeyboardInterrupt):
        training.fit("mlp", "digits", overwrite=True, keras_callbacks=[interrupt(at=1)], **run)
    # The finished run's files stay until the run replacing it finishes.
    assert (tmp_path / "metrics.json").read_bytes() == finished
    with pytest.raises(ZooError, match=r"interrupted run with other settings \(seed\)"):
        training.fit("mlp", "digits", seed=1, **run)

    counter = interrupt()
    result = training.fit("mlp", "digits", overwrite=True, keras_callbacks=[counter], **run)
    assert counter.epochs == 2  # epochs 2 and 3: the same command resumed
    assert len(result.history["loss"]) == 3
    assert (tmp_path / "metrics.json").read_bytes() != finished


def test_overwrite_starts_over_a_checkpoint_of_other_settings_or_that_does_not_load(tmp_path):
    config = training.FitConfig(epochs=3, output_dir=str(tmp_path))
    net = zoo.create_model("mlp", input_shape=(4,), hidden_units=(8,), num_classes=2)
    net.compile("sgd", "sparse_categorical_crossentropy")
    checkpoints.save(tmp_path, net, epoch=1, history={}, config=config)

    other = dataclasses.replace(config, seed=1, overwrite=True)
    assert checkpoints.load(tmp_path, other) is None
    model_file = tmp_path / checkpoints.DIRNAME / "epoch-0001.keras"
    model_file.write_bytes(model_file.read_bytes()[:-100])  # damaged
    with pytest.raises(ZooError, match=r"To start the run over, pass overwrite=True") as error:
        checkpoints.load(tmp_path, config)
    assert "\n" not in str(error.value)
    assert checkpoints.load(tmp_path, dataclasses.replace(config, overwrite=True)) is None


class _NaNAfter(keras.layers.Layer):
    """Passes its input through until `steps` training steps have run, then NaN."""

    def __init__(self, steps, **kwargs):
        super().__init__(**kwargs)
        self.steps = steps
        self.count = self.add_weight(shape=(), initializer="zeros", trainable=False, name="count")

    def call(self, x, training=False):
        if training:
            self.count.assign(self.count + 1)
        return x * keras.ops.where(self.count > self.steps, float("nan"), 1.0)


def test_a_nan_loss_stops_with_the_epoch_and_step_and_keeps_the_checkpoint(tmp_path):
    data = training.load_dataset("digits")
    steps_per_epoch = -(-len(data.x_train) // 32)
    net = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
            _NaNAfter(steps_per_epoch + 5),
        ]
    )
    with pytest.raises(ZooError) as error:
        training.fit(net, data, epochs=3, output_dir=str(tmp_path), verbose=0)
    message = str(error.value)
    assert "\n" not in message
    # Where fit runs several steps per call, the loss is seen once per call.
    per_call = performance.STEPS_PER_EXECUTION.get(keras.backend.backend(), 1)
    step = "step 6" if per_call == 1 else f"one of steps 1-{per_call}"
    assert message.startswith(f"Training stopped: the loss became nan at epoch 2, {step};")
    assert "last good checkpoint (after epoch 1)" in message

    pointer = json.loads((tmp_path / checkpoints.DIRNAME / checkpoints.POINTER).read_text())
    assert pointer["epoch"] == 1
    assert (tmp_path / checkpoints.DIRNAME / pointer["model"]).exists()
    assert not (tmp_path / "metrics.json").exists()


# Each prints whether deterministic kernels are on and how many CPU threads it computes with.
_FLAGS = {
    # TensorFlow has a setter for op determinism but no public getter.
    "tensorflow": "import tensorflow as tf\n"
    "from tensorflow.python.framework import config\n"
    "gpus = tf.config.list_physical_devices('GPU')\n"
    "assert all(tf.config.experimental.get_memory_growth(gpu) for gpu in gpus)\n"
    "print(config.is_op_determinism_enabled(), "
    "tf.config.threading.get_intra_op_parallelism_threads())",
    "torch": "import torch\n"
    "print(torch.are_deterministic_algorithms_enabled(), torch.get_num_threads())",
    # XLA has no thread count: one thread for its Eigen operations, or every core.
    "jax": "from training import backends\n"
    "flags = os.environ['XLA_FLAGS']\n"
    "print('--xla_gpu_deterministic_ops=true' in flags, "
    "1 if backends.XLA_ONE_THREAD in flags else backends.available_cores())",
}


def test_fit_s_flags_reach_the_framework_in_a_fresh_process(tmp_path):
    """`--deterministic`'s flags, `--gpu-memory grow` (the default) and the
    threads a user's `OMP_NUM_THREADS` asks for, said in one line, in the
    process the CLI's `fit` ran in."""
    backend = keras.backend.backend()
    argv = ["fit", "--model", "mlp", "--epochs", "1", "--verbose", "0", "--deterministic"]
    script = (
        "import os\n"
        "from training import cli\n"
        f"assert cli.main({[*argv, '--output-dir', str(tmp_path)]!r}) == 0\n"
        "assert os.environ['CUBLAS_WORKSPACE_CONFIG'] == ':4096:8'\n"
        "assert os.environ['XLA_PYTHON_CLIENT_PREALLOCATE'] == 'false'\n"
        "assert os.environ['TF_FORCE_GPU_ALLOW_GROWTH'] == 'true'\n" + _FLAGS[backend]
    )
    chosen = (*backends.THREAD_VARIABLES, "XLA_FLAGS", *backends.gpu_memory_environment("grow"))
    env = {k: v for k, v in os.environ.items() if k not in chosen}
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**env, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "True 1"
    cores = backends.available_cores()
    said = f"threads: 1 (OMP_NUM_THREADS=1, of {cores} available cores)"
    assert result.stderr.splitlines().count(said) == 1, result.stderr
