"""A convolution's bias on TensorFlow as a plain broadcast add, while
`training` trains, evaluates and predicts (`performance.kernels()`).

Keras adds a convolution's bias with `BiasAdd`, and TensorFlow's graph
optimiser then fuses the kernel's gradient with the bias's into oneDNN's
`Conv2DBackpropFilterWithBias`. On a 2-core CPU that fused kernel took
12.4 ms of a `simple_cnn` step (TensorFlow's profiler, batch 128), where the
unfused pair a plain add leads to, `Conv2DBackpropFilter` and `Sum`, took
5.7 ms. The forward pass still fuses convolution, bias and activation.
Same function: the tests compare outputs and gradients with Keras' own path.
"""

import tensorflow as tf
from keras.src.layers.convolutional.base_conv import BaseConv

from training.patches import Patches

_KERAS_CALL = BaseConv.call


def _conv_call(self, inputs):
    if not self.use_bias or self.data_format != "channels_last":
        return _KERAS_CALL(self, inputs)
    outputs = tf.add(self.convolution_op(inputs, self.kernel), self.bias)
    return outputs if self.activation is None else self.activation(outputs)


_PATCHES = Patches((BaseConv, "call", _conv_call))
# Runs a block with convolution biases added by `AddV2`. A step traced inside
# keeps the graph it was traced with.
installed = _PATCHES.installed
