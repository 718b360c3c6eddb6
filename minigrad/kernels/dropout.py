"""Dropout with a counter-based random mask: the mask is a function of (seed, index), not
an array drawn from a generator's stream.

    keep[i] = splitmix64(seed, i) >> 40 >= threshold      threshold = round(p * 2**24)
    y[i]    = x[i] * scale if keep[i] else 0              scale = 1 / (1 - p)  (0 when p = 1)

`splitmix64(seed, i)` is the i-th output of the SplitMix64 generator started at `seed`: add
(i + 1) times the golden-ratio constant, then three xor-shift-multiply rounds that mix every bit
into every other. Its top 24 bits are a uniform integer in [0, 2**24), so an element is kept
with probability 1 - p (p rounded to a multiple of 2**-24).

Why counter-based (as torch's Philox dropout on GPUs and FlashAttention do it): the backward of
dropout multiplies the gradient by the same mask, and a mask that can be recomputed from one
integer never has to be stored. The backward is this same kernel applied to the gradient with
the forward's seed. And each element's draw is independent of every other's, so the kernel
draws and applies the mask in one parallel, vectorised pass, where `rng.random(shape) >= p`
fills a float array on one thread and the multiply makes two more passes.
"""
import numpy as np
from numba import njit, prange

from . import use_ref

GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # 2**64 / golden ratio: SplitMix64's increment
MIX1 = np.uint64(0xBF58476D1CE4E5B9)
MIX2 = np.uint64(0x94D049BB133111EB)
S30, S27, S31, S40 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(40)
BITS = 24  # random bits compared per element: p resolves to 2**-24


def threshold(p):
    """The integer the top 24 bits must reach for an element to be kept."""
    return np.uint64(round(p * (1 << BITS)))


def keep_mask_ref(seed, shape, p):
    """The definition: bool mask of `shape`, True where element i (C order) is kept."""
    i = np.arange(1, int(np.prod(shape)) + 1, dtype=np.uint64)
    z = np.uint64(seed) + i * GOLDEN  # uint64 arrays wrap modulo 2**64, as the kernel does
    z = (z ^ (z >> S30)) * MIX1
    z = (z ^ (z >> S27)) * MIX2
    z = z ^ (z >> S31)
    return ((z >> S40) >= threshold(p)).reshape(shape)


def keep_scale(p):
    return 0.0 if p == 1.0 else 1.0 / (1.0 - p)


def dropout_ref(x, p, seed):
    return x * keep_mask_ref(seed, x.shape, p) * x.dtype.type(keep_scale(p))


BLOCK = 1 << 14  # elements per parallel task: big enough to amortise the scheduling


@njit(inline="always")
def random_bits(seed, i):
    """The top 24 bits of splitmix64(seed, i), as an unsigned integer in [0, 2**24)."""
    z = seed + np.uint64(i + 1) * GOLDEN
    z = (z ^ (z >> S30)) * MIX1
    z = (z ^ (z >> S27)) * MIX2
    return (z ^ (z >> S31)) >> S40


@njit(fastmath=True, parallel=True, cache=True)
def dropout_kernel(x, seed, thresh, scale, y):
    """x (N,) float32 -> y (N,): y[i] = x[i] * scale where keep[i], else 0.

    for blk in prange(N / BLOCK):             blocks of 16K elements over threads
        for i in blk:                         vectorised: 8 integer ops and a select per lane
            y[i] = x[i] * scale if random_bits(seed, i) >= thresh else 0
    """
    n = x.shape[0]
    for blk in prange((n + BLOCK - 1) // BLOCK):
        lo = blk * BLOCK
        xb, yb = x[lo:lo + BLOCK], y[lo:lo + BLOCK]
        # index the block's slices from 0: with x[lo + j], LLVM cannot rule out a negative
        # index (which Numba wraps around), and it gathers and scatters instead of loading
        for j in range(xb.shape[0]):
            yb[j] = xb[j] * scale if random_bits(seed, lo + j) >= thresh else np.float32(0.0)


def dropout(x, p, seed, out=None):
    """x (any shape) -> x with the (seed, p) mask applied and the kept scaled by 1/(1-p).

    Forward and backward are this one call: the backward passes the gradient with the same seed.
    `out` may be x itself (in place). float32 runs the kernel; other dtypes the reference, which
    draws the identical mask."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p={p} is not a probability")
    if use_ref() or x.dtype != np.float32:
        y = dropout_ref(x, p, seed)
        if out is None:
            return y
        out[...] = y
        return out
    x1 = np.ascontiguousarray(x).reshape(-1)
    y = np.empty_like(x1) if out is None else out.reshape(-1)
    dropout_kernel(x1, np.uint64(seed), threshold(p), np.float32(keep_scale(p)), y)
    return y.reshape(x.shape)


def new_seed(rng):
    """One seed per dropout call, drawn from minigrad's seeded generator (so runs repeat)."""
    return int(rng.integers(0, 1 << 63))
