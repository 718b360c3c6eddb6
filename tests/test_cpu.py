"""What the kernels are compiled for (minigrad/kernels/cpu.py): 512-bit vectors on AVX-512 hosts,
and a user's own NUMBA_CPU_FEATURES left alone."""
import os
import subprocess
import sys

import pytest

from minigrad.kernels import cpu

AVX512 = cpu.has_avx512()  # the kernels of this process are compiled for AVX-512


def _features_in_fresh_process(env):
    code = "import minigrad, numba; print(numba.config.CPU_FEATURES)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    return out.stdout.strip()


def test_avx512_hosts_compile_with_zmm_vectors():
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CPU_FEATURES", "NUMBA_CPU_NAME")}
    got = _features_in_fresh_process(env)
    if cpu.host_features().get("avx512f", False):
        assert got.endswith(",-prefer-256-bit") and "+avx512f" in got.split(",")
    else:
        assert got == "None"


def test_users_cpu_features_win():
    env = dict(os.environ, NUMBA_CPU_FEATURES="+avx2,+fma")
    assert _features_in_fresh_process(env) == "+avx2,+fma"


_AXPY = """
import minigrad, numba, numpy as np
@numba.njit(fastmath=True)
def axpy(a, x, y):
    for i in range(x.shape[0]):
        y[i] += a * x[i]
x = np.ones(1000, np.float32)
axpy(np.float32(2.0), x, x.copy())
print("zmm" in "".join(axpy.inspect_asm().values()))
"""


@pytest.mark.skipif(not AVX512, reason="kernels compiled without AVX-512 here")
def test_kernels_vectorise_with_zmm_registers():
    """A float32 loop compiles to 512-bit instructions in a fresh process. With LLVM's 256-bit
    preference (its tuning for Intel's AVX-512 cores) the matmul's 8 x 32 register tile became
    32 ymm accumulators and spilled (82 GFLOP/s against 339 on a 2-core Xeon)."""
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CPU_FEATURES", "NUMBA_CPU_NAME")}
    out = subprocess.run([sys.executable, "-c", _AXPY], env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "True"
