"""Partner tools over published exports: listing, presigned URLs (signature bound to the object), S3 bucket
policies, and names that could escape a partner's prefix refused. Exports are published here by hand
(`jobs.storage.publish_folder`, as the export stage does), on moto S3 over HTTP."""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.parse
import urllib.request

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.errors import UserError
from jobs.exports.partners import bucket_policy, exported_partners, list_exports, presigned_urls
from jobs.exports.parts import EXPORT_SCHEMA, manifest, part_name
from jobs.run.layout import ExportLayout
from jobs.storage import FolderRelease, bucket_of, join, publish_folder, write_bytes, write_parquet

WRITE_ID = "20260301T000000-0badcafe"


def publish_export(root: str, storage, partner: str, segment: str, run_date: str, keys: list[str]) -> dict:
    """One export as the export stage publishes it: a staged part moved in, the manifest last."""
    layout = ExportLayout(root)
    table = pa.table(
        {
            "key_type": ["customer_id"] * len(keys),
            "key": keys,
            "score": [0.9] * len(keys),
            "percentile": [95.0] * len(keys),
        },
        schema=EXPORT_SCHEMA,
    )
    staged = join(layout.staging, "r1", partner, segment, "part.parquet")
    data = write_parquet(staged, table, storage)
    part = {
        "path": part_name(0, WRITE_ID),
        "rows": table.num_rows,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    content = manifest(
        run_id="r1",
        run_date=run_date,
        partner_id=partner,
        segment=segment,
        model_version="v1",
        write_id=WRITE_ID,
        created_at="2026-03-01T00:00:00+00:00",
        membership="top_percent",
        parts=[part],
    )
    publish_folder(
        FolderRelease(
            layout.export_dir(partner, segment, run_date), ExportLayout.MANIFEST, content, {part["path"]: staged}
        ),
        storage,
    )
    return content


def test_listing_shows_published_exports_only(tmp_path, storage):
    root = str(tmp_path / "out")
    publish_export(root, storage, "p1", "seg_a", "2026-03-01", ["c1", "c2"])
    publish_export(root, storage, "p1", "seg_a", "2026-03-08", ["c1"])
    publish_export(root, storage, "p2", "seg_b", "2026-03-01", ["x"])
    base = ExportLayout(root).partner_dir("p1")
    write_bytes(join(base, "seg_b", "2026-03-01", "part-00000.parquet"), b"half", storage)  # no manifest yet
    write_bytes(join(base, "not a segment", "2026-03-01", "manifest.json"), b"{}", storage)  # not an export folder
    listed = list_exports(root, "p1", storage)
    assert [(e["segment"], e["run_date"], e["rows"], e["parts"], e["run_id"]) for e in listed] == [
        ("seg_a", "2026-03-01", 2, 1, "r1"),
        ("seg_a", "2026-03-08", 1, 1, "r1"),
    ]
    assert listed[0]["path"] == ExportLayout(root).export_dir("p1", "seg_a", "2026-03-01")
    assert list_exports(root, "p3", storage) == [], "a partner without exports has none"
    assert exported_partners(root, storage) == ["p1", "p2"]


def _sigv4_query_valid(url: str, secret: str) -> bool:
    """Recompute an S3 presigned URL's SigV4 query signature, as S3 does when it serves the URL."""
    parsed = urllib.parse.urlsplit(url)
    params = urllib.parse.parse_qsl(parsed.query, keep_blank_values=True)
    signature = dict(params)["X-Amz-Signature"]
    query = "&".join(
        f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}"
        for k, v in sorted(params)
        if k != "X-Amz-Signature"
    )
    canonical = "\n".join(
        [
            "GET",
            urllib.parse.quote(urllib.parse.unquote(parsed.path), safe="/-_.~"),
            query,
            f"host:{parsed.netloc}\n",
            dict(params)["X-Amz-SignedHeaders"],
            "UNSIGNED-PAYLOAD",
        ]
    )
    amz_date = dict(params)["X-Amz-Date"]
    scope = dict(params)["X-Amz-Credential"].split("/", 1)[1]
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret).encode()
    for part in scope.split("/"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.compare_digest(hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest(), signature)


def test_presigned_urls_work_with_plain_http_and_are_bound_to_the_object(storage, s3_bucket):
    root = s3_bucket + "/x"
    publish_export(root, storage, "p1", "seg_a", "2026-03-01", ["old"])
    published = publish_export(root, storage, "p1", "seg_a", "2026-03-08", ["c1", "c2", "c3", "c4"])
    publish_export(root, storage, "p2", "seg_a", "2026-03-08", ["other"])
    urls = presigned_urls(root, "p1", "seg_a", storage, 900)
    assert urls["run_date"] == "2026-03-08" and urls["rows"] == 4 and len(urls["parts"]) == 1, "the latest export"
    for url in [urls["manifest"]] + [p["url"] for p in urls["parts"]]:
        assert url.startswith(storage.endpoint_url + "/") and "X-Amz-Expires=900" in url
        assert _sigv4_query_valid(url, "testing")
    with urllib.request.urlopen(urls["manifest"], timeout=10) as response:  # plain HTTP GET, no credentials
        assert json.loads(response.read()) == published
    with urllib.request.urlopen(urls["parts"][0]["url"], timeout=10) as response:
        data = response.read()
    assert hashlib.sha256(data).hexdigest() == urls["parts"][0]["sha256"] == published["parts"][0]["sha256"]
    assert pq.read_table(pa.BufferReader(data)).num_rows == urls["parts"][0]["rows"] == 4

    # The signature covers the object key: the same URL pointed at p2's object no longer verifies.
    p2_part = presigned_urls(root, "p2", "seg_a", storage, 900)["parts"][0]["path"]
    tampered = urls["parts"][0]["url"].replace("/p1/seg_a/", "/p2/seg_a/").replace(urls["parts"][0]["path"], p2_part)
    assert "/p2/seg_a/" in tampered and not _sigv4_query_valid(tampered, "testing")
    # (moto itself serves presigned GETs without checking their signature, so the 403 that S3 answers
    # with, SignatureDoesNotMatch, is shown here by the signature check that S3 runs, on both URLs)

    with pytest.raises(UserError, match="no published export"):
        presigned_urls(root, "p3", "seg_a", storage, 900)
    with pytest.raises(UserError, match="s3://"):
        presigned_urls("/tmp/x", "p1", "seg_a", storage, 900)


def test_bucket_policy(storage, s3_bucket):
    root = s3_bucket + "/data/"
    policy = bucket_policy(root, "p1", "arn:aws:iam::123456789012:role/p1-reader")
    bucket = bucket_of(s3_bucket)
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
    assert bucket_policy(s3_bucket, "p1", "123456789012")["Statement"][0]["Resource"] == [
        f"arn:aws:s3:::{bucket}/exports/p1/*"
    ]
    assert bucket_policy(s3_bucket, "p1", "123456789012")["Statement"][0]["Principal"] == {
        "AWS": "arn:aws:iam::123456789012:root"
    }
    with pytest.raises(UserError, match="not an AWS account id or IAM ARN"):
        bucket_policy(root, "p1", "*")
    with pytest.raises(UserError, match="s3://"):
        bucket_policy("/tmp/x", "p1", "123456789012")


@pytest.mark.parametrize("partner", ["../p2", "p1/../p2", "p1/x", "..", ".hidden", "_staging", "p1\n", "p\\1", ""])
def test_bad_partner_ids_are_user_errors(partner, storage):
    root = "s3://bucket/root"
    with pytest.raises(UserError, match="partner id .* not allowed"):
        list_exports(root, partner, storage)
    with pytest.raises(UserError, match="partner id .* not allowed"):
        presigned_urls(root, partner, "seg_a", storage, 900)
    with pytest.raises(UserError, match="partner id .* not allowed"):
        bucket_policy(root, partner, "123456789012")


@pytest.mark.parametrize("segment", ["../seg", "seg/x", "Seg", "_staging", ""])
def test_bad_segment_names_are_user_errors(segment, storage):
    with pytest.raises(UserError, match="segment name .* not allowed"):
        presigned_urls("s3://bucket/root", "p1", segment, storage, 900)
