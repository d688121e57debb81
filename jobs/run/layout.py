"""Every table, file and folder name of a run and of the partner exports, in one place.

    ROOT/runs/RUN_ID/                       RunLayout
      quarantine/ events_resolved/ identity_map/ identity_audit/ personas/     (resolve)
      features/   labels/   models/   scores/                                  (features, labels, train, score)
      plan.json   summary.json   report.html   evaluation/personas.json   logs/
      _stages/STAGE.json   _stages/run.json   _stages/lease.json
    ROOT/exports/PARTNER_ID/SEGMENT/RUN_DATE/  part-*.parquet  manifest.json   ExportLayout

Tables are published folders (`jobs.storage.tables`); the names here are what stages declare they read and
write. Paths built from a partner id, a segment name or a run date are validated first (`jobs.run.naming`).
"""

from __future__ import annotations

from dataclasses import dataclass

from jobs.run.naming import validate_partner_id, validate_run_date, validate_segment_name
from jobs.storage import join

# The run's tables, in the order the pipeline produces them.
QUARANTINE = "quarantine"
EVENTS_RESOLVED = "events_resolved"
IDENTITY_MAP = "identity_map"
IDENTITY_AUDIT = "identity_audit"
PERSONAS = "personas"
FEATURES = "features"
LABELS = "labels"
MODELS = "models"
SCORES = "scores"
TABLES = (QUARANTINE, EVENTS_RESOLVED, IDENTITY_MAP, IDENTITY_AUDIT, PERSONAS, FEATURES, LABELS, MODELS, SCORES)

STAGE_MARKERS = "_stages"


@dataclass(frozen=True)
class RunLayout:
    """Where one run's tables and files live: `ROOT/runs/RUN_ID/...` (the run folder commands take)."""

    run_dir: str

    @classmethod
    def for_run(cls, root: str, run_id: str) -> RunLayout:
        return cls(join(root, "runs", run_id))

    @property
    def run_id(self) -> str:
        return self.run_dir.rstrip("/").rsplit("/", 1)[-1]

    @property
    def root(self) -> str | None:
        """ROOT when the run folder is `ROOT/runs/RUN_ID`, else None (a run folder given by hand)."""
        parent, _, _ = self.run_dir.rstrip("/").rpartition("/")
        grand, _, runs = parent.rpartition("/")
        return (grand or ".") if runs == "runs" else None

    def table(self, name: str) -> str:
        if name not in TABLES:
            raise ValueError(f"{name!r} is not a table of a run; tables: {', '.join(TABLES)}")
        return join(self.run_dir, name)

    # --- files of the run ---------------------------------------------------------------------------
    @property
    def plan(self) -> str:
        return join(self.run_dir, "plan.json")

    @property
    def summary(self) -> str:
        return join(self.run_dir, "summary.json")

    @property
    def report(self) -> str:
        return join(self.run_dir, "report.html")

    @property
    def persona_evaluation(self) -> str:
        return join(self.run_dir, "evaluation", "personas.json")

    @property
    def logs(self) -> str:
        return join(self.run_dir, "logs")

    def log_file(self, stamp: str) -> str:
        """`logs/<timestamp>.log`: the full log of one invocation on the run (the console shows little)."""
        return join(self.logs, f"{stamp}.log")

    # --- the pipeline's own bookkeeping -------------------------------------------------------------
    def stage_marker(self, stage: str) -> str:
        return join(self.run_dir, STAGE_MARKERS, f"{stage}.json")

    @property
    def run_record(self) -> str:
        return join(self.run_dir, STAGE_MARKERS, "run.json")

    @property
    def lease(self) -> str:
        return join(self.run_dir, STAGE_MARKERS, "lease.json")

    # --- inside the models bundle (relative to its write folder) ------------------------------------
    @staticmethod
    def model_file(segment: str, name: str) -> str:
        """`SEGMENT/NAME` inside the published models/ folder: model.json, model_card.json, metrics.json ..."""
        return f"{validate_segment_name(segment)}/{name}"

    @property
    def train_scratch(self) -> str:
        """Ray Train's own storage (checkpoints of fits in progress); never read by other stages."""
        return join(self.run_dir, "_train")


@dataclass(frozen=True)
class ExportLayout:
    """`ROOT/exports/PARTNER_ID/SEGMENT/RUN_DATE/`: what partners pull."""

    root: str

    MANIFEST = "manifest.json"

    @property
    def base(self) -> str:
        return join(self.root, "exports")

    def partner_dir(self, partner_id: str) -> str:
        return join(self.base, validate_partner_id(partner_id))

    def segment_dir(self, partner_id: str, segment: str) -> str:
        return join(self.partner_dir(partner_id), validate_segment_name(segment))

    def export_dir(self, partner_id: str, segment: str, run_date: str) -> str:
        return join(self.segment_dir(partner_id, segment), validate_run_date(run_date))

    def manifest(self, partner_id: str, segment: str, run_date: str) -> str:
        return join(self.export_dir(partner_id, segment, run_date), self.MANIFEST)

    @property
    def staging(self) -> str:
        return join(self.base, "_staging")


@dataclass(frozen=True)
class OnlineLayout:
    """`ROOT/online/`: what `segments publish` and `segments serve` share (serving contract)."""

    root: str

    @property
    def base(self) -> str:
        return join(self.root, "online")

    @property
    def current(self) -> str:
        """The pointer to the published run that replicas serve (written last, atomically)."""
        return join(self.base, "current.json")

    def release(self, release_id: str) -> str:
        return join(self.base, "releases", release_id)

    @property
    def keys(self) -> str:
        return join(self.base, "keys")

    @property
    def events(self) -> str:
        """Accepted live events, as Parquet micro-batches a later batch run can read as `events:`."""
        return join(self.base, "events")

    # --- inside a release (serving) -----------------------------------------------------------------
    RELEASE_TABLES = ("profiles", "keys", "links", "junk")

    def release_meta(self, release_id: str) -> str:
        """`release.json`: what a release holds (segments, models, percentile curves); written last."""
        return join(self.release(release_id), "release.json")

    def release_table(self, release_id: str, name: str) -> str:
        if name not in self.RELEASE_TABLES:
            raise ValueError(f"{name!r} is not a table of a release; tables: {', '.join(self.RELEASE_TABLES)}")
        return join(self.release(release_id), name)

    def release_model(self, release_id: str, segment: str) -> str:
        return join(self.release(release_id), "models", validate_segment_name(segment), "model.json")

    @property
    def releases(self) -> str:
        return join(self.base, "releases")

    def event_folder(self, day: str, hour: int, minute: int) -> str:
        """`events/YYYY-MM-DD/HH/MM/`: minute folders, so replicas tailing the log list only recent ones."""
        return join(self.events, validate_run_date(day), f"{hour:02d}", f"{minute:02d}")

    def key_file(self, key_id: str) -> str:
        """One partner API key's record (its hash, never the key)."""
        return join(self.keys, f"{key_id}.json")

    @property
    def secret(self) -> str:
        """The server secret behind partner-scoped persona ids (stable across releases)."""
        return join(self.base, "secret.json")
