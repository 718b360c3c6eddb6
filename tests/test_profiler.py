"""minigrad.profile(): op names and call counts on a small graph, exact matrix-product FLOPs
forward and backward (including the dW a frozen weight skips), and no hook left behind."""
import numpy as np
import pytest

import minigrad
import minigrad.functional as F
from minigrad import function


def _graph(x, w, b):
    return (F.relu(F.linear(x, w, b)) * 2.0).sum()


def test_counts_and_op_names():
    rng = np.random.default_rng(0)
    x = minigrad.tensor(rng.standard_normal((4, 3)), requires_grad=True)
    w = minigrad.tensor(rng.standard_normal((5, 3)), requires_grad=True)
    b = minigrad.tensor(np.zeros(5), requires_grad=True)
    with minigrad.profile() as prof:
        for _ in range(3):
            _graph(x, w, b).backward()
    calls = {key: s.calls for key, s in prof.stats.items()}
    for op in ("Linear", "Relu", "Mul", "Sum"):
        assert calls[(op, "forward")] == 3, op
        assert calls[(op, "backward")] == 3, op
    assert len(calls) == 8
    assert all(s.seconds >= 0 for s in prof.stats.values())
    assert prof.stats[("Relu", "forward")].flops is None


def test_linear_flops_exact():
    N, Cin, Cout = 6, 4, 3
    x = minigrad.randn(N, Cin, requires_grad=True)
    w = minigrad.randn(Cout, Cin, requires_grad=True)
    with minigrad.profile() as prof:
        F.linear(x, w).sum().backward()
    assert prof.stats[("Linear", "forward")].flops == 2 * N * Cin * Cout
    assert prof.stats[("Linear", "backward")].flops == 2 * (2 * N * Cin * Cout)  # dx and dW

    w.requires_grad_(False)  # frozen, as under LoRA: no dW matmul
    with minigrad.profile() as prof:
        F.linear(x, w).sum().backward()
    assert prof.stats[("Linear", "backward")].flops == 2 * N * Cin * Cout


def test_matmul_and_attention_flops():
    a = minigrad.randn(2, 5, 7, requires_grad=True)
    b = minigrad.randn(7, 3)  # only da is computed
    with minigrad.profile() as prof:
        (a @ b).sum().backward()
    assert prof.stats[("MatMul", "forward")].flops == 2 * 2 * 5 * 7 * 3
    assert prof.stats[("MatMul", "backward")].flops == 2 * 2 * 5 * 7 * 3

    B, H, T, D = 2, 3, 4, 5
    q, k, v = (minigrad.randn(B, H, T, D, requires_grad=True) for _ in range(3))
    with minigrad.profile() as prof:
        F.scaled_dot_product_attention(q, k, v).sum().backward()
    assert prof.stats[("ScaledDotProductAttention", "forward")].flops == 4 * B * H * T * T * D
    assert prof.stats[("ScaledDotProductAttention", "backward")].flops == 8 * B * H * T * T * D

    L = 2  # fewer queries than keys: each product is (L, S = T, D)
    q = minigrad.randn(B, H, L, D, requires_grad=True)
    with minigrad.profile() as prof:
        F.scaled_dot_product_attention(q, k, v).sum().backward()
    assert prof.stats[("ScaledDotProductAttention", "forward")].flops == 4 * B * H * L * T * D
    assert prof.stats[("ScaledDotProductAttention", "backward")].flops == 8 * B * H * L * T * D


def test_table_sorted_and_hooks_removed():
    x = minigrad.randn(64, 64, requires_grad=True)
    with minigrad.profile() as prof:
        (x @ x).exp().sum().backward()
    assert function._op_hooks == []
    times = [r[3] for r in prof.rows()]
    assert times == sorted(times, reverse=True)
    text = prof.table()
    assert text.splitlines()[0].startswith("| op | pass | calls")
    assert "| MatMul | forward | 1 |" in text
    assert f"{prof.total_flops() / 1e9:.3f} GFLOP" in text


def test_hook_removed_on_error():
    with pytest.raises(ValueError):
        with minigrad.profile():
            F.matmul(minigrad.randn(2, 3), minigrad.randn(4, 5))
    assert function._op_hooks == []


def test_print_on_exit(capsys):
    with minigrad.profile(print_on_exit=True):
        minigrad.randn(3) * 2.0
    assert "| Mul | forward | 1 |" in capsys.readouterr().out


def test_best_seconds_is_the_fastest_call():
    """best_seconds returns the minimum of the timed calls, median_seconds their median."""
    import time
    from minigrad.profiler import best_seconds, median_seconds
    sleeps = iter([0.0, 0.03, 0.001, 0.03, 0.0, 0.03, 0.001, 0.03])  # warm-up, then 3 timed; twice
    fn = lambda: time.sleep(next(sleeps))  # noqa: E731
    assert best_seconds(fn, 3) < 0.02 < median_seconds(fn, 3)
