"""Fine-tuning jobs and their command line: `python -m tasks.<name>`.

minigrad is imported before anything here loads NumPy, so that its OpenBLAS thread settings
(minigrad/kernels/threads.py) are in the environment when NumPy loads OpenBLAS.
"""
import minigrad  # noqa: F401
