"""What a stage is: a function whose signature declares everything it reads and writes.

    def run(view: FeaturesView, plan: RunPlan, events_resolved: TableIn, features: TableOut) -> dict: ...

Each parameter is one of:

    a `StageView` subclass   the part of the config the stage reads (typed, frozen); it is all the config the
                             stage can see, so its fingerprint cannot miss a setting the stage uses
    `RunPlan`                the run plan (`jobs.run.plan`)
    `RunIdentity`            run id and run date (only the plan stage needs them raw)
    `InputEvents`            the raw event files named by `events:`
    `TableIn` / `TableOut`   a run table read / published, named by the parameter (`jobs.run.layout.TABLES`)
    `FileOut`                a file of the run published whole, named by the parameter (`report` ...)
    `PartnerExports`         the partner exports of the run date, outside the run folder (`ROOT/exports/`)
    `StorageConfig`          for a stage that touches storage outside the run folder: not fingerprinted

so the pipeline derives a stage's inputs, outputs and fingerprint from the function itself (Dagster's
"dependencies come from what a step reads"), and the stage order from who writes what each stage reads.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import inspect
import json
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jobs.config import ExportView, JobConfig, StageView, StorageConfig
from jobs.exports.partners import run_date_exports
from jobs.run.layout import RunLayout
from jobs.run.plan import RunPlan
from jobs.storage import TableIn, TableOut, exists, file_sizes, list_files, read_bytes, write_bytes

EVENTS = "@events"  # the raw input files, read by the resolve stage
PLAN = "plan"  # the run plan, written by the plan stage and read by most others
EXPORTS = "@exports"  # the partner exports of the run date, written by the export stage


@dataclass(frozen=True)
class RunIdentity:
    run_id: str
    run_date: dt.date


@dataclass(frozen=True)
class InputEvents:
    """The event files the run reads (`events:` in the config): a file, folder or glob, local or s3://."""

    path: str
    storage: StorageConfig

    @property
    def version(self) -> str | None:
        """Name, size and modification time of every input file (no content read), hashed."""
        files = list_files(self.path, self.storage) if self.path else []
        if not files:
            return None
        listing = [list(row) for row in file_sizes(files, self.storage)]
        return "files-" + hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class FileOut:
    """One file of the run (the HTML report, an evaluation), replaced whole."""

    name: str
    path: str
    storage: StorageConfig

    def write(self, data: bytes) -> None:
        write_bytes(self.path, data, self.storage)

    @property
    def version(self) -> str | None:
        if not exists(self.path, self.storage):
            return None
        return "sha-" + hashlib.sha256(read_bytes(self.path, self.storage)).hexdigest()[:16]


@dataclass(frozen=True)
class PartnerExports:
    """The partner exports of the run date under the exports ROOT: `ROOT/exports/*/*/RUN_DATE/`.

    They belong to one run (the run id in their manifests). Their version is who owns them and which write
    they hold, so a run whose exports another run replaced does not count its export stage as done.
    """

    root: str
    run_date: dt.date
    storage: StorageConfig

    def manifests(self) -> dict[str, dict[str, Any]]:
        """{export folder: manifest} of every published export of the run date."""
        return run_date_exports(self.root, self.run_date.isoformat(), self.storage)

    def owners(self) -> dict[str, str]:
        """{export folder: the run id that wrote it}."""
        return {folder: str(manifest.get("run_id")) for folder, manifest in self.manifests().items()}

    @property
    def version(self) -> str | None:
        held = sorted([folder, m.get("run_id"), m.get("write_id")] for folder, m in self.manifests().items())
        if not held:
            return None
        return "exports-" + hashlib.sha256(json.dumps(held).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Stage:
    """A stage function and what its signature declares."""

    name: str
    function: Callable[..., Any]
    parameters: tuple[tuple[str, Any], ...]  # (parameter name, annotation), in order

    @classmethod
    def of(cls, function: Callable[..., Any], name: str | None = None) -> Stage:
        hints = typing.get_type_hints(function)
        parameters = []
        for parameter in inspect.signature(function).parameters.values():
            if parameter.name not in hints:
                raise TypeError(f"stage {function.__qualname__}: parameter {parameter.name!r} has no type")
            kind = hints[parameter.name]
            if not (kind in _KINDS or (isinstance(kind, type) and issubclass(kind, StageView))):
                raise TypeError(
                    f"stage {function.__qualname__}: parameter {parameter.name!r} of type {kind!r} is "
                    "not a stage input or output (see jobs.run.stage)"
                )
            parameters.append((parameter.name, kind))
        stage_name = name or function.__module__.rsplit(".", 1)[-1]
        return cls(stage_name, function, tuple(parameters))

    @property
    def reads(self) -> tuple[str, ...]:
        names = []
        for name, kind in self.parameters:
            if kind is TableIn:
                names.append(name)
            elif kind is RunPlan:
                names.append(PLAN)
            elif kind is InputEvents:
                names.append(EVENTS)
        return tuple(names)

    @property
    def writes(self) -> tuple[str, ...]:
        names = [name for name, kind in self.parameters if kind in (TableOut, FileOut)]
        if any(kind is PartnerExports for _, kind in self.parameters):
            names.append(EXPORTS)
        if typing.get_type_hints(self.function).get("return") is RunPlan:
            names.append(PLAN)
        return tuple(names)

    @property
    def view(self) -> type[StageView] | None:
        views = [kind for _, kind in self.parameters if isinstance(kind, type) and issubclass(kind, StageView)]
        return views[0] if views else None

    @property
    def takes_identity(self) -> bool:
        return any(kind is RunIdentity for _, kind in self.parameters)


_KINDS = (RunPlan, RunIdentity, InputEvents, TableIn, TableOut, FileOut, PartnerExports, StorageConfig)


@dataclass(frozen=True)
class StageContext:
    """What the pipeline knows when it calls a stage."""

    config: JobConfig
    layout: RunLayout
    identity: RunIdentity
    plan: RunPlan | None

    def argument(self, name: str, kind: Any) -> Any:
        storage = self.config.storage
        if isinstance(kind, type) and issubclass(kind, StageView):
            return kind.from_config(self.config)
        if kind is RunPlan:
            if self.plan is None:
                raise RuntimeError("the run plan is not decided yet: the plan stage runs before any stage reading it")
            return self.plan
        if kind is RunIdentity:
            return self.identity
        if kind is InputEvents:
            return InputEvents(self.config.events or "", storage)
        if kind is TableIn:
            return TableIn(name, self.layout.table(name), storage)
        if kind is TableOut:
            return TableOut(name, self.layout.table(name), storage)
        if kind is FileOut:
            return FileOut(name, getattr(self.layout, name), storage)
        if kind is PartnerExports:
            return self.partner_exports()
        if kind is StorageConfig:
            return storage
        raise TypeError(kind)

    def partner_exports(self) -> PartnerExports:
        return PartnerExports(ExportView.from_config(self.config).root, self.identity.run_date, self.config.storage)

    def arguments(self, stage: Stage) -> dict[str, Any]:
        return {name: self.argument(name, kind) for name, kind in stage.parameters}

    def version(self, name: str) -> str | None:
        """The version of something a stage reads or writes (a table's write id, the plan's digest ...)."""
        if name == PLAN:
            return None if self.plan is None else self.plan.digest
        if name == EVENTS:
            return InputEvents(self.config.events or "", self.config.storage).version
        if name == EXPORTS:
            return self.partner_exports().version
        if hasattr(RunLayout, name) and not callable(getattr(RunLayout, name)):
            return FileOut(name, getattr(self.layout, name), self.config.storage).version
        return TableIn(name, self.layout.table(name), self.config.storage).version

    def fingerprint(self, stage: Stage) -> tuple[str, dict[str, Any]]:
        """What decides a stage's output: its config view, the run identity if it takes it, its inputs."""
        view = stage.view
        read = {
            "view": view.from_config(self.config).fingerprint() if view else None,
            "identity": [self.identity.run_id, self.identity.run_date.isoformat()] if stage.takes_identity else None,
            "inputs": {name: self.version(name) for name in stage.reads},
        }
        payload = json.dumps({"stage": stage.name, **read}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16], read


def ordered(stages: list[Stage]) -> tuple[Stage, ...]:
    """The stages in an order where each runs after every stage that writes what it reads."""
    writers = {}
    for stage in stages:
        for name in stage.writes:
            if name in writers:
                raise ValueError(f"{name} is written by two stages: {writers[name].name} and {stage.name}")
            writers[name] = stage
    done: list[Stage] = []
    pending = list(stages)
    while pending:
        ready = [s for s in pending if all(writers.get(r) in done or r not in writers for r in s.reads)]
        if not ready:
            raise ValueError("the stages read each other's outputs in a cycle: " + ", ".join(s.name for s in pending))
        done.append(ready[0])
        pending.remove(ready[0])
    return tuple(done)


def upstream_of(stage: Stage, stages: tuple[Stage, ...]) -> list[Stage]:
    writers = {name: s for s in stages for name in s.writes}
    return [writers[name] for name in stage.reads if name in writers]
