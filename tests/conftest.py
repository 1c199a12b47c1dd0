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


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False,
                     help="also run tests marked slow (e.g. the full SpikingJelly zoo matrix)")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long test, skipped unless --runslow is given")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
