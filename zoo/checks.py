"""Argument checks shared by the model builders, so a bad argument fails in one
line at build time rather than deep inside a framework.

Each check returns the value it accepts and otherwise raises a `ZooError` that
says what was expected and ends `Received: name=value`. A builder calls one
per argument, before building anything.
"""

import math
import re

import keras

from zoo.errors import ZooError

# What every backend accepts in a weight's name (Keras refuses "/", torch ".",
# TensorFlow a name scope starting with "_" or "-"): every layer name starts
# with the model's name.
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def invalid(value, expected, *, name, model):
    """Raises the `ZooError` for an argument: `MODEL expects NAME to be
    EXPECTED. Received: NAME=VALUE`."""
    raise ZooError(f"{model} expects {name} to be {expected}. Received: {name}={value!r}")


def model_name(value):
    """Returns `value` if it can name a model and prefix its layers' names,
    or raises `ZooError`."""
    if not isinstance(value, str) or not _MODEL_NAME.fullmatch(value):
        raise ZooError(
            "Expected name to be letters, digits, '_' and '-', starting with a letter or "
            f"digit. Received: name={value!r}"
        )
    return value


def shape(input_shape, *, model, rank=None):
    """Returns `input_shape` as a tuple of positive ints, or raises `ZooError`."""
    try:
        dims = tuple(int(d) for d in input_shape)
        valid = all(
            d > 0 and d == d_in and not isinstance(d_in, bool)
            for d, d_in in zip(dims, input_shape, strict=True)
        )
    except (TypeError, ValueError):
        valid = False
    if not valid or not dims or (rank is not None and len(dims) != rank):
        expected = f"{rank} positive int{'s' * (rank > 1)}" if rank else "a tuple of positive ints"
        invalid(input_shape, expected, name="input_shape", model=model)
    return dims


def image_shape(input_shape, *, model, min_size=1, multiple_of=1):
    """Checks an image shape in the current `image_data_format`: height and
    width at least `min_size` and divisible by `multiple_of`.

    Returns:
        `(shape, (height, width))`.
    """
    dims = shape(input_shape, model=model, rank=3)
    channels_last = keras.config.image_data_format() == "channels_last"
    height, width = dims[:2] if channels_last else dims[1:]
    if min(height, width) < min_size:
        layout = "(height, width, channels)" if channels_last else "(channels, height, width)"
        raise ZooError(
            f"{model} expects input_shape {layout} with height and width of at "
            f"least {min_size}. Received: input_shape={input_shape!r}"
        )
    if height % multiple_of or width % multiple_of:
        raise ZooError(
            f"{model} expects input_shape with height and width divisible by "
            f"{multiple_of}. Received: input_shape={input_shape!r}"
        )
    return dims, (height, width)


def one_of(value, options, *, name, model):
    """Returns `value` if it is one of `options`, or raises `ZooError`."""
    if value not in options:
        invalid(value, f"one of {options}", name=name, model=model)
    return value


def flag(value, *, name, model):
    """Returns `value` if it is `True` or `False`, or raises `ZooError`."""
    if not isinstance(value, bool):
        invalid(value, "True or False", name=name, model=model)
    return value


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)  # a bool is an int in Python


def _is_number(value):
    """An int or a finite float (NaN compares false with every bound)."""
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


def positive_int(value, *, name, model):
    """Returns `value` if it is a positive int, or raises `ZooError`."""
    if not _is_int(value) or value < 1:
        invalid(value, "a positive int", name=name, model=model)
    return value


def positive_ints(value, *, name, model):
    """Returns `value` as a tuple if it is a tuple or list of positive ints
    (possibly empty), or raises `ZooError`."""
    if not isinstance(value, (tuple, list)) or not all(_is_int(v) and v > 0 for v in value):
        invalid(value, "a tuple of positive ints", name=name, model=model)
    return tuple(value)


def positive_number(value, *, name, model):
    """Returns `value` as a float if it is a finite number > 0, or raises `ZooError`."""
    if not _is_number(value) or value <= 0:
        invalid(value, "a positive number", name=name, model=model)
    return float(value)


def non_negative_number(value, *, name, model):
    """Returns `value` as a float if it is a finite number >= 0, or raises `ZooError`."""
    if not _is_number(value) or value < 0:
        invalid(value, "a number >= 0", name=name, model=model)
    return float(value)


def fraction(value, *, name, model, include_one=False):
    """Returns `value` as a float if it is a number in [0, 1), or in [0, 1]
    with `include_one`, or raises `ZooError`."""
    if not _is_number(value) or not (0 <= value <= 1 if include_one else 0 <= value < 1):
        invalid(value, f"a number in [0, 1{']' if include_one else ')'}", name=name, model=model)
    return float(value)


def activation(value, *, name, model):
    """Returns `value` if Keras knows it as an activation (a name such as
    `"relu"`, a function or `None`), or raises `ZooError`."""
    try:
        keras.activations.get(value)
    except ValueError:  # Keras' only error for an identifier it does not know
        invalid(value, "a Keras activation such as 'relu'", name=name, model=model)
    return value
