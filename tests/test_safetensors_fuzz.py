"""Fuzz the safetensors reader: mutated files either load correctly or raise SafetensorsError.

Hypothesis builds a valid file from random tensors, then applies up to three mutations, some on
the parsed header (dtypes, shapes, offsets, huge sizes, whole entries, metadata, duplicate keys)
and some on the raw bytes (length prefix, JSON text, truncation, trailing bytes, byte flips).
Every result is loaded twice, from bytes (`load`) and through the memory map (`load_file`):
both must agree, and either raise `SafetensorsError` or return arrays whose dtype, shape and
bytes are exactly what the header points at. Any other exception fails the test.

    MINIGRAD_FUZZ_EXAMPLES=100000 pytest tests/test_safetensors_fuzz.py --hypothesis-show-statistics

CI runs the default of 2000 examples (about 15 s).
"""
import json
import os
import re
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from minigrad import io as mio
from minigrad.io.safetensors import DTYPES, SafetensorsError

EXAMPLES = int(os.environ.get("MINIGRAD_FUZZ_EXAMPLES", "2000"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])
NP_DTYPES = ["<f8", "<f4", "<f2", "<i8", "<i4", "<i2", "i1", "u1", "?", "<u2", "<u4", "<u8"]


@pytest.fixture(scope="module")
def scratch():
    """One file path reused by every example, in RAM when the system has a tmpfs: a disk write
    per example would cost more than everything else the example does."""
    shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(dir=shm) as folder:
        yield os.path.join(folder, "f.safetensors")


# ---- valid files ----------------------------------------------------------------------------------

@st.composite
def tensor_dicts(draw, min_size=0):
    """A dict of small arrays of every dtype, with arbitrary bytes (NaNs, bools that are not 0/1)."""
    names = draw(st.lists(st.text(max_size=6).filter(lambda name: name != "__metadata__"),
                          min_size=min_size, max_size=4, unique=True))
    tensors = {}
    for name in names:
        dtype = np.dtype(draw(st.sampled_from(NP_DTYPES)))
        shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
        raw = draw(st.binary(min_size=int(np.prod(shape)) * dtype.itemsize,
                             max_size=int(np.prod(shape)) * dtype.itemsize))
        tensors[name] = np.frombuffer(raw, dtype=dtype).reshape(shape)
    return tensors


metadata_dicts = st.none() | st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6)
# JSON punctuation and the characters of numbers and dtype names, so text edits stay near-valid
json_chars = st.text(alphabet='{}[]":,0123456789-+eE. FIUBOL_\\tnul', max_size=6)


# ---- mutations ----------------------------------------------------------------------------------

# Headers are edited as lists of (key, value) pairs, so that duplicate keys survive the edit;
# JSON objects decode to lists of tuples, JSON arrays to lists of anything else.
def _is_object(value):
    return isinstance(value, list) and all(isinstance(p, tuple) for p in value)


def _split(blob):
    """(header pairs, data) of a blob whose header still parses as a JSON object, else None."""
    n = int.from_bytes(blob[:8], "little")
    try:
        pairs = json.loads(blob[8:8 + n].decode("utf-8"), object_pairs_hook=lambda p: p)
    except (ValueError, RecursionError):
        return None
    return (pairs, blob[8 + n:]) if _is_object(pairs) and len(blob) >= 8 + n else None


def _join(pairs, data):
    """Serialise header pairs (duplicates allowed) and data into a file with a correct prefix."""
    text = ("{" + ",".join(json.dumps(k) + ":" + json.dumps(_as_json(v)) for k, v in pairs) + "}").encode()
    return len(text).to_bytes(8, "little") + text + data


def _as_json(value):
    """Pair lists back to dicts for json.dumps (ASCII output: lone surrogates are escaped)."""
    if _is_object(value) and value:
        return {k: _as_json(v) for k, v in value}
    return [_as_json(v) for v in value] if isinstance(value, list) else value


def _mutate_entry(draw, pairs):
    """Change one field of one tensor entry, or the entry itself."""
    i = draw(st.integers(0, len(pairs) - 1))
    name, entry = pairs[i]
    entry = dict(entry) if _is_object(entry) else {"value": entry}
    field = draw(st.sampled_from(["dtype", "shape", "data_offsets", "huge", "whole", "drop", "extra"]))
    if field == "dtype":
        entry["dtype"] = draw(st.sampled_from(list(DTYPES) + ["F8_E4M3", "f32", "", None, 7]))
    elif field == "shape":
        entry["shape"] = draw(st.lists(st.integers(-2, 6) | st.integers(0, 2**65), max_size=4) | json_values)
    elif field == "data_offsets":
        begin, end = draw(st.integers(-2, 64)), draw(st.integers(-2, 64))
        entry["data_offsets"] = draw(st.sampled_from([[begin, end], [begin], [begin, end, end], [str(begin), end]]))
    elif field == "huge":  # consistent sizes that no file could hold, up to 2**80 bytes
        dims = draw(st.lists(st.sampled_from([2**10, 2**20, 2**31, 2**40]), min_size=1, max_size=4))
        dtype = entry.get("dtype")
        size = int(np.prod(dims, dtype=object)) * (DTYPES[dtype].itemsize if dtype in DTYPES else 4)
        begin = draw(st.integers(0, 64))
        entry.update(shape=dims, data_offsets=[begin, begin + size])
    elif field == "whole":
        entry = draw(json_values)
    elif field == "drop" and entry:
        del entry[draw(st.sampled_from(sorted(entry)))]
    else:
        entry[draw(st.text(max_size=4))] = draw(json_values)
    pairs[i] = (name, list(entry.items()) if isinstance(entry, dict) else entry)


@st.composite
def mutations(draw, blob):
    """Apply one mutation to a file's bytes."""
    # entry edits reach the deepest checks (sizes, offsets, overflow), so they come up most often
    kind = draw(st.sampled_from(["length", "text", "truncate", "trailing", "flip", "metadata", "duplicate"]
                                + ["entry"] * 4))
    n = int.from_bytes(blob[:8], "little")
    split = _split(blob) if kind in ("entry", "metadata", "duplicate") else None
    if kind in ("entry", "duplicate") and not (split and split[0]):
        kind = "flip"  # no parseable entries left to edit structurally
    if kind == "metadata" and split is None:
        kind = "text"
    if kind == "length":
        new = draw(st.integers(0, 2**64 - 1) | st.integers(max(0, n - 16), n + 16))
        return new.to_bytes(8, "little") + blob[8:]
    if kind == "text":  # edit the header text in place; keep or fix the length prefix
        text = blob[8:8 + n]
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 4)))
        new = text[:i] + draw(json_chars).encode() + text[j:]
        prefix = len(new) if draw(st.booleans()) else n
        return prefix.to_bytes(8, "little") + new + blob[8 + n:]
    if kind == "truncate":
        return blob[:draw(st.integers(0, max(0, len(blob) - 1)))]
    if kind == "trailing":
        return blob + draw(st.binary(min_size=1, max_size=16))
    if kind == "flip":
        out = bytearray(blob)
        for _ in range(draw(st.integers(1, 4))):
            if out:
                out[draw(st.integers(0, len(out) - 1))] ^= 1 << draw(st.integers(0, 7))
        return bytes(out)
    pairs, data = split
    if kind == "metadata":
        pairs = [p for p in pairs if p[0] != "__metadata__"] + [("__metadata__", draw(json_values))]
    elif kind == "duplicate":
        pairs.insert(draw(st.integers(0, len(pairs))), pairs[draw(st.integers(0, len(pairs) - 1))])
    else:
        _mutate_entry(draw, pairs)
    return _join(pairs, data)


# ---- the oracle -----------------------------------------------------------------------------------

def _expected(raw, dtype, upcast):
    """What the loader must return for a tensor's raw bytes, computed independently."""
    if dtype == "BF16":
        return (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
    arr = np.frombuffer(raw, DTYPES[dtype])
    return arr.astype(np.float32) if dtype == "F16" and upcast else arr


def _check_loaded(blob, tensors, upcast):
    """A file that loaded must obey the format, and each array must be exactly its bytes."""
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    header.pop("__metadata__", None)
    data = blob[8 + n:]
    assert sorted(tensors) == sorted(header)
    end = 0
    for name, info in sorted(header.items(), key=lambda kv: tuple(kv[1]["data_offsets"])):
        begin, stop = info["data_offsets"]
        assert begin == end, "offsets must tile the data buffer"
        end = stop
        got, want = tensors[name], _expected(data[begin:stop], info["dtype"], upcast)
        assert got.shape == tuple(info["shape"]) and got.dtype == want.dtype
        assert got.tobytes() == want.tobytes()
    assert end == len(data)


def _load_both(blob, path, upcast):
    """Load from bytes and from a file; both must agree. Returns the tensors or None on error."""
    results = []
    for load in (lambda: mio.load(blob, upcast=upcast), lambda: mio.load_file(path, upcast=upcast)):
        try:
            results.append(load())
        except SafetensorsError as e:
            # the rule that was broken, without names and numbers, for --hypothesis-show-statistics
            event("refused: " + re.sub(r"'[^']*'|\[[^\]]*\]|\d+", "_", str(e).split(": ", 1)[1])[:48])
            results.append(None)
    assert (results[0] is None) == (results[1] is None), "bytes and memory map disagree"
    for tensors in results:
        if tensors is not None:
            event("loaded")
            _check_loaded(blob, tensors, upcast)
    return results[0]


@FUZZ
@given(data=st.data(), tensors=tensor_dicts(min_size=1), metadata=metadata_dicts, upcast=st.booleans())
def test_mutated_files_load_correctly_or_raise_safetensors_error(scratch, data, tensors, metadata, upcast):
    blob = mio.save(tensors, metadata=metadata)
    count = data.draw(st.integers(0, 3), label="mutations")
    for _ in range(count):
        blob = data.draw(mutations(blob))
    with open(scratch, "wb") as f:
        f.write(blob)
    loaded = _load_both(blob, scratch, upcast)
    if count == 0:
        assert loaded is not None, "an unmutated file must load"


@settings(max_examples=max(50, EXAMPLES // 10), deadline=None, database=None)
@given(tensors=tensor_dicts(), metadata=metadata_dicts)
def test_valid_files_round_trip(scratch, tensors, metadata):
    mio.save_file(tensors, scratch, metadata=metadata)
    loaded = mio.load_file(scratch)
    assert mio.load_metadata(scratch) == (metadata or {})
    for name, arr in tensors.items():
        assert loaded[name].dtype == arr.dtype.newbyteorder("<") and loaded[name].shape == arr.shape
        assert loaded[name].tobytes() == arr.tobytes()
