"""Our own safetensors reader and writer: how weights reach and leave the disk.

This is the top of `minigrad.io` and depends only on NumPy and `atomic.py`; models and training
checkpoints call it, nothing in the autodiff stack does. The names follow `safetensors.numpy`:
`load_file`, `save_file`, `load`, `save`, `safe_open`, plus `load_metadata` and `SafetensorsError`.

The format (https://github.com/huggingface/safetensors) is three parts:

    [ n: u64 little-endian ][ header: n bytes of UTF-8 JSON ][ data buffer ]

    header = {"__metadata__": {"k": "v", ...},                           (optional, str -> str)
              "name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...}

Offsets are relative to the start of the data buffer. The reader trusts nothing: a file is a
list of claims, and every claim is checked before any byte of data is touched, in this order:

    1. the length prefix: at most 100 MB and inside the file,
    2. the JSON: valid UTF-8, starts with "{", an object, no duplicate keys at any depth,
    3. each entry: known dtype, shape of non-negative ints that NumPy can hold, two offsets,
       end - begin == numel * itemsize (Python ints, so no overflow can fake an equality),
    4. the entries sorted by offset tile the data buffer exactly: start at 0, each begins where
       the previous ends (no hole, no overlap), the last ends at the end of the file.

Because of (3) and (4) a header claiming a 1 TB tensor is refused before anything is
allocated, and no tensor can reach outside the file. Tensors are then `np.frombuffer` views of
one read-only memory map: no copy, and pages are read from disk only when touched. Every
violation raises `SafetensorsError` naming the file, the tensor and the broken rule.

Endianness: the format is little-endian. Arrays come back with explicit little-endian dtypes
(`<f4`), which are the native ones on x86 and ARM, so nothing is copied. On a big-endian host
NumPy still reads the values correctly through the non-native dtype, without a copy.

Not checked: whether BOOL bytes are 0 or 1 (that would read the whole tensor, breaking laziness).
"""
import json
import mmap
import os

import numpy as np

from .atomic import atomic_open

MAX_HEADER_BYTES = 100 * 1000 * 1000  # the limit of the reference implementation
_MAX_DIMS = 32  # NumPy 1.x's limit (2.x allows 64): a file that loads here loads everywhere
_MAX_BYTES = 2**63 - 1  # the largest array NumPy can describe (`numel * itemsize` in an intp)

# format dtype -> NumPy dtype. BF16 has no NumPy dtype: it is read as its raw 16 bits (`<u2`)
# and only ever returned upcast to float32.
DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_FORMAT_OF = {np.dtype(v).newbyteorder("<"): k for k, v in DTYPES.items() if k != "BF16"}

# The reference writer orders tensors by this rank (descending), then by name. Widest dtypes
# first keeps every tensor aligned to its itemsize, and copying the order makes our files
# byte-identical to the ones `safetensors` writes.
_WRITE_ORDER = ["BOOL", "U8", "I8", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "F64", "I64", "U64"]


class SafetensorsError(ValueError):
    """A safetensors file (or a dict about to be saved) breaks the format."""


# ---- reading ------------------------------------------------------------------------------------

class _Entry:
    """One validated header entry: where a tensor's bytes are and how to view them."""
    __slots__ = ("name", "dtype", "shape", "begin", "end")

    def __init__(self, name, dtype, shape, begin, end):
        self.name, self.dtype, self.shape, self.begin, self.end = name, dtype, shape, begin, end


class _DuplicateKey(Exception):
    pass


def _no_duplicates(pairs):
    """json object_pairs_hook: plain `json.loads` keeps the last of two equal keys silently."""
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise _DuplicateKey(key)
        obj[key] = value
    return obj


def _is_int(x):
    return isinstance(x, int) and not isinstance(x, bool)  # JSON true is not a dimension


def _parse_header(buf, where):
    """Validate `buf` (bytes-like: the whole file) -> (metadata, entries in offset order, data start)."""
    size = len(buf)
    if size < 8:
        raise SafetensorsError(f"{where}: file is {size} bytes, too short for the 8-byte header length")
    n = int.from_bytes(buf[:8], "little")
    if n > MAX_HEADER_BYTES:
        raise SafetensorsError(f"{where}: header length {n} exceeds the {MAX_HEADER_BYTES}-byte limit")
    if n > size - 8:
        raise SafetensorsError(f"{where}: file is truncated: header length is {n} but only {size - 8} bytes follow")
    raw = bytes(buf[8:8 + n])
    if not raw.startswith(b"{"):
        raise SafetensorsError(f"{where}: header does not start with '{{' (got {raw[:16]!r})")
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError as e:
        raise SafetensorsError(f"{where}: header is not valid UTF-8 ({e.reason} at byte {e.start})") from None
    except _DuplicateKey as e:
        raise SafetensorsError(f"{where}: header has the key {e.args[0]!r} twice") from None
    except RecursionError:
        raise SafetensorsError(f"{where}: header JSON is nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, and ints longer than Python's digit limit
        raise SafetensorsError(f"{where}: header is not valid JSON: {e}") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{where}: header is a JSON {type(header).__name__}, expected an object")

    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict):
        raise SafetensorsError(f"{where}: __metadata__ must be an object of strings, got {type(metadata).__name__}")
    for key, value in metadata.items():
        if not isinstance(value, str):
            raise SafetensorsError(f"{where}: __metadata__[{key!r}] must be a string, got {type(value).__name__}")

    entries = sorted((_parse_entry(name, info, where) for name, info in header.items()),
                     key=lambda e: (e.begin, e.end))
    data_len = size - 8 - n
    expected_begin = 0
    for e in entries:
        if e.begin != expected_begin:
            gap = "a hole" if e.begin > expected_begin else "an overlap"
            raise SafetensorsError(f"{where}: tensor {e.name!r}: data_offsets start at {e.begin} but the previous "
                                   f"tensor ends at {expected_begin} ({gap} in the data buffer)")
        expected_begin = e.end
    if expected_begin > data_len:
        last = entries[-1].name
        raise SafetensorsError(f"{where}: file is truncated: tensor {last!r} ends at data byte {expected_begin} "
                               f"but the data buffer holds {data_len} bytes")
    if expected_begin < data_len:
        raise SafetensorsError(f"{where}: {data_len - expected_begin} trailing bytes after the last tensor "
                               f"(tensors cover {expected_begin} of {data_len} data bytes)")
    return metadata, entries, 8 + n


def _parse_entry(name, info, where):
    """Check one header entry on its own; returns an `_Entry`."""
    what = f"{where}: tensor {name!r}"
    if not isinstance(info, dict):
        raise SafetensorsError(f"{what}: entry must be an object, got {type(info).__name__}")
    fields = set(info)
    if fields != {"dtype", "shape", "data_offsets"}:
        missing = sorted({"dtype", "shape", "data_offsets"} - fields)
        unknown = sorted(fields - {"dtype", "shape", "data_offsets"})
        raise SafetensorsError(f"{what}: entry needs exactly dtype, shape, data_offsets "
                               f"(missing {missing}, unexpected {unknown})")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise SafetensorsError(f"{what}: unsupported dtype {dtype!r} (known: {', '.join(DTYPES)})")
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise SafetensorsError(f"{what}: shape must be a list of non-negative integers, got {shape!r:.80}")
    if len(shape) > _MAX_DIMS:
        raise SafetensorsError(f"{what}: shape has {len(shape)} dimensions, more than the {_MAX_DIMS} supported")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) and o >= 0 for o in offsets)):
        raise SafetensorsError(f"{what}: data_offsets must be [begin, end] non-negative integers, "
                               f"got {offsets!r:.80}")
    begin, end = offsets
    if end < begin:
        raise SafetensorsError(f"{what}: data_offsets [{begin}, {end}] end before they begin")
    itemsize = DTYPES[dtype].itemsize
    numel = 1
    for d in shape:
        numel *= d
    # NumPy refuses a shape whose non-zero dimensions multiply past an intp, even when a zero
    # dimension makes numel 0; checking that product also bounds every size below.
    nonzero = itemsize
    for d in shape:
        nonzero *= max(d, 1)
    if nonzero > _MAX_BYTES:
        raise SafetensorsError(f"{what}: shape {shape} x {itemsize} bytes overflows a 64-bit size")
    if end - begin != numel * itemsize:
        raise SafetensorsError(f"{what}: {dtype} shape {shape} needs {numel} x {itemsize} = {numel * itemsize} "
                               f"bytes but data_offsets [{begin}, {end}] hold {end - begin}")
    return _Entry(name, dtype, tuple(shape), begin, end)


def _view(buf, data_start, entry, upcast, where):
    """The tensor `entry` as an array over `buf` (no copy unless upcasting)."""
    dtype = DTYPES[entry.dtype]
    count = (entry.end - entry.begin) // dtype.itemsize
    arr = np.frombuffer(buf, dtype=dtype, count=count, offset=data_start + entry.begin).reshape(entry.shape)
    if entry.dtype == "BF16":
        if not upcast:
            raise SafetensorsError(f"{where}: tensor {entry.name!r} is BF16, which NumPy cannot hold; "
                                   f"load it with upcast=True to get float32")
        # bfloat16 is the top half of a float32: shift the 16 bits up and reinterpret (in
        # place: `bits << 16` would turn a 0-d array into a NumPy scalar)
        bits = arr.astype(np.uint32)
        bits <<= 16
        return bits.view(np.float32)
    if entry.dtype == "F16" and upcast:
        return arr.astype(np.float32)
    return arr


class safe_open:
    """Lazy access to one safetensors file, like `safetensors.safe_open`.

        with safe_open("model.safetensors") as f:
            names = f.keys()                 # in file order
            w = f.get_tensor(names[0])       # a read-only array over the memory map
            info = f.metadata()              # dict str -> str ({} when the file has none)

    The header is validated when the file is opened. `upcast=True` returns F16 and BF16
    tensors as float32 copies. Arrays stay valid after the block ends: each keeps the memory
    map alive for as long as it lives.
    """

    def __init__(self, path, upcast=False):
        self._where = os.fspath(path)
        self._upcast = upcast
        with open(self._where, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:  # mmap cannot map an empty file
                raise SafetensorsError(f"{self._where}: file is 0 bytes, too short for the 8-byte header length")
            self._buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)  # the map outlives the fd
        self._metadata, entries, self._data_start = _parse_header(self._buf, self._where)
        self._entries = {e.name: e for e in entries}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._buf = None  # arrays handed out still hold the map; it closes with the last of them

    def keys(self):
        return list(self._entries)

    def metadata(self):
        return dict(self._metadata)

    def get_tensor(self, name):
        if self._buf is None:
            raise ValueError(f"{self._where}: get_tensor({name!r}) after the safe_open block has closed")
        if name not in self._entries:
            raise KeyError(f"{self._where}: no tensor named {name!r}")
        return _view(self._buf, self._data_start, self._entries[name], self._upcast, self._where)


def load_file(path, upcast=False):
    """Every tensor of a safetensors file -> {name: read-only np.ndarray}, in file order."""
    with safe_open(path, upcast=upcast) as f:
        return {name: f.get_tensor(name) for name in f.keys()}


def load_metadata(path):
    """Just the `__metadata__` dict (str -> str) of a file, after validating its header."""
    with safe_open(path) as f:
        return f.metadata()


def load(data, upcast=False):
    """Like `load_file`, from the bytes of a whole file (arrays view `data`, no copy)."""
    _, entries, data_start = _parse_header(data, "<bytes>")
    return {e.name: _view(data, data_start, e, upcast, "<bytes>") for e in entries}


# ---- writing ------------------------------------------------------------------------------------

def _prepare(tensors, metadata, where):
    """Validate what is to be saved -> (header bytes, [(name, little-endian contiguous array)])."""
    if not isinstance(tensors, dict):
        raise SafetensorsError(f"{where}: tensors must be a dict name -> np.ndarray, got {type(tensors).__name__}")
    items = []
    for name, arr in tensors.items():
        if not isinstance(name, str) or name == "__metadata__":
            raise SafetensorsError(f"{where}: tensor name {name!r} is not allowed (a str other than '__metadata__')")
        if not isinstance(arr, (np.ndarray, np.generic)):
            raise SafetensorsError(f"{where}: tensor {name!r} is a {type(arr).__name__}, expected np.ndarray "
                                   f"(for a minigrad Tensor pass .data)")
        fmt = _FORMAT_OF.get(arr.dtype.newbyteorder("<"))
        if fmt is None:
            raise SafetensorsError(f"{where}: tensor {name!r} has dtype {arr.dtype}, which safetensors cannot "
                                   f"store (supported: {', '.join(sorted(map(str, _FORMAT_OF)))})")
        items.append((name, fmt, np.asarray(arr, dtype=DTYPES[fmt], order="C")))
    if metadata is not None and not (isinstance(metadata, dict) and
                                     all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())):
        raise SafetensorsError(f"{where}: metadata must be a dict of str -> str, got {metadata!r:.80}")

    items.sort(key=lambda it: (-_WRITE_ORDER.index(it[1]), it[0]))
    header = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for name, fmt, arr in items:
        header[name] = {"dtype": fmt, "shape": list(arr.shape), "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
    # compact JSON with raw UTF-8, as the reference writer emits it
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-(8 + len(text)) % 8)  # pad so the data buffer starts 8-byte aligned
    return len(text).to_bytes(8, "little") + text, [(name, arr) for name, _, arr in items]


def save(tensors, metadata=None):
    """The bytes of a safetensors file holding `tensors` (dict name -> np.ndarray)."""
    head, items = _prepare(tensors, metadata, "<bytes>")
    return head + b"".join(_tensor_bytes(arr) for _, arr in items)


def save_file(tensors, path, metadata=None):
    """Write `tensors` (dict name -> np.ndarray) to `path` atomically.

    The file appears complete or not at all: it is written beside `path`, fsynced and renamed
    (see atomic.py), so a crash mid-save keeps the previous file.
    """
    head, items = _prepare(tensors, metadata, os.fspath(path))
    with atomic_open(path) as f:
        f.write(head)
        for _, arr in items:
            f.write(_tensor_bytes(arr))


def _tensor_bytes(arr):
    """A buffer over the array's bytes: written straight from memory, no `tobytes()` copy."""
    return memoryview(arr.reshape(-1)).cast("B")
