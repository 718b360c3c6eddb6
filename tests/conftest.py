"""Shared test setup: every test starts from the same seeds, so failures reproduce."""
import numpy as np
import pytest

import minigrad as mg


@pytest.fixture(autouse=True)
def _seed():
    mg.manual_seed(0)
    np.random.seed(0)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
