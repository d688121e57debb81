"""The pipeline's stages: thin shells that read tables, call domain functions and write tables.

Each module defines `run(...)`, whose signature declares what the stage reads and writes (`jobs.run.stage`);
no stage imports another. `pipeline()` orders them by what each reads.
"""

from __future__ import annotations

from jobs.run.stage import Stage, ordered


def pipeline() -> tuple[Stage, ...]:
    """Every stage of a run, each after the stages that write what it reads."""
    from jobs.stages import evaluate, export, features, labels, plan, report, resolve, score, train

    return ordered(
        [Stage.of(module.run) for module in (resolve, evaluate, plan, features, labels, train, score, report, export)]
    )
