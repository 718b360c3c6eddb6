"""Soak (issue 8), short: `python -m tasks.soak` in a fresh process, 10 warm-up and 60 measured
LoRA steps on the real MiniLM, RSS growth under 20% (`make soak` runs 2,000 steps under 5%).

A fresh process, because pytest's own memory (other tests' models and caches) would blur the
reading; one thread, because the steps are small and a loaded machine makes threads wait.
"""
import mmap
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from tasks import soak

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_rss_reading_sees_an_allocation():
    before = soak.rss_mb()
    # a fresh anonymous mapping, so the pages are new whatever memory the allocator keeps for
    # reuse (minigrad.kernels.memory keeps freed blocks), touched one byte per page
    block = mmap.mmap(-1, 64 * 2**20)
    np.frombuffer(block, np.uint8)[::4096] = 1
    assert before > 10 and soak.rss_mb() - before > 48
    block.close()


def test_short_soak_keeps_memory_flat():
    env = {**os.environ, "MINIGRAD_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "tasks.soak", "--steps", "60", "--warmup", "10", "--examples", "128",
         "--max-growth", "20", "--report-every", "20"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    m = re.search(r"RSS start ([\d.]+) MB, end ([\d.]+) MB, growth ([-+][\d.]+)%", proc.stdout)
    assert m, proc.stdout
    start, end, growth = map(float, m.groups())
    assert start > 100  # MiniLM's 90 MB of weights are resident: the reading is real
    assert growth < 20.0 and end > 0
    losses = [float(x) for x in re.findall(r"loss (\d+\.\d+)", proc.stdout)]
    assert len(losses) == 3 and all(np.isfinite(losses))


@pytest.mark.parametrize("option", ["--steps", "--report-every", "--batch-size", "--examples"])
def test_counts_must_be_positive(option, capsys):
    """--steps 0 measured nothing and passed; --report-every 0 divided by zero after the warm-up."""
    with pytest.raises(SystemExit):
        soak.build_parser().parse_args([option, "0"])
    assert "not a positive integer" in capsys.readouterr().err
