"""Cross-backend facts, each backend in its own subprocess."""

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


def run(backend, *args):
    result = subprocess.run(
        [sys.executable, *args],
        env={**os.environ, "KERAS_BACKEND": backend},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_models_saved_on_each_backend_load_on_each_backend(tmp_path):
    for backend in BACKENDS:
        run(backend, str(WORKER), "save", str(tmp_path))
    for backend in BACKENDS:
        loaded = json.loads(run(backend, str(WORKER), "load", str(tmp_path)).splitlines()[-1])
        assert loaded["loaded_on"] == backend
        # All 3 x 3 pairs, every model, the same predictions.
        assert sorted(loaded["report"]) == sorted(BACKENDS)
        for saved_on, differences in loaded["report"].items():
            assert sorted(differences) == sorted(set(TINY_KWARGS) - set(LARGE))
            worst = max(differences, key=differences.get)
            assert differences[worst] <= 1e-5, (saved_on, backend, worst, differences[worst])


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_flag_wins_over_the_environment(backend, tmp_path):
    other = next(b for b in BACKENDS if b != backend)
    args = f"-m training fit --backend {backend} --model mlp --epochs 1 --verbose 0".split()
    run(other, *args, "--output-dir", str(tmp_path))
    assert json.loads((tmp_path / "config.json").read_text())["backend"] == backend


def test_custom_step_losses_and_gradients_agree_across_backends(tmp_path):
    """Fixed weights and a fixed batch: losses, the gradient penalty and every
    gradient agree on TensorFlow, PyTorch and JAX."""
    for backend in BACKENDS:
        run(backend, str(WORKER), "parity", str(tmp_path))
    reference, *others = (dict(np.load(tmp_path / f"{b}.npz")) for b in BACKENDS)
    assert any(key.startswith("wgan_gp_critic/extra") for key in reference)  # the penalty
    for backend, results in zip(BACKENDS[1:], others, strict=True):
        assert sorted(results) == sorted(reference)
        for key, expected in reference.items():
            # rtol 1e-4, plus a floor for entries near zero, scaled to the array.
            atol = 1e-4 * float(np.abs(expected).max()) + 1e-7
            np.testing.assert_allclose(
                results[key], expected, rtol=1e-4, atol=atol, err_msg=f"{key} on {backend}"
            )


def test_torchvision_resnets_port_with_the_same_logits(tmp_path):
    """A randomised torch ResNet (weights and BatchNorm statistics), saved as a
    torchvision state_dict, gives the same logits in the zoo ResNet on every
    backend and in both data formats."""
    run("torch", str(WORKER), "torchvision-reference", str(tmp_path))
    reference = np.load(tmp_path / "reference.npz")
    for backend in BACKENDS:
        for data_format in ("channels_last", "channels_first"):
            run(backend, str(WORKER), "torchvision-port", str(tmp_path), data_format)
            ported = np.load(tmp_path / f"{backend}_{data_format}.npz")
            for key, logits in ported.items():
                expected = reference[key.split("_")[0]]
                np.testing.assert_allclose(
                    logits,
                    expected,
                    rtol=1e-4,
                    atol=1e-4 * float(np.abs(expected).max()),
                    err_msg=f"{key} on {backend}, {data_format}",
                )
