"""Callbacks `training.fit` adds. Backend-specific choices live here."""

import importlib.util
import os

import keras
import numpy as np

from training import outputs, seeding
from zoo import ZooError


def tensorboard(log_dir) -> keras.callbacks.Callback:
    """TensorBoard logs on any backend.

    Keras' own `TensorBoard` callback writes through `tf.summary`, which needs
    the `tensorboard` package, and serves the TensorFlow backend; elsewhere
    epoch scalars go through tensorboardX, in the same `train/` and
    `validation/` layout with the same `epoch_*` tags.
    """
    backend = keras.backend.backend()
    writer = "tensorboard" if backend == "tensorflow" else "tensorboardX"
    if importlib.util.find_spec(writer) is None:
        raise ZooError(
            f"TensorBoard logs on the {backend} backend need {writer}; install it "
            "with pip install 'keras-model-zoo[tensorboard]'"
        )
    if backend == "tensorflow":
        return keras.callbacks.TensorBoard(log_dir=os.fspath(log_dir))
    return _ScalarWriter(os.fspath(log_dir))


class _ScalarWriter(keras.callbacks.Callback):
    def __init__(self, log_dir):
        super().__init__()
        self.log_dir = log_dir
        self._writers = {}

    def on_train_begin(self, logs=None):
        from tensorboardX import SummaryWriter

        # `fit` trains epoch by epoch: the writers stay open across its calls.
        self._writers = self._writers or {
            split: SummaryWriter(os.path.join(self.log_dir, split))
            for split in ("train", "validation")
        }

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            split, tag = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            self._writers[split].add_scalar(f"epoch_{tag}", float(value), epoch)

    def on_train_end(self, logs=None):
        for writer in self._writers.values():
            writer.flush()


class StopOnNaN(keras.callbacks.Callback):
    """Stops training at the first step whose loss is NaN or infinite, and
    records where (Keras' `TerminateOnNaN` only prints it).

    `steps` names the step: `"step 6"`, or, where the model runs several steps
    per call (`steps_per_execution`) and the loss is seen once per call,
    `"one of steps 1-32"`.

    It runs in the training loop, not on Keras' helper thread: on JAX, a
    step's logs may be donated to the next step before a helper reads them.
    """

    def __init__(self):
        super().__init__()
        self.stopped_at = None
        self.value = None

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(loss)):
            self.stopped_at, self.value = batch + 1, float(loss)
            self.model.stop_training = True

    @property
    def steps(self) -> str:
        per_call = self.model.steps_per_execution
        if per_call == 1:
            return f"step {self.stopped_at}"
        return f"one of steps {max(1, self.stopped_at - per_call + 1)}-{self.stopped_at}"


class RestoreGlobalRNG(keras.callbacks.Callback):
    """Restores a checkpoint's global random state when training begins, after
    Keras' set-up of a process's first `fit` (which draws from it on torch)."""

    def __init__(self, state):
        super().__init__()
        self.state = state

    def on_train_begin(self, logs=None):
        if self.state is not None:
            seeding.set_global_rng_state(self.state)
            self.state = None


class RunProgress(keras.callbacks.ProgbarLogger):
    """Keras' progress bar, counting the run's epochs: `fit` calls Keras once
    per epoch, which would otherwise print "Epoch 3/3" for the third of 30."""

    def __init__(self, epochs):
        super().__init__()
        self.run_epochs = epochs

    def set_params(self, params):
        super().set_params({**params, "epochs": self.run_epochs})


class SampleGrid(keras.callbacks.Callback):
    """Writes `samples_epoch_NNN.png`, a grid of `model.generate(...)` images,
    after each epoch. The noise is fixed by `seed`, so the grids show the same
    latent points improving."""

    def __init__(self, output_dir, seed=0, rows=4, cols=8):
        super().__init__()
        self.output_dir, self.seed, self.rows, self.cols = output_dir, seed, rows, cols

    def on_epoch_end(self, epoch, logs=None):
        images = keras.ops.convert_to_numpy(
            self.model.generate(self.rows * self.cols, seed=self.seed)
        )
        if keras.config.image_data_format() == "channels_first":
            images = np.moveaxis(images, 1, -1)
        figure = outputs.new_figure(figsize=(self.cols, self.rows))
        for ax, image in zip(figure.subplots(self.rows, self.cols).ravel(), images, strict=True):
            ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)
            ax.axis("off")
        figure.suptitle(f"{self.model.name}, epoch {epoch + 1}")
        path = os.path.join(self.output_dir, f"samples_epoch_{epoch + 1:03d}.png")
        outputs.save_png(figure, path, dpi=80)
