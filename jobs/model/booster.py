"""The one way a model's bytes become an XGBoost booster, the one definition of a model's version, and the
threads a booster may use inside a Ray worker.

A model is the JSON document `model.json` of the models bundle; its version is the first 12 hex digits of
the sha256 of those bytes, so a version names exactly one model and anyone holding the bytes can check it.
"""

from __future__ import annotations

import hashlib

import xgboost
from threadpoolctl import threadpool_limits


def model_version(raw: bytes) -> str:
    """sha256 of the model's bytes, first 12 hex digits (what cards, scores and exports record)."""
    return hashlib.sha256(raw).hexdigest()[:12]


def load_booster(raw: bytes, nthread: int | None = None) -> xgboost.Booster:
    """A booster from model bytes; `nthread` caps its prediction threads (None: XGBoost's default)."""
    booster = xgboost.Booster()
    booster.load_model(bytearray(raw))
    if nthread:
        booster.set_param({"nthread": int(nthread)})
    return booster


def model_bytes(booster: xgboost.Booster) -> bytes:
    """The bytes `model.json` holds for a booster (XGBoost's JSON model format)."""
    return bytes(booster.save_raw("json"))


def openmp_threads(n: int) -> threadpool_limits:
    """Let XGBoost in this Ray worker use `n` threads inside a `with` block (limits restored after it).

    Ray starts a worker with OMP_NUM_THREADS set to its task's CPU reservation (1 for the fractional CPUs
    we give Train workers and scoring tasks), and XGBoost caps its `nthread` at OpenMP's maximum, so
    without this a Train worker asked for 2 threads trains on 1. threadpoolctl raises the limit of the
    OpenMP runtime XGBoost has loaded (this module imports xgboost first).
    """
    return threadpool_limits(limits=int(n), user_api="openmp")
