"""Shared test setup: offline hub, one thread, seeded RNGs, SpikingJelly version."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

# One intra-op thread unless OMP_NUM_THREADS says otherwise: the tests use small tensors, and on
# a loaded 2-core machine two OpenMP threads made a 0.05 s test take 2.5 s (measured).
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 1))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def pytest_report_header(config):
    from sj_distill import sj

    return f"spikingjelly {sj.SJ_VERSION} (legacy API: {sj.LEGACY}), torch {torch.__version__}"
