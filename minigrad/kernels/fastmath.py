"""Scalar math for the Numba kernels: an `exp` and an `erf` written in plain arithmetic.

Numba's `np.exp` inside a loop is a call into libm per element, which stops LLVM from
vectorising the loop; on softmax (16,12,128,128) that call is most of the time. Written as
range reduction plus a polynomial, the same `exp` is a handful of multiply-adds and one integer
shift, which LLVM turns into 16-wide AVX-512 (or 8-wide AVX2) code: measured 2.1 ms against
8.1 ms for `np.exp` on that softmax, with 2 threads. Every step must stay in float32 and int32
lanes: `math.floor` returns an int64 in Numba, and float32 -> int64 has no vector instruction
before AVX-512DQ, so on AVX2 each lane went through a scalar conversion (GELU forward at
2048 x 1536: 4.0 ms with it, 1.5 ms with `np.floor`, Zen 3, 2 threads).

    exp(x) = 2^n * exp(r),   n = round(x / ln 2),   r = x - n ln 2 in [-ln2/2, ln2/2]
    exp(r) ~ degree-6 Taylor polynomial (Horner); 2^n built in the float32 exponent bits.

Relative error below 5e-7 over [-80, 88] (float32 rounding alone is 6e-8; measured in
tests/test_kernels.py). Above 88 the input is clamped; below -80 the result is exactly 0, so
exp(-inf) (a masked score) is 0. Not a tiny number, because of subnormals: exp(-87) ~ 1.6e-38,
divided by a softmax row's sum or multiplied by erf's polynomial, falls below float32's
smallest normal (1.2e-38), and on Intel cores every operation that makes or reads a subnormal
takes a microcode assist of about a hundred cycles. Measured on a Xeon (2 threads), attention
forward + backward at (16, 12, 128, 32) with 28 of 128 keys masked: 196 ms with the clamp at
-87, against 9 ms for the same kernels with the masked probabilities exactly 0 (AMD's cores
handle subnormals at full speed, so the clamp cost nothing there). At -80 the largest dropped
value, 1.8e-35, still has a factor of 2^10 of headroom above the subnormals.

`fast_max` is `max` for float32 that LLVM can vectorise as a reduction (`m = fast_max(m, x[j])`):
Numba's `max` compiles to a compare and select, and LLVM's loop vectoriser turns that into a
vector max only when the whole function promises no NaNs, which Numba does not say; so the
softmax's max pass ran as a chain of scalar `vmaxss`, 0.3 ns per element against 0.03 ns for
the `llvm.maxnum` intrinsic that `fast_max` calls (a row of 128 in L1, one core).

`NAN_SAFE` is the set of fast-math flags for kernels whose inputs may hold NaN or infinities
that must come out as they went in (softmax, attention): `fastmath=True` also promises LLVM
"no NaNs, no infinities", and with that promise it folded the compare-and-selects in `fast_exp`
so that a NaN score came out as probability 0 and vanished from the row (the reference and
torch give NaN). Reassociation and contraction, which the vectorised sums and the FMAs need,
stay on.

These are float32 functions: the kernels that use them run only on float32 (float64, the gradient
checks' dtype, goes to the NumPy references; see each wrapper).
"""
import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

NAN_SAFE = {"reassoc", "contract", "arcp", "nsz", "afn"}  # fastmath=True less nnan, ninf

_LOG2E = np.float32(1.4426950408889634)
_LN2_HI = np.float32(0.693145751953125)        # ln 2 split in two so n * LN2_HI is exact
_LN2_LO = np.float32(1.428606765330187e-06)
_EXP_MAX = np.float32(88.0)
_EXP_MIN = np.float32(-80.0)


@njit(inline="always", fastmath=True, cache=True)
def fast_exp(x):
    """exp(x) for a float32 scalar, vectorisable (no libm call); exactly 0 below -80."""
    small = x < _EXP_MIN
    x = max(min(x, _EXP_MAX), _EXP_MIN)
    n = np.floor(x * _LOG2E + np.float32(0.5))  # float32; math.floor would return an int64
    r = x - n * _LN2_HI
    r = r - n * _LN2_LO
    p = np.float32(1.0 / 720.0)
    p = p * r + np.float32(1.0 / 120.0)
    p = p * r + np.float32(1.0 / 24.0)
    p = p * r + np.float32(1.0 / 6.0)
    p = p * r + np.float32(0.5)
    p = p * r + np.float32(1.0)
    p = p * r + np.float32(1.0)
    two_n = ((np.int32(n) + np.int32(127)) << np.int32(23))   # the bits of the float 2^n
    return np.float32(0.0) if small else p * np.int32(two_n).view(np.float32)


@njit(inline="always", fastmath=True, cache=True)
def fast_erf(x):
    """erf(x) for a float32 scalar: Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7 in exact
    arithmetic), with `fast_exp` for its exponential. In float32 the absolute error is at most
    about 5.4e-7 (largest near |x| = 0.03); near 0 that is a large relative error, as
    1 - poly * exp(-x^2) cancels, but GELU multiplies erf's error by x / 2."""
    ax = abs(x)
    t = np.float32(1.0) / (np.float32(1.0) + np.float32(0.3275911) * ax)
    poly = t * (np.float32(0.254829592) + t * (np.float32(-0.284496736) + t * (
        np.float32(1.421413741) + t * (np.float32(-1.453152027) + t * np.float32(1.061405429)))))
    y = np.float32(1.0) - poly * fast_exp(-ax * ax)
    return math.copysign(y, x)


def fast_max(a, b):
    """max(a, b) for float32 scalars; compiled, the `llvm.maxnum` intrinsic (see the module
    docstring); in Python (NUMBA_DISABLE_JIT=1), `max`."""
    return max(a, b)


@intrinsic
def _maxnum(typingctx, a, b):
    def codegen(context, builder, signature, args):
        f32 = ir.FloatType()
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(f32, [f32, f32]),
                                            "llvm.maxnum.f32")
        return builder.call(fn, args, fastmath=("fast",))
    return types.float32(types.float32, types.float32), codegen


@overload(fast_max)
def _fast_max_compiled(a, b):
    return lambda a, b: _maxnum(np.float32(a), np.float32(b))
