"""MinHash signatures of documents, computed in bulk with numpy.

A document becomes a set of shingles, each shingle a 32-bit hash, and the set becomes a signature
of `num_perm` uint32 minima:

1. `normalize_text`: NFKC, casefold, whitespace collapsed to single spaces. (Exact duplicates are
   found on this string; see `pipeline.dedup`.)
2. Tokens are runs of word characters (what `re` calls \\w, plus combining marks so that Indic
   and Thai words are not cut at their vowel signs); punctuation never matters. Spaced
   languages are shingled by word n-grams ("w1 w2 w3 w4 w5"); languages written without spaces
   (zh, ja, th, ...) by character n-grams of the tokens run together. A document shorter than one
   n-gram is a single shingle of all its tokens; a document without tokens has no shingles.
3. Each shingle's hash is a polynomial hash of its code points, read off prefix sums over the
   whole batch (`(P[end] - P[start]) * B**start`), so no Python code runs per word or shingle.
   It is a fast non-cryptographic hash: fine for text, not meant to resist crafted collisions.
4. The permutations are datasketch's (>= 2.0) default scheme "affine32" with the same seed: the
   32-bit shingle hash is pre-mixed with the MurmurHash3 finalizer, then `a*h + b mod 2**32` with
   odd `a` (a bijection; uint32 wrap-around is the modulo), applied to a (num_perm x shingles)
   block at once and min-reduced per document with `np.minimum.reduceat`.

`shingles()` and `shingle_hash32()` are plain-Python twins of steps 2-3: the signature equals
`datasketch.MinHash(num_perm, seed=seed, hashfunc=shingle_hash32).update_batch(shingles(...))`
bit for bit (tested), so a row can be wrapped as `datasketch.LeanMinHash(seed=seed,
hashvalues=row, scheme="affine32")` and indexed by `datasketch.MinHashLSH`. We use affine32, not
datasketch's "legacy" `(a*h+b) mod (2**61-1)`: the legacy fold of a 61-bit range to 32 bits
biases estimates on large sets (datasketch issue #212) and needs uint64 products.
"""
from __future__ import annotations

import re
import unicodedata
from itertools import groupby
from typing import Iterator, Protocol, Sequence

import numpy as np


class SketchKnobs(Protocol):
    """The knobs signatures depend on. `pipeline.dedup.DedupConfig` has them; naming them here
    instead of importing it keeps this module below dedup.py (no import circle)."""

    num_perm: int
    seed: int
    ngram: int
    char_ngram: int
    batch_chars: int
    batch_shingles: int

SCHEME = "affine32"  # datasketch's name for the permutation family used here
EMPTY_VALUE = np.uint32(0xFFFFFFFF)  # a slot no shingle has lowered (datasketch's initial value)

# Languages written without spaces between words (codes as fastText lid.176 emits them).
NO_SPACE_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "km", "my", "bo", "dz", "yue", "wuu", "gan", "lzh"})
# Their scripts: kana, Han, Thai, Lao, Tibetan, Myanmar, Khmer (not Hangul: Korean is spaced).
_NO_SPACE_SCRIPT = re.compile(
    "[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u0e00-\u0eff\u0f00-\u0fff\u1000-\u109f\u1780-\u17ff]"
)
_TOKEN = re.compile(r"\w+")
_MARKS = frozenset({"Mn", "Mc"})
_SCRIPT_SAMPLE_CHARS = 400
_SPACE = 32

_U64 = np.uint64
_MASK64 = (1 << 64) - 1
# Base of the shingle polynomial hash (a fixed odd constant) and its inverse mod 2**64.
_BASE = 0x9E3779B97F4A7C15
_BASE_INV = pow(_BASE, -1, 1 << 64)


def normalize_text(text: str) -> str:
    """The canonical form for exact duplicates and tokenising: NFKC, casefold, and every run of
    whitespace as one space (so layout, case and full-width forms never make documents differ)."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def uses_char_shingles(normalized: str, language: str | None) -> bool:
    """Character n-grams for languages written without spaces. The langid stage's `language`
    decides when present; otherwise the script of the first few hundred characters does."""
    if language:
        primary = language.lower().replace("_", "-").split("-")[0]
        if primary not in ("", "und", "unknown", "zxx"):
            return primary in NO_SPACE_LANGUAGES
    sample = normalized[:_SCRIPT_SAMPLE_CHARS]
    if _NO_SPACE_SCRIPT.search(sample) is None:
        return False
    letters = sum(len(t) for t in _TOKEN.findall(sample))
    return len(_NO_SPACE_SCRIPT.findall(sample)) * 2 > letters


# -- plain-Python reference -------------------------------------------------------------------


def is_word_char(ch: str) -> bool:
    """A character that belongs to a token: letters, digits, "_" (as `re`'s \\w) and marks."""
    return ch.isalnum() or ch == "_" or unicodedata.category(ch) in _MARKS


def tokens_of(normalized: str) -> list[str]:
    return ["".join(run) for is_word, run in groupby(normalized, key=is_word_char) if is_word]


def shingles(text: str, language: str | None, config: SketchKnobs) -> list[str]:
    """The shingles of one document as strings. The reference the vectorised code must match;
    tests measure exact Jaccard with it and the benchmark feeds it to datasketch."""
    normalized = normalize_text(text)
    tokens = tokens_of(normalized)
    if uses_char_shingles(normalized, language):
        units, n, glue = list("".join(tokens)), config.char_ngram, ""
    else:
        units, n, glue = tokens, config.ngram, " "
    if not units:
        return []
    if len(units) < n:
        return [glue.join(units)]
    return [glue.join(units[i:i + n]) for i in range(len(units) - n + 1)]


def _fmix64_int(h: int) -> int:
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & _MASK64
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & _MASK64
    return h ^ (h >> 33)


def shingle_hash32(shingle: str | bytes) -> int:
    """Scalar twin of the vectorised shingle hash, usable as datasketch's `hashfunc`:
    sum over k of fmix64(code point k) * BASE_INV**k mod 2**64, mixed again, top 32 bits."""
    if isinstance(shingle, bytes):
        shingle = shingle.decode("utf-8")
    h, power = 0, 1
    for ch in shingle:
        h = (h + _fmix64_int(ord(ch)) * power) & _MASK64
        power = (power * _BASE_INV) & _MASK64
    return _fmix64_int(h) >> 32


# -- vectorised -------------------------------------------------------------------------------


def _fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer (a bijection that spreads every input bit)."""
    h = h ^ (h >> _U64(33))
    h = h * _U64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> _U64(33))
    h = h * _U64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> _U64(33))


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer: datasketch's pre-mix of every input hash."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


class _Tables:
    """Lookup tables over all code points and hash powers, built on first use."""

    def __init__(self) -> None:
        self._is_word: np.ndarray | None = None
        self._mixed: np.ndarray | None = None
        self._powers = (np.ones(1, _U64), np.ones(1, _U64))

    @property
    def is_word(self) -> np.ndarray:
        """`is_word_char` of every code point (1.1 MB, ~0.3 s to build once per process)."""
        if self._is_word is None:
            self._is_word = np.fromiter(map(is_word_char, map(chr, range(0x110000))), dtype=bool, count=0x110000)
        return self._is_word

    @property
    def mixed(self) -> np.ndarray:
        """fmix64 of every code point: one gather instead of nine array ops per character."""
        if self._mixed is None:
            with np.errstate(over="ignore"):
                self._mixed = _fmix64(np.arange(0x110000, dtype=_U64))
        return self._mixed

    def powers(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """BASE**i and BASE_INV**i mod 2**64 for i < n (cumprod of uint64 wraps: the modulo)."""
        if len(self._powers[0]) < n:
            size = max(n, 2 * len(self._powers[0]))
            self._powers = (_power_table(_BASE, size), _power_table(_BASE_INV, size))
        return self._powers[0][:n], self._powers[1][:n]


def _power_table(base: int, size: int) -> np.ndarray:
    table = np.full(size, base, dtype=_U64)
    table[0] = 1
    return np.cumprod(table, dtype=_U64)


_TABLES = _Tables()


def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The (a, b) of datasketch's affine32 permutations for this seed, drawn the same way."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


def _exclusive_cumsum(values: np.ndarray) -> np.ndarray:
    out = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum(values, out=out[1:])
    return out


def _word_shingle_spans(codes: np.ndarray, doc_start: np.ndarray, n: int):
    """Word n-grams. `codes` holds the documents joined by one space, document i starting at
    doc_start[i]. Returns (canonical codes, span starts, span ends, shingles per document), the
    spans indexing the canonical stream: every token of the batch joined by single spaces."""
    word = _TABLES.is_word[codes]
    edges = np.diff(word.view(np.int8), prepend=np.int8(0), append=np.int8(0))  # +1: token starts, -1: ended
    token_start = np.flatnonzero(edges == 1)
    token_end = np.flatnonzero(edges == -1)
    token_len = token_end - token_start
    # Keep the word characters and the first character after each token, which becomes the space
    # before the next one: token k then begins after all earlier tokens and one space after each.
    canonical = codes[word | (edges[:-1] == -1)]
    canonical_start = _exclusive_cumsum(token_len)[:-1] + np.arange(len(token_start))
    separator = canonical_start + token_len
    canonical[separator[separator < len(canonical)]] = _SPACE

    first_token = np.searchsorted(token_start, doc_start[:-1])
    tokens_per_doc = np.searchsorted(token_start, doc_start[1:]) - first_token
    counts = np.where(tokens_per_doc >= n, tokens_per_doc - n + 1, (tokens_per_doc > 0).astype(np.int64))
    shingle_doc = np.repeat(np.arange(len(counts)), counts)
    first = first_token[shingle_doc] + np.arange(len(shingle_doc)) - _exclusive_cumsum(counts)[shingle_doc]
    last = first + np.minimum(n, tokens_per_doc)[shingle_doc] - 1  # a short document is one shingle
    return canonical, canonical_start[first], canonical_start[last] + token_len[last], counts


def _char_shingle_spans(codes: np.ndarray, doc_start: np.ndarray, n: int):
    """Character n-grams over the word characters of each document (the same return values as
    `_word_shingle_spans`; here the canonical stream is the word characters run together)."""
    kept = np.flatnonzero(_TABLES.is_word[codes])
    canonical = codes[kept]
    bounds = np.searchsorted(kept, doc_start)
    chars_per_doc = np.diff(bounds)
    counts = np.where(chars_per_doc >= n, chars_per_doc - n + 1, (chars_per_doc > 0).astype(np.int64))
    shingle_doc = np.repeat(np.arange(len(counts)), counts)
    start = bounds[:-1][shingle_doc] + np.arange(len(shingle_doc)) - _exclusive_cumsum(counts)[shingle_doc]
    return canonical, start, start + np.minimum(n, chars_per_doc)[shingle_doc], counts


def _span_hashes(canonical: np.ndarray, span_start: np.ndarray, span_end: np.ndarray) -> np.ndarray:
    """32-bit hash of each span [start, end) of the canonical stream, as `shingle_hash32`.
    P[i] = sum_{j<i} fmix64(code_j) * BASE_INV**j, so the hash of a span is
    (P[end] - P[start]) * BASE**start: the same wherever the span sits."""
    base_pow, inv_pow = _TABLES.powers(len(canonical))
    with np.errstate(over="ignore"):
        prefix = np.zeros(len(canonical) + 1, dtype=_U64)
        np.cumsum(_TABLES.mixed[canonical] * inv_pow, out=prefix[1:])
        span = (prefix[span_end] - prefix[span_start]) * base_pow[span_start]
        return (_fmix64(span) >> _U64(32)).astype(np.uint32)


def _min_hash_into(signatures: np.ndarray, hashes: np.ndarray, shingle_doc: np.ndarray,
                   a: np.ndarray, b: np.ndarray, chunk: int) -> None:
    """signatures[d] = min(signatures[d], min over d's shingles of a*fmix32(h)+b), in blocks of
    `chunk` shingles. The block is laid out (num_perm, chunk): numpy reduces along contiguous
    rows 2-3x faster than in the (chunk, num_perm) layout."""
    mixed = _fmix32(hashes)
    buffer = np.empty((len(a), min(chunk, len(mixed))), dtype=np.uint32)
    for lo in range(0, len(mixed), chunk):
        hi = min(lo + chunk, len(mixed))
        block = buffer[:, : hi - lo]
        np.multiply(a[:, None], mixed[None, lo:hi], out=block)  # wraps mod 2**32 on purpose
        np.add(block, b[:, None], out=block)
        docs = shingle_doc[lo:hi]
        seg = np.flatnonzero(np.concatenate(([True], docs[1:] != docs[:-1])))
        mins = np.minimum.reduceat(block, seg, axis=1).T
        seg_docs = docs[seg]  # distinct: shingles are grouped by document
        signatures[seg_docs] = np.minimum(signatures[seg_docs], mins)


def _batches_by_chars(rows: np.ndarray, texts: Sequence[str], batch_chars: int) -> Iterator[np.ndarray]:
    """Consecutive runs of `rows` holding about `batch_chars` characters (at least one row)."""
    lo, size = 0, 0
    for i, row in enumerate(rows.tolist()):
        size += len(texts[row])
        if size >= batch_chars:
            yield rows[lo:i + 1]
            lo, size = i + 1, 0
    if lo < len(rows):
        yield rows[lo:]


def signatures_of_normalized(normalized: Sequence[str], char_modes: np.ndarray, config: SketchKnobs) -> np.ndarray:
    """Signatures (n, num_perm) of texts already passed through `normalize_text`, with their
    shingling mode. A document without shingles keeps the all-EMPTY_VALUE row."""
    a, b = permutations(config.num_perm, config.seed)
    signatures = np.full((len(normalized), config.num_perm), EMPTY_VALUE, dtype=np.uint32)
    for char_mode, spans_of, n in ((False, _word_shingle_spans, config.ngram),
                                   (True, _char_shingle_spans, config.char_ngram)):
        for rows in _batches_by_chars(np.flatnonzero(char_modes == char_mode), normalized, config.batch_chars):
            batch = [normalized[row] for row in rows.tolist()]
            # One space between documents: it is not a word character, so no token spans two.
            codes = np.frombuffer(" ".join(batch).encode("utf-32-le", "surrogatepass"), dtype="<u4")
            doc_start = _exclusive_cumsum(np.fromiter(map(len, batch), dtype=np.int64, count=len(batch)) + 1)
            canonical, span_start, span_end, counts = spans_of(codes, doc_start, n)
            hashes = _span_hashes(canonical, span_start, span_end)
            _min_hash_into(signatures, hashes, np.repeat(rows, counts), a, b, config.batch_shingles)
    return signatures


def compute_signatures(texts: Sequence[str], languages: Sequence[str | None] | None, config: SketchKnobs
                       ) -> np.ndarray:
    """MinHash signatures, uint32 array (len(texts), config.num_perm). `languages` may be None or
    hold None entries; the script then decides between word and character shingles."""
    if languages is None:
        languages = [None] * len(texts)
    normalized = [normalize_text(t or "") for t in texts]  # a missing text is an empty document
    char_modes = np.fromiter(map(uses_char_shingles, normalized, languages), dtype=bool, count=len(texts))
    return signatures_of_normalized(normalized, char_modes, config)
