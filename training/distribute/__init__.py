"""Data-parallel training on each backend's own engine.

`training.fit(..., distribute="data", devices=N)` runs inside `data_parallel(N)`:
a replica of the model per device, each step's global batch split evenly
between them, and the gradients averaged before every replica applies them.

- **JAX**: `keras.distribution.DataParallel` over the local devices, set for the
  run and restored after. With several processes (hosts),
  `keras.distribution.initialize()` first, from the `KERAS_DISTRIBUTION_*`
  environment variables.
- **TensorFlow**: `tf.distribute.MirroredStrategy` over the local devices; the
  model is built and compiled in its scope. With `TF_CONFIG` naming several
  workers, `tf.distribute.MultiWorkerMirroredStrategy`.
- **PyTorch**: `torch.distributed`, one process per device, started by torchrun
  (gloo on CPU, NCCL on GPU). Gradients are averaged with `all_reduce` as DDP
  does, at `optimizer.apply`, the call that Keras' trainer and written-once
  custom steps share.

On CPU, `devices=N` splits the host into N devices when the backend has not
started yet (JAX's `jax_num_cpu_devices`, TensorFlow's logical devices).

What every backend shares, so that N replicas at global batch B train as one
device at batch B:

- `batch_size` is the global batch and must divide by the replica count.
- Each epoch takes the training samples in an order drawn from `(seed, epoch)`,
  the same in every process, and drops the last partial global batch, so every
  replica takes the same number of equal steps (`drop_last` in torch terms).
- Only the chief (process 0) writes the output dir. The other processes write
  the same files to a temporary dir, deleted after the run, as TensorFlow's
  multi-worker guide has them do: saving and sample grids can involve
  collective operations, which every process must join.
"""

import contextlib
import dataclasses
import importlib
import tempfile

import keras
import numpy as np

from zoo import ZooError


@dataclasses.dataclass(frozen=True)
class Replicas:
    """A data-parallel run, as the backend set it up.

    Attributes:
        count: replicas over all processes; the global batch splits into this
            many equal parts.
        process_index: this process's index; process 0 is the chief.
        processes: processes taking part.
        data_shard: `(index, count)`: each `fit` caller feeds the `index`th of
            `count` slices of every global batch. `(0, 1)` where the backend
            splits the global batch itself.
        evaluation_multiple: evaluation batches must hold a multiple of this
            many samples (JAX shards them too); `None` where any size goes.
        callbacks: Keras callbacks that keep the replicas in step.
    """

    count: int
    process_index: int = 0
    processes: int = 1
    data_shard: tuple[int, int] = (0, 1)
    evaluation_multiple: int | None = None
    callbacks: tuple = ()

    @property
    def is_chief(self) -> bool:
        return self.process_index == 0


_backend = importlib.import_module(f"training.distribute._{keras.backend.backend()}")
_active: Replicas | None = None
_scratch = None  # the temporary dir that processes other than the chief write to


@contextlib.contextmanager
def data_parallel(devices=None):
    """Runs the enclosed model building and training data-parallel.

    Args:
        devices: replicas on this host: devices for JAX and TensorFlow,
            processes (started by torchrun) for PyTorch. Defaults to `None`:
            every local device, or torchrun's `--nproc-per-node`.

    Yields:
        The `Replicas`.
    """
    global _active, _scratch
    if _active is not None:
        raise ZooError("Expected one data-parallel run at a time. Received: a nested data_parallel")
    with _backend.replicas(devices) as replicas, tempfile.TemporaryDirectory() as scratch:
        _active, _scratch = replicas, scratch
        try:
            yield replicas
        finally:
            _active = _scratch = None


def active() -> Replicas | None:
    """The data-parallel run in progress, or `None`."""
    return _active


def is_chief() -> bool:
    """Whether this process writes outputs: always, outside a data-parallel run."""
    return _active is None or _active.is_chief


def run_dir(path) -> str:
    """Where this process writes a run's files: `path` for the chief, a
    temporary dir, deleted with the run, for the other processes."""
    return path if is_chief() else _scratch


def fit_inputs(data, batch_size, seed, epoch) -> dict:
    """One epoch's `model.fit` data arguments for a `training.Dataset`.

    The training samples come in an order drawn from `(seed, epoch)`, the same
    in every process and in a resumed run. Outside a data-parallel run, the
    arrays in that order. Inside one, this process's slices of the global
    batches, the last partial one dropped, and evaluation batches that the
    replicas can split.
    """
    if _active is None:
        order = _order(seed, epoch, len(data.x_train))
        return dict(
            x=data.x_train[order],
            y=data.y_train[order],
            batch_size=batch_size,
            validation_data=(data.x_val, data.y_val),
            shuffle=False,
        )
    if batch_size % _active.count:
        raise ZooError(
            f"Expected batch_size divisible by the {_active.count} data-parallel replicas. "
            f"Received: batch_size={batch_size}"
        )
    train = GlobalBatches(
        data.x_train, data.y_train, batch_size, shard=_active.data_shard, seed=seed, epoch=epoch
    )
    validation = evaluation_inputs(data.x_val, data.y_val, batch_size)
    return dict(
        x=train,
        shuffle=False,
        validation_data=(validation["x"], validation["y"])
        if "y" in validation
        else validation["x"],
        validation_batch_size=validation.get("batch_size"),
    )


def evaluation_inputs(x, y, batch_size) -> dict:
    """`model.evaluate`'s data arguments, in batches the replicas can split.

    JAX shards evaluation batches over the devices as well, so there each
    process feeds its slice, and the last batch is cut to a multiple of the
    replica count: at most `count - 1` samples go unscored. TensorFlow splits
    uneven batches itself, and every PyTorch process scores all samples.
    """
    if _active is None or _active.evaluation_multiple is None:
        return dict(x=x, y=y, batch_size=batch_size)
    batches = GlobalBatches(
        x, y, batch_size, shard=_active.data_shard, last_multiple=_active.evaluation_multiple
    )
    return dict(x=batches)


def callbacks() -> list:
    """The callbacks that keep the replicas in step; none outside a run."""
    return list(_active.callbacks) if _active else []


class GlobalBatches(keras.utils.PyDataset):
    """Global batches of `(x, y)`, each cut down to one process's slice.

    Every process builds the same global batches: the samples in an order
    drawn from `(seed, epoch)` (kept as they are, for `seed=None`), in groups
    of `batch_size`. A last partial batch is cut to a multiple of
    `last_multiple`; the default, `batch_size`, drops it. Process `shard[0]` of
    `shard[1]` gets that contiguous part of each global batch.

    Args:
        x: inputs, indexed along the first axis.
        y: targets, the same length as `x`.
        batch_size: samples per global batch.
        shard: `(index, count)` of this process's slice. Defaults to `(0, 1)`.
        seed: with `epoch`, draws the order; `None` keeps the order.
            Defaults to `None`.
        epoch: the epoch whose order to draw. Defaults to `0`.
        last_multiple: what the last partial batch is cut to a multiple of.
            Defaults to `None`: `batch_size`, dropping it.
    """

    def __init__(self, x, y, batch_size, *, shard=(0, 1), seed=None, epoch=0, last_multiple=None):
        super().__init__()
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.shard = shard
        last = len(x) % batch_size
        self.last_size = last - last % (last_multiple or batch_size)
        self._order = np.arange(len(x)) if seed is None else _order(seed, epoch, len(x))

    def __len__(self):
        return len(self.x) // self.batch_size + (self.last_size > 0)

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(f"Expected a batch index below {len(self)}. Received: {index}")
        size = self.batch_size if index < len(self.x) // self.batch_size else self.last_size
        shard, shards = self.shard
        part = size // shards
        start = index * self.batch_size + shard * part
        rows = self._order[start : start + part]
        return self.x[rows], self.y[rows]


def _order(seed, epoch, size):
    """The order of an epoch's training samples: the same in every process,
    and in a run resumed from a checkpoint."""
    return np.random.default_rng([seed, epoch]).permutation(size)
