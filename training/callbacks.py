"""The Keras callbacks of a run: `for_run` assembles the list `training.fit`
hands its one `model.fit` call. Backend-specific choices live here."""

import importlib.util
import os

import keras
import numpy as np

from training import checkpoints, distribute, outputs, seeding
from zoo import ZooError


def for_run(
    config, *, user=(), data=(), output_dir=None, run=None, resumed=None, generative=False
) -> tuple[list, "StopOnNaN"]:
    """The callbacks of a run, in the order they must run, and its NaN stop.

    In order: the data's (which must know the epoch before its first batch),
    the NaN stop, the replicas' (which average the epoch's logs before anyone
    reads them), the global random state's restore, the user's, TensorBoard
    and sample grids, and the checkpoint, last, once every other callback has
    updated its state for the epoch. Keras adds its history and progress bar
    after them.

    Args:
        config: the run's `FitConfig`.
        user: the user's Keras callbacks. Defaults to `()`.
        data: the callbacks that keep the data in step with the epochs
            (`training.pipeline.Inputs.callbacks`). Defaults to `()`.
        output_dir: where the run writes, or `None`. Defaults to `None`.
        run: the run's model and data as JSON, for the checkpoint's identity.
            Defaults to `None`.
        resumed: the `checkpoints.Checkpoint` the run resumes from, or `None`.
        generative: whether the model generates images, for sample grids.
            Defaults to `False`.

    Returns:
        `(callbacks, nan_stop)`.
    """
    nan_stop = StopOnNaN()
    run_callbacks = [*data, nan_stop, *distribute.callbacks()]
    if resumed:
        run_callbacks.append(RestoreGlobalRNG(resumed.global_rng_state))
    run_callbacks += user
    # The recipe's own, after the user's; the checkpoint carries their state as theirs.
    own = recipe_callbacks(config)
    run_callbacks += own
    if config.tensorboard:
        run_callbacks.append(tensorboard(os.path.join(output_dir, "tensorboard")))
    if generative and output_dir:
        run_callbacks.append(SampleGrid(output_dir, seed=config.seed))
    if output_dir:
        run_callbacks.append(
            checkpoints.Checkpointer(
                output_dir,
                config,
                run,
                [*user, *own],
                resumed=resumed,
                skip=lambda: nan_stop.stopped_at is not None,
            )
        )
    return run_callbacks, nan_stop


def recipe_callbacks(config) -> list:
    """`ema`'s and `early_stopping`'s callbacks: validation on the EMA
    weights (Keras' `SwapEMAWeights`; after training, Keras puts them in the
    model for good), and Keras' `EarlyStopping` on the validation loss, which
    restores the best epoch's weights."""
    own = []
    if config.ema is not None:
        own += [keras.callbacks.SwapEMAWeights(), OwnEMAWeights()]
    if config.early_stopping:
        stopping = keras.callbacks.EarlyStopping if config.ema is None else EarlyStoppingOnEMA
        own.append(
            stopping(monitor="val_loss", patience=config.early_stopping, restore_best_weights=True)
        )
    return own


def ema_weights(net) -> list:
    """`net.get_weights()` with the optimizer's EMA in place of each trainable
    weight (each group's own, for a custom step's `OptimizerGroup`)."""
    optimizer = net.optimizer
    if hasattr(optimizer, "members"):
        groups = [(net.group_variables(k), o) for k, o in optimizer.members.items()]
    else:
        groups = [(net.trainable_weights, optimizer)]
    by_weight = {}
    for weights, member in groups:
        averages = [v for v in member.variables if v.name.endswith("_average")]
        if averages:  # a member without EMA keeps its raw weights
            by_weight.update({id(w): a for w, a in zip(weights, averages, strict=True)})
    return [keras.ops.convert_to_numpy(by_weight.get(id(w), w)) for w in net.weights]


class OwnEMAWeights(keras.callbacks.Callback):
    """Gives each weight a copy of the average Keras put in it at the end of
    `fit`: on JAX the two share one buffer, which the next step that donates
    the weights (evaluating the test split) deletes from under the optimizer's
    average, and saving the model then fails."""

    def on_train_end(self, logs=None):
        for variable in self.model.trainable_weights:
            variable.assign(keras.ops.convert_to_numpy(variable))


class EarlyStoppingOnEMA(keras.callbacks.EarlyStopping):
    """Keras' `EarlyStopping` for a run with EMA: the weights it keeps are the
    EMA weights, which the validation loss it watches was measured on."""

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if self.restore_best_weights and self.best_epoch == epoch:
            self.best_weights = ema_weights(self.model)


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

        self._writers = {
            split: SummaryWriter(os.path.join(self.log_dir, split))
            for split in ("train", "validation")
        }

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            split, tag = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            self._writers[split].add_scalar(f"epoch_{tag}", float(value), epoch)

    def on_train_end(self, logs=None):
        for writer in self._writers.values():
            writer.close()


class StopOnNaN(keras.callbacks.Callback):
    """Stops training at the first step whose loss is NaN or infinite, and
    records where (Keras' `TerminateOnNaN` only prints it).

    `steps` names the step: `"step 6"`, or, where the model runs several steps
    per call (`steps_per_execution`) and the loss is seen once per call,
    `"one of steps 1-32"`; `epoch` is the epoch's index.

    It runs in the training loop, not on Keras' helper thread: on JAX, a
    step's logs may be donated to the next step before a helper reads them.
    """

    def __init__(self):
        super().__init__()
        self.stopped_at = None
        self.value = None
        self.epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

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
