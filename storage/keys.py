"""Content keys: a key names a computation (stage, code version, config, input digests), so equal
keys mean equal outputs and a changed threshold or input gives a new key."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

KEY_CHARS = 20  # 80 bits: collisions are not a practical concern for one store


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def canonical_json(value: Any) -> str:
    """One spelling per value: sorted keys, no whitespace, dataclasses as dicts."""
    return json.dumps(_plain(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_key(*parts: Any) -> str:
    return hashlib.sha256(canonical_json(list(parts)).encode()).hexdigest()[:KEY_CHARS]


# Hashing a multi-GB crawl on every run would dominate a cache hit, so digests are memoised per
# process on (path, size, mtime); a file rewritten in place changes its mtime and is hashed again.
_digest_memo: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | os.PathLike) -> str:
    path = Path(path)
    st = path.stat()
    memo_key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if memo_key not in _digest_memo:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        _digest_memo[memo_key] = "sha256:" + h.hexdigest()
    return _digest_memo[memo_key]


def remember_digest(path: str | os.PathLike, digest: str) -> None:
    """Seed the memo with a digest read from a manifest, so an artifact's files are not re-hashed."""
    path = Path(path)
    st = path.stat()
    _digest_memo[(str(path.resolve()), st.st_size, st.st_mtime_ns)] = digest
