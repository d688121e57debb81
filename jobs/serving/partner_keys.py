"""Partner API keys: printed once, stored only as a hash under ROOT/online/keys/.

A key is `sk_<KEY_ID>_<SECRET>` with 32 random bytes of secret. `ROOT/online/keys/KEY_ID.json` holds the
partner, a random salt and sha256(salt + secret): a key of that entropy cannot be guessed from its hash, so
a slow password hash would only slow every request down. Replicas reload the folder every few seconds
(new keys work without a restart; a deleted file revokes its key) and compare in constant time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from typing import Any

from jobs.config import JobConfig, StorageConfig
from jobs.run.layout import OnlineLayout
from jobs.run.naming import validate_partner_id
from jobs.storage import list_files, read_json_or_none, write_json

_KEY = re.compile(r"^sk_([0-9a-f]{16})_([A-Za-z0-9_-]{20,128})$")


def _digest(salt: str, secret: str) -> str:
    return hashlib.sha256(f"{salt}{secret}".encode()).hexdigest()


def create_key(config: JobConfig, partner: str, root: str) -> str:
    """`segments serve keys create --partner P --root ROOT`: the new key, to print once."""
    partner = validate_partner_id(partner)
    key_id, secret, salt = secrets.token_hex(8), secrets.token_urlsafe(32), secrets.token_hex(16)
    online = OnlineLayout(root)
    write_json(
        online.key_file(key_id),
        {
            "key_id": key_id,
            "partner_id": partner,
            "salt": salt,
            "sha256": _digest(salt, secret),
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        },
        config.storage,
    )
    return f"sk_{key_id}_{secret}"


class KeyRing:
    """The stored key hashes of a ROOT; `partner_of(key)` is the partner of a valid key, else None."""

    def __init__(self, online: OnlineLayout, storage: StorageConfig) -> None:
        self.online, self.storage = online, storage
        self.records: dict[str, dict[str, Any]] = {}

    def reload(self) -> None:
        records = {}
        for path in list_files(self.online.keys, self.storage, suffixes=(".json",)):
            record = read_json_or_none(path, self.storage)
            if record and {"key_id", "partner_id", "salt", "sha256"} <= set(record):
                records[record["key_id"]] = record
        self.records = records

    def partner_of(self, key: str) -> str | None:
        match = _KEY.match(key)
        if not match:
            return None
        record = self.records.get(match.group(1))
        if record is None:
            return None
        if not hmac.compare_digest(_digest(record["salt"], match.group(2)), record["sha256"]):
            return None
        return record["partner_id"]
