"""Saving and loading zoo models and weights.

Loading checks a file before Keras reads it (`zoo.safety`) and, where a
`NAME.sha256` sidecar sits beside it, that its bytes match. Saving writes
atomically, with such a sidecar: a failed write never leaves a file under its
final name.
"""

import contextlib
import hashlib
import io
import os
import re
import stat
import tempfile

import keras

# Keras' public `load_model` and `load_weights` take only paths; these also
# take the bytes that were checked, so that a file changed after the checks is
# not loaded.
from keras.src.saving import saving_lib

from zoo import safety
from zoo.errors import ZooError

# The most a model or weights file may hold; it is read into memory once. As
# much as an archive may unpack to (`safety.MAX_UNCOMPRESSED_BYTES`).
MAX_FILE_BYTES = 1 << 30  # 1 GiB
_SIDECAR = ".sha256"


def load_model(path) -> keras.Model:
    """Loads a `.keras` file, refusing one that could run code or is broken.

    The archive is checked before Keras reads it (see `zoo.safety`): only a
    config, metadata, weights and assets, naming only Keras and zoo objects,
    with no `Lambda` layers, and intact. Keras then loads the same bytes with
    safe mode on. If `PATH.sha256` exists (`zoo.save_model` and
    `training.fit` write one), the file must match it. Importing `zoo`
    registers every zoo layer, so no `custom_objects` are needed. The model
    is rebuilt under the dtype policy it was saved with, so that a
    `mixed_float16` one keeps its `LossScaleOptimizer` and its state.

    Args:
        path: path to a `.keras` file.

    Example:

    >>> model = zoo.load_model("runs/digits/model.keras")
    """
    path = _existing_file(path, (".keras",), "model")
    data = _read_verified(path)
    config = safety.check_keras_archive(data, path)
    try:
        # A Sequential or functional model takes Keras' global policy when it
        # is rebuilt, not the one it was saved with: under float32 it would
        # compile its optimizer without the LossScaleOptimizer that
        # `mixed_float16` wraps it in, and the saved state would not load.
        with dtype_policy(_saved_dtype_policy(config) or keras.config.dtype_policy()):
            return saving_lib.load_model(io.BytesIO(data), compile=True, safe_mode=True)
    except Exception as exc:  # a file that passed the checks but Keras cannot build
        raise ZooError(f"Could not load the model in {path!r}: {safety.first_line(exc)}") from exc


def load_weights(model, path) -> keras.Model:
    """Loads weights into a built model, leaving it unchanged on any error.

    The file is checked first: a `.keras` archive as by `load_model`, a
    `.weights.h5` file for links to other files, virtual datasets and shape
    bombs; and against `PATH.sha256` where it exists. If Keras then fails
    (weights of another architecture), every variable and every layer's
    derived state is restored: the model computes what it did before.

    Args:
        model: a built `keras.Model`.
        path: a `.weights.h5` file (as `save_weights` writes) or a `.keras`
            file.

    Returns:
        `model`, for chaining.

    Example:

    >>> model = zoo.load_weights(zoo.create_model("mlp"), "mlp.weights.h5")
    """
    path = _existing_file(path, (".weights.h5", ".keras"), "weights")
    data = _read_verified(path)
    if path.endswith(".keras"):
        safety.check_keras_archive(data, path)
    else:
        safety.check_weights_h5(io.BytesIO(data), path)
    state = _ModelState(model)
    try:
        saving_lib.load_weights_only(model, _CheckedBytes(data, path))
    except Exception as exc:
        state.restore()
        # Keras' message spans lines; keep its first and the shapes that differ.
        reason = safety.first_line(exc).rstrip(":")
        shapes = re.search(r"variable\.shape=\(.*?\), Received: value\.shape=\(.*?\)", str(exc))
        raise ZooError(
            f"Could not load {path!r} into model {model.name!r}; its weights are "
            f"unchanged: {reason}{f' ({shapes.group(0)})' if shapes else ''}"
        ) from exc
    return model


@contextlib.contextmanager
def dtype_policy(policy):
    """Builds the layers made inside it with `policy` (a name or a
    `keras.DTypePolicy`), and puts Keras' global policy back after."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _saved_dtype_policy(config):
    """The name of the dtype policy a `.keras` file's model was saved with, if
    its config names a plain one (`mixed_float16`)."""
    saved = (config.get("config") or {}).get("dtype")
    if isinstance(saved, dict) and saved.get("class_name") == "DTypePolicy":
        saved = (saved.get("config") or {}).get("name")
    return saved if isinstance(saved, str) else None


class _ModelState:
    """A model's variables and every layer's attributes, to put back after a
    failed load.

    Keras' `load_own_variables` does more than assign variables: it rebinds
    state derived from them, such as an adapted `Normalization`'s mean and
    variance (`finalize_state`), `Discretization`'s summary or `Dense`'s
    calibration flags. Restoring the variables alone would leave the model
    computing with the refused file's values.
    """

    def __init__(self, model):
        variables = list(model.variables)
        optimizer = getattr(model, "optimizer", None)
        if optimizer is not None and optimizer.built:
            variables += optimizer.variables
        self.values = [(v, keras.ops.convert_to_numpy(v)) for v in variables]
        self.attributes = [(layer, dict(vars(layer))) for layer in model._flatten_layers()]

    def restore(self):
        for variable, value in self.values:
            variable.assign(value)
        for layer, attributes in self.attributes:
            current = vars(layer)
            for name in current.keys() - attributes.keys():
                del current[name]
            current.update(attributes)


class _CheckedBytes(io.BytesIO):
    """A file's checked bytes, which `str()` names as the file.

    `load_weights_only` picks the format from `str(filepath)` and reads a
    `BytesIO` where it would open the file. The name is the base name: a path
    that looks remote (`/gcs/...`, `gs://...`) Keras would fetch again.
    """

    def __init__(self, data, path):
        super().__init__(data)
        self.name = os.path.basename(path)

    def __str__(self):
        return self.name


def save_model(model, path) -> None:
    """Saves a `.keras` file atomically, with a `PATH.sha256` sidecar.

    Args:
        model: a `keras.Model`.
        path: where to write, ending in `.keras`.
    """
    _save_with_digest(os.fspath(path), ".keras", model.save)


def save_weights(model, path) -> None:
    """Saves a model's weights atomically, with a `PATH.sha256` sidecar.

    The sidecar has `sha256sum`'s format, so `sha256sum -c NAME.weights.h5.sha256`
    checks the file too; `load_weights` refuses a file that does not match it.

    Args:
        model: a built `keras.Model`.
        path: where to write, ending in `.weights.h5`.

    Example:

    >>> zoo.save_weights(model, "mlp.weights.h5")  # and mlp.weights.h5.sha256
    """
    _save_with_digest(os.fspath(path), ".weights.h5", model.save_weights)


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path`; moves it into place on success."""
    directory, name = os.path.split(os.path.abspath(path))
    # Keep the suffix: Keras picks the file format from it.
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=name)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        # mkstemp makes the file private; give it the mode open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _save_with_digest(path, suffix, save):
    if not path.endswith(suffix):
        raise ZooError(f"Expected a path ending in {suffix}. Received: path={path!r}")
    sidecar = path + _SIDECAR
    # Moved into place in this order: the old sidecar goes, then the file (the
    # inner block's exit), then the new sidecar (the outer's). A crash between
    # any two steps leaves a file that loads: the old or the new one, matching
    # its sidecar or with none, which loads unverified. A new sidecar beside
    # the old file would make it unloadable.
    with atomic_path(sidecar) as sidecar_tmp, atomic_path(path) as tmp:
        save(tmp)
        with open(tmp, "rb") as f:
            digest = hashlib.sha256()
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        with open(sidecar_tmp, "w") as f:
            f.write(f"{digest.hexdigest()}  {os.path.basename(path)}\n")
        with contextlib.suppress(FileNotFoundError):
            os.remove(sidecar)


def _existing_file(path, suffixes, kind) -> str:
    path = os.fspath(path)
    expected = " or ".join(suffixes)
    if not path.endswith(suffixes):
        raise ZooError(f"Expected a path to a {expected} file. Received: path={path!r}")
    if not os.path.isfile(path):
        raise ZooError(f"No {kind} file at {path!r}: expected an existing {expected} file")
    return path


def _read_verified(path) -> bytes:
    """The file's bytes, checked against `PATH.sha256` if there is one."""
    data = _read_regular_file(path, MAX_FILE_BYTES, path)
    sidecar = path + _SIDECAR
    if not os.path.lexists(sidecar):
        return data
    match = re.match(rb"([0-9a-fA-F]{64})[ \t]", _read_regular_file(sidecar, 4096, path))
    if not match:
        raise ZooError(f"Refusing {path!r}: {sidecar!r} is not a sha256sum line")
    expected, actual = match.group(1).decode().lower(), hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise ZooError(
            f"Refusing {path!r}: its sha256 does not match {sidecar!r}; the file was "
            f"changed or corrupted. Received: sha256={actual}, expected {expected}"
        )
    return data


def _read_regular_file(name, limit, path) -> bytes:
    """The bytes of `name`, which must be a regular file of at most `limit`
    bytes or a link to one: a directory, FIFO or device is refused before it
    is opened, as reading one fails, blocks or never ends."""
    try:
        _check_regular(os.stat(name).st_mode, name, path)
        # Non-blocking, should it be swapped for a FIFO after the check.
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise ZooError(f"Refusing {path!r}: cannot read {name!r} ({exc.strerror})") from None
    with open(fd, "rb") as f:
        info = os.fstat(fd)
        _check_regular(info.st_mode, name, path)
        # Checked before and after reading: the file may grow in between.
        data = b"" if info.st_size > limit else f.read(limit + 1)
    if info.st_size > limit or len(data) > limit:
        raise ZooError(f"Refusing {path!r}: {name!r} holds more than {limit} bytes")
    return data


def _check_regular(mode, name, path):
    if not stat.S_ISREG(mode):
        kinds = {stat.S_ISDIR: "a directory", stat.S_ISFIFO: "a FIFO", stat.S_ISSOCK: "a socket"}
        kind = next((k for test, k in kinds.items() if test(mode)), "a device")
        link = "a link to " if os.path.islink(name) else ""
        raise ZooError(f"Refusing {path!r}: {name!r} is {link}{kind}; expected a regular file")
