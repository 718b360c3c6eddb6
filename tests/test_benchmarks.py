"""benchmarks/: what the tables report is measured as they say (each worker's own peak memory),
RESULTS.md is written whole or not at all, and nothing here runs a benchmark."""
import os
import subprocess
import sys

import numpy as np
import pytest

from benchmarks.finetune import append_results


def test_worker_peak_rss_is_its_own_not_the_drivers():
    """finetune runs each configuration in a child process for its own peak RSS; getrusage's
    ru_maxrss carries the parent's peak across exec, so every child reported at least the
    driver's memory."""
    ballast = np.ones(400 * 2**20, np.uint8)  # 400 MB resident in this (the parent) process
    code = "from benchmarks.finetune import _peak_rss_mb; print(_peak_rss_mb())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert ballast.sum() == ballast.size
    assert float(out.stdout) < 200  # a bare interpreter is ~10-60 MB


def test_write_to_results_is_atomic(tmp_path, monkeypatch):
    """--write appends its table by writing the whole file anew and renaming it: a failure
    before the rename (here the fsync) leaves RESULTS.md as it was and no temporary behind."""
    path = tmp_path / "RESULTS.md"
    path.write_text("# Results\n\nearlier runs\n", encoding="utf-8")
    append_results("\n### run 1\n\n| a |\n", str(path))
    assert path.read_text(encoding="utf-8") == "# Results\n\nearlier runs\n\n### run 1\n\n| a |\n"

    def full_disk(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError):
        append_results("\n### run 2\n\n| b |\n", str(path))
    assert path.read_text(encoding="utf-8").endswith("| a |\n")
    assert sorted(os.listdir(tmp_path)) == ["RESULTS.md"]


def test_kernel_cases_time_and_check_their_own_operands(monkeypatch):
    """benchmarks/kernels.py builds its cases in one function, reusing names: a closure reading
    a name late saw the last case's array (the 30522-class cross-entropy was checked on the
    9-class logits; torch's linear + GELU ran on layernorm's input, which requires grad, so it
    recorded a graph)."""
    torch = pytest.importorskip("torch")
    from benchmarks import kernels as bench
    from minigrad.kernels import cross_entropy
    monkeypatch.setattr(bench, "torch", torch)  # as in the --torch-worker process
    cases = {(c[0], c[1]): c for c in bench.cases()}
    assert not cases[("linear+bias+GELU fwd", "2048x384->1536")][7]().requires_grad
    seen, ref = [], cross_entropy.softmax_cross_entropy_ref
    monkeypatch.setattr(cross_entropy, "softmax_cross_entropy_ref",
                        lambda logits, targets: seen.append(logits.shape) or ref(logits, targets))
    for V in (30522, 9):
        assert cases[("cross-entropy fwd+bwd", f"2048x{V}")][8]()
    assert seen == [(2048, 30522), (2048, 9)]


def test_torch_side_uses_minigrads_adamw_settings():
    """finetune's torch step decays what minigrad's decays and nothing else (torch's AdamW alone
    decays every parameter, biases and LayerNorm included)."""
    torch = pytest.importorskip("torch")
    from benchmarks.finetune import torch_adamw
    model = torch.nn.Sequential()
    model.add_module("dense", torch.nn.Linear(4, 4))
    model.add_module("LayerNorm", torch.nn.LayerNorm(4))
    model.add_module("frozen", torch.nn.Linear(4, 4).requires_grad_(False))
    groups = torch_adamw(torch, model, lr=1e-5).param_groups
    decayed = {id(q) for g in groups if g["weight_decay"] == 0.01 for q in g["params"]}
    kept = {id(q) for g in groups if g["weight_decay"] == 0.0 for q in g["params"]}
    assert decayed == {id(model.dense.weight)}
    assert kept == {id(model.dense.bias), id(model.LayerNorm.weight), id(model.LayerNorm.bias)}
    assert all(g["lr"] == 1e-5 and g["betas"] == (0.9, 0.999) and g["eps"] == 1e-8 for g in groups)


_TORCH_WORKER_ENV = """
import json, subprocess
import benchmarks.kernels as bench
seen = {}
def run(cmd, **kw):
    seen.update(kw.get("env") or __import__("os").environ)
    return subprocess.CompletedProcess(cmd, 0, json.dumps({"version": "-", "times": {}}), "")
bench.subprocess.run = run
bench.torch_times()
print(seen.get("OMP_WAIT_POLICY"))
"""


def test_kernels_torch_worker_starts_without_minigrads_omp_wait_policy():
    """Importing minigrad sets OMP_WAIT_POLICY=PASSIVE for Numba's pool; the torch column is
    timed in a child process so that torch's OpenMP starts with its own default instead."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", _TORCH_WORKER_ENV], env=env, capture_output=True,
                         text=True, check=True)
    assert out.stdout.split()[-1] == "None"


def test_torch_references_warm_up_as_minigrads_trainer():
    """head_run's and peft_reference's torch schedules take their warmup from tasks.train's
    warmup_steps, which rounds up as the Trainer and Hugging Face do; they rounded down
    (int(0.1 * 1602) = 160 warmup steps against minigrad's 161)."""
    import ast
    from tasks.train import warmup_steps
    assert warmup_steps(0.1, 1602) == 161 and warmup_steps(0.2, 24) == 5 and warmup_steps(0.0, 24) == 0
    root = os.path.join(os.path.dirname(__file__), "..", "benchmarks")
    for name in ("head_run.py", "peft_reference.py"):
        with open(os.path.join(root, name), encoding="utf-8") as f:
            tree = ast.parse(f.read())
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
                 and getattr(n.func, "attr", None) == "get_linear_schedule_with_warmup"]
        assert calls, name
        for call in calls:
            warmup = call.args[1]
            assert isinstance(warmup, ast.Call) and getattr(warmup.func, "id", None) == "warmup_steps", \
                f"{name}: warmup {ast.unparse(warmup)}"
