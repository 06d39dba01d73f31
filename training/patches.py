"""Replacing attributes of Keras for the length of a block, shared by the
backends' kernel modules (`training.torch_kernels`, `training.tf_kernels`)."""

import contextlib
import threading


class Patches:
    """Attributes replaced while any block of `installed()` runs.

    Nested and concurrent blocks share one installation; the original
    attributes are back when the last block ends.

    Args:
        replacements: `(owner, name, value)` triples: `owner.name` becomes
            `value` inside the blocks.
    """

    def __init__(self, *replacements):
        self._replacements = replacements
        self._originals = [getattr(owner, name) for owner, name, _ in replacements]
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
                    for (owner, name, _), original in zip(
                        self._replacements, self._originals, strict=True
                    ):
                        setattr(owner, name, original)
