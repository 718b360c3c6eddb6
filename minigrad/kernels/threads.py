"""One thread setting for the kernel layer: Numba's parallel loops and BLAS.

`MINIGRAD_NUM_THREADS` (default: the number of cores) is read once when minigrad is imported;
`set_num_threads(n)` changes it later.

- Numba: `numba.set_num_threads(n)` (at most the cores Numba started with). Numba keeps this
  per Python thread: a change made in one thread leaves the others (which start from the
  import-time setting) as they were; `set_num_threads` in the thread that runs the model.
- BLAS: OpenBLAS reads `OPENBLAS_NUM_THREADS` only when NumPy loads it, so the environment
  variable is set (if the user has not set it) only when NumPy is not imported yet, i.e. when
  minigrad is the first import. Later changes go through `threadpoolctl` when it is installed;
  without it BLAS keeps the thread count it started with, and `set_num_threads` says so by
  returning False.
"""
import os
import sys


def default_num_threads():
    """MINIGRAD_NUM_THREADS, or the number of cores."""
    n = os.environ.get("MINIGRAD_NUM_THREADS")
    if n is None:
        return os.cpu_count() or 1
    if not n.isdigit() or int(n) < 1:
        raise ValueError(f"MINIGRAD_NUM_THREADS={n!r}: expected a positive integer")
    return int(n)


def configure_blas_env():
    """Before the thread pools start: point OpenBLAS at the thread setting, and make idle
    workers sleep instead of spin.

    Two pools share the cores: OpenBLAS's and Numba's (OpenMP). By default each one's idle
    workers spin for a while after a parallel region, so on 2 cores a Numba kernel right after
    a BLAS call waits for a core that a spinning BLAS thread holds. Measured on the 2-core
    machine (matmul (640,384)x(384,384) then a layer-norm, in a loop): 8.0 ms per pair with
    spinning workers, 1.0 ms with OMP_WAIT_POLICY=PASSIVE, against 1.0 ms for the matmul
    alone. OpenBLAS's own threads spin for 2**28 cycles (about 0.07 s) after each call unless
    OPENBLAS_THREAD_TIMEOUT says otherwise; 4 (2**4 cycles) puts them to sleep at once, and a
    LoRA training step at 16 x 128 went from 414 / 423 ms to 344 / 375 ms (two runs each).
    The OpenBLAS variables are read once, when NumPy loads OpenBLAS: they take effect only
    when minigrad is imported before NumPy (the `tasks` and `models` packages import it first).
    Users' own settings of these variables win (setdefault).
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read when Numba first loads OpenMP
    if "numpy" not in sys.modules:
        n = str(default_num_threads())
        os.environ.setdefault("OPENBLAS_NUM_THREADS", n)
        os.environ.setdefault("OMP_NUM_THREADS", n)
        os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")


def set_num_threads(n):
    """Use n threads in Numba kernels and, where it can be changed at run time, in BLAS.
    Returns True when BLAS was set too."""
    import numba
    n = max(1, min(int(n), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(n)
    try:
        import threadpoolctl
    except ImportError:
        return False
    threadpoolctl.threadpool_limits(n, user_api="blas")
    return True


def get_num_threads():
    import numba
    return numba.get_num_threads()
