"""Issue 12 item 4: a user's mistake is ONE line on stderr naming the fix, never a traceback; `--debug`
shows the traceback; the CLI keeps the Hugging Face hub offline unless asked.

Every case runs the real command line in a subprocess against a demo-like home (populated workspace,
one real snapshot `org/sft@v1`), at rich's default 80 columns so a wrapped message counts as two lines.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from pipeline.cli.errors import hub_environment

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tm(*args: str, home, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The CLI as a user runs it: no HF_HUB_OFFLINE in the environment (the CLI must set it itself)."""
    env = {"TRACEMILL_HOME": str(home), "PATH": "/usr/bin:/bin", "PYTHONPATH": REPO,
           "TOKENIZERS_PARALLELISM": "false", "HOME": os.environ.get("HOME", "/root"), **(extra or {})}
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=600)


def one_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 1, stderr exactly one `error: …` line holding every needle, no traceback."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory):
    """A demo-like home: one populated day and one real snapshot, `org/sft@v1`."""
    from pipeline.capture.workspace import Workspace
    from pipeline.demo.agents import populate

    home = tmp_path_factory.mktemp("errhome")
    populate(Workspace.open("ft-live", home=home), days=["2026-11-20"], per_day=12, seed=5)
    made = tm("snapshot", "ft-live", "--filter", "reward>0", "--to", "deeplake://org/sft", home=home)
    assert made.returncode == 0, made.stderr
    return home


def test_misspelled_filter_column_is_one_line_and_debug_shows_the_traceback(demo_home):
    proc = tm("snapshot", "ft-live", "--filter", "rewrd>0", "--to", "deeplake://org/sft", home=demo_home)
    # one error line, then the filter with a caret under the culprit (issue 12 item 11), no traceback
    line, shown, caret = proc.stderr.strip("\n").splitlines()
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and line.startswith("error: --filter")
    assert "rewrd" in line and "reward" in line  # the fix: the columns there are
    assert (shown, caret) == ("  rewrd>0", "  ^")
    debug = tm("--debug", "snapshot", "ft-live", "--filter", "rewrd>0", "--to", "deeplake://org/sft", home=demo_home)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "FilterError" in debug.stderr


def test_missing_corpus_or_version_is_one_line(demo_home):
    one_line(tm("corpus", "show", "org/sft@v9", home=demo_home), "v9", "available: v1")
    one_line(tm("corpus", "show", "org/sft@vx", home=demo_home), "@v<N>")
    one_line(tm("corpus", "diff", "org/sft@v1", "org/sft@v7", home=demo_home), "v7")
    one_line(tm("corpus", "list", "org/nope", home=demo_home), "snapshot it first")  # was wrapped at 80 columns
    one_line(tm("train", "sft", "--corpus", "org/sft@v9", "--no-track", home=demo_home), "v9")


def test_bad_snapshot_targets_and_options_are_one_line(demo_home):
    one_line(tm("snapshot", "ft-live", "--to", "deeplake://sft3", home=demo_home), "--to", "deeplake://<org>/<name>")
    one_line(tm("corpus", "show", "deeplake://sft3", home=demo_home), "deeplake://<org>/<name>")
    one_line(tm("snapshot", "ft-live", "--to", "deeplake://org/sft", "--wait", "foo", home=demo_home),
             "--wait", "coverage=0.95")
    one_line(tm("import", REPO + "/README.md", "--workspace", "../x", "--create", home=demo_home), "../x")


def test_unreachable_object_store_is_one_line(demo_home):
    """`--to s3://…` whose bucket does not exist, on a real S3 protocol server (moto) on 127.0.0.1."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        aws = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ALLOW_HTTP": "true", "AWS_ACCESS_KEY_ID": "test",
               "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1"}
        one_line(tm("snapshot", "ft-live", "--to", "s3://no-such-bucket/sft", home=demo_home, extra=aws),
                 "no-such-bucket", "credentials")
    finally:
        server.stop()


def test_unknown_base_model_is_one_line_and_never_reaches_the_network(demo_home):
    line = one_line(tm("train", "sft", "--corpus", "org/sft@v1", "--base-model", "does/not-exist", "--max-steps", "1",
                       "--no-track", home=demo_home), "--base-model", "does/not-exist", "--online")
    assert "offline" in line
    one_line(tm("snapshot", "ft-live", "--to", "deeplake://org/sft2", "--base-model", "does/not-exist",
                home=demo_home), "--base-model", "does/not-exist")
    one_line(tm("train", "sft", "--corpus", "org/sft@v1", "--base-model", "/no/such/model", "--no-track",
                home=demo_home), "--base-model", "/no/such/model")


def test_unexpected_faults_are_one_line_that_points_at_debug(tmp_path):
    """A fault of tracemill itself (not the user's) also stays on one line, and says how to see more."""
    code = "from pipeline.cli.main import app, main\n" \
           "@app.command('boom')\ndef boom():\n    raise RuntimeError('internal state broke')\nmain()\n"
    env = {"TRACEMILL_HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "PYTHONPATH": REPO}
    proc = subprocess.run([sys.executable, "-c", code, "boom"], capture_output=True, text=True, env=env, cwd=REPO)
    one_line(proc, "RuntimeError", "internal state broke", "--debug")
    debug = subprocess.run([sys.executable, "-c", code, "--debug", "boom"], capture_output=True, text=True, env=env,
                           cwd=REPO)
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_hub_offline_unless_asked():
    assert hub_environment(online=False, environ={}) == {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    assert hub_environment(online=True, environ={}) == {}
    assert hub_environment(online=False, environ={"HF_HUB_OFFLINE": "0"}) == {}  # set explicitly: respected
