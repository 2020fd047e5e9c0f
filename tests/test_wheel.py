"""A wheel install works without the source checkout: build the wheel, install it into a fresh venv,
and run `tracemill --help` and `dagster definitions validate -m assets.definitions` from a folder
outside the source tree. Offline: `--no-index --no-deps`; the dependencies come from this test's
own environment through a `.pth` line (a plain path, so that environment's editable install of the
checkout is not picked up), and the venv's own site-packages, holding the wheel, comes first."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["pyproject.toml", "README.md", "pipeline", "assets"]  # what the wheel is built from


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_wheel_installs_and_runs_outside_the_checkout(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "TRACEMILL_CONFIG", "VIRTUAL_ENV"}}
    env.update(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", TRACEMILL_HOME=str(tmp_path / "home"),
               DAGSTER_HOME=str(tmp_path / "home" / "dagster"), DAGSTER_DISABLE_TELEMETRY="1")

    # a copy of the sources: setuptools writes build/ and *.egg-info next to what it builds
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(ROOT / name, src / name)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", str(tmp_path / "dist"), str(src)], tmp_path, env)
    wheel = next((tmp_path / "dist").glob("tracemill-*.whl"))

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path, env)
    python = venv / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     tmp_path, env).stdout.strip())
    (site / "shared-venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)], tmp_path, env)

    outside = tmp_path / "elsewhere"  # no pipeline/, assets/ or tracemill.yaml here
    outside.mkdir()
    where = _run([str(python), "-c", "import pipeline, assets; print(pipeline.__file__, assets.__file__)"],
                 outside, env).stdout
    assert str(ROOT) not in where and all(p.startswith(str(site)) for p in where.split()), where
    assert "backfill" in _run([str(venv / "bin" / "tracemill"), "--help"], outside, env).stdout
    _run([str(python), "-m", "assets.instance"], outside, env)  # `make setup`: the shipped instance settings
    assert "max_concurrent_runs" in (tmp_path / "home" / "dagster" / "dagster.yaml").read_text()
    _run([str(python), "-m", "dagster", "definitions", "validate", "-m", "assets.definitions"], outside, env)
