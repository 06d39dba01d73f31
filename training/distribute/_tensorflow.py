"""TensorFlow: `MirroredStrategy` on one host, `MultiWorkerMirroredStrategy`
across the workers that `TF_CONFIG` names.

Keras 3.15's optimizers clip each replica's share of the gradient, before
the update step sums the shares over the replicas; one device clips the
whole. For as long as the replicas run, `CLIP_SUMMED` clips the sum instead,
at the cost of one more all-reduce of the gradients in steps that clip.
"""

import contextlib
import functools
import json
import os

import tensorflow as tf
from keras.src.backend.tensorflow.optimizer import TFOptimizer
from keras.src.optimizers.base_optimizer import BaseOptimizer

from training.distribute import Replicas
from zoo import ZooError
from zoo.patches import KerasPatch


def _clip_summed(optimizer, grads):
    """Clips the gradients summed over the replicas, as one device clips its
    gradient, and returns this replica's share of the result: the update
    step sums the shares."""
    context = tf.distribute.get_replica_context()
    clips = optimizer.clipnorm or optimizer.global_clipnorm or optimizer.clipvalue
    if not clips or context is None or context.num_replicas_in_sync == 1:
        return BaseOptimizer._clip_gradients(optimizer, grads)
    total = context.all_reduce(tf.distribute.ReduceOp.SUM, grads)
    share = 1.0 / context.num_replicas_in_sync
    return [tf.math.scalar_mul(share, g) for g in BaseOptimizer._clip_gradients(optimizer, total)]


CLIP_SUMMED = KerasPatch(
    "training's gradient clipping of the replicas' summed gradients under tf.distribute",
    (TFOptimizer, "_clip_gradients", _clip_summed),
    written_for={
        "keras.src.optimizers.base_optimizer.BaseOptimizer._clip_gradients": "152b956e23c91ad9",
        # It clips there, before the update step sums the replicas' gradients.
        "keras.src.optimizers.base_optimizer.BaseOptimizer._backend_apply_gradients": (
            "48d6e24d58039241"
        ),
        "keras.src.backend.tensorflow.optimizer.TFOptimizer._backend_update_step": (
            "00bd759c099a6b72"
        ),
    },
)


@contextlib.contextmanager
def replicas(devices):
    cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})
    if sum(len(tasks) for tasks in cluster.values()) > 1:
        strategy, index, processes = _multi_worker(devices, cluster)
    else:
        strategy, index, processes = _mirrored(tuple(_local_devices(devices))), 0, 1
    with strategy.scope(), CLIP_SUMMED.installed():
        # Keras splits each global batch over the replicas (and the workers)
        # itself, and so do its evaluations, uneven last batches included.
        yield Replicas(
            count=strategy.num_replicas_in_sync,
            process_index=index,
            processes=processes,
            accumulates_gradients=False,
        )


def _local_devices(devices):
    if not tf.config.list_physical_devices("GPU") and devices:
        # Splits the CPU into `devices` logical devices; impossible once
        # TensorFlow has run anything.
        cpu = tf.config.list_physical_devices("CPU")[0]
        with contextlib.suppress(RuntimeError):
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * devices
            )
    local = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    if devices and len(local) < devices:
        raise ZooError(
            f"Expected {devices} local devices for distribute='data'; TensorFlow has "
            f"{len(local)} and has started already. On CPU, call training.fit before "
            f"anything else runs TensorFlow. Received: devices={devices}"
        )
    return [device.name for device in local[: devices or len(local)]]


# One strategy per device set and process: a second one's collective ops would
# collide with the first's, and TensorFlow takes one multi-worker strategy only.
@functools.cache
def _mirrored(devices):
    return tf.distribute.MirroredStrategy(list(devices))


@functools.cache
def _multi_worker_strategy():
    return _MultiWorkerMirroredStrategy()


class _MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """Takes the reductions Keras' `fit` asks of it (keras-team/keras#20585):
    a whole `(x, y)` batch at once, reduced here part by part, and scalar
    logs along `axis=0`, reduced here over the replicas alone."""

    def reduce(self, reduce_op, value, axis):
        def reduce_part(part):
            scalar = self.experimental_local_results(part)[0].shape.rank == 0
            return super(_MultiWorkerMirroredStrategy, self).reduce(
                reduce_op, part, None if scalar else axis
            )

        return tf.nest.map_structure(reduce_part, value)


def _multi_worker(devices, cluster):
    """The strategy, this worker's index (the chief's is 0) and the worker count."""
    strategy = _multi_worker_strategy()
    workers = len(cluster.get("chief", [])) + len(cluster.get("worker", []))
    local = strategy.num_replicas_in_sync // workers
    if devices and devices != local:
        raise ZooError(
            "Expected devices to match the replicas MultiWorkerMirroredStrategy finds "
            f"on this worker ({local}: its GPUs, else the CPU). Received: devices={devices}"
        )
    resolver = strategy.cluster_resolver
    index = resolver.task_id + ("chief" in cluster if resolver.task_type == "worker" else 0)
    return strategy, index, workers
