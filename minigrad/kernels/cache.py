"""One freshness stamp for every cached kernel of this package.

Numba (`cache=True`) keeps a compiled kernel until the file that defines it changes. But the
kernels here compile each other in: attention.py's kernels inline matmul.py's micro-kernel and
its tile size, softmax.py's rows and dropout.py's hash. After an edit or an upgrade that touches
only matmul.py, attention.py's cache would still load, and run the old micro-kernel against the
new tile size: wrong numbers, silently (seen while changing the tile). So a kernel's stamp here
is its own file's, as Numba keeps it, plus a digest of every kernel source in this folder: any
change anywhere recompiles them all. Where the cache lives (in the tree, NUMBA_CACHE_DIR, ...) is
still Numba's own choice.
"""
import hashlib
import os

from numba.core import caching

_HERE = os.path.dirname(os.path.abspath(__file__))


def sources_digest(folder=_HERE):
    """sha256 over the names and contents of the folder's .py files."""
    h = hashlib.sha256()
    for name in sorted(os.listdir(folder)):
        if name.endswith(".py"):
            with open(os.path.join(folder, name), "rb") as f:
                h.update(name.encode() + b"\0" + f.read())
    return h.hexdigest()


class _PackageStampLocator(caching._CacheLocator):
    """The locator Numba would pick for a function in this folder, with the folder's digest
    added to its source stamp; for functions elsewhere, None (Numba tries its own)."""

    digest = None

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        # what else Numba reads of a locator (`_py_file` when it warns that a kernel cannot
        # be cached) is the inner one's
        return getattr(self._inner, name)

    def ensure_cache_path(self):
        self._inner.ensure_cache_path()

    def get_cache_path(self):
        return self._inner.get_cache_path()

    def get_disambiguator(self):
        return self._inner.get_disambiguator()

    def get_source_stamp(self):
        return self._inner.get_source_stamp(), self.digest

    @classmethod
    def from_function(cls, py_func, py_file):
        if os.path.dirname(os.path.abspath(py_file)) != _HERE:
            return None
        for other in caching.CacheImpl._locator_classes:
            if other is not cls:
                inner = other.from_function(py_func, py_file)
                if inner is not None:
                    return cls(inner)
        return None


def stamp_kernel_caches():
    """Put the locator first in Numba's list (once), before any kernel of this folder is
    defined."""
    if _PackageStampLocator not in caching.CacheImpl._locator_classes:
        _PackageStampLocator.digest = sources_digest()
        caching.CacheImpl._locator_classes.insert(0, _PackageStampLocator)
