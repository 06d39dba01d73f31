"""The batches `training.fit` trains, validates and tests on: the one place
that decides what they hold and in which order they come.

`fit` calls Keras' `model.fit` once per run, from the epoch a checkpoint
resumes at to the last. Each epoch takes the training samples in an order
drawn from `(seed, epoch)` (`epoch_order`), not from a global random state:
the same in every process of a data-parallel run, and in a run resumed from a
checkpoint, so that a resumed run sees the batches an uninterrupted one would.
`training_inputs` gives `model.fit` data that follows the epoch Keras is in:

- arrays, on TensorFlow: a `tf.data.Dataset` of each epoch's batches
  (`_tensorflow.py`), which TensorFlow reads faster than numpy arrays;
- arrays elsewhere, images read from files only when a batch needs them
  (`training.files.ImageFiles`, decoded on worker threads), and each
  process's slice of every global batch in a data-parallel run: an
  `EpochBatches`, a `keras.utils.PyDataset`.

Both learn the epoch from a `FollowEpochs` callback, whose `on_epoch_begin`
Keras calls before it reads the epoch's first batch (and before a
`PyDataset`'s workers start reading ahead).

A user's own pipeline (a `keras.utils.PyDataset`, a `tf.data.Dataset`, a
`torch.utils.data.DataLoader` or a grain loader) goes to `model.fit` as it is,
in the order it makes.
"""

import dataclasses
import random

import keras
import numpy as np
from keras.src.trainers.data_adapters import (  # Keras' own tests of what `fit` takes
    get_data_adapter,
    is_grain_dataset,
    is_tf_dataset,
    is_torch_dataloader,
)

from training import distribute
from training.data import task_of
from training.files import ImageFiles
from zoo import ZooError
from zoo.safety import first_line

# Threads decoding the images of a folder read lazily, ahead of the step.
IMAGE_WORKERS = 4


def epoch_order(seed, epoch, size) -> np.ndarray:
    """The order of an epoch's training samples: the same in every process,
    and in a run resumed from a checkpoint."""
    return np.random.default_rng([seed, epoch]).permutation(size)


class EpochBatches(keras.utils.PyDataset):
    """Batches of `(x, y)` (or `(x,)`), each cut down to one process's slice.

    The samples come in an order drawn from `(seed, epoch)`, or as they are
    for `seed=None`, in groups of `batch_size`. A last partial batch is cut
    to a multiple of `last_multiple`: `1` keeps it, `batch_size` drops it.
    Process `shard[0]` of `shard[1]` gets that contiguous part of each batch.
    A batch is gathered as `x[rows]`, so `x` may be an `ImageFiles`, which
    decodes only those rows; it is read on `workers` threads.

    Args:
        x: inputs, indexed along the first axis.
        y: targets, the same length as `x`, or `None`.
        batch_size: samples per (global) batch.
        seed: with the epoch, draws the order; `None` keeps the order.
            Defaults to `None`.
        epoch: the epoch to start in; `set_epoch` moves on. Defaults to `0`.
        shard: `(index, count)` of this process's slice. Defaults to `(0, 1)`.
        last_multiple: what the last partial batch is cut to a multiple of.
            Defaults to `1`: it is kept whole.
        workers: threads reading batches ahead. Defaults to `1`: none.
        augment: transforms a whole global batch, `augment(x, y, key)` ->
            `(x, y)`, drawing from `key = (seed, epoch, index)` alone (a
            `training.recipe.Augmentation`). Defaults to `None`.
    """

    def __init__(
        self,
        x,
        y,
        batch_size,
        *,
        seed=None,
        epoch=0,
        shard=(0, 1),
        last_multiple=1,
        workers=1,
        augment=None,
    ):
        super().__init__(workers=workers)
        self.x, self.y = x, y
        self.augment = augment
        self.batch_size = batch_size
        self.seed = seed
        self.shard = shard
        last = len(x) % batch_size
        self.last_size = last - last % last_multiple
        self.set_epoch(epoch)

    def set_epoch(self, epoch) -> None:
        """Takes the samples in `epoch`'s order from the next batch on."""
        self.epoch = epoch
        size = len(self.x)
        self._order = np.arange(size) if self.seed is None else epoch_order(self.seed, epoch, size)

    def __len__(self):
        return len(self.x) // self.batch_size + (self.last_size > 0)

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(f"Expected a batch index below {len(self)}. Received: {index}")
        size = self.batch_size if index < len(self.x) // self.batch_size else self.last_size
        shard, shards = self.shard
        part = size // shards
        if self.augment is not None:
            # The whole global batch, as one process would mix it, then this slice.
            start = index * self.batch_size
            rows = self._order[start : start + size]
            x, y = self.augment(
                np.asarray(self.x[rows]), np.asarray(self.y[rows]), (self.seed, self.epoch, index)
            )
            return x[shard * part : (shard + 1) * part], y[shard * part : (shard + 1) * part]
        start = index * self.batch_size + shard * part
        rows = self._order[start : start + part]
        x = np.asarray(self.x[rows])
        return (x,) if self.y is None else (x, np.asarray(self.y[rows]))


class FollowEpochs(keras.callbacks.Callback):
    """Tells batch sources the epoch `model.fit` is in, before Keras reads the
    epoch's first batch.

    Args:
        sources: objects with a `set_epoch(epoch)` method.
    """

    def __init__(self, sources):
        super().__init__()
        self.sources = list(sources)

    def on_epoch_begin(self, epoch, logs=None):
        for source in self.sources:
            source.set_epoch(epoch)


@dataclasses.dataclass
class Inputs:
    """What `model.fit` needs to read a run's data.

    Attributes:
        arguments: `model.fit`'s data arguments (`x`, `validation_data`, ...).
        callbacks: callbacks that keep the data in step with the epochs.
        steps: training batches per epoch, where known.
    """

    arguments: dict
    callbacks: list
    steps: int | None


def is_stream(x) -> bool:
    """Whether `x` is a pipeline `model.fit` reads as it is: a
    `keras.utils.PyDataset`, a `tf.data.Dataset`, a `torch.utils.data.DataLoader`
    or a grain dataset or loader."""
    return (
        isinstance(x, keras.utils.PyDataset)
        or is_tf_dataset(x)
        or is_torch_dataloader(x)
        or is_grain_dataset(x)
    )


@dataclasses.dataclass(frozen=True, eq=False)
class Stream:
    """A user's own pipelines as a run's data: batches that `model.fit`,
    `evaluate` take as they come.

    `x_train` and `y_train` are the first training batch, for the input shape
    and the kind of targets; `num_classes` is a lower bound from that batch.
    """

    name: str
    train: object
    validation: object | None
    test: object | None
    x_train: np.ndarray
    y_train: np.ndarray | None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int | None:
        y = self.y_train
        if y is None or y.dtype.kind not in "biu":
            return None
        return int(y.max()) + 1

    @property
    def task(self) -> str:
        return task_of(self.num_classes, self.y_train)

    @property
    def source(self) -> dict:
        return {"kind": type(self.train).__name__}


def stream(train, validation=None, test=None) -> Stream:
    """A `Stream` of the user's pipelines, `validation` and `test` as
    `model.fit`'s `validation_data` and `model.evaluate`'s `x` take them."""
    for name, value in (("validation_data", validation), ("test_data", test)):
        if value is not None and not (is_stream(value) or isinstance(value, tuple | list)):
            raise ZooError(
                f"Expected {name} to be a data pipeline like the training data, or an "
                f"(x, y) pair. Received: {name} of type {type(value).__name__}"
            )
    x, y = _first_batch(train)
    return Stream(type(train).__name__, train, validation, test, x, y)


def _first_batch(train):
    """The first batch's inputs and targets, as numpy arrays."""
    try:
        if isinstance(train, keras.utils.PyDataset):
            batch = train[0]
        else:
            batch = next(iter(get_data_adapter(train).get_numpy_iterator()))
    except Exception as exc:  # the user's pipeline failing to make a batch
        raise ZooError(
            f"Expected a data pipeline that yields batches. Received: {type(train).__name__} "
            f"raising {type(exc).__name__}: {first_line(exc)}"
        ) from exc
    x, y, _ = keras.utils.unpack_x_y_sample_weight(
        tuple(batch) if isinstance(batch, list) else batch
    )
    if isinstance(x, dict | list | tuple):
        raise ZooError(
            "Expected a data pipeline whose batches hold one input array. Received: "
            f"{type(train).__name__} yielding inputs of type {type(x).__name__}"
        )
    return np.asarray(x), None if y is None else np.asarray(y)


def training_inputs(data, batch_size, *, seed, epoch=0, augment=None) -> Inputs:
    """`model.fit`'s data for a `training.Dataset`, from `epoch` on.

    The training samples come in an order drawn from `(seed, epoch)` each
    epoch. In a data-parallel run, this process's slices of the global
    batches, the last partial one dropped, and evaluation batches that the
    replicas can split. `augment` transforms each training batch (see
    `EpochBatches`), on every backend in an `EpochBatches`.
    """
    if isinstance(data, Stream):
        return _stream_inputs(data, batch_size, seed)
    replicas = distribute.active()
    if replicas is not None and batch_size % replicas.count:
        raise ZooError(
            f"Expected batch_size divisible by the {replicas.count} data-parallel replicas. "
            f"Received: batch_size={batch_size}"
        )
    validation = evaluation_inputs(data.x_val, data.y_val, batch_size)
    arguments = dict(
        shuffle=False,
        validation_data=tuple(validation[k] for k in ("x", "y") if k in validation),
        validation_batch_size=validation.get("batch_size"),
    )
    lazy = isinstance(data.x_train, ImageFiles)
    if (
        replicas is None
        and not lazy
        and augment is None
        and keras.backend.backend() == "tensorflow"
    ):
        from training.pipeline import _tensorflow

        batches = _tensorflow.EpochDataset(
            data.x_train, data.y_train, batch_size, seed=seed, epoch=epoch
        )
        return Inputs({**arguments, "x": batches.dataset}, [FollowEpochs([batches])], len(batches))
    batches = EpochBatches(
        data.x_train,
        data.y_train,
        batch_size,
        seed=seed,
        epoch=epoch,
        shard=(0, 1) if replicas is None else replicas.data_shard,
        last_multiple=1 if replicas is None else batch_size,
        workers=IMAGE_WORKERS if lazy else 1,
        augment=augment,
    )
    return Inputs({**arguments, "x": batches}, [FollowEpochs([batches])], len(batches))


def _stream_inputs(data, batch_size, seed):
    """A user's pipelines, as they are. Keras shuffles a `PyDataset`'s batches,
    as `model.fit` does by default; the other kinds shuffle themselves.
    Validation arrays are taken `batch_size` at a time."""
    shuffled = isinstance(data.train, keras.utils.PyDataset)
    validation = data.validation
    if isinstance(validation, list):
        validation = tuple(validation)
    steps = getattr(data.train, "num_batches", None) if shuffled else _length(data.train)
    arrays = isinstance(validation, tuple)
    return Inputs(
        dict(
            x=data.train,
            validation_data=validation,
            validation_batch_size=batch_size if arrays else None,
            shuffle=shuffled,
        ),
        [SeededPythonRandom(seed)] if shuffled else [],
        steps,
    )


def _length(x):
    try:
        return len(x)
    except TypeError:  # a pipeline of unknown length
        return None


def test_inputs(data, batch_size) -> dict | None:
    """`model.evaluate`'s data arguments for a run's test split, or `None`
    for a `Stream` without test data."""
    if not isinstance(data, Stream):
        return evaluation_inputs(data.x_test, data.y_test, batch_size)
    if data.test is None:
        return None
    if isinstance(data.test, tuple | list):
        x, y = data.test
        return dict(x=x, y=y, batch_size=batch_size)
    return dict(x=data.test)


def evaluation_inputs(x, y, batch_size) -> dict:
    """`model.evaluate`'s data arguments, in order, in batches the replicas
    can split.

    JAX shards evaluation batches over the devices as well, so there each
    process feeds its slice, and the last batch is cut to a multiple of the
    replica count: at most `count - 1` samples go unscored. TensorFlow splits
    uneven batches itself, and every PyTorch process scores all samples.
    Images read from files are decoded a batch at a time on worker threads.
    """
    replicas = distribute.active()
    if replicas is not None and replicas.evaluation_multiple is not None:
        batches = EpochBatches(
            x,
            y,
            batch_size,
            shard=replicas.data_shard,
            last_multiple=replicas.evaluation_multiple,
            workers=IMAGE_WORKERS if isinstance(x, ImageFiles) else 1,
        )
        return dict(x=batches)
    if isinstance(x, ImageFiles):
        return dict(x=EpochBatches(x, y, batch_size, workers=IMAGE_WORKERS))
    return dict(x=x, y=y, batch_size=batch_size)


def prediction_inputs(x, batch_size) -> dict:
    """`model.predict`'s data arguments for inputs `x`, in the form the
    active backend reads fastest: on TensorFlow, a `tf.data.Dataset` of
    arrays' batches."""
    if isinstance(x, ImageFiles):
        return dict(x=EpochBatches(x, None, batch_size, workers=IMAGE_WORKERS))
    if keras.backend.backend() == "tensorflow":
        from training.pipeline import _tensorflow

        return dict(x=_tensorflow.batches(x, batch_size))
    return dict(x=x, batch_size=batch_size)


def steps(inputs: dict) -> int:
    """Batches per epoch of `model.fit` or `model.predict` data arguments."""
    x = inputs["x"]
    if "batch_size" in inputs:
        return -(-len(x) // inputs["batch_size"])
    return len(x)


class SeededPythonRandom(keras.callbacks.Callback):
    """Seeds Python's `random` from `(seed, epoch)` before each epoch.

    Keras shuffles a `PyDataset`'s batches with `random.shuffle`; seeded per
    epoch, a resumed run takes them in the uninterrupted run's order.
    """

    def __init__(self, seed):
        super().__init__()
        self.seed = seed

    def on_epoch_begin(self, epoch, logs=None):
        random.seed(int(np.random.default_rng([self.seed, epoch]).integers(2**63)))
