import gzip

import numpy as np
import pytest

from training.data import from_arrays, load_dataset
from zoo import ZooError


def test_digits_are_8x8_images_in_unit_range():
    data = load_dataset("digits")
    assert data.input_shape == (8, 8, 1)
    assert data.num_classes == 10 and data.task == "classification"
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int32
    assert data.x_train.min() == 0.0 and data.x_train.max() == 1.0
    sizes = len(data.x_train), len(data.x_val), len(data.x_test)
    assert sum(sizes) == 1797 and sizes == (1258, 180, 359)
    # Stratified: every class is in every split.
    for y in (data.y_train, data.y_val, data.y_test):
        assert set(np.unique(y)) == set(range(10))


def test_splits_are_deterministic_from_the_seed_and_disjoint():
    a, b, c = (
        load_dataset("digits", seed=1),
        load_dataset("digits", seed=1),
        load_dataset("digits", seed=2),
    )
    np.testing.assert_array_equal(a.x_test, b.x_test)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    assert not np.array_equal(a.x_test, c.x_test)
    rows = lambda x: {r.tobytes() for r in x}  # noqa: E731
    # digits has a few duplicate images; no split shares more than those.
    assert len(rows(a.x_train) & rows(a.x_test)) <= 5


def test_synthetic_sets():
    linear = load_dataset("linear")
    assert linear.task == "regression" and linear.num_classes is None
    np.testing.assert_allclose(linear.y_train, 2 * linear.x_train[:, 0], atol=0.5)
    blobs = load_dataset("blobs")
    assert blobs.input_shape == (2,) and blobs.num_classes == 2


def test_from_arrays_infers_the_task():
    x = np.random.default_rng(0).normal(size=(50, 3))
    assert from_arrays(x, np.arange(50) % 3).num_classes == 3
    assert from_arrays(x, x[:, 0]).task == "regression"


@pytest.mark.parametrize(
    "x, y, message",
    [
        (np.zeros((0, 2)), np.zeros(0), "non-empty data set"),
        (np.zeros((5, 2)), np.zeros(4), "5 inputs and 4 targets"),
        (np.full((10, 2), np.nan), np.arange(10), "20 NaN or infinite values"),
        (np.array([["a"]] * 10), np.arange(10), "numeric inputs"),
    ],
)
def test_bad_arrays_fail_in_one_line(x, y, message):
    with pytest.raises(ZooError, match=message):
        from_arrays(x, y)


def test_unknown_data_set_lists_the_known_ones():
    with pytest.raises(
        ZooError,
        match="Unknown data set 'digit'. Expected one of: digits, digits_segmentation, mnist",
    ):
        load_dataset("digit")


@pytest.fixture
def keras_cache(tmp_path, monkeypatch):
    # Keras reads $KERAS_HOME once, at import; this is where it keeps the value.
    monkeypatch.setattr("keras.src.backend.config._KERAS_DIR", str(tmp_path))
    cache = tmp_path / "datasets"
    cache.mkdir()
    return cache


def _images(n, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n).astype(
        np.uint8
    )


def test_mnist_reads_a_cached_file(keras_cache):
    (x, y), (x_test, y_test) = _images(40, 0), _images(10, 1)
    np.savez(keras_cache / "mnist.npz", x_train=x, y_train=y, x_test=x_test, y_test=y_test)
    data = load_dataset("mnist")
    assert data.input_shape == (28, 28, 1) and data.num_classes == 10
    assert len(data.x_train) + len(data.x_val) == 40
    np.testing.assert_allclose(
        data.x_test[..., 0], x_test / 255.0, atol=1e-6
    )  # official split kept


def test_fashion_mnist_reads_cached_idx_files(keras_cache):
    folder = keras_cache / "fashion-mnist"
    folder.mkdir()
    for prefix, (x, y) in (("train", _images(40, 0)), ("t10k", _images(10, 1))):
        with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(b"\0" * 8 + y.tobytes())
        with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(b"\0" * 16 + x.tobytes())
    data = load_dataset("fashion_mnist")
    assert data.input_shape == (28, 28, 1) and len(data.x_test) == 10


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_offline_download_names_the_cache_path(name, keras_cache, monkeypatch):
    # What keras.utils.get_file raises when the host cannot be reached.
    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://example.invalid: None -- [Errno -2]")

    monkeypatch.setattr(f"keras.src.datasets.{name}.get_file", offline)
    with pytest.raises(
        ZooError, match=f"Could not load data set '{name}'.*URL fetch failure"
    ) as error:
        load_dataset(name)
    assert str(keras_cache) in str(error.value) and "\n" not in str(error.value)
