"""Exact and near-duplicate removal with MinHash LSH.

1. Exact: documents whose normalised text (`minhash.normalize_text`: NFKC, casefold, whitespace
   collapsed) has the 128-bit xxh3 hash of a kept document's are copies of it; they never reach
   the LSH.
2. Near: the MinHash signatures (`pipeline.minhash`) of kept documents go into a
   `datasketch.MinHashLSH` of `bands` x `rows`; a document sharing a band with one is a
   candidate pair, confirmed when its estimated Jaccard (the fraction of equal signature values)
   is >= `threshold`.
3. Greedy, in input order (`Deduper`): a document is removed when it is an exact copy of, or a
   confirmed near-duplicate of, a document kept before it; `duplicate_of` is the earliest such
   document, with the estimated Jaccard to it (1.0 for exact copies) and `kind` "exact" or
   "near". Documents of an earlier crawl (`against`) come first, so a re-crawled page never
   replaces the copy already kept, and a new input file never changes what was decided for the
   files before it (see `Deduper` for why this beats connected components here).

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
    """Every LSH candidate pair compared, for audit and for measuring the LSH: document `doc` of
    the batch with `other`, a row of the same batch, or (when `other_earlier`) the ordinal of a
    document kept before the batch (the `against` index first)."""

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
    cluster_sizes: np.ndarray  # per surviving document with copies removed: 1 + the copies
    pairs: CandidatePairs
    counts: dict


def find_duplicates(ids: Sequence[str], texts: Sequence[str], languages: Sequence[str | None] | None,
                    config: DedupConfig, against: IndexData | None = None) -> DedupResult:
    """Which of these documents to keep. `against`: an earlier crawl's index (see `load_index`);
    its documents are never removed but remove the new documents they duplicate."""
    config.check()
    return decide(ids, sketch_documents(texts, languages, config), config, against)


class Deduper:
    """Greedy deduplication in input order, one batch (input file) after another.

    A document is removed when its normalised text equals that of a document kept before it
    (`exact`), or when the LSH finds a document kept before it whose estimated Jaccard is at least
    `threshold` (`near`; `duplicate_of` is the earliest such document). Everything else is kept
    and joins the index. Only kept documents are ever compared against, so a removed page never
    removes another, and a chain A ~ B ~ C with A !~ C keeps A and C.

    Why greedy in order rather than connected components: a decision depends only on what came
    before it. Appending input files (a new WARC) therefore never changes a decision already
    made, which is what lets the dedup stage reuse its per-file parts byte for byte and keep the
    token shards downstream of them cached. The price: the survivor of a group of copies is the
    first one in input order, not a canonical choice, so reordering the inputs changes which copy
    survives (not how many)."""

    def __init__(self, config: DedupConfig, against: IndexData | None = None):
        config.check()
        self.config = config
        self.storage_config = _storage_config(config.redis_url)
        # Keys are ordinals of kept documents; Redis storage wants bytes (datasketch never pickles them).
        self.lsh = MinHashLSH(threshold=config.threshold, num_perm=config.num_perm, params=(config.bands, config.rows),
                              storage_config=self.storage_config, prepickle=False)
        self.kept_ids: list[str] = []
        # Signatures of kept documents by ordinal, in a buffer that doubles when full: appending
        # file after file stays linear in the number of documents.
        self._buffer = np.zeros((1024, config.num_perm), np.uint32)
        self.kept_by_text: dict[bytes, int] = {}
        self.n_against = 0
        if against is not None and len(against):
            _check_compatible(", ".join(against.sources) or "against index", against.params, config.sketch_params())
            self.add_kept(against.ids, against.sketches)
            self.n_against = len(against)

    def __len__(self) -> int:
        return len(self.kept_ids)

    def add_kept(self, ids: Sequence[str], sketches: Sketches) -> None:
        """Documents known to be kept (an earlier crawl's index, or the files of an earlier run
        of the same inputs): they only join the index."""
        start = len(self.kept_ids)
        for offset, text_hash in enumerate(_text_keys(sketches.text_hashes)):
            self.kept_by_text.setdefault(text_hash, start + offset)
        self._index(list(ids), sketches.signatures, range(start, start + len(ids)))

    def add_batch(self, ids: Sequence[str], sketches: Sketches) -> "BatchDecision":
        n = len(ids)
        if len(sketches) != n:
            raise ValueError(f"{n} ids but {len(sketches)} sketches")
        signatures = sketches.signatures
        has_shingles = ~(signatures == EMPTY_VALUE).all(axis=1) if n else np.zeros(0, bool)
        earlier = self._query_index(signatures, np.flatnonzero(has_shingles).tolist())
        band_keys = _band_keys(signatures, self.config)
        band_tables: list[dict[bytes, list[int]]] = [{} for _ in band_keys]
        base = len(self.kept_ids)
        keep = np.zeros(n, bool)
        duplicate_of = np.full(n, -1, np.int64)  # ordinal of the kept document, -1 when kept
        jaccard = np.full(n, np.nan, np.float32)
        exact = np.zeros(n, bool)
        pair_doc, pair_other, pair_earlier, pair_jaccard = [], [], [], []
        kept_rows: list[int] = []  # rows of this batch kept so far; row kept_rows[k] has ordinal base + k
        text_keys = _text_keys(sketches.text_hashes)
        for row in range(n):
            match = self.kept_by_text.get(text_keys[row])
            if match is not None:
                duplicate_of[row], jaccard[row], exact[row] = match, 1.0, True
                continue
            if has_shingles[row]:
                candidates = set(earlier.get(row, ()))
                for table, keys in zip(band_tables, band_keys):
                    candidates.update(table.get(keys[row], ()))
                if candidates:
                    ordered = sorted(candidates)
                    others = np.stack([self._signatures[c] if c < base else signatures[kept_rows[c - base]] for c in ordered])
                    estimates = (others == signatures[row]).mean(axis=1).astype(np.float32)
                    pair_doc += [row] * len(ordered)
                    pair_other += [c if c < base else kept_rows[c - base] for c in ordered]
                    pair_earlier += [c < base for c in ordered]
                    pair_jaccard.append(estimates)
                    confirmed = np.flatnonzero(estimates >= self.config.threshold)
                    if len(confirmed):  # the earliest kept document it duplicates
                        first = int(confirmed[0])
                        duplicate_of[row], jaccard[row] = ordered[first], estimates[first]
                        continue
                for table, keys in zip(band_tables, band_keys):
                    table.setdefault(keys[row], []).append(base + len(kept_rows))
            keep[row] = True
            self.kept_by_text[text_keys[row]] = base + len(kept_rows)
            kept_rows.append(row)
        self._index([ids[r] for r in kept_rows], signatures[kept_rows], range(base, base + len(kept_rows)))
        estimates = np.concatenate(pair_jaccard) if pair_jaccard else np.zeros(0, np.float32)
        pairs = CandidatePairs(doc=np.array(pair_doc, np.int64), other=np.array(pair_other, np.int64),
                               other_earlier=np.array(pair_earlier, bool),
                               jaccard=estimates, confirmed=estimates >= self.config.threshold)
        return BatchDecision(keep, duplicate_of, jaccard, exact, has_shingles, pairs)

    def id_of(self, ordinal: int) -> str:
        return self.kept_ids[ordinal]

    def close(self) -> None:
        _drop_lsh(self.lsh, self.storage_config)

    def _key(self, ordinal: int):
        return ordinal.to_bytes(8, "big") if self.storage_config else ordinal

    @property
    def _signatures(self) -> np.ndarray:
        return self._buffer[:len(self.kept_ids)]

    def _index(self, ids: list[str], signatures: np.ndarray, ordinals: range) -> None:
        start, end = len(self.kept_ids), len(self.kept_ids) + len(ids)
        if end > len(self._buffer):
            grown = np.zeros((max(end, 2 * len(self._buffer)), self._buffer.shape[1]), np.uint32)
            grown[:start] = self._buffer[:start]
            self._buffer = grown
        self._buffer[start:end] = signatures
        self.kept_ids.extend(ids)
        with self.lsh.insertion_session() as session:
            for ordinal, signature in zip(ordinals, signatures):
                if (signature != EMPTY_VALUE).any():  # no shingles, nothing to find near it
                    sketch = LeanMinHash(seed=self.config.seed, hashvalues=signature, scheme=SCHEME)
                    session.insert(self._key(ordinal), sketch, check_duplication=False)

    def _query_index(self, signatures: np.ndarray, rows: list[int]) -> dict[int, set]:
        """Candidates among the documents kept by earlier batches, for these rows."""
        if not self.kept_ids or not rows:
            return {}
        found = {}
        for lo in range(0, len(rows), QUERY_BATCH):
            chunk = rows[lo:lo + QUERY_BATCH]
            found.update(zip(chunk, _query_many(self.lsh, signatures, chunk)))
        return found


@dataclass
class BatchDecision:
    keep: np.ndarray
    duplicate_of: np.ndarray  # ordinal in the deduper's index, -1 for kept documents
    jaccard: np.ndarray
    exact: np.ndarray
    has_shingles: np.ndarray
    pairs: CandidatePairs


def _text_keys(text_hashes: np.ndarray) -> list[bytes]:
    return [row.tobytes() for row in np.ascontiguousarray(text_hashes, dtype=np.uint64)]


def _band_keys(signatures: np.ndarray, config: DedupConfig) -> list[list[bytes]]:
    """Per band, the raw bytes of each row's band values: equal bytes, same LSH bucket."""
    keys = []
    for band in range(config.bands):
        values = np.ascontiguousarray(signatures[:, band * config.rows:(band + 1) * config.rows])
        keys.append([v.tobytes() for v in values])
    return keys


def decide(ids: Sequence[str], sketches: Sketches, config: DedupConfig, against: IndexData | None = None) -> DedupResult:
    """The dedup decision from sketches alone (see `Deduper` for the rule), all documents as one batch."""
    deduper = Deduper(config, against)
    try:
        batch = deduper.add_batch(ids, sketches)
        return result_of(deduper, batch)
    finally:
        deduper.close()


def result_of(deduper: Deduper, batch: BatchDecision) -> DedupResult:
    n = len(batch.keep)
    removed = np.flatnonzero(~batch.keep)
    duplicate_of: list = [None] * n
    kind: list = [None] * n
    for row in removed.tolist():
        duplicate_of[row] = deduper.id_of(int(batch.duplicate_of[row]))
        kind[row] = "exact" if batch.exact[row] else "near"
    survivors, members = np.unique(batch.duplicate_of[removed], return_counts=True)
    counts = {
        "documents": n,
        "kept": int(batch.keep.sum()),
        "removed_exact": int(batch.exact.sum()),
        "removed_near": int((~batch.keep & ~batch.exact).sum()),
        "removed_by_earlier_crawl": int((batch.duplicate_of[removed] < deduper.n_against).sum()),
        "without_shingles": int((~batch.has_shingles).sum()),
        "candidate_pairs": len(batch.pairs.doc),
        "confirmed_pairs": int(batch.pairs.confirmed.sum()),
        "duplicate_clusters": len(survivors),
        "against_documents": deduper.n_against,
    }
    return DedupResult(batch.keep, duplicate_of, batch.jaccard, kind, members + 1, batch.pairs, counts)


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
