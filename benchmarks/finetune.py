"""End-to-end benchmark: one training step of BERT (MiniLM-L6) in minigrad against PyTorch.

    python -m benchmarks.finetune [--compare torch] [--threads 2] [--batch-size 16]
                                  [--seq 128,64] [--dropout 0.1,0] [--steps 10] [--write]
                                  [--no-cold-start]

Every configuration runs in its own process (so its peak RSS is its own), with the same thread
count on both sides, on the real weights, with full-length random batches (B, T):

    inference    batch 32 x T, no grad: sequences/s
    head         encoder frozen, no feature cache (to compare like with like)
    lora-qv      LoRA r=8 on query, value + head      lora-all  LoRA r=8 on every Linear + head
    full         every weight trains

For each: median ms/step of --steps steps after warm-up, tokens/s, the matmul FLOPs of the step
(counted by tasks.explain from the graph: a frozen weight costs no dW product), achieved GFLOP/s,
that as a fraction of the BLAS-bound time (the same FLOPs at np.matmul's rate for each shape,
measured in the same process) two ways: "of BLAS bound", the rates from the fastest of 15
calls per shape against the median step (a strict limit, but the two are timed at different
moments of a noisy machine), and "of paired bound", --steps more rounds of one step then one call
per shape, medians of both (the same moments), peak RSS, and minigrad / torch ratios. The torch side is
torch + transformers + PEFT with AdamW and the same dropout; `--compare torch` skips it with a
message when they are not installed. A benchmark, not a test: the machine's noise is reported
as medians and ratios from one run.

Last, the cold start: whole fresh processes that import, load the weights and run one forward,
timed from outside; the first with an empty Numba cache (the first-ever compile), then three
with the cache it wrote (`--no-cold-start` skips this).
"""
import argparse
import datetime
import json
import os
import resource
import statistics
import subprocess
import sys
import time

# minigrad is imported only inside functions: it sets OMP_WAIT_POLICY=PASSIVE for Numba's pool
# when imported, and the torch workers must start torch's own OpenMP with the user's setting
# (torch is imported first there), not ours.
_USER_ENV = dict(os.environ)

CONFIGS = ("inference", "head", "lora-qv", "lora-all", "full")
INFERENCE_BATCH = 32


def _peak_rss_mb():
    """This process's peak resident memory in MB. Linux's VmHWM, not getrusage's ru_maxrss:
    ru_maxrss survives execve, so a worker would report at least the driver's own peak (which,
    having imported torch to check it is there, was 433 MB: the figure every small minigrad
    configuration showed)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


# ---- the minigrad side ---------------------------------------------------------------------
def run_minigrad(job):
    import minigrad  # before NumPy: its OpenBLAS settings must be set when OpenBLAS loads
    import numpy as np
    from minigrad.profiler import median_seconds
    from minigrad.nn import lora
    from models.bert_tasks import BertForSequenceClassification
    from tasks import explain
    from tasks.train import prepare_model

    B = INFERENCE_BATCH if job["config"] == "inference" else job["batch_size"]
    T, p = job["seq"], job["dropout"]
    model = BertForSequenceClassification.from_pretrained(
        num_labels=2, hidden_dropout_prob=p, attention_probs_dropout_prob=p)
    if job["config"] == "inference":
        ids, mask, types, _ = explain.make_batch(model.config, B, T, 2)
        model.eval()

        def step():
            with minigrad.no_grad():
                model(ids, mask, types)
    else:
        targets = {"lora-qv": ("query", "value"), "lora-all": "all-linear"}.get(job["config"])
        method = "lora" if targets else job["config"]
        prepare_model(model, method, lora.LoraConfig(r=8, lora_alpha=16, target_modules=targets or "query"))
        step = explain.training_step(model, B, T, lr=1e-5)
    ms = median_seconds(step, job["steps"], job["warmup"]) * 1e3
    peak = _peak_rss_mb()
    # FLOPs and the BLAS-bound time, after timing so the extra graph does not count in the RSS
    if job["config"] == "inference":
        with minigrad.no_grad():
            info = explain.analyse(model, B, T)
        flops = {k: dict(f, dx=0, dw=0) for k, f in info["flops"].items()}
    else:
        flops = explain.analyse(model, B, T)["flops"]
    shapes = {shape for (_, shape) in flops}
    bound_ms = sum(explain.predict_ms(flops, explain.gemm_rates(shapes)))
    step_s, rates = interleaved_rates(step, explain.product_calls(shapes), job["steps"])
    total = sum(f["forward"] + f["dx"] + f["dw"] for f in flops.values())
    return {"ms": ms, "peak_mb": peak, "gflop": total / 1e9, "bound_ms": bound_ms,
            "paired_ms": step_s * 1e3, "paired_bound_ms": sum(explain.predict_ms(flops, rates)),
            "threads": minigrad.kernels.get_num_threads(), "numpy": np.__version__}


def interleaved_rates(step, calls, rounds):
    """(median step seconds, {shape: GFLOP/s}) from `rounds` rounds of one step followed by one
    call of each product shape, after a warm-up round. The step and the products it is
    compared with are timed in the same moments, so a machine that is slower for a while (a
    neighbour on the host, a lower clock) slows both: their ratio is what the step's
    products lose inside the step, not what the machine did between two measurements."""
    steps, times = [], {key: [] for key in calls}
    for i in range(rounds + 1):
        t0 = time.perf_counter()
        step()
        if i:
            steps.append(time.perf_counter() - t0)
        for key, (run, _) in calls.items():
            t0 = time.perf_counter()
            run()
            if i:
                times[key].append(time.perf_counter() - t0)
    return (statistics.median(steps),
            {key: calls[key][1] / statistics.median(t) / 1e9 for key, t in times.items()})


# ---- the torch side ------------------------------------------------------------------------
def run_torch(job):
    import torch  # first: see the comment at the top
    import transformers

    from minigrad.profiler import median_seconds
    from models.bert import default_model_dir

    torch.set_num_threads(job["threads"])
    torch.manual_seed(0)
    B = INFERENCE_BATCH if job["config"] == "inference" else job["batch_size"]
    T, p = job["seq"], job["dropout"]
    model = transformers.BertForSequenceClassification.from_pretrained(
        str(default_model_dir()), num_labels=2, hidden_dropout_prob=p,
        attention_probs_dropout_prob=p, attn_implementation=job["attn"])
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, model.config.vocab_size, (B, T), generator=g)
    mask, labels = torch.ones_like(ids), torch.randint(0, 2, (B,), generator=g)
    if job["config"] == "inference":
        model.eval()

        def step():
            with torch.no_grad():
                model(input_ids=ids, attention_mask=mask)
    else:
        if job["config"].startswith("lora"):
            import peft
            targets = ["query", "value"] if job["config"] == "lora-qv" else "all-linear"
            model = peft.get_peft_model(model, peft.LoraConfig(task_type="SEQ_CLS", r=8, lora_alpha=16,
                                                               target_modules=targets))
        elif job["config"] == "head":
            for n, q in model.named_parameters():
                q.requires_grad_(n.startswith("classifier."))
        model.train()
        if job["config"] == "head":
            model.bert.eval()  # as ours: a frozen encoder runs in eval mode
        opt = torch_adamw(torch, model, lr=1e-5)

        def step():
            model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    ms = median_seconds(step, job["steps"], job["warmup"]) * 1e3
    return {"ms": ms, "peak_mb": _peak_rss_mb(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "transformers": transformers.__version__}


def torch_adamw(torch, model, lr):
    """torch's AdamW with the settings of minigrad's side (explain.training_step): weight decay
    0.01 except on biases and norms (optim.param_groups_no_decay), betas 0.9/0.999, eps 1e-8."""
    from minigrad.optim import param_groups_no_decay
    named = [(n, q) for n, q in model.named_parameters() if q.requires_grad]
    return torch.optim.AdamW(param_groups_no_decay(named, 0.01), lr=lr, betas=(0.9, 0.999), eps=1e-8)


# ---- cold start ------------------------------------------------------------------------------
def run_first_forward(job):
    """What a fresh process does before its first answer: import, load the real weights,
    one forward of a (1, 16) batch without grad (the thread count comes from the job's env)."""
    import minigrad
    from models.bert_tasks import BertForSequenceClassification
    from tasks import explain
    model = BertForSequenceClassification.from_pretrained(num_labels=2).eval()
    ids, mask, types, _ = explain.make_batch(model.config, 1, 16, 2)
    with minigrad.no_grad():
        model(ids, mask, types)
    return {}


def cold_start(threads, repeats=3):
    """(first-ever seconds, median warm seconds): wall time of whole fresh processes that reach
    their first forward, the first with an empty Numba cache (everything compiles), the rest
    with the cache that run wrote."""
    import tempfile
    with tempfile.TemporaryDirectory() as cache:
        times = []
        for _ in range(repeats + 1):
            t0 = time.perf_counter()
            _spawn({"side": "first-forward", "threads": threads}, NUMBA_CACHE_DIR=cache)
            times.append(time.perf_counter() - t0)
    return times[0], statistics.median(times[1:])


# ---- the driver ------------------------------------------------------------------------------
def _spawn(job, **extra_env):
    env = dict(_USER_ENV, MINIGRAD_NUM_THREADS=str(job["threads"]),
               OMP_NUM_THREADS=str(job["threads"]), OPENBLAS_NUM_THREADS=str(job["threads"]),
               **extra_env)
    proc = subprocess.run([sys.executable, "-m", "benchmarks.finetune", "--worker", json.dumps(job)],
                          capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark worker {job} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def torch_available():
    try:
        import peft  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
        return True
    except ImportError:
        return False


def append_results(text, path=os.path.join(os.path.dirname(__file__), "RESULTS.md")):
    """Add `text` at the end of RESULTS.md atomically: the whole new file is written beside it and
    renamed over it, so a run killed mid-write (or a full disk) leaves the file as it was, not
    with half a table."""
    from minigrad.io.atomic import atomic_write_bytes
    with open(path, encoding="utf-8", newline="") as f:
        old = f.read()
    atomic_write_bytes(path, (old + text).encode("utf-8"))


def _commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def format_table(rows, header):
    cols = ["config", "B x T", "dropout", "minigrad ms", "torch ms", "ratio", "tokens/s",
            "GFLOP/step", "GFLOP/s", "of BLAS bound", "of paired bound", "RSS MB", "torch RSS",
            "RSS ratio"]
    lines = [header, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        m, t = r["minigrad"], r.get("torch")
        B = INFERENCE_BATCH if r["config"] == "inference" else r["batch_size"]
        tokens = B * r["seq"] / (m["ms"] / 1e3)
        if r["config"] == "inference":
            ms_cell = f"{m['ms']:.0f} ({B / (m['ms'] / 1e3):.1f} seq/s)"
            t_cell = f"{t['ms']:.0f} ({B / (t['ms'] / 1e3):.1f} seq/s)" if t else "-"
        else:
            ms_cell, t_cell = f"{m['ms']:.0f}", f"{t['ms']:.0f}" if t else "-"
        lines.append("| " + " | ".join([
            r["config"], f"{B} x {r['seq']}", f"{r['dropout']:g}", ms_cell, t_cell,
            f"{m['ms'] / t['ms']:.2f}" if t else "-", f"{tokens:.0f}", f"{m['gflop']:.1f}",
            f"{m['gflop'] / (m['ms'] / 1e3):.0f}", f"{m['bound_ms'] / m['ms']:.0%}",
            f"{m['paired_bound_ms'] / m['paired_ms']:.0%}",
            f"{m['peak_mb']:.0f}", f"{t['peak_mb']:.0f}" if t else "-",
            f"{m['peak_mb'] / t['peak_mb']:.2f}" if t else "-"]) + " |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.finetune", description=__doc__.split("\n")[0])
    p.add_argument("--compare", choices=("torch",), help="also run torch + transformers + PEFT")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq", default="128", help="comma-separated sequence lengths")
    p.add_argument("--dropout", default="0.1,0", help="comma-separated dropout settings")
    p.add_argument("--configs", default=",".join(CONFIGS))
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--attn", default="sdpa", help="torch attention implementation (sdpa or eager)")
    p.add_argument("--no-cold-start", action="store_true", help="skip the cold-start timing")
    p.add_argument("--write", action="store_true", help="append the table to benchmarks/RESULTS.md")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        job = json.loads(args.worker)
        run = {"torch": run_torch, "minigrad": run_minigrad, "first-forward": run_first_forward}
        print(json.dumps(run[job["side"]](job)))
        return
    from minigrad.profiler import cpu_name

    compare = args.compare == "torch" and torch_available()
    if args.compare and not compare:
        print("--compare torch: torch, transformers or peft is not installed; minigrad only "
              "(pip install 'torch==2.13.0' transformers peft)", file=sys.stderr)
    header = (f"{datetime.date.today()} · commit {_commit()} · {cpu_name()} · {os.cpu_count()} cores · "
              f"{args.threads} threads · OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}"
              f" · torch attention {args.attn if compare else '-'} · median of {args.steps} steps"
              f" after {args.warmup} warm-up")
    rows = []
    for seq in [int(s) for s in args.seq.split(",")]:
        for dropout in [float(d) for d in args.dropout.split(",")]:
            for config in args.configs.split(","):
                if config == "inference" and dropout:
                    continue  # dropout is off in inference on both sides
                job = {"config": config, "seq": seq, "dropout": dropout, "batch_size": args.batch_size,
                       "threads": args.threads, "steps": args.steps, "warmup": args.warmup,
                       "attn": args.attn}
                row = dict(job, minigrad=_spawn(dict(job, side="minigrad")))
                if compare:
                    row["torch"] = _spawn(dict(job, side="torch"))
                rows.append(row)
                print(format_table(rows[-1:], "").splitlines()[-1], flush=True)
    versions = {k: v for r in rows for side in ("minigrad", "torch") if r.get(side)
                for k, v in r[side].items() if k in ("numpy", "torch", "transformers")}
    table = format_table(rows, header + " · " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())))
    if not args.no_cold_start:
        first, warm = cold_start(args.threads)
        table += (f"\n\nCold start (a fresh process imports, loads the weights and runs its first "
                  f"forward): {warm:.2f} s with the Numba cache warm (median of 3), {first:.1f} s "
                  f"the first time ever (empty cache: every kernel it uses compiles).")
    print("\n" + table)
    if args.write:
        append_results("\n### End to end: `python -m benchmarks.finetune "
                       + " ".join(argv if argv is not None else sys.argv[1:]) + "`\n\n" + table + "\n")


if __name__ == "__main__":
    main()
