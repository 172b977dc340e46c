"""The `single_thread` fixture of the model tests."""

import pytest
import torch


@pytest.fixture
def single_thread():
    """Run a test on one torch thread, then restore the setting: these tensors are tiny, and two threads train far
    slower than one when the cores are shared (BENCHMARKS.md, training throughput)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
