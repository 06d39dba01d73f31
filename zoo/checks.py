"""Argument checks shared by the model builders, so a bad argument fails in one
line at build time rather than deep inside a framework."""

import keras

from zoo.errors import ZooError


def shape(input_shape, *, model, rank=None):
    """Returns `input_shape` as a tuple of positive ints, or raises `ZooError`."""
    try:
        dims = tuple(int(d) for d in input_shape)
        valid = all(d > 0 and d == d_in for d, d_in in zip(dims, input_shape, strict=True))
    except (TypeError, ValueError):
        valid = False
    if not valid or not dims or (rank is not None and len(dims) != rank):
        expected = f"{rank} positive int{'s' * (rank > 1)}" if rank else "a tuple of positive ints"
        raise ZooError(
            f"{model} expects input_shape to be {expected}. Received: input_shape={input_shape!r}"
        )
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
        raise ZooError(f"{model} expects {name} to be one of {options}. Received: {name}={value!r}")
    return value


def positive_int(value, *, name, model):
    """Returns `value` if it is a positive int, or raises `ZooError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ZooError(f"{model} expects {name} to be a positive int. Received: {name}={value!r}")
    return value


def fraction(value, *, name, model):
    """Returns `value` if it is a float in [0, 1), or raises `ZooError`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ZooError(
            f"{model} expects {name} to be a number in [0, 1). Received: {name}={value!r}"
        )
    return float(value)
