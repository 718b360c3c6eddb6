"""A small generic encoder-only Transformer, built only from `minigrad.nn`.

This is the model of the teaching job `tasks/toy.py`: it reads the way the architecture is
drawn, bottom to top, and shows that the layers below it (nn, ops, kernels) are enough to learn
from scratch. BERT (`models/bert.py`) is the same idea with a checkpoint's names and sizes.

    ids (B, T) int --tok_emb + pos_emb--> (B, T, C) --N x encoder layer--> (B, T, C)
        --[final LayerNorm if pre-LN]--> --head--> logits (B, T, K)

Shapes: B batch, T tokens, C width (hidden_size), K outputs per token (num_labels).
"""
from dataclasses import dataclass

import numpy as np

from minigrad import Tensor, nn
from minigrad.nn import init


@dataclass
class TransformerConfig:
    vocab_size: int
    num_labels: int            # K, the size of each token's output
    max_len: int               # the longest sequence the position table covers
    hidden_size: int = 64      # C
    num_layers: int = 2
    num_heads: int = 4         # H; head size D = C / H
    ffn_size: int = 256        # F
    dropout: float = 0.0
    norm_first: bool = True    # pre-LN trains stably from scratch without careful warmup
    eps: float = 1e-5
    initializer_range: float = 0.02


class Transformer(nn.Module):
    """ids (B, T) int, attention_mask (B, T) of 1/0 or None -> logits (B, T, K) float32."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        c = config
        self.tok_emb = nn.Embedding(c.vocab_size, c.hidden_size)
        self.pos_emb = nn.Embedding(c.max_len, c.hidden_size)
        self.dropout = nn.Dropout(c.dropout)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(c.hidden_size, c.num_heads, c.ffn_size, c.dropout, c.eps,
                                       norm_first=c.norm_first)
            for _ in range(c.num_layers))
        # Pre-LN leaves the residual stream un-normalised after the last layer; post-LN layers
        # already end in a LayerNorm, so a second one would add nothing.
        self.norm = nn.LayerNorm(c.hidden_size, c.eps) if c.norm_first else None
        self.head = nn.Linear(c.hidden_size, c.num_labels)
        self._init_weights()

    def _init_weights(self):
        # BERT's scheme (its initializer_range): weights N(0, 0.02), biases 0. The head's small
        # weights make the first predictions near uniform, so training starts at a loss of
        # about ln(K) instead of confidently wrong.
        for name, p in self.named_parameters():
            if "norm" in name:
                continue  # LayerNorm keeps weight 1, bias 0
            if name.endswith("bias"):
                init.zeros_(p)
            else:
                init.normal_(p, 0.0, self.config.initializer_range)

    def forward(self, ids, attention_mask=None):
        ids = np.asarray(ids.data if isinstance(ids, Tensor) else ids)
        if ids.ndim != 2:
            raise ValueError(f"Transformer: expected ids of shape (B, T), got {ids.shape}")
        T = ids.shape[1]
        if T == 0:  # the softmax over no keys is undefined
            raise ValueError(f"Transformer: ids {ids.shape} has no tokens")
        if T > self.config.max_len:
            raise ValueError(f"Transformer: sequence length {T} exceeds max_len "
                             f"{self.config.max_len}")
        if attention_mask is not None and np.shape(attention_mask) != ids.shape:
            raise ValueError(f"Transformer: attention_mask has shape {np.shape(attention_mask)}, "
                             f"ids has {ids.shape}")
        mask = None if attention_mask is None else nn.additive_mask(attention_mask)  # (B, 1, 1, T)
        x = self.tok_emb(ids) + self.pos_emb(np.arange(T))  # (B, T, C) + (T, C) -> (B, T, C)
        x = self.dropout(x)
        for layer in self.layers:
            x = layer(x, mask)  # (B, T, C)
        if self.norm is not None:
            x = self.norm(x)
        return self.head(x)  # (B, T, K)
