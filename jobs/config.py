"""The one job configuration: resolved once from a YAML file, then command-line flags, then frozen.

Every stage receives a `JobConfig` (or one of its sections); nothing reads the environment or files for
settings on its own. Credentials are never part of it: S3 access goes through the standard AWS chain.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator

from jobs.errors import UserError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StageView(BaseModel):
    """The part of the config one stage reads: all it can see, so its fingerprint cannot miss a setting.

    `tuning` names fields (dotted for nested ones) that change how a stage runs but not what it writes
    (partition counts, task counts, batch sizes): they are left out of the fingerprint, so raising them
    on a bigger cluster does not redo finished work.
    """

    model_config = ConfigDict(frozen=True)
    tuning: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_config(cls, config: JobConfig) -> StageView:
        raise NotImplementedError

    def fingerprint(self) -> str:
        exclude: dict[str, Any] = {}
        for dotted in self.tuning:
            node = exclude
            *parents, leaf = dotted.split(".")
            for key in parents:
                node = node.setdefault(key, {})
            node[leaf] = True
        payload = self.model_dump(mode="json", exclude=exclude)
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


class StorageConfig(Section):
    """Object storage access. Credentials come only from the AWS chain (env, profile, instance role)."""

    endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint (MinIO, moto, ...); default: AWS_ENDPOINT_URL or AWS"
    )
    region: str | None = Field(None, description="S3 region; default: the AWS chain's")
    retries: int = Field(5, ge=0, description="attempts for transient S3 errors, with exponential backoff")
    connect_timeout_s: float = Field(10.0, gt=0, description="seconds to wait for a connection to the object store")
    read_timeout_s: float = Field(
        60.0, gt=0, description="seconds to wait for a response (a frozen store fails after retries, exit 3)"
    )


class RayConfig(Section):
    address: str | None = Field(None, description="Ray cluster address; default: RAY_ADDRESS or a local Ray")
    num_cpus: int | None = Field(None, ge=1, description="CPUs for a local Ray started for the run")
    object_store_memory_mb: int | None = Field(None, ge=100, description="object store of a local Ray")
    num_partitions: int = Field(
        8, ge=1, le=4096, description="hash partitions for shuffles (identity, features); about 2-4 per worker CPU"
    )
    components_one_task_edges: int = Field(
        16_000_000,
        ge=0,
        description="a connected-components pass over at most this many directed edges runs in one task "
        "(~100 bytes an edge at its peak) instead of distributed rounds; 0: always distributed",
    )


class InputConfig(Section):
    max_quarantine_share: float = Field(
        0.01, ge=0, le=1, description="the run fails when more than this share of rows is quarantined"
    )
    plausible_ts_from: dt.date = Field(
        dt.date(2000, 1, 1),
        description="an event before this date, or after the run date + 1 day, is quarantined (implausible_ts)",
    )


class IdentityConfig(Section):
    session_gap_minutes: int = Field(30, ge=1, description="inactivity gap that cuts a session")
    blocklist_emails: list[str] = Field(
        default_factory=lambda: [
            "test@test.com",
            "test@example.com",
            "no@email.com",
            "noemail@gmail.com",
            "none@none.com",
            "a@a.com",
            "asd@asd.com",
            "email@email.com",
        ],
        description="normalised emails never used for linking",
    )
    blocklist_phones: list[str] = Field(
        default_factory=lambda: ["0000000000", "1111111111", "1234567890", "0123456789", "9999999999"],
        description="phones (digits as typed) never used for linking",
    )
    max_people_per_email: int = Field(
        0, ge=0, description="fan-out cap for an email/phone (distinct devices); 0 = learned from the data"
    )
    max_people_per_device: int = Field(
        0, ge=0, description="fan-out cap for a device (distinct emails/phones); 0 = learned from the data"
    )
    max_customers_per_device_partner: int = Field(
        2, ge=1, description="a device seeing at least this many customer records at one partner is shared"
    )
    max_persona_identifiers: int = Field(
        500, ge=10, description="size cap: a component with more identifiers is audited and split"
    )
    max_devices_per_click_token: int = Field(
        0, ge=0, description="a click token clicked on more devices is forwarded; 0 = learned (floor 1)"
    )
    min_fanout_devices: int = Field(
        4, ge=1, description="floor of the learned email/phone/customer fan-out threshold (devices one person may own)"
    )
    min_people_per_shared_device: int = Field(
        3, ge=2, description="floor of the learned shared-device rule: a device never counts as shared below this"
    )
    fence_iqr_multiplier: float = Field(
        3.0, gt=0, description="learned thresholds are Tukey fences Q3 + k * IQR of each figure's distribution"
    )
    size_cap_rounds: int = Field(3, ge=0, description="rounds that remove hubs from components above the size cap")


class FeaturesConfig(Section):
    as_of: dt.date | None = Field(None, description="cut-off date: features see only events before it")
    windows_days: list[int] = Field(default_factory=lambda: [7, 30, 90, 180, 365])
    top_categories: int = Field(10, ge=1, le=50, description="categories with their own features")
    categories: list[str] | None = Field(
        None,
        min_length=1,
        max_length=50,
        description="pin the feature categories (top-level names, in slot order); default: the segments' "
        "categories plus the largest by events before the cut-off, up to top_categories, sorted by name",
    )
    comparison_days: int = Field(
        7, ge=1, le=90, description="a product viewed at 2+ partners within this many days before buying it is compared"
    )


class SegmentConfig(Section):
    name: str = Field(..., pattern=r"^[a-z0-9_]{1,64}$")
    kind: Literal["ecommerce_buyers", "high_interest", "price_hunters", "category_virgins", "category_lovers"]
    category: str | None = Field(None, description="target category (prefix of the category path)")
    brand: str | None = None
    partner_id: str | None = Field(None, description="restrict the label to one partner")
    horizon_days: int = Field(30, ge=1, description="label window after the cut-off")
    min_orders: int = Field(1, ge=1, description="orders in the label window that make a positive")
    label_event_types: list[str] | None = Field(
        None, description="event types that count towards a positive; default per kind (jobs.segments)"
    )
    comparison_days: int = Field(7, ge=1, le=90, description="price_hunters: views this many days before a purchase")
    min_partners: int = Field(2, ge=2, description="price_hunters: distinct partners where the product was viewed")


def default_segments() -> list[SegmentConfig]:
    return [
        SegmentConfig(name="ecommerce_buyers", kind="ecommerce_buyers"),
        SegmentConfig(name="high_interest_electronics", kind="high_interest", category="electronics"),
        SegmentConfig(name="price_hunters", kind="price_hunters"),
        SegmentConfig(name="category_virgins_home", kind="category_virgins", category="home"),
        SegmentConfig(name="category_lovers_fashion", kind="category_lovers", category="fashion"),
    ]


class TrainingConfig(Section):
    train_as_of: dt.date | None = Field(None, description="cut-off of the training snapshot")
    eval_as_of: dt.date | None = Field(None, description="later cut-off for out-of-time evaluation")
    num_workers: int = Field(1, ge=1, description="Ray Train workers; raise on a cluster")
    cpus_per_worker: float = Field(0.5, gt=0, description="fractional so Ray Data can feed the workers")
    use_gpu: bool = False
    num_boost_round: int = Field(300, ge=1)
    early_stopping_rounds: int = Field(30, ge=1)
    report_every: int = Field(25, ge=1, description="rounds between Ray Train reports")
    checkpoint_seconds: float = Field(
        30.0,
        ge=0,
        description="Ray Train checkpoints (after a completed fit, or at a report_every round) at most this often: "
        "a failure redoes at most this much work; each report can wait for the controller's poll",
    )
    validation_share: float = Field(0.2, gt=0, lt=1)
    min_positives: int = Field(
        10, ge=1, description="fewer at the training cut-off: skipped (whether a model is useful: the champion checks)"
    )
    min_negatives: int = Field(10, ge=1)
    params: dict[str, Any] = Field(
        default_factory=lambda: {
            "objective": "binary:logistic",
            "eval_metric": ["logloss", "auc"],
            "tree_method": "hist",
            "max_depth": 4,
            "eta": 0.05,
            "subsample": 0.8,
            "colsample_bytree": 0.8,
            "min_child_weight": 10,
            "reg_lambda": 5,
        }
    )
    max_failures: int = Field(
        2, ge=0, description="Ray Train FailureConfig.max_failures; the retries of a round fitted in one task"
    )
    one_task_rows: int = Field(
        500_000,
        ge=0,
        description="with one worker, a round of fits with at most this many rows together runs in one Ray task "
        "instead of a Ray Train run: Ray Train's start (~6-10 s on 2 cores) would be most of such a round, and its "
        "checkpoints save little; a failure reruns the task; 0: always Ray Train",
    )
    speculative_refit_rows: int = Field(
        500_000,
        ge=0,
        description="production refits fitted in the evaluation fits' Ray Train run, before the champion is "
        "known, while all of them together have at most this many rows (else a second run refits only the "
        "XGBoost champions)",
    )
    nthread: int | None = Field(
        None,
        ge=1,
        description="XGBoost threads per worker (a lone worker shares them among the fits it runs at once); "
        "default: the node's CPUs / workers on that node",
    )
    seed: int = Field(7, description="seed of the validation split, subsampling and the permutation null")
    champion_margin: float = Field(
        0.02,
        ge=0,
        description="relative PR-AUC gain a challenger needs over the incumbent (at least the figure's noise)",
    )
    strict: bool = Field(False, description="a rejected segment fails the run (exit 2) instead of a warning")
    rfm_features: list[str] | None = Field(
        None, description="columns of the RFM baseline (recency, frequency, monetary); default from the catalogue"
    )
    max_metric_rows: int = Field(
        2_000_000, ge=1000, description="evaluation rows (hash sample) pulled to the driver for metrics"
    )
    leakage_sample_rows: int = Field(
        100_000, ge=100, description="evaluation rows (hash sample) for the single-feature leakage check"
    )
    only_segments: list[str] | None = Field(
        None,
        min_length=1,
        description="train only these segments (`segments train --segment NAME`); the others keep their models "
        "from the run's previous models/ bundle",
    )


class ScoringConfig(Section):
    membership: Literal["top_percent", "threshold"] = "top_percent"
    top_percent: float = Field(10.0, gt=0, le=100)
    threshold: float = Field(0.5, ge=0, le=1)
    # configs from when scoring ran in an actor pool name these actors, cpus_per_actor, threads_per_actor: they
    # still read, with the same meaning
    tasks: int = Field(
        4,
        ge=1,
        validation_alias=AliasChoices("tasks", "actors"),
        description="scoring tasks at once (each worker process loads every model once and reads its own files)",
    )
    cpus_per_task: float = Field(
        0.5,
        gt=0,
        validation_alias=AliasChoices("cpus_per_task", "cpus_per_actor"),
        description="CPUs per scoring task; fractional so prediction (one thread) shares a core with the read",
    )
    threads_per_task: int = Field(
        1,
        ge=1,
        validation_alias=AliasChoices("threads_per_task", "threads_per_actor"),
        description="XGBoost prediction threads in each scoring task",
    )
    batch_size: int = Field(65536, ge=1, description="rows per prediction call (bounds each task's float32 matrix)")
    reasons: Literal["off", "approx", "shap"] = Field(
        "approx",
        description="top-3 partner-safe reasons per member in scores/ from XGBoost's contributions: 'approx' "
        "(Saabas, ~5 predictions' cost), 'shap' (exact TreeSHAP, ~100x a prediction on CPU) or 'off'",
    )


class DriftConfig(Section):
    """Drift between runs (`jobs.model.drift`): PSI of every feature and of each segment's scores."""

    enabled: bool = Field(True, description="compare this run with the previous one in the report")
    previous_run: str | None = Field(
        None, description="run id to compare with; default: the latest other succeeded run of ROOT not dated later"
    )
    threshold: float = Field(0.25, gt=0, description="PSI above this is an alarm in the report and summary")


class ExportConfig(Section):
    root: str | None = Field(None, description="ROOT of exports: local folder or s3://bucket/prefix")
    url_expires_seconds: int = Field(3600, ge=60, le=7 * 24 * 3600)
    replace: bool = Field(
        False,
        description="let this run replace the exports of its run date that another run id wrote "
        "(`--replace`); without it such a run stops, exit 2, naming the owner",
    )
    reasons: bool = Field(False, description="exports carry each member's partner-safe reasons (scores/ `reasons`)")


class LoggingConfig(Section):
    """What the console shows. The run's log file (RUN/logs/<timestamp>.log) always keeps everything."""

    verbose: bool = Field(
        False,
        description="the console shows every library's log lines, Ray workers' output and tracebacks "
        "(`segments --verbose ...`); default: progress, warnings to act on and the summary",
    )


class ServingConfig(Section):
    """The online half (`segments publish`, `segments serve`): replicas, stores, live events, limits."""

    store: Literal["embedded", "redis"] = Field(
        "embedded",
        description="where replicas read a release: 'embedded' (loaded into each replica's memory from "
        "ROOT/online/releases, local or s3://) or 'redis' (a Redis/Valkey server, for fleets one replica cannot hold)",
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="the Redis server of the 'redis' store")
    redis_prefix: str = Field(
        "segments", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="prefix of every Redis key this deployment writes"
    )
    redis_batch_rows: int = Field(5000, ge=100, description="rows per pipelined Redis write batch when publishing")
    host: str = Field("127.0.0.1", description="address the Serve HTTP proxy listens on")
    port: int = Field(8000, ge=1, le=65535, description="port of the Serve HTTP proxy")
    app_name: str = Field("segments", pattern=r"^[A-Za-z0-9_-]{1,64}$", description="Ray Serve application name")
    route_prefix: str = Field("/", pattern=r"^/[A-Za-z0-9_/-]*$", description="HTTP path the application is under")
    replicas: int = Field(1, ge=1, description="replicas when autoscaling is off")
    autoscaling: bool = Field(False, description="let Ray Serve scale replicas between min_replicas and max_replicas")
    min_replicas: int = Field(1, ge=1, description="autoscaling: fewest replicas")
    max_replicas: int = Field(4, ge=1, description="autoscaling: most replicas")
    target_ongoing_requests: float = Field(
        8.0, gt=0, description="autoscaling: in-flight requests per replica it aims for"
    )
    cpus_per_replica: float = Field(
        0.5, gt=0, description="CPUs reserved per replica; fractional so a 2-core machine keeps room for Ray Data"
    )
    max_ongoing_requests: int = Field(64, ge=1, description="requests one replica works on at once")
    access_log: bool = Field(
        False, description="Serve's per-request access log lines (method, path, status, latency; never the query)"
    )
    throughput_optimized: bool = Field(
        True,
        description="Ray Serve's throughput-optimised request path: HAProxy takes HTTP on host:port and hands each "
        "request straight to a replica's own HTTP server (no Python proxy hop: p99 2 ms at 800 lookups/s on 2 "
        "cores, bench_serve); false: Serve's Python proxy; read by the Ray that `segments serve` starts (a "
        "cluster: README)",
    )
    poll_release_seconds: float = Field(1.0, gt=0, description="how often replicas look for a newer current release")
    poll_events_seconds: float = Field(
        0.1, gt=0, description="how often replicas read other replicas' live events from ROOT/online/events"
    )
    commit_window_ms: float = Field(
        5.0, ge=0, description="live events arriving within this window share one durable Parquet micro-batch"
    )
    max_body_bytes: int = Field(1_048_576, ge=1024, description="largest POST /v1/events body (413 above it)")
    max_events_per_request: int = Field(1000, ge=1, description="most events in one POST /v1/events (413 above it)")
    intent_days: int = Field(30, ge=1, le=365, description="window of the intents (top categories and brands)")
    intent_half_life_days: float = Field(
        7.0, gt=0, description="an event's weight in the intents halves over this time"
    )
    intents_kept: int = Field(20, ge=1, le=200, description="categories and brands kept per persona in a release")
    intents_shown: int = Field(5, ge=1, le=50, description="categories and brands a profile shows")
    num_partitions: int = Field(8, ge=1, le=4096, description="publish: persona partitions (one Parquet part each)")


class EvaluationConfig(Section):
    """`segments evaluate-personas`: personas scored against a ground-truth column (test data only)."""

    truth_column: str = Field(
        "true_person_id", min_length=1, description="column of events_resolved naming the real person behind an event"
    )


# What `segments run` runs by default (the plan stage comes along with any stage that reads the plan;
# `evaluate` needs ground truth, so it runs only when listed).
PIPELINE_STAGES = ("resolve", "features", "labels", "train", "score", "report", "export")
StageName = Literal["resolve", "evaluate", "features", "labels", "train", "score", "report", "export"]
# A listed stage brings the stages it cannot run without (configs written before labels had a stage of its own).
IMPLIED_STAGES = {"train": ("labels",)}


class JobConfig(Section):
    events: str | None = Field(None, description="input events: file, folder or glob; local or s3://")
    root: str = Field("out", description="ROOT of runs: local folder or s3://bucket/prefix")
    run_id: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$", description="run folder name; default: the run date"
    )
    run_date: dt.date | None = Field(
        None,
        description="the schedule date of the run (exports' RUN_DATE); default: the day it first started (UTC)",
    )
    stages: list[StageName] = Field(
        default_factory=lambda: list(PIPELINE_STAGES),
        description="stages `segments run` runs (always in pipeline order); e.g. [resolve] for identity only",
    )
    storage: StorageConfig = StorageConfig()
    ray: RayConfig = RayConfig()
    input: InputConfig = InputConfig()
    identity: IdentityConfig = IdentityConfig()
    features: FeaturesConfig = FeaturesConfig()
    segments: list[SegmentConfig] = Field(default_factory=default_segments)
    training: TrainingConfig = TrainingConfig()
    scoring: ScoringConfig = ScoringConfig()
    export: ExportConfig = ExportConfig()
    drift: DriftConfig = DriftConfig()
    logging: LoggingConfig = LoggingConfig()
    serving: ServingConfig = ServingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()

    @field_validator("stages")
    @classmethod
    def _stages_in_order(cls, stages: list[str]) -> list[str]:
        if not stages:
            raise ValueError("list at least one stage")
        wanted = set(stages) | {implied for name in stages for implied in IMPLIED_STAGES.get(name, ())}
        return [name for name in ("resolve", "evaluate", *PIPELINE_STAGES[1:]) if name in wanted]

    @field_validator("segments")
    @classmethod
    def _unique_segment_names(cls, segments: list[SegmentConfig]) -> list[SegmentConfig]:
        names = [s.name for s in segments]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"segment names must be unique, repeated: {', '.join(duplicates)}")
        return segments


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> JobConfig:
    """Resolve the config: YAML file first, then flags (dotted keys, `None` = not given); validate once."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"config file {path} does not exist.")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise UserError(f"config file {path} is not valid YAML: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise UserError(f"config file {path} must hold a mapping at the top level, not {type(loaded).__name__}.")
        data = loaded or {}
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    try:
        return JobConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors()
        )
        source = f"config file {path}" if path else "the configuration"
        raise UserError(f"{source} is invalid: {problems}.") from None


# --------------------------------------------------------------------------------------------------
# One view per stage: what it reads of the config (see StageView).


class ResolveView(StageView):
    input: InputConfig
    identity: IdentityConfig
    num_partitions: int
    components_one_task_edges: int
    tuning: ClassVar[tuple[str, ...]] = ("num_partitions", "components_one_task_edges")

    @classmethod
    def from_config(cls, config: JobConfig) -> ResolveView:
        return cls(
            input=config.input,
            identity=config.identity,
            num_partitions=config.ray.num_partitions,
            components_one_task_edges=config.ray.components_one_task_edges,
        )


class EvaluateView(StageView):
    identity: IdentityConfig
    evaluation: EvaluationConfig
    num_partitions: int
    components_one_task_edges: int
    tuning: ClassVar[tuple[str, ...]] = ("num_partitions", "components_one_task_edges")

    @classmethod
    def from_config(cls, config: JobConfig) -> EvaluateView:
        return cls(
            identity=config.identity,
            evaluation=config.evaluation,
            num_partitions=config.ray.num_partitions,
            components_one_task_edges=config.ray.components_one_task_edges,
        )


class PlanView(StageView):
    as_of: dt.date | None
    categories: list[str] | None
    top_categories: int
    train_as_of: dt.date | None
    eval_as_of: dt.date | None
    segments: list[SegmentConfig]

    @classmethod
    def from_config(cls, config: JobConfig) -> PlanView:
        return cls(
            as_of=config.features.as_of,
            categories=config.features.categories,
            top_categories=config.features.top_categories,
            train_as_of=config.training.train_as_of,
            eval_as_of=config.training.eval_as_of,
            segments=list(config.segments),
        )


class FeaturesView(StageView):
    features: FeaturesConfig
    num_partitions: int
    tuning: ClassVar[tuple[str, ...]] = ("num_partitions",)

    @classmethod
    def from_config(cls, config: JobConfig) -> FeaturesView:
        return cls(features=config.features, num_partitions=config.ray.num_partitions)


class LabelsView(StageView):
    segments: list[SegmentConfig]
    num_partitions: int
    tuning: ClassVar[tuple[str, ...]] = ("num_partitions",)

    @classmethod
    def from_config(cls, config: JobConfig) -> LabelsView:
        return cls(segments=list(config.segments), num_partitions=config.ray.num_partitions)


class TrainView(StageView):
    segments: list[SegmentConfig]
    features: FeaturesConfig
    training: TrainingConfig
    num_partitions: int
    tuning: ClassVar[tuple[str, ...]] = (
        "num_partitions",
        "training.num_workers",
        "training.cpus_per_worker",
        "training.use_gpu",
        "training.report_every",
        "training.max_failures",
        "training.one_task_rows",
        "training.nthread",
    )

    @classmethod
    def from_config(cls, config: JobConfig) -> TrainView:
        return cls(
            segments=list(config.segments),
            features=config.features,
            training=config.training,
            num_partitions=config.ray.num_partitions,
        )


class ScoreView(StageView):
    segments: list[SegmentConfig]
    scoring: ScoringConfig
    features: FeaturesConfig  # the catalogue that names reasons
    tuning: ClassVar[tuple[str, ...]] = (
        "scoring.tasks",
        "scoring.cpus_per_task",
        "scoring.threads_per_task",
        "scoring.batch_size",
    )

    @classmethod
    def from_config(cls, config: JobConfig) -> ScoreView:
        return cls(segments=list(config.segments), scoring=config.scoring, features=config.features)


class ReportView(StageView):
    segments: list[SegmentConfig]
    drift: DriftConfig
    num_partitions: int  # the join of members with the partners that saw them
    tuning: ClassVar[tuple[str, ...]] = ("num_partitions",)

    @classmethod
    def from_config(cls, config: JobConfig) -> ReportView:
        return cls(segments=list(config.segments), drift=config.drift, num_partitions=config.ray.num_partitions)


class ExportView(StageView):
    root: str = Field(description="ROOT of the exports: export.root, else the run's own ROOT")
    membership: Literal["top_percent", "threshold"] = Field(description="how members were chosen (manifests say)")
    replace: bool = Field(description="may replace the run date's exports of another run id")
    num_partitions: int
    reasons: bool = Field(False, description="a `reasons` column in every part")
    # replacing decides whether the stage may run, not what it writes
    tuning: ClassVar[tuple[str, ...]] = ("num_partitions", "replace")

    @classmethod
    def from_config(cls, config: JobConfig) -> ExportView:
        return cls(
            root=config.export.root or config.root,
            membership=config.scoring.membership,
            replace=config.export.replace,
            num_partitions=config.ray.num_partitions,
            reasons=config.export.reasons,
        )


def _yaml_value(value: Any) -> str:
    return yaml.safe_dump(_jsonable(value), default_flow_style=True, width=1000).strip().removesuffix("...").strip()


def describe_config(config: JobConfig) -> str:
    """The resolved config as YAML, each field commented with its description and default (`config show`)."""
    lines: list[str] = []

    def walk(model: BaseModel, indent: int) -> None:
        pad = " " * indent
        for name, field in type(model).model_fields.items():
            value = getattr(model, name)
            default = field.get_default(call_default_factory=True)
            notes = [field.description] if field.description else []
            if not isinstance(value, BaseModel) and value != default:
                notes.append(f"default: {_yaml_value(default)}")
            comment = f"  # {'; '.join(notes)}" if notes else ""
            if isinstance(value, BaseModel):
                lines.append(f"{pad}{name}:{comment}")
                walk(value, indent + 2)
            elif isinstance(value, list) and value and isinstance(value[0], BaseModel):
                lines.append(f"{pad}{name}:{comment}")
                for item in value:
                    body = yaml.safe_dump(item.model_dump(mode="json"), sort_keys=False).splitlines()
                    lines.extend([f"{pad}  - {body[0]}", *(f"{pad}    {line}" for line in body[1:])])
            else:
                lines.append(f"{pad}{name}: {_yaml_value(value)}{comment}")

    walk(config, 0)
    return "\n".join(lines)
