"""Data-parallel training (`training.distribute`) on the backend under test.

A backend fixes its devices when it starts, so the runs happen in fresh
processes (tests/support/distribute_worker.py): JAX and TensorFlow split the CPU
into 2 devices themselves, torch runs 2 processes under torchrun, and the
"two hosts" runs start 2 processes with each backend's multi-host variables.
Each process gets `TIME_LIMIT` seconds, so each test stays under 2 minutes.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest
from runs import RUN_FILES

import training
import zoo
from training import distribute, pipeline
from training.config import FitConfig
from training.data import load_dataset
from zoo import ZooError

BACKEND = keras.backend.backend()
ROOT = pathlib.Path(__file__).parents[2]
WORKER = ROOT / "tests" / "support" / "distribute_worker.py"
TIME_LIMIT = 110
# Largest weight difference allowed between 2 replicas and 1 device after 78
# SGD steps on the same global batches: float32 rounding, as the replicas sum
# their halves' gradients in another order. Measured: 6e-8 (JAX, TensorFlow),
# 9e-8 (torch); 1.2e-7 for the custom step.
TOLERANCE = 1e-5

distributed = pytest.mark.distributed


def _environment(**extra):
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "KERAS_BACKEND": BACKEND, **extra}


def _run(command, **extra_env):
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=_environment(**extra_env),
        timeout=TIME_LIMIT,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def _torchrun(*args):
    return [sys.executable, "-m", "torch.distributed.run", *args]


def run_worker(tasks, output_dir):
    """Runs worker tasks on 2 replicas; returns each task's result per process."""
    command = [str(WORKER), ",".join(tasks), str(output_dir)]
    if BACKEND == "torch":
        _run(_torchrun("--standalone", "--nproc-per-node=2", *command))
    else:
        _run([sys.executable, *command])
    return {
        task: [
            json.loads(path.read_text())
            for path in sorted((output_dir / task).glob("result_*.json"))
        ]
        for task in tasks
    }


@pytest.fixture(scope="module")
def replicated(tmp_path_factory):
    """Every data-parallel task, run in one set of processes: they start once."""
    output_dir = tmp_path_factory.mktemp("replicated")
    tasks = ("equivalence", "recipe", "custom_step", "dcgan", "vae")
    return output_dir, run_worker(tasks, output_dir)


@distributed
def test_two_replicas_train_as_one_device(replicated):
    results = replicated[1]["equivalence"]
    assert len(results) == (2 if BACKEND == "torch" else 1)
    for result in results:
        assert result["max_abs_diff"] <= TOLERANCE
        # The partial last batch of each epoch is dropped alike by every replica.
        assert result["steps"] == result["expected_steps"]
        assert result["history"] == results[0]["history"]


@distributed
def test_only_the_chief_writes_and_its_model_loads_on_one_device(replicated):
    output_dir, results = replicated[0] / "equivalence", replicated[1]["equivalence"]
    assert results[0]["output_dir"] == str(output_dir / "run")
    assert all(result["output_dir"] is None for result in results[1:])
    assert sorted(os.listdir(output_dir / "run")) == RUN_FILES
    model = zoo.load_model(output_dir / "run" / "model.keras")
    predictions = model.predict(load_dataset("digits").x_test[:16], verbose=0)
    for process in range(len(results)):
        expected = np.load(output_dir / f"predictions_{process}.npy")
        np.testing.assert_allclose(predictions, expected, atol=1e-5)


@distributed
@pytest.mark.parametrize(
    "task",
    [
        # A written-once step whose loss mixes ops and a Keras Loss object,
        # which TensorFlow's replicas would scale differently.
        "custom_step",
        # The training recipe: schedule, warmup, weight decay, label smoothing,
        # clipping, accumulation (not on TensorFlow), EMA, augmentation, mixup
        # and early stopping.
        "recipe",
    ],
)
def test_a_written_once_step_and_the_recipe_train_as_one_device(task, replicated):
    results = replicated[1][task]
    assert results
    for result in results:
        assert result["max_abs_diff"] <= TOLERANCE


@distributed
@pytest.mark.parametrize("name", ["dcgan", "vae"])
def test_custom_step_models_train_data_parallel(name, replicated):
    (result, *_) = replicated[1][name]
    history = result["history"]
    assert history and all(np.isfinite(values).all() for values in history.values())
    model = zoo.load_model(replicated[0] / name / "run" / "model.keras")
    assert np.isfinite(keras.ops.convert_to_numpy(model.generate(4, seed=0))).all()


@distributed
def test_cli_fit_trains_on_two_devices(tmp_path):
    output_dir = tmp_path / "run"
    result = _run(
        [sys.executable, "-m", "training", "fit", "--model", "simple_cnn", "--dataset", "digits"]
        + ["--distribute", "data", "--devices", "2", "--epochs", "1", "--verbose", "0"]
        + ["--output-dir", str(output_dir)]
    )
    # Printed once, by the chief.
    (line,) = result.stdout.splitlines()
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert json.loads(line) == metrics and metrics["test_accuracy"] > 0.5
    assert training.evaluate(output_dir / "model.keras", "digits")["test_accuracy"] > 0.5


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _two_hosts():
    """Per host: the command and environment of a two-host run on localhost."""
    command = [str(WORKER), "equivalence"]
    if BACKEND == "torch":
        port = _free_port()
        return [
            (
                _torchrun(
                    "--nnodes=2",
                    f"--node-rank={host}",
                    "--master-addr=localhost",
                    f"--master-port={port}",
                    "--nproc-per-node=1",
                    *command,
                ),
                {},
            )
            for host in range(2)
        ]
    if BACKEND == "jax":
        address = f"localhost:{_free_port()}"
        env = dict(KERAS_DISTRIBUTION_JOB_ADDRESSES=address, KERAS_DISTRIBUTION_NUM_PROCESSES="2")
        return [
            ([sys.executable, *command], {**env, "KERAS_DISTRIBUTION_PROCESS_ID": str(host)})
            for host in range(2)
        ]
    cluster = {"worker": [f"localhost:{_free_port()}" for _ in range(2)]}
    return [
        (
            [sys.executable, *command],
            {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})},
        )
        for i in range(2)
    ]


@distributed
def test_two_hosts_train_as_one_device(tmp_path):
    processes = []
    for host, (command, env) in enumerate(_two_hosts()):
        (tmp_path / str(host)).mkdir()
        # One replica per host: the host's CPU (TF_CONFIG, jax.distributed) or
        # one process (torchrun --nproc-per-node=1).
        args = [*command, str(tmp_path / str(host)), "all"]
        processes.append(
            subprocess.Popen(
                args,
                cwd=ROOT,
                env=_environment(**env),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    try:
        errors = [process.communicate(timeout=TIME_LIMIT)[1] for process in processes]
    finally:
        for process in processes:
            process.kill()
    for process, error in zip(processes, errors, strict=True):
        assert process.returncode == 0, error[-4000:]
    # result_<torch rank>.json, else result_0.json
    hosts = [tmp_path / host / "equivalence" for host in "01"]
    chief, other = (json.loads(next(h.glob("result_*.json")).read_text()) for h in hosts)
    assert chief["max_abs_diff"] <= TOLERANCE and chief["steps"] == chief["expected_steps"]
    assert chief["output_dir"] and other["output_dir"] is None
    assert other["history"] == chief["history"]
    assert (hosts[0] / "run" / "metrics.json").exists()
    assert not (hosts[1] / "run").exists()


def _global_batches(x, y, batch_size, **kwargs):
    return pipeline.EpochBatches(x, y, batch_size, last_multiple=batch_size, **kwargs)


def test_global_batches_split_every_batch_among_the_shards():
    x, y = np.arange(70), np.arange(70) * 10
    shards = [_global_batches(x, y, 16, shard=(i, 2), seed=3) for i in range(2)]
    whole = _global_batches(x, y, 16, seed=3)
    assert len(whole) == len(shards[0]) == 4  # 70 // 16: the 6 left over are dropped
    for index in range(4):
        parts = [shard[index] for shard in shards]
        assert all(len(part[0]) == 8 for part in parts)
        np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), whole[index][0])
        np.testing.assert_array_equal(whole[index][1], whole[index][0] * 10)
    next_epoch = _global_batches(x, y, 16, seed=3, epoch=1)
    assert not np.array_equal(next_epoch[0][0], whole[0][0])
    whole.set_epoch(1)
    np.testing.assert_array_equal(whole[0][0], next_epoch[0][0])


def test_global_batches_cut_the_last_batch_to_a_multiple():
    x = np.arange(21)
    batches = pipeline.EpochBatches(x, x, 8, shard=(1, 2), last_multiple=4)
    assert len(batches) == 3
    np.testing.assert_array_equal(batches[0][0], np.arange(4, 8))  # no seed: in order
    np.testing.assert_array_equal(batches[2][0], np.arange(18, 20))  # 5 left: 4 kept
    with pytest.raises(IndexError):
        batches[3]


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(distribute="model"), "Expected distribute to be None or one of 'data'"),
        (dict(distribute="data", devices=0), "Expected devices to be a positive int"),
        (dict(devices=2), "Expected distribute='data' with devices"),
    ],
)
def test_bad_distribute_options_are_one_line(options, message):
    with pytest.raises(ZooError, match=message):
        FitConfig(**options)


def test_a_built_model_is_refused():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    with pytest.raises(ZooError, match="Expected a zoo model name for distribute='data'"):
        training.fit(model, "linear", distribute="data")


def test_more_devices_than_the_started_backend_has_is_one_line():
    keras.ops.ones((1,))  # the backend has started: its devices are fixed
    expected = "torchrun" if BACKEND == "torch" else "has started already"
    with pytest.raises(ZooError, match=expected):
        training.fit("mlp", "digits", distribute="data", devices=64)
    assert distribute.active() is None


def test_gradient_accumulation_is_refused_where_the_replicas_cannot_run_it(monkeypatch):
    replicas = distribute.Replicas(count=2, accumulates_gradients=False)
    monkeypatch.setattr(distribute, "_active", replicas)
    with pytest.raises(ZooError, match="Expected grad_accum_steps=1 for distribute='data'"):
        training.fit("mlp", "digits", grad_accum_steps=2)


def test_batch_size_must_divide_among_the_replicas(monkeypatch):
    monkeypatch.setattr(distribute, "_active", distribute.Replicas(count=2))
    with pytest.raises(ZooError, match="divisible by the 2 data-parallel replicas"):
        pipeline.training_inputs(load_dataset("digits"), 33, seed=0)
