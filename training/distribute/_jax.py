"""JAX: `keras.distribution.DataParallel`, across processes after
`keras.distribution.initialize()`."""

import contextlib
import os

import jax
import keras

from training.distribute import Replicas
from zoo import ZooError

# keras.distribution.initialize reads these; any of them means several processes.
_MULTI_PROCESS_ENV = (
    "KERAS_DISTRIBUTION_JOB_ADDRESSES",
    "KERAS_DISTRIBUTION_NUM_PROCESSES",
    "KERAS_DISTRIBUTION_PROCESS_ID",
)


@contextlib.contextmanager
def replicas(devices):
    if (
        any(name in os.environ for name in _MULTI_PROCESS_ENV)
        and not jax.distributed.is_initialized()
    ):
        keras.distribution.initialize()
    if devices:
        # Splits the host into `devices` CPU devices; a no-op for accelerators,
        # and impossible once JAX has run anything.
        with contextlib.suppress(RuntimeError):
            jax.config.update("jax_num_cpu_devices", devices)
    local = jax.local_devices()
    if devices and len(local) < devices:
        raise ZooError(
            f"Expected {devices} local devices for distribute='data'; JAX has "
            f"{len(local)} ({local[0].platform}) and has started already. On CPU, set "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={devices} before "
            f"starting Python. Received: devices={devices}"
        )
    per_process = devices or len(local)
    chosen = [
        device
        for process in range(jax.process_count())
        for device in [d for d in jax.devices() if d.process_index == process][:per_process]
    ]
    # Each process feeds its own slice of every global batch (see
    # training.pipeline.EpochBatches), so Keras must not shard the data again.
    distribution = keras.distribution.DataParallel(devices=chosen, auto_shard_dataset=False)
    previous = keras.distribution.distribution()
    keras.distribution.set_distribution(distribution)
    try:
        yield Replicas(
            count=len(chosen),
            process_index=jax.process_index(),
            processes=jax.process_count(),
            data_shard=(jax.process_index(), jax.process_count()),
            evaluation_multiple=len(chosen),
        )
    finally:
        keras.distribution.set_distribution(previous)
