"""The Ray Serve application: `GET /v1/health`, `GET /v1/profile`, `POST /v1/events` (serving contract).

One deployment, `Profiles`, whose replicas each hold a `LiveState` (the current release and the live
events applied to it). Requests run on the replica's event loop and only read; validating events and
applying micro-batches (linking, rescoring) run on one applier thread, so a lookup never queues behind a
rescoring. Three background loops:
  * release watcher: every `poll_release_seconds` reads ROOT/online/current.json; on a new release it loads
    it fully (in a thread, while requests keep using the old one), replays the event log onto it, then
    swaps one reference: a request sees one release from start to end, and no request fails for a switch;
  * event tail: every `poll_events_seconds` applies the other replicas' new micro-batches (`jobs.serving.live`),
    listing the last two minute folders (once a minute, every folder since yesterday);
  * key ring: reloads the API key hashes every few seconds.
Live events are written through a group commit (`commit_window_ms`), applied here, then acknowledged.

Serve's HTTP ingress on `serving.host:serving.port` (HAProxy in the throughput-optimised mode, Serve's
Python proxy otherwise: `serve_environment`) hands each request to a replica; the handler parses it with
Starlette and answers JSON. Serve's access logs carry method, path, status and latency,
never the query string (identifiers) or headers (keys); our own logs carry counts only.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import math
import os
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psutil
import pyarrow as pa

from jobs.config import JobConfig, ServingConfig
from jobs.errors import UserError
from jobs.run.layout import OnlineLayout
from jobs.serving.identifiers import KEY_TYPES, persona_token
from jobs.serving.live import EventLog, LiveState, RequestError, event_time_iso, intake, live_ts_range
from jobs.serving.online import INTENT_KINDS, shown_intents
from jobs.serving.partner_keys import KeyRing
from jobs.serving.stores import open_release
from jobs.storage import read_json, read_json_or_none

log = logging.getLogger(__name__)

KEYRING_RELOAD_SECONDS = 2.0
RELEASE_GRACE_SECONDS = 30.0
FULL_SCAN_SECONDS = 60.0


class GroupCommit:
    """Rows of requests arriving within `window_s` share one durable micro-batch."""

    def __init__(self, event_log: EventLog, window_s: float, on_written) -> None:
        self.event_log, self.window_s, self.on_written = event_log, window_s, on_written
        self.pending: list[tuple[pa.Table, asyncio.Future]] = []
        self.flusher: asyncio.Task | None = None

    async def commit(self, table: pa.Table) -> None:
        future = asyncio.get_running_loop().create_future()
        self.pending.append((table, future))
        if self.flusher is None or self.flusher.done():
            self.flusher = asyncio.create_task(self._flush())
        await future

    async def _flush(self) -> None:
        await asyncio.sleep(self.window_s)
        while self.pending:
            batch, self.pending = self.pending, []
            table = pa.concat_tables([t for t, _ in batch])
            try:
                path = await asyncio.to_thread(self.event_log.write, table)
            except Exception as exc:  # noqa: BLE001 - every waiting request must hear about it: none is acknowledged
                log.error(
                    "live events: a micro-batch of %d rows could not be written (%s)",
                    table.num_rows,
                    type(exc).__name__,
                )
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            try:
                await self.on_written(path, table)
            except Exception:  # noqa: BLE001 - stored is what the caller is promised; applying is logged
                log.error("live events: applying %s failed:\n%s", path, traceback.format_exc(limit=8))
            for _, future in batch:
                if not future.done():
                    future.set_result(None)


def _json(status: int, payload: dict[str, Any]):
    from starlette.responses import Response

    return Response(
        json.dumps(payload, separators=(",", ":"), allow_nan=False), status_code=status, media_type="application/json"
    )


def _error(status: int, code: str, detail: str):
    return _json(status, {"error": code, "detail": detail})


def _number(value: float, digits: int) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value), digits)


class ProfileService:
    """Everything a replica does, without Serve (Serve wraps it; the bench calls it in-process)."""

    def __init__(self, config: JobConfig, root: str) -> None:
        self.config = config
        self.storage = config.storage
        self.online = OnlineLayout(root)
        self.keyring = KeyRing(self.online, self.storage)
        self.event_log = EventLog(self.online, self.storage)
        self.committer = GroupCommit(self.event_log, config.serving.commit_window_ms / 1000.0, self._written)
        self.state: LiveState | None = None
        self.secret = b""
        self.tasks: list[asyncio.Task] = []
        self.applier = ThreadPoolExecutor(max_workers=1, thread_name_prefix="live-apply")
        self.full_scan_at = time.monotonic()
        self.failed_release: str | None = None

    async def on_applier(self, fn, *args):
        """Run `fn(*args)` on the applier thread (one at a time: the live state has one writer)."""
        return await asyncio.get_running_loop().run_in_executor(self.applier, fn, *args)

    # --- life cycle -------------------------------------------------------------------------------
    async def start(self, background: bool = True) -> None:
        await asyncio.to_thread(self.keyring.reload)
        secret = await asyncio.to_thread(read_json_or_none, self.online.secret, self.storage)
        current = await asyncio.to_thread(read_json_or_none, self.online.current, self.storage)
        if not secret or not current:
            raise RuntimeError(f"nothing is published under {self.online.base}: run `segments publish` first")
        self.secret = bytes.fromhex(secret["secret"])
        self.state = await self._load(current["release_id"])
        if background:
            serving = self.config.serving
            self.tasks = [
                asyncio.create_task(self._loop(self._check_release, serving.poll_release_seconds)),
                asyncio.create_task(self._loop(self.catch_up, serving.poll_events_seconds)),
                asyncio.create_task(self._loop(self._reload_keys, KEYRING_RELOAD_SECONDS)),
            ]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        self.applier.shutdown(wait=False)
        if self.state is not None:
            await self.state.release.close()

    async def _loop(self, step, seconds: float) -> None:
        while True:
            try:
                await step()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a failed poll is retried at the next tick; serving goes on
                log.exception("background step %s failed; retrying", step.__name__)
            await asyncio.sleep(seconds)

    async def _load(self, release_id: str) -> LiveState:
        started = time.perf_counter()
        meta = await asyncio.to_thread(read_json, self.online.release_meta(release_id), self.storage)

        def build() -> LiveState:
            return LiveState(open_release(meta, self.online, self.config), self.online, self.config)

        state = await asyncio.to_thread(build)
        as_of = dt.date.fromisoformat(meta["as_of"]) - dt.timedelta(days=1)  # events are foldered by arrival day

        def replay() -> int:  # the new state is not visible yet: its own thread may write it
            files = self.event_log.since(as_of)
            for path in sorted(files):
                state.apply_file(path)
            return len(files)

        replayed = await asyncio.to_thread(replay)
        log.info(
            "release %s loaded in %.1fs: %d personas, %d live micro-batches replayed",
            release_id,
            time.perf_counter() - started,
            meta["personas"],
            replayed,
        )
        return state

    async def _check_release(self) -> None:
        current = await asyncio.to_thread(read_json_or_none, self.online.current, self.storage)
        if (
            not current
            or self.state is None
            or current["release_id"] in (self.state.meta["release_id"], self.failed_release)
        ):
            return
        try:
            fresh = await self._load(current["release_id"])
        except Exception:  # noqa: BLE001 - keep serving the current release; retried when current.json moves
            self.failed_release = current["release_id"]
            log.error(
                "release %s could not be loaded; still serving %s:\n%s",
                current["release_id"],
                self.state.meta["release_id"],
                traceback.format_exc(limit=8),
            )
            return
        old, self.state = self.state, fresh
        await self.catch_up()
        self.tasks.append(asyncio.create_task(self._close_later(old)))

    async def _close_later(self, old: LiveState) -> None:
        """Requests that began on the old release may still be reading it: close it once they are done."""
        await asyncio.sleep(RELEASE_GRACE_SECONDS)
        await old.release.close()

    async def catch_up(self) -> None:
        """Apply micro-batches of the last two minutes that this replica has not applied yet; once a minute,
        of the whole log since yesterday (a replica stalled for longer than the window still converges)."""
        state = self.state
        if time.monotonic() - self.full_scan_at > FULL_SCAN_SECONDS:
            self.full_scan_at = time.monotonic()
            yesterday = dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1)
            files = await asyncio.to_thread(self.event_log.since, yesterday)
        else:
            files = await asyncio.to_thread(self.event_log.recent)
        fresh = [path for path in sorted(files) if path not in state.files]
        if fresh:
            await self.on_applier(lambda: [state.apply_file(path) for path in fresh])

    async def _reload_keys(self) -> None:
        await asyncio.to_thread(self.keyring.reload)

    async def _written(self, path: str, table: pa.Table) -> None:
        await self.on_applier(self.state.apply_file, path, table)

    # --- requests ---------------------------------------------------------------------------------
    def partner_of(self, authorization: str | None) -> str:
        if not authorization or not authorization.startswith("Bearer "):
            raise RequestError(401, "unauthorized", "send `Authorization: Bearer KEY` with a partner API key")
        partner = self.keyring.partner_of(authorization[len("Bearer ") :].strip())
        if partner is None:
            raise RequestError(401, "unauthorized", "the API key is not valid")
        return partner

    def health(self) -> dict[str, Any]:
        meta = self.state.meta
        return {
            "run_id": meta["run_id"],
            "release_id": meta["release_id"],
            "published_at": meta["published_at"],
            "store": meta["store"],
            "personas": meta["personas"],
            "model_versions": {s["name"]: s["model_version"] for s in meta["segments"]},
            "live_events_seen": len(self.state.seen),
            "live_events_applied": self.state.applied,
            "memory_mb": {
                "process_rss": round(psutil.Process().memory_info().rss / 2**20, 1),
                "release": round(self.state.release.nbytes() / 2**20, 1),
            },
        }

    async def profile(self, partner: str, query: list[tuple[str, str]]) -> dict[str, Any]:
        unknown = sorted({k for k, _ in query if k not in KEY_TYPES})
        if unknown:
            raise RequestError(
                400,
                "unknown_key_type",
                f"unknown query parameter(s) {', '.join(unknown)}; "
                f"look a visitor up by exactly one of {', '.join(KEY_TYPES)}",
            )
        if len(query) != 1:
            raise RequestError(
                400,
                "one_key",
                f"{'no key' if not query else 'several keys'} given; look a visitor "
                f"up by exactly one of {', '.join(KEY_TYPES)}",
            )
        key_type, key = query[0]
        if not key.strip():
            raise RequestError(400, "empty_key", f"{key_type} is empty")
        state = self.state  # one release for the whole request
        found = await state.lookup(partner, key_type, key.strip())
        if found is None:
            raise RequestError(404, "not_found", f"no visitor with this {key_type} is known to this partner")
        persona_id, ref = found
        (base,) = await state.release.bases([ref])
        return self.render(state, partner, base, state.personas.get(persona_id))

    def render(self, state: LiveState, partner: str, base, live) -> dict[str, Any]:
        meta = state.meta
        scored = live.scored if live is not None else None  # one read: the applier swaps the whole tuple
        score, percentile, member, updated_s = scored or (base.score, base.percentile, base.member, None)
        segments = []
        for j, entry in enumerate(meta["segments"]):
            if entry["partner_id"] is not None and entry["partner_id"] != partner:
                continue  # a segment restricted to another partner
            if math.isnan(score[j]):
                continue  # not eligible for this segment
            item = {
                "segment": entry["name"],
                "score": _number(score[j], 6),
                "percentile": _number(percentile[j], 2),
                "member": bool(member[j]),
            }
            if base.reasons is not None:
                item["reasons"] = list(base.reasons[j] or [])
            segments.append(item)
        shown = self.config.serving.intents_shown
        intents = {
            kind: shown_intents(base.intents.get(kind), live.intents[kind] if live else None, shown)
            for kind in INTENT_KINDS
        }
        updated = event_time_iso(updated_s) if updated_s else meta["published_at"].replace("+00:00", "Z")
        return {
            "persona": persona_token(self.secret, partner, base.persona_id),
            "run_id": meta["run_id"],
            "updated_at": updated,
            "segments": segments,
            "intents": intents,
        }

    async def events(self, partner: str, body: bytes) -> dict[str, Any]:
        if len(body) > self.config.serving.max_body_bytes:
            raise RequestError(
                413, "too_large", f"the body has {len(body)} bytes; at most {self.config.serving.max_body_bytes}"
            )
        limit = self.config.serving.max_events_per_request
        ts_range = live_ts_range(self.config)
        result = await self.on_applier(intake, body, partner, self.state.seen, limit, ts_range)
        if result.accepted.num_rows:
            try:
                await self.committer.commit(result.accepted)
            except Exception:  # noqa: BLE001 - the caller must retry: nothing was acknowledged
                raise RequestError(503, "unavailable", "the events could not be stored; retry") from None
        return {"accepted": result.accepted.num_rows, "duplicates": result.duplicates, "rejected": result.rejected}


class Profiles:
    """The Serve deployment (options come from config in `deployment_options`)."""

    async def __init__(self, config: dict, root: str) -> None:
        logging.getLogger("jobs").setLevel(logging.INFO)
        # the applier thread holds the GIL in slices of this length: short slices keep a lookup that
        # arrives during a rescoring from waiting the default 5 ms
        sys.setswitchinterval(0.0005)
        self.service = ProfileService(JobConfig.model_validate(config), root)
        await self.service.start()

    async def __call__(self, request):
        response = await self.answer(request)
        # which replica answered (a random id per replica): lets tests and operators check every replica
        response.headers["x-segments-replica"] = self.service.event_log.writer
        return response

    async def answer(self, request):
        service = self.service
        path = request.scope.get("path", "")
        root_path = request.scope.get("root_path", "")
        if root_path and path.startswith(root_path):
            path = path[len(root_path) :]
        path = "/" + path.strip("/")
        try:
            if path == "/v1/health" and request.method == "GET":
                service.partner_of(request.headers.get("authorization"))
                return _json(200, service.health())
            if path == "/v1/profile" and request.method == "GET":
                partner = service.partner_of(request.headers.get("authorization"))
                return _json(200, await service.profile(partner, list(request.query_params.multi_items())))
            if path == "/v1/events" and request.method == "POST":
                partner = service.partner_of(request.headers.get("authorization"))
                declared = request.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > service.config.serving.max_body_bytes:
                    raise RequestError(
                        413,
                        "too_large",
                        f"the body has {declared} bytes; at most {service.config.serving.max_body_bytes}",
                    )
                return _json(202, await service.events(partner, await request.body()))
            if path in ("/v1/health", "/v1/profile", "/v1/events"):
                return _error(405, "method_not_allowed", f"{request.method} is not allowed on {path}")
            return _error(404, "no_route", f"{path} is not an endpoint; see the serving contract")
        except RequestError as exc:
            return _error(exc.status, exc.code, exc.detail)
        except Exception as exc:  # noqa: BLE001 - the caller gets JSON, never a crash page
            # the stack without the exception's message: a message may quote a value from the request
            log.error(
                "request to %s failed with %s:\n%s",
                path,
                type(exc).__name__,
                "".join(traceback.format_tb(exc.__traceback__)),
            )
            return _error(500, "internal", "the server failed to answer; retry")

    async def __del__(self) -> None:
        await self.service.stop()


def deployment_options(config: JobConfig) -> dict[str, Any]:
    serving = config.serving
    options: dict[str, Any] = {
        "ray_actor_options": {"num_cpus": serving.cpus_per_replica},
        "max_ongoing_requests": serving.max_ongoing_requests,
        "health_check_period_s": 2.0,
        "graceful_shutdown_timeout_s": 5.0,
    }
    if serving.autoscaling:
        options["autoscaling_config"] = {
            "min_replicas": serving.min_replicas,
            "max_replicas": serving.max_replicas,
            "target_ongoing_requests": serving.target_ongoing_requests,
        }
    else:
        options["num_replicas"] = serving.replicas
    return options


def serve_environment(serving: ServingConfig) -> dict[str, str]:
    """The environment Serve's request path reads when its processes start (controller, HTTP ingress,
    replicas): it must be set before the Ray that runs them starts (`run_serve` sets it for the local Ray it
    starts; a cluster's `ray start` needs it, README).

    Throughput-optimised (`serving.throughput_optimized`): HAProxy listens on host:port and forwards to each
    replica's own HTTP server (direct ingress), user code runs on the replica's main loop, the GC is frozen
    after start-up. CPU per lookup on 2 cores (bench_serve, 50k personas): replica 0.55 ms + HAProxy 0.15 ms,
    against Serve's Python proxy 1.7 ms + replica 1.4 ms in the default mode (user code on its own loop
    thread costs this mode 0.2 ms a lookup and a p99 of 40 ms at 500/s). The default; the serving tests run
    in it. Turned off: Serve's Python proxy reaches replicas over gRPC (half the latency of Ray actor calls
    here)."""
    if serving.throughput_optimized:
        return {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1"}
    return {"RAY_SERVE_PROXY_USE_GRPC": "1"}


def serve_logging(config: JobConfig) -> dict[str, Any]:
    """Serve's own logs: per-request access lines only when asked for (they cost CPU at hundreds of
    requests per second, bench_serve); they never hold a query string or a header either way."""
    return {
        "enable_access_log": config.serving.access_log,
        "log_level": "INFO" if config.serving.access_log else "WARNING",
    }


def build_app(config: JobConfig, root: str):
    from ray import serve

    options = deployment_options(config)
    deployment = serve.deployment(name="Profiles", logging_config=serve_logging(config), **options)(Profiles)
    return deployment.bind(config.model_dump(mode="json"), root)


def deploy(config: JobConfig, root: str) -> str:
    """Start Serve's proxy on the configured host/port (if not running) and deploy the app; returns its URL."""
    from ray import serve

    if read_json_or_none(OnlineLayout(root).current, config.storage) is None:
        raise UserError(
            f"nothing is published under {OnlineLayout(root).base}: run `segments publish --run "
            "ROOT/runs/RUN_ID` first."
        )
    serving = config.serving
    serve.start(http_options={"host": serving.host, "port": serving.port}, logging_config=serve_logging(config))
    serve.run(build_app(config, root), name=serving.app_name, route_prefix=serving.route_prefix)
    prefix = serving.route_prefix.rstrip("/")
    return f"http://{serving.host}:{serving.port}{prefix}"


def run_serve(config: JobConfig, root: str) -> dict[str, Any] | None:
    """`segments serve --root ROOT`: on a cluster, deploy and return; on a local Ray, serve until Ctrl-C."""
    from jobs.raykit.session import ray_session

    for name, value in serve_environment(config.serving).items():  # an operator's own setting wins
        os.environ.setdefault(name, value)
    with ray_session(config.ray):
        url = deploy(config, root)
        log.info("serving %s at %s (Ctrl-C stops a local server)", root, url)
        if config.ray.address:
            return {"url": url, "app": config.serving.app_name}
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            from ray import serve

            serve.shutdown()
    return None
