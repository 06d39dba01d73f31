"""A user's own data (`training.files`): image folders and `.npz` files,
checked before they are read, each mistake one line."""

import zipfile

import keras
import numpy as np
import pytest
from data_format import image_data_format
from images import CLASSES, image_folder
from PIL import Image

from training import files
from training.data import load_dataset
from zoo import ZooError


def test_an_image_folder_is_a_data_set_of_its_classes(tmp_path):
    image_folder(tmp_path / "photos")
    (tmp_path / "photos" / "cat" / "notes.txt").write_text("not an image")  # ignored
    data = load_dataset(str(tmp_path / "photos"), image_size=8)
    assert data.source["classes"] == list(CLASSES) and data.num_classes == 3
    channels_last = keras.config.image_data_format() == "channels_last"
    assert data.input_shape == ((8, 8, 3) if channels_last else (3, 8, 8))
    assert len(data.x_train) + len(data.x_val) + len(data.x_test) == 30
    for x, y in [(data.x_train, data.y_train), (data.x_test, data.y_test)]:
        x = np.asarray(x)
        assert x.dtype == "float32" and x.min() >= 0 and x.max() <= 1
        # JPEG is lossy: the class is still plain in the mean pixel.
        np.testing.assert_allclose(x.mean(axis=(1, 2, 3)) * 255, y * 100, atol=3)
    assert data.source["fingerprint"].startswith("30 files")


def test_grayscale_images_keep_one_channel_and_their_size(tmp_path):
    image_folder(tmp_path / "digits", size=6, mode="L")
    data = load_dataset(str(tmp_path / "digits"))
    assert sorted(data.input_shape) == [1, 6, 6]


def test_a_folder_larger_than_the_bound_is_read_a_batch_at_a_time(tmp_path, monkeypatch):
    image_folder(tmp_path / "photos", per_class=4, size=16)
    decoded = []
    decode = files._decode
    monkeypatch.setattr(files, "_decode", lambda *args: decoded.append(args[0]) or decode(*args))
    x, y, classes, _ = files.read_image_folder(
        str(tmp_path / "photos"), max_in_memory_bytes=12 * 16 * 16 * 3 * 4 - 1
    )
    assert isinstance(x, files.ImageFiles) and not decoded  # nothing decoded yet
    assert x.shape[0] == 12 and x.nbytes > 12 * 16 * 16 * 3 * 4 - 1
    batch = x[np.array([5, 0])]
    assert isinstance(batch, files.ImageFiles) and not decoded
    pixels = np.asarray(batch)
    assert len(decoded) == 2 and pixels.shape == (2, *x.shape[1:])
    np.testing.assert_allclose(pixels.mean(axis=(1, 2, 3)) * 255, y[[5, 0]] * 100, atol=3)


def test_the_fingerprint_changes_with_the_files(tmp_path):
    image_folder(tmp_path / "photos")
    first = load_dataset(str(tmp_path / "photos")).source["fingerprint"]
    assert load_dataset(str(tmp_path / "photos")).source["fingerprint"] == first
    Image.new("RGB", (12, 12)).save(tmp_path / "photos" / "owl" / "extra.png")
    assert load_dataset(str(tmp_path / "photos")).source["fingerprint"] != first


def test_an_npz_file_is_a_data_set_with_its_own_test_split(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 4)).astype("float32"), np.arange(50) % 2
    np.savez(tmp_path / "whole.npz", x=x, y=y)
    whole = load_dataset(str(tmp_path / "whole.npz"))
    assert whole.num_classes == 2 and len(whole.x_test) == 10
    np.savez_compressed(tmp_path / "split.npz", x_train=x, y_train=y, x_test=x[:7], y_test=y[:7])
    split = load_dataset(str(tmp_path / "split.npz"))
    np.testing.assert_array_equal(split.x_test, x[:7])
    assert split.source["fingerprint"].startswith("sha256 ")


def _bad_folder(root, kind):
    image_folder(root, per_class=2)
    if kind == "empty_class":
        (root / "empty").mkdir()
    elif kind == "sizes":
        Image.new("RGB", (20, 20)).save(root / "cat" / "big.png")
    elif kind == "not_square":
        for path in root.rglob("*.*"):
            Image.new("RGB", (12, 10)).save(path)
    elif kind == "garbage":
        (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    elif kind == "gif":
        Image.new("RGB", (12, 12)).save(root / "dog" / "moving.png", format="GIF")
    elif kind == "bomb":
        path = root / "dog" / "huge.png"
        Image.new("1", (12, 12)).save(path)
        # The header declares 100000 x 100000 pixels; decoding would take 30 GB.
        data = bytearray(path.read_bytes())
        data[16:24] = (100_000).to_bytes(4, "big") * 2
        path.write_bytes(data)
    return root


@pytest.mark.parametrize(
    "kind, message",
    [
        ("empty_class", "Expected images .* in every class subfolder. Received: .*empty.* none"),
        ("sizes", "Expected images of one size, or an image_size .* 12x12 and 20x20"),
        ("not_square", "Expected square images, or an image_size .* 12x10"),
        ("garbage", "Expected a PNG or JPEG image. Received: .*broken.png"),
        ("gif", "Expected a PNG or JPEG image. Received: .*moving.png.* in GIF"),
        ("bomb", "Expected a PNG or JPEG image|Expected images of at most"),
    ],
)
def test_a_bad_image_folder_is_one_line(tmp_path, kind, message):
    root = _bad_folder(tmp_path / "photos", kind)
    with pytest.raises(ZooError, match=message) as error:
        load_dataset(str(root))
    assert "\n" not in str(error.value)


def _bad_npz(path, kind):
    x, y = np.zeros((20, 3), "float32"), np.zeros(20, "int64")
    if kind == "keys":
        np.savez(path, inputs=x, labels=y)
    elif kind == "objects":
        np.savez(path, x=np.array([{"a": 1}] * 20, dtype=object), y=y)
    elif kind == "bomb":
        np.savez_compressed(path, x=np.zeros((1 << 13, 1 << 10), "float32"), y=y)
    elif kind == "declared":
        np.savez(path, x=x, y=y)
        with zipfile.ZipFile(path) as archive:
            members = {name: archive.read(name) for name in archive.namelist()}
        # A header declaring 2**40 floats over 240 bytes of data.
        members["x.npy"] = members["x.npy"].replace(b"(20, 3)", b"(1099511627776, 1)".ljust(7))
        with zipfile.ZipFile(path, "w") as archive:
            for name, data in members.items():
                archive.writestr(name, data)
    else:
        path.write_bytes(b"not a zip")
    return path


@pytest.mark.parametrize(
    "kind, message",
    [
        ("keys", "holding x and y, or x_train.* Received: .* holding inputs, labels"),
        ("objects", "Expected numeric arrays .* Received: x.npy of dtype object"),
        ("bomb", "decompression bomb"),
        ("declared", "at most 4294967296 bytes of arrays. Received: .* declaring 4398046511264"),
        ("not_a_zip", "Expected an .npz file. Received"),
    ],
)
def test_a_bad_npz_file_is_one_line(tmp_path, kind, message):
    path = _bad_npz(tmp_path / "data.npz", kind)
    with pytest.raises(ZooError, match=message) as error:
        load_dataset(str(path))
    assert "\n" not in str(error.value)


def test_an_unknown_path_names_what_is_expected(tmp_path):
    with pytest.raises(ZooError, match="Unknown data set .*a folder of class subfolders"):
        load_dataset(str(tmp_path / "missing"))


def test_images_follow_the_image_data_format(tmp_path):
    image_folder(tmp_path / "photos", per_class=2, size=4)
    x, *_ = files.read_image_folder(str(tmp_path / "photos"))
    with image_data_format("channels_first"):
        first, *_ = files.read_image_folder(str(tmp_path / "photos"))
    assert first.shape == (6, 3, 4, 4)
    np.testing.assert_array_equal(first, x.transpose(0, 3, 1, 2))
