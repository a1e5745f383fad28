"""Heuristic quality filters on real text: good documents are kept, each bad one is dropped
by the rule it was built to trip (fixtures: tests/fixtures/quality/README.md)."""
from __future__ import annotations

import base64
import dataclasses
import re
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from pipeline.quality import SIGNAL_KEYS, QualityConfig, quality_reason, tag_and_filter
from pipeline.quality_rules import ngram_fractions
from pipeline.words import STOP_WORDS, base_language, split_units, units_per_word

FIXTURES = Path(__file__).parent / "fixtures" / "quality"
GOOD = sorted((FIXTURES / "good").glob("*.txt"))
DEFAULTS = QualityConfig()


def source(name: str) -> str:
    return (FIXTURES / "sources" / name).read_text(encoding="utf-8")


def good(name: str) -> str:
    return (FIXTURES / "good" / name).read_text(encoding="utf-8")


def reason(text: str, language: str = "en", config: QualityConfig = DEFAULTS) -> str | None:
    return quality_reason(text, language, config)[0]


ENGLISH = ["en_austen_pride_ch1.txt", "en_handbook_user_space.txt", "en_python_tutorial_appetite.txt"]
AUSTEN = good("en_austen_pride_ch1.txt").splitlines()  # one paragraph per line
HANDBOOK = [p for p in good("en_handbook_user_space.txt").split("\n") if len(p) > 200]
# Three long sentences on one line: enough words for Gopher, too few sentences for C4.
SHORT_PAGE = " ".join(AUSTEN[1:3] + AUSTEN[-2:-1])


# --- published defaults ------------------------------------------------------------------

# Transcribed from the papers; a typo in QualityConfig fails here.
PUBLISHED = {
    # Rae et al. 2021, arXiv:2112.11446, appendix A.1.1 ("Quality filters").
    "gopher_min_words": 50,
    "gopher_max_words": 100_000,
    "gopher_min_mean_word_length": 3,
    "gopher_max_mean_word_length": 10,
    "gopher_max_symbol_word_ratio": 0.1,
    "gopher_max_bullet_line_frac": 0.9,
    "gopher_max_ellipsis_line_frac": 0.3,
    "gopher_min_alpha_word_frac": 0.8,
    "gopher_min_stop_words": 2,
    # Same paper, Table A1 (repetition).
    "gopher_max_dup_line_frac": 0.30,
    "gopher_max_dup_para_frac": 0.30,
    "gopher_max_dup_line_char_frac": 0.20,
    "gopher_max_dup_para_char_frac": 0.20,
    "gopher_max_top_2gram_char_frac": 0.20,
    "gopher_max_top_3gram_char_frac": 0.18,
    "gopher_max_top_4gram_char_frac": 0.16,
    "gopher_max_dup_5gram_char_frac": 0.15,
    "gopher_max_dup_6gram_char_frac": 0.14,
    "gopher_max_dup_7gram_char_frac": 0.13,
    "gopher_max_dup_8gram_char_frac": 0.12,
    "gopher_max_dup_9gram_char_frac": 0.11,
    "gopher_max_dup_10gram_char_frac": 0.10,
    # Raffel et al. 2020, JMLR 21(140), section 2.2; the 1000-char word is from its code.
    "c4_min_sentences": 5,
    "c4_min_words_per_line": 3,
    "c4_max_word_length": 1000,
    # Penedo et al. 2024, arXiv:2406.17557, section 3.3; the list ratio is datatrove's.
    "fineweb_min_line_punct_frac": 0.12,
    "fineweb_max_short_line_frac": 0.67,
    "fineweb_short_line_chars": 30,
    "fineweb_max_dup_line_char_frac": 0.10,
    "fineweb_max_line_word_ratio": 0.3,
}


def test_defaults_are_the_published_thresholds():
    thresholds = {
        f.name: getattr(DEFAULTS, f.name)
        for f in dataclasses.fields(QualityConfig)
        if not isinstance(getattr(DEFAULTS, f.name), bool)
    }
    assert thresholds == PUBLISHED
    switches = [f.name for f in dataclasses.fields(QualityConfig) if isinstance(getattr(DEFAULTS, f.name), bool)]
    assert all(getattr(DEFAULTS, name) for name in switches)
    assert {"gopher_quality", "gopher_repetition", "c4", "fineweb"} <= set(switches)
    assert all(f.metadata["help"] for f in dataclasses.fields(QualityConfig))


# --- good documents are kept ---------------------------------------------------------------


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.stem)
def test_good_human_text_is_kept(path):
    language = path.name[:2]
    dropped, signals = quality_reason(path.read_text(encoding="utf-8"), language, DEFAULTS)
    assert dropped is None
    assert signals["word_count"] >= 150
    assert signals["stop_word_count"] >= 2 or language not in STOP_WORDS


def test_languages_without_spaces_need_their_language():
    # Read as a spaced language, Japanese has a handful of long "words" and Chinese too
    # few: only the language label makes them countable.
    assert reason(good("ja_handbook_user_space.txt"), "") == "gopher_mean_word_length"
    assert reason(good("zh_handbook_security.txt"), "") == "gopher_word_count"
    assert reason(good("zh_handbook_security.txt"), "zh-Hans") is None
    # Thai runs words together between spaces: read as spaced, its "words" are phrases.
    assert reason(good("th_firefox_strings.txt"), "") == "gopher_mean_word_length"


def test_units():
    assert split_units("(see) the end... e-mail, don't -- 3.14 |", "en") == ["see", "the", "end", "e-mail", "don't", "3.14"]
    # Han and hiragana one by one, a katakana word (here "package") whole, Latin words whole.
    assert split_units("debianのパッケージ管理(apt)。", "ja") == ["debian", "の", "パッケージ", "管", "理", "apt"]
    # Thai: each letter with the vowel and tone marks that follow it.
    assert split_units("เป็นภาษาไทย Firefox", "th") == ["เ", "ป็", "น", "ภ", "า", "ษ", "า", "ไ", "ท", "ย", "Firefox"]
    assert base_language("pt_BR") == "pt" and base_language("ZH-hant") == "zh" and base_language("") == ""


# --- every targeted rule fires on a bad document built from real text -------------------


def test_repeated_paragraphs():
    p1, p2, p3 = HANDBOOK[:3]
    assert reason("\n\n".join([p1, p2, p1, p3, p1, p1])) == "gopher_dup_paragraphs"


def test_repeated_lines():
    # A share widget after every paragraph of a real chapter (one block, no blank lines).
    text = "\n".join(line for para in AUSTEN[1:20] for line in (para, "Share this:"))
    assert reason(text) == "gopher_dup_lines"


def test_repeated_phrases():
    # Spam template: the same sentence glued to every paragraph; no line repeats. Over
    # long paragraphs it is a third of the text...
    hook = AUSTEN[1]
    long_paragraphs = [p for p in AUSTEN[2:] if len(p) > 150][:8]
    assert reason("\n".join(f"{p} {hook}" for p in long_paragraphs)) == "gopher_dup_5gram"
    # ...over short ones, its 4-gram "truth universally acknowledged that" alone is more
    # than 16 % of the characters.
    assert reason("\n".join(f"{p} {hook}" for p in AUSTEN[2:14])) == "gopher_top_4gram"


def test_too_short():
    assert reason(AUSTEN[1]) == "gopher_word_count"


def test_checksum_list_has_too_long_words():
    assert reason(source("md5sums_debian_handbook.txt")) == "gopher_mean_word_length"


def test_snippets_with_ellipses():
    # A search-result page: each paragraph cut after a few words.
    heads = list(dict.fromkeys(" ".join(p.split()[:6]) for p in AUSTEN[1:]))[:20]
    assert reason("\n".join(h + " …" for h in heads)) == "gopher_symbol_ratio"
    longer = [" ".join(p.split()[:14]) for p in AUSTEN[1:] if len(p.split()) > 14][:10]
    assert reason("\n".join(h + "..." for h in longer)) == "gopher_ellipsis_lines"


def test_bullet_menu():
    toc = [line for line in source("en_handbook_security_toc.txt").splitlines()[2:] if line]
    assert reason("\n".join("• " + line for line in toc)) == "gopher_bullet_lines"


def test_numeric_table():
    assert reason(source("zone1970_tab.txt")) == "gopher_alpha_words"


def test_keyword_list_without_stop_words():
    assert reason(source("gcide_headwords.txt")) == "gopher_stop_words"
    # The same words count as French, whose list they miss too; a language without a
    # list skips the rule.
    assert reason(source("gcide_headwords.txt"), "fr") == "gopher_stop_words"
    assert reason(source("gcide_headwords.txt"), "eu") != "gopher_stop_words"


def test_lorem_ipsum():
    placeholder = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor."
    assert reason("\n".join(HANDBOOK[:3] + [placeholder])) == "c4_lorem_ipsum"


def test_curly_bracket():
    assert reason("\n".join([SHORT_PAGE, source("en_python_tutorial_sets.txt")])) == "c4_curly_bracket"


def test_javascript_warning():
    warning = [
        "JavaScript is disabled in your browser. Please enable JavaScript to continue.",
        "This page needs JavaScript. Turn on JavaScript and reload.",
    ]
    assert reason("\n".join([SHORT_PAGE] + warning)) == "c4_javascript"


def test_cookie_banner():
    banner = [
        "This website uses cookies to give you the best experience. Read our cookie policy.",
        "By continuing you accept the terms of use. See our privacy policy for details.",
    ]
    assert reason("\n".join([SHORT_PAGE] + banner)) == "c4_policy"


def test_too_few_sentences():
    dropped, signals = quality_reason(SHORT_PAGE, "en", DEFAULTS)
    assert signals["word_count"] >= DEFAULTS.gopher_min_words
    assert signals["c4_sentence_count"] == 3
    assert dropped == "c4_too_few_sentences"


def test_hard_wrapped_text_has_no_terminal_punctuation():
    wrapped = "\n".join(textwrap.fill(p, 70) for p in HANDBOOK[:2])
    assert reason(wrapped) == "c4_no_terminal_punct"


def test_short_dialogue_lines():
    # Lines of Pride and Prejudice (chapters 1-10) under C4's three words.
    short = ['"Bingley."', '"To-morrow fortnight."', '"Dear Lizzy!"', '"Never, sir."', '"Certainly not."']
    assert reason("\n".join([SHORT_PAGE] + short)) == "c4_too_few_words"


def test_very_long_word():
    # An inline base64 image in a paragraph: C4 would drop that whole line, and with it
    # the sentences the page needed.
    blob = base64.b64encode(source("md5sums_debian_handbook.txt").encode()[:760]).decode()
    assert len(blob) > DEFAULTS.c4_max_word_length
    paragraph = " ".join(HANDBOOK[:3]) + f" The logo: data:image/png;base64,{blob}."
    assert reason("\n".join([SHORT_PAGE, paragraph])) == "c4_long_word"


def test_navigation_links_without_punctuation():
    toc = [line for line in source("en_handbook_security_toc.txt").splitlines()[2:] if line]
    text = "\n".join(toc + [" ".join(HANDBOOK[:2])])
    assert reason(text) == "fineweb_line_punct"


def test_mostly_short_lines():
    titles = [line.split(". ", 1)[1] for line in source("en_handbook_security_toc.txt").splitlines()[2:] if ". " in line]
    short = [t for t in titles if len(t) <= 30][:22]
    sentences = [p for p in AUSTEN[1:] if len(p) > 60][:9]
    assert reason("\n".join(short + sentences)) == "fineweb_short_lines"


def test_repeated_short_line_characters():
    # A comment thread: short real sentences as comments, "Reply · Report" under every
    # second one. Under Gopher's 30 % of lines and 20 % of characters, over FineWeb's 10 %.
    prose = " ".join(good(name) for name in ENGLISH).replace("\n", " ")
    comments = [s for s in re.split(r"(?<=[.!?])\s+(?=[A-Z\"])", prose) if 30 < len(s) < 60]
    lines = []
    for i, comment in enumerate(comments, 1):
        lines.append(comment)
        if i % 2 == 0:
            lines.append("Reply · Report")
    dropped, signals = quality_reason("\n".join(lines), "en", DEFAULTS)
    assert signals["dup_line_frac"] < DEFAULTS.gopher_max_dup_line_frac
    assert DEFAULTS.fineweb_max_dup_line_char_frac < signals["dup_line_char_frac"] < DEFAULTS.gopher_max_dup_line_char_frac
    assert dropped == "fineweb_dup_line_chars"


def test_list_like():
    # A glossary: one headword per line, a few sentences. FineWeb's short-line rule comes
    # first and would catch it, so it is relaxed to reach the list rule (lines per word).
    config = dataclasses.replace(DEFAULTS, fineweb_max_short_line_frac=1.0)
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", " ".join(AUSTEN[1:])) if 25 < len(s) < 60][:12]
    text = "\n".join(source("gcide_headwords.txt").splitlines() + sentences)
    assert reason(text, "en", config) == "fineweb_list_like"
    assert reason(text, "en") == "fineweb_short_lines"


def test_empty_text():
    assert reason(" \n\n ") == "empty_text"
    all_off = QualityConfig(gopher_quality=False, gopher_repetition=False, c4=False, fineweb=False)
    assert reason(" \n\n ", "en", all_off) is None
    assert reason(source("md5sums_debian_handbook.txt"), "en", all_off) is None


def test_switches_turn_families_off():
    # A checksum list fails several families; each switch hands it to the next one.
    text = source("md5sums_debian_handbook.txt")
    off = {}
    for family, expected in [
        ("gopher_quality", "c4_no_terminal_punct"),
        ("c4", "fineweb_line_punct"),
        ("fineweb", None),
    ]:
        assert reason(text, "en", dataclasses.replace(DEFAULTS, **off)) != expected
        off[family] = False
        assert reason(text, "en", dataclasses.replace(DEFAULTS, **off)) == expected


# --- signals -----------------------------------------------------------------------------


def test_signals_have_fixed_keys_and_types():
    texts = [p.read_text(encoding="utf-8") for p in GOOD] + [source("zone1970_tab.txt"), "", "#"]
    for text in texts:
        for language in ("en", "ja", ""):
            _, signals = quality_reason(text, language, DEFAULTS)
            assert list(signals) == list(SIGNAL_KEYS)
            assert all(type(signals[k]) is t for k, t in SIGNAL_KEYS.items()), signals


def test_signals_on_real_text():
    _, s = quality_reason(good("en_austen_pride_ch1.txt"), "en", DEFAULTS)
    assert s["stop_word_count"] == 8  # all of Gopher's English list
    assert s["bullet_line_frac"] == 0.0 and s["dup_line_frac"] == 0.0
    assert 3.5 < s["mean_word_length"] < 5.0
    _, s = quality_reason("\n".join(["• " + a for a in AUSTEN[1:5]] + AUSTEN[5:9]), "en", DEFAULTS)
    assert s["bullet_line_frac"] == 0.5


def naive_ngram_fractions(units: list[str], scale: float = 1) -> dict:
    """Gopher's definitions, word by word with Counter: the reference for the fast version."""
    total = sum(map(len, units))
    out = {}
    for n in (2, 3, 4):
        k = round(n * scale)
        grams = Counter(tuple(units[i : i + k]) for i in range(len(units) - k + 1))
        top = max(grams.values(), default=0)
        best = max((sum(map(len, g)) for g, c in grams.items() if c == top), default=0)
        out[f"top_{n}gram_char_frac"] = best * top / total if top > 1 else 0.0
    for n in range(5, 11):
        k = round(n * scale)
        starts = [tuple(units[i : i + k]) for i in range(len(units) - k + 1)]
        counts = Counter(starts)
        covered = [False] * len(units)
        for i, gram in enumerate(starts):
            if counts[gram] > 1:
                covered[i : i + k] = [True] * k
        out[f"dup_{n}gram_char_frac"] = sum(len(u) for u, c in zip(units, covered) if c) / total
    return out


@pytest.mark.parametrize(
    "text, language",
    [
        (good("en_austen_pride_ch1.txt"), "en"),
        ("\n".join(f"{p} {AUSTEN[1]}" for p in AUSTEN[2:14]), "en"),
        (good("ja_handbook_user_space.txt"), "ja"),
        (good("th_firefox_strings.txt") * 2, "th"),
        (good("en_handbook_user_space.txt") * 2, "en"),
    ],
)
def test_fast_ngram_fractions_match_the_definition(text, language):
    units = split_units(text.lower(), language)
    lengths = np.fromiter(map(len, units), dtype=np.int64, count=len(units))
    scale = units_per_word(language)
    fast = ngram_fractions(units, lengths, int(lengths.sum()), scale)
    assert fast == pytest.approx(naive_ngram_fractions(units, scale), abs=1e-12)


# --- stage step ----------------------------------------------------------------------------


def test_tag_and_filter_tags_keeps_and_drops():
    docs = [
        {"id": "austen", "text": good("en_austen_pride_ch1.txt"), "language": "en"},
        {"id": "zh", "text": good("zh_handbook_security.txt"), "language": "zh"},
        {"id": "md5", "text": source("md5sums_debian_handbook.txt"), "language": "en"},
        {"id": "no-text", "text": None, "language": "en"},
        {"id": "no-language", "text": good("en_handbook_user_space.txt")},
    ]
    dropped = []
    kept = list(tag_and_filter(iter(docs), DEFAULTS, lambda doc, why: dropped.append((doc["id"], why))))
    assert [d["id"] for d in kept] == ["austen", "zh", "no-language"]
    assert dropped == [("md5", "gopher_mean_word_length"), ("no-text", "text_not_a_string")]
    assert all(set(SIGNAL_KEYS) <= set(d) for d in kept)
    assert set(SIGNAL_KEYS) <= set(docs[2])  # a rejected doc carries its signals too
    assert docs[2]["mean_word_length"] > DEFAULTS.gopher_max_mean_word_length
