"""benchmarks/: what the tables report is measured as they say (each worker's own peak memory),
and nothing here runs a benchmark."""
import subprocess
import sys

import numpy as np


def test_worker_peak_rss_is_its_own_not_the_drivers():
    """finetune runs each configuration in a child process for its own peak RSS; getrusage's
    ru_maxrss carries the parent's peak across exec, so every child reported at least the
    driver's memory."""
    ballast = np.ones(400 * 2**20, np.uint8)  # 400 MB resident in this (the parent) process
    code = "from benchmarks.finetune import _peak_rss_mb; print(_peak_rss_mb())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert ballast.sum() == ballast.size
    assert float(out.stdout) < 200  # a bare interpreter is ~10-60 MB
