"""Matrix multiply: the naive reference, the Numba kernel, and the dispatcher; plus the
linear layer's fused bias (+ GELU) epilogue.

    matmul(a (M, K), b (K, N)) -> (M, N); batched (..., M, K) @ (..., K, N)
    linear(x (N, Cin), w (Cout, Cin), b (Cout,) | None, gelu) -> y = act(x @ w^T + b)
"""
import numpy as np
from numba import carray, njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from . import cpu, use_ref
from .fastmath import fast_erf
from .gelu import gelu_forward_ref


def matmul_ref(a, b):
    """The definition: out[i, j] = sum_k a[i, k] * b[k, j] (einsum, no BLAS tricks)."""
    return np.einsum("...ik,...kj->...ij", a, b)


def _register_tile_shape():
    """(MR, NR) of the register tile for the vector registers of the CPU Numba compiles for.

    The tile must fit the register file with room for one vector of B and the broadcasts of A,
    since LLVM hoists the MR broadcasts of a step of k above its FMAs. Measured (benchmarks/,
    2 threads, 2048 x 384 x 384):
    - AVX-512 (32 zmm of 16 floats; Zen 5): 8 x 32, 16 accumulators, 2 loads of B, 8
      broadcasts and 16 FMAs per k, enough independent FMAs for both FMA pipes through their
      4-cycle latency (378 GFLOP/s, OpenBLAS 430).
    - AVX2 (16 ymm of 8 floats; Zen 3): 3 x 32, 12 accumulators, 4 loads, 3 broadcasts and
      12 FMAs (115 GFLOP/s, OpenBLAS 125). 8 x 32 there needs 32 accumulators and spills on
      every k (34 GFLOP/s); 6 x 16 has 12 accumulators but 6 broadcasts, and spills too (49).
    Numba's cache is keyed by the CPU's name and features, so a cached kernel always has the
    tile chosen here. 512-bit vectors on Intel's AVX-512 cores need cpu.use_wide_vectors()."""
    return (8, 32) if cpu.has_avx512() else (3, 32)


# MR x NR is the register tile (above). A KC x NR panel of packed B (48 KB at KC=384) is reused
# by the MC / MR tiles of a thread's row block, and the MC x KC block of packed A (about 96 KB)
# stays in L2 (512 KB to 1 MB) while it meets every panel of B.
MR, NR = _register_tile_shape()
MC, KC = MR * (64 // MR), 384


def register_tile():
    """An (MR, NR) float32 scratch tile for the micro-kernel's accumulators.

    In Python (NUMBA_DISABLE_JIT=1) a NumPy array. Compiled, it is stack memory (an LLVM
    `alloca`): once LLVM has unrolled the loops over it, every element has a constant address
    and the whole tile is promoted to 16 registers. A heap array (np.empty) cannot be: LLVM
    cannot prove that the stores into it do not alias the loads of A and B, so it stores and
    reloads the tile on every step of k (measured: 58 against 223 GFLOP/s on one core)."""
    return np.empty((MR, NR), np.float32)


@intrinsic
def _stack_tile(typingctx):
    def codegen(context, builder, signature, args):
        return cgutils.alloca_once(builder, context.get_value_type(types.float32), size=MR * NR)
    return types.CPointer(types.float32)(), codegen


@overload(register_tile)
def _register_tile_compiled():
    return lambda: carray(_stack_tile(), (MR, NR))


@njit(fastmath=True, inline="always", cache=True)
def _micro_kernel(a_t, b_p, c, i, mi, j, bias, first):
    """One register tile: c[i:i+mi, j:j+nj] += a_t^T @ b_p, nj = min(NR, N - j); on the first
    block of k, c = bias + ... instead. a_t (kc, MR) is a tile of A, transposed: a tile of
    packed A (`_pack_a_block`, contiguous), or a view a[i:i+MR].T read in place; b_p (kc, NR)
    a panel of packed B; mi <= MR rows and nj <= NR columns lie inside C.

    acc = 0                       (MR, NR): 16 zmm (AVX-512) or 12 ymm (AVX2) registers
    for k in kc:                  the whole loop runs on registers
      for j in NR:                vectorised: NR / lanes loads of B
        for r in MR:              unrolled: broadcast A[r, k], FMA into acc[r, j]
    c[:mi, :nj] += acc            (or = acc + bias)

    The shape of this code is what LLVM needs to see. j outside r: LLVM unrolls the short r
    loop and vectorises j (with r outside it vectorised across r, with gathers). The tile goes
    into C as an addition over mi x nj: a plain copy loop became memcpy calls (or scalar moves at
    fixed size), and the add also brings the bias in for free and handles edge tiles. A and B
    are passed as slices that start at 0 (a_t, b_p): indexed as bp[p, k0 + k, jj], Numba's
    negative-index wrap-around cost a shift, an and and a multiply on every step of k (AVX2:
    84 against 115 GFLOP/s). Inlined into its callers (inline="always"): attention's products
    have K = 32, and a call per tile cost up to 15% there (Xeon: QK^T of one head in L1 8.9 ->
    7.7 us).
    """
    acc = register_tile()
    for r in range(MR):
        for jj in range(NR):
            acc[r, jj] = np.float32(0.0)
    for k in range(a_t.shape[0]):
        for jj in range(NR):
            bkj = b_p[k, jj]
            for r in range(MR):
                acc[r, jj] += a_t[k, r] * bkj
    nj = min(NR, c.shape[1] - j)
    bj = bias[j:j + nj]
    for r in range(mi):
        row = c[i + r, j:j + nj]
        if first:
            for jj in range(nj):
                row[jj] = acc[r, jj] + bj[jj]
        else:
            for jj in range(nj):
                row[jj] += acc[r, jj]


@njit(fastmath=True, cache=True)
def _pack_b_panel(b, bp, p):
    """bp[p] = b[:, p NR : p NR + NR], zero-padded past b's last column: panel p of packed B,
    (K, NR), so the micro-kernel reads B as one contiguous stream."""
    j0 = p * NR
    w = min(NR, b.shape[1] - j0)
    for k in range(b.shape[0]):
        for jj in range(w):
            bp[p, k, jj] = b[k, j0 + jj]
        for jj in range(w, NR):
            bp[p, k, jj] = np.float32(0.0)


@njit(fastmath=True, cache=True)
def _pack_a_block(a, i0, i1, k0, kc, ap):
    """ap[t, k, r] = a[i0 + t MR + r, k0 + k], zero for rows past i1: the MR rows of a tile side
    by side, so the micro-kernel's 8 broadcasts per k are adjacent floats."""
    for t in range((i1 - i0 + MR - 1) // MR):
        for k in range(kc):
            for r in range(MR):
                i = i0 + t * MR + r
                ap[t, k, r] = a[i, k0 + k] if i < i1 else np.float32(0.0)


@njit(fastmath=True, error_model="numpy", cache=True)
def _matmul_rows(a, bp, c, i0, i1, bias, gelu):
    """c[i0:i1] = a[i0:i1] @ b + bias (then GELU if gelu), serial; a (M, K), b packed as
    bp (ceil(N / NR), K, NR) by `_pack_b_panel`.

    for ib in i0..i1 by MC:                   a row block
      for k0 in K by kc (kc <= KC):           K in equal blocks
        pack A[ib:ib+MC, k0:k0+kc] -> ap      stays in L2
        for j in N by NR:                     a panel of packed B, stays in L1
          for i in ib..ib+MC by MR:           `_micro_kernel`, one register tile:
            C[i:i+MR, j:j+NR] += A[i:i+MR, k0:k0+kc] @ B[k0:k0+kc, j:j+NR]   (+ bias if k0 = 0)
      if gelu: C[ib:ib+MC] = gelu(C[ib:ib+MC])        (rows still in L2)

    error_model="numpy" lets the GELU loop vectorise: with Python's, every float division gets
    a zero check that raises ZeroDivisionError.
    """
    kdim = a.shape[1]
    n = c.shape[1]
    nk = max(1, (kdim + KC - 1) // KC)
    ap = np.empty((MC // MR, (kdim + nk - 1) // nk, MR), np.float32)
    for ib in range(i0, i1, MC):
        ie = min(ib + MC, i1)
        for kb in range(nk):
            k0, k1 = kb * kdim // nk, (kb + 1) * kdim // nk
            kc = k1 - k0
            _pack_a_block(a, ib, ie, k0, kc, ap)
            for p in range(bp.shape[0]):
                for t in range((ie - ib + MR - 1) // MR):
                    i = ib + t * MR
                    mi = min(MR, ie - i)
                    _micro_kernel(ap[t, :kc], bp[p, k0:k0 + kc], c, i, mi, p * NR, bias,
                                  kb == 0)
        if gelu:
            for i in range(ib, ie):
                row = c[i]
                for jj in range(n):
                    h = row[jj]
                    erf = fast_erf(h * np.float32(0.7071067811865476))
                    row[jj] = np.float32(0.5) * h * (np.float32(1.0) + erf)


@njit(fastmath=True, parallel=True, cache=True)
def matmul_kernel(a, b, bias, gelu, c):
    """a (M, K) @ b (K, N) + bias (N,) [GELU] -> c (M, N) float32: pack B's panels (prange),
    then row blocks of MC over threads (prange), each a `_matmul_rows` call."""
    m = a.shape[0]
    bp = np.empty(((b.shape[1] + NR - 1) // NR, b.shape[0], NR), np.float32)
    for p in prange(bp.shape[0]):
        _pack_b_panel(b, bp, p)
    for ib in prange((m + MC - 1) // MC):
        _matmul_rows(a, bp, c, ib * MC, min(ib * MC + MC, m), bias, gelu)


@njit(fastmath=True, parallel=True, cache=True)
def bmm_kernel(a, b, c):
    """a (G, M, K) @ b (G, K, N) -> c (G, M, N) float32, for attention's (B*H, T, D) shapes:
    one whole small matmul per prange iteration, since one head is too small to split."""
    zero = np.zeros(b.shape[2], np.float32)
    for g in prange(a.shape[0]):
        bp = np.empty(((b.shape[2] + NR - 1) // NR, b.shape[1], NR), np.float32)
        for p in range(bp.shape[0]):
            _pack_b_panel(b[g], bp, p)
        _matmul_rows(a[g], bp, c[g], 0, a.shape[1], zero, False)


def _check(a, b, name):
    if a.ndim < 2 or b.ndim < 2 or a.shape[-1] != b.shape[-2]:
        raise ValueError(f"{name}: {a.shape} @ {b.shape}: inner dimensions "
                         f"{a.shape[-1] if a.ndim else None} and "
                         f"{b.shape[-2] if b.ndim > 1 else None} differ")


def matmul_numba(a, b):
    """The hand-written kernel, float32: (M, K) @ (K, N), or batched (G, M, K) @ (G, K, N)."""
    _check(a, b, "matmul_numba")
    if a.dtype != np.float32 or b.dtype != np.float32:
        raise TypeError(f"matmul_numba: float32 only, got {a.dtype} @ {b.dtype}")
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    if a.ndim == 2 and b.ndim == 2:
        c = np.empty((a.shape[0], b.shape[1]), np.float32)
        matmul_kernel(a, b, np.zeros(b.shape[1], np.float32), False, c)
        return c
    if a.ndim == 3 and b.shape == (a.shape[0], a.shape[2], b.shape[2]):
        c = np.empty((a.shape[0], a.shape[1], b.shape[2]), np.float32)
        bmm_kernel(a, b, c)
        return c
    raise ValueError(f"matmul_numba: {a.shape} @ {b.shape}: expected 2-D @ 2-D or (G, M, K) @ "
                     "(G, K, N)")


def matmul(a, b):
    """a (..., M, K) @ b (..., K, N) -> (..., M, N): the dispatcher the ops call.

    Measured (benchmarks/RESULTS.md, "Kernels"): OpenBLAS beats `matmul_numba` at every shape
    class we use, if narrowly: the Numba kernel runs at 0.8-0.9x of it on the BERT projections
    and the square ones, 0.6-0.7x on the batched attention ones (2 threads, Zen 5). So every
    shape goes to BLAS; `matmul_numba` stays tested and benchmarked as the readable fast
    version. Under `kernels.use("ref")` this runs `matmul_ref`.
    """
    _check(a, b, "matmul")
    if use_ref():
        return matmul_ref(a, b)
    return np.matmul(a, b)


def linear_forward_ref(x, w, b=None, gelu=False):
    """Returns (y, h): h is the pre-activation x @ w^T + b kept for GELU's backward (or None)."""
    h = x @ w.T
    if b is not None:
        h = h + b
    return (gelu_forward_ref(h), h) if gelu else (h, None)


@njit(fastmath=True, parallel=True, cache=True)
def bias_gelu_kernel(h, bias, y):
    """h (N, C) += bias (C,) in place; y = GELU(h): one pass over the matmul's output,
    for n in prange(N): for c in range(C)."""
    for n in prange(h.shape[0]):
        for j in range(h.shape[1]):
            hj = h[n, j] + bias[j]
            h[n, j] = hj
            y[n, j] = np.float32(0.5) * hj * (np.float32(1.0) + fast_erf(hj * np.float32(0.7071067811865476)))


def linear_forward(x, w, b=None, gelu=False):
    """x (..., Cin), w (Cout, Cin), b (Cout,) | None -> (y (..., Cout), h or None).

    The matmul goes to BLAS (see `matmul`), and the bias and GELU run as one fused epilogue pass
    over its output. (`matmul_kernel` fuses the same epilogue into its tiles; it is the slower
    matmul, so it is not the one dispatched.) float64 takes the reference."""
    if x.shape[-1] != w.shape[1] or (b is not None and b.shape != (w.shape[0],)):
        raise ValueError(f"linear: x {x.shape} @ w{w.shape}^T + b {None if b is None else b.shape}:"
                         f" expected w (Cout, {x.shape[-1]}) and b (Cout,)")
    if use_ref() or x.dtype != np.float32 or w.dtype != np.float32 or (
            b is not None and b.dtype != np.float32):
        return linear_forward_ref(x, w, b, gelu)
    h = np.matmul(x, w.T)
    h2 = h.reshape(-1, h.shape[-1])  # a view: matmul's output is contiguous
    if not gelu:
        if b is not None:  # LoRA's epilogue at rank 0: one parallel pass (NumPy's += is serial)
            lora_update_kernel(h2, np.empty((h2.shape[0], 0), np.float32),
                               np.empty((0, h2.shape[1]), np.float32), np.ascontiguousarray(b))
        return h, None
    y = np.empty_like(h2)
    bias_gelu_kernel(h2, np.zeros(h.shape[-1], np.float32) if b is None else np.ascontiguousarray(b), y)
    return y.reshape(h.shape), h


def lora_update_ref(h, t, b, bias=None):
    """h (N, M) += bias (M,) + t (N, r) @ b (M, r)^T, in place; returns h. LoRA's rank-r term
    (b is lora_B, t the scaled middle x A^T s) added onto the base product x W^T."""
    h += t @ b.T
    if bias is not None:
        h += bias
    return h


@njit(fastmath=True, parallel=True, cache=True)
def lora_update_kernel(h, t, bt, bias):
    """h (N, M) += bias (M,) + t (N, r) @ bt (r, M), in place, float32: the bias and a rank-r
    product fused into one pass over h, where NumPy would make two (N, M) temporaries.

    for n in prange(N):           rows over threads
      h[n, :] += bias             the row stays in L1 for the r updates below
      for j in range(r):
        for m in range(M):        vectorised: contiguous in h and bt
          h[n, m] += t[n, j] * bt[j, m]

    r is small (LoRA's 8), so r + 1 passes over a row in L1 cost less than one over h in memory.
    """
    for n in prange(h.shape[0]):
        row = h[n]
        for m in range(h.shape[1]):
            row[m] += bias[m]
        for j in range(t.shape[1]):
            c, up = t[n, j], bt[j]
            for m in range(h.shape[1]):
                row[m] += c * up[m]


def lora_update(h, t, b, bias=None):
    """h (N, M) += bias (M,) | None + t (N, r) @ b (M, r)^T, in place; returns h.

    LoRA's forward passes lora_B as b onto x W^T; its backward passes lora_A^T (a view) onto
    dy W, for dx, with no bias. The kernel reads b^T (r, M) row by row: for lora_A^T that is
    lora_A itself, no copy; for lora_B a copy of r x M floats. float64 takes the reference."""
    if (h.ndim != 2 or t.ndim != 2 or t.shape[0] != h.shape[0] or b.shape != (h.shape[-1], t.shape[-1])
            or (bias is not None and bias.shape != h.shape[-1:])):
        raise ValueError(f"lora_update: h {h.shape} += t {t.shape} @ b{b.shape}^T + bias "
                         f"{None if bias is None else bias.shape}: expected h (N, M), t (N, r), "
                         f"b (M, r) and bias (M,)")
    if use_ref() or any(a is not None and a.dtype != np.float32 for a in (h, t, b, bias)):
        return lora_update_ref(h, t, b, bias)
    bias = np.zeros(h.shape[1], np.float32) if bias is None else np.ascontiguousarray(bias)
    lora_update_kernel(h, np.ascontiguousarray(t), np.ascontiguousarray(b.T), bias)
    return h
