"""The Transformer and BERT built from minigrad's modules.

minigrad is imported before anything here loads NumPy, so that its OpenBLAS thread settings
(minigrad/kernels/threads.py) are in the environment when NumPy loads OpenBLAS.
"""
import minigrad  # noqa: F401
