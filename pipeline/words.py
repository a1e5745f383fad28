"""Word units and per-language lists for the heuristic quality rules (pipeline/quality.py).

The Gopher/C4/FineWeb rules were written for English, where a word is what lies between
spaces. Here a "unit" is:

- in space-delimited languages (the default, also for an unknown language ""): a
  whitespace token without its leading/trailing punctuation ("(see" -> "see"); tokens of
  symbols only ("-", "|", "...") are no units. Korean (eojeol) and Vietnamese (syllables)
  are spaced too.
- in Chinese, Japanese, Thai, Lao, Khmer, Burmese and Tibetan, which put no space between
  words: a Han or kana character, a katakana run (a loanword), or a Thai... letter with
  the vowel and tone marks that follow it; embedded Latin words and numbers are one unit
  each. `units_per_word` converts unit counts into word counts.

No word segmenter: jieba 0.42.1 alone cuts the handbook's Chinese pages at 133 docs/s per
core, while all the quality rules together run at 731 docs/s on them. With counts scaled
per word, the rules behave on these languages (numbers below and in pipeline/quality.py).
"""
from __future__ import annotations

import re

# ISO 639 codes of languages written without spaces between words.
SCRIPTIO_CONTINUA = frozenset({"zh", "ja", "th", "lo", "km", "my", "bo", "yue", "wuu", "gan", "lzh"})

# One unit per character: Han, hiragana, CJK compatibility and the supplementary ideograph
# planes; and Thai, Lao, Tibetan, Burmese and Khmer letters, each with the vowel signs and
# tone marks that follow it (they are not letters themselves, and alone mean nothing).
_CHAR_UNITS = (
    "\u0e00-\u0eff\u0f00-\u0fff\u1000-\u109f\u1780-\u17ff"
    "\u3040-\u309f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
)
_SIGNS = (
    "\u0e31\u0e34-\u0e3a\u0e47-\u0e4e\u0eb1\u0eb4-\u0ebc\u0ec8-\u0ece"  # Thai, Lao
    "\u0f71-\u0f84\u0f86\u0f87\u0f8d-\u0fbc"  # Tibetan
    "\u102b-\u103e\u1056-\u1059\u105e-\u1060\u1062-\u1064\u1067-\u106d\u1071-\u1074\u1082-\u108d"  # Burmese
    "\u17b4-\u17d3\u17dd"  # Khmer
)
# One unit per run: katakana (full and half width, without the middle dot U+30FB) spells
# loanwords letter by letter, so "パッケージ" (package) is one unit, not five.
_KATAKANA = "\u30a0-\u30fa\u30fc-\u30ff\uff66-\uff9f"
_NOT_OTHER = _CHAR_UNITS + _KATAKANA
# A token from its first to its last word character: `\S*` runs to the end of the token and
# backtracks to the last `\w`, so edge punctuation is dropped and inner punctuation kept.
_SPACED_UNIT = re.compile(r"\w(?:\S*\w)?")
_CONTINUA_UNIT = re.compile(
    rf"[{_KATAKANA}]+|[{_CHAR_UNITS}][{_SIGNS}]*|[^\W{_NOT_OTHER}](?:[^\s{_NOT_OTHER}]*[^\W{_NOT_OTHER}])?"
)
# A unit (as joined by spaces) that has no letter at all: numbers, "3.14", "1_000".
NO_LETTER_UNIT = re.compile(r"(?<!\S)(?:[\d_]|[^\w\s])+(?!\S)")
# A whitespace token made only of symbols: it is not a unit but still a "word" for the
# Gopher alphabetic-word rule (a page of "| - | * |" is not 80 % alphabetic words).
SYMBOL_TOKEN = re.compile(r"(?<!\S)[^\w\s]+(?!\S)")


# About how many units make one word. Chinese and Japanese: measured on the Debian
# handbook's fully translated pages against the English originals, 1.45 and 1.95 units per
# English word, so 2. Thai: 3.48 letter clusters per word on Firefox's Thai strings as
# segmented by PyThaiNLP (newmm), so 3.5; Lao, Khmer, Burmese and Tibetan are assumed alike.
_UNITS_PER_WORD = {"zh": 2, "ja": 2, "yue": 2, "wuu": 2, "gan": 2, "lzh": 2}
_CLUSTER_UNITS_PER_WORD = 3.5
# Chinese/Japanese text takes about half the characters of the same English text (0.48 and
# 0.65 on the same handbook pages), so character-length thresholds are halved for them.
WIDE_SCRIPT = frozenset(_UNITS_PER_WORD)


# Languages whose spaces separate syllables (vi) or syllable-block words (ko): a unit there
# is 3.5 (vi) and 3.1-3.4 (ko) characters on the handbook, too close to Gopher's lower bound
# of 3 to trust, and a Hangul block holds 2-3 letters. The mean-word-length rule skips them,
# as it skips the character-unit languages.
NO_MEAN_WORD_LENGTH = SCRIPTIO_CONTINUA | {"ko", "vi"}


# Thai and Lao end a sentence with a space, not a mark: rules about terminal punctuation
# skip them.
NO_SENTENCE_MARK = frozenset({"th", "lo"})


def units_per_word(language: str) -> float:
    if language in SCRIPTIO_CONTINUA:
        return _UNITS_PER_WORD.get(language, _CLUSTER_UNITS_PER_WORD)
    return 1


def base_language(code: str) -> str:
    """'zh-Hans' / 'pt_BR' / 'EN' -> 'zh' / 'pt' / 'en'; '' stays ''."""
    return code.strip().lower().replace("_", "-").split("-", 1)[0]


def is_continua(language: str) -> bool:
    return language in SCRIPTIO_CONTINUA


def split_units(lowered_text: str, language: str) -> list[str]:
    """Units of an already lower-cased text; `language` is a base code (see base_language)."""
    pattern = _CONTINUA_UNIT if language in SCRIPTIO_CONTINUA else _SPACED_UNIT
    return pattern.findall(lowered_text)


def count_units(text: str, language: str) -> int:
    """Units of one line (C4's words-per-line rule)."""
    if language in SCRIPTIO_CONTINUA:
        return len(_CONTINUA_UNIT.findall(text))
    return len(text.split())


# Stop words for the Gopher "at least two of ..." rule. English is Gopher's own list; the
# others are, in the same spirit, a dozen of the most frequent function words of each
# language, chosen for this project. Chinese and Japanese entries are single characters
# because their units are characters. Languages missing here skip the rule.
STOP_WORDS: dict[str, frozenset[str]] = {
    lang: frozenset(words.split())
    for lang, words in {
        "en": "the be to of and that have with",
        "fr": "le la les de des et un une est que en du",
        "de": "der die das und ist nicht zu den von mit ein eine",
        "es": "el la los las de que y en un una es por",
        "it": "il la di che e un una per non sono del in",
        "pt": "o a os as de que e um uma do da em não",
        "nl": "de het een en van is dat niet op te met",
        "ca": "el la els les de i que un una és amb per",
        "ro": "și de la în a cu pe care este un o nu",
        "sv": "och att det som en är på för med av inte den",
        "da": "og at det en er til på som med af ikke den",
        "nb": "og i det er som en på til med av ikke for",
        "no": "og i det er som en på til med av ikke for",
        "nn": "og i det er som ein på til med av ikkje for",
        "fi": "ja on ei se että oli kun mutta tai joka ovat myös",
        "hu": "a az és hogy nem is egy van meg de ez csak",
        "pl": "i w nie na się z że do to jest jak o",
        "cs": "a v se na je že to s z do pro jako",
        "sk": "a v sa na je že to s z do pre ako",
        "hr": "i je u na se da za od su ne s kao",
        "bs": "i je u na se da za od su ne s kao",
        "sl": "in je v na se da za od so ne s kot",
        "ru": "и в не на что с как по это к для из",
        "uk": "і в у не на що з як до це та для",
        "bg": "и в на не за да се от с е че като",
        "el": "και το η ο να του της την σε με για είναι",
        "tr": "ve bir bu için ile da de olarak daha gibi çok olan",
        "id": "yang dan di ini itu dengan untuk dari dalam tidak akan ada",
        "ms": "yang dan di ini itu dengan untuk dari dalam tidak akan ada",
        "vi": "của và là các có được trong cho với không này những",
        "ar": "في من على أن إلى التي عن هذا مع الذي ما لا",
        "fa": "و در به از که این را با است برای آن می",
        "he": "של את על לא זה עם גם או כי הוא אם מה",
        "hi": "के है में की और से को का एक पर यह भी",
        "ko": "수 있습니다 및 또는 이 그 것 등 있는 하는 할 있다",
        "zh": "的 是 了 在 和 有 不 这 這 也 就 个 個 中",
        "ja": "の に は を が で て と た し も な",
    }.items()
}
