"""The release artefacts (issue 14, item 6): ``python -m build`` makes an sdist and a wheel that
both hold the recipes, and the wheel installed into a fresh virtual environment answers
``sj-distill --version`` and ``sj-distill list``. Nothing is downloaded: the build uses this
environment's setuptools (``--no-isolation``), and the fresh environment reuses this one's
installed dependencies through a ``.pth`` file (as ``.ci/run`` does for SpikingJelly 0.0.0.0.14).
"""
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

from sj_distill import __version__, config

ROOT = Path(__file__).resolve().parents[1]
SKIP = shutil.ignore_patterns(".git", ".venv*", "runs", "build", "dist", "*.egg-info",
                              "__pycache__", ".pytest_cache", "*.pyc")


def _run(args, **kwargs):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    out = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env,
                         timeout=600, **kwargs)
    assert out.returncode == 0, f"{args}: {out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    return out.stdout


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory):
    """``(sdist, wheel)`` built from a copy of the source tree."""
    tmp = tmp_path_factory.mktemp("release")
    source = tmp / "source"
    shutil.copytree(ROOT, source, ignore=SKIP)
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", tmp / "dist", source])
    sdist, = (tmp / "dist").glob("sj_distill-*.tar.gz")
    wheel, = (tmp / "dist").glob("sj_distill-*.whl")
    return sdist, wheel


@pytest.mark.slow
def test_sdist_and_wheel_hold_the_recipes_and_metadata(artefacts):
    sdist, wheel = artefacts
    recipes = {f"{name}.yaml" for name in config.known_recipes()}
    with zipfile.ZipFile(wheel) as whl:
        names = whl.namelist()
        metadata = whl.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        entry_points = whl.read(next(n for n in names
                                     if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert {Path(n).name for n in names if n.startswith("sj_distill/recipes/")} == recipes
    with tarfile.open(sdist) as tar:
        members = tar.getnames()
    in_package = {Path(n).name for n in members if "/sj_distill/recipes/" in n}
    assert in_package == recipes
    for required in ("CHANGELOG.md", "CITATION.cff", "LICENSE", "README.md", "docs/recipes.md"):
        assert any(n.endswith("/" + required) for n in members), required
    assert f"Version: {__version__}" in metadata
    assert "Project-URL: Source, " in metadata and "Requires-Dist: spikingjelly" in metadata
    assert "sj-distill = sj_distill.cli:main" in entry_points


@pytest.mark.slow
def test_wheel_installed_in_a_fresh_venv_runs_the_command(artefacts, tmp_path):
    _, wheel = artefacts
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip()
    base = sysconfig.get_paths()["purelib"]
    Path(site, "zz_reuse_base_venv.pth").write_text(f"import site; site.addsitedir({base!r})\n")
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
          "--quiet", wheel])

    where = _run([python, "-c", "import sj_distill; print(sj_distill.__file__)"], cwd=tmp_path)
    assert where.strip().startswith(site), "sj_distill was not imported from the wheel"
    command = venv / "bin" / "sj-distill"
    assert _run([command, "--version"], cwd=tmp_path).strip() == f"sj-distill {__version__}"
    listed = _run([command, "list"], cwd=tmp_path)
    first_words = {line.split()[0] for line in listed.splitlines() if line.split()}
    assert set(config.known_recipes()) <= first_words
    assert "cifar_resnet18" in listed
