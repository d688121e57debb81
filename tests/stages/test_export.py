"""Export stage: isolation per partner (local and moto S3), manifests, path tricks refused, a failure between
the parts and the manifest, reruns that replace, and the stage's place in the runner.

scores/ and identity_map/ are built here by hand (the shapes the contract fixes), with personas shared by
several partners, so every key of every export can be checked against what that partner supplied.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import posixpath
import re
import urllib.request

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.config import ExportConfig, ExportView, JobConfig, RayConfig, StorageConfig
from jobs.errors import UserError
from jobs.exports.partners import list_exports, presigned_urls
from jobs.raykit import join as raykit_join
from jobs.run.layout import IDENTITY_MAP, SCORES, ExportLayout, RunLayout
from jobs.run.pipeline import run_pipeline
from jobs.run.stage import EXPORTS, PartnerExports, RunIdentity, Stage, ordered
from jobs.segments.membership import SCORES_SCHEMA
from jobs.stages import export
from jobs.storage import TableIn, TableOut, exists, folders, join, list_files, read_bytes, read_json

RUN_DATE = "2026-03-01"
SEGMENT_VERSIONS = {"seg_a": "aaaaaaaaaaaa", "seg_b": "bbbbbbbbbbbb"}
TS = dt.datetime(2026, 2, 1, tzinfo=dt.timezone.utc)
# The join's hash partitions for tests of a few hundred rows where a test takes the hash join (the default, 8,
# is sized for real data and costs a shuffle task per partition); the leak test's hash variant keeps 3 so rows
# of one partner do cross partitions.
SMALL_RAY = RayConfig(num_partitions=2)

IDENTITY_SCHEMA = pa.schema(
    [
        ("identifier_type", pa.string()),
        ("identifier", pa.string()),
        ("partner_id", pa.string()),
        ("persona_id", pa.string()),
        ("first_seen", pa.timestamp("us", tz="UTC")),
        ("last_seen", pa.timestamp("us", tz="UTC")),
        ("n_events", pa.int64()),
        ("seen_at_partners", pa.list_(pa.string())),
    ]
)


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def id_row(kind: str, value: str, persona: str, seen: list[str] | None, partner: str | None = None) -> dict:
    return {
        "identifier_type": kind,
        "identifier": value,
        "partner_id": partner,
        "persona_id": persona,
        "first_seen": TS,
        "last_seen": TS,
        "n_events": 3,
        "seen_at_partners": seen,
    }


def fixed_identity() -> list[dict]:
    """Hand-made personas, several shared by partners; comments say what each partner may get."""
    return [
        # A: shared by p1 and p2. p1: c1, sha(a@x). p2: c9, sha(a@x), sha(+111). Never c1 to p2 or c9 to p1.
        id_row("customer", "c1", "A", ["p1"], "p1"),
        id_row("customer", "c9", "A", ["p2"], "p2"),
        id_row("email", "a@x.com", "A", ["p1", "p2"]),
        id_row("phone", "+111", "A", ["p2"]),
        id_row("device", "dev-A", "A", ["p1", "p2"]),
        id_row("click_token", "tok-A", "A", ["p1"], "p1"),
        # B: p1 only.
        id_row("customer", "c2", "B", ["p1"], "p1"),
        id_row("email", "b@x.com", "B", ["p1"]),
        # C: shared by p2 and p3: p2: s1, sha(+222). p3: sha(c@x), sha(+222).
        id_row("subscriber", "s1", "C", ["p2"], "p2"),
        id_row("email", "c@x.com", "C", ["p3"]),
        id_row("phone", "+222", "C", ["p2", "p3"]),
        # an inconsistent row (scoped to p1, carried by p3 only) is dropped, never re-routed
        id_row("customer", "c7", "C", ["p3"], "p1"),
        # D: member with only a device id: nothing exportable to anyone.
        id_row("device", "dev-D", "D", ["p1", "p3"]),
        # E: not a member anywhere.
        id_row("customer", "c5", "E", ["p1"], "p1"),
        id_row("email", "e@x.com", "E", ["p1", "p3"]),
    ]


def fixed_scores() -> list[dict]:
    rows = []
    for persona, seg, member in [
        ("A", "seg_a", True),
        ("B", "seg_a", True),
        ("C", "seg_a", True),
        ("D", "seg_a", True),
        ("E", "seg_a", False),
        ("A", "seg_b", True),
        ("B", "seg_b", False),
        ("C", "seg_b", False),
        ("E", "seg_b", False),
    ]:
        rows.append(
            {
                "persona_id": persona,
                "segment": seg,
                "score": 0.9 if member else 0.1,
                "percentile": 95.0 if member else 10.0,
                "model_version": SEGMENT_VERSIONS[seg],
                "member": member,
            }
        )
    return rows


def random_world(n_personas: int = 400, partners: int = 5, seed: int = 11) -> tuple[list[dict], list[dict]]:
    """Many personas, most shared by several partners, each partner carrying its own ids and some contacts."""
    rng = np.random.default_rng(seed)
    names = [f"p{i}" for i in range(1, partners + 1)]
    identity, scores = [], []
    for i in range(n_personas):
        persona = f"per-{i:04d}"
        seen_by = sorted(rng.choice(names, size=int(rng.integers(1, partners + 1)), replace=False).tolist())
        for partner in seen_by:
            identity.append(id_row("customer", f"{partner}-cust-{i}", persona, [partner], partner))
            if rng.random() < 0.3:
                identity.append(id_row("subscriber", f"{partner}-sub-{i}", persona, [partner], partner))
        for k in range(int(rng.integers(0, 3))):
            carried = sorted(rng.choice(seen_by, size=int(rng.integers(1, len(seen_by) + 1)), replace=False).tolist())
            identity.append(id_row("email", f"person{i}.{k}@example.org", persona, carried))
        if rng.random() < 0.5:
            identity.append(id_row("phone", f"+4915{i:07d}", persona, [seen_by[0]]))
        identity.append(id_row("device", f"dev-{i}", persona, seen_by))
        for seg in SEGMENT_VERSIONS:
            s = float(rng.random())
            scores.append(
                {
                    "persona_id": persona,
                    "segment": seg,
                    "score": s,
                    "percentile": 100 * s,
                    "model_version": SEGMENT_VERSIONS[seg],
                    "member": s > 0.6,
                }
            )
    return identity, scores


def build_run(
    root: str, storage: StorageConfig, identity: list[dict], scores: list[dict], run_id: str = "r1"
) -> RunLayout:
    layout = RunLayout.for_run(root, run_id)
    TableOut(IDENTITY_MAP, layout.table(IDENTITY_MAP), storage).write_arrow(
        pa.Table.from_pylist(identity, schema=IDENTITY_SCHEMA)
    )
    # scores in three parts, so a partner's and a segment's members are in several blocks
    table = pa.Table.from_pylist(scores, schema=SCORES_SCHEMA)
    size = -(-table.num_rows // 3)
    with TableOut(SCORES, layout.table(SCORES), storage).writing({"segments": SEGMENT_VERSIONS, "skipped": []}) as w:
        for i in range(3):
            w.write_arrow(table.slice(i * size, size), name=f"part-{i:05d}")
    return layout


def run_export(layout: RunLayout, config: JobConfig, run_date: str = RUN_DATE) -> dict:
    """The stage called as the runner calls it."""
    storage = config.storage
    view = ExportView.from_config(config)
    return export.run(
        view=view,
        identity=RunIdentity(layout.run_id, dt.date.fromisoformat(run_date)),
        scores=TableIn(SCORES, layout.table(SCORES), storage),
        identity_map=TableIn(IDENTITY_MAP, layout.table(IDENTITY_MAP), storage),
        exports=PartnerExports(view.root, dt.date.fromisoformat(run_date), storage),
    )


def supplied_keys(identity: list[dict], partner: str) -> dict[tuple[str, str], str]:
    """What `partner` gave us itself, as export keys -> persona (computed independently of jobs.exports)."""
    keys = {}
    for row in identity:
        seen = row["seen_at_partners"] or []
        if row["identifier_type"] in ("customer", "subscriber") and row["partner_id"] == partner and partner in seen:
            keys[(row["identifier_type"] + "_id", row["identifier"])] = row["persona_id"]
        elif row["identifier_type"] in ("email", "phone") and partner in seen:
            keys[(row["identifier_type"] + "_sha256", sha(row["identifier"]))] = row["persona_id"]
    return keys


def read_export(folder: str, storage: StorageConfig) -> tuple[dict, pa.Table]:
    manifest = read_json(join(folder, "manifest.json"), storage)
    tables = []
    for part in manifest["parts"]:
        data = read_bytes(join(folder, part["path"]), storage)
        assert hashlib.sha256(data).hexdigest() == part["sha256"], "manifest checksum matches the part"
        assert len(data) == part["bytes"]
        table = pq.read_table(pa.BufferReader(data))
        assert table.num_rows == part["rows"]
        tables.append(table)
    return manifest, pa.concat_tables(tables)


def export_folders(root: str, storage: StorageConfig) -> list[str]:
    """Every folder under ROOT/exports that holds a part or a manifest (staging, hidden, is skipped)."""
    return sorted({posixpath.dirname(f) for f in list_files(join(root, "exports"), storage)})


FIXED_PERSONAS = {"A", "B", "C", "D", "E"}
PARTNERS = ("p1", "p2", "p3", "p4", "p5")


def check_isolation(root: str, storage: StorageConfig, identity: list[dict], scores: list[dict]) -> dict:
    """Every key of every export is one the partner supplied, of a member; and every such key is there."""
    members = {(r["persona_id"], r["segment"]) for r in scores if r["member"]}
    score_of = {(r["persona_id"], r["segment"]): r["score"] for r in scores}
    supplied = {p: supplied_keys(identity, p) for p in PARTNERS}
    all_keys = {k for own in supplied.values() for k in own}
    got = {}
    for partner, own in supplied.items():
        foreign = all_keys - set(own)
        for seg in SEGMENT_VERSIONS:
            manifest, table = read_export(join(root, "exports", partner, seg, RUN_DATE), storage)
            assert table.column_names == ["key_type", "key", "score", "percentile"]
            assert manifest["run_id"] == "r1" and manifest["model_version"] == SEGMENT_VERSIONS[seg]
            assert manifest["rows"] == table.num_rows and manifest["partner_id"] == partner
            assert manifest["run_date"] == RUN_DATE and manifest["segment"] == seg
            assert [c["name"] for c in manifest["schema"]] == table.column_names
            rows = table.to_pylist()
            keys = [(r["key_type"], r["key"]) for r in rows]
            assert len(keys) == len(set(keys)), "each key once"
            assert not set(keys) & foreign, f"{partner}/{seg} holds another partner's identifiers"
            for row, key in zip(rows, keys):
                assert key in own, f"{partner}/{seg}: {key} was not supplied by {partner}"
                assert (own[key], seg) in members, "only members"
                assert row["score"] == score_of[(own[key], seg)]
            assert set(keys) == {k for k, persona in own.items() if (persona, seg) in members}, (
                "every member the partner saw, by every key it supplied"
            )
            got[(partner, seg)] = {k for k in keys if own[k] in FIXED_PERSONAS}
    return got


def files_without_write_id(root: str, storage: StorageConfig) -> list[str]:
    return sorted(re.sub(r"-\d{8}T\d{6}-[0-9a-f]{8}", "", f) for f in list_files(join(root, "exports"), storage))


# ----------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize(
    ("where", "join_path"),
    [("local", "broadcast"), ("local", "hash"), pytest.param("s3", "broadcast", marks=pytest.mark.slow)],
)
def test_exports_hold_only_what_each_partner_supplied(
    where, join_path, tmp_path, ray_cluster, storage, s3_bucket, monkeypatch
):
    """Leak test: hand-made shared personas (exact expectations) plus a world of 400 randomly shared ones; the
    keys joined by broadcast (a few thousand keys) and by the hash join that more keys than
    `BROADCAST_ROWS` take."""
    if join_path == "hash":
        monkeypatch.setattr(raykit_join, "BROADCAST_ROWS", 0)
    root = str(tmp_path / "out") if where == "local" else s3_bucket + "/data"
    world_ids, world_scores = random_world()
    identity, scores = fixed_identity() + world_ids, fixed_scores() + world_scores
    layout = build_run(root, storage, identity, scores)
    config = JobConfig(root=root, storage=storage, ray=RayConfig(num_partitions=3))
    summary = run_export(layout, config)
    assert summary["run_date"] == RUN_DATE and summary["partners"] == 5 and summary["rows_out"] > 500
    assert summary["segments"] == ["seg_a", "seg_b"] and len(summary["exports"]) == 5 * 2

    got = check_isolation(root, storage, identity, scores)
    assert got[("p1", "seg_a")] == {
        ("customer_id", "c1"),
        ("email_sha256", sha("a@x.com")),
        ("customer_id", "c2"),
        ("email_sha256", sha("b@x.com")),
    }
    assert got[("p2", "seg_a")] == {
        ("customer_id", "c9"),
        ("email_sha256", sha("a@x.com")),
        ("phone_sha256", sha("+111")),
        ("subscriber_id", "s1"),
        ("phone_sha256", sha("+222")),
    }
    assert got[("p3", "seg_a")] == {("email_sha256", sha("c@x.com")), ("phone_sha256", sha("+222"))}
    assert got[("p1", "seg_b")] == {("customer_id", "c1"), ("email_sha256", sha("a@x.com"))}
    assert got[("p3", "seg_b")] == set()
    assert len(export_folders(root, storage)) == 5 * 2
    listed = list_exports(root, "p2", storage)
    assert [(e["segment"], e["run_date"], e["run_id"]) for e in listed] == [
        ("seg_a", RUN_DATE, "r1"),
        ("seg_b", RUN_DATE, "r1"),
    ]
    assert not list_files(ExportLayout(root).staging, storage), "staging cleaned up"
    if where == "local":
        assert not (tmp_path / "out" / "exports" / "_staging").exists(), "no empty staging folder left behind"

    if join_path == "hash":
        return
    # rerun of the same run: replaces, never duplicates
    before = files_without_write_id(root, storage)
    run_export(layout, config)
    assert files_without_write_id(root, storage) == before
    check_isolation(root, storage, identity, scores)


@pytest.mark.slow
def test_a_later_run_date_keeps_the_earlier_export(tmp_path, ray_cluster, storage):
    """History: each run date is its own folder; the listing shows both, each with its own rows."""
    root = str(tmp_path / "out")
    config = JobConfig(root=root, storage=storage, ray=SMALL_RAY)
    run_export(build_run(root, storage, *random_world(n_personas=60)), config)
    run_export(build_run(root, storage, fixed_identity(), fixed_scores(), run_id="r2"), config, "2026-03-08")
    listed = list_exports(root, "p1", storage)
    assert [(e["segment"], e["run_date"], e["run_id"]) for e in listed] == [
        ("seg_a", RUN_DATE, "r1"),
        ("seg_a", "2026-03-08", "r2"),
        ("seg_b", RUN_DATE, "r1"),
        ("seg_b", "2026-03-08", "r2"),
    ]
    assert [e["rows"] for e in listed if e["run_id"] == "r2"] == [4, 2]


@pytest.mark.slow
def test_failure_between_parts_and_manifest_leaves_no_export_and_a_rerun_repairs_it(
    ray_cluster, storage, s3_bucket, monkeypatch
):
    """The manifest write of one folder fails (once) after its parts are in place: that export is not
    readable (no manifest: not listed, no URLs), the others are; the next run replaces it whole."""
    root = s3_bucket + "/x"
    layout = build_run(root, storage, fixed_identity(), fixed_scores())
    config = JobConfig(root=root, storage=storage, ray=SMALL_RAY, export=ExportConfig(url_expires_seconds=900))
    target = ExportLayout(root).export_dir("p2", "seg_a", RUN_DATE)
    manifest_path = ExportLayout(root).manifest("p2", "seg_a", RUN_DATE)
    real_write_json = folders.write_json
    failures = []

    def manifest_write_fails_once(path, payload, storage):
        if path == manifest_path and not failures:
            failures.append(path)
            raise OSError("injected: the store went away before the manifest")
        real_write_json(path, payload, storage)

    monkeypatch.setattr(folders, "write_json", manifest_write_fails_once)
    with pytest.raises(OSError, match="injected"):
        run_export(layout, config)
    assert failures == [manifest_path]
    assert not exists(manifest_path, storage), "no manifest: readers ignore the folder"
    assert list_files(target, storage, suffixes=(".parquet",)), "the parts were there (the failure came after them)"
    assert "seg_a" not in {e["segment"] for e in list_exports(root, "p2", storage)}
    assert {e["segment"] for e in list_exports(root, "p1", storage)} == {"seg_a", "seg_b"}, "the others published"
    with pytest.raises(UserError, match="no published export"):
        presigned_urls(root, "p2", "seg_a", storage, 900)

    assert run_export(layout, config)["rows_out"] > 0  # a rerun of the same run replaces: the leak test's rerun
    exported = export_folders(root, storage)
    assert len(exported) == 3 * 2
    for folder in exported:
        manifest, _ = read_export(folder, storage)
        on_disk = sorted(f.rsplit("/", 1)[-1] for f in list_files(folder, storage))
        assert on_disk == sorted([p["path"] for p in manifest["parts"]] + ["manifest.json"]), "no stray parts"
        assert all(manifest["write_id"] in p["path"] for p in manifest["parts"])
    manifest, table = read_export(target, storage)
    assert table.num_rows == 5 and manifest["rows"] == 5
    assert not list_files(ExportLayout(root).staging, storage), "staging cleaned up"

    urls = presigned_urls(root, "p2", "seg_a", storage, 900)
    assert urls["rows"] == 5 and "X-Amz-Expires=900" in urls["manifest"]
    with urllib.request.urlopen(urls["manifest"], timeout=10) as response:  # plain HTTP GET, no credentials
        assert json.loads(response.read())["write_id"] == manifest["write_id"]
    with urllib.request.urlopen(urls["parts"][0]["url"], timeout=10) as response:
        assert hashlib.sha256(response.read()).hexdigest() == manifest["parts"][0]["sha256"]


def test_partner_id_from_data_that_is_a_path_trick_is_refused(tmp_path, ray_cluster, storage):
    root = str(tmp_path / "out")
    identity = fixed_identity() + [id_row("email", "z@x.com", "A", ["../../escape"])]
    layout = build_run(root, storage, identity, fixed_scores())
    with pytest.raises(UserError, match=r"partner id '../../escape' is not allowed"):
        run_export(layout, JobConfig(root=root, storage=storage))
    assert not (tmp_path / "escape").exists() and not (tmp_path / "out" / "escape").exists()
    assert not list_files(join(root, "exports"), storage), "nothing published"


def test_segment_name_from_the_scores_marker_that_is_a_path_trick_is_refused(tmp_path, ray_cluster, storage):
    root = str(tmp_path / "out")
    layout = build_run(root, storage, fixed_identity(), fixed_scores())
    TableOut(SCORES, layout.table(SCORES), storage).write_arrow(
        pa.Table.from_pylist(fixed_scores(), schema=SCORES_SCHEMA), extra={"segments": {"../seg": "v1"}}
    )
    with pytest.raises(UserError, match=r"segment name '../seg' is not allowed"):
        run_export(layout, JobConfig(root=root, storage=storage))
    assert not list_files(join(root, "exports"), storage), "nothing published"


def test_export_needs_published_scores_that_say_what_was_scored(tmp_path, storage):
    root = str(tmp_path / "out")
    layout = RunLayout.for_run(root, "r1")
    with pytest.raises(UserError, match="scores.*not been published"):
        run_export(layout, JobConfig(root=root, storage=storage))
    TableOut(SCORES, layout.table(SCORES), storage).write_arrow(
        pa.Table.from_pylist(fixed_scores(), schema=SCORES_SCHEMA)
    )
    with pytest.raises(UserError, match="which segments it scored"):
        run_export(layout, JobConfig(root=root, storage=storage))


def test_exports_go_to_the_run_root_unless_export_root_is_set(tmp_path):
    assert ExportView.from_config(JobConfig(root=str(tmp_path / "a"))).root == str(tmp_path / "a")
    configured = JobConfig(root=str(tmp_path / "a"), export=ExportConfig(root="s3://bucket/exports"))
    assert ExportView.from_config(configured).root == "s3://bucket/exports"


@pytest.mark.slow
def test_the_runner_skips_a_finished_export_and_redoes_it_for_a_new_run_date(tmp_path, ray_cluster, storage):
    """The stage's signature is all the runner needs: its fingerprint covers the run date (RUN_DATE)."""
    root = str(tmp_path / "out")
    layout = build_run(root, storage, fixed_identity(), fixed_scores())
    stages = ordered([Stage.of(export.run)])
    assert stages[0].name == "export" and set(stages[0].reads) == {SCORES, IDENTITY_MAP}
    assert stages[0].writes == (EXPORTS,)
    config = JobConfig(root=root, storage=storage, ray=SMALL_RAY, run_date=dt.date.fromisoformat(RUN_DATE))
    first = run_pipeline(config, stages, names=["export"], layout=layout)
    assert first["stages"]["export"]["status"] == "ran" and first["stages"]["export"]["rows_out"] == 16
    again = run_pipeline(config, stages, names=["export"], layout=layout)
    assert again["stages"]["export"]["status"] == "skipped"
    later = config.model_copy(update={"run_date": dt.date(2026, 3, 2)})
    assert run_pipeline(later, stages, names=["export"], layout=layout)["stages"]["export"]["status"] == "ran"
    assert [e["run_date"] for e in list_exports(root, "p1", storage)] == [RUN_DATE, "2026-03-02"] * 2


def test_an_export_folder_belongs_to_one_run_until_another_is_told_to_replace_it(tmp_path, ray_cluster, storage):
    """Runs `ref` and `k1` of one run date, through the runner: k1 stops (exit 2 naming ref) before reading
    anything; with replace it takes the date over whole (ref's folders it has no rows for go); ref then does
    not claim "done already" but stops naming k1; ref with replace takes it back."""
    root = str(tmp_path / "out")
    stages = ordered([Stage.of(export.run)])
    config = JobConfig(root=root, storage=storage, ray=SMALL_RAY, run_date=dt.date.fromisoformat(RUN_DATE))
    ref = build_run(root, storage, *random_world(n_personas=80), run_id="ref")
    # k1's world has partners p1..p3 only: p4/p5 folders of ref must not survive a replace under k1's name
    k1 = build_run(root, storage, fixed_identity(), fixed_scores(), run_id="k1")

    assert run_pipeline(config, stages, names=["export"], layout=ref)["stages"]["export"]["status"] == "ran"
    ref_owned = {e["path"]: e for p in PARTNERS for e in list_exports(root, p, storage)}
    assert len(ref_owned) == 10 and {e["run_id"] for e in ref_owned.values()} == {"ref"}

    with pytest.raises(UserError, match=r"belong to run ref .*not to run k1.*--replace") as refused:
        run_pipeline(config, stages, names=["export"], layout=k1)
    assert RUN_DATE in str(refused.value)
    assert {e["path"]: e for p in PARTNERS for e in list_exports(root, p, storage)} == ref_owned, "untouched"
    assert not list_files(ExportLayout(root).staging, storage), "refused before staging anything"

    replacing = config.model_copy(update={"export": ExportConfig(replace=True)})
    assert run_pipeline(replacing, stages, names=["export"], layout=k1)["stages"]["export"]["status"] == "ran"
    now = [e for p in PARTNERS for e in list_exports(root, p, storage)]
    assert {e["run_id"] for e in now} == {"k1"} and {e["path"].split("/")[-3] for e in now} == {"p1", "p2", "p3"}
    assert len(export_folders(root, storage)) == 6, "no folder of ref left under the date"

    # ref's marker still matches its config and inputs, but its exports are k1's now: not "done already"
    with pytest.raises(UserError, match=r"belong to run k1 .*not to run ref"):
        run_pipeline(config, stages, names=["export"], layout=ref)
    back = run_pipeline(replacing, stages, names=["export"], layout=ref)
    assert back["stages"]["export"]["status"] == "ran"
    assert {e["run_id"] for p in PARTNERS for e in list_exports(root, p, storage)} == {"ref"}
    assert run_pipeline(config, stages, names=["export"], layout=ref)["stages"]["export"]["status"] == "skipped"
