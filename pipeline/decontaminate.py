"""Decontamination: which evaluation texts (held-out documents, benchmark items) the training data
already contains, by exact n-gram overlap as GPT-3 (Brown et al. 2020, appendix C) and
lm-evaluation-harness's decontamination do.

An n-gram is 13 consecutive words of the text after the dedup stage's normalisation
(pipeline/minhash.py: NFKC, casefold, runs of word characters; punctuation and layout never
matter). Languages written without spaces (the same test as dedup's) use n-grams of 2 × 13
characters instead. Each n-gram is hashed with the MinHash code's vectorised polynomial hash, kept
at 64 bits here (not folded to 32) so that a set of billions of training n-grams gives a false match
about once per 10^10 lookups. The training side is one sorted array of unique hashes (8 bytes per
distinct n-gram); a lookup is a binary search.

A text is contaminated when at least `min_overlap` of its n-grams occur in the training data
(0: any one of them, GPT-3's and lm-eval's rule). A text shorter than n words is a single n-gram
of all its words, so it matches only a training document made of exactly those words.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from pipeline.minhash import (_TABLES, _U64, _char_shingle_spans, _fmix64, _word_shingle_spans, normalize_text,
                              uses_char_shingles)

NGRAM = 13
BATCH_CHARS = 4_000_000  # characters hashed at once (the span arrays are ~40 bytes per character)


def _span_hashes64(canonical: np.ndarray, span_start: np.ndarray, span_end: np.ndarray) -> np.ndarray:
    """pipeline.minhash._span_hashes without the fold to 32 bits."""
    base_pow, inv_pow = _TABLES.powers(len(canonical))
    with np.errstate(over="ignore"):
        prefix = np.zeros(len(canonical) + 1, dtype=_U64)
        np.cumsum(_TABLES.mixed[canonical] * inv_pow, out=prefix[1:])
        return _fmix64((prefix[span_end] - prefix[span_start]) * base_pow[span_start])


def ngram_hashes(texts: Sequence[str], n: int = NGRAM) -> list[np.ndarray]:
    """The 64-bit hashes of each text's n-grams (see the module doc), one array per text."""
    normalized = [normalize_text(t or "") for t in texts]
    char_mode = np.array([uses_char_shingles(t, None) for t in normalized], dtype=bool)
    out: list[np.ndarray] = [np.empty(0, _U64)] * len(texts)
    for mode, spans_of, size in ((False, _word_shingle_spans, n), (True, _char_shingle_spans, 2 * n)):
        rows = np.flatnonzero(char_mode == mode)
        lo = 0
        while lo < len(rows):
            hi, chars = lo, 0
            while hi < len(rows) and (hi == lo or chars < BATCH_CHARS):
                chars += len(normalized[rows[hi]]) + 1
                hi += 1
            batch = [normalized[r] for r in rows[lo:hi].tolist()]
            codes = np.frombuffer(" ".join(batch).encode("utf-32-le", "surrogatepass"), dtype="<u4")
            doc_start = np.zeros(len(batch) + 1, dtype=np.int64)
            np.cumsum(np.fromiter(map(len, batch), dtype=np.int64, count=len(batch)) + 1, out=doc_start[1:])
            canonical, start, end, counts = spans_of(codes, doc_start, size)
            hashes = _span_hashes64(canonical, start, end) if len(start) else np.empty(0, _U64)
            for row, piece in zip(rows[lo:hi].tolist(), np.split(hashes, np.cumsum(counts)[:-1])):
                out[row] = piece
            lo = hi
    return out


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """np.unique by sorting (numpy 2's hash-based unique is several times slower on uint64)."""
    values = np.sort(values)
    keep = np.ones(len(values), dtype=bool)
    keep[1:] = values[1:] != values[:-1]
    return values[keep]


class TrainingNgrams:
    """The distinct n-gram hashes of a training corpus, built once, queried many times."""

    def __init__(self, texts: Iterable[str], n: int = NGRAM, batch_docs: int = 2048):
        started = time.perf_counter()
        self.n, self.documents = n, 0
        parts: list[np.ndarray] = []
        batch: list[str] = []
        for text in texts:
            batch.append(text)
            if len(batch) == batch_docs:
                parts.append(self._unique(batch))
                batch = []
        if batch:
            parts.append(self._unique(batch))
        self.hashes = sorted_unique(np.concatenate(parts)) if parts else np.empty(0, _U64)
        self.build_seconds = time.perf_counter() - started

    def _unique(self, batch: list[str]) -> np.ndarray:
        self.documents += len(batch)
        hashes = ngram_hashes(batch, self.n)
        return sorted_unique(np.concatenate(hashes)) if hashes else np.empty(0, _U64)

    def overlap(self, texts: Sequence[str]) -> np.ndarray:
        """The share of each text's n-grams found in the training data (0 for a text without any)."""
        shares = np.zeros(len(texts))
        if not len(self.hashes):
            return shares
        for i, hashes in enumerate(ngram_hashes(texts, self.n)):
            if len(hashes):
                at = np.minimum(np.searchsorted(self.hashes, hashes), len(self.hashes) - 1)
                shares[i] = float(np.mean(self.hashes[at] == hashes))
        return shares


@dataclass
class Contamination:
    """Flags for one set of texts, and what finding them cost."""
    flags: np.ndarray     # bool per text
    overlap: np.ndarray   # share of each text's n-grams in the training data
    seconds: float

    def summary(self) -> dict:
        n = len(self.flags)
        return {"items": int(self.flags.sum()), "of": n, "share": float(self.flags.mean()) if n else 0.0,
                "seconds": round(self.seconds, 3)}


def contaminated(training: TrainingNgrams, texts: Sequence[str], min_overlap: float = 0.0) -> Contamination:
    started = time.perf_counter()
    overlap = training.overlap(texts)
    flags = overlap > 0 if min_overlap <= 0 else overlap >= min_overlap
    return Contamination(flags, overlap, time.perf_counter() - started)
