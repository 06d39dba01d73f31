"""The one error type for mistakes a user can make."""


class ZooError(ValueError):
    """A user-facing error: one line saying what was expected and what was received.

    The CLI prints these as a single line and exits non-zero; anything else is a
    bug and keeps its traceback.
    """


def refuse(path, reason):
    """Raises the `ZooError` that refuses a file: `Refusing 'PATH': REASON`."""
    raise ZooError(f"Refusing {path!r}: {reason}")
