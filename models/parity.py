"""Layer-by-layer parity of our BertModel against Hugging Face transformers' BertModel.

    python -m models.bert --check-parity [folder]

loads one BERT folder (config.json, model.safetensors, tokenizer.json; default: the bundled
all-MiniLM-L6-v2) into both implementations, runs a built-in batch of varied sentences (short
and long, so there is padding, and one sentence pair, so token type 1 is used) and prints one row
per stage: the embedding output, each encoder layer's output, and the pooler. Exit status 1 when
any error exceeds the tolerance (1e-4), 2 when the folder cannot be loaded, 0 when all pass, and
0 with a message when transformers is not installed (an optional comparison extra, never a
dependency).

Hidden states are compared at real tokens only (attention_mask 1). A padding position's state
is never read (pooling skips it, attention masks it as a key), and it is badly conditioned:
in float32, transformers' own eager and SDPA attention differ there by about 1e-4 after a few
layers, and both are that far from a float64 run, while at real tokens every float32 version
agrees with float64 to a few 1e-6. The worst padding error is printed for information.

The test suite (tests/test_bert.py) uses the same functions, so the tool and the tests measure
one thing.
"""
import argparse
import sys

import numpy as np

from minigrad import no_grad

TOLERANCE = 1e-4

# Varied lengths (one word to a long sentence, so the batch pads), punctuation, digits, an
# accent and an out-of-vocabulary word (split into word pieces); the last entry is a pair.
SENTENCES = [
    ("Hello world.", None),
    ("A man is playing a large flute on the street while a small crowd listens.", None),
    ("ok", None),
    ("The 3 engineers re-ran 1,250 experiments in São Paulo on 12/05/2021; results: mixed!", None),
    ("Supercalifragilisticexpialidocious tokenization stress-test.", None),
    ("A woman is slicing an onion.", "Someone is cutting vegetables in the kitchen."),
]


def encode_sentences(tokenizer, sentences=SENTENCES, max_length=128):
    """(text, pair or None) list -> the tokenizer's dict of (B, T) arrays. Single sentences and
    pairs go through one encode call each, then are padded together to the longest."""
    singles = [i for i, (_, pair) in enumerate(sentences) if pair is None]
    pairs = [i for i, (_, pair) in enumerate(sentences) if pair is not None]
    parts = []
    if singles:
        parts.append(tokenizer.encode([sentences[i][0] for i in singles], max_length=max_length))
    if pairs:
        parts.append(tokenizer.encode([sentences[i][0] for i in pairs],
                                      [sentences[i][1] for i in pairs], max_length=max_length))
    T = max(p["input_ids"].shape[1] for p in parts)
    batch = {}
    for name, pad in (("input_ids", tokenizer.pad_id), ("attention_mask", 0), ("token_type_ids", 0)):
        rows = [np.pad(p[name], ((0, 0), (0, T - p[name].shape[1])), constant_values=pad)
                for p in parts]
        batch[name] = np.concatenate(rows)[np.argsort(singles + pairs)]  # back to input order
    return batch


def minigrad_states(model, batch):
    """Our forward pass -> (hidden_states list of (B, T, C) float32 arrays, pooler (B, C))."""
    model.eval()
    with no_grad():
        out = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                    output_hidden_states=True)
    return [h.data for h in out.hidden_states], out.pooler_output.data


def load_transformers_model(folder):
    """transformers' BertModel from `folder` in eval mode and float32 (torch and transformers
    are imported here, so the rest of minigrad never needs them)."""
    import torch
    import transformers

    return transformers.BertModel.from_pretrained(str(folder), dtype=torch.float32).eval()


def transformers_states(hf_model, batch):
    """transformers' forward pass -> the same (hidden_states, pooler) as `minigrad_states`."""
    import torch

    with torch.no_grad():
        out = hf_model(**{k: torch.from_numpy(batch[k]) for k in
                          ("input_ids", "attention_mask", "token_type_ids")},
                       output_hidden_states=True)
    return [h.numpy() for h in out.hidden_states], out.pooler_output.numpy()


def errors(ours, theirs):
    """(max abs error, max relative error) of two arrays. Relative is max abs error over the
    reference's largest magnitude: element-wise ratios blow up at values near zero and would
    say nothing about the layer."""
    diff = np.abs(ours.astype(np.float64) - theirs.astype(np.float64))
    scale = np.abs(theirs).max() if theirs.size else 0.0
    max_abs = float(diff.max()) if diff.size else 0.0
    return max_abs, max_abs / scale if scale > 0 else max_abs


def parity_rows(ours, theirs, attention_mask):
    """Both implementations' (hidden_states, pooler) -> rows of (stage, max abs, max rel,
    padding max abs) with stages "embeddings", "layer 1".."layer N", "pooler"."""
    real = np.asarray(attention_mask).astype(bool)  # (B, T)
    (our_states, our_pool), (their_states, their_pool) = ours, theirs
    if len(our_states) != len(their_states):
        raise ValueError(f"parity: {len(our_states)} hidden states from minigrad but "
                         f"{len(their_states)} from transformers")
    rows = []
    for i, (a, b) in enumerate(zip(our_states, their_states)):
        name = "embeddings" if i == 0 else f"layer {i}"
        pad = errors(a[~real], b[~real])[0]
        rows.append((name, *errors(a[real], b[real]), pad))
    rows.append(("pooler", *errors(our_pool, their_pool), float("nan")))
    return rows


def check_parity(folder):
    """Load `folder` into both implementations, run the built-in batch -> parity rows."""
    from models.bert import BertModel
    from models.tokenizer import Tokenizer

    batch = encode_sentences(Tokenizer.from_folder(folder))
    ours = minigrad_states(BertModel.from_pretrained(folder), batch)
    theirs = transformers_states(load_transformers_model(folder), batch)
    return parity_rows(ours, theirs, batch["attention_mask"]), batch


def failed_stages(rows, tolerance=TOLERANCE):
    """The stages whose max abs or max rel error exceeds `tolerance` or is nan (a nan or inf in
    either model's states; padding is not judged)."""
    return [name for name, max_abs, max_rel, _ in rows
            if not (max_abs <= tolerance and max_rel <= tolerance)]  # nan compares False


def format_table(rows, tolerance=TOLERANCE):
    failed = failed_stages(rows, tolerance)
    lines = [f"{'stage':<12} {'max abs':>10} {'max rel':>10} {'pad abs':>10}  status",
             "-" * 54]
    for name, max_abs, max_rel, pad in rows:
        pad_text = "-" if np.isnan(pad) else f"{pad:.2e}"
        lines.append(f"{name:<12} {max_abs:>10.2e} {max_rel:>10.2e} {pad_text:>10}  "
                     f"{'FAIL' if name in failed else 'ok'}")
    return "\n".join(lines)


def main(argv=None):
    """The `--check-parity` command line; returns the exit status."""
    from models.bert import default_model_dir

    parser = argparse.ArgumentParser(
        prog="python -m models.bert",
        description="Compare our BertModel with transformers' layer by layer on a built-in batch.")
    parser.add_argument("--check-parity", metavar="FOLDER", nargs="?", const="", required=True,
                        help="BERT folder with config.json, model.safetensors and tokenizer.json "
                             "(default: the bundled all-MiniLM-L6-v2)")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE,
                        help=f"largest allowed max abs and max rel error (default {TOLERANCE})")
    args = parser.parse_args(argv)
    try:
        import torch  # noqa: F401
        import transformers
    except ImportError as e:
        print(f"parity check skipped: transformers and torch are needed to compare ({e}); "
              "install them with the test extras, e.g. `pip install torch==2.13.0 transformers`")
        return 0
    try:
        folder = args.check_parity or default_model_dir()
        rows, batch = check_parity(folder)
    except (FileNotFoundError, ValueError) as e:  # a folder that is not a loadable BERT
        print(f"parity check failed to load the model: {e}", file=sys.stderr)
        return 2
    B, T = batch["input_ids"].shape
    print(f"minigrad vs transformers {transformers.__version__}: {folder}")
    print(f"batch of {B} sequences, {T} tokens padded ({int(batch['attention_mask'].sum())} real); "
          "hidden states compared at real tokens, 'pad abs' (padding positions) for information")
    print(format_table(rows, args.tolerance))
    failed = failed_stages(rows, args.tolerance)
    if failed:
        print(f"FAIL: {', '.join(failed)} exceed {args.tolerance:g}")
        return 1
    print(f"all stages within {args.tolerance:g}")
    return 0
