"""The evaluate stage (`segments evaluate-personas`): the run's personas against a ground-truth column.

Pairwise precision / recall / F1, person completeness and persona purity of events_resolved, and the same
for an oracle that resolves the same rows with the truth as its junk detector (`jobs.identity.evaluation`),
written to `evaluation/personas.json`. Only test data has a truth column; it is not a stage of a normal run.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from jobs.config import EvaluateView
from jobs.errors import UserError
from jobs.identity.distributed import RayExecutor
from jobs.identity.evaluation import oracle_metrics, pairwise_metrics
from jobs.run.stage import FileOut
from jobs.storage import TableIn

log = logging.getLogger(__name__)


def run(
    view: EvaluateView, events_resolved: TableIn, identity_audit: TableIn, persona_evaluation: FileOut
) -> dict[str, Any]:
    truth_column = view.evaluation.truth_column
    events = events_resolved.dataset()
    columns = events.schema().names
    if truth_column not in columns:
        raise UserError(
            f"{events_resolved.path} has no ground-truth column {truth_column!r} (columns: {', '.join(columns)})."
        )
    ex = RayExecutor(view.num_partitions, view.components_one_task_edges)
    blocks = events.to_arrow_refs()
    result = pairwise_metrics(ex, blocks, truth_column)
    result["oracle"] = oracle_metrics(ex, blocks, view.identity, truth_column)
    del blocks
    result.update(
        rows=events_resolved.marker["rows"],
        identifiers_audited=identity_audit.marker["rows"],
        truth_column=truth_column,
    )
    persona_evaluation.write(json.dumps(result, indent=2, sort_keys=True).encode())
    log.info(
        "evaluate-personas: precision %.4f recall %.4f F1 %.4f (oracle %.4f / %.4f)",
        result["pairwise_precision"],
        result["pairwise_recall"],
        result["pairwise_f1"],
        result["oracle"]["pairwise_precision"],
        result["oracle"]["pairwise_recall"],
    )
    return {"rows_in": result["rows"], **result}
