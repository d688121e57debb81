"""The catalogue as data: FEATURES.md, the `features list` command, XGBoost types, config dependence."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from feature_events import AS_OF, CATEGORIES, hand_table

from features.catalog import (
    GROUPS,
    VOCABULARIES,
    catalog,
    category_slots,
    country_code,
    feature_names,
    xgboost_feature_types,
)
from features.compute import compute_local
from features.docs import render_catalog
from features.inputs import IDENTITY_COLUMNS, INPUT_SCHEMA
from features.stats import STATS
from jobs.config import FeaturesConfig
from jobs.contract import schema as contract

FEATURES_MD = Path(__file__).resolve().parents[2] / "FEATURES.md"


def test_features_md_is_the_rendered_catalogue():
    assert FEATURES_MD.read_text() == render_catalog(FeaturesConfig(), markdown=True), (
        "FEATURES.md is stale: run `python -m features.docs > FEATURES.md`"
    )


def test_features_md_lists_exactly_the_table_columns():
    listed = re.findall(r"^\| \d+ \| `([a-z0-9_]+)` \|", FEATURES_MD.read_text(), flags=re.M)
    table = compute_local(hand_table(), AS_OF, FeaturesConfig(), CATEGORIES)
    assert listed == table.column_names[2:]
    assert table.column_names[:2] == ["persona_id", "as_of"]


def test_features_list_command():
    from typer.testing import CliRunner

    from jobs.cli import app

    plain = CliRunner().invoke(app, ["features", "list"])
    assert plain.exit_code == 0 and "orders_30d" in plain.output
    assert f"{len(feature_names(FeaturesConfig()))} features" in plain.output
    markdown = CliRunner().invoke(app, ["features", "list", "--markdown"])
    assert markdown.exit_code == 0 and markdown.stdout == FEATURES_MD.read_text() + "\n"


def test_catalogue_shape():
    features = catalog(FeaturesConfig())
    assert len(features) >= 100
    assert {f.group for f in features} == set(GROUPS)
    assert {f.stat for f in features} <= STATS.keys()
    assert all(f.description and f.dtype in ("int64", "float64") for f in features)
    assert all(f.dtype == "float64" for f in features if f.kind == "c")  # NaN = missing
    assert all(f.missing == "0" or f.missing.startswith("NaN (") for f in features)
    assert len(xgboost_feature_types(FeaturesConfig())) == len(features)
    assert {"main_device_type", "main_payment_method", "country", "favourite_category"} <= {
        f.name for f in features if f.kind == "c"
    }


def test_catalogue_follows_the_config():
    small = FeaturesConfig(windows_days=[14, 60], top_categories=2)
    names = feature_names(small)
    assert "orders_14d" in names and "orders_7d" not in names and "view_to_cart_rate_60d" in names
    assert [n for n in names if n.endswith("_views_90d")] == ["cat00_views_90d", "cat01_views_90d"]
    assert category_slots(FeaturesConfig(categories=["a", "b", "c"])) == 3
    table = compute_local(hand_table(), AS_OF, small, ["electronics", "fashion"])
    assert table.column_names[2:] == names


def test_country_codes_are_fixed():
    assert country_code("BG") == 32 and country_code(" bg") == 32 and country_code("RO") == 456
    assert country_code("Bulgaria") == 676 and country_code(None) is None


def test_xgboost_reads_the_table_directly():
    xgboost = pytest.importorskip("xgboost")
    table = compute_local(hand_table(), AS_OF, FeaturesConfig(), CATEGORIES)
    names, types = feature_names(FeaturesConfig()), xgboost_feature_types(FeaturesConfig())
    matrix = np.column_stack([table.column(n).to_numpy().astype(np.float64) for n in names])
    data = xgboost.DMatrix(
        np.vstack([matrix] * 4),
        label=np.tile([1.0, 0.0, 1.0], 4),
        feature_names=names,
        feature_types=types,
        enable_categorical=True,
        missing=np.nan,
    )
    booster = xgboost.train({"tree_method": "hist", "max_cat_to_onehot": 1}, data, num_boost_round=2)
    assert booster.num_features() == len(names)


def test_vocabularies_and_input_columns_are_the_contracts():
    assert VOCABULARIES["device_type"] is contract.DEVICE_TYPES
    assert VOCABULARIES["payment_method"] is contract.PAYMENT_METHODS
    assert VOCABULARIES["traffic_source"] is contract.TRAFFIC_SOURCES
    read = [field for field in INPUT_SCHEMA if field not in IDENTITY_COLUMNS]
    assert read and all(field.equals(contract.CONTRACT_SCHEMA.field(field.name)) for field in read)
    assert "true_person_id" not in INPUT_SCHEMA.names
