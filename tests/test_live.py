"""The live daemon, for real: `python -m assets.dev.ui` (dagster dev + mlflow ui) on free loopback ports and
a temp home (tests/live_stack.py). Through the GraphQL API: the late-outcome sensor re-joins exactly the days
whose rewards arrived late, and a late reward yields a new corpus version with no manual step. In headless
Chromium (tests/live_browser.py): the UI shows the tracemill asset graph; after one train_and_eval run handed
to the daemon, the eval asset's page shows its plots as images, and the MLflow run page shows the corpus
version as the input dataset and the online-eval rollouts as traces (issue 16). Then a stop by PID that
leaves no process behind. Deselect with `-m "not live"`."""

from __future__ import annotations

import re
from dataclasses import dataclass

import httpx
import polars as pl
import psutil
import pytest
import yaml

from pipeline.capture.workspace import Workspace
from pipeline.corpus.store import list_versions, open_corpus
from pipeline.demo.agents import populate
from pipeline.lake.backfill import plan_backfill, run_backfill
from pipeline.lake.late import trajectory_days
from tests.live_browser import chromium_page, screenshot
from tests.live_stack import FINISHED, MATERIALIZATIONS, Live, start_live, wait_for

pytestmark = pytest.mark.live

DAYS = ["2026-11-16", "2026-11-17", "2026-11-18"]
LATE_DAYS = [DAYS[0], DAYS[2]]  # late rewards arrive for these; DAYS[1] is the control
NEW_DAY = "2026-11-19"  # new trajectories for a day not ingested yet: no re-join to request
# training and evaluation as small as they go: the browser tests need an eval materialization, not a model
CONFIG = {"workspace": "demo", "partitions_start": "2026-11-01", "corpora": [
    {"name": "sft", "format": "sft", "filter": "reward > 0", "target": "deeplake://local/sft",
     "environment": "pipeline.demo.environment:make_env",
     "train": {"max_steps": 2, "batch_size": 4, "max_length": 384},
     "eval": {"max_examples": 2, "max_new_tokens": 16}, "online": {"n_tasks": 2, "max_steps": 2}}]}
DATA_PNG = "data:image/png;base64,"
PNGS_DECODED = """src => { const imgs = [...document.querySelectorAll(`[role=dialog] img[src^="${src}"]`)];
  return imgs.length >= 3 && imgs.every(i => i.complete && i.naturalWidth > 0); }"""
GRAPH_NODES = ["raw_trajectories", "outcomes", "base_model", "curated_sft", "corpus_sft", "checkpoint_sft", "eval_sft"]


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    home = tmp_path_factory.mktemp("live")
    (home / "tracemill.yaml").write_text(yaml.safe_dump(CONFIG))
    env = {"TRACEMILL_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"),
           "TRACEMILL_CONFIG": str(home / "tracemill.yaml"), "TRACEMILL_SENSOR_INTERVAL": "2"}
    mp = pytest.MonkeyPatch()
    for k, v in env.items():
        mp.setenv(k, v)  # the in-test backfill and workspace see the same home
    stats = populate(Workspace.open("demo", home=home), days=DAYS, per_day=12, seed=4)
    live = start_live(home, env, stats)
    try:
        yield live
    finally:
        live.stop()
        mp.undo()


def _rewards(ws: Workspace, day: str) -> int:
    return int(pl.read_parquet(ws.joined_path(day))["reward"].is_not_null().sum())


def test_late_outcomes_sensor_rejoins_exactly_the_touched_days(live):
    assert any("code location assets.definitions: loaded" in ln for ln in live.lines), "".join(live.lines)
    assert httpx.get(f"{live.mlflow_url}/health", timeout=5).text.strip() == "OK"
    ws = Workspace.open("demo", home=live.home)

    # 1. first tick on a home with nothing materialized: skips, and its cursor moves past every
    #    outcome landed so far (a first tick on a materialized home would re-join every day once)
    def first_tick() -> dict | None:
        ticks = live.ticks()  # newest first
        return ticks[-1] if ticks and ticks[-1]["status"] != "STARTED" else None

    first = wait_for(first_tick, 60, "the first late_outcomes tick")
    assert first["status"] == "SKIPPED", first

    # 2. the initial state, through the backfill path, into the instance the daemon watches
    result = run_backfill(plan_backfill(DAYS[0], DAYS[-1]))
    assert result.ok, "\n".join(result.output_tail)
    before = {d: _rewards(ws, d) for d in DAYS}

    # 3. agents keep working (a new day lands) and late rewards arrive for two materialized days
    populate(ws, days=[NEW_DAY], per_day=6, seed=9)
    day_of = trajectory_days(ws)
    late = [o for o in live.stats.late_outcomes if day_of.get(o.trajectory_id) in LATE_DAYS]
    assert ws.write_outcomes(late) > 0

    # 4. the sensor requests the re-joins; the daemon runs them
    def finished() -> list[dict] | None:
        live.snapshot()
        runs = live.sensor_runs()
        days = {t["value"] for r in runs for t in r["tags"] if t["key"] == "dagster/partition"}
        return runs if days >= set(LATE_DAYS) and all(r["status"] in FINISHED for r in runs) else None

    runs = wait_for(finished, 75, "the late_outcomes runs to finish")
    assert all(r["status"] == "SUCCESS" for r in runs), runs
    partitions = {t["value"] for r in runs for t in r["tags"] if t["key"] == "dagster/partition"}
    assert sorted(partitions) == LATE_DAYS  # a run per touched day; not the control day, not the new day
    requested = {key[len("late-"):][:10] for t in live.ticks() for key in t["runKeys"]}
    assert requested == set(LATE_DAYS)

    # 5. the event log and the lake agree: exactly those partitions re-joined, with the late rewards
    mats = live.gql(MATERIALIZATIONS, k={"path": ["joined_trajectories"]})["assetOrError"]["assetMaterializations"]
    run_ids = {r["runId"] for r in runs}
    assert sorted({m["partition"] for m in mats if m["runId"] in run_ids}) == LATE_DAYS
    assert len(mats) == len(DAYS) + len(runs)  # the backfill's three, then one per re-join run
    after = {d: _rewards(ws, d) for d in DAYS}
    assert all(after[d] > before[d] for d in LATE_DAYS) and after[DAYS[1]] == before[DAYS[1]]
    assert not ws.joined_path(NEW_DAY).exists()  # new days wait for the nightly ingest


def _versions() -> list[dict]:
    try:
        return list_versions(CONFIG["corpora"][0]["target"])
    except Exception:  # noqa: BLE001 - not created yet (the automation's first run may still be going)
        return []


def test_a_late_reward_becomes_a_new_corpus_version_by_itself(live):
    """Issue 12, item 1: no manual step between a late reward landing and a new corpus version. The
    re-join (late_outcomes) and the re-curation (tracemill_automation) are both the daemon's own runs,
    although 30+ day partitions since partitions_start were never materialized."""
    ws = Workspace.open("demo", home=live.home)
    # the joins above already made the automation build the model, curate and snapshot: wait for quiet
    wait_for(lambda: live.caught_up() and _versions(), 240, "the automation to snapshot the joins so far", every=2)
    auto = live.sensor_runs("tracemill_automation")
    assert auto and all(r["status"] == "SUCCESS" for r in auto), auto
    before = _versions()

    # a positive reward, late, for a trajectory of the control day that had none: a new corpus row
    day_of = trajectory_days(ws)
    late = [o for o in live.stats.late_outcomes
            if day_of.get(o.trajectory_id) == DAYS[1] and o.name == "reward" and (o.value or 0) > 0]
    assert late, "the demo world held back no positive reward for the control day"
    assert ws.write_outcomes(late[:1]) == 1  # into the landing area, as an agent's SDK writes it

    rewarded = late[0].trajectory_id
    target = CONFIG["corpora"][0]["target"]

    def version_with_the_late_row() -> list[dict] | None:
        # Joins from the steps above may still add versions: what matters is that a version the automation
        # made by itself holds the trajectory whose reward arrived late (it had none before).
        live.snapshot()
        versions = _versions()
        if len(versions) <= len(before) or not live.caught_up():
            return None
        return versions if rewarded in set(open_corpus(f"{target}@{versions[-1]['version']}").column("trajectory_id")) \
            else None

    after = wait_for(version_with_the_late_row, 240, "a new corpus version holding the late-rewarded row", every=2)
    assert rewarded not in set(open_corpus(f"{target}@{before[-1]['version']}").column("trajectory_id"))
    assert after[-1]["row_count"] > before[-1]["row_count"], (before, after)
    rejoined = {t["value"] for r in live.sensor_runs() for t in r["tags"] if t["key"] == "dagster/partition"}
    assert DAYS[1] in rejoined  # the late_outcomes sensor re-joined the control day this time
    runs = live.sensor_runs("tracemill_automation")
    assert len(runs) > len(auto) and all(r["status"] == "SUCCESS" for r in runs), runs


def test_dagster_ui_shows_the_asset_graph(live, tmp_path):
    # eval_sft's upstream lineage: every stage of the loop as single nodes (the global lineage page
    # starts with the groups collapsed)
    url = f"{live.dagster_url}/assets/eval_sft?view=lineage&lineageScope=upstream&lineageDepth=8"
    with chromium_page("dagster-asset-graph") as page:
        page.goto(url, wait_until="domcontentloaded")
        for name in GRAPH_NODES:
            page.get_by_text(name, exact=True).first.wait_for(state="visible")
        # long names are shortened in the middle on the canvas: "join…_trajectories"
        page.get_by_text(re.compile(r"^join.*_trajectories$")).first.wait_for(state="visible")
        screenshot(page, tmp_path, "dagster-asset-graph.png")


@dataclass
class Evaluated:
    """What one train_and_eval run left: its Dagster run and the MLflow run the eval logged to."""

    dagster_run_id: str
    mlflow_run_id: str
    eval_metadata: dict[str, dict]


@pytest.fixture(scope="module")
def evaluated(live: Live) -> Evaluated:
    """checkpoint_sft + eval_sft materialized by the daemon, as a person does it (UI → Jobs → train_and_eval
    → Materialize all). After the tests above the corpus exists; alone, this makes it first."""
    if not _versions():
        if not Workspace.open("demo", home=live.home).joined_path(DAYS[0]).exists():
            assert run_backfill(plan_backfill(DAYS[0], DAYS[-1])).ok
        wait_for(lambda: live.caught_up() and _versions(), 300, "the automation's first corpus snapshot", every=2)
    run_id = live.launch("train_and_eval")
    status = live.wait_run(run_id, 600)
    assert status == "SUCCESS", f"train_and_eval {status}: see {live.home}/logs/dagster.log"
    ckpt_run, ckpt = live.latest_metadata("checkpoint_sft")
    eval_run, meta = live.latest_metadata("eval_sft")
    assert ckpt_run == eval_run == run_id, (ckpt_run, eval_run, run_id)
    return Evaluated(run_id, ckpt["mlflow_run_id"]["text"], meta)


def test_dagster_ui_shows_the_eval_plots_as_images(live, evaluated, tmp_path):
    """Issue 16, done when: the eval asset's page shows its plots as pictures in the metadata, not file paths."""
    assert evaluated.eval_metadata["report"]["__typename"] == "MarkdownMetadataEntry"
    assert f"]({DATA_PNG}" in evaluated.eval_metadata["report"]["mdStr"]
    with chromium_page("dagster-eval-plots") as page:
        page.goto(f"{live.dagster_url}/assets/eval_sft", wait_until="domcontentloaded")  # latest materialization
        page.get_by_role("row").filter(has=page.get_by_text("verdict", exact=True)).wait_for(state="visible")
        report = page.get_by_role("row").filter(has=page.get_by_text("report", exact=True))
        report.get_by_text("[Show Markdown]").click()
        images = page.get_by_role("dialog").locator(f"img[src^='{DATA_PNG}']")
        images.first.wait_for(state="visible")
        page.wait_for_function(PNGS_DECODED, arg=DATA_PNG)  # every plot decoded: no broken-image icon
        sizes = images.evaluate_all("imgs => imgs.map(i => [i.naturalWidth, i.naturalHeight])")
        images.first.scroll_into_view_if_needed()
        screenshot(page, tmp_path, "dagster-eval-plots.png")
    assert len(sizes) >= 3 and all(w > 100 and h > 100 for w, h in sizes), sizes


def test_mlflow_ui_shows_the_run_input_dataset_and_a_trace(live, evaluated, tmp_path):
    """Issue 16, done when: the run the eval logged to shows the corpus version as its input dataset, and
    a run of the eval stage has MLflow traces of the online-eval rollouts in its Traces tab."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=live.mlflow_url)  # through the UI's own server (REST)
    run = client.get_run(evaluated.mlflow_run_id)
    datasets = [d.dataset.name for d in run.inputs.dataset_inputs]
    version = evaluated.eval_metadata["corpus_version"]["text"]  # the version the eval read, e.g. …/sft@v2
    assert re.fullmatch(r"deeplake://local/sft@v\d+", version) and datasets == [version], (version, datasets)
    experiments = [e.experiment_id for e in client.search_experiments()]
    traces = client.search_traces(locations=experiments, include_spans=False, max_results=500)
    by_run: dict[str, list[str]] = {}
    for t in traces:
        if source := t.info.trace_metadata.get("mlflow.sourceRun"):
            by_run.setdefault(source, []).append(t.info.trace_id)
    with chromium_page("mlflow-run") as page:
        page.goto(f"{live.mlflow_url}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}",
                  wait_until="domcontentloaded")
        page.get_by_text(datasets[0]).first.wait_for(state="visible")  # "deeplake://local/sft@v1 (<digest>)"
        page.get_by_text("Datasets", exact=True).first.wait_for(state="visible")
        screenshot(page, tmp_path, "mlflow-run-dataset.png")
        if not by_run:
            pytest.fail("no MLflow trace was logged for online eval (issue 16 item 2)")
        traced = run.info.run_id if run.info.run_id in by_run else next(iter(by_run))
        experiment = client.get_run(traced).info.experiment_id
        page.goto(f"{live.mlflow_url}/#/experiments/{experiment}/runs/{traced}", wait_until="domcontentloaded")
        page.get_by_role("tab", name="Traces", exact=True).click()
        rows = page.get_by_role("row").filter(has_text=re.compile(r"tr-[0-9a-f]{32}"))
        rows.first.wait_for(state="visible")
        shown = set(re.findall(r"tr-[0-9a-f]{32}", " ".join(rows.all_inner_texts())))
        screenshot(page, tmp_path, "mlflow-run-traces.png")
    assert shown and shown <= set(by_run[traced]), (shown, by_run[traced])


def test_stopping_the_launcher_leaves_no_process(live):
    live.snapshot()
    assert len(live.seen) >= 4, live.seen  # dagster dev, webserver, daemon, code server, mlflow …
    seconds = live.stop()
    assert live.proc.returncode == 0 and any("stopped" in ln for ln in live.lines), "".join(live.lines)
    left = []
    for pid, created in live.seen.items():
        try:
            p = psutil.Process(pid)
            if p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{pid} {' '.join(p.cmdline())[:120]}")
        except psutil.NoSuchProcess:
            continue
    assert not left, left
    assert seconds < 30
