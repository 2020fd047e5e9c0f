"""Issue 12, item 9: names. A name is valid as a whole string (`fullmatch`), never up to a trailing
newline (`$` matches before one); `import --create` with a bad name is one error line; an existing
`auth/` folder is tightened to 0700 when tokens are written into it."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import httpx
import pytest

from pipeline.capture.workspace import Workspace, check_name
from pipeline.corpus.store import parse_ref, resolve_corpus_url
from pipeline.server.auth import create_token, tokens_path
from tests.capture_helpers import ROOT, ThreadServer

BAD = ["wa\n", "wa\r\n", "\nwa", "wa\n\n"]


@pytest.mark.parametrize("name", BAD)
def test_a_name_with_a_trailing_newline_is_not_a_name(tmp_path, name):
    with pytest.raises(ValueError, match="invalid"):
        check_name(name)
    with pytest.raises(ValueError):
        Workspace.create(name, tmp_path)
    assert check_name("wa") == "wa"


def test_corpus_names_and_versions_are_whole_matches():
    with pytest.raises(ValueError):
        parse_ref("org/sft@v3\n")
    with pytest.raises(ValueError):
        resolve_corpus_url("deeplake://org/sft\n")
    assert parse_ref("org/sft@v3") == ("org/sft", "v3")


def test_the_server_refuses_a_newline_name_everywhere(tmp_path):
    Workspace.create("wa", tmp_path)
    admin = create_token(tmp_path, "*", "admin")
    srv = ThreadServer(tmp_path).start()
    try:
        with httpx.Client(base_url=srv.url, headers={"authorization": f"Bearer {admin}"}, timeout=10) as c:
            r = c.post("/v1/workspaces", json={"name": "wa\n"})
            assert r.status_code == 400, r.text
            assert c.post("/v1/workspaces/wa%0A/trajectories", json=[]).status_code == 400
            assert c.get("/v1/workspaces").json()["workspaces"] == ["wa"]
    finally:
        srv.stop()
    with pytest.raises(ValueError):
        create_token(tmp_path, "wa\n", "writer")


def tm(home, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRACEMILL_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=120)


@pytest.mark.parametrize("args", [
    ["import", "{tmp}", "--workspace", "../x", "--create"],
    ["workspace", "create", "wa\n"],
])
def test_bad_names_on_the_command_line_are_one_error_line(tmp_path, args):
    r = tm(tmp_path, *(a.replace("{tmp}", str(tmp_path)) for a in args))
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr
    assert "invalid" in r.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path.parent / "x").exists()


def test_an_existing_world_writable_auth_folder_is_tightened(tmp_path):
    auth_dir = tokens_path(tmp_path).parent
    auth_dir.mkdir(parents=True)
    os.chmod(auth_dir, 0o777)
    create_token(tmp_path, "*", "admin")
    assert stat.S_IMODE(auth_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(tokens_path(tmp_path).stat().st_mode) == 0o600
