"""Kernel benchmark: reference vs fused (Numba) vs NumPy/BLAS vs torch, one table.

    python -m benchmarks.kernels            (MINIGRAD_NUM_THREADS sets the threads)

Checks every fused kernel against its reference first, warms up (reporting Numba's compile or
cache-load time apart), then times the median of repeats. Forward and backward are timed
together for the ops that have both ("fwd+bwd"). Not a test: it asserts only correctness.

The torch column is timed in a child process (`--torch-worker`) on the same seeded inputs.
Each side gets the runtime settings it would have on its own: torch's OpenMP must start with
its default wait policy, not the passive one minigrad sets for Numba's pool, and with torch's
OpenMP loaded a Numba kernel that follows a BLAS call waits for scheduler ticks (linear +
bias + GELU: 16.0 ms in one process with torch, 6.75 ms without).
"""
import datetime
import json
import os
import subprocess
import sys
import time

_USER_ENV = dict(os.environ)  # the torch worker's, from before importing minigrad (see above)
TORCH_WORKER = __name__ == "__main__" and "--torch-worker" in sys.argv
if TORCH_WORKER:  # before minigrad, for the reason above
    import torch
else:
    torch = None
    import minigrad  # noqa: F401  before NumPy: its OpenBLAS settings must be set when OpenBLAS loads

import numpy as np
import numba

from minigrad import kernels
from minigrad.profiler import cpu_name, median_seconds
from minigrad.kernels import attention, cross_entropy, dropout, gelu, layernorm, matmul, softmax

if torch is not None:
    torch.set_num_threads(kernels.get_num_threads())

rng = np.random.default_rng(0)
REPEATS = 15


def randn(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def timeit(fn, repeats=REPEATS):
    return median_seconds(fn, repeats)


def ref(fn):
    def run():
        with kernels.use("ref"):
            fn()
    return run


def cases():
    """(name, shape, work, unit, reference, fused, numpy/BLAS or None, torch or None, check)."""
    out = []
    for m, k, n in [(2048, 384, 384), (2048, 384, 1536), (2048, 1536, 384),
                    (512, 512, 512), (1024, 1024, 1024)]:
        a, b = randn(m, k), randn(k, n)
        ta, tb = (torch.from_numpy(a), torch.from_numpy(b)) if torch else (None, None)
        out.append(("matmul (numba)", f"{m}x{k}x{n}", 2 * m * k * n, "GFLOP/s",
                    lambda a=a, b=b: matmul.matmul_ref(a, b),
                    lambda a=a, b=b: matmul.matmul_numba(a, b),
                    lambda a=a, b=b: np.matmul(a, b),
                    torch and (lambda ta=ta, tb=tb: ta @ tb),
                    lambda a=a, b=b: np.allclose(matmul.matmul_numba(a, b), a @ b, atol=1e-3)))
        out.append(("matmul (dispatched)", f"{m}x{k}x{n}", 2 * m * k * n, "GFLOP/s",
                    lambda a=a, b=b: matmul.matmul_ref(a, b),
                    lambda a=a, b=b: matmul.matmul(a, b),
                    lambda a=a, b=b: np.matmul(a, b),
                    torch and (lambda ta=ta, tb=tb: ta @ tb), None))
    g = randn(192, 128, 32), randn(192, 32, 128)
    out.append(("bmm (numba)", "192x128x32x128", 2 * 192 * 128 * 32 * 128, "GFLOP/s",
                lambda: matmul.matmul_ref(*g), lambda: matmul.matmul_numba(*g),
                lambda: np.matmul(*g), torch and (lambda t=[torch.from_numpy(x) for x in g]: t[0] @ t[1]),
                lambda: np.allclose(matmul.matmul_numba(*g), np.matmul(*g), atol=1e-3)))

    x, w, bb = randn(2048, 384), randn(1536, 384) * 0.05, randn(1536)
    tx, tw, tbb = (torch.from_numpy(v) for v in (x, w, bb)) if torch else (None,) * 3
    # the arguments are bound now: x and tx are reused below (tx then requires grad, and torch's
    # forward here would record a graph)
    out.append(("linear+bias+GELU fwd", "2048x384->1536", 2 * 2048 * 384 * 1536, "GFLOP/s",
                ref(lambda x=x, w=w, bb=bb: matmul.linear_forward(x, w, bb, True)),
                lambda x=x, w=w, bb=bb: matmul.linear_forward(x, w, bb, True),
                lambda x=x, w=w, bb=bb: gelu.gelu_forward_ref(x @ w.T + bb),
                torch and (lambda tx=tx, tw=tw, tbb=tbb:
                           torch.nn.functional.gelu(torch.nn.functional.linear(tx, tw, tbb))),
                lambda x=x, w=w, bb=bb: np.allclose(matmul.linear_forward(x, w, bb, True)[0],
                                                    matmul.linear_forward_ref(x, w, bb, True)[0], atol=1e-4)))

    B, H, T, D = 16, 12, 128, 32
    # q, k, v as the model passes them: head views of (B, T, H*D) activations, not copies
    q, k, v, do = (randn(B, T, H * D).reshape(B, T, H, D).transpose(0, 2, 1, 3) for _ in range(4))
    mask = np.zeros((B, 1, 1, T), np.float32)
    mask[:, :, :, 100:] = -1e4
    sc = D ** -0.5

    for p in (0.0, 0.1):
        def att(mode, p=p):
            def run():
                with kernels.use(mode):
                    o, pr = attention.attention_forward(q, k, v, mask, sc, p, 7)
                    attention.attention_backward(do, q, k, v, pr, sc, p, 7)
            return run

        def att_unfused(p=p):  # the four products in BLAS, softmax (+ dropout) as softmax.py's kernels
            scores = np.matmul(q, k.swapaxes(-1, -2))
            pr, dropped = (softmax.softmax_forward(scores, sc, mask), None) if p == 0.0 else \
                softmax.softmax_dropout_forward(scores, sc, mask, p, 7, out=scores)
            np.matmul(pr if p == 0.0 else dropped, v)
            np.matmul((pr if p == 0.0 else dropout.dropout(pr, p, 7)).swapaxes(-1, -2), do)
            ds = softmax.softmax_backward(pr, np.matmul(do, v.swapaxes(-1, -2)), sc, p, 7)
            np.matmul(ds, k), np.matmul(ds.swapaxes(-1, -2), q)

        def att_torch(p=p, t=[torch.from_numpy(np.ascontiguousarray(a)).requires_grad_()
                             for a in (q, k, v)] if torch else None,
                      tm=torch and torch.from_numpy(mask), tdo=torch and torch.from_numpy(do)):
            o = torch.nn.functional.scaled_dot_product_attention(*t, attn_mask=tm, scale=sc,
                                                                 dropout_p=p)
            o.backward(tdo)

        def att_check(p=p):
            o, pr = attention.attention_forward(q, k, v, mask, sc, p, 7)
            g = attention.attention_backward(do, q, k, v, pr, sc, p, 7)
            with kernels.use("ref"):
                ro, rp = attention.attention_forward(q, k, v, mask, sc, p, 7)
                rg = attention.attention_backward(do, q, k, v, rp, sc, p, 7)
            return all(np.allclose(a, b, atol=1e-4) for a, b in zip((o, pr) + g, (ro, rp) + rg))

        flops = 2 * B * H * T * T * D * (2 + 4)
        out.append((f"attention fwd+bwd, dropout {p}", f"{B},{H},{T},{D}", flops, "GFLOP/s",
                    att("ref"), att("fused"), att_unfused, torch and att_torch, att_check))

    s = randn(B, H, T, T)

    def sm(mode):
        def run():
            with kernels.use(mode):
                y = softmax.softmax_forward(s, sc, mask)
                softmax.softmax_backward(y, s, sc)
        return run
    ts = torch and torch.from_numpy(s)
    tmask = torch and torch.from_numpy(mask)

    def sm_torch():
        y = torch.softmax(ts * sc + tmask, -1)
        torch._softmax_backward_data(ts, y, -1, torch.float32) * sc
    out.append(("softmax fwd+bwd", f"{B},{H},{T},{T}", 4 * 4 * s.size, "GB/s", sm("ref"), sm("fused"),
                None, torch and sm_torch,
                lambda: np.allclose(softmax.softmax_forward(s, sc, mask),
                                    softmax.softmax_forward_ref(s, sc, mask), atol=1e-5)))

    x, dy, gm, bt = randn(2048, 384), randn(2048, 384), randn(384), randn(384)

    def ln(mode):
        def run():
            with kernels.use(mode):
                y, mu, rs = layernorm.layer_norm_forward(x, gm, bt, 1e-12)
                layernorm.layer_norm_backward(dy, x, gm, mu, rs)
        return run
    if torch:
        tx, tdy, tg, tb = (torch.from_numpy(a).requires_grad_() for a in (x, dy, gm, bt))

    def ln_torch():
        torch.nn.functional.layer_norm(tx, (384,), tg, tb, 1e-12).backward(tdy)
    out.append(("layernorm fwd+bwd", "2048x384", 4 * 6 * x.size, "GB/s", ln("ref"), ln("fused"),
                None, torch and ln_torch,
                lambda: np.allclose(layernorm.layer_norm_forward(x, gm, bt, 1e-12)[0],
                                    layernorm.layer_norm_forward_ref(x, gm, bt, 1e-12)[0], atol=1e-4)))

    h, dh = randn(2048, 1536), randn(2048, 1536)

    def ge(mode):
        def run():
            with kernels.use(mode):
                gelu.gelu_forward(h)
                gelu.gelu_backward(h, dh)
        return run
    if torch:
        th, tdh = torch.from_numpy(h).requires_grad_(), torch.from_numpy(dh)

    def ge_torch():
        torch.nn.functional.gelu(th).backward(tdh)
    out.append(("GELU fwd+bwd", "2048x1536", 4 * 5 * h.size, "GB/s", ge("ref"), ge("fused"),
                None, torch and ge_torch,
                lambda: np.allclose(gelu.gelu_backward(h, dh), gelu.gelu_backward_ref(h, dh), atol=1e-5)))

    for V in (30522, 9):
        lg = randn(2048, V)
        tg_ = rng.integers(0, V, 2048)

        def ce(mode, lg=lg, tg_=tg_):
            def run():
                with kernels.use(mode):
                    cross_entropy.softmax_cross_entropy(lg, tg_)
            return run
        if torch:
            tl, tt = torch.from_numpy(lg).requires_grad_(), torch.from_numpy(tg_)

        def ce_torch(tl=torch and tl, tt=torch and tt):
            torch.nn.functional.cross_entropy(tl, tt, reduction="sum").backward()
        out.append(("cross-entropy fwd+bwd", f"2048x{V}", 4 * 2 * lg.size, "GB/s", ce("ref"),
                    ce("fused"), None, torch and ce_torch,
                    lambda lg=lg, tg_=tg_: all(np.allclose(a, b, atol=1e-5) for a, b in
                                               zip(cross_entropy.softmax_cross_entropy(lg, tg_),
                                                   cross_entropy.softmax_cross_entropy_ref(lg, tg_)))))
    return out


def torch_times():
    """{case index: torch seconds} and torch's version, from a child process; ({}, reason)
    when torch is not installed."""
    res = subprocess.run([sys.executable, "-m", "benchmarks.kernels", "--torch-worker"],
                         capture_output=True, text=True, env=_USER_ENV)
    if res.returncode != 0:
        return {}, "not installed" if "No module named 'torch'" in res.stderr else "failed"
    out = json.loads(res.stdout.strip().splitlines()[-1])
    return {int(i): t for i, t in out["times"].items()}, out["version"]


def torch_worker():
    times = {i: timeit(case[7]) for i, case in enumerate(cases()) if case[7]}
    print(json.dumps({"version": torch.__version__, "times": times}))


def main():
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
    except OSError:
        commit = "?"
    t_torch, torch_version = torch_times()
    print(f"# {datetime.date.today()} commit {commit} | {cpu_name()} | threads {kernels.get_num_threads()}"
          f" | numpy {np.__version__} | numba {numba.__version__} | torch {torch_version}")
    all_cases = cases()
    t0 = time.perf_counter()
    for name, shape, *_, check in all_cases:          # compile (or load from cache) and check
        if check is not None and not check():
            raise SystemExit(f"{name} {shape}: fused and reference disagree")
    print(f"# correctness checked; Numba compile/cache load + first runs: {time.perf_counter() - t0:.1f} s")
    print("| op | shape | reference ms | fused ms | np/BLAS ms | torch ms | speedup vs ref | "
          "fused vs BLAS | fused vs torch | fused rate |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    fmt = lambda t: "-" if t is None else f"{t * 1e3:.2f}"
    for i, (name, shape, work, unit, f_ref, f_fused, f_np, _, _) in enumerate(all_cases):
        r = timeit(f_ref, 3 if "30522" in shape or "numba" in name else REPEATS)
        f = timeit(f_fused)
        n = timeit(f_np) if f_np else None
        t = t_torch.get(i)
        rate = work / f / 1e9
        print(f"| {name} | {shape} | {fmt(r)} | {fmt(f)} | {fmt(n)} | {fmt(t)} | {r / f:.1f}x | "
              f"{'-' if n is None else f'{n / f:.2f}x'} | {'-' if t is None else f'{t / f:.2f}x'} | "
              f"{rate:.1f} {unit} |", flush=True)


if __name__ == "__main__":
    torch_worker() if TORCH_WORKER else main()
