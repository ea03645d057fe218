import pytest


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Audits measure timing: one intra-op thread, as the device worker runs (docs/frame-loop.md)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
