"""Multi-head self-attention and the Transformer encoder layer, built from Linear, LayerNorm and
the fused attention op.

Shapes: x (B, T, C), H heads of size D = C / H; the additive mask is (B, 1, 1, T) with 0 for
tokens to attend to and a large negative number for padding.
"""
import numpy as np

from .. import functional as F
from .layers import Dropout, GELU, LayerNorm, Linear, check_float_input
from .module import Module


def additive_mask(attention_mask, dtype=np.float32):
    """attention_mask (B, T) of 1 (token) / 0 (padding), an array or a Tensor -> additive mask
    (B, 1, 1, T)."""
    m = np.asarray(getattr(attention_mask, "data", attention_mask))
    return ((1.0 - m[:, None, None, :].astype(dtype)) * np.finfo(dtype).min).astype(dtype)


def split_heads(x, num_heads):
    """(B, T, C) -> (B, H, T, D)."""
    B, T, C = x.shape
    return x.reshape(B, T, num_heads, C // num_heads).transpose(1, 2)


def merge_heads(x):
    """(B, H, T, D) -> (B, T, C)."""
    B, H, T, D = x.shape
    return x.transpose(1, 2).reshape(B, T, H * D)


class MultiHeadSelfAttention(Module):
    """dropout(softmax(Q K^T / sqrt(D) + mask)) V over H heads, then an output projection.

    As torch's MultiheadAttention, `dropout` drops attention probabilities (in training mode
    only); the output itself is not dropped here (the layer around it does that).
    """

    def __init__(self, hidden_size, num_heads, dropout=0.0):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"MultiHeadSelfAttention: hidden_size {hidden_size} is not divisible "
                             f"by num_heads {num_heads}")
        self.hidden_size, self.num_heads = hidden_size, num_heads
        self.query = Linear(hidden_size, hidden_size)
        self.key = Linear(hidden_size, hidden_size)
        self.value = Linear(hidden_size, hidden_size)
        self.out = Linear(hidden_size, hidden_size)
        self.dropout = float(dropout)  # a probability, as torch's MultiheadAttention.dropout

    def forward(self, x, mask=None):
        check_float_input(self, x, self.hidden_size)
        if x.ndim != 3:
            raise ValueError(f"MultiHeadSelfAttention: expected x of shape (B, T, C), got {x.shape}")
        q = split_heads(self.query(x), self.num_heads)  # (B, H, T, D)
        k = split_heads(self.key(x), self.num_heads)
        v = split_heads(self.value(x), self.num_heads)
        try:
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,  # (B, H, T, D)
                                                 dropout_p=self.dropout if self.training else 0.0)
        except ValueError as err:  # a wrong mask: say which layer received it
            raise ValueError(f"MultiHeadSelfAttention: {err}") from None
        return self.out(merge_heads(ctx))


class TransformerEncoderLayer(Module):
    """Self-attention and a GELU feed-forward block, each with a residual and a LayerNorm.

    post-LN (BERT): x = LN(x + attn(x)); x = LN(x + ffn(x)).
    pre-LN:         x = x + attn(LN(x)); x = x + ffn(LN(x)).
    `dropout` applies where BERT's does: to the attention probabilities, and to the attention
    block's and the feed-forward block's outputs before each residual add.
    """

    def __init__(self, hidden_size, num_heads, ffn_size, dropout=0.0, eps=1e-5, norm_first=False):
        super().__init__()
        self.norm_first = norm_first
        self.attn = MultiHeadSelfAttention(hidden_size, num_heads, dropout)
        self.norm1 = LayerNorm(hidden_size, eps)
        self.ffn_in = Linear(hidden_size, ffn_size)
        self.act = GELU()
        self.ffn_out = Linear(ffn_size, hidden_size)
        self.norm2 = LayerNorm(hidden_size, eps)
        self.dropout = Dropout(dropout)

    def ffn(self, x):
        return self.dropout(self.ffn_out(self.act(self.ffn_in(x))))

    def forward(self, x, mask=None):
        # checked here too: pre-LN would otherwise report the error as LayerNorm's
        check_float_input(self, x, self.attn.hidden_size)
        if self.norm_first:
            x = x + self.dropout(self.attn(self.norm1(x), mask))
            return x + self.ffn(self.norm2(x))
        x = self.norm1(x + self.dropout(self.attn(x, mask)))
        return self.norm2(x + self.ffn(x))
