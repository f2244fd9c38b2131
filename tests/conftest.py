import os

import pytest
import torch
from hypothesis import settings

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

# The fuzz tests (test_fuzz.py): a deadline per example and a fixed budget of examples. Under CI
# (CI set) the examples are derandomised, so that a run is repeatable; elsewhere each run draws
# new ones and keeps failures in Hypothesis's example database.
settings.register_profile("ci", derandomize=True, database=None, deadline=5000, max_examples=150,
                          print_blob=True)
settings.register_profile("dev", deadline=5000, max_examples=150)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))


@pytest.fixture
def mnist_root():
    """The folder holding mnist/ (from TRADEOFF_DATA); tests needing real MNIST skip without it."""
    root = os.environ.get("TRADEOFF_DATA")
    if not root or not os.path.isdir(os.path.join(root, "mnist")):
        pytest.skip("real MNIST not available: set TRADEOFF_DATA to the folder holding mnist/")
    return root


@pytest.fixture
def one_thread():
    """One torch thread for the test (many small runs are faster so on a shared machine, and some
    results are compared across processes that use one thread)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
