"""minigrad.io: weights and checkpoints to and from disk, as plain data (never executable code).

`safetensors.py` is our validating, memory-mapped reader and atomic writer for the format every
Hugging Face checkpoint uses; `atomic.py` holds the write-to-temp-then-rename helper that it and
the training checkpoints share. This is the top of the package: it needs only NumPy.
"""
from .atomic import atomic_open, atomic_write_bytes, atomic_write_json, remove_temporaries
from .safetensors import (SafetensorsError, load, load_file, load_metadata, safe_open, save,
                          save_file)

__all__ = ["SafetensorsError", "atomic_open", "atomic_write_bytes", "atomic_write_json", "load",
           "load_file", "load_metadata", "remove_temporaries", "safe_open", "save", "save_file"]
