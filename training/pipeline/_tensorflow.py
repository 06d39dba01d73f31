"""TensorFlow's fast path: arrays as a `tf.data.Dataset`.

From numpy arrays, Keras' pipeline gathers each batch by index on threads
that compete with the step for the cores (`simple_cnn`: 0.77 → 0.81 of the
native loop read from a `tf.data.Dataset`, in alternating A/B runs).

The dataset is not autotuned. An autotuned iterator keeps a thread that
sleeps between tuning rounds, for longer the longer the iterator lives, and
dropping the iterator waits for that thread to wake. Keras drops one at the
start of every epoch (it makes the next epoch's iterator when an epoch ends,
and another when the next one starts): on a 2-core CPU, 0.37-1.29 s of
nothing at the start of 6 of 20 `mlp` epochs, each about 0.3 s of training,
and up to 2.4 s in `simple_cnn`'s. Gathering a batch takes 0.3 ms of a 3 ms
`mlp` step there; tf.data's injected prefetch would run it on another thread,
competing with the step for the cores. (Not measured on a GPU, where a
prefetch could overlap the gather with the step.)
"""

import tensorflow as tf

from training import pipeline


def _options() -> tf.data.Options:
    """No autotuning, and so no prefetch injected by it."""
    options = tf.data.Options()
    options.autotune.enabled = False
    options.experimental_optimization.inject_prefetch = False
    return options


class EpochDataset:
    """The batches of `(x, y)` in an epoch's order, as a `tf.data.Dataset`.

    Keras iterates `dataset` afresh each epoch; each batch gathers its rows
    of the arrays in the order `set_epoch` last set, `epoch_order(seed,
    epoch)`, the last batch partial. The batches end with the epoch, so
    TensorFlow's compiled multi-step loop (`steps_per_execution`) stops there
    as it does at the end of an epoch's arrays.
    """

    def __init__(self, x, y, batch_size, *, seed, epoch=0):
        self.seed, self.size, self.batch_size = seed, len(x), batch_size
        with tf.device("/cpu:0"):
            self._samples = (tf.convert_to_tensor(x), tf.convert_to_tensor(y))
            self._order = tf.Variable(
                pipeline.epoch_order(seed, epoch, self.size), trainable=False, name="epoch_order"
            )

        def batch(index):
            rows = self._order[index * batch_size : (index + 1) * batch_size]
            return tuple(tf.gather(samples, rows) for samples in self._samples)

        # Each batch is gathered when read, in the order of the epoch Keras is in.
        self.dataset = tf.data.Dataset.range(len(self)).map(batch).with_options(_options())

    def set_epoch(self, epoch) -> None:
        self._order.assign(pipeline.epoch_order(self.seed, epoch, self.size))

    def __len__(self):
        return -(-self.size // self.batch_size)


def batches(x, batch_size) -> tf.data.Dataset:
    """`x`'s batches in order, for `model.predict`."""
    return tf.data.Dataset.from_tensor_slices(x).batch(batch_size)
