"""Exact and near-duplicate removal with MinHash LSH.

1. Exact: documents whose normalised text (`minhash.normalize_text`: NFKC, casefold, whitespace
   collapsed) has the same 128-bit xxh3 hash are one cluster. Only one of them enters the LSH.
2. Near: every document's MinHash signature (`pipeline.minhash`) goes into a
   `datasketch.MinHashLSH` of `bands` x `rows`; a pair sharing a band is a candidate, confirmed
   when its estimated Jaccard (the fraction of equal signature values) is >= `threshold`.
3. Clusters are the connected components of exact groups and confirmed pairs (union-find).
   The survivor of a cluster is the member with the smallest (priority, id): documents of an
   earlier crawl (`against`) come first, so a re-crawled page never replaces the copy already
   kept. The others are removed with `duplicate_of` (the survivor's id), the estimated Jaccard to
   the survivor (1.0 for exact copies; it may be below `threshold` for a member joined to the
   survivor only through a chain of pairs), and `kind` "exact" or "near".

Why threshold 0.8 with 14 bands x 8 rows: a pair of Jaccard s becomes a candidate with
probability 1 - (1 - s**8)**14, whose 50% point is (1/14)**(1/8) ~ 0.72. At s = 0.8 it is 0.92,
at 0.85 it is 0.99, at 0.9 it is 0.9996, while at 0.5 only 5% and at 0.3 0.1% of pairs are even
compared. 0.8 is the lowest threshold where the LSH misses under a tenth of the pairs at the
threshold itself; a lower one would be limited by LSH recall, not by the confirmation step.

Memory: per document this process keeps a signature (num_perm uint32, 448 bytes at 112), a
16-byte text hash and the id. The in-memory datasketch LSH costs far more, DICT_LSH_BYTES_PER_DOC
(14 band keys, each a bytes object in a dict and in a set; measured by
benchmarks/bench_minhash.py). One 24 GiB machine therefore dedups about 3.5 million documents,
keeping a fifth of its memory for everything else, provided the texts are not held at the same
time (sketch one file at a time with `sketch_table`, `decide`, then filter file by file). Beyond
that, set `redis_url`: the LSH tables move to a Redis server through datasketch's
`storage_config={"type": "redis", "redis": {...}}` (about 6.7 KB per document there) and this
process keeps ~0.6 KB per document, some 30 million documents per 24 GiB. Redis is slower: about
1,500 inserts and 2,700 (batched) queries per second from one process against a local server.

Incremental: `save_index` writes ids, exact-text hashes and signatures of the kept documents to
Parquet (the LSH parameters and shingling knobs in its metadata, checked on load). `against=`
an earlier index puts those signatures into the LSH as they are: no earlier text is re-read.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from os import PathLike
from typing import Sequence
from urllib.parse import urlparse

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash
from datasketch import LeanMinHash, MinHashLSH

from pipeline.errors import StageError
from pipeline.knobs import knob
from pipeline.minhash import EMPTY_VALUE, SCHEME, normalize_text, signatures_of_normalized, uses_char_shingles

# Bump when normalisation or the shingle hash changes: old indexes must then be rejected.
SKETCH_VERSION = "nfkc-casefold-ws/word-chars-and-marks/poly64-fmix/1"
INDEX_METADATA_KEY = b"scratchlm.dedup"
DICT_LSH_BYTES_PER_DOC = 5200  # measured by benchmarks/bench_minhash.py (datasketch 2.0.0, CPython 3.11)
QUERY_BATCH = 1024  # documents per batched LSH lookup


@dataclass
class DedupConfig:
    threshold: float = knob(0.8, "Estimated Jaccard at or above which an LSH candidate pair counts as a near-duplicate.")
    num_perm: int = knob(112, "MinHash permutations per signature.")
    bands: int = knob(14, "LSH bands (bands x rows must not exceed num_perm).")
    rows: int = knob(8, "Signature values per LSH band.")
    ngram: int = knob(5, "Words per shingle for languages written with spaces.")
    char_ngram: int = knob(5, "Characters per shingle for languages without spaces (zh, ja, th, ...).")
    seed: int = knob(1, "Seed of the MinHash permutations (datasketch's default is 1).")
    redis_url: str = knob("", "redis://host:port/db to keep the LSH tables in Redis instead of memory.", in_key=False)
    batch_chars: int = knob(4_000_000, "Characters hashed per numpy batch (memory vs. overhead).", in_key=False)
    batch_shingles: int = knob(8192, "Shingles per permutation block (block is this x num_perm x 4 bytes).", in_key=False)

    def check(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise StageError(f"dedup: threshold must be in (0, 1], got {self.threshold}")
        for name in ("num_perm", "bands", "rows", "ngram", "char_ngram", "batch_chars", "batch_shingles"):
            if getattr(self, name) < 1:
                raise StageError(f"dedup: {name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.seed < 2**32:
            raise StageError(f"dedup: seed must be in [0, 2**32), got {self.seed}")
        if self.bands < 2:
            raise StageError(f"dedup: bands must be at least 2 (datasketch's limit), got {self.bands}")
        if self.bands * self.rows > self.num_perm:
            raise StageError(f"dedup: bands x rows = {self.bands * self.rows} exceeds num_perm = {self.num_perm}")

    def sketch_params(self) -> dict:
        """What must match between an index and a run for their signatures to be comparable."""
        return {"num_perm": self.num_perm, "seed": self.seed, "ngram": self.ngram, "char_ngram": self.char_ngram,
                "scheme": SCHEME, "sketch_version": SKETCH_VERSION}


def s_curve(similarity: float | np.ndarray, bands: int, rows: int):
    """Probability that a pair of this Jaccard shares at least one LSH band."""
    return 1.0 - (1.0 - np.asarray(similarity, dtype=float) ** rows) ** bands


# -- sketches ---------------------------------------------------------------------------------


@dataclass
class Sketches:
    """What dedup needs to know about documents: no text, 16 + 4 * num_perm bytes each."""

    text_hashes: np.ndarray  # (n, 2) uint64: xxh3-128 of the normalised text
    signatures: np.ndarray  # (n, num_perm) uint32

    def __len__(self) -> int:
        return len(self.signatures)

    @staticmethod
    def concat(parts: Sequence[Sketches], num_perm: int) -> Sketches:
        if not parts:
            return Sketches(np.zeros((0, 2), np.uint64), np.zeros((0, num_perm), np.uint32))
        return Sketches(np.concatenate([p.text_hashes for p in parts]), np.concatenate([p.signatures for p in parts]))


def sketch_documents(texts: Sequence[str], languages: Sequence[str | None] | None, config: DedupConfig) -> Sketches:
    """Normalise once; hash the normalised text for exact duplicates and shingle it for MinHash."""
    if languages is None:
        languages = [None] * len(texts)
    normalized = [normalize_text(t or "") for t in texts]  # a missing text is an empty document
    digests = b"".join(xxhash.xxh3_128_digest(t.encode("utf-8", "surrogatepass")) for t in normalized)
    text_hashes = np.frombuffer(digests, dtype=np.uint64).reshape(-1, 2).copy()
    char_modes = np.fromiter(map(uses_char_shingles, normalized, languages), dtype=bool, count=len(texts))
    return Sketches(text_hashes, signatures_of_normalized(normalized, char_modes, config))


# -- the saved index --------------------------------------------------------------------------


@dataclass
class IndexData:
    """Signatures of documents kept by earlier runs. `priority[i]` is the position of the file
    row i came from (earlier files first); their documents win over later ones."""

    ids: list[str]
    sketches: Sketches
    priority: np.ndarray
    params: dict = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)


def index_table(ids: Sequence[str], sketches: Sketches, config: DedupConfig) -> pa.Table:
    num_perm = sketches.signatures.shape[1]
    signature = pa.FixedSizeListArray.from_arrays(pa.array(sketches.signatures.reshape(-1)), num_perm)
    text_hash = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(16), len(ids), [None, pa.py_buffer(np.ascontiguousarray(sketches.text_hashes, dtype=np.uint64))])
    table = pa.table({"id": pa.array(list(ids), type=pa.string()), "text_hash": text_hash, "signature": signature})
    meta = dict(config.sketch_params(), bands=config.bands, rows=config.rows)
    return table.replace_schema_metadata({INDEX_METADATA_KEY: json.dumps(meta).encode()})


def save_index(path: str | PathLike, ids: Sequence[str], sketches: Sketches | np.ndarray, config: DedupConfig) -> None:
    """Write the index of kept documents as Parquet (never pickle). A bare signature array is
    accepted too; exact-text hashes are then zero and only near-duplicate matching works."""
    if isinstance(sketches, np.ndarray):
        sketches = Sketches(np.zeros((len(sketches), 2), np.uint64), sketches)
    pq.write_table(index_table(ids, sketches, config), path, compression="zstd")


def load_index(paths: str | PathLike | Sequence[str | PathLike], config: DedupConfig | None = None) -> IndexData:
    """Read one or more saved indexes (earlier first). Every file must have been sketched like
    `config` (or, without one, like the first file): same num_perm, seed, n-gram sizes, hashing."""
    if isinstance(paths, (str, PathLike)):
        paths = [paths]
    reference = config.sketch_params() if config is not None else None
    ids: list[str] = []
    parts, priorities, params = [], [], {}
    for position, path in enumerate(paths):
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowInvalid) as err:
            raise StageError(f"{path}: cannot read dedup index ({err})") from None
        raw = (table.schema.metadata or {}).get(INDEX_METADATA_KEY)
        if raw is None or not {"id", "text_hash", "signature"} <= set(table.column_names):
            raise StageError(f"{path}: not a dedup index (needs columns id, text_hash, signature and its metadata)")
        file_params = json.loads(raw)
        reference = reference or {k: file_params.get(k) for k in DedupConfig().sketch_params()}
        _check_compatible(path, file_params, reference)
        num_perm = file_params["num_perm"]
        if (table.schema.field("signature").type != pa.list_(pa.uint32(), num_perm)
                or table.schema.field("text_hash").type != pa.binary(16)):
            raise StageError(f"{path}: dedup index columns have the wrong types for num_perm={num_perm}")
        signature = table.column("signature").combine_chunks()
        signatures = signature.flatten().to_numpy(zero_copy_only=False).reshape(-1, num_perm)
        hashes = _fixed_binary_to_numpy(table.column("text_hash").combine_chunks()).reshape(-1, 2)
        parts.append(Sketches(hashes.copy(), signatures))
        ids.extend(table.column("id").to_pylist())
        priorities.append(np.full(len(table), position, dtype=np.int64))
        params = params or file_params
    num_perm = params.get("num_perm", config.num_perm if config else 0)
    return IndexData(ids, Sketches.concat(parts, num_perm),
                     np.concatenate(priorities) if priorities else np.zeros(0, np.int64), params, [str(p) for p in paths])


def _fixed_binary_to_numpy(array: pa.FixedSizeBinaryArray) -> np.ndarray:
    width = array.type.byte_width
    data = np.frombuffer(array.buffers()[1], dtype=np.uint8)[array.offset * width:(array.offset + len(array)) * width]
    return data.view(np.uint64)


def _check_compatible(source: str | PathLike, params: dict, expected: dict) -> None:
    for name, value in expected.items():
        if params.get(name) != value:
            raise StageError(f"{source}: dedup index was built with {name}={params.get(name)!r}, "
                             f"this run uses {name}={value!r}; rebuild it or match the setting")


# -- deciding ---------------------------------------------------------------------------------


@dataclass
class CandidatePairs:
    """Every LSH candidate pair, for audit and for measuring the LSH: new document `doc` with
    `other`, a row of the new documents, or of the `against` index when `other_earlier`."""

    doc: np.ndarray
    other: np.ndarray
    other_earlier: np.ndarray
    jaccard: np.ndarray  # estimated: fraction of equal signature values
    confirmed: np.ndarray


@dataclass
class DedupResult:
    keep: np.ndarray  # bool per input document
    duplicate_of: list  # survivor id per removed document, None for kept ones
    jaccard: np.ndarray  # float32, estimated Jaccard to the survivor; NaN for kept ones
    kind: list  # "exact" / "near" per removed document, None for kept ones
    cluster_sizes: np.ndarray  # members (earlier documents included) of each cluster of 2 or more
    pairs: CandidatePairs
    counts: dict


def find_duplicates(ids: Sequence[str], texts: Sequence[str], languages: Sequence[str | None] | None,
                    config: DedupConfig, against: IndexData | None = None) -> DedupResult:
    """Which of these documents to keep. `against`: an earlier crawl's index (see `load_index`);
    its documents are never removed but remove the new documents they duplicate."""
    config.check()
    return decide(ids, sketch_documents(texts, languages, config), config, against)


class _UnionFind:
    def __init__(self, n: int):
        self.parent = np.arange(n)

    def find(self, x: int) -> int:
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]  # path halving
            x = parent[x]
        return x

    def union(self, x: int, y: int) -> None:
        rx, ry = self.find(x), self.find(y)
        if rx != ry:
            self.parent[max(rx, ry)] = min(rx, ry)

    def roots(self) -> np.ndarray:
        """The root of every element, by pointer jumping over the whole array at once."""
        parent = self.parent
        while True:
            grand = parent[parent]
            if np.array_equal(grand, parent):
                return parent
            parent = grand


def decide(ids: Sequence[str], sketches: Sketches, config: DedupConfig, against: IndexData | None = None) -> DedupResult:
    """The dedup decision from sketches alone (see the module docstring for the rules)."""
    config.check()
    n_new = len(ids)
    if len(sketches) != n_new:
        raise ValueError(f"{n_new} ids but {len(sketches)} sketches")
    if against is None:
        against = IndexData([], Sketches.concat([], config.num_perm), np.zeros(0, np.int64))
    elif len(against):
        _check_compatible(", ".join(against.sources) or "against index", against.params, config.sketch_params())
    n_old = len(against)
    # Rows 0..n_old-1 are the earlier documents, then the new ones: one numbering for everything.
    all_ids = list(against.ids) + list(ids)
    priority = np.concatenate([against.priority, np.full(n_new, int(against.priority.max(initial=-1)) + 1)])
    hashes = np.concatenate([against.sketches.text_hashes, sketches.text_hashes])
    signatures = np.concatenate([against.sketches.signatures, sketches.signatures])
    total = n_old + n_new
    clusters = _UnionFind(total)

    # Exact: every member of a group of equal text hashes joins the group's first row.
    leader = _exact_group_leaders(hashes)
    for row in np.flatnonzero(leader != np.arange(total)).tolist():
        clusters.union(row, int(leader[row]))

    # Near: group leaders with at least one shingle go into the LSH; new ones are then queried.
    has_shingles = ~(signatures == EMPTY_VALUE).all(axis=1)
    indexed = np.flatnonzero(has_shingles & (leader == np.arange(total)))
    left_rows, right_rows = _lsh_candidates(signatures, indexed, n_old, config)
    estimates = _estimated_jaccard(signatures, left_rows, right_rows)
    confirmed = estimates >= config.threshold
    for x, y in zip(left_rows[confirmed].tolist(), right_rows[confirmed].tolist()):
        clusters.union(x, y)

    roots = clusters.roots()
    sizes = np.bincount(roots, minlength=total)
    survivor = _survivors(roots, sizes, priority, all_ids, hashes)

    new_rows = np.arange(n_old, total)
    keep = survivor[new_rows] == new_rows
    removed = new_rows[~keep]
    exact = (hashes[removed] == hashes[survivor[removed]]).all(axis=1)
    jaccard = np.full(n_new, np.nan, dtype=np.float32)
    jaccard[removed - n_old] = np.where(exact, 1.0, _estimated_jaccard(signatures, removed, survivor[removed]))
    duplicate_of: list = [None] * n_new
    kind: list = [None] * n_new
    for row, is_exact in zip(removed.tolist(), exact.tolist()):
        duplicate_of[row - n_old] = all_ids[survivor[row]]
        kind[row - n_old] = "exact" if is_exact else "near"

    cluster_roots = np.unique(roots[new_rows]) if n_new else np.zeros(0, np.int64)
    cluster_sizes = sizes[cluster_roots][sizes[cluster_roots] > 1]
    pairs = CandidatePairs(
        doc=left_rows - n_old,
        other=np.where(right_rows < n_old, right_rows, right_rows - n_old),
        other_earlier=right_rows < n_old,
        jaccard=estimates,
        confirmed=confirmed,
    )
    counts = {
        "documents": n_new,
        "kept": int(keep.sum()),
        "removed_exact": int(exact.sum()),
        "removed_near": int((~exact).sum()),
        "removed_by_earlier_crawl": int((survivor[removed] < n_old).sum()),
        "without_shingles": int((~has_shingles[new_rows]).sum()),
        "candidate_pairs": len(left_rows),
        "confirmed_pairs": int(confirmed.sum()),
        "duplicate_clusters": len(cluster_sizes),
        "against_documents": n_old,
    }
    return DedupResult(keep, duplicate_of, jaccard, kind, cluster_sizes, pairs, counts)


def _exact_group_leaders(hashes: np.ndarray) -> np.ndarray:
    """For each row, the first row with the same (n, 2) text hash (itself if none is earlier)."""
    total = len(hashes)
    order = np.lexsort((np.arange(total), hashes[:, 1], hashes[:, 0]))  # by hash, then by row
    new_group = np.ones(total, dtype=bool)
    new_group[1:] = (hashes[order[1:]] != hashes[order[:-1]]).any(axis=1)
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(total), 0))
    leader = np.empty(total, dtype=np.int64)
    leader[order] = order[group_start]
    return leader


def _survivors(roots: np.ndarray, sizes: np.ndarray, priority: np.ndarray, ids: list[str], hashes: np.ndarray
               ) -> np.ndarray:
    """For each row, the row that survives its cluster: the smallest (priority, id, text hash).
    Only rows of clusters of two or more are visited, so this loop is as long as the duplicates."""
    best: dict[int, tuple] = {}
    clustered = np.flatnonzero(sizes[roots] > 1).tolist()
    for row in clustered:
        rank = (int(priority[row]), ids[row], tuple(hashes[row].tolist()), row)
        root = int(roots[row])
        if root not in best or rank < best[root]:
            best[root] = rank
    survivor = np.arange(len(roots))
    for row in clustered:
        survivor[row] = best[int(roots[row])][-1]
    return survivor


def _lsh_candidates(signatures: np.ndarray, indexed: np.ndarray, n_old: int, config: DedupConfig
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Rows `indexed` go into a datasketch MinHashLSH; each of them from `n_old` on is queried.
    Returns the candidate pairs (later row, earlier row), each unordered pair once."""
    storage_config = _storage_config(config.redis_url)
    # Keys are row numbers; Redis storage wants bytes (we never let datasketch pickle them).
    lsh = MinHashLSH(threshold=config.threshold, num_perm=config.num_perm, params=(config.bands, config.rows),
                     storage_config=storage_config, prepickle=False)
    key_of = (lambda row: row.to_bytes(8, "big")) if storage_config else (lambda row: row)

    left: list[int] = []
    right: list[int] = []
    try:
        with lsh.insertion_session() as session:
            for row in indexed.tolist():
                sketch = LeanMinHash(seed=config.seed, hashvalues=signatures[row], scheme=SCHEME)
                session.insert(key_of(row), sketch, check_duplication=False)
        queried = indexed[indexed >= n_old]
        for lo in range(0, len(queried), QUERY_BATCH):
            rows = queried[lo:lo + QUERY_BATCH].tolist()
            for row, found in zip(rows, _query_many(lsh, signatures, rows)):
                earlier = [key for key in found if key < row]
                left.extend([row] * len(earlier))
                right.extend(earlier)
    finally:
        _drop_lsh(lsh, storage_config)
    return np.array(left, dtype=np.int64), np.array(right, dtype=np.int64)


def _query_many(lsh: MinHashLSH, signatures: np.ndarray, rows: list[int]) -> list[set]:
    """`lsh.query` for many documents: each band table is asked once for the whole batch (one
    Redis pipeline per band instead of one round trip per band and document). The band keys are
    made by the LSH's own `_H`, exactly as `insert` and `query` make them."""
    found: list[set] = [set() for _ in rows]
    for (start, end), table in zip(lsh.hashranges, lsh.hashtables):
        band_keys = [lsh._H(signatures[row, start:end]) for row in rows]
        for keys, hits in zip(found, table.getmany(*band_keys)):
            keys.update(hits)
    return [{int.from_bytes(key, "big") if isinstance(key, bytes) else key for key in keys} for keys in found]


def _estimated_jaccard(signatures: np.ndarray, a: np.ndarray, b: np.ndarray, chunk: int = 65536) -> np.ndarray:
    out = np.empty(len(a), dtype=np.float32)
    for lo in range(0, len(a), chunk):
        hi = lo + chunk
        out[lo:hi] = (signatures[a[lo:hi]] == signatures[b[lo:hi]]).mean(axis=1)
    return out


def _storage_config(redis_url: str) -> dict | None:
    """datasketch's storage_config for `redis_url`, under a fresh key prefix for this run."""
    if not redis_url:
        return None
    url = urlparse(redis_url)
    if url.scheme != "redis" or not url.hostname:
        raise StageError(f"dedup: redis_url must look like redis://host:port/db, got {redis_url!r}")
    try:
        db = int(url.path.strip("/") or 0)
    except ValueError:
        raise StageError(f"dedup: redis_url database must be a number, got {redis_url!r}") from None
    basename = f"scratchlm-dedup-{uuid.uuid4().hex}".encode()
    return {"type": "redis", "basename": basename,
            "redis": {"host": url.hostname, "port": url.port or 6379, "db": db, "password": url.password}}


def _drop_lsh(lsh: MinHashLSH, storage_config: dict | None) -> None:
    """The LSH is scratch state of one run: delete its Redis keys rather than leak them."""
    if storage_config is None:
        return
    client = lsh.keys._redis
    keys = list(client.scan_iter(match=storage_config["basename"] + b"*", count=10_000))
    for lo in range(0, len(keys), 10_000):
        client.delete(*keys[lo:lo + 10_000])


# -- tables -----------------------------------------------------------------------------------


REMOVED_SCHEMA = pa.schema([("id", pa.string()), ("duplicate_of", pa.string()),
                            ("jaccard", pa.float32()), ("kind", pa.string())])


def sketch_table(table: pa.Table, config: DedupConfig, name: str = "table") -> tuple[list[str], Sketches]:
    """Ids and sketches of one table with `id` and `text` (and optionally `language`) columns.
    A missing id becomes `name#row`; a missing text counts as empty."""
    for column, required in (("id", True), ("text", True), ("language", False)):
        if column not in table.column_names:
            if required:
                raise StageError(f"{name}: no `{column}` column (columns: {', '.join(table.column_names)})")
            continue
        kind = table.schema.field(column).type
        if not (_is_text(kind) or (column == "id" and pa.types.is_integer(kind))):
            raise StageError(f"{name}: column `{column}` must be text, it is {kind}")
    ids = [f"{name}#{row}" if i is None else str(i) for row, i in enumerate(table.column("id").to_pylist())]
    texts = [t or "" for t in table.column("text").to_pylist()]
    languages = table.column("language").to_pylist() if "language" in table.column_names else None
    return ids, sketch_documents(texts, languages, config)


def _is_text(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)


def removed_table(ids: Sequence[str], result: DedupResult) -> pa.Table:
    """The audit side file: one row per removed document."""
    rows = np.flatnonzero(~result.keep)
    return pa.table({
        "id": pa.array([ids[i] for i in rows], pa.string()),
        "duplicate_of": pa.array([result.duplicate_of[i] for i in rows], pa.string()),
        "jaccard": pa.array(result.jaccard[rows], pa.float32()),
        "kind": pa.array([result.kind[i] for i in rows], pa.string()),
    }, schema=REMOVED_SCHEMA)


def dedup_tables(tables: Sequence[pa.Table], config: DedupConfig, against: IndexData | None = None,
                 names: Sequence[str] | None = None) -> tuple[list[pa.Table], pa.Table, pa.Table, dict]:
    """Dedup documents given as Arrow tables (see `sketch_table`).

    Returns the kept rows of each table (all columns), the removed rows as (id, duplicate_of,
    jaccard, kind), the index of the kept documents (`save_index`'s format: write it with
    `pyarrow.parquet.write_table`) and stats for the run report."""
    config.check()
    names = list(names) if names is not None else [f"table {i}" for i in range(len(tables))]
    ids: list[str] = []
    parts = []
    for table, name in zip(tables, names):
        table_ids, sketches = sketch_table(table, config, name)
        ids += table_ids
        parts.append(sketches)
    sketches = Sketches.concat(parts, config.num_perm)
    result = decide(ids, sketches, config, against)

    kept_tables, start = [], 0
    for table in tables:
        kept_tables.append(table.filter(pa.array(result.keep[start:start + len(table)])))
        start += len(table)
    kept_rows = np.flatnonzero(result.keep)
    index = index_table([ids[i] for i in kept_rows],
                        Sketches(sketches.text_hashes[kept_rows], sketches.signatures[kept_rows]), config)
    stats = dict(result.counts, cluster_size_histogram=_histogram(result.cluster_sizes))
    return kept_tables, removed_table(ids, result), index, stats


def _histogram(sizes: np.ndarray) -> dict[str, int]:
    """Cluster sizes in powers-of-two bins: {"2": n, "3-4": n, "5-8": n, ...}."""
    out: dict[str, int] = {}
    lo = 2
    while len(sizes) and lo <= sizes.max():
        hi = 2 if lo == 2 else lo * 2 - 2
        label = str(lo) if lo == hi else f"{lo}-{hi}"
        out[label] = int(((sizes >= lo) & (sizes <= hi)).sum())
        lo = hi + 1
    return out
