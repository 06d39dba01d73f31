"""Data sets, split deterministically into train, validation and test.

`digits` (scikit-learn's bundled 8x8 handwritten digits) is the default: real
data that needs no network; `digits_segmentation` labels each digit's strokes
for per-pixel classification. `mnist`, `fashion_mnist` and `cifar10` come from
`keras.datasets`, downloaded into the Keras cache on first use. `linear`,
`blobs`, `sequence_order` (token sequences, labels decided by order) and
`arithmetic` (next-token prediction) are synthetic.
"""

import dataclasses
import os

import keras
import numpy as np
from keras.src.backend import config as keras_config  # keras_home has no public alias
from sklearn import datasets as sk_datasets
from sklearn.model_selection import train_test_split

from training import files
from zoo import ZooError


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """Train, validation and test arrays of one data set.

    `num_classes` is `None` for regression targets; classification labels are
    int32 in `[0, num_classes)`.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int | None
    #: Where the data came from, for a run's config.json: `{"path": ...,
    #: "fingerprint": ..., "classes": [...]}` for a user's file or folder.
    source: dict | None = None

    @property
    def task(self) -> str:
        if self.num_classes is None:
            return "regression"
        return "segmentation" if self.y_train.ndim == 3 else "classification"

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def load_dataset(
    name: str,
    *,
    seed: int = 0,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.2,
    image_size: int | None = None,
) -> Dataset:
    """Loads a data set by name, or a user's own from a path, and splits it
    with `seed`.

    Data sets with an official test split keep it; `test_fraction` applies to
    the others.

    Args:
        name: one of `DATASETS`; or a folder of class subfolders of PNG or JPEG
            images; or an `.npz` file of `x` and `y` (or `x_train`,
            `y_train`, `x_test`, `y_test`). See `training.files`.
        seed: decides the split. Defaults to `0`.
        validation_fraction: share held out for validation. Defaults to `0.1`.
        test_fraction: share held out for testing. Defaults to `0.2`.
        image_size: the side an image folder's images are resized to.
            Defaults to `None`: their own size, which must be one for all.

    Example:

    >>> data = load_dataset("digits")
    >>> data.input_shape, data.num_classes
    ((8, 8, 1), 10)
    >>> load_dataset("photos/", image_size=64).source["classes"]
    ['cat', 'dog']
    """
    splits = dict(seed=seed, validation_fraction=validation_fraction, test_fraction=test_fraction)
    if name in DATASETS:
        x, y, test = DATASETS[name](seed)
        return from_arrays(x, y, test=test, name=name, **splits)
    path = os.fspath(name)
    if os.path.isdir(path):
        x, y, classes, fingerprint = files.read_image_folder(path, image_size=image_size)
        source = {"path": os.path.abspath(path), "fingerprint": fingerprint, "classes": classes}
        return from_arrays(x, y, name=path, source=source, **splits)
    if path.endswith(".npz") and os.path.isfile(path):
        x, y, test, fingerprint = files.read_npz(path)
        source = {"path": os.path.abspath(path), "fingerprint": fingerprint}
        return from_arrays(x, y, test=test, name=path, source=source, **splits)
    raise ZooError(
        f"Unknown data set {name!r}. Expected one of: {', '.join(DATASETS)}, a folder of "
        "class subfolders of images, or an .npz file"
    )


def from_arrays(
    x,
    y,
    *,
    test=None,
    name="arrays",
    seed=0,
    validation_fraction=0.1,
    test_fraction=0.2,
    source=None,
) -> Dataset:
    """Builds a `Dataset` from arrays, splitting off validation and test sets.

    Integer targets are class labels; float targets are regression targets.

    Args:
        x: inputs, one sample per row.
        y: targets, one per sample.
        test: an official `(x_test, y_test)` split, if there is one.
            Defaults to `None`.
        name: a name for messages and outputs. Defaults to `"arrays"`.
        seed: decides the split. Defaults to `0`.
        validation_fraction: share held out for validation. Defaults to `0.1`.
        test_fraction: share held out for testing when `test` is `None`.
            Defaults to `0.2`.
        source: where the arrays came from (`Dataset.source`). Defaults to
            `None`.
    """
    x, y = _checked_arrays(x, y, name)
    num_classes = int(y.max()) + 1 if y.dtype.kind == "i" else None
    if test is None:
        x, x_test, y, y_test = _split(x, y, test_fraction, num_classes, seed, name)
    else:
        x_test, y_test = _checked_arrays(*test, f"{name} test split")
    x_train, x_val, y_train, y_val = _split(
        x,
        y,
        validation_fraction / (1 - test_fraction if test is None else 1),
        num_classes,
        seed,
        name,
    )
    return Dataset(name, x_train, y_train, x_val, y_val, x_test, y_test, num_classes, source)


def _checked_arrays(x, y, name):
    if isinstance(x, files.ImageFiles):  # decoded images are in [0, 1]
        return x, _checked_targets(np.asarray(y), name)
    x, y = np.asarray(x), np.asarray(y)
    if len(x) == 0:
        raise ZooError(f"Expected a non-empty data set. Received: {name} with 0 samples")
    if len(x) != len(y):
        raise ZooError(
            f"Expected one target per sample. Received: {name} with "
            f"{len(x)} inputs and {len(y)} targets"
        )
    if x.dtype.kind not in "biuf":
        raise ZooError(f"Expected numeric inputs. Received: {name} of dtype {x.dtype}")
    if x.dtype.kind in "biu" and x.ndim == 2:
        # Integer sequences are tokens, kept as integers for Embedding layers.
        return x.astype("int32"), _checked_targets(y, name)
    x = x.astype("float32")
    if not np.isfinite(x).all():
        raise ZooError(
            f"Expected finite inputs. Received: {name} with "
            f"{int((~np.isfinite(x)).sum())} NaN or infinite values"
        )
    return x, _checked_targets(y, name)


def _checked_targets(y, name):
    if y.dtype.kind not in "biu":
        return y.astype("float32")
    # Labels are one per sample ((N,) or (N, 1)), per position (N, T) or per
    # pixel (N, H, W).
    y = y.reshape(len(y)) if y.ndim == 1 or y.shape[1:] == (1,) else y
    if y.min() < 0:
        raise ZooError(f"Expected class labels >= 0. Received: {name} label {y.min()}")
    return y.astype("int32")


def _split(x, y, fraction, num_classes, seed, name):
    size = round(len(x) * fraction)
    if not 0 < size < len(x):
        raise ZooError(
            f"Expected enough samples to hold out {fraction:.0%}. Received: "
            f"{name} with {len(x)} samples"
        )
    # Stratify where every class can appear on both sides, so small splits
    # still hold every class.
    counts = np.bincount(y) if num_classes and y.ndim == 1 else np.array([])
    stratify = y if counts.size and counts[counts > 0].min() >= 2 and size >= num_classes else None
    # Split indices: images read from files are indexed, not copied.
    kept, held_out = train_test_split(
        np.arange(len(x)), test_size=size, random_state=seed, stratify=stratify
    )
    return x[kept], x[held_out], y[kept], y[held_out]


def _images(x, scale):
    """uint8-like images `(N, H, W[, C])` → float32 in [0, 1] in the image format."""
    x = np.asarray(x, dtype="float32") / scale
    if x.ndim == 3:
        x = x[..., None]
    if keras.config.image_data_format() == "channels_first":
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x)


def _digits(seed):
    digits = sk_datasets.load_digits()
    return _images(digits.images, 16.0), digits.target, None


def _digits_segmentation(seed):
    """Each digit's strokes (pixels at least half on) labelled with the digit's
    class plus one; the background is 0. A model must both find the strokes and
    recognise the digit."""
    x, y, _ = _digits(seed)
    channels = x[..., 0] if keras.config.image_data_format() == "channels_last" else x[:, 0]
    masks = np.where(channels >= 0.5, y[:, None, None] + 1, 0)
    return x, masks.astype("int32"), None


def _linear(seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-5, 5, size=(1000, 1)).astype("float32")
    y = 2 * x[:, 0] + rng.normal(0, 0.1, size=1000)
    return x, y.astype("float32"), None


def _blobs(seed):
    # Two unit-variance clusters 4*sqrt(2) apart: separable up to ~0.2% overlap.
    x, y = sk_datasets.make_blobs(n_samples=1000, centers=[(-2, -2), (2, 2)], random_state=seed)
    return x, y, None


def _keras_dataset(name, files, load):
    """A `keras.datasets` loader that explains how to fix a failed download."""

    def loader(seed):
        cache = os.path.join(_keras_home(), "datasets")
        try:
            (x, y), (x_test, y_test) = load(cache)
        except Exception as exc:  # any download or read failure
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ZooError(
                f"Could not load data set {name!r} ({reason}). Offline, place "
                f"{files} in {cache} and retry"
            ) from exc
        return _images(x, 255.0), y, (_images(x_test, 255.0), y_test)

    return loader


def _load_mnist(cache):
    # Keras re-checks the file hash on every load and re-downloads on a mismatch,
    # so a file already in the cache is read directly (and never unpickled).
    path = os.path.join(cache, "mnist.npz")
    if not os.path.exists(path):
        keras.datasets.mnist.load_data()
    with np.load(path, allow_pickle=False) as f:
        return (f["x_train"], f["y_train"]), (f["x_test"], f["y_test"])


def _load_cifar10(cache):
    (x, y), (x_test, y_test) = keras.datasets.cifar10.load_data()
    if keras.config.image_data_format() == "channels_first":
        # Keras already moved the channels; `_images` expects them last.
        x, x_test = x.transpose(0, 2, 3, 1), x_test.transpose(0, 2, 3, 1)
    return (x, y), (x_test, y_test)


def _keras_home():
    # Where keras.utils.get_file caches: Keras' home ($KERAS_HOME or ~/.keras, read
    # when keras is imported), else /tmp/.keras where that is not writable.
    home = os.path.expanduser(keras_config.keras_home())
    return home if os.access(home, os.W_OK) else os.path.join("/tmp", ".keras")


def _sequence_order(seed, length=32, vocab_size=64, n=2000):
    """Random tokens holding markers 0 and 1 once each; the label says whether 0
    comes first. Both classes have the same tokens, so only order tells them apart."""
    rng = np.random.default_rng(seed)
    x = rng.integers(2, vocab_size, size=(n, length))
    first, second = (rng.permuted(np.tile(np.arange(length), (n, 1)), axis=1)[:, :2]).T
    rows = np.arange(n)
    x[rows, first], x[rows, second] = 0, 1
    return x, (first < second).astype("int32"), None


def _arithmetic(seed, length=32, vocab_size=64, n=2000):
    """Arithmetic progressions mod `vocab_size` with a random start and a step
    of 1 to 4, for next-token prediction: each target is the next token."""
    rng = np.random.default_rng(seed)
    start = rng.integers(0, vocab_size, size=(n, 1))
    step = rng.integers(1, 5, size=(n, 1))
    tokens = (start + step * np.arange(length + 1)) % vocab_size
    return tokens[:, :-1], tokens[:, 1:], None


DATASETS = {
    "digits": _digits,
    "digits_segmentation": _digits_segmentation,
    "mnist": _keras_dataset("mnist", "mnist.npz", _load_mnist),
    "fashion_mnist": _keras_dataset(
        "fashion_mnist",
        "the four *-idx?-ubyte.gz files under fashion-mnist/",
        lambda cache: keras.datasets.fashion_mnist.load_data(),
    ),
    "cifar10": _keras_dataset(
        "cifar10",
        "cifar-10-batches-py-target_archive (cifar-10-python.tar.gz)",
        _load_cifar10,
    ),
    "linear": _linear,
    "blobs": _blobs,
    "sequence_order": _sequence_order,
    "arithmetic": _arithmetic,
}
