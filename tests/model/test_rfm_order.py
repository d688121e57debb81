"""The RFM baseline is the same model whatever order its sampled rows arrive in: a Ray Data pass hands the
blocks over in any order, and XGBoost's sketch and splits depend on the rows' order."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from jobs.config import TrainingConfig
from jobs.model.examples import LABEL, SAMPLE, VALID
from jobs.model.training import baseline_booster

COLUMNS = ["days_since_last_purchase", "orders_365d", "revenue_365d"]


def _rows(n: int = 80_000, seed: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    orders = rng.poisson(2, n).astype(float)
    days = np.where(orders > 0, rng.uniform(0, 365, n), np.nan)
    revenue = orders * rng.gamma(2.0, 30.0, n)
    y = (rng.random(n) < 0.03 + 0.3 * np.minimum(orders, 5) / 5).astype(np.int64)
    return {
        "days_since_last_purchase": days,
        "orders_365d": orders,
        "revenue_365d": revenue,
        LABEL: y,
        VALID: rng.random(n) < 0.2,
        SAMPLE: rng.random(n),
    }


def test_the_rfm_baseline_does_not_depend_on_the_order_of_its_rows():
    rows = _rows()
    t = TrainingConfig()
    fitted = {}
    for seed in (0, 1, 2):
        order = np.random.default_rng(seed).permutation(len(rows[LABEL]))
        shuffled = pa.table({column: values[order] for column, values in rows.items()})
        fitted[seed] = baseline_booster(shuffled, COLUMNS, t.seed, 1)
    assert fitted[0] == fitted[1] == fitted[2]
