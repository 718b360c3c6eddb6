"""minigrad.nn: modules, parameters and layers (PyTorch's names), plus LoRA adapters in lora.py."""
from . import init
from .attention import MultiHeadSelfAttention, TransformerEncoderLayer, additive_mask
from .layers import Dropout, Embedding, GELU, LayerNorm, Linear, ReLU, Tanh
from .module import Module, ModuleList, Parameter, Sequential
