"""Keras' own callbacks in `training.fit` behave as under a plain `model.fit`,
and go on across a kill and a resume as if the run had never stopped."""

import keras
import numpy as np
import pytest
from runs import interrupt

import training

EPOCHS = 6
RUN = dict(epochs=EPOCHS, verbose=0, model_kwargs={"hidden_units": (16,)})


def _callbacks(tmp_path):
    """EarlyStopping and ReduceLROnPlateau that see no improvement after the
    first epoch (min_delta=10): the learning rate halves after every later
    epoch, and training stops after epoch index 2 with the first epoch's
    weights restored."""
    return [
        keras.callbacks.EarlyStopping(
            monitor="loss", min_delta=10, patience=2, restore_best_weights=True
        ),
        keras.callbacks.ReduceLROnPlateau(monitor="loss", min_delta=10, patience=1, factor=0.5),
        keras.callbacks.CSVLogger(str(tmp_path / "log.csv")),
    ]


class _StopAtTrainEnd(keras.callbacks.Callback):
    """Stops a run like a kill after its last checkpoint, before its outputs."""

    def on_train_end(self, logs=None):
        raise KeyboardInterrupt


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("straight")
    result = training.fit(
        "mlp",
        "digits",
        output_dir=str(tmp_path / "run"),
        keras_callbacks=_callbacks(tmp_path),
        **RUN,
    )
    return result, (tmp_path / "log.csv").read_text()


def test_callbacks_run_once_over_the_whole_run(straight):
    result, log = straight
    history = result.history
    assert len(history["loss"]) == 3  # EarlyStopping stopped after epoch index 2
    learning_rate = 5e-3
    np.testing.assert_allclose(history["learning_rate"], [learning_rate] * 2 + [learning_rate / 2])
    final = float(keras.ops.convert_to_numpy(result.model.optimizer.learning_rate))
    assert final == pytest.approx(learning_rate / 4)
    rows = log.splitlines()
    assert rows[0].startswith("epoch,") and [row.split(",")[0] for row in rows[1:]] == [
        "0",
        "1",
        "2",
    ]


def test_a_killed_run_resumes_its_callbacks_to_the_uninterrupted_result(straight, tmp_path):
    """Killed at the end of epoch index 2, before that epoch's checkpoint (the
    learning rate was halved once and EarlyStopping had waited one epoch),
    then after the checkpoint of the epoch EarlyStopping stopped at, before
    the run's outputs; each time resumed by the same call."""
    expected, expected_log = straight
    output_dir = str(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        training.fit(
            "mlp",
            "digits",
            output_dir=output_dir,
            keras_callbacks=[*_callbacks(tmp_path), interrupt(at=2)],
            **RUN,
        )
    with pytest.raises(KeyboardInterrupt):
        training.fit(
            "mlp",
            "digits",
            output_dir=output_dir,
            keras_callbacks=[*_callbacks(tmp_path), _StopAtTrainEnd()],
            **RUN,
        )
    counter = interrupt()
    result = training.fit(
        "mlp",
        "digits",
        output_dir=output_dir,
        keras_callbacks=[*_callbacks(tmp_path), counter],
        **RUN,
    )
    assert counter.epochs == 0  # the checkpoint said EarlyStopping had stopped the run
    assert result.history == expected.history
    assert (tmp_path / "log.csv").read_text() == expected_log  # one row per epoch
    for want, got in zip(expected.model.get_weights(), result.model.get_weights(), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6)
    assert int(result.model.optimizer.iterations) == int(expected.model.optimizer.iterations)
    assert float(keras.ops.convert_to_numpy(result.model.optimizer.learning_rate)) == float(
        keras.ops.convert_to_numpy(expected.model.optimizer.learning_rate)
    )
