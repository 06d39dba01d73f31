"""What decides a run's CPU threads and GPU memory. That they reach each
framework is checked in a fresh process per backend, with `fit`'s other
start-up flags, in `test_resume.py`."""

import os
import warnings

import keras
import pytest

from training import backends, sharing

CHOSEN = (*backends.THREAD_VARIABLES, "XLA_FLAGS", *backends.gpu_memory_environment("grow"))


@pytest.fixture
def environ(monkeypatch):
    """`os.environ` without the variables chosen here, restored afterwards."""
    environ = {k: v for k, v in os.environ.items() if k not in CHOSEN}
    monkeypatch.setattr(os, "environ", environ)
    return environ


def test_threads_are_the_available_cores_unless_the_user_says(environ):
    cores = backends.available_cores()
    assert cores == len(os.sched_getaffinity(0))
    assert backends.threads() == (
        cores,
        f"of {cores} available cores; set OMP_NUM_THREADS to change",
    )
    assert backends.thread_environment(cores) == dict.fromkeys(
        backends.THREAD_VARIABLES, str(cores)
    )
    environ.update(OMP_NUM_THREADS="3", TF_NUM_INTEROP_THREADS="2")
    assert backends.threads() == (3, f"OMP_NUM_THREADS=3, of {cores} available cores")
    wanted = backends.thread_environment(1)
    assert wanted["TF_NUM_INTEROP_THREADS"] == "2" and wanted["MKL_NUM_THREADS"] == "1"
    assert wanted.get("XLA_FLAGS") == (backends.XLA_ONE_THREAD if cores > 1 else None)


def test_grow_sets_the_frameworks_variables_and_all_none(environ):
    assert backends.gpu_memory_environment("all") == {}
    sharing.share_gpu_memory("all")
    assert not set(environ) & set(CHOSEN)
    sharing.share_gpu_memory("grow")
    assert environ["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
    assert environ["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "true"  # the user's
    assert backends.gpu_memory_environment("grow")["XLA_PYTHON_CLIENT_PREALLOCATE"] == "true"


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow's memory growth")
def test_grow_asks_tensorflow_on_every_gpu_and_warns_once_it_started(environ, monkeypatch):
    import tensorflow as tf

    asked = []
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind: [f"{kind}:0", f"{kind}:1"])
    monkeypatch.setattr(
        tf.config.experimental, "set_memory_growth", lambda gpu, on: asked.append((gpu, on))
    )
    sharing.share_gpu_memory("all")
    sharing.share_gpu_memory("grow")
    assert asked == [("GPU:0", True), ("GPU:1", True)]

    def started(gpu, on):
        raise RuntimeError("Physical devices cannot be modified after being initialized")

    monkeypatch.setattr(tf.config.experimental, "set_memory_growth", started)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sharing.share_gpu_memory("grow")  # TF_FORCE_GPU_ALLOW_GROWTH was set before it started
    del environ["TF_FORCE_GPU_ALLOW_GROWTH"]
    with pytest.warns(UserWarning, match="TensorFlow had already started on the GPU") as caught:
        sharing.share_gpu_memory("grow")
    assert "\n" not in str(caught[0].message)


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="JAX's preallocation")
def test_grow_warns_once_jax_started_on_a_gpu(environ, monkeypatch):
    import jax
    from jax._src import xla_bridge

    monkeypatch.setattr(xla_bridge, "backends_are_initialized", lambda: True)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    with pytest.warns(UserWarning, match="JAX had already started on the GPU") as caught:
        sharing.share_gpu_memory("grow")
    assert "\n" not in str(caught[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sharing.share_gpu_memory("grow")  # asked before it started: the user's, or the CLI's
