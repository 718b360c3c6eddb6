"""Adapters cross between minigrad and PEFT on the real MiniLM: what we save, PEFT loads onto
transformers' BERT with the same logits; what PEFT saves, we load; a merged export loads in
transformers. Optional: skipped unless torch, transformers and peft are installed."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

import minigrad as mg  # noqa: E402
from minigrad.nn import lora  # noqa: E402
from models.bert import default_model_dir  # noqa: E402
from models.bert_tasks import BertForSequenceClassification  # noqa: E402
from models.tokenizer import Tokenizer  # noqa: E402

# Six float32 layers computed by two libraries (different summation orders, our fused kernels)
# agree to ~1e-6 on MiniLM's logits; 1e-4 is the bound the issue sets.
ATOL = 1e-4
TEXTS = ["a gripping, beautifully acted film .",
         "dull , overlong and almost entirely without charm , wit or surprise ; i left early .",
         "meh"]


@pytest.fixture(scope="module")
def folder():
    return str(default_model_dir())


@pytest.fixture(scope="module")
def encoded(folder):
    """The three texts padded to the longest, as numpy (ours) and torch (theirs)."""
    enc = Tokenizer.from_folder(folder).encode(TEXTS, max_length=64)
    assert enc["attention_mask"].sum(1).min() < enc["attention_mask"].shape[1]  # padding is present
    return {k: np.asarray(enc[k], np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}


def our_logits(model, enc):
    model.eval()
    with mg.no_grad():
        return model(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]).logits.data.copy()


def their_logits(model, enc):
    model.eval()
    with torch.no_grad():
        return model(**{k: torch.from_numpy(v) for k, v in enc.items()}).logits.numpy()


def hf_model(folder, num_labels=2):
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification.from_pretrained(folder, num_labels=num_labels)


def test_peft_loads_our_adapter(tmp_path, folder, encoded):
    model = BertForSequenceClassification.from_pretrained(folder, num_labels=2)
    lora.apply_lora(model, lora.LoraConfig(r=8, lora_alpha=16, target_modules=("query", "value")))
    rng = np.random.default_rng(0)
    for name, p in model.named_parameters():
        if p.requires_grad:  # A, B and the head: random, so every one of them matters
            p.data[...] = 0.05 * rng.standard_normal(p.shape)
    ours = our_logits(model, encoded)
    lora.save_adapter(model, tmp_path, base_model_name_or_path=folder)

    theirs_model = peft.PeftModel.from_pretrained(hf_model(folder), str(tmp_path))
    theirs = their_logits(theirs_model, encoded)
    assert np.abs(ours - their_logits(hf_model(folder), encoded)).max() > 1e-2  # the adapter matters
    np.testing.assert_allclose(theirs, ours, atol=ATOL, rtol=0)


def test_we_load_peft_adapter(tmp_path, folder, encoded):
    config = peft.LoraConfig(task_type="SEQ_CLS", r=8, lora_alpha=16, target_modules=["query", "value"])
    theirs_model = peft.get_peft_model(hf_model(folder), config)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in theirs_model.named_parameters():
            if p.requires_grad:  # lora_A, lora_B and the classifier copy PEFT trains
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    theirs = their_logits(theirs_model, encoded)
    theirs_model.save_pretrained(str(tmp_path))

    model = BertForSequenceClassification.from_pretrained(folder, num_labels=2)
    lora.load_adapter(model, tmp_path)
    assert model.peft_config.r == 8 and model.peft_config.scaling == 2.0
    assert model.classifier.weight.requires_grad  # PEFT's SEQ_CLS head trains on with us too
    np.testing.assert_allclose(our_logits(model, encoded), theirs, atol=ATOL, rtol=0)


def test_transformers_loads_our_merged_export(tmp_path, folder, encoded):
    model = BertForSequenceClassification.from_pretrained(folder, num_labels=2)
    lora.apply_lora(model, lora.LoraConfig(r=8, target_modules="query,value,intermediate.dense"))
    rng = np.random.default_rng(1)
    for name, p in model.named_parameters():
        if p.requires_grad:
            p.data[...] = 0.05 * rng.standard_normal(p.shape)
    ours = our_logits(model, encoded)
    lora.export_merged(model, tmp_path, model.export_config(["negative", "positive"]))

    reloaded = transformers.BertForSequenceClassification.from_pretrained(str(tmp_path))
    assert reloaded.config.id2label == {0: "negative", 1: "positive"}
    np.testing.assert_allclose(their_logits(reloaded, encoded), ours, atol=ATOL, rtol=0)
