"""How often the model checks cry wolf on clean data, and how often they catch planted faults.

For every (seed, persons) the generator writes a sample, the real resolve, plan, features and labels stages
run on Ray (`segments run` as a user runs it, up to labels), then every configured segment is judged the
way the train stage judges it, in this process: the same eligible rows, labels and hash split
(`jobs.model.examples.prepare_batch`), the look-alike fitted with plain `xgboost.train` on the same
parameters (the train stage fits the same booster on Ray Train; Ray's fixed cost per fit would make ten
runs take an hour here), the same RFM booster, and the very functions that decide: `quality.chance_test`,
`quality.leakage_check` (with `past_y`: each evaluation row's label at train_as_of, the window that ends at
the evaluation cut-off, and `reference`: positive in any segment with the same cut-offs at eval_as_of vs at
train_as_of, as the train stage passes them), `champion.candidate_alarms`, `champion.choose`.
Conditions per run:

* clean: the data as generated. A false alarm = any candidate alarm; a clean rejection is counted apart.
* future_feature: one non-RFM column replaced by the persona's purchases in the 30 days AFTER the cut-off.
* label_feature: one non-RFM column replaced by the label itself.
* row_order: labels attached to the feature rows by row order (each label on another persona's row).

A fault is caught when the look-alike carrying it is not exported: an alarm on it (leaks), or the segment
rejected (row order). Figures go to stdout and --out.

    flock /tmp/segments-heavy.lock timeout 600 \
        .venv/bin/python scripts/alarm_rates.py --seeds 1 2 3 4 5 --persons 2000 4000

`--work DIR` keeps the generated events and runs (a second call with the same DIR judges them again without
generating or resolving); `--conditions` judges only some conditions.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import tempfile
import time
from collections import Counter

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import xgboost

from features.catalog import feature_names, xgboost_feature_types
from features.matrix import feature_matrix
from jobs.config import JobConfig, StorageConfig
from jobs.model import champion, quality
from jobs.model.baselines import default_rfm_features, fit_rfm
from jobs.model.booster import load_booster
from jobs.model.examples import LABEL, VALID, prepare_batch
from jobs.run.layout import EVENTS_RESOLVED, FEATURES, LABELS, RunLayout
from jobs.run.pipeline import run_pipeline
from jobs.run.plan import RunPlan
from jobs.segments.definitions import label_column
from jobs.stages import pipeline
from jobs.storage import TableIn, read_json
from jobs.synthetic.files import write_events

CONDITIONS = ("clean", "future_feature", "label_feature", "row_order")
FUTURE_DAYS = 30
PAST_LABEL = "_past_label"
REFERENCE_FUTURE, REFERENCE_PAST = "_reference_future", "_reference_past"
EXTRA = (PAST_LABEL, REFERENCE_FUTURE, REFERENCE_PAST)


def _planted_column(names: list[str], types: list[str], rfm: list[str]) -> str:
    return next(n for n, t in zip(names, types) if t in ("q", "float") and n not in rfm)


def _future_purchases(purchases: pd.DataFrame, as_of: dt.date) -> dict[str, float]:
    """Purchases per persona in the FUTURE_DAYS after the cut-off: what a feature that peeks computes."""
    start = pd.Timestamp(as_of, tz="UTC")
    window = purchases[(purchases["ts"] >= start) & (purchases["ts"] < start + pd.Timedelta(days=FUTURE_DAYS))]
    return window.groupby("persona_id").size().astype(float).to_dict()


def _labels_at(labels: TableIn, as_of) -> pa.Table | None:
    try:
        at = labels.arrow(partition={"as_of": as_of})
    except FileNotFoundError:
        return None
    return at.drop_columns([c for c in at.column_names if c == "as_of"])


def _any_positive(table: pa.Table | None, columns: list[str], name: str) -> pa.Table | None:
    """persona_id and `name`: 1 where the persona is a positive of any of `columns` (None: no such rows)."""
    present = [c for c in columns if table is not None and c in table.column_names]
    if not present:
        return None
    hits = np.zeros(table.num_rows, dtype=np.int64)
    for c in present:
        hits |= table.column(c).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    return pa.table({"persona_id": table.column("persona_id"), name: pa.array(hits)})


def _labelled(
    features: TableIn, labels: TableIn, as_of, names: list[str], past_as_of, label: str, reference: list[str]
) -> pa.Table:
    """The snapshot at `as_of` with its labels, in PAST_LABEL the segment's label at `past_as_of` (the window
    one horizon earlier, ending at `as_of`) and in REFERENCE_FUTURE / REFERENCE_PAST the reference pair the
    train stage passes: positive in any of the `reference` label columns (the segments with the same cut-offs)
    at `as_of` / `past_as_of`; joined by persona: absent = 0, as in the labels table."""
    snapshot = features.arrow(columns=["persona_id", *names], partition={"as_of": as_of})
    at, past = _labels_at(labels, as_of), _labels_at(labels, past_as_of)
    if at is not None:
        snapshot = snapshot.join(at, keys="persona_id", join_type="left outer")
    past_own = (
        past.select(["persona_id", label]).rename_columns(["persona_id", PAST_LABEL])
        if past is not None and label in past.column_names
        else None
    )
    for name, table in (
        (PAST_LABEL, past_own),
        (REFERENCE_FUTURE, _any_positive(at, reference, REFERENCE_FUTURE)),
        (REFERENCE_PAST, _any_positive(past, reference, REFERENCE_PAST)),
    ):
        if table is not None:
            snapshot = snapshot.join(table, keys="persona_id", join_type="left outer")
        else:
            snapshot = snapshot.append_column(name, pa.nulls(len(snapshot), pa.int64()))
        snapshot = snapshot.set_column(
            snapshot.column_names.index(name), name, pc.fill_null(snapshot.column(name).cast(pa.int64()), 0)
        )
    return snapshot


def _plant(table: pa.Table, condition: str, column: str, label: str, future: dict, rng) -> pa.Table:
    if condition == "row_order":  # each label lands on another persona's features
        if label not in table.column_names:
            return table
        i = table.column_names.index(label)
        return table.set_column(i, label, table.column(label).take(pa.array(rng.permutation(len(table)))))
    if condition == "label_feature":
        y = pc.fill_null(table.column(label), 0) if label in table.column_names else pa.array(np.zeros(len(table)))
        values = pc.cast(y, pa.float64())
    elif condition == "future_feature":
        values = pa.array([float(future.get(p, 0)) for p in table.column("persona_id").to_pylist()], pa.float64())
    else:
        return table
    i = table.column_names.index(column)
    return table.set_column(i, column, values.cast(table.schema.field(column).type))


def _judge(train: pa.Table, evaluation: pa.Table, names, types, rfm, config: JobConfig) -> dict:
    t = config.training
    X = feature_matrix(train, names)
    y = train.column(LABEL).to_numpy(zero_copy_only=False).astype(np.float32)
    valid = train.column(VALID).to_numpy(zero_copy_only=False).astype(bool)
    positives = int(y[~valid].sum())
    if int(y.sum()) < t.min_positives or len(y) - int(y.sum()) < t.min_negatives:
        return {"status": "skipped", "positives": int(y.sum())}
    params = {
        **t.params,
        "seed": t.seed,
        "nthread": 2,
        "scale_pos_weight": (int((~valid).sum()) - positives) / max(1, positives),
    }
    dtrain = xgboost.DMatrix(X[~valid], y[~valid], feature_names=names, feature_types=types, enable_categorical=True)
    dvalid = xgboost.DMatrix(X[valid], y[valid], feature_names=names, feature_types=types, enable_categorical=True)
    booster = xgboost.train(
        params, dtrain, t.num_boost_round, evals=[(dvalid, "validation")],
        early_stopping_rounds=t.early_stopping_rounds, verbose_eval=False,
    )  # fmt: skip
    booster = booster[: booster.best_iteration + 1]
    rfm_model = fit_rfm({c: train.column(c).to_numpy(zero_copy_only=False) for c in rfm}, y, valid, seed=t.seed)
    y_eval = evaluation.column(LABEL).to_numpy(zero_copy_only=False).astype(np.int64)
    scores = {
        champion.XGBOOST: booster.inplace_predict(feature_matrix(evaluation, names)),
        champion.RFM: load_booster(rfm_model).inplace_predict(feature_matrix(evaluation, rfm)),
    }
    features = {champion.XGBOOST: names, champion.RFM: rfm}
    past_y, reference_future, reference_past = (
        evaluation.column(c).to_numpy(zero_copy_only=False).astype(np.int64)
        for c in (PAST_LABEL, REFERENCE_FUTURE, REFERENCE_PAST)
    )
    leakage = quality.leakage_check(
        {n: evaluation.column(n).to_numpy(zero_copy_only=False) for n in names},
        y_eval,
        past_y=past_y,
        reference=(reference_future, reference_past),
    )
    entries = {}
    for name, score in scores.items():
        figures = quality.binary_metrics(y_eval, score, calibrated=False)
        chance = quality.chance_test(y_eval, score, seed=t.seed)
        alarms = champion.candidate_alarms(figures, leakage, features[name])
        entries[name] = champion.candidate_entry(figures, chance, alarms, features[name])
    chosen, why = champion.choose(entries, champion.RFM, t.champion_margin)
    return {
        "status": "trained" if chosen else "rejected",
        "chosen": chosen,
        "reason": why,
        "eval_positives": int(y_eval.sum()),
        "eval_rows": int(len(y_eval)),
        "pr_auc": {n: e["pr_auc"] for n, e in entries.items()},
        "roc_auc": {n: e["roc_auc"] for n, e in entries.items()},
        "base_rate": entries[champion.RFM]["base_rate"],
        "alarms": {n: e["alarms"] for n, e in entries.items() if e["alarms"]},
        "future_over_past": leakage.get("future_over_past"),
    }


def one_run(seed: int, persons: int, work: str, conditions: list[str]) -> list[dict]:
    storage = StorageConfig()
    events_dir = os.path.join(work, f"events-{seed}-{persons}")
    root = os.path.join(work, f"root-{seed}-{persons}")
    if not os.path.isdir(events_dir):
        write_events(events_dir, storage, persons=persons, seed=seed)
    config = JobConfig(events=events_dir, root=root, run_id="alarms")
    summary = run_pipeline(config, pipeline(), names=["resolve", "plan", "features", "labels"])
    layout = RunLayout(summary["run_dir"])
    plan = RunPlan.from_json(read_json(layout.plan, storage))
    features_config = config.features.model_copy(update={"categories": list(plan.categories)})
    names, types = feature_names(features_config), xgboost_feature_types(features_config)
    rfm = list(config.training.rfm_features or default_rfm_features(names))
    planted = _planted_column(names, types, rfm)
    features = TableIn(FEATURES, layout.table(FEATURES), storage)
    labels = TableIn(LABELS, layout.table(LABELS), storage)
    events = (
        TableIn(EVENTS_RESOLVED, layout.table(EVENTS_RESOLVED), storage)
        .arrow(columns=["persona_id", "ts", "event_type"])
        .to_pandas()
    )
    purchases = events[events["event_type"] == "purchase"]
    purchases = purchases.assign(ts=pd.to_datetime(purchases["ts"], utc=True))
    rows = []
    for segment in config.segments:
        cut = plan.for_segment(segment.name)
        label = label_column(segment.name)
        same_cutoffs = [
            label_column(s.name)
            for s in config.segments
            if (plan.for_segment(s.name).train_as_of, plan.for_segment(s.name).eval_as_of)
            == (cut.train_as_of, cut.eval_as_of)
        ]
        past_of = {
            cut.train_as_of: cut.train_as_of - (cut.eval_as_of - cut.train_as_of),
            cut.eval_as_of: cut.train_as_of,
        }
        for condition in conditions:
            rng = np.random.default_rng([seed, persons])
            prepared = {}
            for as_of in (cut.train_as_of, cut.eval_as_of):
                future = _future_purchases(purchases, as_of) if condition == "future_feature" else {}
                labelled = _labelled(features, labels, as_of, names, past_of[as_of], label, same_cutoffs)
                table = _plant(labelled, condition, planted, label, future, rng)
                prepared[as_of] = prepare_batch(
                    table, segment, [*names, *EXTRA], list(plan.categories), config.training.validation_share,
                    config.training.seed, label,
                )  # fmt: skip
            judged = _judge(prepared[cut.train_as_of], prepared[cut.eval_as_of], names, types, rfm, config)
            rows.append({"seed": seed, "persons": persons, "segment": segment.name, "condition": condition} | judged)
            logging.getLogger("alarm_rates").info("%s", json.dumps(rows[-1], default=str))
    return rows


def rates(rows: list[dict]) -> dict:
    out = {}
    for condition in dict.fromkeys(r["condition"] for r in rows):
        judged = [r for r in rows if r["condition"] == condition and r["status"] != "skipped"]
        if condition == "clean":
            alarms = sum(1 for r in judged if r["alarms"])
            rejected = sum(1 for r in judged if r["status"] == "rejected")
            out[condition] = {"judged": len(judged), "false_alarms": alarms, "rejected": rejected}
        elif condition == "row_order":
            caught = sum(1 for r in judged if r["status"] == "rejected")
            out[condition] = {"judged": len(judged), "caught": caught}
        else:
            caught = sum(1 for r in judged if champion.XGBOOST in r["alarms"] and r["chosen"] != champion.XGBOOST)
            out[condition] = {"judged": len(judged), "caught": caught}
        out[condition]["skipped"] = sum(1 for r in rows if r["condition"] == condition and r["status"] == "skipped")
        out[condition]["chosen"] = dict(Counter(str(r.get("chosen")) for r in judged))
    return out


def _largest(row: dict) -> str:
    check = row.get("future_over_past") or {}
    if not check.get("largest"):
        return check.get("note", "-")
    top = check["largest"][0]
    return f"{top['feature']} z {top['z']} (needed {check['z_needed']})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--persons", type=int, nargs="+", default=[2000, 4000])
    parser.add_argument("--out", default=".bench/alarm_rates.json")
    parser.add_argument("--work", default=None, help="keep (and reuse) generated events and runs here")
    parser.add_argument("--conditions", nargs="+", choices=CONDITIONS, default=list(CONDITIONS))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("alarm_rates").setLevel(logging.INFO)
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or scratch
        for persons in args.persons:
            for seed in args.seeds:
                rows.extend(one_run(seed, persons, work, args.conditions))
    result = {"rates": rates(rows), "rows": rows, "seconds": round(time.perf_counter() - started, 1)}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1, default=str)
    print(json.dumps(result["rates"], indent=1))
    for r in rows:
        if r["status"] != "skipped":
            print(
                f"{r['persons']:>5} seed {r['seed']} {r['segment']:<28} {r['condition']:<15} {r['status']:<9} "
                f"chosen={r.get('chosen')} PR-AUC xgb {r['pr_auc']['xgboost']} rfm {r['pr_auc']['rfm']} "
                f"base {r['base_rate']} alarms={r['alarms']} largest future-over-past: {_largest(r)}"
            )
    print(f"{len(rows)} judgements in {result['seconds']}s")


if __name__ == "__main__":
    main()
