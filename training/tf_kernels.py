"""A convolution's bias on TensorFlow as a plain broadcast add, while
`training` trains, evaluates and predicts (`performance.kernels()`).

Keras adds a convolution's bias with `BiasAdd`, and TensorFlow's graph
optimiser then fuses the kernel's gradient with the bias's into oneDNN's
`Conv2DBackpropFilterWithBias`. On a 2-core CPU that fused kernel took
12.4 ms of a `simple_cnn` step (TensorFlow's profiler, batch 128), where the
unfused pair a plain add leads to, `Conv2DBackpropFilter` and `Sum`, took
5.7 ms. The forward pass still fuses convolution, bias and activation.
Same function: the tests compare outputs and gradients with Keras' own path.
Installed on the Keras versions it was written for (`zoo.patches.KERAS_VERSIONS`).
"""

import tensorflow as tf
from keras.src.layers.convolutional.base_conv import BaseConv

from zoo.patches import KerasPatch

_KERAS_CALL = BaseConv.call


def _conv_call(self, inputs):
    if not self.use_bias or self.data_format != "channels_last":
        return _KERAS_CALL(self, inputs)
    outputs = tf.add(self.convolution_op(inputs, self.kernel), self.bias)
    return outputs if self.activation is None else self.activation(outputs)


KERNELS = KerasPatch(
    "training's plain-add convolution bias on TensorFlow",
    (BaseConv, "call", _conv_call),
    written_for={
        "keras.src.layers.convolutional.base_conv.BaseConv.call": "ca1f1ff7ee71514e",
        "keras.src.layers.convolutional.base_conv.BaseConv.convolution_op": "11338f3149be6a3c",
    },
)
# Runs a block with convolution biases added by `AddV2`. A step traced inside
# keeps the graph it was traced with.
installed = KERNELS.installed
