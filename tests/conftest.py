"""Shared test setup: offline hub, small thread count, seeded RNGs, SpikingJelly version."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def pytest_report_header(config):
    from sj_distill import sj

    return f"spikingjelly {sj.SJ_VERSION} (legacy API: {sj.LEGACY}), torch {torch.__version__}"
