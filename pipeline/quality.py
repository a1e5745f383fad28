"""Heuristic quality filters: Gopher quality and repetition, C4, FineWeb.

A rule looks at one document and answers keep (None) or drop (a reason string); the text is
never edited. Beside that answer every document gets the same fixed set of numeric signals
(SIGNAL_KEYS), kept as columns for histograms and for re-filtering later without the text
(dolma's "attributes"). All signals are computed for every document whichever families are
on, so the columns are the same in every run; the rules below read only those signals
(except C4's page rules, which need the lines), so re-applying a threshold to the stored
columns gives the same decisions.

Sources and their defaults (each threshold is a QualityConfig knob):
- Gopher quality: Rae et al. 2021, "Scaling Language Models" (arXiv:2112.11446), A.1.1.
- Gopher repetition: same paper, Table A1.
- C4: Raffel et al. 2020 (JMLR 21), section 2.2, and its reference code (tfds c4_utils).
- FineWeb: Penedo et al. 2024 (arXiv:2406.17557), section 3.3 "additional heuristic
  filters"; the list-like rule is datatrove's FineWebQualityFilter `new_line_ratio`.
Families run in FineWeb's order (Gopher repetition, Gopher quality, C4, FineWeb) and the
first failing rule names the drop.

Definitions, where they differ from datatrove (chosen to follow the papers, and to be cheap):
- Units are whitespace tokens with edge punctuation stripped (pipeline/words.py), not NLTK
  tokens; a token of symbols only is no unit, but counts as a non-alphabetic word.
- Lines are the non-blank lines, stripped; paragraphs are runs of them between blank lines.
- Repeated lines/paragraphs count the copies after the first. Duplicated n-grams mark every
  unit inside any n-gram occurring twice or more (first copy included, overlaps once), as
  Gopher describes and RedPajama-V2 implements (datatrove counts later copies only). Top
  n-grams count only n-grams seen at least twice. Character fractions of n-grams are over
  unit characters (lower-cased), so spaces and punctuation do not dilute them.
- C4's line rules do NOT remove lines (C4 did): this stage keeps or drops whole documents.
  Each line is judged as C4 would (a word over 1000 chars, no terminal punctuation, under
  3 words, "javascript", cookie/terms phrases), and the page rules run on the lines C4
  would keep: "lorem ipsum" or "{" there drops the page, and so does having fewer than 5
  sentences there. That last drop is named after the line rule that made the difference
  (the one whose removed lines held the most sentences, if putting them back reaches 5),
  else c4_too_few_sentences. `c4_removed_line_frac` keeps how much C4 would have cut.
- FineWeb's duplicated-line character threshold is the paper's 0.1 (datatrove defaults to
  0.01). Its list-like rule counts non-blank lines per word. A line ending in terminal
  punctuation may have closing quotes/brackets after the mark.

Languages (`language` from the langid stage, ISO 639; "" = unknown = space-delimited).
Chinese, Japanese, Thai, Lao, Khmer, Burmese and Tibetan have no spaces between words: a
unit is a character (Han, kana; a katakana run is one unit) or a letter with its vowel and
tone marks (Thai...). Word counts there are units / units_per_word: 2 for Chinese and
Japanese (measured on the Debian handbook's translations: 1.45 and 1.95 units per English
word), 3.5 for Thai (3.48 letter clusters per word, Firefox's Thai strings segmented by
PyThaiNLP) and, assumed alike, Lao, Khmer, Burmese and Tibetan. Per rule:

    rule                              spaced languages           no-space languages
    gopher word count 50..100k        words                      units / units_per_word
    gopher mean word length 3..10     yes, except ko and vi      skipped
    gopher #, ellipsis, bullets ...   yes                        yes
    gopher alphabetic words           yes                        yes (over units)
    gopher >= 2 stop words            languages in               zh, ja (single characters);
                                      words.STOP_WORDS           others skipped
    gopher repetition n-grams         word n-grams               n * units_per_word units
    c4 words per line >= 3            words                      3 * units_per_word units
    c4 terminal punctuation           . ? ! " ' and the marks    。！？」 etc.; th, lo: skipped,
                                      of other scripts           a space ends their sentences
    fineweb line punctuation          yes                        th, lo: skipped
    fineweb short line <= 30 chars    30                         15 for zh/ja (their text takes
                                                                 half the characters), 30 others
    all other rules                   same                       same

Korean and Vietnamese are spaced, but their units are syllable-block words and syllables:
3.1-3.4 and 3.5 characters on average on the handbook, too close to the lower bound of 3,
so they skip the mean-word-length rule (words.NO_MEAN_WORD_LENGTH).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

from pipeline.errors import ConfigError, check_range
from pipeline.knobs import knob
from pipeline.quality_rules import DUP_NGRAM_SIZES, SIGNAL_KEYS, TOP_NGRAM_SIZES, Document, c4_judge, measure
from pipeline.words import NO_MEAN_WORD_LENGTH, NO_SENTENCE_MARK, STOP_WORDS, base_language

__all__ = ["QualityConfig", "SIGNAL_KEYS", "quality_reason", "tag_and_filter"]

LANGUAGE_COLUMN = "language"


@dataclass
class QualityConfig:
    # Families on/off.
    gopher_quality: bool = knob(True, "Apply the Gopher quality rules (Rae et al. 2021, A.1.1).")
    gopher_repetition: bool = knob(True, "Apply the Gopher repetition rules (Rae et al. 2021, Table A1).")
    c4: bool = knob(True, "Apply the C4 rules (Raffel et al. 2020, 2.2).")
    fineweb: bool = knob(True, "Apply the FineWeb rules (Penedo et al. 2024, 3.3).")

    # Gopher quality.
    gopher_min_words: int = knob(50, "Drop documents with fewer words than this (see units_per_word).")
    gopher_max_words: int = knob(100_000, "Drop documents with more words than this.")
    gopher_min_mean_word_length: float = knob(3.0, "Drop if the mean word length (chars) is below this.")
    gopher_max_mean_word_length: float = knob(10.0, "Drop if the mean word length (chars) is above this.")
    gopher_max_symbol_word_ratio: float = knob(0.1, "Max '#' or ellipsis count per word (each separately).")
    gopher_max_bullet_line_frac: float = knob(0.9, "Max fraction of lines starting with a bullet.")
    gopher_max_ellipsis_line_frac: float = knob(0.3, "Max fraction of lines ending with an ellipsis.")
    gopher_min_alpha_word_frac: float = knob(0.8, "Min fraction of words with an alphabetic character.")
    gopher_min_stop_words: int = knob(2, "Min number of distinct stop words (per-language list).")

    # Gopher repetition (Table A1).
    gopher_max_dup_line_frac: float = knob(0.30, "Max fraction of lines that repeat an earlier line.")
    gopher_max_dup_para_frac: float = knob(0.30, "Max fraction of paragraphs that repeat an earlier one.")
    gopher_max_dup_line_char_frac: float = knob(0.20, "Max fraction of characters in repeated lines.")
    gopher_max_dup_para_char_frac: float = knob(0.20, "Max fraction of characters in repeated paragraphs.")
    gopher_max_top_2gram_char_frac: float = knob(0.20, "Max char fraction of the most frequent 2-gram.")
    gopher_max_top_3gram_char_frac: float = knob(0.18, "Max char fraction of the most frequent 3-gram.")
    gopher_max_top_4gram_char_frac: float = knob(0.16, "Max char fraction of the most frequent 4-gram.")
    gopher_max_dup_5gram_char_frac: float = knob(0.15, "Max char fraction inside repeated 5-grams.")
    gopher_max_dup_6gram_char_frac: float = knob(0.14, "Max char fraction inside repeated 6-grams.")
    gopher_max_dup_7gram_char_frac: float = knob(0.13, "Max char fraction inside repeated 7-grams.")
    gopher_max_dup_8gram_char_frac: float = knob(0.12, "Max char fraction inside repeated 8-grams.")
    gopher_max_dup_9gram_char_frac: float = knob(0.11, "Max char fraction inside repeated 9-grams.")
    gopher_max_dup_10gram_char_frac: float = knob(0.10, "Max char fraction inside repeated 10-grams.")

    # C4.
    c4_min_sentences: int = knob(5, "Drop pages with fewer sentences (in the lines C4 keeps).")
    c4_min_words_per_line: int = knob(3, "Lines with fewer words are not counted as content.")
    c4_max_word_length: int = knob(1000, "Lines with a longer word are not counted as content.")
    c4_terminal_punct: bool = knob(
        True, "Lines must end in terminal punctuation to count (FineWeb turned this off)."
    )
    c4_javascript: bool = knob(True, "Lines mentioning 'javascript' are not counted as content.")
    c4_policy: bool = knob(True, "Lines with cookie / terms-of-use phrases are not counted as content.")
    c4_lorem_ipsum: bool = knob(True, "Drop pages containing 'lorem ipsum'.")
    c4_curly_bracket: bool = knob(True, "Drop pages containing '{' (code, templates).")

    # FineWeb.
    fineweb_min_line_punct_frac: float = knob(0.12, "Min fraction of lines ending in terminal punctuation.")
    fineweb_max_short_line_frac: float = knob(0.67, "Max fraction of short lines.")
    fineweb_short_line_chars: int = knob(30, "A line this long or shorter is short (halved for zh/ja).")
    fineweb_max_dup_line_char_frac: float = knob(0.10, "Max fraction of characters in repeated lines.")
    fineweb_max_line_word_ratio: float = knob(0.3, "Max lines per word (list-like documents).")

    def check(self) -> None:
        """Fractions within [0, 1], counts and ratios not negative, each min at most its max."""
        import dataclasses

        names = [f.name for f in dataclasses.fields(self) if not isinstance(getattr(self, f.name), bool)]
        check_range(self, [n for n in names if n.endswith("_frac")], low=0, high=1)
        check_range(self, [n for n in names if not n.endswith("_frac")], low=0)
        for low, high in (("gopher_min_words", "gopher_max_words"),
                          ("gopher_min_mean_word_length", "gopher_max_mean_word_length")):
            if getattr(self, low) > getattr(self, high):
                raise ConfigError(low, f"{low} = {getattr(self, low)} is above {high} = {getattr(self, high)}")


def quality_reason(text: str, language: str, config: QualityConfig) -> tuple[str | None, dict]:
    """The first failing rule's reason (None = keep) and the document's signals."""
    doc = Document(text, base_language(language))
    signals = measure(doc, config)
    c4_reason, signals["c4_sentence_count"], signals["c4_removed_line_frac"] = c4_judge(doc, config)
    if not doc.lines:
        return ("empty_text" if _any_family(config) else None), signals
    lang = doc.lang
    reason = (
        (config.gopher_repetition and _gopher_repetition_reason(signals, config))
        or (config.gopher_quality and _gopher_quality_reason(signals, lang, config))
        or (config.c4 and c4_reason)
        or (config.fineweb and _fineweb_reason(signals, lang, config))
        or None
    )
    return reason, signals


def tag_and_filter(
    docs: Iterator[dict], config: QualityConfig, drop: Callable[[dict, str], None]
) -> Iterator[dict]:
    """Add the signal columns to each doc; hand drops to `drop(doc, reason)`, yield the rest."""
    for doc in docs:
        text = doc.get("text")
        if not isinstance(text, str):
            drop(doc, "text_not_a_string")
            continue
        reason, signals = quality_reason(text, doc.get(LANGUAGE_COLUMN) or "", config)
        doc.update(signals)
        if reason is None:
            yield doc
        else:
            drop(doc, reason)


def _any_family(config: QualityConfig) -> bool:
    return config.gopher_quality or config.gopher_repetition or config.c4 or config.fineweb


# ---------------------------------------------------------------------------------------
# Rules over signals: re-applying them to stored columns gives the same decisions.


def _gopher_quality_reason(s: dict, lang: str, c: QualityConfig) -> str | None:
    if not c.gopher_min_words <= s["word_count"] <= c.gopher_max_words:
        return "gopher_word_count"
    if lang not in NO_MEAN_WORD_LENGTH and not (
        c.gopher_min_mean_word_length <= s["mean_word_length"] <= c.gopher_max_mean_word_length
    ):
        return "gopher_mean_word_length"
    if s["symbol_word_ratio"] > c.gopher_max_symbol_word_ratio:
        return "gopher_symbol_ratio"
    if s["bullet_line_frac"] > c.gopher_max_bullet_line_frac:
        return "gopher_bullet_lines"
    if s["ellipsis_line_frac"] > c.gopher_max_ellipsis_line_frac:
        return "gopher_ellipsis_lines"
    if s["alpha_word_frac"] < c.gopher_min_alpha_word_frac:
        return "gopher_alpha_words"
    if lang in STOP_WORDS and s["stop_word_count"] < c.gopher_min_stop_words:
        return "gopher_stop_words"
    return None


def _gopher_repetition_reason(s: dict, c: QualityConfig) -> str | None:
    if s["dup_para_frac"] > c.gopher_max_dup_para_frac:
        return "gopher_dup_paragraphs"
    if s["dup_para_char_frac"] > c.gopher_max_dup_para_char_frac:
        return "gopher_dup_paragraph_chars"
    if s["dup_line_frac"] > c.gopher_max_dup_line_frac:
        return "gopher_dup_lines"
    if s["dup_line_char_frac"] > c.gopher_max_dup_line_char_frac:
        return "gopher_dup_line_chars"
    for n in TOP_NGRAM_SIZES:
        if s[f"top_{n}gram_char_frac"] > getattr(c, f"gopher_max_top_{n}gram_char_frac"):
            return f"gopher_top_{n}gram"
    for n in DUP_NGRAM_SIZES:
        if s[f"dup_{n}gram_char_frac"] > getattr(c, f"gopher_max_dup_{n}gram_char_frac"):
            return f"gopher_dup_{n}gram"
    return None


def _fineweb_reason(s: dict, lang: str, c: QualityConfig) -> str | None:
    if lang not in NO_SENTENCE_MARK and s["line_punct_frac"] < c.fineweb_min_line_punct_frac:
        return "fineweb_line_punct"
    if s["short_line_frac"] > c.fineweb_max_short_line_frac:
        return "fineweb_short_lines"
    if s["dup_line_char_frac"] > c.fineweb_max_dup_line_char_frac:
        return "fineweb_dup_line_chars"
    if s["line_word_ratio"] > c.fineweb_max_line_word_ratio:
        return "fineweb_list_like"
    return None
