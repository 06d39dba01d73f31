"""What decides a run's CPU threads. That they reach each framework is
checked in a fresh process per backend, with `fit`'s other start-up flags,
in `test_resume.py`."""

import os

import pytest

from training import backends

CHOSEN = (*backends.THREAD_VARIABLES, "XLA_FLAGS")


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
