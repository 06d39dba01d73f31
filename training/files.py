"""A user's own data: a folder of class subfolders of images, or an `.npz`
file of arrays. Both are untrusted and checked before they are read.

A folder's images are read with Pillow, converted to RGB (or grayscale where
every image is) and resized to a square `image_size`. A folder that decodes
to at most `max_in_memory_bytes` is decoded once into an array; a larger one
becomes an `ImageFiles`, an array-like that decodes only the images it is
indexed with, so that training reads it a batch at a time.

An `.npz` file holds `x` and `y`, or `x_train`, `y_train`, `x_test` and
`y_test` (its own test split); each array's size is read from its header and
checked before it is loaded, and nothing in it is unpickled.

Each source has a fingerprint (its files' names and sizes, or an `.npz`
file's sha256) that a run records, so that a changed data set is noticed.
"""

import hashlib
import os
import zipfile

import keras
import numpy as np
from PIL import Image

from zoo import ZooError
from zoo.safety import check_unpacked_sizes

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# Decoded size up to which a folder is read into memory at once.
MAX_IN_MEMORY_BYTES = 1 << 30  # 1 GiB
# The most an `.npz` file's arrays may hold together.
MAX_NPZ_BYTES = 1 << 32  # 4 GiB
# Pillow refuses images above this many pixels: a small file can declare a
# huge image (a decompression bomb).
MAX_IMAGE_PIXELS = 1 << 26  # 67 M, 8192 x 8192
NPZ_SPLITS = (("x", "y"), ("x_train", "y_train", "x_test", "y_test"))


class ImageFiles:
    """Images read from files only when indexed, as an array of shape
    `(N, image_size, image_size, channels)` (or channels first, as Keras'
    image data format says) of float32 values in [0, 1].

    Indexing with an int gives one image; with a slice or an array of indices,
    an `ImageFiles` of those files; `np.asarray(...)` or `.decode()` reads them.
    `transform`, if given, maps each decoded batch to the float32 batch of the
    same shape given instead (a pretrained model's normalisation).
    """

    def __init__(self, paths, image_size, channels, transform=None):
        self.paths = np.asarray(paths, dtype=object)
        self.image_size, self.channels = image_size, channels
        self.transform = transform
        size = (image_size, image_size)
        channels_last = keras.config.image_data_format() == "channels_last"
        self.shape = (
            len(self.paths),
            *(size + (channels,) if channels_last else (channels, *size)),
        )
        self.dtype = np.dtype("float32")
        self.ndim = 4

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            return self[[index]].decode()[0]
        return ImageFiles(self.paths[index], self.image_size, self.channels, self.transform)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    def decode(self) -> np.ndarray:
        """Every image, read into one array."""
        images = np.empty(self.shape, self.dtype)
        for i, path in enumerate(self.paths):
            images[i] = _decode(path, self.image_size, self.channels)
        return images if self.transform is None else self.transform(images)

    def __array__(self, dtype=None, copy=None):
        images = self.decode()
        return images if dtype is None else images.astype(dtype)


def read_image_folder(root, *, image_size=None, max_in_memory_bytes=None):
    """Reads a folder of class subfolders of images.

    Args:
        root: the folder; each subfolder is a class, named by its folder, in
            sorted order.
        image_size: the side images are resized to. Defaults to `None`: the
            images' own size, which must then be the same for all.
        max_in_memory_bytes: the decoded size up to which the images are read
            into one array; above it they stay an `ImageFiles`. Defaults to
            `None`: `MAX_IN_MEMORY_BYTES`.

    Returns:
        `(x, y, classes, fingerprint)`: the images (an array or an
        `ImageFiles`), int32 labels, the class names and the fingerprint.
    """
    classes = sorted(
        entry.name
        for entry in os.scandir(root)
        if entry.is_dir(follow_symlinks=False) and not entry.name.startswith(".")
    )
    if not classes:
        raise ZooError(
            f"Expected a folder of class subfolders of images. Received: {root!r} with no "
            "subfolders"
        )
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(
            entry.path
            for entry in os.scandir(os.path.join(root, name))
            if entry.is_file(follow_symlinks=False) and entry.name.lower().endswith(IMAGE_SUFFIXES)
        )
        if not files:
            raise ZooError(
                f"Expected images ({', '.join(IMAGE_SUFFIXES)}) in every class subfolder. "
                f"Received: {os.path.join(root, name)!r} with none"
            )
        paths += files
        labels += [label] * len(files)
    size, channels = _common_size_and_channels(paths, image_size, root)
    images = ImageFiles(paths, size, channels)
    bound = MAX_IN_MEMORY_BYTES if max_in_memory_bytes is None else max_in_memory_bytes
    x = images.decode() if images.nbytes <= bound else images
    return x, np.asarray(labels, dtype="int32"), classes, _folder_fingerprint(root, paths)


def _common_size_and_channels(paths, image_size, root):
    """The side to resize to and 1 (every image grayscale) or 3 channels,
    from the images' headers."""
    if image_size is not None and (
        isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1
    ):
        raise ZooError(
            f"Expected image_size to be a positive int. Received: image_size={image_size!r}"
        )
    sizes, gray = set(), True
    for path in paths:
        with _open(path) as image:
            sizes.add(image.size)
            gray = gray and image.mode in ("1", "L", "I;16", "I")
    if image_size is None and len(sizes) > 1:
        a, b = sorted(sizes)[:2]
        raise ZooError(
            f"Expected images of one size, or an image_size (--image-size) to resize them to. "
            f"Received: {root!r} with images of {a[0]}x{a[1]} and {b[0]}x{b[1]} pixels"
        )
    if image_size is None:
        ((width, height),) = sizes
        if width != height:
            raise ZooError(
                f"Expected square images, or an image_size (--image-size) to resize them to. "
                f"Received: {root!r} with images of {width}x{height} pixels"
            )
        image_size = width
    return image_size, 1 if gray else 3


def _open(path):
    try:
        image = Image.open(path)
    except (OSError, Image.DecompressionBombError) as exc:
        raise ZooError(f"Expected a PNG or JPEG image. Received: {path!r} ({exc})") from None
    if image.format not in ("PNG", "JPEG"):
        image.close()
        raise ZooError(f"Expected a PNG or JPEG image. Received: {path!r} in {image.format}")
    if image.size[0] * image.size[1] > MAX_IMAGE_PIXELS:
        image.close()
        raise ZooError(
            f"Expected images of at most {MAX_IMAGE_PIXELS} pixels. Received: {path!r} of "
            f"{image.size[0]}x{image.size[1]}"
        )
    return image


def _decode(path, image_size, channels):
    with _open(path) as image:
        try:
            image = image.convert("L" if channels == 1 else "RGB")
            if image.size != (image_size, image_size):
                image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
            pixels = np.asarray(image, dtype="float32") / 255.0
        except OSError as exc:  # truncated or damaged data past the header
            raise ZooError(f"Could not read image {path!r}: {exc}") from None
    pixels = pixels.reshape(image_size, image_size, channels)
    if keras.config.image_data_format() == "channels_first":
        pixels = pixels.transpose(2, 0, 1)
    return pixels


def _folder_fingerprint(root, paths):
    digest = hashlib.sha256()
    for path in paths:
        digest.update(f"{os.path.relpath(path, root)}\t{os.path.getsize(path)}\n".encode())
    return f"{len(paths)} files, sha256 of names and sizes {digest.hexdigest()}"


def read_npz(path):
    """Reads an `.npz` file's arrays, checked before they are loaded.

    Returns:
        `(x, y, test, fingerprint)`, where `test` is `(x_test, y_test)` or
        `None`.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            check_unpacked_sizes(infos, path)
            keys = sorted(info.filename.removesuffix(".npy") for info in infos)
            expected = next((s for s in NPZ_SPLITS if sorted(s) == keys), None)
            if expected is None:
                raise ZooError(
                    "Expected an .npz file holding x and y, or x_train, y_train, x_test and "
                    f"y_test. Received: {path!r} holding {', '.join(keys) or 'nothing'}"
                )
            declared = sum(_declared_bytes(archive, f"{key}.npy", path) for key in keys)
    except zipfile.BadZipFile as exc:
        raise ZooError(f"Expected an .npz file. Received: {path!r} ({exc})") from None
    if declared > MAX_NPZ_BYTES:
        raise ZooError(
            f"Expected an .npz file of at most {MAX_NPZ_BYTES} bytes of arrays. Received: "
            f"{path!r} declaring {declared}"
        )
    with np.load(path, allow_pickle=False) as arrays:
        loaded = {key: arrays[key] for key in expected}
    test = (loaded["x_test"], loaded["y_test"]) if "x_test" in loaded else None
    x, y = (loaded["x"], loaded["y"]) if "x" in loaded else (loaded["x_train"], loaded["y_train"])
    return x, y, test, f"sha256 {_sha256(path)}"


def _declared_bytes(archive, member, path):
    """An `.npy` member's size from its header: shape times item size."""
    readers = {
        (1, 0): np.lib.format.read_array_header_1_0,
        (2, 0): np.lib.format.read_array_header_2_0,
    }
    with archive.open(member) as f:
        try:
            version = np.lib.format.read_magic(f)
            if version not in readers:
                raise ValueError(f"format version {version}")
            shape, _, dtype = readers[version](f)
        except ValueError as exc:
            raise ZooError(
                f"Expected .npy arrays in {path!r}. Received: {member} ({exc})"
            ) from None
    if dtype.kind not in "biuf":
        raise ZooError(f"Expected numeric arrays in {path!r}. Received: {member} of dtype {dtype}")
    return int(np.prod(shape, dtype=object)) * dtype.itemsize


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
