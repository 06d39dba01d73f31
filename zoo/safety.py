"""Checks that a `.keras` archive or an HDF5 weights file holds only data, run
before Keras reads it.

Keras' own `safe_mode` has been bypassed several times, so these checks do not
rely on it: they allow what a zoo or plain Keras file holds and refuse the
rest. An archive may hold only `config.json`, `metadata.json`,
`model.weights.h5` and `assets/...`, with no absolute, `..` or symlink members,
sane sizes and correct CRCs. Its config may name only what `zoo.allowlist`
allows. An HDF5 file may hold only groups and numeric datasets stored in the
file itself: no external or soft links, virtual or external datasets, or shapes
far larger than the bytes behind them.

Every size is checked before anything is unpacked or allocated: see the bounds
below, stated in the README's "Reliability and security".
"""

import io
import json
import stat
import zipfile

import h5py

from zoo.allowlist import check_config
from zoo.errors import ZooError, refuse

# Past this, data must not expand more than `MAX_EXPANSION` times (see
# `is_bomb`): Keras stores archives uncompressed, so a larger ratio is a bomb.
BOMB_FLOOR_BYTES = 1 << 24  # 16 MiB
MAX_EXPANSION = 100
# The most an archive's members may unpack to together, or its weights declare:
# about three times the largest zoo checkpoint (ResNet-50 with its Adam state).
MAX_UNCOMPRESSED_BYTES = 1 << 30  # 1 GiB
# A zoo config is at most about 200 KB.
MAX_CONFIG_BYTES = 1 << 24  # 16 MiB
_MAX_MEMBERS = 10_000

_MEMBERS = ("config.json", "metadata.json", "model.weights.h5")


def check_keras_archive(data: bytes, path: str) -> dict:
    """Raises a `ZooError` unless `data`, a `.keras` file's bytes, holds only
    an allowed config and weights.

    Returns:
        The archive's config (`config.json`), checked.
    """
    buffer = io.BytesIO(data)
    if not zipfile.is_zipfile(buffer):
        refuse(path, f"not a .keras archive (not a zip file, {len(data)} bytes)")
    try:
        with zipfile.ZipFile(buffer) as archive:
            _check_members(archive.infolist(), path)
            corrupt = archive.testzip()
            if corrupt is not None:
                refuse(path, f"member {corrupt!r} fails its CRC check; the file is corrupt")
            config = _read_json(archive, "config.json", path)
            if "metadata.json" in archive.namelist():
                _read_json(archive, "metadata.json", path)
            check_config(config, path)
            weights = io.BytesIO(archive.read("model.weights.h5"))
    except ZooError:
        raise
    except Exception as exc:  # zipfile raises many types on malformed input
        refuse(path, f"not a readable .keras archive ({first_line(exc)})")
    check_weights_h5(weights, f"{path}:model.weights.h5")
    return config


def _check_members(infos, path):
    names = [info.filename for info in infos]
    if len(infos) > _MAX_MEMBERS:
        refuse(path, f"{len(infos)} archive members, more than {_MAX_MEMBERS}")
    if len(set(names)) != len(names):
        refuse(path, "duplicate archive members")
    for info in infos:
        name = info.filename
        parts = name.split("/")
        if name.startswith("/") or "\\" in name or "\0" in name or ":" in parts[0]:
            refuse(path, f"archive member {name!r} has an absolute or non-portable path")
        if any(part in ("..", ".") for part in parts) or "" in parts[:-1]:
            refuse(path, f"archive member {name!r} has a path that leaves its folder")
        if stat.S_ISLNK(info.external_attr >> 16):
            refuse(path, f"archive member {name!r} is a symbolic link")
        if info.flag_bits & 0x1:
            refuse(path, f"archive member {name!r} is encrypted")
        if name not in _MEMBERS and not (parts[0] == "assets" and len(parts) > 1):
            refuse(path, f"unexpected archive member {name!r}; expected {', '.join(_MEMBERS)}")
    check_unpacked_sizes(infos, path)
    for required in ("config.json", "model.weights.h5"):
        if required not in names:
            refuse(path, f"no {required} in the archive; expected a Keras 3 .keras file")


def check_unpacked_sizes(infos, path) -> None:
    """Refuses a zip archive (`zipfile.ZipInfo`s) whose members, any one or
    all together, are a decompression bomb or unpack to more than
    `MAX_UNCOMPRESSED_BYTES`."""
    for info in infos:
        if is_bomb(info.file_size, info.compress_size):
            refuse(
                path,
                f"archive member {info.filename!r} unpacks {info.file_size} bytes from "
                f"{info.compress_size}, a decompression bomb",
            )
    total = sum(info.file_size for info in infos)
    stored = sum(info.compress_size for info in infos)
    if is_bomb(total, stored):
        refuse(
            path,
            f"its {len(infos)} members unpack {total} bytes from {stored}, a decompression bomb",
        )
    if total > MAX_UNCOMPRESSED_BYTES:
        refuse(path, f"its members unpack to {total} bytes, more than {MAX_UNCOMPRESSED_BYTES}")


def is_bomb(unpacked, stored) -> bool:
    """Whether `stored` bytes that unpack to `unpacked` are a bomb: more than
    `BOMB_FLOOR_BYTES`, and more than `MAX_EXPANSION` times as many."""
    return unpacked > BOMB_FLOOR_BYTES and unpacked > MAX_EXPANSION * max(stored, 1)


def _read_json(archive, name, path):
    if archive.getinfo(name).file_size > MAX_CONFIG_BYTES:
        refuse(path, f"{name} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        value = json.loads(archive.read(name))
    except (ValueError, RecursionError) as exc:
        refuse(path, f"{name} is not valid JSON ({first_line(exc)})")
    if not isinstance(value, dict):
        refuse(path, f"{name} holds a {type(value).__name__}; expected a JSON object")
    return value


def check_weights_h5(source, path) -> None:
    """Raises a `ZooError` unless an HDF5 file holds only groups and numeric
    datasets stored in itself.

    Args:
        source: a path or a binary file object.
        path: how to name the file in errors.
    """
    try:
        with h5py.File(source, "r") as h5:
            if "model_config" in h5.attrs:
                refuse(path, "a legacy whole-model HDF5 file, not a weights file")
            _walk_h5(h5["/"], path)
    except ZooError:
        raise
    except Exception as exc:  # h5py raises many types on malformed input
        refuse(path, f"not a readable HDF5 weights file ({first_line(exc)})")


def _walk_h5(h5, path):
    groups, seen, declared = [h5], {h5.id}, 0
    while groups:
        group = groups.pop()
        for name in group:  # link names; nothing is followed yet
            link = group.get(name, getlink=True)
            where = repr(f"{group.name.rstrip('/')}/{name}")
            if isinstance(link, h5py.ExternalLink):
                refuse(path, f"{where} links to another file ({link.filename!r})")
            if not isinstance(link, h5py.HardLink):
                refuse(path, f"{where} is a {type(link).__name__}; Keras writes none")
            item = group[name]
            if isinstance(item, h5py.Group):
                if item.id not in seen:
                    seen.add(item.id)
                    groups.append(item)
            elif isinstance(item, h5py.Dataset):
                declared += _check_dataset(item, where, path)
            else:
                refuse(path, f"{where} is a {type(item).__name__}; expected groups and datasets")
            if len(seen) > _MAX_MEMBERS:
                refuse(path, f"more than {_MAX_MEMBERS} HDF5 groups")
    if declared > MAX_UNCOMPRESSED_BYTES:
        refuse(path, f"its datasets declare {declared} bytes, more than {MAX_UNCOMPRESSED_BYTES}")


def _check_dataset(dataset, where, path) -> int:
    if dataset.is_virtual:
        refuse(path, f"{where} is a virtual dataset, which reads other files")
    if dataset.external:
        refuse(path, f"{where} stores its data in another file")
    if dataset.dtype.kind not in "biufc":
        refuse(path, f"{where} has dtype {dataset.dtype}; expected numbers")
    declared = dataset.size * dataset.dtype.itemsize
    stored = dataset.id.get_storage_size()
    if is_bomb(declared, stored):
        refuse(path, f"{where} declares shape {dataset.shape} but stores {stored} bytes")
    return declared


def first_line(exc) -> str:
    """An exception's message as one line, for a `ZooError` that wraps it."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]
