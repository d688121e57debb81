"""Paths and filesystems: the one place that knows `s3://` from a local folder.

A path is a local folder or file, or `s3://bucket/key`. `filesystem_for` gives the pyarrow filesystem that
reads and writes it (S3 through s3fs, so Ray Data, pyarrow and our own calls share one client with the AWS
credential chain and botocore's standard retries) and the path as that filesystem names it (`fs_path`).
"""

from __future__ import annotations

import posixpath
from functools import lru_cache
from typing import Any

import pyarrow.fs as pafs

from jobs.config import StorageConfig
from jobs.errors import UserError

S3 = "s3://"


def is_s3(path: str) -> bool:
    return path.startswith(S3)


def join(base: str, *parts: str) -> str:
    return posixpath.join(base.rstrip("/"), *parts)


def fs_path(path: str) -> str:
    """The path as a pyarrow filesystem names it: `bucket/key` for S3, an absolute path locally."""
    return path[len(S3) :].rstrip("/") if is_s3(path) else posixpath.abspath(path)


def with_scheme(like: str, fs_name: str) -> str:
    """The inverse of `fs_path` for a path found by listing the filesystem of `like`."""
    return S3 + fs_name if is_s3(like) else fs_name


def bucket_of(path: str) -> str:
    return fs_path(path).split("/", 1)[0]


def key_of(path: str) -> str:
    """The object key of an s3:// path (without the bucket)."""
    parts = fs_path(path).split("/", 1)
    return parts[1] if len(parts) > 1 else ""


@lru_cache(maxsize=8)
def _s3fs(endpoint_url: str | None, region: str | None, retries: int, connect_timeout: float, read_timeout: float):
    import s3fs

    client_kwargs: dict[str, Any] = {}
    if endpoint_url:
        client_kwargs["endpoint_url"] = endpoint_url
    if region:
        client_kwargs["region_name"] = region
    return s3fs.S3FileSystem(
        client_kwargs=client_kwargs,
        # bounded waits: a store that stops answering fails after the retries instead of hanging the run
        config_kwargs={
            "retries": {"max_attempts": max(retries, 1), "mode": "standard"},
            "connect_timeout": connect_timeout,
            "read_timeout": read_timeout,
        },
        use_listings_cache=False,
    )


def s3fs_for(storage: StorageConfig):
    """The s3fs filesystem (presigned URLs, bucket checks); credentials from the AWS chain only."""
    return _s3fs(
        storage.endpoint_url, storage.region, storage.retries, storage.connect_timeout_s, storage.read_timeout_s
    )


def filesystem_for(path: str, storage: StorageConfig) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem for `path` and the path as that filesystem names it."""
    if is_s3(path):
        return pafs.PyFileSystem(pafs.FSSpecHandler(s3fs_for(storage))), fs_path(path)
    return pafs.LocalFileSystem(), fs_path(path)


def check_bucket(path: str, storage: StorageConfig) -> None:
    """Fail with a clear message when an s3:// path names a bucket that does not exist or is not ours."""
    if not is_s3(path):
        return
    bucket = bucket_of(path)
    try:
        s3fs_for(storage).ls(bucket, refresh=True)
    except FileNotFoundError:
        raise UserError(f"S3 bucket {bucket!r} (from {path}) does not exist.") from None
    except PermissionError:
        raise UserError(
            f"S3 bucket {bucket!r} (from {path}) is not readable with the current AWS credentials."
        ) from None


def presigned_url(path: str, storage: StorageConfig, expires_seconds: int) -> str:
    """A presigned GET URL for one s3:// object: SigV4 query-string auth bound to bucket, key, expiry and region."""
    # boto3 here only: s3fs signs with the same credentials but does not let us pin the signature version
    import boto3
    from botocore.config import Config

    if not is_s3(path):
        raise UserError(f"presigned URLs need an s3:// path, not {path!r}.")
    client = boto3.client(
        "s3",
        endpoint_url=storage.endpoint_url,
        region_name=storage.region,
        config=Config(signature_version="s3v4", retries={"max_attempts": max(storage.retries, 1), "mode": "standard"}),
    )
    return client.generate_presigned_url(
        "get_object", Params={"Bucket": bucket_of(path), "Key": key_of(path)}, ExpiresIn=expires_seconds
    )
