"""Cross-backend facts, each backend in its own subprocess.

Every backend runs two processes in all (tests/support/backend_worker.py):
one that saves and computes what the others compare with, then one that loads
what every backend saved. The tests read what they wrote.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from tiny import LARGE, TINY_KWARGS

from training.backends import BACKENDS

pytestmark = pytest.mark.cross_backend

WORKER = pathlib.Path(__file__).parent / "support" / "backend_worker.py"
# torch first: it writes the reference ResNets and the custom steps' inputs.
PRODUCERS = ("torch", *(b for b in BACKENDS if b != "torch"))


def start(backend, *args):
    return subprocess.Popen(
        [sys.executable, *args],
        env={**os.environ, "KERAS_BACKEND": backend},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process):
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    return stdout


def finish_all(processes):
    """Each process's output; where one fails, the others are stopped."""
    try:
        return [finish(process) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def run(backend, *args):
    return finish(start(backend, *args))


@pytest.fixture(scope="module")
def worked(tmp_path_factory):
    """The folder every backend's worker wrote to, and what each loaded.

    torch produces first; then the other producers side by side, and the
    consumers side by side: each writes only files of its own backend's name."""
    root = tmp_path_factory.mktemp("cross")
    first, *others = PRODUCERS
    run(first, str(WORKER), "produce", str(root))
    finish_all([start(backend, str(WORKER), "produce", str(root)) for backend in others])
    consumed = finish_all([start(b, str(WORKER), "consume", str(root)) for b in BACKENDS])
    loaded = {}
    for backend, stdout in zip(BACKENDS, consumed, strict=True):
        report = json.loads(stdout.splitlines()[-1])
        assert report["loaded_on"] == backend
        loaded[backend] = report["report"]
    return root, loaded


def test_models_saved_on_each_backend_load_on_each_backend(worked):
    _, loaded = worked
    for backend, report in loaded.items():
        # All 3 x 3 pairs, every model, the same predictions.
        assert sorted(report) == sorted(BACKENDS)
        for saved_on, differences in report.items():
            assert sorted(differences) == sorted(set(TINY_KWARGS) - set(LARGE))
            worst = max(differences, key=differences.get)
            assert differences[worst] <= 1e-5, (saved_on, backend, worst, differences[worst])


def test_custom_step_losses_and_gradients_agree_across_backends(worked):
    """Fixed weights and a fixed batch: losses, the gradient penalty and every
    gradient agree on TensorFlow, PyTorch and JAX."""
    root, _ = worked
    reference, *others = (dict(np.load(root / f"{b}.npz")) for b in BACKENDS)
    assert any(key.startswith("wgan_gp_critic/extra") for key in reference)  # the penalty
    for backend, results in zip(BACKENDS[1:], others, strict=True):
        assert sorted(results) == sorted(reference)
        for key, expected in reference.items():
            # rtol 1e-4, plus a floor for entries near zero, scaled to the array.
            atol = 1e-4 * float(np.abs(expected).max()) + 1e-7
            np.testing.assert_allclose(
                results[key], expected, rtol=1e-4, atol=atol, err_msg=f"{key} on {backend}"
            )


PORTED = ("mobilenet_v2", "resnet18", "resnet50", "vit_tiny")


def assert_logits_match(logits, expected, where):
    np.testing.assert_allclose(
        logits, expected, rtol=1e-4, atol=1e-4 * float(np.abs(expected).max()), err_msg=where
    )


def test_peer_weights_port_with_the_same_logits(worked):
    """Randomised torch models (weights, BatchNorm statistics), saved as
    torchvision's ResNets and MobileNetV2 and timm's ViT save them, give the
    same logits in the zoo model on every backend and in both data formats."""
    root, _ = worked
    reference = np.load(root / "reference.npz")
    for backend in BACKENDS:
        for data_format in ("channels_last", "channels_first"):
            ported = np.load(root / f"{backend}_{data_format}.npz")
            files = [f"{n}/{s}" for n in PORTED for s in ("pth", "safetensors")]
            assert sorted(ported) == files
            for key, logits in ported.items():
                expected = reference[key.split("/")[0]]
                assert_logits_match(logits, expected, f"{key} on {backend}, {data_format}")


def test_weights_written_on_every_backend_load_strictly_in_the_peers(worked):
    """`to_torchvision` and `to_timm` on each backend write files that the
    peers' models load with strict=True and that give the same logits."""
    root, _ = worked
    reference, reloaded = np.load(root / "reference.npz"), np.load(root / "reloaded.npz")
    assert sorted(reloaded) == sorted(f"{b}/{n}" for b in BACKENDS for n in PORTED)
    for key, logits in reloaded.items():
        assert_logits_match(logits, reference[key.split("/")[1]], key)


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_training_on_another_backend_does_not_start_tensorflow(backend):
    """TensorFlow installed beside the backend takes seconds to start and
    prints its log lines; a run that uses no tf.data pipeline does not start it."""
    script = (
        "import sys, training\n"
        "training.fit('mlp', 'digits', epochs=1, verbose=0)\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n"
    )
    run(backend, "-c", script)
