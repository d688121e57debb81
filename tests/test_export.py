"""Export stage and partner pulling: isolation, manifests, atomic republish, presigned URLs, policies.

scores/ and identity_map/ are built here by hand (the shapes INTERFACES.md fixes), with personas shared
by several partners, so every key of every export can be checked against what that partner supplied.
S3 runs against the moto server on 127.0.0.1 over HTTP.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs import io
from jobs.config import ExportConfig, JobConfig, StorageConfig
from jobs.errors import UserError

RUN_DATE = "2026-03-01"
SEGMENT_VERSIONS = {"seg_a": "aaaaaaaaaaaa", "seg_b": "bbbbbbbbbbbb"}
TS = dt.datetime(2026, 2, 1, tzinfo=dt.timezone.utc)

IDENTITY_SCHEMA = pa.schema([
    ("identifier_type", pa.string()), ("identifier", pa.string()), ("partner_id", pa.string()),
    ("persona_id", pa.string()), ("first_seen", pa.timestamp("us", tz="UTC")),
    ("last_seen", pa.timestamp("us", tz="UTC")), ("n_events", pa.int64()),
    ("seen_at_partners", pa.list_(pa.string())),
])


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def id_row(kind: str, value: str, persona: str, seen: list[str] | None, partner: str | None = None) -> dict:
    return {"identifier_type": kind, "identifier": value, "partner_id": partner, "persona_id": persona,
            "first_seen": TS, "last_seen": TS, "n_events": 3, "seen_at_partners": seen}


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
    for persona, seg, member in [("A", "seg_a", True), ("B", "seg_a", True), ("C", "seg_a", True),
                                 ("D", "seg_a", True), ("E", "seg_a", False), ("A", "seg_b", True),
                                 ("B", "seg_b", False), ("C", "seg_b", False), ("E", "seg_b", False)]:
        rows.append({"persona_id": persona, "segment": seg, "score": 0.9 if member else 0.1,
                     "percentile": 95.0 if member else 10.0, "model_version": SEGMENT_VERSIONS[seg],
                     "member": member})
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
            scores.append({"persona_id": persona, "segment": seg, "score": s, "percentile": 100 * s,
                           "model_version": SEGMENT_VERSIONS[seg], "member": s > 0.6})
    return identity, scores


SCORES_SCHEMA = pa.schema([("persona_id", pa.string()), ("segment", pa.string()), ("score", pa.float64()),
                           ("percentile", pa.float64()), ("model_version", pa.string()), ("member", pa.bool_())])


def build_run(root: str, storage: StorageConfig, identity: list[dict], scores: list[dict], run_id: str = "r1") -> str:
    run_dir = io.join(root, "runs", run_id)
    io.write_arrow(pa.Table.from_pylist(identity, schema=IDENTITY_SCHEMA), io.join(run_dir, "identity_map"), storage)
    io.write_arrow(pa.Table.from_pylist(scores, schema=SCORES_SCHEMA), io.join(run_dir, "scores"), storage,
                   extra={"as_of": RUN_DATE, "segments": SEGMENT_VERSIONS, "skipped": []})
    return run_dir


def supplied_keys(identity: list[dict], partner: str) -> dict[tuple[str, str], str]:
    """What `partner` gave us itself, as export keys -> persona (computed independently of jobs.export)."""
    keys = {}
    for row in identity:
        seen = row["seen_at_partners"] or []
        if row["identifier_type"] in ("customer", "subscriber") and row["partner_id"] == partner and partner in seen:
            keys[(row["identifier_type"] + "_id", row["identifier"])] = row["persona_id"]
        elif row["identifier_type"] in ("email", "phone") and partner in seen:
            keys[(row["identifier_type"] + "_sha256", sha(row["identifier"]))] = row["persona_id"]
    return keys


def read_export(folder: str, storage: StorageConfig) -> tuple[dict, pa.Table]:
    manifest = io.read_json(io.join(folder, "manifest.json"), storage)
    fs, _ = io.filesystem_for(folder, storage)
    tables = []
    for part in manifest["parts"]:
        data = io.read_bytes(io.join(folder, part["path"]), storage)
        assert hashlib.sha256(data).hexdigest() == part["sha256"], "manifest checksum matches the part"
        assert len(data) == part["bytes"]
        table = pq.read_table(pa.BufferReader(data))
        assert table.num_rows == part["rows"]
        tables.append(table)
    return manifest, pa.concat_tables(tables)


def export_folders(root: str, storage: StorageConfig) -> list[str]:
    """Every folder under ROOT/exports that holds a part or a manifest (staging excluded)."""
    fs, base = io.filesystem_for(io.join(root, "exports"), storage)
    scheme = "s3://" if io.is_s3(root) else ""
    import pyarrow.fs as pafs

    infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    return sorted({scheme + i.path.rsplit("/", 1)[0] for i in infos if i.type == pafs.FileType.File
                   and "/_staging/" not in i.path})


def config_for(root: str, storage: StorageConfig, **export) -> JobConfig:
    return JobConfig(storage=storage, export=ExportConfig(root=root, **export))


# ----------------------------------------------------------------------------------------------- tests


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
            manifest, table = read_export(io.join(root, "exports", partner, seg, RUN_DATE), storage)
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
            assert set(keys) == {k for k, persona in own.items() if (persona, seg) in members}, \
                "every member the partner saw, by every key it supplied"
            got[(partner, seg)] = {k for k in keys if own[k] in FIXED_PERSONAS}
    return got


@pytest.mark.parametrize("where", ["local", "s3"])
def test_exports_hold_only_what_each_partner_supplied(where, tmp_path, ray_cluster, storage, s3_bucket):
    """Leak test: hand-made shared personas (exact expectations) plus a world of 400 randomly shared ones."""
    from jobs.config import RayConfig
    from jobs.export import list_exports, run_export

    root = str(tmp_path / "out") if where == "local" else s3_bucket + "/data"
    world_ids, world_scores = random_world()
    identity, scores = fixed_identity() + world_ids, fixed_scores() + world_scores
    run_dir = build_run(root, storage, identity, scores)
    config = JobConfig(storage=storage, export=ExportConfig(root=root), ray=RayConfig(num_partitions=3))
    summary = run_export(config, run_dir)
    assert summary["run_date"] == RUN_DATE and summary["partners"] == 5 and summary["rows_out"] > 500

    got = check_isolation(root, storage, identity, scores)
    assert got[("p1", "seg_a")] == {("customer_id", "c1"), ("email_sha256", sha("a@x.com")),
                                    ("customer_id", "c2"), ("email_sha256", sha("b@x.com"))}
    assert got[("p2", "seg_a")] == {("customer_id", "c9"), ("email_sha256", sha("a@x.com")),
                                    ("phone_sha256", sha("+111")), ("subscriber_id", "s1"),
                                    ("phone_sha256", sha("+222"))}
    assert got[("p3", "seg_a")] == {("email_sha256", sha("c@x.com")), ("phone_sha256", sha("+222"))}
    assert got[("p1", "seg_b")] == {("customer_id", "c1"), ("email_sha256", sha("a@x.com"))}
    assert got[("p3", "seg_b")] == set()
    assert len(export_folders(root, storage)) == 5 * 2
    listed = list_exports(config, "p2")
    assert [(e["segment"], e["run_date"], e["run_id"]) for e in listed] == [("seg_a", RUN_DATE, "r1"),
                                                                          ("seg_b", RUN_DATE, "r1")]
    assert not io.list_files(io.join(root, "exports", "_staging"), storage), "staging cleaned up"

    if where == "local":
        # rerun of the same run: replaces, never duplicates
        def files_without_write_id() -> list[str]:
            return sorted(re.sub(r"-\d{8}T\d{6}-[0-9a-f]{8}", "", f) for f in io.list_files(root + "/exports", storage))

        before = files_without_write_id()
        run_export(config, run_dir)
        assert files_without_write_id() == before
        check_isolation(root, storage, identity, scores)
        # a later run date keeps the earlier one (history); readers pick the latest
        run2 = build_run(root, storage, fixed_identity(), fixed_scores(), run_id="r2")
        io.write_arrow(pa.Table.from_pylist(fixed_scores(), schema=SCORES_SCHEMA), io.join(run2, "scores"), storage,
                       extra={"as_of": "2026-03-08", "segments": SEGMENT_VERSIONS})
        run_export(config, run2)
        assert [(e["segment"], e["run_date"], e["run_id"]) for e in list_exports(config, "p1")] == [
            ("seg_a", RUN_DATE, "r1"), ("seg_a", "2026-03-08", "r2"), ("seg_b", RUN_DATE, "r1"),
            ("seg_b", "2026-03-08", "r2")]
        assert [e["rows"] for e in list_exports(config, "p1") if e["run_id"] == "r2"] == [4, 2]


def test_failure_between_parts_and_manifest_then_rerun_and_presigned_urls(
    tmp_path, ray_cluster, storage, s3_bucket, monkeypatch
):
    from jobs import export

    root = s3_bucket + "/x"
    run_dir = build_run(root, storage, fixed_identity(), fixed_scores())
    config = config_for(root, storage, url_expires_seconds=900)
    target = io.join(root, "exports", "p2", "seg_a", RUN_DATE)

    def boom(final_dir):
        if final_dir == target:
            raise RuntimeError("injected: died before the manifest")

    monkeypatch.setattr(export, "_after_parts", boom)
    with pytest.raises(RuntimeError, match="injected"):
        export.run_export(config, run_dir)
    assert not io.exists(io.join(target, "manifest.json"), storage), "no manifest: readers ignore the folder"
    assert io.list_files(target, storage, suffixes=(".parquet",)), "the parts were there (failure after them)"
    assert "seg_a" not in {e["segment"] for e in export.list_exports(config, "p2")}
    with pytest.raises(UserError, match="no published export"):
        export.presigned_urls(config, "p2", "seg_a")

    monkeypatch.setattr(export, "_after_parts", lambda final_dir: None)
    first = export.run_export(config, run_dir)
    second = export.run_export(config, run_dir)  # and once more: replaces, never duplicates
    assert first["rows_out"] == second["rows_out"] > 0
    folders = export_folders(root, storage)
    assert len(folders) == 3 * 2
    for folder in folders:
        manifest, _ = read_export(folder, storage)
        on_disk = sorted(f.rsplit("/", 1)[-1] for f in io.list_files(folder, storage))
        assert on_disk == sorted([p["path"] for p in manifest["parts"]] + ["manifest.json"]), "no stray parts"
        assert all(manifest["write_id"] in p["path"] for p in manifest["parts"])
    _, table = read_export(target, storage)
    assert table.num_rows == 5
    assert not io.list_files(io.join(root, "exports", "_staging"), storage), "staging cleaned up"
    check_presigned_urls(config, storage)


def _sigv4_query_valid(url: str, secret: str) -> bool:
    """Recompute an S3 presigned URL's SigV4 query signature, as S3 does when it serves the URL."""
    parsed = urllib.parse.urlsplit(url)
    params = urllib.parse.parse_qsl(parsed.query, keep_blank_values=True)
    signature = dict(params)["X-Amz-Signature"]
    query = "&".join(f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}"
                     for k, v in sorted(params) if k != "X-Amz-Signature")
    canonical = "\n".join(["GET", urllib.parse.quote(urllib.parse.unquote(parsed.path), safe="/-_.~"), query,
                           f"host:{parsed.netloc}\n", dict(params)["X-Amz-SignedHeaders"], "UNSIGNED-PAYLOAD"])
    amz_date = dict(params)["X-Amz-Date"]
    scope = dict(params)["X-Amz-Credential"].split("/", 1)[1]
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret).encode()
    for part in scope.split("/"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.compare_digest(hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest(), signature)


def check_presigned_urls(config: JobConfig, storage: StorageConfig) -> None:
    """Presigned URLs work with a plain HTTP GET, and a URL for p1 is bound to p1's object."""
    from jobs.export import presigned_urls

    urls = presigned_urls(config, "p1", "seg_a")
    assert urls["run_date"] == RUN_DATE and urls["rows"] == 4 and urls["parts"]
    for url in [urls["manifest"]] + [p["url"] for p in urls["parts"]]:
        assert url.startswith(storage.endpoint_url + "/") and "X-Amz-Expires=900" in url
        assert _sigv4_query_valid(url, "testing")
    with urllib.request.urlopen(urls["manifest"], timeout=10) as response:  # plain HTTP GET, no credentials
        manifest = json.loads(response.read())
    assert manifest["partner_id"] == "p1"
    with urllib.request.urlopen(urls["parts"][0]["url"], timeout=10) as response:
        data = response.read()
    assert hashlib.sha256(data).hexdigest() == urls["parts"][0]["sha256"] == manifest["parts"][0]["sha256"]
    assert pq.read_table(pa.BufferReader(data)).num_rows == urls["parts"][0]["rows"] == manifest["parts"][0]["rows"]

    # The signature covers the object key: the same URL pointed at p2's object no longer verifies.
    p2_part = presigned_urls(config, "p2", "seg_a")["parts"][0]["path"]
    tampered = urls["parts"][0]["url"].replace("/p1/seg_a/", "/p2/seg_a/").replace(
        urls["parts"][0]["path"], p2_part)
    assert "/p2/seg_a/" in tampered and not _sigv4_query_valid(tampered, "testing")
    # (moto itself serves presigned GETs without checking their signature, so the 403 that S3 answers
    # with, SignatureDoesNotMatch, is shown here by the signature check that S3 runs, on both URLs)


def test_bucket_policy(storage, s3_bucket):
    import boto3

    from jobs.export import bucket_policy

    config = config_for(s3_bucket + "/data/", storage)
    policy = bucket_policy(config, "p1", "arn:aws:iam::123456789012:role/p1-reader")
    bucket = s3_bucket[len("s3://"):]
    read, listing = policy["Statement"]
    assert read["Action"] == ["s3:GetObject"] and read["Resource"] == [f"arn:aws:s3:::{bucket}/data/exports/p1/*"]
    assert listing["Action"] == ["s3:ListBucket"] and listing["Resource"] == [f"arn:aws:s3:::{bucket}"]
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["data/exports/p1/", "data/exports/p1/*"]}}
    actions = {a for s in policy["Statement"] for a in s["Action"]}
    assert actions == {"s3:GetObject", "s3:ListBucket"}, "read-only"
    assert all(s["Principal"] == {"AWS": "arn:aws:iam::123456789012:role/p1-reader"} for s in policy["Statement"])
    client = boto3.client("s3", endpoint_url=storage.endpoint_url, region_name="us-east-1")
    client.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))  # a policy S3 accepts
    assert json.loads(client.get_bucket_policy(Bucket=bucket)["Policy"])["Statement"][0]["Sid"] == "ReadP1Exports"
    assert bucket_policy(config_for(s3_bucket, storage), "p1", "123456789012")["Statement"][0]["Resource"] == [
        f"arn:aws:s3:::{bucket}/exports/p1/*"]
    with pytest.raises(UserError, match="not an AWS account id or IAM ARN"):
        bucket_policy(config, "p1", "*")
    with pytest.raises(UserError, match="s3://"):
        bucket_policy(config_for("/tmp/x", storage), "p1", "123456789012")


@pytest.mark.parametrize("partner", ["../p2", "p1/../p2", "p1/x", "..", ".hidden", "_staging", "p1\n", "p\\1", ""])
def test_bad_partner_ids_are_user_errors(partner, tmp_path, storage):
    from jobs.export import bucket_policy, list_exports, presigned_urls

    config = config_for("s3://bucket/root", storage)
    with pytest.raises(UserError, match="partner id .* not allowed"):
        list_exports(config, partner)
    with pytest.raises(UserError, match="partner id .* not allowed"):
        presigned_urls(config, partner, "seg_a")
    with pytest.raises(UserError, match="partner id .* not allowed"):
        bucket_policy(config, partner, "123456789012")


def test_cli_rejects_bad_names_with_exit_2(tmp_path):
    from typer.testing import CliRunner

    from jobs.cli import app

    runner = CliRunner()
    root = str(tmp_path)
    cases = [
        ["exports", "list", "--partner", "../p2", "--root", root],
        ["exports", "url", "--partner", "p1", "--segment", "../seg", "--root", "s3://b/r"],
        ["exports", "url", "--partner", "p1/x", "--segment", "seg_a", "--root", "s3://b/r"],
        ["exports", "policy", "--partner", "..", "--principal", "123456789012", "--root", "s3://b/r"],
    ]
    for args in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert "not allowed" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["exports", "list", "--partner", "p1", "--root", root])
    assert result.exit_code == 0 and json.loads(result.output) == []


def test_partner_id_from_data_that_is_a_path_trick_is_refused(tmp_path, ray_cluster, storage):
    from jobs.export import run_export

    root = str(tmp_path / "out")
    identity = fixed_identity() + [id_row("email", "z@x.com", "A", ["../../escape"])]
    run_dir = build_run(root, storage, identity, fixed_scores())
    with pytest.raises(UserError, match=r"partner id '../../escape' is not allowed"):
        run_export(config_for(root, storage), run_dir)
    assert not (tmp_path / "escape").exists() and not (tmp_path / "out" / "escape").exists()
    assert not io.list_files(io.join(root, "exports"), storage), "nothing published"


def test_export_needs_a_root_and_scores(tmp_path, storage):
    from jobs.export import run_export

    with pytest.raises(UserError, match="no exports root"):
        run_export(JobConfig(storage=storage), str(tmp_path / "runs" / "r1"))
    with pytest.raises(UserError, match="scores.*not been published"):
        run_export(config_for(str(tmp_path / "out"), storage), str(tmp_path / "runs" / "r1"))
