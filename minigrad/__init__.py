"""minigrad: a small deep-learning framework in NumPy and Numba that people read to learn.

The stack, bottom to top: kernels -> autodiff (tensor, function) -> ops -> nn -> optim -> io;
`models/` and `tasks/` sit above the package.
"""
from . import kernels
from .function import enable_grad, is_grad_enabled, no_grad
from .tensor import Tensor, get_rng, manual_seed, ones, randn, tensor, zeros
from . import functional
from .functional import cat, matmul, maximum, minimum, stack, where
from . import testing, viz
from .anomaly import detect_anomaly
from .profiler import profile

__version__ = "0.1.0"
