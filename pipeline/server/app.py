"""The capture server: agents in any language POST trajectories, outcomes and preferences over HTTP.

Every write endpoint validates per item (a batch of 100 with 3 bad items lands 97 and names the 3 with
their field paths) and answers only after the accepted records are fsynced: requests share fsyncs
through `GroupCommitter`. Trajectories take the msgspec fast path (`pipeline.capture.fast_validate`) and fall
back to the pydantic schema, which stays the authority. Agents that cannot hold a whole run in
memory stream it: `POST .../trajectories/{id}/messages` appends durably to an *open* trajectory
(`<workspace>/open/<hash>.ndjson`), and `POST .../close` folds it into one landed trajectory.
OTLP/HTTP (`POST /v1/traces`) lands span fragments per trace, assembled into trajectories at ingest
(`pipeline.lake.otlp_assembly`): exporters send one trace in several requests.
Auth is per-workspace bearer tokens (`pipeline.server.auth`): 401 for a missing/unknown token, 403 for a
token of another workspace or a too-small role.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool

from pipeline.capture import fast_validate as fastschema
from pipeline.capture.workspace import Workspace, home_dir
from pipeline.json_rules import JsonValueError, check
from pipeline.logs import configure, event, get_logger
from pipeline.schema import Message
from pipeline.server import otlp_http as otlp_capture
from pipeline.server.auth import revoke_workspace
from pipeline.server.request_io import (
    describe,
    fail,
    fold_open_trajectory,
    land_groups,
    loads,
    mark_closed,
    open_paths,
    prune_tombstones,
    raw_items,
    rejections,
    respond,
    result,
)
from pipeline.server.state import ServerState

log = get_logger("server")
DEFAULT_PORT = 8470
DEFAULT_MAX_BODY = 16 * 1024 * 1024
DEFAULT_BODY_TIMEOUT_S = 30.0


def create_app(home: str | os.PathLike | None = None, *, max_body_bytes: int = DEFAULT_MAX_BODY,
               require_auth: bool = True, body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S) -> FastAPI:
    """The capture app for one tracemill home. One process per home: it owns its landing segments."""
    st = ServerState(home_dir(home), max_body_bytes, require_auth, body_timeout_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        st.committer.start()
        pruned = prune_tombstones(st.home)
        if pruned:
            event(log, "pruned close tombstones", count=pruned)
        yield
        st.committer.stop()

    app = FastAPI(title="tracemill capture", version="1", lifespan=lifespan)
    app.state.tracemill = st

    @app.get("/healthz")
    async def healthz() -> Response:
        stats = st.committer.stats
        return respond({"status": "ok", "commits": stats.commits, "records": stats.records,
                        "fsyncs": stats.fsyncs, "failures": stats.failures})

    async def _post_batch(name: str, request: Request, key: str, kind: str) -> Response:
        """Every batch endpoint: per item, one validator (`fast_validate.validate_record`)."""
        st.authorize(request, name, "writer")
        st.workspace(name)
        ok, bad = fastschema.validate_many(raw_items(await st.body(request), key), name if kind == "trajectory" else None, kind)
        await _land(name, land_groups(kind, ok))
        return _accepted(name, kind, len(ok), rejections(bad))

    @app.post("/v1/workspaces/{name}/trajectories")
    async def post_trajectories(name: str, request: Request) -> Response:
        return await _post_batch(name, request, "trajectories", "trajectory")

    def _accepted(name: str, kind: str, accepted: int, errors: list[dict[str, Any]]) -> Response:
        """The per-item result, logged with the ids of what was refused (what a sender asks about)."""
        event(log, "batch landed", logging.WARNING if errors else logging.DEBUG, workspace=name, kind=kind,
              accepted=accepted, rejected=len(errors),
              rejected_items=[{"id": e.get("id"), "error": e.get("error")} for e in errors[:20]] or None)
        return respond(result(accepted, errors))

    async def _land(name: str, groups: dict[tuple[str, str], list[bytes]]) -> None:
        try:
            await st.committer.land(name, groups)
        except LookupError as exc:
            raise fail(404, str(exc)) from None
        except OSError as exc:
            raise fail(503, f"landing write failed, nothing from this request was acknowledged: {exc}") from None

    async def _durably(work: Any) -> Any:
        """Await a write of the committer; a full or failing disk is a 503 with the reason (retryable)."""
        try:
            return await work
        except OSError as exc:
            raise fail(503, f"write failed, nothing from this request was acknowledged: {exc}") from None

    @app.post("/v1/workspaces/{name}/outcomes")
    async def post_outcomes(name: str, request: Request) -> Response:
        return await _post_batch(name, request, "outcomes", "outcome")

    @app.post("/v1/workspaces/{name}/preferences")
    async def post_preferences(name: str, request: Request) -> Response:
        return await _post_batch(name, request, "preferences", "preference")

    @app.post("/v1/workspaces/{name}/trajectories/{tid}/messages")
    async def append_messages(name: str, tid: str, request: Request) -> Response:
        st.authorize(request, name, "writer")
        ws = st.workspace(name)
        if len(tid) > 256:
            raise fail(400, "trajectory id longer than 256 characters")
        obj = loads(await st.body(request), "messages")
        header, offset, messages = None, None, obj
        if isinstance(obj, dict) and ("messages" in obj or "trajectory" in obj):
            header, offset, messages = obj.get("trajectory"), obj.get("offset"), obj.get("messages", [])
        elif isinstance(obj, dict):
            messages = [obj]
        if not isinstance(messages, list):
            raise fail(400, '"messages" must be a JSON array')
        if offset is not None and (not isinstance(offset, int) or isinstance(offset, bool) or offset < 0):
            raise fail(400, '"offset" must be a non-negative integer (the index of the first message)')
        if header is not None and (not isinstance(header, dict) or header.get("trajectory_id", tid) != tid):
            raise fail(400, '"trajectory" must be an object of trajectory fields for this id')
        try:
            check(header)  # it is folded in at close: refuse now what the close would refuse then
        except JsonValueError as exc:
            raise fail(400, f"trajectory.{exc}") from None
        dumped, errors = [], []
        for i, m in enumerate(messages):
            try:
                dumped.append(Message.model_validate(m).model_dump(mode="json", exclude_none=True))
            except Exception as exc:  # noqa: BLE001
                errors.append({"index": i, "id": None, "error": describe(exc)})
        if errors:  # all or nothing: a trajectory with a hole in the middle is worse than a retry
            return respond({**result(0, errors), "detail": "no message was appended"}, 422)
        open_path, closed_path = open_paths(ws, tid)
        line = orjson.dumps({"t": time.time_ns(), "trajectory_id": tid, "offset": offset,
                             "messages": dumped, "header": header}) + b"\n"
        async with st.lock((name, tid)):
            if closed_path.exists():
                raise fail(409, f"trajectory {tid!r} is already closed")
            await _durably(st.committer.submit([("file", open_path, line)]))
        return respond({"trajectory_id": tid, "appended": len(dumped)})

    @app.post("/v1/workspaces/{name}/trajectories/{tid}/close")
    async def close_trajectory(name: str, tid: str, request: Request) -> Response:
        st.authorize(request, name, "writer")
        ws = st.workspace(name)
        raw = await st.body(request)
        header = loads(raw, "trajectory fields") if raw.strip() else {}
        if not isinstance(header, dict):
            raise fail(400, "the close body is an optional object of trajectory fields (agent, ended_at, …)")
        open_path, closed_path = open_paths(ws, tid)
        async with st.lock((name, tid)):
            if not open_path.exists():
                if closed_path.exists():
                    return respond({"trajectory_id": tid, "closed": True, "already_closed": True})
                raise fail(404, f"no open trajectory {tid!r}: append messages first")
            res = fastschema.validate_obj(fold_open_trajectory(tid, open_path, header), 0, name)
            if isinstance(res, fastschema.Rejected):
                raise fail(422, f"cannot close {tid!r}: {res.error}")
            await _land(name, {("trajectory", res.day): [res.json]})
            await _durably(st.committer.call(lambda: mark_closed(open_path, closed_path)))
        return respond({"trajectory_id": tid, "closed": True, "day": res.day})

    @app.get("/v1/workspaces/{name}")
    async def show_workspace(name: str, request: Request) -> Response:
        st.authorize(request, name, "reader")
        ws = st.workspace(name)
        from pipeline.lake.ingest import workspace_counts  # polars: imported on first use only

        counts = await run_in_threadpool(workspace_counts, ws)
        counts["open_trajectories"] = len(list(ws.open_dir.glob("*.ndjson")))
        return respond({"name": name, "info": ws.info(), "counts": counts})

    @app.post("/v1/workspaces")
    async def create_workspace(request: Request) -> Response:
        st.authorize(request, None, "admin")
        spec = loads(await st.body(request), "workspace fields")
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise fail(400, 'send {"name": "ft-live", "description": "…"}')
        try:
            ws = Workspace.create(spec["name"], st.home, description=str(spec.get("description") or ""))
        except FileExistsError:
            raise fail(409, f"workspace {spec['name']!r} already exists") from None
        except ValueError as exc:
            raise fail(400, str(exc)) from None
        return respond({"name": ws.name, "info": ws.info()}, 201)

    @app.get("/v1/workspaces")
    async def list_workspaces(request: Request) -> Response:
        st.authorize(request, None, "admin")
        return respond({"workspaces": Workspace.list(st.home)})

    @app.delete("/v1/workspaces/{name}")
    async def delete_workspace(name: str, request: Request) -> Response:
        st.authorize(request, None, "admin")
        ws = st.workspace(name)

        def drop() -> None:
            st.committer.drop_workspace(name)
            ws.delete()

        await st.committer.call(drop)
        revoked = await run_in_threadpool(revoke_workspace, st.home, name)
        return respond({"deleted": name, "revoked_tokens": revoked})

    @app.post("/v1/traces")
    async def otlp_traces(request: Request) -> Response:
        ctype = request.headers.get("content-type", "application/json").lower()
        if "json" not in ctype and "protobuf" not in ctype:
            raise fail(415, "send application/json or application/x-protobuf (OTLP/HTTP)")
        name = request.headers.get("x-tracemill-workspace")
        if st.require_auth and name is None:
            info = st.authorize(request, None, "reader")
            name = info.workspace if info and info.role != "admin" else None
        if not name:
            raise fail(400, "name the workspace with the X-Tracemill-Workspace header")
        st.authorize(request, name, "writer")
        st.workspace(name)
        try:
            obj = otlp_capture.decode_export(await st.body(request), ctype)
            groups, problems = otlp_capture.land_groups(obj, name)  # spans per trace: assembled at ingest
        except otlp_capture.OtlpDecodeError as exc:
            raise fail(400, str(exc)) from None
        except otlp_capture.MapperMissing as exc:
            raise fail(501, str(exc)) from None
        await _land(name, groups)
        body, media = otlp_capture.encode_response(0, "; ".join(problems)[:2000], ctype)
        return Response(body, media_type=media)

    return app


def serve(host: str = "127.0.0.1", port: int = DEFAULT_PORT, *, home: str | os.PathLike | None = None,
          max_body_bytes: int = DEFAULT_MAX_BODY, require_auth: bool = True, log_level: str = "warning",
          body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S) -> None:
    """Run the capture server in this process (uvicorn, one worker: the process owns its segments)."""
    import uvicorn

    configure()  # structured events on stderr: TRACEMILL_LOG_FORMAT=json|text, TRACEMILL_LOG_LEVEL
    app = create_app(home, max_body_bytes=max_body_bytes, require_auth=require_auth, body_timeout_s=body_timeout_s)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
