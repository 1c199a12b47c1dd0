"""The release artefacts (issue 14, item 6): ``python -m build`` makes an sdist and a wheel that
both hold the recipes (the top-level ``recipes/``, installed as ``sj_distill/recipes/``), and the wheel installed into a fresh virtual environment answers
``sj-distill --version`` and ``sj-distill list``. Nothing is downloaded: the build uses this
environment's setuptools (``--no-isolation``), and the fresh environment reuses this one's
installed dependencies through a ``.pth`` file (as ``.ci/run`` does for SpikingJelly 0.0.0.0.14).
"""
import os
import shutil
import subprocess
import sys
import configparser
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

from sj_distill import __version__, models

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {p.name for p in (ROOT / "recipes").glob("*.yaml")}
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


def test_setup_cfg_lists_every_package_on_disk():
    """``packages`` is an explicit list (``find:`` cannot map ``recipes/`` into the package):
    a new sub-package of sj_distill/ must be added to it, or the wheel would leave it out."""
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    listed = set(setup["options"]["packages"].split())
    on_disk = {".".join(p.parent.relative_to(ROOT).parts)
               for p in (ROOT / "sj_distill").rglob("__init__.py")}
    assert listed == on_disk | {"sj_distill.recipes"}
    assert setup["options"]["package_dir"].split() == ["sj_distill.recipes", "=", "recipes"]


@pytest.mark.slow
def test_sdist_and_wheel_hold_the_recipes_and_metadata(artefacts):
    sdist, wheel = artefacts
    recipes = RECIPES
    assert len(recipes) >= 30
    with zipfile.ZipFile(wheel) as whl:
        names = whl.namelist()
        metadata = whl.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        entry_points = whl.read(next(n for n in names
                                     if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert {Path(n).name for n in names if n.startswith("sj_distill/recipes/")} == recipes
    with tarfile.open(sdist) as tar:
        members = tar.getnames()
    in_sdist = {Path(n).name for n in members
                if Path(n).parent.name == "recipes" and n.endswith(".yaml")}
    assert in_sdist == recipes
    assert not any("/sj_distill/recipes/" in n for n in members), "a second recipes folder"
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
    found = _run([python, "-c", "from sj_distill import config; print(config.RECIPE_DIR)"],
                 cwd=tmp_path)
    assert Path(found.strip()) == Path(site, "sj_distill", "recipes")
    command = venv / "bin" / "sj-distill"
    assert _run([command, "--version"], cwd=tmp_path).strip() == f"sj-distill {__version__}"
    listed = _run([command, "list"], cwd=tmp_path)
    first_words = {line.split()[0] for line in listed.splitlines() if line.split()}
    assert {Path(r).stem for r in RECIPES} <= first_words
    assert set(models.list_models()) <= first_words
