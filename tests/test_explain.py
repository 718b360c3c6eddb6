"""tasks.explain: FLOPs of a tiny BERT against a hand count for full, LoRA and head-only, the
graph's count against what the profiler sees the backward do, and the command end to end."""
import json

import numpy as np
import pytest

import minigrad
from minigrad import io
from minigrad.nn import lora
from models.bert import BertConfig
from models.bert_tasks import BertForSequenceClassification
from tasks import explain
from tasks.train import prepare_model

L, C, H, FF, K, R = 2, 8, 2, 16, 3, 2
B, T = 2, 5
N = B * T


def tiny(method):
    minigrad.manual_seed(0)
    config = BertConfig(vocab_size=1100, hidden_size=C, num_hidden_layers=L, num_attention_heads=H,
                        intermediate_size=FF, max_position_embeddings=16,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = BertForSequenceClassification(config, num_labels=K)
    return prepare_model(model, method, lora.LoraConfig(r=R, lora_alpha=4, target_modules="query,value"))


def totals(info):
    parts = explain.by_part(info["flops"])
    return {p: (row["forward"], row["dx"], row["dw"]) for p, row in parts.items()}


# the hand count: a multiply-add is 2 FLOPs; a (rows x in) @ (in x out) product costs 2*rows*in*out
LIN_CC, LIN_CF = 2 * N * C * C, 2 * N * C * FF
ATT = 2 * 2 * B * T * T * C                       # Q K^T and P V over all heads (H * D = C)
LAYER_FWD = 4 * LIN_CC + 2 * LIN_CF + ATT         # q, k, v, attention out; FFN in and out
# the classifier's last layer computes the [CLS] row alone (B rows, not N), but k and v of all
LIN1_CC, LIN1_CF, ATT1 = 2 * B * C * C, 2 * B * C * FF, 2 * 2 * B * 1 * T * C
LAST_FWD = 2 * LIN_CC + 2 * LIN1_CC + 2 * LIN1_CF + ATT1
ENC_FWD = (L - 1) * LAYER_FWD + LAST_FWD
ENC_ATT = (L - 1) * ATT + ATT1
POOL, CLS = 2 * B * C * C, 2 * B * C * K
AB, AB1 = 2 * N * C * R, 2 * B * C * R            # one LoRA factor, A (x -> r) or B (r -> out)


def test_full_backward_is_twice_forward():
    t = totals(explain.analyse(tiny("full"), B, T))
    # each product's backward is two products; attention's four are all dX (it has no weight)
    assert t["encoder"] == (ENC_FWD, ENC_FWD + ENC_ATT, ENC_FWD - ENC_ATT)
    assert t["head"] == (POOL + CLS, POOL + CLS, POOL + CLS)
    assert "lora" not in t


def test_lora_counts_by_hand():
    t = totals(explain.analyse(tiny("lora"), B, T))
    # layer 0 reads the frozen embeddings: q, k, v need no dX, and its attention needs no dK
    # (the key is frozen there), so three of its four backward products run; from layer 1 on,
    # every dX runs (in the last layer, [CLS]'s rows and the keys and values of all)
    enc_dx = (3 * ATT // 2 + LIN_CC + 2 * LIN_CF) + (LIN1_CC + 2 * LIN_CC + 2 * ATT1 + LIN1_CC + 2 * LIN1_CF)
    assert t["encoder"] == (ENC_FWD, enc_dx, 0)  # frozen: not one dW product
    lora_fwd = 2 * (2 * AB) + 2 * AB1 + 2 * AB    # query and value adapters; layer 1's query on [CLS]
    lora_dx = 2 * AB + 2 * AB1 + 2 * AB           # layer 0: B factors only; layer 1: A and B
    assert t["lora"] == (lora_fwd, lora_dx, lora_fwd)
    assert t["head"] == (POOL + CLS, POOL + CLS, CLS)  # pooler frozen: dX only


def test_head_only_has_no_encoder_backward():
    info = explain.analyse(tiny("head"), B, T)
    t = totals(info)
    assert t["encoder"] == (ENC_FWD, 0, 0)
    assert t["head"] == (POOL + CLS, 0, CLS)
    assert explain.by_part(info["flops"])["encoder"]["skipped"] == 2 * ENC_FWD
    assert info["trainable"] == C * K + K
    assert sum(info["saved"].values()) < 4096  # only the classifier's input and the loss


@pytest.mark.parametrize("method", ["full", "lora", "head"])
def test_graph_count_matches_profiled_backward(method):
    """What explain reads from needs_input_grad is what the backward then does."""
    model = tiny(method)
    info = explain.analyse(model, B, T)
    ids, mask, types, labels = explain.make_batch(model.config, B, T, K)
    loss = model(ids, mask, types, labels=labels).loss
    with minigrad.profile() as prof:
        loss.backward()
    predicted = sum(f["dx"] + f["dw"] for f in info["flops"].values())
    assert prof.total_flops("backward") == predicted


def test_saved_bytes_count_each_buffer_once():
    info = explain.analyse(tiny("full"), B, T)
    saved = info["saved"]
    assert saved["ScaledDotProductAttention"] >= L * 4 * B * H * T * T  # probs, float32
    # the three Linears q, k, v save one shared x (N, C): counted once per layer, not three times
    assert saved["Linear"] < L * 6 * N * C * 4 + 2 * B * C * 4 + 1024
    # nodes keep no input data of their own: beyond what ops saved, the graph holds only leaf
    # inputs, here the additive attention mask (B, 1, 1, T) float32
    assert sum(saved.values()) <= info["held"] <= sum(saved.values()) + B * T * 4


def test_command_end_to_end(tmp_path, capsys):
    model = tiny("full")
    io.save_file({k: np.ascontiguousarray(v) for k, v in model.bert.state_dict().items()},
                 str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(model.config.to_dict()))
    assert explain.main(["--model", str(tmp_path), "--method", "lora", "--r", str(R),
                         "--batch-size", str(B), "--max-length", str(T), "--num-labels", str(K),
                         "--measure", "--steps", "1"]) == 0
    out = capsys.readouterr().out
    assert "trainable" in out and "AdamW state" in out
    assert "| encoder |" in out and "predicted" in out
    assert "measured" in out and "peak memory" in out


@pytest.mark.parametrize("option", ["--batch-size", "--max-length", "--num-labels", "--steps"])
def test_command_refuses_zero_sizes(option, capsys):
    """--batch-size 0 ended in a ZeroDivisionError, --max-length 0 in NumPy's "zero-size array to
    reduction operation", after loading the model; now the parser names the option."""
    with pytest.raises(SystemExit):
        explain.main([option, "0"])
    assert f"{option}: 0 is not a positive integer" in capsys.readouterr().err
