"""Atomic file writes: a save either completes or leaves the previous file untouched.

Everything minigrad writes to disk (safetensors weights, the JSON beside a checkpoint) goes
through `atomic_open`: the bytes go to a temporary file in the same directory, are flushed and
fsynced, and only then renamed over the target with `os.replace`. A rename within one file
system is atomic on POSIX and Windows, so a process killed at any moment leaves either the old
file or the new one, never a half-written mix. The temporary file must live in the target's
directory because a rename across file systems is a copy, not an atomic switch.

This module sits at the bottom of `minigrad.io`; it knows nothing about tensors.
"""
import contextlib
import json
import os
import tempfile


@contextlib.contextmanager
def atomic_open(path):
    """Open a binary file for writing that replaces `path` only if the block finishes.

        with atomic_open("run/ckpt.safetensors") as f:
            f.write(...)

    On an exception the temporary file is deleted and `path` is left as it was.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=_temp_prefix(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            # mkstemp makes the file private (0600); a checkpoint should be like any other file
            os.chmod(tmp, _mode_for(path))
            yield f
            f.flush()
            os.fsync(f.fileno())  # the data is on disk before the name points at it
        os.replace(tmp, path)
    except BaseException:  # also KeyboardInterrupt: never leave temporary files behind
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def _temp_prefix(path):
    return "." + os.path.basename(path) + "."


def remove_temporaries(directory, names):
    """Delete the temporary files that writes of `names` (file names in `directory`) left when
    their process was killed mid-write (`.<name>.<random>.tmp`); the complete files stay."""
    prefixes = tuple(_temp_prefix(name) for name in names)
    for entry in os.listdir(directory):
        if entry.startswith(prefixes) and entry.endswith(".tmp"):
            os.remove(os.path.join(directory, entry))


def _mode_for(path):
    """Keep the permissions of the file being replaced, else those `open` would give a new file:
    0666 less the process's umask (0644 under the usual umask 022)."""
    try:
        return os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0o022)  # reading the umask means setting it; put it straight back
        os.umask(umask)
        return 0o666 & ~umask


def _fsync_directory(directory):
    """Persist the rename itself; without this a power cut may forget it (POSIX only)."""
    if not hasattr(os, "O_DIRECTORY"):  # Windows cannot open a directory for fsync
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path, data):
    """Write `data` (bytes-like) to `path` atomically."""
    with atomic_open(path) as f:
        f.write(data)


def atomic_write_json(path, obj, indent=2):
    """Write `obj` as UTF-8 JSON to `path` atomically (sorted keys, so diffs stay small)."""
    text = json.dumps(obj, indent=indent, sort_keys=True, ensure_ascii=False) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))
