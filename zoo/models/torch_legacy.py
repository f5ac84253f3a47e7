"""Read a PyTorch state dict saved in the legacy (pre-1.6, non-zip) format — without PyTorch.

Such a ``.pth`` file is a sequence of pickles followed by raw bytes:

1. a magic number, the protocol version and a dict describing the writer's machine;
2. the state dict itself, whose tensors are ``torch._utils._rebuild_tensor_v2(storage,
   offset, size, stride, …)`` calls and whose storages are *persistent ids*
   ``("storage", torch.FloatStorage, key, location, numel, view)``;
3. the list of storage keys, in the order their bytes follow;
4. for each of those keys: the element count as a little-endian int64, then the elements.

The unpickler below admits exactly these globals (``collections.OrderedDict``, the tensor
rebuild function and the storage types) and nothing else, so a file cannot run code; the
tensors become numpy arrays.
"""

from __future__ import annotations

import collections
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class LegacyFormatError(ValueError):
    """The file is not a legacy PyTorch state dict of plain tensors."""


@dataclass(frozen=True)
class _StorageType:
    name: str


@dataclass(frozen=True)
class _TensorRef:
    key: str
    dtype: type
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage, offset, size, stride, *_ignored) -> _TensorRef:
    key, dtype = storage
    return _TensorRef(key, dtype, int(offset), tuple(size), tuple(stride))


class _StateDictUnpickler(pickle.Unpickler):
    """Admits only what a state dict of tensors needs."""

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise LegacyFormatError(f"unexpected object {module}.{name} in a state dict")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise LegacyFormatError(f"unexpected persistent id {pid!r}")
        storage_type, key = pid[1], str(pid[2])
        if not isinstance(storage_type, _StorageType):
            raise LegacyFormatError(f"unexpected storage type {storage_type!r}")
        return key, STORAGE_DTYPES[storage_type.name]


def _load(stream, what: str):
    try:
        return pickle.load(stream)
    except Exception as exc:
        raise LegacyFormatError(f"cannot read its {what} ({exc})") from None


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Name → numpy array for every tensor of a legacy-format PyTorch state dict.

    Raises :class:`LegacyFormatError` for anything else (a zip-format file, a truncated
    file, a pickle with other objects).
    """
    with open(path, "rb") as stream:
        if _load(stream, "magic number") != MAGIC_NUMBER:
            raise LegacyFormatError("it does not start with the legacy PyTorch magic number")
        _load(stream, "protocol version")
        system = _load(stream, "system information")
        if isinstance(system, dict) and not system.get("little_endian", True):
            raise LegacyFormatError("it was written on a big-endian machine")
        try:
            state = _StateDictUnpickler(stream).load()
        except LegacyFormatError:
            raise
        except Exception as exc:
            raise LegacyFormatError(f"cannot read its state dict ({exc})") from None
        keys = _load(stream, "storage keys")
        storages = {}
        for key in keys:
            header = stream.read(8)
            if len(header) != 8:
                raise LegacyFormatError(f"it is truncated (storage {key} missing)")
            (count,) = struct.unpack("<q", header)
            dtype = _storage_dtype(state, key)
            data = stream.read(count * np.dtype(dtype).itemsize)
            if len(data) != count * np.dtype(dtype).itemsize:
                raise LegacyFormatError(f"it is truncated (storage {key} is short)")
            storages[key] = np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<"))
    if not isinstance(state, dict):
        raise LegacyFormatError(f"it holds a {type(state).__name__}, not a state dict")
    return {name: _tensor(ref, storages, name) for name, ref in state.items()}


def _storage_dtype(state, key: str):
    for ref in state.values() if isinstance(state, dict) else ():
        if isinstance(ref, _TensorRef) and ref.key == key:
            return ref.dtype
    return np.uint8  # a storage no tensor uses: read and drop its bytes


def _tensor(ref, storages: dict, name: str) -> np.ndarray:
    if not isinstance(ref, _TensorRef):
        raise LegacyFormatError(f"entry {name} is a {type(ref).__name__}, not a tensor")
    if ref.key not in storages:
        raise LegacyFormatError(f"entry {name} points at a missing storage {ref.key}")
    flat = storages[ref.key]
    itemsize = flat.dtype.itemsize
    try:
        view = np.lib.stride_tricks.as_strided(
            flat[ref.offset :],
            shape=ref.size,
            strides=tuple(s * itemsize for s in ref.stride),
            writeable=False,
        )
    except ValueError as exc:
        raise LegacyFormatError(f"entry {name} does not fit its storage ({exc})") from None
    needed = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride, strict=True)) + 1
    if ref.size and min(ref.size) > 0 and needed > len(flat):
        raise LegacyFormatError(f"entry {name} reaches past its storage")
    return np.array(view).astype(flat.dtype.newbyteorder("="))
