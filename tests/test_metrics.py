"""tasks/metrics.py on hand-worked cases (expected values computed by hand in the comments);
against scikit-learn, seqeval and scipy only when they happen to be installed."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.metrics import (accuracy, classification_report, confusion_matrix, ner_f1,
                           ner_report, ner_spans, pearson, rankdata, spearman)

# ----------------------------------------------------------------------------------------------
# Classification

Y_TRUE, Y_PRED = [0, 1, 2, 2, 2], [0, 0, 2, 2, 1]
NAMES = ["class 0", "class 1", "class 2"]

# scikit-learn's own docstring example, character for character.
SKLEARN_TEXT = """\
              precision    recall  f1-score   support

     class 0       0.50      1.00      0.67         1
     class 1       0.00      0.00      0.00         1
     class 2       1.00      0.67      0.80         3

    accuracy                           0.60         5
   macro avg       0.50      0.56      0.49         5
weighted avg       0.70      0.60      0.61         5
"""


def test_accuracy_and_confusion_matrix():
    assert accuracy(Y_TRUE, Y_PRED) == pytest.approx(0.6)
    np.testing.assert_array_equal(confusion_matrix(Y_TRUE, Y_PRED, 3),
                                  [[1, 0, 0], [1, 0, 0], [0, 1, 2]])  # rows true, cols predicted
    assert confusion_matrix(Y_TRUE, Y_PRED, 4).shape == (4, 4)
    with pytest.raises(ValueError, match="y_pred holds class 3, outside 0..2"):
        confusion_matrix([0, 1], [0, 3], 3)
    with pytest.raises(ValueError, match=r"y_true \(2,\) and y_pred \(3,\)"):
        accuracy([0, 1], [0, 1, 1])


def test_classification_report_matches_sklearn_layout_and_numbers():
    text, report = classification_report(Y_TRUE, Y_PRED, NAMES)
    assert text == SKLEARN_TEXT
    # class 0: precision 1/2, recall 1/1; class 1: nothing right -> 0 (zero_division=0);
    # class 2: precision 2/2, recall 2/3, f1 0.8.
    assert report["class 0"] == pytest.approx({"precision": 0.5, "recall": 1.0,
                                               "f1-score": 2 / 3, "support": 1})
    assert report["class 2"]["f1-score"] == pytest.approx(0.8)
    assert report["accuracy"] == pytest.approx(0.6)
    assert report["macro avg"]["f1-score"] == pytest.approx((2 / 3 + 0 + 0.8) / 3)
    assert report["weighted avg"]["precision"] == pytest.approx((0.5 + 0 + 3 * 1.0) / 5)
    assert report["weighted avg"]["support"] == 5


def test_macro_average_leaves_out_classes_absent_from_targets_and_predictions():
    """Class "c" is in neither y_true nor y_pred: no row, not in the macro average (scikit-learn's
    default, whose labels are those found in either). It counted as 0 and gave macro F1 4/9."""
    text, report = classification_report([0, 0, 1], [0, 1, 1], ["a", "b", "c"])
    # a: p 1/1, r 1/2, f1 2/3; b: p 1/2, r 1/1, f1 2/3
    assert list(report) == ["a", "b", "accuracy", "macro avg", "weighted avg"]
    assert report["macro avg"] == pytest.approx({"precision": 0.75, "recall": 0.75,
                                                 "f1-score": 2 / 3, "support": 3})
    assert text == """\
              precision    recall  f1-score   support

           a       1.00      0.50      0.67         2
           b       0.50      1.00      0.67         1

    accuracy                           0.67         3
   macro avg       0.75      0.75      0.67         3
weighted avg       0.83      0.67      0.67         3
"""
    # a class only predicted, or only in the targets, is present: its F1 of 0 counts
    _, report = classification_report([0, 0], [0, 2], ["a", "b", "c"])
    assert list(report)[:2] == ["a", "c"]
    assert report["macro avg"]["f1-score"] == pytest.approx((2 / 3 + 0) / 2)


def test_classification_report_against_sklearn_when_installed():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    names = ["a", "bb", "ccc", "dddd"]
    ours = classification_report(y_true, y_pred, names, digits=4)
    theirs = metrics.classification_report(y_true, y_pred, target_names=names, digits=4)
    assert ours[0] == theirs


# ----------------------------------------------------------------------------------------------
# NER spans, strict IOB2

@pytest.mark.parametrize("tags, spans", [
    (["B-PER", "I-PER", "O", "B-LOC"], [("PER", 0, 2), ("LOC", 3, 4)]),
    # entities at the end of the sentence are closed
    (["O", "B-ORG", "I-ORG"], [("ORG", 1, 3)]),
    (["B-MISC"], [("MISC", 0, 1)]),
    # two adjacent entities of one type
    (["B-PER", "B-PER", "I-PER"], [("PER", 0, 1), ("PER", 1, 3)]),
    # an I- without a B- is no entity, nor are the I- tags that follow it
    (["O", "I-PER", "I-PER", "B-LOC"], [("LOC", 3, 4)]),
    (["I-ORG"], []),
    # a type change mid-entity ends the entity; the stray I-LOC tags are invalid
    (["B-PER", "I-PER", "I-LOC", "I-LOC"], [("PER", 0, 2)]),
    (["B-PER", "I-LOC", "B-LOC", "I-LOC"], [("PER", 0, 1), ("LOC", 2, 4)]),
    (["B-PER", "B-LOC", "I-LOC"], [("PER", 0, 1), ("LOC", 1, 3)]),
    ([], []),
])
def test_ner_spans_strict_iob2(tags, spans):
    assert ner_spans(tags) == spans


def test_ner_spans_rejects_non_iob2_tags():
    with pytest.raises(ValueError, match="tag 'E-PER' at position 1"):
        ner_spans(["B-PER", "E-PER"])


# Hand-worked corpus. Gold entities: s0 PER(0,2) LOC(3,4); s1 ORG(0,3); s2 PER(1,2) MISC(3,4);
# s3 PER(0,3).   Predicted: s0 both right; s1 ORG(0,2) has the wrong end; s2 the I-PER has no
# B-PER so it is no entity (a lenient scorer would count it right), MISC right; s3 the type
# change leaves PER(0,2), the wrong end, and an invalid I-LOC.
GOLD = [["B-PER", "I-PER", "O", "B-LOC"],
        ["B-ORG", "I-ORG", "I-ORG", "O"],
        ["O", "B-PER", "O", "B-MISC"],
        ["B-PER", "I-PER", "I-PER"]]
PRED = [["B-PER", "I-PER", "O", "B-LOC"],
        ["B-ORG", "I-ORG", "O", "O"],
        ["O", "I-PER", "O", "B-MISC"],
        ["B-PER", "I-PER", "I-LOC"]]


def test_ner_f1_hand_worked():
    r = ner_f1(GOLD, PRED)
    # PER: gold 3, predicted 2 (s0, s3), correct 1 -> p 1/2, r 1/3, f1 2pr/(p+r) = 0.4
    assert r["PER"] == pytest.approx({"precision": 0.5, "recall": 1 / 3, "f1-score": 0.4,
                                      "support": 3})
    assert r["LOC"] == pytest.approx({"precision": 1.0, "recall": 1.0, "f1-score": 1.0,
                                      "support": 1})
    assert r["ORG"] == pytest.approx({"precision": 0.0, "recall": 0.0, "f1-score": 0.0,
                                      "support": 1})
    assert r["MISC"]["f1-score"] == 1.0
    # micro: gold 6, predicted 5, correct 3 -> p 0.6, r 0.5, f1 0.6/1.1
    assert r["micro avg"] == pytest.approx({"precision": 0.6, "recall": 0.5,
                                            "f1-score": 0.6 / 1.1, "support": 6})
    assert list(r) == ["LOC", "MISC", "ORG", "PER", "micro avg"]


def test_ner_f1_edge_cases():
    assert ner_f1([["O", "O"]], [["O", "O"]])["micro avg"]["f1-score"] == 0.0
    only_predicted = ner_f1([["O"]], [["B-LOC"]])
    assert only_predicted["LOC"] == {"precision": 0.0, "recall": 0.0, "f1-score": 0.0,
                                     "support": 0}
    # entity spans are per sentence: the same span in another sentence does not match
    assert ner_f1([["B-PER"], ["O"]], [["O"], ["B-PER"]])["micro avg"]["f1-score"] == 0.0
    with pytest.raises(ValueError, match="sentence 0 has 2 gold tags but 1 predicted"):
        ner_f1([["O", "O"]], [["O"]])
    with pytest.raises(ValueError, match="1 gold sentences but 2 predicted"):
        ner_f1([["O"]], [["O"], ["O"]])


def test_ner_report_text():
    text, report = ner_report(GOLD, PRED, digits=2)
    assert report == ner_f1(GOLD, PRED)
    assert text == """\
           precision    recall  f1-score   support

      LOC       1.00      1.00      1.00         1
     MISC       1.00      1.00      1.00         1
      ORG       0.00      0.00      0.00         1
      PER       0.50      0.33      0.40         3

micro avg       0.60      0.50      0.55         6
"""


def test_ner_f1_against_seqeval_strict_when_installed():
    seqeval = pytest.importorskip("seqeval.metrics")
    from seqeval.scheme import IOB2
    theirs = seqeval.f1_score(GOLD, PRED, mode="strict", scheme=IOB2)
    assert ner_f1(GOLD, PRED)["micro avg"]["f1-score"] == pytest.approx(theirs)


# ----------------------------------------------------------------------------------------------
# Correlations

def test_pearson_hand_worked():
    # x - mean = (-1, 0, 1), y - mean = (-7/3, -1/3, 8/3): r = 5 / sqrt(2 * 114/9) = 15/sqrt(228)
    assert pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(15 / math.sqrt(228), rel=1e-12)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    with pytest.warns(UserWarning, match="constant"):
        assert math.isnan(pearson([1, 1, 1], [1, 2, 3]))
    # the mean of three 0.1 is 0.10000000000000002: a constant input whose deviations are not 0
    # (it gave 1.2e-16 and 0.0)
    for y in ([1, 2, 4], [1, 2, 3]):
        with pytest.warns(UserWarning, match="constant"):
            assert math.isnan(pearson([0.1] * 3, y))
        with pytest.warns(UserWarning, match="constant"):
            assert math.isnan(pearson(y, [0.1] * 3))
    # the value and where it is (the message was "need at least 2 finite values each, got 2")
    with pytest.raises(ValueError, match="pearson: x holds nan at index 1"):
        pearson([1.0, np.nan], [1.0, 2.0])
    with pytest.raises(ValueError, match="pearson: y holds inf at index 0"):
        pearson([1.0, 2.0], [np.inf, 2.0])
    with pytest.raises(ValueError, match="pearson: need at least 2 values each, got 1"):
        pearson([1.0], [2.0])


def test_rankdata_averages_ties():
    assert rankdata([10, 20, 20, 30]).tolist() == [1, 2.5, 2.5, 4]
    # sorted 1 1 2 3 4 5 5 6 9 -> ranks 1.5 1.5 3 4 5 6.5 6.5 8 9
    assert rankdata([3, 1, 4, 1, 5, 9, 2, 6, 5]).tolist() == [4, 1.5, 5, 1.5, 6.5, 9, 3, 8, 6.5]
    assert rankdata([7, 7, 7]).tolist() == [2, 2, 2]


def test_spearman_hand_worked():
    # no ties: 1 - 6 sum(d^2) / (n (n^2 - 1)) = 1 - 6 * 4 / 120 = 0.8
    assert spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.8)
    # ties: ranks (1, 2.5, 2.5, 4) vs (1, 3, 2, 4): r = 4.5 / sqrt(4.5 * 5) = sqrt(0.9)
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(math.sqrt(0.9))
    assert spearman([1, 2, 3], [1, 10, 100]) == pytest.approx(1.0)  # any increasing map
    # nan has no rank: argsort put it last and [1, nan, 3, 4] vs [1, 2, 3, 4] gave 0.4 (scipy: nan)
    with pytest.raises(ValueError, match="spearman: x holds nan at index 1"):
        spearman([1, np.nan, 3, 4], [1, 2, 3, 4])
    with pytest.raises(ValueError, match="spearman: y holds nan at index 0"):
        spearman([1, 2], [np.nan, 2])
    assert spearman([1, np.inf, 3], [1, 2, 3]) == pytest.approx(0.5)  # inf ranks last, as in scipy


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(-5, 5), min_size=2, max_size=30), st.integers(0, 2**31 - 1))
def test_spearman_properties(values, seed):
    x = np.array(values, dtype=np.float64)
    assert rankdata(x).sum() == pytest.approx(len(x) * (len(x) + 1) / 2)
    y = np.random.default_rng(seed).normal(size=len(x))
    if np.ptp(x) > 0:
        # ranks ignore any strictly increasing transform of the values
        assert spearman(np.exp(x), y) == pytest.approx(spearman(x, y))


def test_correlations_against_scipy_when_installed():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 6, 100), rng.normal(size=100)  # x has many ties
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0], rel=1e-10)
    assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0], rel=1e-10)
