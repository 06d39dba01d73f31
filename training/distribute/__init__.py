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
  replica takes the same number of equal steps (`drop_last` in torch terms):
  `training.pipeline` cuts each process's slice of every global batch.
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
            `count` slices of every global batch (`training.pipeline`).
            `(0, 1)` where the backend splits the global batch itself.
        evaluation_multiple: evaluation batches must hold a multiple of this
            many samples (JAX shards them too); `None` where any size goes.
        callbacks: Keras callbacks that keep the replicas in step.
        accumulates_gradients: whether Keras' gradient accumulation runs on
            these replicas: not under `tf.distribute`, where its conditional
            update cannot hold the gradients' all-reduce (keras-team/keras#20582).
    """

    count: int
    process_index: int = 0
    processes: int = 1
    data_shard: tuple[int, int] = (0, 1)
    evaluation_multiple: int | None = None
    callbacks: tuple = ()
    accumulates_gradients: bool = True

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


def callbacks() -> list:
    """The callbacks that keep the replicas in step; none outside a run."""
    return list(_active.callbacks) if _active else []
