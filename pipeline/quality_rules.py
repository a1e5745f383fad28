"""What the heuristic quality rules measure: one pass over a document gives every signal.

Lines, units (words) and unit hashes are computed once and shared by all rule families;
pipeline/quality.py compares the signals with the thresholds. Definitions are explained in
that module's docstring.
"""
from __future__ import annotations

import re
from collections import Counter
from itertools import compress, repeat
from operator import not_

import numpy as np

from pipeline.words import (
    NO_LETTER_UNIT,
    NO_SENTENCE_MARK,
    STOP_WORDS,
    SYMBOL_TOKEN,
    WIDE_SCRIPT,
    count_units,
    is_continua,
    split_units,
    units_per_word,
)

TOP_NGRAM_SIZES = (2, 3, 4)
DUP_NGRAM_SIZES = (5, 6, 7, 8, 9, 10)

# Signals written beside every document, with their types. Fractions are 0.0 when their
# denominator is empty.
SIGNAL_KEYS: dict[str, type] = {
    "word_count": int,
    "mean_word_length": float,
    "symbol_word_ratio": float,
    "bullet_line_frac": float,
    "ellipsis_line_frac": float,
    "alpha_word_frac": float,
    "stop_word_count": int,
    "dup_line_frac": float,
    "dup_para_frac": float,
    "dup_line_char_frac": float,
    "dup_para_char_frac": float,
    **{f"top_{n}gram_char_frac": float for n in TOP_NGRAM_SIZES},
    **{f"dup_{n}gram_char_frac": float for n in DUP_NGRAM_SIZES},
    "c4_sentence_count": int,
    "c4_removed_line_frac": float,
    "line_punct_frac": float,
    "short_line_frac": float,
    "line_word_ratio": float,
}

BULLETS = ("•", "●", "○", "◦", "▪", "■", "□", "‣", "·", "-", "*", "–", "►", "▶", "➢", "✓")
ELLIPSES = ("...", "…")
# Sentence-final marks of the main scripts (the common part of Unicode's Sentence_Terminal).
TERMINAL = (
    ".", "!", "?", "…", "‼", "‽", "⁇", "⁈", "⁉", "。", "！", "？", "．", "｡", "।", "॥",
    "؟", "۔", "؞", "։", "።", "፧", "፨", "။", "၊", "།", "។", "៕", "᙮", "܀", "܁", "܂", "߹",
)
# Quotes and brackets that may close a sentence after its mark: `"Yes."`, （注。）
CLOSERS = "\"'”’»」』）)]"
# C4 kept lines ending in . ? ! " ' ; the same marks of other scripts count too.
C4_LINE_END = (
    ".", "?", "!", '"', "'", "”", "’", "。", "！", "？", "．", "｡", "」", "』",
    "।", "॥", "؟", "۔", "։", "።", "፧", "။", "།", "។",
)
C4_POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
# Inside a line a sentence ends at one of these; every line also ends one.
_INNER_SENTENCE_END = (". ", "! ", "? ")
_FULL_WIDTH_END = ("。", "！", "？")
_CITATION = re.compile(r"\[\d*\]")

# Odd 64-bit constant of the polynomial n-gram hash (arithmetic wraps mod 2**64).
_MIX = np.uint64(0x9E3779B97F4A7C15)


class Document:
    """The shared pieces of one text, computed once."""

    __slots__ = ("text", "lowered", "lang", "continua", "units_per_word", "lines", "paragraphs", "units")

    def __init__(self, text: str, lang: str):
        self.text = text
        self.lowered = text.lower()
        self.lang = lang
        self.continua = is_continua(lang)
        self.units_per_word = units_per_word(lang)
        stripped = list(map(str.strip, text.split("\n")))
        self.lines = list(filter(None, stripped))
        # Paragraphs are runs of non-blank lines: blank lines, once stripped, join as "\n\n".
        self.paragraphs = list(filter(None, map(str.strip, "\n".join(stripped).split("\n\n"))))
        self.units = split_units(self.lowered, lang)


def measure(doc: Document, c) -> dict:
    """All signals; the c4_* ones are left at zero for c4_judge. `c` is a QualityConfig."""
    text, lines, paragraphs, units = doc.text, doc.lines, doc.paragraphs, doc.units
    n_units, n_lines = len(units), len(lines)
    # Word counts are in English-word equivalents: units / units_per_word (1 if spaced).
    n_words = round(n_units / doc.units_per_word)
    lengths = np.fromiter(map(len, units), dtype=np.int64, count=n_units)
    unit_chars = int(lengths.sum())

    # Gopher counts "words" with at least one letter among all whitespace tokens; a token
    # of symbols only ("-", "|") is no unit but still counts against that fraction.
    if doc.continua:
        n_symbol_tokens = len(SYMBOL_TOKEN.findall(text))
    else:  # every token with a word character is exactly one unit
        n_symbol_tokens = len(text.split()) - n_units
    not_alpha = list(compress(units, map(not_, map(str.isalpha, units))))  # "don't", "2024"
    n_no_letter = len(NO_LETTER_UNIT.findall(" ".join(not_alpha))) if not_alpha else 0
    stop_words = STOP_WORDS.get(doc.lang)

    dup_lines, dup_line_chars = _repeats(lines)
    dup_paras, dup_para_chars = _repeats(paragraphs)
    short_line_chars = c.fineweb_short_line_chars
    if doc.lang in WIDE_SCRIPT:
        short_line_chars //= 2
    return {
        "word_count": n_words,
        "mean_word_length": _frac(unit_chars, n_units),
        "symbol_word_ratio": max(text.count("#"), text.count("...") + text.count("…")) / max(n_words, 1),
        "bullet_line_frac": _frac(sum(map(str.startswith, lines, repeat(BULLETS))), n_lines),
        "ellipsis_line_frac": _frac(sum(map(str.endswith, lines, repeat(ELLIPSES))), n_lines),
        "alpha_word_frac": _frac(n_units - n_no_letter, n_units + n_symbol_tokens),
        "stop_word_count": len(stop_words.intersection(units)) if stop_words else 0,
        "dup_line_frac": _frac(dup_lines, n_lines),
        "dup_para_frac": _frac(dup_paras, len(paragraphs)),
        "dup_line_char_frac": _frac(dup_line_chars, sum(map(len, lines))),
        "dup_para_char_frac": _frac(dup_para_chars, sum(map(len, paragraphs))),
        **ngram_fractions(units, lengths, unit_chars, scale=doc.units_per_word),
        "c4_sentence_count": 0,
        "c4_removed_line_frac": 0.0,
        "line_punct_frac": _frac(
            sum(map(str.endswith, map(str.rstrip, lines, repeat(CLOSERS)), repeat(TERMINAL))), n_lines
        ),
        "short_line_frac": _frac(sum(1 for n in map(len, lines) if n <= short_line_chars), n_lines),
        "line_word_ratio": n_lines / n_words if n_words else float(n_lines),
    }


def _frac(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


def _repeats(items: list[str]) -> tuple[int, int]:
    """(number of copies beyond the first, characters in those copies)."""
    copies = chars = 0
    for item, count in Counter(items).items():
        if count > 1:
            copies += count - 1
            chars += len(item) * (count - 1)
    return copies, chars


def ngram_fractions(units: list[str], lengths: np.ndarray, total_chars: int, scale: float = 1) -> dict:
    """Gopher's top n-gram and duplicated n-gram character fractions.

    Each unit is hashed once (Python's str hash); an n-gram's hash extends its (n-1)-gram's.
    Repeats are found by sorting hashes. Only n-grams that start where an (n-1)-gram repeats
    and whose tail (n-1)-gram repeats too can repeat, so after the first size only those
    candidates are extended and sorted. `scale` (units per word) multiplies every n.
    """
    out = {f"top_{n}gram_char_frac": 0.0 for n in TOP_NGRAM_SIZES}
    out.update({f"dup_{n}gram_char_frac": 0.0 for n in DUP_NGRAM_SIZES})
    n_units = len(units)
    if n_units < 2 or total_chars == 0:
        return out
    top_name = {round(n * scale): f"top_{n}gram_char_frac" for n in TOP_NGRAM_SIZES}
    dup_name = {round(n * scale): f"dup_{n}gram_char_frac" for n in DUP_NGRAM_SIZES}
    unit_hash = np.fromiter(map(hash, units), dtype=np.int64, count=n_units).view(np.uint64)
    cum_chars = np.zeros(n_units + 1, dtype=np.int64)
    np.cumsum(lengths, out=cum_chars[1:])
    gram = unit_hash.copy()  # gram[i]: hash of the current-size gram starting at unit i
    starts = np.arange(n_units)  # candidate start positions
    for size in range(2, max(dup_name) + 1):
        starts = starts[starts + size <= n_units]
        if starts.size < 2:
            break
        gram[starts] = gram[starts] * _MIX + unit_hash[starts + size - 1]
        values = gram[starts]
        order = np.argsort(values)
        ordered = values[order]
        same_as_next = ordered[1:] == ordered[:-1]
        if not same_as_next.any():
            break  # no repeated n-gram, so no repeated longer one either
        if size in top_name:
            run_starts = np.flatnonzero(np.concatenate(([True], ~same_as_next)))
            run_counts = np.diff(np.append(run_starts, ordered.size))
            top = int(run_counts.max())
            at = starts[order[run_starts[run_counts == top]]]  # one position per top gram
            out[top_name[size]] = float((cum_chars[at + size] - cum_chars[at]).max()) * top / total_chars
        in_repeat = np.zeros(ordered.size, dtype=bool)
        in_repeat[1:] = same_as_next
        in_repeat[:-1] |= same_as_next
        repeated = np.zeros(n_units + 1, dtype=bool)
        repeated[starts[order[in_repeat]]] = True
        if size in dup_name:
            # Units covered by any repeated gram: +1 at its start, -1 past its end, cumsum.
            edges = repeated[:n_units].astype(np.int32)
            edges[size:] -= edges[: n_units - size].copy()
            out[dup_name[size]] = float(lengths[np.cumsum(edges) > 0].sum()) / total_chars
        starts = np.flatnonzero(repeated[:-1] & repeated[1:])
    return out


def c4_judge(doc: Document, c) -> tuple[str | None, int, float]:
    """Judge each line as C4 would, without removing any.

    Returns (page drop reason or None, sentences in the lines C4 keeps, fraction of lines
    C4 would remove). `c` is a QualityConfig."""
    lines, lowered = doc.lines, doc.lowered
    # Page-wide checks first, so most lines need no lower-casing or substring search.
    look_js = c.c4_javascript and "javascript" in lowered
    look_policy = c.c4_policy and any(p in lowered for p in C4_POLICY)
    look_lorem = c.c4_lorem_ipsum and "lorem ipsum" in lowered
    look_curly = c.c4_curly_bracket and "{" in doc.text
    look_phrases = look_js or look_policy or look_lorem
    look_long = any(len(line) > c.c4_max_word_length for line in lines)
    look_cite = "[" in doc.text
    min_words = round(c.c4_min_words_per_line * doc.units_per_word)
    check_end = c.c4_terminal_punct and doc.lang not in NO_SENTENCE_MARK

    kept: list[str] = []
    removed: dict[str, list[str]] = {}
    page_reason = None  # the first page rule hit; judging goes on so the signals are whole
    for line in lines:
        rule = None
        if look_long and max(map(len, line.split())) > c.c4_max_word_length:
            rule = "c4_long_word"
        else:
            if look_cite and "[" in line:
                line = _drop_citations(line)
            if check_end and (not line.endswith(C4_LINE_END) or line.endswith("...")):
                rule = "c4_no_terminal_punct"
            elif (
                count_units(line, doc.lang) if doc.continua else len(line.split(None, min_words))
            ) < min_words:
                rule = "c4_too_few_words"
            elif look_phrases or look_curly:
                low = line.lower()
                if look_lorem and "lorem ipsum" in low:
                    page_reason = page_reason or "c4_lorem_ipsum"
                if look_js and "javascript" in low:
                    rule = "c4_javascript"
                elif look_curly and "{" in line:
                    page_reason = page_reason or "c4_curly_bracket"
                elif look_policy and any(p in low for p in C4_POLICY):
                    rule = "c4_policy"
        if rule is None:
            kept.append(line)
        else:
            removed.setdefault(rule, []).append(line)

    count = count_clauses if doc.lang in NO_SENTENCE_MARK else count_sentences
    sentences = count(kept)
    removed_frac = _frac(len(lines) - len(kept), len(lines))
    if page_reason or sentences >= c.c4_min_sentences:
        return page_reason, sentences, removed_frac
    # Too few sentences: blame the line rule that made the difference, if one did.
    if removed:
        held, rule = max((count(ls), rule) for rule, ls in removed.items())
        if sentences + held >= c.c4_min_sentences:
            return rule, sentences, removed_frac
    return "c4_too_few_sentences", sentences, removed_frac


def _drop_citations(line: str) -> str:
    """C4 removed Wikipedia-style [1], [edit], [citation needed] before judging a line."""
    for mark in ("[edit]", "[citation needed]"):
        line = line.replace(mark, "")
    if "[" in line:
        line = _CITATION.sub("", line)
    return line.strip()


def count_sentences(lines: list[str]) -> int:
    """Sentences: each line ends one, and inside a line '. ', '! ', '? ' or a full-width
    。！？ ends one. A cheap stand-in for C4's sentence splitter (str.count, no regex)."""
    if not lines:
        return 0
    joined = "\n".join(lines)
    inner = sum(map(joined.count, _INNER_SENTENCE_END))
    full_width = sum(map(joined.count, _FULL_WIDTH_END))
    full_width_at_end = sum(map(str.endswith, lines, repeat(_FULL_WIDTH_END)))
    return len(lines) + inner + full_width - full_width_at_end


def count_clauses(lines: list[str]) -> int:
    """Thai and Lao put a space, not a mark, between sentences: count the space-separated runs."""
    return sum(len(line.split()) for line in lines)
