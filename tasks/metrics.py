"""Evaluation metrics for the tasks, in plain NumPy (no scikit-learn, seqeval or scipy needed).

- classification: `accuracy`, `confusion_matrix`, `classification_report` (the table of
  scikit-learn's function of the same name, and the same numbers as a dict; a class found in
  neither the targets nor the predictions is left out of it and of macro F1, as in
  scikit-learn's `f1_score(average="macro")` without `labels`);
- NER: `ner_spans`, `ner_f1`, `ner_report` with STRICT IOB2 entity matching: an entity is a B-X
  followed by any I-X of the same type; a predicted entity counts only if its type, start and end
  all equal a gold entity's. An I-X that does not continue an entity of type X is invalid and
  is no entity at all (seqeval's `mode="strict", scheme=IOB2`; seqeval's default mode would
  instead start an entity there, which scores higher);
- similarity: `pearson`, `spearman` (ranks averaged over ties, as scipy does).

Labels are integer class indices for classification and tag strings for NER.
"""
import warnings

import numpy as np

# ----------------------------------------------------------------------------------------------
# Classification


def accuracy(y_true, y_pred):
    y_true, y_pred = _pair("accuracy", y_true, y_pred)
    return float(np.mean(y_true == y_pred)) if len(y_true) else 0.0


def confusion_matrix(y_true, y_pred, num_labels):
    """(N,) int true and predicted classes -> (K, K) int64 counts, rows true, columns
    predicted (scikit-learn's convention)."""
    y_true, y_pred = _pair("confusion_matrix", y_true, y_pred)
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        outside = y[(y < 0) | (y >= num_labels)]
        if len(outside):
            raise ValueError(f"confusion_matrix: {name} holds class {outside[0]}, outside "
                             f"0..{num_labels - 1}")
    matrix = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def _pair(name, y_true, y_pred):
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"{name}: y_true {y_true.shape} and y_pred {y_pred.shape} must be "
                         "1-D of the same length")
    return y_true, y_pred


def _prf(tp, n_pred, n_true):
    # Zero denominators give 0.0, as scikit-learn's zero_division default reports.
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": float(precision), "recall": float(recall), "f1-score": float(f1),
            "support": int(n_true)}


def _averages(rows):
    """Macro (unweighted) and support-weighted means of per-class rows."""
    support = np.array([r["support"] for r in rows], dtype=np.float64)
    out = {}
    for name, weights in (("macro avg", np.ones_like(support)), ("weighted avg", support)):
        total = weights.sum()
        out[name] = {k: float(np.dot(weights, [r[k] for r in rows]) / total) if total else 0.0
                     for k in ("precision", "recall", "f1-score")}
        out[name]["support"] = int(support.sum())
    return out


def _format_table(rows, digits, accuracy_row=None):
    """scikit-learn's classification_report layout. rows: {name: {precision, recall, f1-score,
    support}}, per class first, then averages (separated by a blank line); accuracy_row:
    (accuracy, support) printed between them."""
    classes = [n for n in rows if not n.endswith(" avg")]
    averages = [n for n in rows if n.endswith(" avg")]
    width = max(len(n) for n in rows)  # an average's name is at least as long as "accuracy"
    header = ["precision", "recall", "f1-score", "support"]
    lines = [f"{'':>{width}s} " + "".join(f" {h:>9}" for h in header), ""]

    def line(name):
        r = rows[name]
        return (f"{name:>{width}s} " + "".join(f" {r[k]:>9.{digits}f}" for k in header[:3])
                + f" {r['support']:>9}")

    lines += [line(n) for n in classes] + [""]
    if accuracy_row is not None:
        acc, support = accuracy_row
        lines.append(f"{'accuracy':>{width}s} " + f" {'':>9} {'':>9}"
                     + f" {acc:>9.{digits}f} {support:>9}")
    lines += [line(n) for n in averages]
    return "\n".join(lines) + "\n"


def classification_report(y_true, y_pred, label_names, digits=2):
    """(N,) int true and predicted classes, K class names -> (text, dict).

    dict: {name: {precision, recall, f1-score, support}} per class, "accuracy": float, and
    "macro avg" / "weighted avg" rows, the keys of scikit-learn's `output_dict=True`.

    A class that is neither in y_true nor in y_pred has no row and does not enter the macro
    average, as in scikit-learn's `f1_score(average="macro")` and Hugging Face evaluate's f1,
    whose labels are those found in either (scikit-learn's own report would need `labels=` to
    print all K names, and then keeps the empty rows): its precision
    and recall are 0/0, and counting it as 0 would lower macro F1 for a class the split simply
    lacks (a small validation set without TREC's rare ABBR questions), whatever the model does."""
    matrix = confusion_matrix(y_true, y_pred, len(label_names))
    tp = np.diag(matrix)
    present = [k for k in range(len(label_names)) if matrix[k].sum() or matrix[:, k].sum()]
    per_class = {label_names[k]: _prf(tp[k], matrix[:, k].sum(), matrix[k].sum()) for k in present}
    averages = _averages(list(per_class.values()))
    acc = accuracy(y_true, y_pred)
    text = _format_table({**per_class, **averages}, digits, accuracy_row=(acc, int(matrix.sum())))
    return text, {**per_class, "accuracy": acc, **averages}


# ----------------------------------------------------------------------------------------------
# NER, strict IOB2

def ner_spans(tags):
    """One sentence's IOB2 tags -> list of entities (type, start, end), end exclusive.

    Strict: an entity starts only at B-X and extends over the I-X (same X) right after it. An
    I-X anywhere else (after O, or after a B-/I- of another type) is invalid and, with the I-X
    tags that follow it, belongs to no entity."""
    spans = []
    start = kind = None
    for i, tag in enumerate(list(tags) + ["O"]):  # the sentinel closes an entity at the end
        if tag == "O":
            prefix, tag_type = "O", None
        elif tag[:2] in ("B-", "I-") and len(tag) > 2:
            prefix, tag_type = tag[0], tag[2:]
        else:
            raise ValueError(f"ner_spans: tag {tag!r} at position {i} is not O, B-X or I-X")
        if start is not None and not (prefix == "I" and tag_type == kind):
            spans.append((kind, start, i))
            start = None
        if prefix == "B":
            start, kind = i, tag_type
    return spans


def ner_f1(true_tag_seqs, pred_tag_seqs):
    """Gold and predicted tag sequences (lists of sentences of tags) -> dict with, for each entity
    type and for "micro avg" over all entities: precision, recall, f1-score, support (gold
    entities). An entity counts as correct only with exactly the gold type, start and end."""
    if len(true_tag_seqs) != len(pred_tag_seqs):
        raise ValueError(f"ner_f1: {len(true_tag_seqs)} gold sentences but "
                         f"{len(pred_tag_seqs)} predicted")
    gold, pred = set(), set()
    for s, (true_tags, pred_tags) in enumerate(zip(true_tag_seqs, pred_tag_seqs)):
        if len(true_tags) != len(pred_tags):
            raise ValueError(f"ner_f1: sentence {s} has {len(true_tags)} gold tags but "
                             f"{len(pred_tags)} predicted")
        gold.update((s,) + span for span in ner_spans(true_tags))
        pred.update((s,) + span for span in ner_spans(pred_tags))
    correct = gold & pred
    report = {}
    for kind in sorted({g[1] for g in gold} | {p[1] for p in pred}):
        def count(spans):
            return sum(1 for x in spans if x[1] == kind)
        report[kind] = _prf(count(correct), count(pred), count(gold))
    report["micro avg"] = _prf(len(correct), len(pred), len(gold))
    return report


def ner_report(true_tag_seqs, pred_tag_seqs, digits=4):
    """The per-type entity table (seqeval's layout) -> (text, dict from `ner_f1`)."""
    report = ner_f1(true_tag_seqs, pred_tag_seqs)
    return _format_table(report, digits), report


# ----------------------------------------------------------------------------------------------
# Similarity

def _values(name, x, y, finite=True):
    """Two (N,) arrays -> float64 copies; nan (and, with `finite`, inf) is refused, naming the
    input and the index."""
    x, y = _pair(name, x, y)
    out = []
    for label, v in (("x", x), ("y", y)):
        v = v.astype(np.float64)
        bad = np.flatnonzero(~np.isfinite(v) if finite else np.isnan(v))
        if len(bad):
            raise ValueError(f"{name}: {label} holds {v[bad[0]]} at index {bad[0]}")
        out.append(v)
    return out


def pearson(x, y):
    """Pearson correlation of two (N,) arrays, computed in float64. NaN (with a warning) when
    either is constant, where the correlation is undefined."""
    x, y = _values("pearson", x, y)
    if len(x) < 2:
        raise ValueError(f"pearson: need at least 2 values each, got {len(x)}")
    dx, dy = x - x.mean(), y - y.mean()
    denom = np.sqrt(np.dot(dx, dx) * np.dot(dy, dy))
    # tested on the values, as scipy does: the mean of [0.1] * 3 is not exactly 0.1, so a
    # constant input leaves rounding noise in dx and a nonzero denom
    if (x == x[0]).all() or (y == y[0]).all() or denom == 0.0:
        warnings.warn("pearson: an input is constant; the correlation is undefined (nan)")
        return float("nan")
    return float(np.dot(dx, dy) / denom)


def rankdata(x):
    """1-based ranks of an (N,) array, tied values sharing the mean of their ranks:
    [10, 20, 20, 30] -> [1, 2.5, 2.5, 4]."""
    x = np.asarray(x)
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    is_first = np.r_[True, sorted_x[1:] != sorted_x[:-1]]  # first member of each tie group
    group = np.cumsum(is_first) - 1
    starts = np.flatnonzero(is_first)
    ends = np.r_[starts[1:], len(x)]
    mean_rank = (starts + ends + 1) / 2.0  # mean of 1-based ranks starts+1 .. ends
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = mean_rank[group]
    return ranks


def spearman(x, y):
    """Spearman's rank correlation: Pearson's on the tie-averaged ranks. nan has no rank and is
    refused, as `pearson` refuses it (argsort would rank it last and give a number)."""
    x, y = _values("spearman", x, y, finite=False)
    return pearson(rankdata(x), rankdata(y))
