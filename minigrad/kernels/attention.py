"""Scaled dot-product attention over all heads, forward and backward, with optional dropout
on the attention probabilities.

    q (B, H, L, D) queries; k, v (B, H, S, D) keys and values (self-attention: L = S = T);
    mask additive, broadcastable to (B, H, L, S) (BERT: (B, 1, 1, S))
    probs = softmax(q @ k^T * scale + mask)      (B, H, L, S)
    drop = dropout(probs, p, seed)               dropout.py's counter-based mask, p = 0: none
    out = drop @ v                               (B, H, L, D)
    backward: dv = drop^T @ dout; dprobs = dropout(dout @ v^T, p, seed);
              dscores = probs * (dprobs - sum(dprobs * probs, -1)) * scale
              dq = dscores @ k; dk = dscores^T @ q

The fused path (float32, key mask): `attention_forward_kernel` and `attention_backward_kernel`
each run all of one head on one thread (prange over B*H): the (T, T) product of a block of
query rows in matmul.py's register tile, straight into softmax.py's row functions while the
rows are in L1, and the forward's product with V on the same rows; the backward's (T, D)
products then run on the whole head, in the same register tile. Other
masks take Q K^T in BLAS and softmax.py's kernel; float64 takes the reference.
"""
import numba
import numpy as np
from numba import njit, prange

from . import use_ref
from . import dropout as kdropout
from . import softmax as ksoftmax
from .fastmath import NAN_SAFE
from .matmul import MR, NR, _micro_kernel, _pack_a_block, _pack_b_panel
from .softmax import softmax_backward_ref, softmax_backward_row, softmax_forward_ref, softmax_row


def _dropped(probs, p, seed):
    """The probabilities after dropout; the mask is recomputed from the seed, never stored."""
    return probs if p == 0.0 else kdropout.dropout(probs, p, seed)


def attention_forward_ref(q, k, v, mask, scale, p=0.0, seed=0):
    probs = softmax_forward_ref(q @ k.swapaxes(-1, -2), scale, mask)
    return _dropped(probs, p, seed) @ v, probs


def attention_backward_ref(dout, q, k, v, probs, scale, p=0.0, seed=0):
    dv = _dropped(probs, p, seed).swapaxes(-1, -2) @ dout
    dprobs = _dropped(dout @ v.swapaxes(-1, -2), p, seed)
    dscores = softmax_backward_ref(probs, dprobs, scale)
    return dscores @ k, dscores.swapaxes(-1, -2) @ q, dv


@njit(fastmath=True, cache=True)
def _pack_b(b):
    """b (K, N) -> its panels packed for `_micro_kernel` (ceil(N / NR), K, NR)."""
    bp = np.empty(((b.shape[1] + NR - 1) // NR, b.shape[0], NR), np.float32)
    for pn in range(bp.shape[0]):
        _pack_b_panel(b, bp, pn)
    return bp


@njit(fastmath=True, cache=True)
def _pack_a(a):
    """a (M, K) -> its MR-row tiles packed for `_micro_kernel` (ceil(M / MR), K, MR)."""
    ap = np.empty(((a.shape[0] + MR - 1) // MR, a.shape[1], MR), np.float32)
    _pack_a_block(a, 0, a.shape[0], 0, a.shape[1], ap)
    return ap


@njit(fastmath=True, cache=True)
def _tile_rows(a, bp, i, c, zero):
    """c[i:i+MR] = a[i:i+MR] @ B, B packed as bp: one block of MR rows of the product, all its
    NR-wide panels, K in one go (attention's K is D or T: short). A full block of A is read in
    place, a[i:i+MR]^T as the micro-kernel's (K, MR) tile: its MR rows stay in L1 over k, so
    packing them would be a copy for nothing (forward at (32, 12, 128, 32): 6.2 -> 5.4 ms); the
    last, partial block is packed, zero-padded."""
    mi = min(MR, a.shape[0] - i)
    if mi == MR:  # two calls, not one on `view if full else packed`: each array keeps its own
        a_t = a[i:i + MR].T  # layout type, where one variable of both would be compiled for
        for pn in range(bp.shape[0]):  # any layout (QK^T at (32, 12, 128, 32): 2.56 -> 2.34 ms)
            _micro_kernel(a_t, bp[pn], c, i, mi, pn * NR, zero, True)
    else:
        a_p = _pack_a(a[i:i + mi])[0]
        for pn in range(bp.shape[0]):
            _micro_kernel(a_p, bp[pn], c, i, mi, pn * NR, zero, True)


@njit(fastmath=True, cache=True)
def _head_product(a, bp, c, zero):
    """c = a @ B for one head, B packed as bp: `_tile_rows` over every block of MR rows."""
    for i in range(0, a.shape[0], MR):
        _tile_rows(a, bp, i, c, zero)


@njit(fastmath=NAN_SAFE, parallel=True, error_model="numpy", cache=True)
def attention_forward_kernel(q, k, v, mask, scale, seed, thresh, keep_scale, n_chunks, probs, out):
    """q (B, H, L, D), k, v (B, H, S, D) float32, any strides (heads split from (B, T, H, D) by a
    view), mask (B, S) additive over keys -> probs (B, H, L, S) = softmax(q k^T * scale + mask)
    and out (B, H, L, D) = dropout(probs) @ v (dropout when thresh > 0). probs may be empty (no
    backward will read it, as in inference): then nothing of size (B, H, L, S) is written.

    for chunk in prange(n_chunks):            the B*H heads in contiguous chunks, one a thread
      for bh in chunk:                        one head: no thread sync inside
        pack k[b, h]^T, v[b, h]               (D, S), (S, D): 16 KB each at BERT's shape
        for i in L by MR:                     a block of MR query rows
            c[i:i+MR] = q[i:i+MR] @ k^T       c = probs[b, h] (or the chunk's scratch); K = D
            for r in i..i+MR:                 softmax.py's row, while the block is in L1:
                c[r] = softmax(c[r] * scale + mask[b]); drop[r] = dropout(c[r])
            out[i:i+MR] = drop[i:i+MR] @ v    the same rows, still in L1; K = S

    Everything of one head on one thread. The scores never go to memory and back (a head's
    (L, S) block is 64 KB, more than L1: the product with v runs on each block of rows as soon
    as it is ready, not on the whole head after; (16, 12, 128, 32): 2.77 -> 2.60 ms), dropout(probs)
    is an (L, S) scratch of the chunk's, never a (B, H, L, S) array, and the B*H small products
    run two at a time: OpenBLAS splits each (T, D) x (D, T) product over both threads (192
    thread syncs: measured 5.9 ms of CPU for 3 ms wall, where one thread needs about 1.6 ms) and
    runs each (T, T) x (T, D) one on a single thread, leaving the other core idle. Scratch is
    made once per chunk, not per head. Row r of head bh draws the dropout bits of flat index
    (bh L + r) S + j, as `dropout.dropout` does on the whole (B, H, L, S) array (the reference).
    """
    nb, nh, lq, d = q.shape
    s = k.shape[2]
    zero = np.zeros(max(lq, s, d), np.float32)
    keep = probs.size > 0
    per = (nb * nh + n_chunks - 1) // n_chunks
    for ch in prange(n_chunks):
        scratch = np.empty((0, 0) if keep else (lq, s), np.float32)
        drop_scratch = np.empty((lq, s) if thresh > 0 else (0, 0), np.float32)
        for bh in range(ch * per, min(ch * per + per, nb * nh)):
            b, h = bh // nh, bh % nh
            kp, vp = _pack_b(k[b, h].T), _pack_b(v[b, h])
            c = probs[b, h] if keep else scratch
            drop = drop_scratch if thresh > 0 else c
            for i in range(0, lq, MR):
                _tile_rows(q[b, h], kp, i, c, zero)
                for r in range(i, min(i + MR, lq)):
                    softmax_row(c[r], scale, mask[b], c[r], seed, (bh * lq + r) * s, thresh,
                                keep_scale, drop[r])
                _tile_rows(drop, vp, i, out[b, h], zero)


@njit(fastmath=NAN_SAFE, parallel=True, error_model="numpy", cache=True)
def attention_backward_kernel(dout, q, k, v, probs, scale, seed, thresh, keep_scale, n_chunks,
                              need_q, need_k, need_v, dq, dk, dv):
    """dout, q (B, H, L, D), k, v (B, H, S, D) float32, any strides, probs (B, H, L, S) -> dq,
    dk, dv (q's, k's, v's shapes), each only where need_q, need_k, need_v (else that array may
    be empty).

    for chunk in prange(n_chunks):
      for bh in chunk:
        pack v[b, h]^T, k[b, h]
        for i in L by MR:
            ds[i:i+MR] = dout[i:i+MR] @ v^T   the register tile: dprobs, MR rows
            for r in i..i+MR:                 softmax.py's backward row, in place, in L1:
                g = dropout(ds[r]); ds[r] = scale * p[r] * (g - sum(g * p[r]))
                drop[r] = dropout(p[r])
            dq[i:i+MR] = ds[i:i+MR] @ k       the same rows, still in L1
        dv = drop^T @ dout;  dk = ds^T @ q    `_head_product`: sums over all L rows, ds in L2

    The mirror of the forward: dO V^T goes straight into the softmax backward, the dropout bits
    are drawn once per element for both dP and dropout(probs), and ds and drop are (L, S)
    scratch arrays of the chunk's. dq takes each block of rows as it is ready (as the forward's
    product with v does: 4.55 -> 4.45 ms at (16, 12, 128, 32), 5.61 -> 5.28 with dropout).
    """
    nb, nh, lq, d = q.shape
    s = k.shape[2]
    zero = np.zeros(max(lq, s, d), np.float32)
    per = (nb * nh + n_chunks - 1) // n_chunks
    for ch in prange(n_chunks):
        ds = np.empty((lq, s), np.float32)
        drop_scratch = np.empty((lq, s) if thresh > 0 else (0, 0), np.float32)
        for bh in range(ch * per, min(ch * per + per, nb * nh)):
            b, h = bh // nh, bh % nh
            vp = _pack_b(v[b, h].T)
            kp = _pack_b(k[b, h]) if need_q else vp
            drop = drop_scratch if thresh > 0 else probs[b, h]
            for i in range(0, lq, MR):
                _tile_rows(dout[b, h], vp, i, ds, zero)
                for r in range(i, min(i + MR, lq)):
                    softmax_backward_row(probs[b, h, r], ds[r], scale, ds[r], seed,
                                         (bh * lq + r) * s, thresh, keep_scale, drop[r])
                if need_q:
                    _tile_rows(ds, kp, i, dq[b, h], zero)
            if need_v:
                _head_product(drop.T, _pack_b(dout[b, h]), dv[b, h], zero)
            if need_k:
                _head_product(ds.T, _pack_b(q[b, h]), dk[b, h], zero)


def _chunks(heads):
    """How many contiguous chunks of heads the kernels split over the threads: a few per
    thread, so that an uneven end costs little, and each makes its scratch once."""
    return max(1, min(heads, 4 * numba.get_num_threads()))


def _f32(*arrays):
    return all(a.dtype == np.float32 for a in arrays)


def _key_mask(mask, b, h, s):
    """The mask as (B, S) rows when it varies over batch and key only (None, (B,1,1,S),
    (1,1,1,S), (S,)); else None, and the forward takes the BLAS + softmax path."""
    if mask is None:
        return np.zeros((b, s), np.float32)
    m = mask.reshape((1,) * (4 - mask.ndim) + mask.shape)
    if m.shape[1] == 1 and m.shape[2] == 1 and m.shape[0] in (1, b) and m.shape[3] == s:
        return np.ascontiguousarray(np.broadcast_to(m[:, 0, 0, :], (b, s)), dtype=np.float32)
    return None


def _check(q, k, v):
    if q.ndim != 4 or k.shape != v.shape or k.ndim != 4 or q.shape[:2] != k.shape[:2] \
            or q.shape[3] != k.shape[3]:
        raise ValueError(f"attention: q {q.shape}, k {k.shape}, v {v.shape}: expected q (B, H, L, "
                         "D) and k, v (B, H, S, D)")


def attention_forward(q, k, v, mask, scale, p=0.0, seed=0, keep_probs=True):
    """q (B, H, L, D), k, v (B, H, S, D) -> out (B, H, L, D), probs (B, H, L, S) (before dropout
    with probability p and mask seed `seed`); probs may be None when keep_probs is False (no
    backward will need it: the fused kernel then writes none).

    float32 with a key mask ((B, 1, 1, S) or None): `attention_forward_kernel`. Another mask:
    the products in BLAS and the softmax (and dropout) as softmax.py's kernel. Other dtypes
    (float64 in gradient checks) run the reference."""
    _check(q, k, v)
    if use_ref() or not _f32(q, k, v) or q.size == 0:
        return attention_forward_ref(q, k, v, mask, scale, p, seed)
    b, h, lq, _ = q.shape
    mask2 = _key_mask(mask, b, h, k.shape[2])
    if mask2 is None:
        scores = np.matmul(q, k.swapaxes(-1, -2))  # (B, H, L, S)
        if p == 0.0:
            probs = ksoftmax.softmax_forward(scores, scale, mask)
            return np.matmul(probs, v), probs
        probs, dropped = ksoftmax.softmax_dropout_forward(scores, scale, mask, p, seed, out=scores)
        return np.matmul(dropped, v), probs
    probs = np.empty((b, h, lq, k.shape[2]) if keep_probs else (0, 0, 0, 0), np.float32)
    # out in q's memory layout (empty_like keeps the order of its strides): for heads split from
    # (B, T, C) activations, merging them back is then a view, not a (B, T, C) copy
    out = np.empty_like(q)
    attention_forward_kernel(q, k, v, mask2, np.float32(scale), np.uint64(seed),
                             kdropout.threshold(p), np.float32(kdropout.keep_scale(p)),
                             _chunks(b * h), probs, out)
    return out, (probs if keep_probs else None)


def attention_backward(dout, q, k, v, probs, scale, p=0.0, seed=0, needs=(True, True, True)):
    """dout, q (B, H, L, D), k, v (B, H, S, D), probs (B, H, L, S) -> dq, dk, dv, each None
    where `needs` says that input needs no gradient: its product is skipped (under LoRA, layer
    0's frozen key never needs dk).

    float32: `attention_backward_kernel` (any mask: the backward needs only probs); when only
    dv is needed (no dprobs at all), one BLAS product."""
    if use_ref() or not _f32(dout, q, k, v, probs) or q.size == 0:
        grads = attention_backward_ref(dout, q, k, v, probs, scale, p, seed)
        return tuple(g if need else None for g, need in zip(grads, needs))
    need_q, need_k, need_v = needs
    if not (need_q or need_k):
        return None, None, (np.matmul(_dropped(probs, p, seed).swapaxes(-1, -2), dout)
                            if need_v else None)
    # each gradient in its input's memory layout, as `out` above: for heads split from (B, T, C),
    # the gradient of the (B, T, C) activations is then a view, not a copy
    dq, dk, dv = (np.empty_like(x) if need else np.empty((0, 0, 0, 0), np.float32)
                  for x, need in zip((q, k, v), needs))
    attention_backward_kernel(dout, q, k, v, np.ascontiguousarray(probs), np.float32(scale),
                              np.uint64(seed), kdropout.threshold(p),
                              np.float32(kdropout.keep_scale(p)), _chunks(q.shape[0] * q.shape[1]),
                              need_q, need_k, need_v, dq, dk, dv)
    return (dq if need_q else None), (dk if need_k else None), (dv if need_v else None)
