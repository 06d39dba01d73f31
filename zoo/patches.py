"""Replacing Keras internals for the length of a call, on the Keras versions a
replacement was written for.

Every replacement of a Keras function in `zoo` and `training` is a
`KerasPatch`: `zoo.steps`' loss scaling under `tf.distribute`, `training`'s
faster kernels (`training.torch_kernels`, `training.tf_kernels`), its
gradient averaging across torch processes (`training.distribute._torch`) and
its clipping of the replicas' summed gradients under `tf.distribute`
(`training.distribute._tensorflow`).

- A patch is in place only while the call that needs it runs
  (`with patch.installed(): ...`); importing a module changes nothing.
- A patch is installed only on `KERAS_VERSIONS`, the releases it was written
  and tested for. On any other Keras the call runs Keras' own path, and a
  warning says so, once per patch and process.
- `written_for` records a hash of the source of every Keras function the
  patch replaces or relies on. `tests/test_keras_patches.py` compares them with
  the installed Keras, so that a new release is read, not guessed, before the
  range is widened (`source_hash(path)` gives the new hash).

>>> with patch.installed() as active:  # False on a Keras it was not written for
...     model.fit(...)
"""

import contextlib
import hashlib
import importlib
import inspect
import re
import threading
import warnings

import keras

#: The Keras releases the patches were written and tested for:
#: `>=3.15.1,<3.16`, as pyproject.toml bounds them.
KERAS_VERSIONS = ((3, 15, 1), (3, 16))

_REGISTERED = []


class Patches:
    """Attributes replaced while any block of `installed()` runs.

    Nested and concurrent blocks share one installation; the original
    attributes are back when the last block ends. An attribute the owner only
    inherited (a method, replaced on one instance) is deleted again rather
    than set, so that the owner inherits it as before.

    Args:
        *replacements: `(owner, name, value)` triples: `owner.name` becomes
            `value` inside the blocks.
    """

    def __init__(self, *replacements):
        self._replacements = replacements
        self._originals = [vars(owner).get(name, _INHERITED) for owner, name, _ in replacements]
        self._lock = threading.Lock()
        self._depth = 0

    @contextlib.contextmanager
    def installed(self):
        with self._lock:
            if self._depth == 0:
                for owner, name, value in self._replacements:
                    setattr(owner, name, value)
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0:
                    self._restore()

    def _restore(self):
        for (owner, name, _), original in zip(self._replacements, self._originals, strict=True):
            if original is _INHERITED:
                delattr(owner, name)
            else:
                setattr(owner, name, original)


_INHERITED = object()


class KerasPatch:
    """Replacements of Keras functions, installed for the length of a block on
    the Keras versions they were written for.

    Args:
        description: what the patch does, for the warning on other versions.
        *replacements: `(owner, name, value)` triples, as for `Patches`.
        written_for: `{dotted path: source_hash(path)}` of every Keras function
            the patch replaces or whose behaviour it relies on, as they were
            in the Keras it was written for.
        versions: `(lowest, first excluded)` release tuples. Defaults to
            `KERAS_VERSIONS`.
    """

    def __init__(self, description, *replacements, written_for, versions=KERAS_VERSIONS):
        self.description = description
        self.written_for = dict(written_for)
        self.versions = versions
        self._patches = Patches(*replacements)
        self._warned = False
        _REGISTERED.append(self)

    def supported(self) -> bool:
        """Whether the running Keras is one this patch was written for; the
        first `False` in a process warns."""
        low, high = self.versions
        if low <= _release(keras.version()) < high:
            return True
        if not self._warned:
            self._warned = True
            warnings.warn(
                f"keras-model-zoo: {self.description} is written for Keras "
                f">={_dotted(low)},<{_dotted(high)}; on Keras {keras.version()} it is "
                "off and Keras' own path runs instead",
                stacklevel=4,
            )
        return False

    @contextlib.contextmanager
    def installed(self, *replacements):
        """Runs the block with the patch in place, where Keras is a version it
        was written for, else as Keras runs it.

        Args:
            *replacements: more `(owner, name, value)` triples for this block
                alone, such as a method replaced on one instance.

        Yields:
            Whether the patch is in place.
        """
        if not self.supported():
            yield False
            return
        with self._patches.installed(), Patches(*replacements).installed():
            yield True


def registered() -> tuple:
    """Every `KerasPatch` made so far in this process."""
    return tuple(_REGISTERED)


def resolve(path):
    """The object at a dotted path such as `"keras.src.losses.loss.Loss.__call__"`:
    packages and modules are imported as the path names them, then attributes."""
    first, *rest = path.split(".")
    value = importlib.import_module(first)
    for name in rest:
        if not hasattr(value, name) and hasattr(value, "__path__"):  # a package's module
            importlib.import_module(f"{value.__name__}.{name}")
        value = getattr(value, name)
    return value


def source_hash(path) -> str:
    """A short hash of the source of the function (or class) at `path`."""
    return hashlib.sha256(inspect.getsource(resolve(path)).encode()).hexdigest()[:16]


def _release(version):
    """`"3.15.1"` → `(3, 15, 1)`; a pre-release or dev build counts as its release."""
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", version)
    return tuple(int(part or 0) for part in match.groups())


def _dotted(release):
    return ".".join(map(str, release))
