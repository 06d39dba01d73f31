"""Two paths of Keras 3.15's torch backend, run on torch's own kernels while
`training` trains, evaluates and predicts (`performance.kernels()`), on the
Keras versions they were written for (`zoo.patches.KERAS_VERSIONS`).

Measured on a 2-core CPU, `simple_cnn` at batch 128 (see the README's
"Speed against native loops"):

- **Image layout.** For channels-last images, Keras copies the input of every
  convolution and pooling into a contiguous NCHW tensor, and the convolution
  then copies it back into torch's channels-last memory format. A permuted view
  of a contiguous NHWC tensor already *is* NCHW in channels-last memory
  format, which torch's convolution and pooling kernels take as it is; their
  outputs, permuted back, are contiguous NHWC again. The copies (and their
  backward) took more than half of a `simple_cnn` step.
- **BatchNormalization.** Keras computes the batch moments and the
  normalisation as ten element-wise ops and reductions over the activations,
  forward and backward; torch's fused `native_batch_norm` reads them twice.

Both compute the same function (the tests compare them with Keras' own paths);
the batch variance comes from the fused kernel's inverse standard deviation.
Anything else (masks, renormalisation, synchronized or non-float32 batch norm,
other ranks) takes Keras' path.

Keras' main branch (3.16) has added a pointwise-convolution fast path to
`conv` on torch, which skips `_transpose_spatial_inputs` for 1x1 kernels:
`KERNELS.written_for` holds `conv` and every other caller of the function
replaced here, so that such a change fails a test before the range is
widened.
"""

import torch
from keras.src.backend.torch import nn as torch_nn
from keras.src.layers.normalization.batch_normalization import BatchNormalization

from zoo.patches import KerasPatch

_KERAS_TRANSPOSE = torch_nn._transpose_spatial_inputs
_KERAS_BATCH_NORM = BatchNormalization.call


def _to_channels_first(inputs):
    # NHWC, contiguous -> NCHW in channels-last memory format, without a copy.
    if inputs.ndim == 4 and inputs.is_contiguous():
        return inputs.permute(0, 3, 1, 2)
    return _KERAS_TRANSPOSE(inputs)


def _batch_norm_call(self, inputs, training=None, mask=None):
    if (
        mask is not None
        or self.renorm
        or self.synchronized
        or inputs.dtype != torch.float32
        or self.compute_dtype != "float32"
    ):
        return _KERAS_BATCH_NORM(self, inputs, training, mask)
    axis = self.axis % inputs.ndim
    x = torch.movedim(inputs, axis, 1)
    gamma = self.gamma.value if self.scale else None
    beta = self.beta.value if self.center else None
    if training and self.trainable:
        outputs, mean, inverse_std = torch.ops.aten.native_batch_norm(
            x, gamma, beta, None, None, True, 0.0, self.epsilon
        )
        with torch.no_grad():
            variance = inverse_std.pow(-2) - self.epsilon
            self.moving_mean.assign(
                self.moving_mean.value * self.momentum + mean * (1.0 - self.momentum)
            )
            self.moving_variance.assign(
                self.moving_variance.value * self.momentum + variance * (1.0 - self.momentum)
            )
    else:
        outputs = torch.nn.functional.batch_norm(
            x,
            self.moving_mean.value,
            self.moving_variance.value,
            gamma,
            beta,
            training=False,
            eps=self.epsilon,
        )
    return torch.movedim(outputs, 1, axis)


KERNELS = KerasPatch(
    "training's torch kernels for channels-last layout and BatchNormalization",
    (torch_nn, "_transpose_spatial_inputs", _to_channels_first),
    (BatchNormalization, "call", _batch_norm_call),
    written_for={
        "keras.src.backend.torch.nn._transpose_spatial_inputs": "ef6498d8ab66ab0d",
        "keras.src.layers.normalization.batch_normalization.BatchNormalization.call": (
            "31502bd832c5eb64"
        ),
        # Every caller of _transpose_spatial_inputs, which must take its
        # channels-last view as they take Keras' contiguous copy.
        "keras.src.backend.torch.nn.conv": "3d783ab74d5c3f4c",
        "keras.src.backend.torch.nn.conv_transpose": "f2adbbe5dc3ca326",
        "keras.src.backend.torch.nn.max_pool": "d95d3324af4b0969",
        "keras.src.backend.torch.nn.average_pool": "af950ffb9697dca5",
        "keras.src.backend.torch.nn.adaptive_average_pool": "eb14debbbff75379",
        "keras.src.backend.torch.nn.adaptive_max_pool": "58a272171b374dfb",
    },
)
# Runs a block with both paths on torch's kernels.
installed = KERNELS.installed
