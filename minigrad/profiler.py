"""`minigrad.profile()`: per-op wall time, call counts and FLOPs, for seeing where a step goes.

    with minigrad.profile() as prof:
        loss = model(x).loss
        loss.backward()
    print(prof.table())

It installs one hook object in `function._op_hooks` for the duration of the block (the engine
calls hooks around every op's forward and backward; with no hook installed the engine skips the
check's body, so profiling costs nothing when off). Like Chainer's TimerHook or tinygrad's
DEBUG=2, it measures host wall time per op, which on a CPU is the op's real cost.

FLOPs are counted for the ops whose cost is matrix products, where the count is exact and
shape-determined (a multiply-add is 2 FLOPs):

    MatMul     a (..., M, K) @ b (..., K, N): 2*M*N*K per batch element
    Linear     x (N, Cin) @ W^T (Cin, Cout):  2*N*Cin*Cout
    attention  q (B, H, L, D), k, v (B, H, S, D): Q K^T and P V, 2 * 2*B*H*L*S*D

Backward counts only the gradients actually computed (an op returns None for an input that
needs none), so a frozen Linear weight shows its saved dW matmul as FLOPs not spent. Other ops
report no FLOPs (None): they are memory-bound and their time is the number to read.
"""
import platform
import statistics
import time

from . import function


# ---- timing, as every minigrad benchmark does it ---------------------------------------------------
def _call_times(fn, repeats, warmup):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def median_seconds(fn, repeats, warmup=1):
    """Median wall time of `repeats` calls of fn(), after `warmup` untimed calls (compilation,
    caches, page faults): a median, because a shared CPU's noise comes in one-sided bursts."""
    return statistics.median(_call_times(fn, repeats, warmup))


def best_seconds(fn, repeats, warmup=1):
    """The fastest of `repeats` calls, after `warmup`: what the hardware and library can reach,
    for a limit to compare against (noise only ever adds time)."""
    return min(_call_times(fn, repeats, warmup))


def cpu_name():
    """The CPU model from /proc/cpuinfo (Linux), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"

# ---- FLOP formulas: forward from the inputs, backward from the gradients computed ----------------


def forward_flops(cls, arrays, out):
    """FLOPs of one forward of a matrix-product op from its input arrays and output (only the
    output's size is read); None for every other op. tasks.explain counts with it too."""
    name = cls.__name__
    if name == "MatMul":  # out (..., M, N), contracted over K = a.shape[-1]
        return 2 * out.size * arrays[0].shape[-1]
    if name == "Linear":  # out (..., Cout), contracted over Cin
        return 2 * out.size * arrays[1].shape[1]
    if name == "LoraLinear":
        (cout, cin), r = arrays[1].shape, arrays[2].shape[0]
        return 2 * (out.size // cout) * sum(k * n for (k, n), _ in lora_products(cin, cout, r))
    if name == "ScaledDotProductAttention":
        q, k = arrays[0], arrays[1]
        B, H, T, D = q.shape
        return 2 * 2 * B * H * T * k.shape[-2] * D
    return None


def _backward_flops(fn, grad, input_grads, input_shapes):
    """Each computed input gradient of a matrix product costs one product of the forward's size."""
    name = fn.__name__
    if not isinstance(input_grads, tuple):
        input_grads = (input_grads,)
    if name in ("MatMul", "Linear"):
        # every product is g (.., M, N) against the other operand over K: 2 * size(g) * K.
        # K is dx's last axis, and dW's too (Linear's W is (Cout, Cin)), but db's first (K, N).
        da, db = input_grads[:2]
        k_of_b = -1 if name == "Linear" else -2
        return ((0 if da is None else 2 * grad.size * da.shape[-1])
                + (0 if db is None else 2 * grad.size * db.shape[k_of_b]))
    if name == "LoraLinear":  # (under LoRA, A and B always train)
        computed = [g is not None for g in input_grads[:4]]
        if not (computed[2] or computed[3]):
            return None
        rows = grad.size // grad.shape[-1]
        (cout, cin), r = input_shapes[1], input_shapes[2][0]  # weight (Cout, Cin), lora_A (r, Cin)
        return 2 * rows * sum(k * n * (runs_dx + runs_dw)
                              for (k, n), (runs_dx, runs_dw) in lora_products(cin, cout, r, computed))
    if name == "ScaledDotProductAttention":
        dq, dk, dv = input_grads[:3]
        B, H, L, D = grad.shape  # dO has q's shape
        S = input_shapes[1][-2]  # keys
        products = attention_backward_products(dq is not None, dk is not None, dv is not None)
        return products * 2 * B * H * L * S * D
    return None


def lora_products(cin, cout, r, needs=(False,) * 4):
    """The three products of a fused LoRA layer (ops/linalg.py's LoraLinear) per row of x, as
    [((K, N), (dX runs, dW runs))]: x W^T (Cin -> Cout), x A^T (Cin -> r), t B^T (r -> Cout).
    The runs say which of the backward's products each one costs, given which gradients
    (x, weight, lora_A, lora_B) are computed: dx = dy W + du A and dW = dy^T x; dA = du^T x;
    du = dy B (for dx or dA) and dB = dy^T t. tasks.explain counts with it too."""
    need_x, need_w, need_a, need_b = needs[:4]
    return [((cin, cout), (need_x, need_w)), ((cin, r), (need_x, need_a)),
            ((r, cout), (need_x or need_a, need_b))]


def attention_backward_products(need_q, need_k, need_v):
    """How many (L, S, D) products attention's backward runs per head, skipping those whose
    gradient no input needs (as kernels/attention.py does): dV = P^T dO if dv; dP = dO V^T if
    dq or dk; dQ = dS K if dq; dK = dS^T Q if dk. tasks.explain counts with it too."""
    return int(need_v) + int(need_q or need_k) + int(need_q) + int(need_k)


class OpStats:
    """Totals for one op name and one direction (forward or backward)."""

    __slots__ = ("calls", "seconds", "flops")

    def __init__(self):
        self.calls, self.seconds, self.flops = 0, 0.0, None

    def add(self, seconds, flops):
        self.calls += 1
        self.seconds += seconds
        if flops is not None:
            self.flops = (self.flops or 0) + flops


class Profile:
    """The hook and its results: `stats[(op name, "forward" | "backward")] -> OpStats`.

    Use it through `minigrad.profile()`. Hooks nest with detect_anomaly and other hooks: each
    one only sees its own tokens.
    """

    def __init__(self, print_on_exit=False):
        self.print_on_exit = print_on_exit
        self.stats = {}
        self.wall_seconds = 0.0

    # ---- the hook protocol of function._op_hooks ------------------------------------------------
    def before_forward(self, cls, arrays):
        return time.perf_counter()

    def after_forward(self, cls, arrays, out, token):
        elapsed = time.perf_counter() - token
        self._record(cls.__name__, "forward", elapsed, forward_flops(cls, arrays, out))

    def before_backward(self, fn, grad):
        return time.perf_counter()

    def after_backward(self, fn, grad, input_grads, token, input_shapes):
        elapsed = time.perf_counter() - token
        self._record(fn.__name__, "backward", elapsed,
                     _backward_flops(fn, grad, input_grads, input_shapes))

    def _record(self, name, direction, seconds, flops):
        key = (name, direction)
        if key not in self.stats:
            self.stats[key] = OpStats()
        self.stats[key].add(seconds, flops)

    # ---- the context manager ----------------------------------------------------------------------
    def __enter__(self):
        function._op_hooks.append(self)
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.wall_seconds += time.perf_counter() - self._t0
        function._op_hooks.remove(self)
        if self.print_on_exit:
            print(self.table())
        return False

    # ---- results --------------------------------------------------------------------------------------
    def total_seconds(self):
        return sum(s.seconds for s in self.stats.values())

    def total_flops(self, direction=None):
        return sum(s.flops or 0 for (_, d), s in self.stats.items() if direction in (None, d))

    def rows(self):
        """(op, direction, calls, seconds, flops or None), sorted by total time, largest first."""
        rows = [(name, d, s.calls, s.seconds, s.flops) for (name, d), s in self.stats.items()]
        return sorted(rows, key=lambda r: -r[3])

    def table(self):
        """The results as a Markdown table, with each op's share of the time inside ops."""
        total = self.total_seconds() or 1.0
        lines = ["| op | pass | calls | total ms | ms/call | % | GFLOP | GFLOP/s |",
                 "|---|---|---|---|---|---|---|---|"]
        for name, d, calls, sec, flops in self.rows():
            gflop = "-" if flops is None else f"{flops / 1e9:.3f}"
            rate = "-" if flops is None or sec == 0 else f"{flops / sec / 1e9:.1f}"
            lines.append(f"| {name} | {d} | {calls} | {sec * 1e3:.2f} | {sec * 1e3 / calls:.3f} | "
                         f"{100 * sec / total:.1f} | {gflop} | {rate} |")
        lines.append(f"ops {self.total_seconds() * 1e3:.1f} ms of {self.wall_seconds * 1e3:.1f} ms "
                     f"wall inside the block; {self.total_flops() / 1e9:.3f} GFLOP counted")
        return "\n".join(lines)



def profile(print_on_exit=False):
    """A fresh Profile, used as `with minigrad.profile() as prof: ...`; read `prof.table()`, or
    pass print_on_exit=True to have the table printed when the block ends."""
    return Profile(print_on_exit)
