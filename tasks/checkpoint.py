"""Training checkpoints: one safetensors file holding everything a run needs to resume.

The trainable weights, the optimizer's moment buffers and the schedule, RNG and data-order state
go into ONE file: arrays as tensors, everything else as JSON in the file's `__metadata__`. The
file is written to a temporary name, fsynced and renamed (minigrad.io.save_file), so a run killed
at any moment leaves either the previous checkpoint or the new one, never half of one.
"""
import json
import os

import numpy as np

from minigrad import io

_ARRAY = "__array__"


def _flatten(obj, path, arrays):
    """Nested dicts/lists with ndarrays -> JSON-able structure; arrays collected by path."""
    if isinstance(obj, np.ndarray):
        arrays[path] = np.ascontiguousarray(obj)
        return {_ARRAY: path}
    if isinstance(obj, dict):
        return {str(k): _flatten(v, f"{path}/{k}", arrays) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_flatten(v, f"{path}/{i}", arrays) for i, v in enumerate(obj)]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _unflatten(obj, arrays):
    if isinstance(obj, dict):
        if set(obj) == {_ARRAY}:
            return np.array(arrays[obj[_ARRAY]])  # a private copy, not a view of the mmap
        return {k: _unflatten(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unflatten(v, arrays) for v in obj]
    return obj


def save_checkpoint(path, state):
    """Atomically write `state` (nested dicts of ndarrays, numbers, strings) to `path`."""
    arrays = {}
    structure = _flatten(state, "", arrays)
    io.save_file(arrays, path, metadata={"minigrad_checkpoint": json.dumps(structure)})


def load_checkpoint(path):
    """Read back what `save_checkpoint` wrote; a clear error for a file that is not one."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint: no file at {path}")
    meta = io.load_metadata(path) or {}
    if "minigrad_checkpoint" not in meta:
        raise ValueError(f"checkpoint {path}: not a minigrad training checkpoint (no state metadata)")
    return _unflatten(json.loads(meta["minigrad_checkpoint"]), io.load_file(path))

