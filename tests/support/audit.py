"""What a refused file must never cause, seen by an audit hook: an open for
writing outside the test's tmp dir, a socket connection, a new process, or an
import of a module outside the zoo (and Python's codecs).

Audit hooks cannot be removed, so one is installed once per process and
records only inside `audited(tmp_dir)`.
"""

import contextlib
import os
import sys

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_PROCESS_EVENTS = {
    "subprocess.Popen",
    "os.system",
    "os.exec",
    "os.spawn",
    "os.posix_spawn",
    "os.fork",
    "os.forkpty",
    "pty.spawn",
}
# Modules the checks may import on first use: the zoo's own, and the codec
# zipfile decodes member names with.
_ALLOWED_PACKAGES = ("zoo", "training", "encodings")
_recording = []  # [(tmp dir, events)] while inside `audited`


def _hook(event, args):
    if not _recording:
        return
    root, events = _recording[-1]
    if event == "open":
        path, mode, flags = args
        writes = any(c in (mode or "") for c in "wax+") or (flags or 0) & _WRITE_FLAGS
        if isinstance(path, (str, bytes)) and writes:
            path = os.path.abspath(os.fsdecode(path))
            if os.path.commonpath([path, root]) != root:
                events.append(f"open {path!r} for writing")
    elif event == "socket.connect" or event in _PROCESS_EVENTS:
        events.append(f"{event} {args!r:.200}")
    elif event == "import" and args[0].split(".")[0] not in _ALLOWED_PACKAGES:
        events.append(f"import {args[0]}")


_installed = []


@contextlib.contextmanager
def audited(tmp_dir):
    """Yields a list of the events seen inside the block; the caller asserts
    it is empty. Modules new in `sys.modules` count as imports too."""
    if not _installed:
        sys.addaudithook(_hook)
        _installed.append(_hook)
    events, modules = [], set(sys.modules)
    _recording.append((os.path.abspath(tmp_dir), events))
    try:
        yield events
    finally:
        _recording.pop()
        events += [
            f"new module {name}"
            for name in set(sys.modules) - modules
            if name.split(".")[0] not in _ALLOWED_PACKAGES
        ]
