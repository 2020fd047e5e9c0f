"""Issue 12, item 5: a corpus never wedges. Snapshots of one corpus are mutually exclusive through a
lease beside it (local disk and S3), a killed holder's lease expires, the loser of a race gets one
line, and every crash state (an untagged commit, or the reverted tag older code left behind) takes
the next snapshot. Real processes race on real Deeplake datasets; S3 is the moto server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import deeplake
import orjson
import pytest

from pipeline.corpus.lease import LeaseHeld, SnapshotLease, _store, lease_url, read_lease
from pipeline.corpus.store import list_versions, open_corpus, resolve_corpus_url, snapshot
from tests.test_cli import tm
from tests.test_corpus import make_rows
from tests.test_s3_profile import BUCKET, s3, s3_endpoint  # noqa: F401  (fixtures)

REPO = Path(__file__).resolve().parents[1]
# One racer: waits for the start signal, snapshots `n` rows, prints the version or the one-line refusal.
RACER = """
import os, sys, time
from pipeline.corpus.lease import LeaseHeld
from pipeline.corpus.store import snapshot
from tests.test_corpus import make_rows
url, n, go = sys.argv[1], int(sys.argv[2]), sys.argv[3]
while not os.path.exists(go):
    time.sleep(0.005)
try:
    print(snapshot(make_rows(range(n)), url).version)
except LeaseHeld as exc:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(3)
"""
# A holder that takes the lease with a short TTL, says so, then waits (to be killed, or for stdin).
HOLDER = """
import os, sys
from pipeline.corpus.lease import SnapshotLease
lease = SnapshotLease(sys.argv[1], "org/sft", ttl=float(sys.argv[2]))
lease.acquire()
print("held", flush=True)
if sys.argv[3] == "die":
    os._exit(9)
sys.stdin.read()
"""


def child(script: str, *args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", script, *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def expire(url: str) -> None:
    """Move a lease's expiry into the past through the lease's own store (If-Match on S3), as the end of a
    dead holder's TTL would: the takeover is then tested without a race against a short TTL on a loaded machine."""
    store = _store(url)
    data, token = store.read()
    record = {**orjson.loads(data), "expires_at": time.time() - 1}
    assert store.replace(orjson.dumps(record), token) is not None


def wait_for(condition, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def crash_before_tag(url: str) -> None:
    """What a snapshot killed between commit and tag leaves: an untagged commit at the head."""
    ds = deeplake.open(url)
    ds.delete(0)
    ds.commit("crashed before tag")


def test_racing_snapshots_after_a_crash_never_wedge(tmp_path):
    url = resolve_corpus_url("org/sft", f"file://{tmp_path}/corpora")
    snapshot(make_rows(range(5)), url)
    crash_before_tag(url)
    go = tmp_path / "go"
    racers = {n: child(RACER, url, str(n), str(go)) for n in (6, 7, 8, 9)}
    go.touch()
    results = {n: (p.wait(timeout=300), *p.communicate()) for n, p in racers.items()}
    won = {out.strip(): n for n, (rc, out, _) in results.items() if rc == 0}
    lost = [err for rc, _, err in results.values() if rc != 0]
    assert all(rc in (0, 3) for rc, _, _ in results.values()), results  # no TagExistsError traceback
    assert won and len(won) + len(lost) == 4
    for err in lost:  # one line naming the holder
        assert err.count("\n") == 1 and "is being snapshotted by" in err and "Traceback" not in err
    versions = [v["version"] for v in list_versions(url)]
    assert versions == [f"v{i}" for i in range(1, len(won) + 2)]
    for version, n in won.items():  # every tag holds exactly its writer's rows
        assert sorted(open_corpus(f"{url}@{version}").column("trajectory_id")) == [f"t{i:03d}" for i in range(n)]
    after = snapshot(make_rows(range(12)), url)
    assert after.version == f"v{len(won) + 2}" and len(open_corpus(url)) == 12
    assert read_lease(url) is None  # released


def test_a_tag_reverted_by_older_racing_code_still_takes_the_next_snapshot(tmp_path):
    """Older code let two writers revert each other: the latest tag's commit itself got reverted, and
    every later snapshot failed with 'revert_branch: target base N is not a live commit'."""
    url = resolve_corpus_url("org/sft", f"file://{tmp_path}/corpora")
    v1 = snapshot(make_rows(range(5)), url)
    ds = deeplake.open(url)
    base = ds.tags["v1"].version
    crash_before_tag(url)
    ds = deeplake.open(url)
    ds.revert_to(base)  # writer A resets the crash ...
    ds.append({c.name: [f"a{i}" if c.name == "trajectory_id" else ds[c.name][0] for i in range(2)]
               for c in ds.schema.columns})
    ds.commit("A")
    ds.tag("v2", json.dumps({**v1.lineage, "version": "v2", "row_count": 7, "content_hash": "sha256:a"}))
    ds.revert_to(base)  # ... and writer B, still seeing v1 as the latest tag, reverts A's tagged commit
    ds.delete(1)
    ds.commit("B")
    del ds
    v3 = snapshot(make_rows(range(9)), url)
    assert (v3.version, v3.mode, v3.row_count) == ("v3", "replace", 9)
    assert sorted(open_corpus(f"{url}@v3").column("trajectory_id")) == [f"t{i:03d}" for i in range(9)]
    assert sorted(open_corpus(f"{url}@v1").column("trajectory_id")) == [f"t{i:03d}" for i in range(5)]
    v4 = snapshot(make_rows(range(10)), url)
    assert (v4.version, v4.mode, v4.appended) == ("v4", "append", 1)  # clean again: a delta


def test_a_writer_killed_right_after_its_revert_leaves_a_clean_head(tmp_path):
    url = resolve_corpus_url("org/sft", f"file://{tmp_path}/corpora")
    snapshot(make_rows(range(5)), url)
    crash_before_tag(url)
    ds = deeplake.open(url)
    ds.revert_to(ds.tags["v1"].version)  # and then killed: the head is a revert marker, not the tag
    del ds
    v2 = snapshot(make_rows(range(6)), url)  # 'nothing to revert above target base', before
    assert (v2.version, v2.mode, v2.appended) == ("v2", "append", 1)


def test_a_killed_holder_blocks_only_until_its_lease_expires(tmp_path):
    url = resolve_corpus_url("org/sft", f"file://{tmp_path}/corpora")
    holder = child(HOLDER, url, "600", "die")  # a TTL no loaded machine outlives within this test
    assert holder.wait(timeout=120) == 9 and holder.stdout.read().strip() == "held"
    with pytest.raises(LeaseHeld, match=r"is being snapshotted by .*:\d+:.*lease until"):
        snapshot(make_rows(range(3)), url)
    expire(url)  # what the passing of its TTL does, without waiting on the clock
    assert snapshot(make_rows(range(3)), url).version == "v1"  # taken over
    assert read_lease(url) is None and not Path(lease_url(url).removeprefix("file://")).exists()


def test_a_live_holder_keeps_renewing_past_its_ttl(tmp_path):
    url = resolve_corpus_url("org/sft", f"file://{tmp_path}/corpora")
    # renews every 3 s; only a holder starved for 6 s would lose it, which is what the lease is for
    holder = child(HOLDER, url, "9", "wait", stdin=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == "held"
        first = read_lease(url)["expires_at"]
        wait_for(lambda: read_lease(url)["expires_at"] > first, what="the holder to renew its lease")
        wait_for(lambda: time.time() > first + 0.5, what="the first expiry to pass")
        assert read_lease(url)["expires_at"] > first  # renewed past its first expiry
        with pytest.raises(LeaseHeld):  # so still held after its first expiry
            SnapshotLease(url, "org/sft").acquire()
    finally:
        holder.communicate("", timeout=60)
    assert holder.returncode == 0


def test_the_cli_loser_gets_one_line(tmp_path):
    from pipeline.capture.workspace import Workspace
    from pipeline.demo.agents import populate

    populate(Workspace.open("ft-live", home=tmp_path), days=["2026-11-20"], per_day=6, seed=5)
    url = resolve_corpus_url("org/sft", f"file://{tmp_path}/corpora")
    with SnapshotLease(url, "org/sft"):
        out = tm("snapshot", "ft-live", "--to", "deeplake://org/sft", home=tmp_path)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "is being snapshotted by" in " ".join(out.stderr.split()) and out.stderr.startswith("error:")


@pytest.mark.usefixtures("s3")
def test_s3_lease_is_exclusive_and_expired_ones_are_taken_over(tmp_path):
    url = f"s3://{BUCKET}/corpora/org/sft"
    go = tmp_path / "go"
    racers = [child(RACER, url, str(n), str(go)) for n in (4, 5, 6)]
    go.touch()
    codes = [p.wait(timeout=300) for p in racers]
    outs = [p.communicate() for p in racers]
    assert all(c in (0, 3) for c in codes) and 0 in codes, outs
    assert all("is being snapshotted by" in err for c, (_, err) in zip(codes, outs, strict=True) if c == 3)
    assert [v["version"] for v in list_versions(url)] == [f"v{i}" for i in range(1, codes.count(0) + 1)]
    assert read_lease(url) is None  # every winner deleted its lease (If-Match on its own ETag)

    holder = child(HOLDER, url, "600", "die")
    assert holder.wait(timeout=120) == 9
    with pytest.raises(LeaseHeld):
        snapshot(make_rows(range(7)), url)
    expire(url)
    assert snapshot(make_rows(range(7)), url).created and read_lease(url) is None
