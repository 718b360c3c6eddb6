"""What the Numba kernels are compiled for: the host CPU, with 512-bit vectors where it has them.

Numba compiles for the host CPU as LLVM names it. For Intel's AVX-512 cores (Skylake-SP through
Sapphire Rapids, and the Rocket Lake that a KVM guest may report) LLVM's tuning says
`prefer-256-bit`: its vectoriser then uses 256-bit ymm registers although 512-bit zmm ones
exist, because early AVX-512 chips lowered their clock for zmm code. For our kernels that
halves the arithmetic per instruction, and the matmul's 8 x 32 register tile, sized for 16
zmm accumulators, needs 32 ymm ones and spills: measured on a 2-core Xeon (LLVM: rocketlake),
Numba matmul at 2048 x 384 x 1536 ran at 82 GFLOP/s with the default tuning and 339 GFLOP/s
with `-prefer-256-bit` (OpenBLAS's zmm kernels: 395). AMD's Zen 4 and 5 have no such tuning,
so for them the setting changes nothing.

`NUMBA_CPU_FEATURES` is the host's feature string plus `-prefer-256-bit`, set before the first
kernel compiles. Numba keys its cache on the feature string, so cached kernels always match it.
A user's own NUMBA_CPU_NAME or NUMBA_CPU_FEATURES wins.
"""
import os
import sys


def host_features():
    """LLVM's view of the host CPU's features (a mapping name -> bool with a `flatten()` to
    LLVM's "+a,-b" string), or {} where LLVM cannot tell."""
    from llvmlite import binding
    try:
        return binding.get_host_cpu_features()
    except RuntimeError:  # no feature list on this platform
        return {}


def has_avx512():
    """True when the kernels compile for 512-bit vectors (AVX-512F on the host, or in the
    user's NUMBA_CPU_FEATURES)."""
    user = os.environ.get("NUMBA_CPU_FEATURES")
    if user is not None:
        return "+avx512f" in user.split(",")
    return bool(host_features().get("avx512f", False))


def use_wide_vectors():
    """On an AVX-512 host, let LLVM vectorise with zmm registers (see the module docstring).
    Returns the feature string set, or None when nothing was changed."""
    if "NUMBA_CPU_FEATURES" in os.environ or "NUMBA_CPU_NAME" in os.environ:
        return None
    features = host_features()
    if not features.get("avx512f", False):
        return None
    flat = features.flatten() + ",-prefer-256-bit"
    os.environ["NUMBA_CPU_FEATURES"] = flat
    if "numba" in sys.modules:  # imported already: its config was read, so set it there too
        from numba.core import config
        config.CPU_FEATURES = flat
    return flat
