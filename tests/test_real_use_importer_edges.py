"""Issue 12 item 10: importer edges, with real files through the real CLI.

A truncated or absurdly nested JSON document says it is not valid JSON and where; a FIFO or a device
is skipped with its reason and never opened (opening a FIFO blocks for ever); a sub-folder that cannot
be read is listed in the summary instead of silently vanishing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOOD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def imp(*paths, home, prefix: tuple[str, ...] = ()) -> dict:
    """`tracemill import … --json` in a subprocess; the timeout turns a hang into a failure."""
    env = {"TRACEMILL_HOME": str(home), "PATH": "/usr/bin:/bin", "PYTHONPATH": REPO, "HOME": str(home)}
    proc = subprocess.run([*prefix, sys.executable, "-m", "pipeline.cli", "import", *map(str, paths), "-w", "imp",
                           "--create", "--json"], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    return json.loads(proc.stdout)


def skipped(report: dict) -> dict[str, str]:
    return {os.path.basename(s["path"]): s["reason"] for s in report["skipped"]}


def test_truncated_and_deeply_nested_json_say_where_they_break(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "cut.json").write_text(json.dumps(GOOD)[:-9])
    (data / "pretty.json").write_text(json.dumps([GOOD, GOOD], indent=2)[:-30])
    (data / "deep.json").write_text("[" * 100_000)
    (data / "ok.jsonl").write_text("{broken\n" + json.dumps(GOOD) + "\n")  # JSON Lines: one bad line only
    report = imp(data, home=tmp_path / "home")
    why = skipped(report)
    assert set(why) == {"cut.json", "pretty.json", "deep.json"}, why
    for reason in why.values():
        assert "not valid JSON" in reason and "line " in reason and "column " in reason, reason
    assert "truncated" in why["cut.json"] and "line 1" in why["cut.json"]
    assert "line 1" not in why["pretty.json"]  # the break is further down a pretty-printed document
    assert "nested" in why["deep.json"]
    assert report["trajectories"] == 1 and [e["index"] for e in report["errors"]] == [0]


def test_fifo_and_device_are_skipped_without_opening_them(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "good.json").write_text(json.dumps(GOOD))
    os.mkfifo(folder / "pipe.jsonl")  # nobody writes: opening it would block the import for ever
    os.mkfifo(tmp_path / "given.jsonl")
    report = imp(folder, tmp_path / "given.jsonl", "/dev/null", home=tmp_path / "home")
    why = skipped(report)
    assert "FIFO" in why["pipe.jsonl"] and "FIFO" in why["given.jsonl"], why
    assert "character device" in why["null"], why
    assert report["trajectories"] == 1


def _long_path_folder(root) -> str:
    """A real sub-folder whose path exceeds PATH_MAX, so listing it fails with an OSError even for root."""
    fd = os.open(root, os.O_RDONLY)
    try:
        for _ in range(20):  # 20 x 250 characters > 4096
            os.mkdir("d" * 250, dir_fd=fd)
            nxt = os.open("d" * 250, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nxt
    finally:
        os.close(fd)
    return "d" * 250


def test_unreadable_sub_folder_is_listed(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "good.json").write_text(json.dumps(GOOD))
    _long_path_folder(folder)
    report = imp(folder, home=tmp_path / "home")
    assert report["trajectories"] == 1
    reasons = [s["reason"] for s in report["skipped"]]
    assert any("cannot read folder" in r and "too long" in r for r in reasons), report["skipped"]


def test_permission_denied_sub_folder_is_listed(tmp_path):
    """chmod 000 does not stop root: as root the CLI runs with CAP_DAC_OVERRIDE/READ_SEARCH dropped."""
    prefix: tuple[str, ...] = ()
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if not setpriv:
            pytest.skip("running as root without util-linux setpriv: chmod 000 cannot make a folder unreadable")
        prefix = (setpriv, "--inh-caps=-dac_override,-dac_read_search",
                  "--bounding-set=-dac_override,-dac_read_search", "--")
    folder = tmp_path / "data"
    (folder / "secret").mkdir(parents=True)
    (folder / "secret" / "x.json").write_text(json.dumps(GOOD))
    (folder / "good.json").write_text(json.dumps(GOOD))
    (folder / "secret").chmod(0)
    try:
        report = imp(folder, home=tmp_path / "home", prefix=prefix)
    finally:
        (folder / "secret").chmod(0o755)
    assert report["trajectories"] == 1
    assert {os.path.basename(s["path"]): s["reason"] for s in report["skipped"]}["secret"].startswith(
        "cannot read folder"), report["skipped"]
