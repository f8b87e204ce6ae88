"""Shared test configuration."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """The suite's tensors are tiny: one intra-op thread is faster than two on the 2-core CI machine
    (no OpenMP spin-waiting) and keeps timings stable."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
