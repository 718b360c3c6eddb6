"""Dropout with a counter-based random mask: the mask is a function of (seed, index), not
an array drawn from a generator's stream.

    keep[i] = hash(seed, i) >> 8 >= threshold      threshold = round(p * 2**24)
    y[i]    = x[i] * scale if keep[i] else 0       scale = 1 / (1 - p)  (0 when p = 1)

`hash(seed, i)` works on 32-bit words, each step wrapping modulo 2**32: the seed's low word k0
offsets a Weyl sequence, z = lo(i) * golden + k0; one round of `lowbias32` (two xor-shift-
multiply steps, which mix every bit into every other); then the seed's high word k1 (plus the
index's high word, zero below 2**32 elements) is xored in and a second round mixes again. Its top
24 bits are a uniform integer in [0, 2**24), so an element is kept with probability 1 - p (p
rounded to a multiple of 2**-24). The second key keeps two seeds' masks unrelated: with k0
alone, every seed's mask would be the same sequence shifted in i.

Why 32-bit words: the vector units multiply 32-bit lanes natively, 8 or 16 at a time, but a
64 x 64-bit multiply has a vector instruction only with AVX-512DQ. With SplitMix64 (two 64-bit
multiplies per element), dropout at (2048, 384) took 1.2 ms on a Zen 3 (AVX2) against 0.12 ms
on a Zen 5 (AVX-512).

Why counter-based (as torch's Philox dropout on GPUs and FlashAttention do it): the backward of
dropout multiplies the gradient by the same mask, and a mask that can be recomputed from one
integer never has to be stored. The backward is this same kernel applied to the gradient with
the forward's seed. And each element's draw is independent of every other's, so the kernel
draws and applies the mask in one parallel, vectorised pass, where `rng.random(shape) >= p`
fills a float array on one thread and the multiply makes two more passes.
"""
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic, overload

from . import use_ref

GOLDEN = np.uint32(0x9E3779B9)  # 2**32 / golden ratio: the Weyl sequence's increment
MIX1 = np.uint32(0x7FEB352D)    # lowbias32's multipliers (C. Wellons, hash-prospector)
MIX2 = np.uint32(0x846CA68B)
S15, S16, S8, S32 = np.uint32(15), np.uint32(16), np.uint32(8), np.uint64(32)
LOW = np.uint64(0xFFFFFFFF)
BITS = 24  # random bits compared per element: p resolves to 2**-24


def threshold(p):
    """The integer the top 24 bits must reach for an element to be kept."""
    return np.uint32(round(p * (1 << BITS)))


def _lowbias32_ref(z):
    z = (z ^ (z >> S16)) * MIX1  # uint32 arrays wrap modulo 2**32, as the kernel does
    z = (z ^ (z >> S15)) * MIX2
    return z ^ (z >> S16)


def hash_ref(k0, k1, lo, hi):
    """hash(seed, i) for the seed's words k0, k1 (uint32) and i's words lo, hi (uint32 arrays)."""
    return _lowbias32_ref(_lowbias32_ref(lo * GOLDEN + k0) ^ (k1 + hi))


def keep_mask_ref(seed, shape, p):
    """The definition: bool mask of `shape`, True where element i (C order) is kept."""
    i = np.arange(int(np.prod(shape)), dtype=np.uint64)
    seed = np.uint64(seed)
    z = hash_ref(np.uint32(seed & LOW), np.uint32(seed >> S32), (i & LOW).astype(np.uint32),
                 (i >> S32).astype(np.uint32))
    return ((z >> S8) >= threshold(p)).reshape(shape)


def keep_scale(p):
    return 0.0 if p == 1.0 else 1.0 / (1.0 - p)


def dropout_ref(x, p, seed):
    return x * keep_mask_ref(seed, x.shape, p) * x.dtype.type(keep_scale(p))


BLOCK = 1 << 14  # elements per parallel task: big enough to amortise the scheduling


def hash32(k0, k1, lo, hi):
    """`hash_ref` for one index, in Python (what runs under NUMBA_DISABLE_JIT; one-element
    arrays, since NumPy warns when uint32 scalars wrap and arrays wrap silently). Compiled,
    `_hash32_ir` emits the same steps as 32-bit LLVM instructions: Numba itself would widen
    every uint32 operation to 64 bits, and LLVM then kept 64-bit multiplies, which AVX2
    cannot vectorise."""
    return hash_ref(np.uint32(k0), np.uint32(k1), np.array([lo], np.uint32), np.array([hi], np.uint32))[0]


@intrinsic
def _hash32_ir(typingctx, k0, k1, lo, hi):
    def codegen(context, builder, signature, args):
        k0, k1, lo, hi = args
        i32 = ir.IntType(32)

        c = lambda v: ir.Constant(i32, int(v))  # noqa: E731  (the constants `_lowbias32_ref` uses)

        def lowbias32(z):
            z = builder.mul(builder.xor(z, builder.lshr(z, c(S16))), c(MIX1))
            z = builder.mul(builder.xor(z, builder.lshr(z, c(S15))), c(MIX2))
            return builder.xor(z, builder.lshr(z, c(S16)))
        z = lowbias32(builder.add(builder.mul(lo, c(GOLDEN)), k0))
        return lowbias32(builder.xor(z, builder.add(k1, hi)))
    u32 = types.uint32
    return u32(u32, u32, u32, u32), codegen


@overload(hash32)
def _hash32_compiled(k0, k1, lo, hi):
    return lambda k0, k1, lo, hi: _hash32_ir(np.uint32(k0), np.uint32(k1), np.uint32(lo), np.uint32(hi))


@njit(inline="always")
def random_bits(seed, i):
    """The top 24 bits of hash(seed, i), as an unsigned integer in [0, 2**24)."""
    ui = np.uint64(i)
    return hash32(seed & LOW, seed >> S32, ui & LOW, ui >> S32) >> S8


@njit(inline="always")
def dropped(x, seed, i, thresh, scale):
    """Element i of dropout(x): x * scale where its bits keep it, else 0. The one place the
    mask is applied; the fused kernels (softmax, layer norm) call it for their elements."""
    return x * scale if random_bits(seed, i) >= thresh else np.float32(0.0)


@njit(fastmath=True, parallel=True, cache=True)
def dropout_kernel(x, seed, thresh, scale, y):
    """x (N,) float32 -> y (N,): y[i] = x[i] * scale where keep[i], else 0.

    for blk in prange(N / BLOCK):             blocks of 16K elements over threads
        for i in blk:                         vectorised: 32-bit integer ops and a select per lane
            y[i] = x[i] * scale if random_bits(seed, i) >= thresh else 0
    """
    n = x.shape[0]
    for blk in prange((n + BLOCK - 1) // BLOCK):
        lo = blk * BLOCK
        xb, yb = x[lo:lo + BLOCK], y[lo:lo + BLOCK]
        # index the block's slices from 0: with x[lo + j], LLVM cannot rule out a negative
        # index (which Numba wraps around), and it gathers and scatters instead of loading
        for j in range(xb.shape[0]):
            yb[j] = dropped(xb[j], seed, lo + j, thresh, scale)


def dropout(x, p, seed, out=None):
    """x (any shape) -> x with the (seed, p) mask applied and the kept scaled by 1/(1-p).

    Forward and backward are this one call: the backward passes the gradient with the same seed.
    `out` may be x itself (in place). float32 runs the kernel; other dtypes the reference, which
    draws the identical mask."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p={p} is not a probability")
    if out is not None and out.shape != x.shape:
        raise ValueError(f"dropout: out {out.shape} is not x's shape {x.shape}")
    if use_ref() or x.dtype != np.float32:
        y = dropout_ref(x, p, seed)
        if out is None:
            return y
        out[...] = y
        return out
    x1 = np.ascontiguousarray(x).reshape(-1)
    direct = out is not None and out.flags.c_contiguous  # else out.reshape(-1) would be a copy
    y = out.reshape(-1) if direct else np.empty_like(x1)
    dropout_kernel(x1, np.uint64(seed), threshold(p), np.float32(keep_scale(p)), y)
    if out is not None and not direct:
        out[...] = y.reshape(x.shape)
        return out
    return y.reshape(x.shape)


def new_seed(rng):
    """One seed per dropout call, drawn from minigrad's seeded generator (so runs repeat)."""
    return int(rng.integers(0, 1 << 63))
