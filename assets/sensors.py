"""Sensors: late outcomes re-join exactly the day partitions they touch; declarative automation
carries the change downstream to the corpora."""

import os

import dagster as dg
import orjson

from assets.resources import TracemillResource
from pipeline.lake.late import scan_new_outcomes


def sensor_interval() -> int:
    """TRACEMILL_SENSOR_INTERVAL: seconds between evaluations of both sensors (default 30; tests use 2,
    and the daemon loops every ~5 s). Both, because a late outcome reaches a corpus only after a tick of
    each: the re-join, then the re-curation."""
    return int(os.environ.get("TRACEMILL_SENSOR_INTERVAL", "30"))


def build_late_outcome_sensor(rejoin_job) -> dg.SensorDefinition:
    interval = sensor_interval()

    @dg.sensor(name="late_outcomes", job=rejoin_job, minimum_interval_seconds=interval,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Outcomes landed for already-materialized days → re-join exactly those partitions.")
    def late_outcomes(context: dg.SensorEvaluationContext, tracemill: TracemillResource):
        cursor = orjson.loads(context.cursor) if context.cursor else {}
        scan = scan_new_outcomes(tracemill.open_workspace(), cursor)
        stamp = sum(scan.cursor.values())
        for day in scan.days:
            yield dg.RunRequest(partition_key=day, run_key=f"late-{day}-{stamp}",
                                tags={"tracemill/reason": "late_outcomes",
                                      "tracemill/new_outcomes": str(scan.new_outcomes)})
        if not scan.days:
            yield dg.SkipReason(f"{scan.new_outcomes} new outcomes, none for a materialized day")
        context.update_cursor(orjson.dumps(scan.cursor).decode())

    return late_outcomes


def automation_sensor() -> dg.AutomationConditionSensorDefinition:
    # The built-in automation sensor starts STOPPED; declaring it RUNNING makes corpora follow joins.
    return dg.AutomationConditionSensorDefinition("tracemill_automation", target=dg.AssetSelection.all(),
                                                  default_status=dg.DefaultSensorStatus.RUNNING,
                                                  minimum_interval_seconds=sensor_interval())
