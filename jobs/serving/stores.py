"""Where replicas read a release: `embedded` (each replica's memory) or `redis` (a Redis/Valkey server).

Both answer the same questions, so the application and its tests do not care which one runs:
  lookup_key(hash)        partner-scoped lookup key -> persona (id, store reference) or None   (request loop)
  bases(refs)             the release's profile of each persona: scores, kept intents, feature vector
  links_blocking(hashes)  link ids -> personas (live events link new identifiers through them) (applier thread)
  bases_blocking(refs)    as bases, for the applier thread

Embedded: the release's Parquet parts (local or s3://) are read once per release into numpy arrays: keys
and links as sorted 64-bit hashes with the row they point to (a hash that points to two rows, a
collision, is dropped: a 404, never a stranger's profile), scores and percentiles as (personas x segments)
float32, the feature vectors as one (personas x features) float32 matrix, intents as Arrow lists.

Redis: `publish --store redis` writes, per release, `PREFIX:RELEASE:k:HASH` -> persona, `...:l:HASH` ->
persona, `...:p:PERSONA` -> msgpack profile, and `...:meta` last; a release without its meta key is
incomplete and never served. Keys live under the release's own namespace, so switching releases is the one
write of current.json, and old namespaces are unlinked by the publish after next.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np
import pyarrow as pa

from jobs.config import JobConfig, StorageConfig
from jobs.run.layout import OnlineLayout
from jobs.serving.publish import score_column
from jobs.serving.source import read_parquet_file
from jobs.storage import table_files

log = logging.getLogger(__name__)

Ref = Any  # a store's own handle of a persona: a row (embedded) or the persona id (redis)


@dataclass
class BaseProfile:
    """A persona as the release has it (before live events)."""

    persona_id: str
    score: np.ndarray  # float32 per segment of the release, NaN = not scored (not eligible)
    percentile: np.ndarray
    member: np.ndarray  # bool per segment
    reasons: list[list[str] | None] | None
    intents: dict[str, list[dict]]  # kind -> [{"name", "weight"}], largest first
    inputs: np.ndarray  # float32 feature vector in the release's feature_names order


def _sorted_unique(hashes: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Sort (hash, row) pairs; drop hashes that point to more than one row (collisions). -> (hashes, rows, dropped)."""
    order = np.lexsort((rows, hashes))
    hashes, rows = hashes[order], rows[order]
    if len(hashes) == 0:
        return hashes, rows, 0
    same_hash = np.r_[False, hashes[1:] == hashes[:-1]]
    repeat = same_hash & np.r_[False, rows[1:] == rows[:-1]]
    hashes, rows, same_hash = hashes[~repeat], rows[~repeat], same_hash[~repeat]
    clash = same_hash | np.r_[same_hash[1:], False]
    return hashes[~clash], rows[~clash], int(np.count_nonzero(same_hash))


def _find(hashes: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Index into `hashes` of each value, -1 where absent."""
    at = np.searchsorted(hashes, values)
    at = np.minimum(at, max(len(hashes) - 1, 0))
    found = (len(hashes) > 0) & (hashes[at] == values) if len(hashes) else np.zeros(len(values), bool)
    return np.where(found, at, -1)


class EmbeddedRelease:
    """A release held in this process's memory."""

    def __init__(self, meta: dict[str, Any], online: OnlineLayout, storage: StorageConfig) -> None:
        self.meta = meta
        release_id = meta["release_id"]
        self.segments = [s["name"] for s in meta["segments"]]
        width = len(meta["feature_names"])
        ids, inputs, scores, pcts, members, reasons = [], [], [], [], [], []
        intents: dict[str, list] = {"categories": [], "brands": []}
        key_hashes, key_rows, link_hashes, link_rows = [], [], [], []
        offset = 0
        parts = {p["part"]: p for p in meta["parts"]}
        profile_files = table_files(online.release_table(release_id, "profiles"), storage)
        key_files = {f.rsplit("/", 1)[-1]: f for f in table_files(online.release_table(release_id, "keys"), storage)}
        link_files = {f.rsplit("/", 1)[-1]: f for f in table_files(online.release_table(release_id, "links"), storage)}
        for path in profile_files:
            name = path.rsplit("/", 1)[-1]
            table = read_parquet_file(path, storage)
            n = table.num_rows
            ids.append(table.column("persona_id"))
            vectors = table.column("inputs").combine_chunks()
            inputs.append(
                np.frombuffer(vectors.buffers()[1], np.float32, n * width, vectors.offset * width * 4).reshape(n, width)
            )
            scores.append(
                np.column_stack(
                    [table.column(score_column(s, "score")).to_numpy(zero_copy_only=False) for s in self.segments]
                )
                if self.segments
                else np.zeros((n, 0), np.float32)
            )
            pcts.append(
                np.column_stack(
                    [table.column(score_column(s, "percentile")).to_numpy(zero_copy_only=False) for s in self.segments]
                )
                if self.segments
                else np.zeros((n, 0), np.float32)
            )
            members.append(
                np.column_stack(
                    [table.column(score_column(s, "member")).to_numpy(zero_copy_only=False) for s in self.segments]
                )
                if self.segments
                else np.zeros((n, 0), bool)
            )
            if meta.get("with_reasons"):
                reasons.append([table.column(score_column(s, "reasons")) for s in self.segments])
            for kind in intents:
                intents[kind].append(table.column(f"intent_{kind}"))
            for files, hashes, rows in ((key_files, key_hashes, key_rows), (link_files, link_hashes, link_rows)):
                if name in files:
                    part = read_parquet_file(files[name], storage)
                    hashes.append(part.column("key_hash").to_numpy())
                    rows.append(part.column("row").to_numpy().astype(np.int64) + offset)
            offset += n
        if offset != sum(p["profiles"] for p in parts.values()):
            raise RuntimeError(
                f"release {release_id}: profiles/ holds {offset} rows, release.json says "
                f"{sum(p['profiles'] for p in parts.values())}"
            )
        self.ids = pa.chunked_array(ids, pa.string()).combine_chunks() if ids else pa.array([], pa.string())
        self.inputs = np.concatenate(inputs) if inputs else np.zeros((0, width), np.float32)
        self.score = np.concatenate(scores).astype(np.float32) if scores else np.zeros((0, 0), np.float32)
        self.percentile = np.concatenate(pcts).astype(np.float32) if pcts else np.zeros((0, 0), np.float32)
        self.member = np.concatenate(members).astype(bool) if members else np.zeros((0, 0), bool)
        self.reasons = (
            [pa.chunked_array([r[i] for r in reasons]).combine_chunks() for i in range(len(self.segments))]
            if reasons
            else None
        )
        self.intents = {k: pa.chunked_array(v).combine_chunks() if v else None for k, v in intents.items()}
        empty = np.zeros(0, np.uint64)
        self.key_hash, self.key_row, clashes = _sorted_unique(
            np.concatenate(key_hashes) if key_hashes else empty,
            np.concatenate(key_rows) if key_rows else np.zeros(0, np.int64),
        )
        self.link_hash, self.link_row, link_clashes = _sorted_unique(
            np.concatenate(link_hashes) if link_hashes else empty,
            np.concatenate(link_rows) if link_rows else np.zeros(0, np.int64),
        )
        if clashes or link_clashes:
            log.warning(
                "release %s: %d lookup key and %d link hash collisions dropped (those keys answer 404)",
                release_id,
                clashes,
                link_clashes,
            )
        junk = [
            read_parquet_file(f, storage).column("link_hash").to_numpy()
            for f in table_files(online.release_table(release_id, "junk"), storage)
        ]
        self.junk = np.unique(np.concatenate(junk)) if junk else empty

    def nbytes(self) -> int:
        arrays = (
            self.inputs,
            self.score,
            self.percentile,
            self.member,
            self.key_hash,
            self.key_row,
            self.link_hash,
            self.link_row,
            self.junk,
        )
        return int(
            sum(a.nbytes for a in arrays)
            + self.ids.nbytes
            + sum(v.nbytes for v in self.intents.values() if v is not None)
        )

    def key_row_of(self, hash_value: int) -> int:
        """The profile row of a lookup key hash, -1 when unknown: the in-process fast path (and the bench)."""
        at = _find(self.key_hash, np.array([hash_value], np.uint64))[0]
        return int(self.key_row[at]) if at >= 0 else -1

    async def lookup_key(self, hash_value: int) -> tuple[str, Ref] | None:
        row = self.key_row_of(hash_value)
        return None if row < 0 else (self.ids[row].as_py(), row)

    def links_blocking(self, hashes: Sequence[int]) -> list[tuple[str, Ref] | None]:
        at = _find(self.link_hash, np.asarray(hashes, np.uint64))
        return [None if a < 0 else (self.ids[int(self.link_row[a])].as_py(), int(self.link_row[a])) for a in at]

    def junk_of(self, hashes: Sequence[int]) -> np.ndarray:
        return _find(self.junk, np.asarray(hashes, np.uint64)) >= 0

    def base_of(self, row: int) -> BaseProfile:
        return BaseProfile(
            persona_id=self.ids[row].as_py(),
            score=self.score[row],
            percentile=self.percentile[row],
            member=self.member[row],
            reasons=[r[row].as_py() for r in self.reasons] if self.reasons is not None else None,
            intents={k: (v[row].as_py() if v is not None else []) for k, v in self.intents.items()},
            inputs=self.inputs[row],
        )

    async def bases(self, refs: Sequence[Ref]) -> list[BaseProfile]:
        return self.bases_blocking(refs)

    def bases_blocking(self, refs: Sequence[Ref]) -> list[BaseProfile]:
        return [self.base_of(int(r)) for r in refs]

    async def close(self) -> None:
        return None


# ---------------------------------------------------------------------------------------------- redis


def redis_namespace(config: JobConfig, release_id: str) -> str:
    return f"{config.serving.redis_prefix}:{release_id}"


def _hex(value: int) -> str:
    return f"{int(value):016x}"


def _packed_profiles(table: pa.Table, segments: Sequence[str], with_reasons: bool) -> list[bytes]:
    """One msgpack blob per profile row: [persona, [[score, percentile, member, reasons] per segment],
    [[category, weight]...], [[brand, weight]...], float32 feature vector bytes]."""
    columns = {name: table.column(name).to_pylist() for name in table.column_names}
    n = table.num_rows
    per_segment = [
        (
            columns[score_column(s, "score")],
            columns[score_column(s, "percentile")],
            columns[score_column(s, "member")],
            columns[score_column(s, "reasons")] if with_reasons else [None] * n,
        )
        for s in segments
    ]
    return [
        msgpack.packb(
            [
                columns["persona_id"][row],
                [[sc[row], pc_[row], mb[row], rs[row]] for sc, pc_, mb, rs in per_segment],
                [[i["name"], i["weight"]] for i in columns["intent_categories"][row]],
                [[i["name"], i["weight"]] for i in columns["intent_brands"][row]],
                columns["inputs"][row],
            ]
        )
        for row in range(n)
    ]


def _write_part_in_task(name: str, arguments: dict) -> int:
    """A Ray task's call: `arguments`, put in the object store once, are the same for every part."""
    return _write_part_to_redis(name, **arguments)


def _write_part_to_redis(
    name: str,
    profiles: dict,
    keys: dict,
    links: dict,
    storage: StorageConfig,
    namespace: str,
    segments: list,
    with_reasons: bool,
    url: str,
    batch_rows: int,
) -> int:
    """Every key of part `name`, written in pipelined batches; how many."""
    import redis

    client = redis.Redis.from_url(url)
    table = read_parquet_file(profiles[name], storage).combine_chunks()
    ids = table.column("persona_id").to_pylist()
    count = 0
    pipe = client.pipeline(transaction=False)
    for persona, blob in zip(ids, _packed_profiles(table, segments, with_reasons)):
        pipe.set(f"{namespace}:p:{persona}", blob)
        count += 1
        if count % batch_rows == 0:
            pipe.execute()
    for files, tag in ((keys, "k"), (links, "l")):
        if name not in files:
            continue
        part = read_parquet_file(files[name], storage)
        for hash_value, row in zip(part.column("key_hash").to_numpy(), part.column("row").to_numpy()):
            pipe.set(f"{namespace}:{tag}:{_hex(hash_value)}", ids[row])
            count += 1
            if count % batch_rows == 0:
                pipe.execute()
    pipe.execute()
    client.close()
    return count


def publish_to_redis(config: JobConfig, online: OnlineLayout, meta: dict[str, Any]) -> int:
    """Write a release into Redis, a Ray task per part (a Ray Data job would pay a streaming executor's start-up
    for a handful of parts); its meta key goes last."""
    import ray
    import redis

    storage = config.storage
    release_id = meta["release_id"]
    redis.Redis.from_url(config.serving.redis_url).ping()  # fail fast, before any task starts

    def named(table: str) -> dict[str, str]:
        return {f.rsplit("/", 1)[-1]: f for f in table_files(online.release_table(release_id, table), storage)}

    profiles = named("profiles")
    namespace = redis_namespace(config, release_id)
    junk = [read_parquet_file(f, storage).column("link_hash").to_numpy() for f in named("junk").values()]
    arguments = ray.put(
        {
            "profiles": profiles,
            "keys": named("keys"),
            "links": named("links"),
            "storage": storage,
            "namespace": namespace,
            "segments": [s["name"] for s in meta["segments"]],
            "with_reasons": bool(meta.get("with_reasons")),
            "url": config.serving.redis_url,
            "batch_rows": config.serving.redis_batch_rows,
        }
    )
    write_part = ray.remote(_write_part_in_task)
    written = sum(ray.get([write_part.remote(name, arguments) for name in sorted(profiles)]))
    client = redis.Redis.from_url(config.serving.redis_url)
    junk_hashes = np.unique(np.concatenate(junk)) if junk else np.zeros(0, np.uint64)
    client.set(f"{namespace}:junk", junk_hashes.astype("<u8").tobytes())
    client.set(f"{namespace}:meta", json.dumps(meta, default=str))  # last: the release is complete
    client.close()
    return written


def drop_redis_release(config: JobConfig, release_id: str) -> None:
    import redis

    client = redis.Redis.from_url(config.serving.redis_url)
    namespace = redis_namespace(config, release_id)
    client.delete(f"{namespace}:meta")  # first: an incomplete namespace is never served
    batch = []
    for key in client.scan_iter(match=f"{namespace}:*", count=10_000):
        batch.append(key)
        if len(batch) >= 10_000:
            client.unlink(*batch)
            batch.clear()
    if batch:
        client.unlink(*batch)
    client.close()


class RedisRelease:
    """A release read from Redis by this replica (asyncio client, one connection pool per replica)."""

    def __init__(self, meta: dict[str, Any], config: JobConfig) -> None:
        import redis
        import redis.asyncio

        self.meta = meta
        self.segments = [s["name"] for s in meta["segments"]]
        self.namespace = redis_namespace(config, meta["release_id"])
        sync = redis.Redis.from_url(config.serving.redis_url)
        if sync.get(f"{self.namespace}:meta") is None:
            raise RuntimeError(f"release {meta['release_id']} is not complete in Redis (no meta key)")
        raw = sync.get(f"{self.namespace}:junk") or b""
        self.junk = np.frombuffer(raw, "<u8").astype(np.uint64)
        self.sync = sync  # the applier thread's client; requests use the asyncio one
        self.client = redis.asyncio.Redis.from_url(config.serving.redis_url)

    def nbytes(self) -> int:
        return int(self.junk.nbytes)

    async def lookup_key(self, hash_value: int) -> tuple[str, Ref] | None:
        persona = await self.client.get(f"{self.namespace}:k:{_hex(hash_value)}")
        return None if persona is None else (persona.decode(), persona.decode())

    def links_blocking(self, hashes: Sequence[int]) -> list[tuple[str, Ref] | None]:
        if not hashes:
            return []
        found = self.sync.mget([f"{self.namespace}:l:{_hex(h)}" for h in hashes])
        return [None if p is None else (p.decode(), p.decode()) for p in found]

    def junk_of(self, hashes: Sequence[int]) -> np.ndarray:
        return _find(self.junk, np.asarray(hashes, np.uint64)) >= 0

    async def bases(self, refs: Sequence[Ref]) -> list[BaseProfile]:
        return self._decode(await self.client.mget([f"{self.namespace}:p:{r}" for r in refs]))

    def bases_blocking(self, refs: Sequence[Ref]) -> list[BaseProfile]:
        return self._decode(self.sync.mget([f"{self.namespace}:p:{r}" for r in refs]))

    def _decode(self, raw: list) -> list[BaseProfile]:
        out = []
        for blob in raw:
            if blob is None:
                raise RuntimeError(f"release {self.meta['release_id']}: a key points to a persona without a profile")
            persona, scores, categories, brands, inputs = msgpack.unpackb(blob)
            nan = float("nan")
            out.append(
                BaseProfile(
                    persona_id=persona,
                    score=np.array([nan if s[0] is None else s[0] for s in scores], np.float32),
                    percentile=np.array([nan if s[1] is None else s[1] for s in scores], np.float32),
                    member=np.array([bool(s[2]) for s in scores], bool),
                    reasons=[s[3] for s in scores] if self.meta.get("with_reasons") else None,
                    intents={
                        "categories": [{"name": n, "weight": w} for n, w in categories],
                        "brands": [{"name": n, "weight": w} for n, w in brands],
                    },
                    inputs=np.frombuffer(inputs, np.float32),
                )
            )
        return out

    async def close(self) -> None:
        await self.client.aclose()
        self.sync.close()


def open_release(meta: dict[str, Any], online: OnlineLayout, config: JobConfig):
    """The store a release was published to (current.json / release.json say which)."""
    if meta.get("store") == "redis":
        return RedisRelease(meta, config)
    return EmbeddedRelease(meta, online, config.storage)
