"""BERT with a task head, as transformers structures them (`bert`, `dropout`, `classifier`), so
that checkpoints and PEFT adapters map one to one.

    BertForSequenceClassification: pooler_output (B, C) -> dropout -> classifier -> logits (B, K)
        (K = 1 means regression with a mean-squared-error loss, as in transformers)
    BertForTokenClassification:    last_hidden_state (B, T, C) -> dropout -> classifier -> (B, T, K)
"""
import os

import numpy as np

import minigrad.functional as F
from minigrad.nn import Dropout, Linear, Module, init
from models.bert import BertConfig, BertModel, ModelOutput, default_model_dir, load_pretrained


class _BertWithHead(Module):
    def __init__(self, config, num_labels, add_pooling_layer):
        super().__init__()
        self.config, self.num_labels = config, num_labels
        self.bert = BertModel(config, add_pooling_layer=add_pooling_layer)
        p = config.extra.get("classifier_dropout")
        self.dropout = Dropout(config.hidden_dropout_prob if p is None else p)
        self.classifier = Linear(config.hidden_size, num_labels)
        init.normal_(self.classifier.weight, 0.0, config.extra.get("initializer_range", 0.02))
        init.zeros_(self.classifier.bias)  # transformers' init for a new head

    @classmethod
    def from_pretrained(cls, folder=None, num_labels=None, report=False, **config_overrides):
        """Body from `folder`'s model.safetensors; the head too when the file holds `classifier.*`
        (a fine-tuned or merged export), else a new head of `num_labels` outputs."""
        folder = folder or default_model_dir()
        config = BertConfig.from_json_file(os.path.join(folder, "config.json"), **config_overrides)
        num_labels = num_labels or config.extra.get("num_labels") or len(config.extra.get("id2label", {})) or 2
        model = cls(config, num_labels)
        _, rest = load_pretrained(model.bert, folder, report=report)
        head = {k: v for k, v in rest.items() if k.startswith("classifier.")}
        if head:
            rows = np.shape(head.get("classifier.weight", head.get("classifier.bias")))[0]
            if rows != num_labels:
                raise ValueError(f"from_pretrained({folder}): the checkpoint's classifier has {rows} "
                                 f"outputs but num_labels is {num_labels}")
            model.classifier.load_state_dict({k[len("classifier."):]: v for k, v in head.items()})
        return model

    def export_config(self, label_names=None):
        """config.json for a transformers-loadable export of this model."""
        labels = label_names or [f"LABEL_{i}" for i in range(self.num_labels)]
        return {**self.config.to_dict(), "architectures": [type(self).__name__],
                "num_labels": self.num_labels,
                "id2label": {str(i): n for i, n in enumerate(labels)},
                "label2id": {n: i for i, n in enumerate(labels)}}


class BertForSequenceClassification(_BertWithHead):
    def __init__(self, config, num_labels=2):
        super().__init__(config, num_labels, add_pooling_layer=True)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None):
        # the pooler reads the [CLS] row only: the last layer computes that row alone
        out = self.bert(input_ids, attention_mask, token_type_ids, cls_only=True)
        return self.head(out.pooler_output, labels)  # pooler_output (B, C)

    def head(self, pooled, labels=None):
        """The part after the encoder, on (B, C) features (also used on cached features)."""
        logits = self.classifier(self.dropout(pooled))  # (B, K)
        loss = None
        if labels is not None:
            if self.num_labels == 1:
                loss = F.mse_loss(logits.reshape(-1), np.asarray(labels, logits.dtype).reshape(-1))
            else:
                loss = F.cross_entropy(logits, np.asarray(labels, np.int64))
        return ModelOutput(logits=logits, loss=loss)


class BertForTokenClassification(_BertWithHead):
    def __init__(self, config, num_labels=9):
        super().__init__(config, num_labels, add_pooling_layer=False)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None):
        h = self.bert(input_ids, attention_mask, token_type_ids).last_hidden_state  # (B, T, C)
        return self.head(h, labels)

    def head(self, h, labels=None):
        logits = self.classifier(self.dropout(h))  # (B, T, K)
        loss = None
        if labels is not None:  # -100 marks sub-words and padding that carry no label
            loss = F.cross_entropy(logits.reshape(-1, self.num_labels),
                                   np.asarray(labels, np.int64).reshape(-1), ignore_index=-100)
        return ModelOutput(logits=logits, loss=loss)

