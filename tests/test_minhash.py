"""MinHash signatures: equal to datasketch's, independent of batching, usable in its LSH."""
from __future__ import annotations

import dataclasses
import gzip
from pathlib import Path

import numpy as np
import pytest
from datasketch import LeanMinHash, MinHash, MinHashLSH

from pipeline.dedup import DedupConfig
from pipeline.minhash import (EMPTY_VALUE, SCHEME, compute_signatures, permutations, shingle_hash32, shingles,
                              uses_char_shingles)

FIXTURES = Path(__file__).parent / "fixtures" / "dedup"

# Inputs that stress tokenising and normalisation, next to real paragraphs.
AWKWARD = [
    "",
    "   \n\t ",
    "!!! ... ??? — «»",
    "one two",
    "snake_case words and 1,234.56 numbers; e-mail: someone@example.org",
    "ÉCOLE Straße ＦＵＬＬＷＩＤＴＨ ｔｅｘｔ ﬁne ligatures and Ⅻ roman",
    "हिन्दी में लिखा गया एक छोटा सा वाक्य जिसमें मात्राएँ हैं और कुछ और शब्द भी",
    "ภาษาไทยเขียนติดกันโดยไม่มีช่องว่างระหว่างคำ แต่มีช่องว่างระหว่างวลี",
    "emoji 😀 between 🎉 words, astral Han 𠀀𠀁𠀂 and a tab\tand\r\nnewlines",
    "한국어는 띄어쓰기를 하는 언어입니다 그래서 단어 단위로 자릅니다",
    "Mixed 中文 and English text 混合在一起 of several kinds",
    "a lone surrogate \ud800 from a bad JSON escape, then more words after it",
]


def real_paragraphs(n: int) -> list[str]:
    with gzip.open(FIXTURES / "austen_paragraphs.txt.gz", "rt", encoding="utf-8") as f:
        return [line.rstrip("\n").split("\t", 1)[1] for _, line in zip(range(n), f)]


def cjk_paragraphs() -> list[tuple[str, str]]:
    lines = (FIXTURES / "cjk_paragraphs.txt").read_text(encoding="utf-8").splitlines()
    return [tuple(line.split("\t", 1)) for line in lines]


def datasketch_signature(text: str, language: str | None, config: DedupConfig) -> np.ndarray:
    m = MinHash(num_perm=config.num_perm, seed=config.seed, hashfunc=shingle_hash32)
    m.update_batch(shingles(text, language, config))
    return m.hashvalues


@pytest.mark.parametrize("config", [
    DedupConfig(),
    DedupConfig(num_perm=64, seed=7, ngram=3, char_ngram=2, bands=8, rows=8),
], ids=["default", "other-knobs"])
def test_signatures_equal_datasketch_bit_for_bit(config):
    cjk = cjk_paragraphs()
    texts = real_paragraphs(40) + AWKWARD + [t for _, t in cjk[:5]] + [t for _, t in cjk[-5:]]
    languages = [None] * len(texts)
    languages[1] = "en"
    languages[-1] = "ja"
    ours = compute_signatures(texts, languages, config)
    assert ours.dtype == np.uint32 and ours.shape == (len(texts), config.num_perm)
    for i, (text, language) in enumerate(zip(texts, languages)):
        assert np.array_equal(ours[i], datasketch_signature(text, language, config)), f"document {i}: {text[:40]!r}"


def test_permutations_are_datasketchs():
    for num_perm, seed in [(112, 1), (256, 42)]:
        a, b = permutations(num_perm, seed)
        reference = MinHash(num_perm=num_perm, seed=seed).permutations
        assert np.array_equal(a, reference[0]) and np.array_equal(b, reference[1])


def test_batching_does_not_change_signatures():
    """Tiny batches make documents straddle permutation blocks and character batches."""
    texts = real_paragraphs(60) + AWKWARD
    whole = compute_signatures(texts, None, DedupConfig())
    sliced = compute_signatures(texts, None, DedupConfig(batch_chars=500, batch_shingles=7))
    assert np.array_equal(whole, sliced)


def test_documents_without_shingles_keep_the_empty_signature():
    sig = compute_signatures(["", "  ", "?!…", "word"], None, DedupConfig())
    assert (sig[:3] == EMPTY_VALUE).all()
    assert not (sig[3] == EMPTY_VALUE).all()


def test_normalisation_makes_layout_and_case_irrelevant():
    text = real_paragraphs(1)[0]
    variants = [text, text.upper(), "\n\n" + text.replace(" ", "  \t"), text.replace(",", " ,")]
    sig = compute_signatures(variants, None, DedupConfig())
    assert all(np.array_equal(sig[0], s) for s in sig[1:])


def test_shingle_mode_follows_language_then_script():
    zh = cjk_paragraphs()[0][1]
    assert uses_char_shingles(zh, "zh") and uses_char_shingles(zh, "ja-JP") and uses_char_shingles(zh, None)
    assert not uses_char_shingles(zh, "en")  # an explicit language wins over the script
    assert uses_char_shingles("ภาษาไทยเขียนติดกัน", "und")
    assert not uses_char_shingles("한국어는 띄어쓰기를 하는 언어입니다", None)
    assert not uses_char_shingles(real_paragraphs(1)[0].lower(), None)
    assert shingles("中文的文本没有空格", None, DedupConfig())[:2] == ["中文的文本", "文的文本没"]
    assert shingles("Too short", None, DedupConfig()) == ["too short"]


def test_signatures_work_in_datasketch_lsh():
    config = DedupConfig()
    base = real_paragraphs(30)
    words = base[0].split()
    near = " ".join(words[:40] + ["indeed"] + words[40:])  # one inserted word
    texts = base + [near]
    sig = compute_signatures(texts, None, config)
    lsh = MinHashLSH(num_perm=config.num_perm, params=(config.bands, config.rows))
    sketches = [LeanMinHash(seed=config.seed, hashvalues=row, scheme=SCHEME) for row in sig]
    for i, sketch in enumerate(sketches[:-1]):
        lsh.insert(i, sketch)
    assert lsh.query(sketches[-1]) == [0]
    expected = (sig[0] == sig[-1]).mean()
    assert sketches[-1].jaccard(sketches[0]) == pytest.approx(expected)
    exact = len(set(shingles(base[0], None, config)) & set(shingles(near, None, config))) / len(
        set(shingles(base[0], None, config)) | set(shingles(near, None, config)))
    assert abs(expected - exact) < 0.15  # ~4 standard deviations of a 112-value estimate


def test_config_is_checked():
    from pipeline.errors import StageError

    for bad in [dict(bands=15, rows=8), dict(threshold=0.0), dict(ngram=0), dict(bands=1, rows=8), dict(seed=-1)]:
        with pytest.raises(StageError):
            dataclasses.replace(DedupConfig(), **bad).check()
