"""The kernel layer: pure functions on `np.ndarray`, each with a NumPy reference beside it.

Every kernel module (`softmax.py`, `layernorm.py`, ...) holds, in order: the NumPy reference
`<op>_ref` (the spec), the Numba kernel, and the wrapper the ops call, which checks shapes and
dtypes and routes to one or the other. One switch picks the path for every op:

    MINIGRAD_KERNELS=ref  (environment)   or   with minigrad.kernels.use("ref"): ...

`fused` (the default) runs the Numba kernels; `ref` runs the references. Nothing here knows
about Tensors or graphs.

Threads: `MINIGRAD_NUM_THREADS` (default: all cores) and `set_num_threads(n)` drive both the
Numba kernels and BLAS (see `threads.py`). Float32 runs the Numba kernels; float64 (the dtype of
gradient checks) runs the references, since the kernels' `exp`/`erf` are float32 polynomials.
"""
import contextlib
import os

from .cpu import use_wide_vectors
from .memory import keep_freed_memory
from .threads import configure_blas_env, default_num_threads, get_num_threads, set_num_threads

configure_blas_env()
keep_freed_memory()
use_wide_vectors()

# Numba, hence NumPy, only now that the BLAS settings are in the environment; and before any
# kernel module defines its kernels
from .cache import stamp_kernel_caches  # noqa: E402

stamp_kernel_caches()

_MODES = ("fused", "ref")
_mode = os.environ.get("MINIGRAD_KERNELS", "fused")
if _mode not in _MODES:
    raise ValueError(f"MINIGRAD_KERNELS={_mode!r}: expected one of {_MODES}")


def mode():
    """The active kernel path: 'fused' or 'ref'."""
    return _mode


def set_mode(name):
    global _mode
    if name not in _MODES:
        raise ValueError(f"kernels.set_mode({name!r}): expected one of {_MODES}")
    _mode = name


@contextlib.contextmanager
def use(name):
    """Route every op to the given path inside the block: `with kernels.use("ref"): ...`."""
    prev = _mode
    set_mode(name)
    try:
        yield
    finally:
        set_mode(prev)


def use_ref():
    return _mode == "ref"


set_num_threads(default_num_threads())
