"""`python -m tasks.explain`: what one training step of head | lora | full will cost, before
training, and why.

    python -m tasks.explain --method lora --r 8 --target-modules query,value \\
        --batch-size 16 --max-length 128 [--model DIR] [--measure]

It builds the model exactly as `tasks.train.prepare_model` does and runs ONE forward pass with
grad on a batch of the requested shape (B, T) (every row full length: the worst case), with a
hook on every op. From that single pass it reads, without running any backward:

  parameters      trainable and frozen; gradients and AdamW state (m and v, 2 x 4 bytes each)
                  exist for trainable parameters only;
  activations     bytes the graph keeps for backward: the arrays in each node's ctx.saved and
                  ctx.__dict__, counted once per underlying buffer (q, k, v share one saved x),
                  weights excluded; and all the graph holds, adding the leaf inputs (masks,
                  constants) that nodes refer to. Measured, not estimated;
  FLOPs           of the matrix products (Linear, MatMul, attention; 2 per multiply-add), forward
                  from the hook, backward from each recorded node's `needs_input_grad`: a frozen
                  weight costs no dW product, an input that needs no gradient no dX product, and
                  ops run outside the graph (the frozen encoder under head-only) no backward;
  ms/step         predicted as sum(FLOPs / rate) over the product shapes, the rate being
                  np.matmul's GFLOP/s timed here, now, at each shape. A lower bound: softmax,
                  layernorm, GELU, dropout and the optimizer are memory-bound and not counted.

`--measure` then runs a few real AdamW steps and prints measured against predicted time and the
process's peak resident memory. The answer to "why is LoRA not 3x faster?" is in the table: LoRA
removes the dW products and the optimizer state, but the forward and every dX product still run.

Shapes: B batch, T tokens, C width, F feed-forward width, N = B*T rows, r LoRA rank.
"""
import argparse
import resource

import numpy as np

import minigrad
from minigrad import function, optim
from minigrad.kernels import attention as kattention
from minigrad.nn import lora
from minigrad.profiler import (attention_backward_products, best_seconds, forward_flops,
                               lora_products, median_seconds)
from models.bert import default_model_dir
from models.bert_tasks import BertForSequenceClassification
from tasks.cli import _positive_int
from tasks.train import prepare_model

PRODUCTS = ("Linear", "MatMul", "ScaledDotProductAttention", "LoraLinear")
PARTS = ("encoder", "lora", "head")  # head = pooler + classifier


def _part(param_name):
    if ".lora_A." in param_name or ".lora_B." in param_name:
        return "lora"
    if param_name.startswith(("classifier.", "bert.pooler.")):
        return "head"
    return "encoder"


def _gemm_shape(cls, arrays):
    """The key a product's rate is timed at: ("gemm", batch, M, K, N) for Linear and MatMul,
    ("attention", B, H, L, S, D) for the fused attention kernel (L queries, S keys; L = S = T in
    self-attention), which is not a BLAS call."""
    a, b = arrays[0], arrays[1]
    if cls.__name__ == "Linear":
        return ("gemm", 1, a.size // a.shape[-1], b.shape[1], b.shape[0])
    if cls.__name__ == "MatMul":
        batch = int(np.prod(np.broadcast_shapes(a.shape[:-2], b.shape[:-2])))
        return ("gemm", batch, a.shape[-2], a.shape[-1], b.shape[-1])
    B, H, L, D = a.shape
    return ("attention", B, H, L, b.shape[-2], D)


def _lora_products(arrays, names, needs=(False,) * 4):
    """The three products of the fused LoRA layer (profiler.lora_products), x W^T, x A^T and
    t B^T, as [(part, GEMM shape), forward FLOPs, (dX runs, dW runs)], the runs read from
    needs_input_grad (x, weight, lora_A, lora_B) as ops/linalg.py's LoraLinear skips them."""
    x, w, a = arrays[0], arrays[1], arrays[2]
    n, (cout, cin), r = x.size // x.shape[-1], w.shape, a.shape[0]
    parts = (_part(names.get(id(w), "")), "lora", "lora")
    return [((part, ("gemm", 1, n, k, m)), 2 * n * k * m, runs)
            for part, ((k, m), runs) in zip(parts, lora_products(cin, cout, r, needs))]


class _ForwardCounter:
    """A hook (function._op_hooks protocol) adding up forward FLOPs per (part, GEMM shape) of
    every product op, inside the graph or not."""

    def __init__(self, names):
        self.names = names  # id(parameter array) -> parameter name
        self.flops = {}  # (part, shape) -> FLOPs

    def before_forward(self, cls, arrays):
        return None

    def after_forward(self, cls, arrays, out, token):
        if cls.__name__ == "LoraLinear":
            for key, flops, _ in _lora_products(arrays, self.names):
                self.flops[key] = self.flops.get(key, 0) + flops
        elif cls.__name__ in PRODUCTS:
            part = _part(self.names.get(id(arrays[1]), "")) if cls.__name__ == "Linear" else "encoder"
            key = (part, _gemm_shape(cls, arrays))
            self.flops[key] = self.flops.get(key, 0) + forward_flops(cls, arrays, out)

    def before_backward(self, fn, grad):
        return None

    def after_backward(self, fn, grad, input_grads, token, input_shapes):
        pass


def _nodes(root):
    """Every recorded node reachable from `root`, each once."""
    return function.graph_nodes(root._node) if root._node is not None else []


def _backward_flops(nodes, names):
    """(part, shape) -> [dX FLOPs, dW FLOPs] the backward will run, read from needs_input_grad.

    Each gradient a product computes is one product of the forward's size; attention's backward
    runs up to four T x T x D products, skipping those whose gradient no input needs."""
    out = {}
    for node in nodes:
        name = node.fn.__name__
        if name not in PRODUCTS:
            continue
        arrays = _input_arrays(node)
        if name == "LoraLinear":
            for key, fwd, (dx, dw) in _lora_products(arrays, names, node.ctx.needs_input_grad):
                acc = out.setdefault(key, [0, 0])
                acc[0] += fwd * dx
                acc[1] += fwd * dw
            continue
        fwd = forward_flops(node.fn, arrays, np.empty(_out_shape(name, arrays), np.bool_))
        needs = node.ctx.needs_input_grad
        if name == "Linear":
            key = (_part(names.get(id(arrays[1]), "")), _gemm_shape(node.fn, arrays))
            dx, dw = fwd * needs[0], fwd * needs[1]
        elif name == "MatMul":
            key, dx, dw = ("encoder", _gemm_shape(node.fn, arrays)), fwd * (needs[0] + needs[1]), 0
        else:  # attention: the forward is two (L, S, D) products, Q K^T and P V
            products = attention_backward_products(*needs[:3])
            key, dx, dw = ("encoder", _gemm_shape(node.fn, arrays)), fwd // 2 * products, 0
        acc = out.setdefault(key, [0, 0])
        acc[0] += dx
        acc[1] += dw
    return out


def _input_arrays(node):
    """Stand-ins for a node's inputs: a leaf's own data (so a weight is known by identity), and
    for an intermediate value, which the graph does not keep, a zero-byte array of its shape."""
    return [p.data if not isinstance(p, function.Node) else np.broadcast_to(np.empty((), np.bool_), shape)
            for p, shape in zip(node.parents, node.shapes)]


def _out_shape(name, arrays):
    """Output shape of a product op from its inputs (only its size is used for FLOPs)."""
    a, b = arrays[0], arrays[1]
    if name == "Linear":
        return a.shape[:-1] + (b.shape[0],)
    if name == "MatMul":
        return np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1])
    return a.shape


def graph_bytes(nodes, param_arrays):
    """(saved bytes by op, bytes held by the graph), each underlying buffer counted once and
    parameters left out (they exist whether or not we train).

    Saved: the arrays in ctx.saved and ctx.__dict__, what the backward formulas need. Held: those
    plus the leaf inputs (constants such as masks) the nodes refer to; an intermediate value is
    held only where an op saved it."""
    seen = {id(_root(p)) for p in param_arrays}

    def new_bytes(a):
        root = _root(a)
        if id(root) in seen:
            return 0
        seen.add(id(root))
        return root.nbytes

    by_op = {}
    for node in nodes:
        for a in (*node.ctx.saved, *node.ctx.__dict__.values()):
            if isinstance(a, np.ndarray):
                by_op[node.fn.__name__] = by_op.get(node.fn.__name__, 0) + new_bytes(a)
    held = sum(by_op.values()) + sum(new_bytes(p.data) for node in nodes for p in node.parents
                                     if not isinstance(p, function.Node))
    return by_op, held


def _root(a):
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def make_batch(config, batch_size, max_length, num_labels, seed=0):
    """Random token ids (B, T), every row full length, and labels (B,)."""
    rng = np.random.default_rng(seed)
    first_word = min(1000, config.vocab_size // 2)  # BERT's ids below ~1000 are special and unused
    ids = rng.integers(first_word, config.vocab_size, (batch_size, max_length))
    return ids, np.ones_like(ids), np.zeros_like(ids), rng.integers(0, num_labels, batch_size)


def train_mode(model):
    """model.train(), except a frozen encoder (head-only), which runs in eval mode as it does
    when tasks.train computes the cached features: no dropout, the fused attention kernel."""
    model.train()
    if not any(p.requires_grad for p in model.bert.parameters()):
        model.bert.eval()


def analyse(model, batch_size, max_length):
    """Run one forward with grad on a (B, T) batch and count everything above. Returns a dict."""
    names = {id(p.data): n for n, p in model.named_parameters()}
    counter = _ForwardCounter(names)
    ids, mask, types, labels = make_batch(model.config, batch_size, max_length, model.num_labels)
    train_mode(model)
    function._op_hooks.append(counter)
    try:
        loss = model(ids, mask, types, labels=labels).loss
    finally:
        function._op_hooks.remove(counter)
    nodes = _nodes(loss)
    backward = _backward_flops(nodes, names) if loss.requires_grad else {}
    flops = {}
    for key in set(counter.flops) | set(backward):
        dx, dw = backward.get(key, (0, 0))
        flops[key] = {"forward": counter.flops.get(key, 0), "dx": dx, "dw": dw}
    saved, held = graph_bytes(nodes, [p.data for p in model.parameters()])
    return {"trainable": model.num_parameters(trainable_only=True), "total": model.num_parameters(),
            "flops": flops, "saved": saved, "held": held}


def by_part(flops):
    """{part: {forward, dx, dw, skipped}}; `skipped` is what full fine-tuning would add: every
    product's backward costs twice its forward when every weight and input needs a gradient."""
    parts = {p: {"forward": 0, "dx": 0, "dw": 0, "skipped": 0} for p in PARTS}
    for (part, _), f in flops.items():
        row = parts[part]
        for k in ("forward", "dx", "dw"):
            row[k] += f[k]
        row["skipped"] += 2 * f["forward"] - f["dx"] - f["dw"]
    if parts["lora"]["forward"] == 0:
        del parts["lora"]
    return parts


def product_calls(shapes):
    """{key of `_gemm_shape`: (run, flops)}: one float32 call of the product at each shape, on
    seeded random operands: np.matmul for a GEMM; minigrad's fused kernel for attention (what
    the model runs there)."""
    rng = np.random.default_rng(0)
    calls = {}
    for key in shapes:
        if key[0] == "gemm":
            _, batch, m, k, n = key
            a = rng.standard_normal((batch, m, k), dtype=np.float32)
            b = rng.standard_normal((batch, k, n), dtype=np.float32)
            calls[key] = (lambda a=a, b=b: np.matmul(a, b)), 2 * batch * m * k * n
        else:
            _, B, H, L, S, D = key
            q = rng.standard_normal((B, H, L, D), dtype=np.float32)
            k = rng.standard_normal((B, H, S, D), dtype=np.float32)
            mask = np.zeros((B, 1, 1, S), np.float32)
            run = lambda q=q, k=k, mask=mask: kattention.attention_forward(q, k, k, mask, D ** -0.5)  # noqa: E731
            calls[key] = run, 4 * B * H * L * S * D
    return calls


def gemm_rates(shapes, repeats=15):
    """GFLOP/s at each key of `_gemm_shape`, from the fastest of `repeats` calls after a warm-up
    call. The fastest, not the median: these rates make a limit, and with medians of 7 the
    limit moved by up to 30% between runs of the same step on a shared machine."""
    return {key: flops / max(best_seconds(run, repeats), 1e-9) / 1e9
            for key, (run, flops) in product_calls(shapes).items()}


def predict_ms(flops, rates):
    """Forward and backward ms of the products at the measured rates."""
    fwd = sum(f["forward"] / rates[shape] for (_, shape), f in flops.items()) / 1e6
    bwd = sum((f["dx"] + f["dw"]) / rates[shape] for (_, shape), f in flops.items()) / 1e6
    return fwd, bwd


def training_step(model, batch_size, max_length, lr=1e-4, seed=1):
    """A closure running one AdamW step of `model` on a full-length (B, T) batch."""
    ids, mask, types, labels = make_batch(model.config, batch_size, max_length, model.num_labels, seed=seed)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    opt = optim.AdamW(optim.param_groups_no_decay(named, 0.01), lr=lr)
    train_mode(model)

    def step():
        model(ids, mask, types, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
    return step


def measure_steps(model, batch_size, max_length, steps=3):
    """Median wall ms of `steps` AdamW steps (after one warm-up step) and peak RSS in MB."""
    ms = median_seconds(training_step(model, batch_size, max_length), steps) * 1e3
    return ms, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def report(method, info, rates, batch_size, max_length):
    """The printed explanation, as text."""
    mb = lambda n: f"{n / 2**20:,.1f} MB" if n >= 2**20 else f"{n / 2**10:,.1f} KB"  # noqa: E731
    g = lambda n: f"{n / 1e9:,.3f}"  # noqa: E731
    t, total = info["trainable"], info["total"]
    saved = sum(info["saved"].values())
    top = sorted(info["saved"].items(), key=lambda kv: -kv[1])[:5]
    parts = by_part(info["flops"])
    fwd_ms, bwd_ms = predict_ms(info["flops"], rates)
    lines = [
        f"method {method}, batch {batch_size} x {max_length} tokens (N = {batch_size * max_length} rows)",
        "",
        f"parameters   trainable {t:,} of {total:,} ({100 * t / total:.2f}%); frozen {total - t:,}",
        f"memory       weights {mb(4 * total)} | gradients {mb(4 * t)} | AdamW state (m, v) "
        f"{mb(8 * t)} | activations saved for backward {mb(saved)} (measured)",
        f"             held by the graph until backward {mb(info['held'])} (saved, plus leaf "
        "inputs such as masks that nodes reference)",
        "             largest savers: " + ", ".join(f"{k} {mb(v)}" for k, v in top),
        "",
        "GFLOP per step (matrix products; 2 per multiply-add)",
        "| part | forward | backward dX | backward dW | skipped vs full |",
        "|---|---|---|---|---|",
    ]
    total_keys = ("forward", "dx", "dw", "skipped")
    parts["total"] = {k: sum(row[k] for row in parts.values()) for k in total_keys}
    for part, row in parts.items():
        lines.append(f"| {part} | " + " | ".join(g(row[k]) for k in total_keys) + " |")
    total = parts["total"]
    shapes = ", ".join(f"{'' if k[0] == 'gemm' else 'attention '}"
                       f"{'x'.join(map(str, k[1:] if k[0] == 'attention' or k[1] > 1 else k[2:]))} {r:.3g}"
                       for k, r in sorted(rates.items()))  # gemm (batch, M, K, N), batch 1 left out
    lines += [f"backward / forward = {(total['dx'] + total['dw']) / max(total['forward'], 1):.2f} "
              "(full fine-tuning: 2.00)",
              "",
              f"rates measured now (GFLOP/s; np.matmul, fused attention): {shapes}",
              f"predicted    {fwd_ms + bwd_ms:,.0f} ms/step = forward {fwd_ms:,.0f} + backward {bwd_ms:,.0f} "
              "(products only: a lower bound)"]
    return "\n".join(lines), fwd_ms + bwd_ms


def build_model(folder, method, num_labels, r, alpha, target_modules):
    model = BertForSequenceClassification.from_pretrained(folder, num_labels=num_labels)
    config = lora.LoraConfig(r=r, lora_alpha=alpha, target_modules=target_modules)
    return prepare_model(model, method, config)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tasks.explain", description=__doc__.split("\n\n")[0])
    p.add_argument("--method", choices=("head", "lora", "full"), default="lora")
    p.add_argument("--r", type=int, default=8)
    p.add_argument("--alpha", type=float, default=16)
    p.add_argument("--target-modules", default="query,value")
    p.add_argument("--batch-size", type=_positive_int, default=16)
    p.add_argument("--max-length", type=_positive_int, default=128)
    p.add_argument("--num-labels", type=_positive_int, default=2)
    p.add_argument("--model", help="a BERT folder (default: the bundled all-MiniLM-L6-v2)")
    p.add_argument("--measure", action="store_true", help="then run a few real AdamW steps")
    p.add_argument("--steps", type=_positive_int, default=3, help="steps timed by --measure (after one warm-up)")
    args = p.parse_args(argv)
    minigrad.manual_seed(0)
    model = build_model(str(args.model or default_model_dir()), args.method, args.num_labels,
                        args.r, args.alpha, args.target_modules)
    info = analyse(model, args.batch_size, args.max_length)
    rates = gemm_rates({shape for _, shape in info["flops"]})
    text, predicted = report(args.method, info, rates, args.batch_size, args.max_length)
    print(text)
    print(f"threads      {minigrad.kernels.get_num_threads()}; timings are wall time on this machine, "
          "as loaded as it is now")
    if args.method == "head":
        print("note         tasks.train caches the encoder's features once (no_grad), so after the "
              "first epoch a head-only step costs only the head")
    if args.measure:
        ms, peak = measure_steps(model, args.batch_size, args.max_length, args.steps)
        print(f"measured     {ms:,.0f} ms/step (median of {args.steps} AdamW steps); predicted "
              f"{predicted:,.0f}; measured / predicted = {ms / predicted:.2f}")
        print(f"peak memory  {peak:,.0f} MB resident (ru_maxrss of this process)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
