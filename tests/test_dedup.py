"""Dedup quality on planted near-duplicates of real text, measured against exact Jaccard.

Pairs are made from Jane Austen paragraphs by random word edits until the exact Jaccard of the
two 5-gram shingle sets falls in a band; other paragraphs are left unrelated. The truth is the
exact Jaccard of every pair of documents that share a shingle, not only of the planted pairs.
"""
from __future__ import annotations

import dataclasses
import gzip
import os
import random
import shutil
import socket
import subprocess
import time
from collections import defaultdict
from itertools import combinations
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.dedup import (REMOVED_SCHEMA, DedupConfig, Deduper, Sketches, dedup_tables, find_duplicates, load_index,
                            s_curve, save_index, sketch_documents)
from pipeline.errors import StageError
from pipeline.minhash import shingles

FIXTURES = Path(__file__).parent / "fixtures" / "dedup"
CONFIG = DedupConfig()
# Planted bands: (low, high) exact Jaccard of the pair.
BANDS = {0.95: (0.93, 0.97), 0.85: (0.84, 0.87), 0.7: (0.68, 0.72), 0.5: (0.48, 0.52), 0.3: (0.28, 0.32)}
PAIRS_PER_BAND = 120


def austen() -> list[str]:
    with gzip.open(FIXTURES / "austen_paragraphs.txt.gz", "rt", encoding="utf-8") as f:
        return [line.rstrip("\n").split("\t", 1)[1] for line in f]


def cjk() -> list[tuple[str, str]]:
    lines = (FIXTURES / "cjk_paragraphs.txt").read_text(encoding="utf-8").splitlines()
    return [tuple(line.split("\t", 1)) for line in lines]


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def shingle_set(text: str, language: str | None = None) -> set[str]:
    return set(shingles(text, language, CONFIG))


def edit_until(units: list[str], band: tuple[float, float], rng: random.Random, vocabulary: list[str],
               glue: str, language: str | None = None) -> str | None:
    """Random edits (substitute, delete, insert, trim an end) until the exact Jaccard with the
    original is inside `band`; an edit that would overshoot below it is not taken."""
    lo, hi = band
    original = shingle_set(glue.join(units), language)
    current = list(units)
    for _ in range(2000):
        candidate = list(current)
        op, at = rng.random(), rng.randrange(len(candidate))
        if op < 0.45:
            candidate[at] = rng.choice(vocabulary)
        elif op < 0.65:
            del candidate[at]
        elif op < 0.85:
            candidate.insert(at, rng.choice(vocabulary))
        else:
            candidate = candidate[1:] if rng.random() < 0.5 else candidate[:-1]
        similarity = jaccard(original, shingle_set(glue.join(candidate), language))
        if similarity < lo:
            continue
        current = candidate
        if similarity <= hi:
            return glue.join(current)
    return None


def exact_pairs(ids: list[str], texts: list[str]) -> dict[frozenset, float]:
    """Exact Jaccard of every pair of documents sharing a shingle. A shingle held by 50 or more
    documents is skipped as boilerplate: pairs sharing only such shingles have Jaccard near 0."""
    sets = [shingle_set(t) for t in texts]
    holders = defaultdict(list)
    for i, s in enumerate(sets):
        for shingle in s:
            holders[shingle].append(i)
    touching = {pair for docs in holders.values() if len(docs) < 50 for pair in combinations(docs, 2)}
    return {frozenset((ids[i], ids[j])): jaccard(sets[i], sets[j]) for i, j in touching}


@pytest.fixture(scope="module")
def planted():
    rng = random.Random(20240601)
    paragraphs = austen()
    vocabulary = [w for p in paragraphs for w in p.split()]
    bases = iter(paragraphs)
    ids, texts, band_of = [], [], {}
    for target, band in BANDS.items():
        made = 0
        while made < PAIRS_PER_BAND:
            base = next(bases)
            variant = edit_until(base.split(), band, rng, vocabulary, " ")
            if variant is None:
                continue
            pair = (f"{target}-{made}-a", f"{target}-{made}-b")
            ids += pair
            texts += [base, variant]
            band_of[frozenset(pair)] = target
            made += 1
    unrelated = list(bases)
    assert len(unrelated) >= 100, "the fixture is too small for the planted set"
    ids += [f"unrelated-{i}" for i in range(len(unrelated))]
    texts += unrelated
    truth = exact_pairs(ids, texts)
    result = find_duplicates(ids, texts, None, CONFIG)
    return ids, texts, band_of, truth, result


def pair_sets(ids, result):
    pairs = result.pairs
    assert not pairs.other_earlier.any()
    candidates = {frozenset((ids[d], ids[o])) for d, o in zip(pairs.doc, pairs.other)}
    confirmed = {frozenset((ids[d], ids[o])) for d, o, c in zip(pairs.doc, pairs.other, pairs.confirmed) if c}
    return candidates, confirmed


def test_planted_bands_have_the_intended_exact_jaccard(planted):
    _, _, band_of, truth, _ = planted
    for pair, target in band_of.items():
        lo, hi = BANDS[target]
        assert lo <= truth[pair] <= hi
    unplanted = [j for pair, j in truth.items() if pair not in band_of]
    assert max(unplanted) < 0.2  # unrelated paragraphs really are unrelated


def test_precision_and_recall_against_exact_jaccard(planted):
    ids, _, _, truth, result = planted
    _, confirmed = pair_sets(ids, result)
    positives = {pair for pair, j in truth.items() if j >= CONFIG.threshold}
    true_positives = len(confirmed & positives)
    precision = true_positives / len(confirmed)
    recall = true_positives / len(positives)
    print(f"\nthreshold {CONFIG.threshold}: {len(positives)} positive pairs, {len(confirmed)} confirmed, "
          f"precision {precision:.3f}, recall {recall:.3f}")
    assert len(positives) >= 2 * PAIRS_PER_BAND
    assert precision >= 0.98
    assert recall >= 0.95


def test_candidate_rate_per_band_follows_the_s_curve(planted):
    """Observed LSH candidate count per band vs. the sum of 1-(1-J^r)^b over its pairs, within
    3.5 binomial standard deviations (plus one pair for the nearly deterministic bands)."""
    ids, _, band_of, truth, result = planted
    candidates, _ = pair_sets(ids, result)
    lines = []
    for target in BANDS:
        pairs = [pair for pair, t in band_of.items() if t == target]
        p = s_curve(np.array([truth[pair] for pair in pairs]), CONFIG.bands, CONFIG.rows)
        expected, sd = p.sum(), np.sqrt((p * (1 - p)).sum())
        observed = sum(pair in candidates for pair in pairs)
        lines.append(f"J~{target}: {observed}/{len(pairs)} candidates, S-curve expects {expected:.1f} ± {sd:.1f}")
        assert abs(observed - expected) <= 3.5 * sd + 1, lines[-1]
    print("\n" + "\n".join(lines))


def test_each_detected_pair_removes_the_later_id(planted):
    ids, _, band_of, _, result = planted
    position = {doc_id: i for i, doc_id in enumerate(ids)}
    for pair in band_of:
        a, b = sorted(pair)
        ia, ib = position[a], position[b]
        if not result.keep[ib]:
            assert result.keep[ia] and result.duplicate_of[ib] == a and result.kind[ib] == "near"
            assert result.jaccard[ib] >= CONFIG.threshold
        assert result.keep[ia]  # the smaller id always survives its own pair
    assert result.counts["kept"] + result.counts["removed_near"] + result.counts["removed_exact"] == len(ids)
    assert result.counts["removed_near"] == (~result.keep).sum()
    assert (result.cluster_sizes >= 2).all() and result.cluster_sizes.sum() == 2 * (~result.keep).sum()


def test_exact_duplicates_despite_whitespace_case_and_width():
    texts = austen()[:3]
    copies = [texts[0].upper(), "  " + texts[1].replace(" ", "\n \t"), texts[2].replace("a", "ａ")]  # full-width a
    ids = ["a", "b", "c", "x-a", "x-b", "x-c"]
    result = find_duplicates(ids, texts + copies, None, CONFIG)
    assert result.keep.tolist() == [True, True, True, False, False, False]
    assert result.duplicate_of[3:] == ["a", "b", "c"]
    assert result.kind[3:] == ["exact"] * 3 and (result.jaccard[3:] == 1.0).all()
    assert result.counts["removed_exact"] == 3 and result.counts["candidate_pairs"] == 0  # never reach the LSH


def test_cjk_near_duplicates_need_character_shingles():
    rng = random.Random(7)
    docs = cjk()
    ids, texts, languages, planted_pairs = [], [], [], []
    for k, (language, text) in enumerate(docs):
        vocabulary = [c for _, t in docs for c in t]
        variant = edit_until(list(text), (0.85, 0.95), rng, vocabulary, "", language)
        assert variant is not None
        ids += [f"{k}-a", f"{k}-b"]
        texts += [text, variant]
        languages += [language, language]
        planted_pairs.append(k)

    def found(result):
        return sum(not result.keep[2 * k + 1] and result.duplicate_of[2 * k + 1] == f"{k}-a" for k in planted_pairs)

    by_language = find_duplicates(ids, texts, languages, CONFIG)
    by_script = find_duplicates(ids, texts, None, CONFIG)
    as_if_spaced = find_duplicates(ids, texts, ["en"] * len(texts), CONFIG)
    assert found(by_language) >= 0.9 * len(planted_pairs)
    assert found(by_script) == found(by_language)
    assert found(as_if_spaced) < 0.5 * len(planted_pairs)  # word shingles of unspaced text barely overlap
    assert by_language.keep[0::2].all()  # no unrelated paragraph is taken for another


def test_against_an_earlier_index(tmp_path):
    paragraphs = austen()
    first_ids = [f"c1-{i}" for i in range(40)]
    first = find_duplicates(first_ids, paragraphs[:40], None, CONFIG)
    assert first.keep.all()
    sketches = sketch_documents(paragraphs[:40], None, CONFIG)
    save_index(tmp_path / "crawl1.parquet", first_ids, sketches, CONFIG)

    # Crawl 2: a re-crawl of five pages (one inserted word), two verbatim copies, new paragraphs.
    # One new document reuses an id of crawl 1: rows of the index and of the crawl never mix.
    near = [" ".join(p.split()[:30] + ["however"] + p.split()[30:]) for p in paragraphs[:5]]
    copies = [paragraphs[5].upper(), paragraphs[6]]
    fresh = paragraphs[100:110]
    second_ids = [f"c2-near-{i}" for i in range(5)] + ["c2-copy-0", "c1-6"] + [f"c2-new-{i}" for i in range(10)]
    index = load_index(tmp_path / "crawl1.parquet", CONFIG)
    assert len(index) == 40 and index.sketches.signatures.dtype == np.uint32
    result = find_duplicates(second_ids, near + copies + fresh, None, CONFIG, against=index)

    assert result.keep.tolist() == [False] * 7 + [True] * 10
    assert result.duplicate_of[:7] == [f"c1-{i}" for i in range(7)]
    assert result.kind[:7] == ["near"] * 5 + ["exact"] * 2
    assert result.counts["removed_by_earlier_crawl"] == 7
    assert result.pairs.other_earlier.all()


def test_earlier_index_files_win_in_order(tmp_path):
    """Of two earlier crawls holding the same page, the first one given keeps it, whatever the ids."""
    page = austen()[0]
    save_index(tmp_path / "crawl1.parquet", ["z-old"], sketch_documents([page], None, CONFIG), CONFIG)
    reworded = page.replace(" the ", " that ", 1)
    save_index(tmp_path / "crawl2.parquet", ["a-newer"], sketch_documents([reworded], None, CONFIG), CONFIG)
    index = load_index([tmp_path / "crawl1.parquet", tmp_path / "crawl2.parquet"], CONFIG)
    assert index.priority.tolist() == [0, 1]
    result = find_duplicates(["new"], [reworded + " \ud800"], None, CONFIG, against=index)
    assert result.duplicate_of == ["z-old"] and result.kind == ["near"]
    assert result.cluster_sizes.tolist() == [2]  # z-old and its one removed copy


def test_index_of_other_settings_is_refused(tmp_path):
    sketches = sketch_documents(["some text"], None, CONFIG)
    save_index(tmp_path / "old.parquet", ["x"], sketches, dataclasses.replace(CONFIG, ngram=3))
    with pytest.raises(StageError, match=r"old\.parquet: .*ngram=3"):
        load_index(tmp_path / "old.parquet", CONFIG)
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(StageError, match=r"junk\.parquet: cannot read"):
        load_index(tmp_path / "junk.parquet", CONFIG)
    save_index(tmp_path / "mine.parquet", ["y"], sketches, CONFIG)
    with pytest.raises(StageError, match=r"old\.parquet: .*ngram=3"):
        load_index([tmp_path / "mine.parquet", tmp_path / "old.parquet"])  # files must agree
    pq.write_table(pa.table({"id": ["x"]}), tmp_path / "other.parquet")
    with pytest.raises(StageError, match=r"other\.parquet: not a dedup index"):
        load_index(tmp_path / "other.parquet", CONFIG)


def test_appending_documents_never_changes_earlier_decisions(planted):
    """Greedy in input order: deciding a prefix, then the rest as a second batch against what the
    prefix kept, gives exactly the decisions of one pass over everything (what lets the dedup
    stage reuse the parts of unchanged files when a new file arrives)."""
    ids, texts, _, _, whole = planted
    shuffled = list(range(len(ids)))
    random.Random(3).shuffle(shuffled)
    ids, texts = [ids[i] for i in shuffled], [texts[i] for i in shuffled]
    whole = find_duplicates(ids, texts, None, CONFIG)
    cut = len(ids) // 2
    sketches = sketch_documents(texts, None, CONFIG)
    deduper = Deduper(CONFIG)
    first = deduper.add_batch(ids[:cut], Sketches(sketches.text_hashes[:cut], sketches.signatures[:cut]))
    second = deduper.add_batch(ids[cut:], Sketches(sketches.text_hashes[cut:], sketches.signatures[cut:]))
    keep = np.concatenate([first.keep, second.keep])
    assert keep.tolist() == whole.keep.tolist()
    of = [deduper.id_of(int(o)) if o >= 0 else None for o in np.concatenate([first.duplicate_of, second.duplicate_of])]
    assert of == whole.duplicate_of
    assert (~keep).sum() > PAIRS_PER_BAND
    # Every removed document names an earlier, kept one.
    position = {doc_id: i for i, doc_id in enumerate(ids)}
    for doc_id, survivor in zip(ids, of):
        if survivor is not None:
            assert whole.keep[position[survivor]] and position[survivor] < position[doc_id]


def test_chain_keeps_both_ends():
    """A ~ B ~ C with A !~ C: B goes (a copy of A), C stays: only kept documents remove others."""
    words = " ".join(austen()[:12]).split()[:400]
    a = words
    b = words[:100] + [w + "x" for w in words[100:126]] + words[126:]
    c = b[:300] + [w + "y" for w in b[300:326]] + b[326:]
    texts = [" ".join(t) for t in (a, b, c)]
    sketches = sketch_documents(texts, None, CONFIG)
    same = lambda i, j: (sketches.signatures[i] == sketches.signatures[j]).mean()  # noqa: E731
    assert same(0, 1) >= CONFIG.threshold and same(1, 2) >= CONFIG.threshold > same(0, 2)
    result = find_duplicates(["a", "b", "c"], texts, None, CONFIG)
    assert result.keep.tolist() == [True, False, True] and result.duplicate_of == [None, "a", None]


def test_dedup_tables_round_trip(tmp_path):
    paragraphs = austen()[:20]
    one = pa.table({"id": [f"a{i}" for i in range(10)], "text": paragraphs[:10], "language": ["en"] * 10,
                    "url": [f"http://a/{i}" for i in range(10)]})
    two = pa.table({"id": [f"b{i}" for i in range(12)], "text": paragraphs[10:20] + [paragraphs[0], None],
                    "language": pa.array(["en"] * 11 + [None]).dictionary_encode(),
                    "url": [f"http://b/{i}" for i in range(12)]})
    kept, removed, index, stats = dedup_tables([one, two], CONFIG)
    assert [t.num_rows for t in kept] == [10, 11] and kept[1].column_names == one.column_names
    assert removed.schema == REMOVED_SCHEMA
    assert removed.to_pylist() == [{"id": "b10", "duplicate_of": "a0", "jaccard": 1.0, "kind": "exact"}]
    assert stats["kept"] == 21 and stats["cluster_size_histogram"] == {"2": 1}
    pq.write_table(index, tmp_path / "index.parquet")
    loaded = load_index(tmp_path / "index.parquet", CONFIG)
    assert loaded.ids == [f"a{i}" for i in range(10)] + [f"b{i}" for i in range(10)] + ["b11"]
    again = find_duplicates(["z"], [paragraphs[3]], None, CONFIG, against=loaded)
    assert again.duplicate_of == ["a3"] and again.kind == ["exact"]

    with pytest.raises(StageError, match="part-7.parquet: no `text` column"):
        dedup_tables([pa.table({"id": ["x"]})], CONFIG, names=["part-7.parquet"])
    with pytest.raises(StageError, match="part-8.parquet: column `text` must be text, it is int64"):
        dedup_tables([pa.table({"id": ["x"], "text": [3]})], CONFIG, names=["part-8.parquet"])


@pytest.fixture
def redis_url(tmp_path):
    """A private redis-server on a free port (Debian's redis-server: .ci/run and `make test` install
    it when missing). Skipped where it is not installed, except under SCRATCHLM_REQUIRE_SERVERS=1
    (.ci/run), where that is a failure."""
    server = shutil.which("redis-server")
    if server is None:
        if os.environ.get("SCRATCHLM_REQUIRE_SERVERS") == "1":
            pytest.fail("redis-server is not installed (apt-get install redis-server)")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    import redis

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    try:
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0", client
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_lsh_in_redis_gives_the_same_result_and_cleans_up(redis_url):
    url, client = redis_url
    paragraphs = austen()[:60]
    near = [" ".join(p.split()[:20] + ["perhaps"] + p.split()[20:]) for p in paragraphs[:10]]
    ids = [f"d{i:03d}" for i in range(70)]
    texts = paragraphs + near
    in_memory = find_duplicates(ids, texts, None, CONFIG)
    in_redis = find_duplicates(ids, texts, None, dataclasses.replace(CONFIG, redis_url=url))
    assert in_redis.duplicate_of == in_memory.duplicate_of
    assert sum(d is not None for d in in_redis.duplicate_of) == 10
    assert client.dbsize() == 0
