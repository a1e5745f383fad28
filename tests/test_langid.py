"""Language identification on real human-written text: paragraphs of the Debian Administrator's
Handbook in 26 locales (tests/fixtures/langid/README.md)."""
import re
from pathlib import Path

import pytest

from pipeline import langid
from pipeline.langid import LangIdConfig, identify, language_decision, tag_and_filter

FIXTURES = Path(__file__).parent / "fixtures" / "langid"

# Handbook locale -> the label lid.176 should give (Norwegian Bokmål is `no`, both Chinese scripts `zh`).
EXPECTED = {
    "ar-MA": "ar", "ca-ES": "ca", "cs-CZ": "cs", "da-DK": "da", "de-DE": "de", "el-GR": "el",
    "en-US": "en", "es-ES": "es", "fa-IR": "fa", "fr-FR": "fr", "hr-HR": "hr", "id-ID": "id",
    "it-IT": "it", "ja-JP": "ja", "ko-KR": "ko", "nb-NO": "no", "nl-NL": "nl", "pl-PL": "pl",
    "pt-BR": "pt", "ro-RO": "ro", "ru-RU": "ru", "sv-SE": "sv", "tr-TR": "tr", "vi-VN": "vi",
    "zh-CN": "zh", "zh-TW": "zh",
}
KANA = re.compile(r"[\u3041-\u309f\u30a1-\u30fa]")


def paragraphs(locale: str) -> list[str]:
    text = (FIXTURES / "handbook" / f"{locale}.txt").read_text(encoding="utf-8")
    return [p for p in text.split("\n\n") if p.strip()]


def all_docs() -> list[dict]:
    return [
        {"id": f"{locale}/{i}", "text": p, "expect": EXPECTED[locale]}
        for locale in EXPECTED
        for i, p in enumerate(paragraphs(locale))
    ]


def run(docs: list[dict], config: LangIdConfig) -> tuple[list[dict], list[tuple[dict, str]]]:
    dropped: list[tuple[dict, str]] = []
    kept = list(tag_and_filter(docs, config, lambda doc, reason: dropped.append((doc, reason))))
    return kept, dropped


def raw_top(text: str) -> str:
    labels, _ = langid._get_model().predict(langid.normalise_text(text), k=1)
    return labels[0].removeprefix("__label__")


# ---- the model -------------------------------------------------------------------------------


def test_label_table_matches_the_model():
    labels, _ = langid._get_model().predict("Debian", k=-1, threshold=-1.0)
    assert {label.removeprefix("__label__") for label in labels} == langid.LID_LABELS


def test_model_loads_without_printing(capfd):
    langid.load_lid_model()
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_missing_model_is_one_clear_line(tmp_path):
    missing = tmp_path / "lid.176.ftz"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))) as info:
        langid.load_lid_model(missing)
    assert "\n" not in str(info.value)


def test_corrupt_model_is_one_clear_line(tmp_path):
    broken = tmp_path / "lid.176.ftz"
    broken.write_bytes(langid.default_model_path().read_bytes()[:1000])  # a truncated download
    with pytest.raises(ValueError, match=re.escape(str(broken)) + ".* damaged") as info:
        langid.load_lid_model(broken)
    assert "\n" not in str(info.value)


# ---- identification --------------------------------------------------------------------------


@pytest.mark.parametrize("locale", sorted(EXPECTED))
def test_handbook_paragraphs_are_identified(locale):
    results = identify(paragraphs(locale))
    assert [lang for lang, _ in results] == [EXPECTED[locale]] * len(results)
    assert all(0.0 < score <= 1.0 for _, score in results)


def test_japanese_and_chinese_paragraphs_are_told_apart():
    assert {lang for lang, _ in identify(paragraphs("ja-JP"))} == {"ja"}
    assert {lang for lang, _ in identify(paragraphs("zh-CN") + paragraphs("zh-TW"))} == {"zh"}


def lines(name: str) -> list[str]:
    return (FIXTURES / name).read_text(encoding="utf-8").splitlines()


def test_kanji_heavy_japanese_headings_are_not_called_chinese():
    headings = lines("ja_headings.txt")
    raw = [raw_top(h) for h in headings]
    ours = [lang for lang, _ in identify(headings)]
    with_kana = [i for i, h in enumerate(headings) if len(KANA.findall(h)) >= 2]
    assert sum(raw[i] == "zh" for i in with_kana) >= 5, "fixture no longer shows lid.176 calling them zh"
    assert [headings[i] for i in with_kana if ours[i] == "zh"] == []
    # The zh-by-script rule must not take Japanese away: nothing the model calls ja becomes zh.
    assert [h for h, r, o in zip(headings, raw, ours) if r == "ja" and o != "ja"] == []
    assert sum(o == "ja" for o in ours) >= 0.9 * len(headings)  # the rest: mostly English headings


def test_short_chinese_that_the_model_calls_japanese():
    texts = lines("zh_called_ja.txt")
    assert sum(raw_top(t) == "ja" for t in texts) >= 0.9 * len(texts)
    ours = [lang for lang, _ in identify(texts)]
    long_without_kana = [
        i for i, t in enumerate(texts) if not KANA.search(t) and len(langid._HAN.findall(t)) >= 10
    ]
    assert len(long_without_kana) >= 50
    assert [texts[i] for i in long_without_kana if ours[i] != "zh"] == []
    assert all(lang in {"ja", "zh"} for lang in ours)


def test_chinese_quoting_a_katakana_name_stays_chinese():
    text = paragraphs("zh-CN")[0] + "（日文名：ポケモン）"
    assert identify([text])[0][0] == "zh"


def test_wu_and_cantonese_are_counted_as_chinese():
    model = langid._get_model()
    for sentence in re.split(r"(?<=。)", "".join(paragraphs("zh-CN") + paragraphs("zh-TW"))):
        if len(sentence) < 10:
            continue
        labels, probs = model.predict(langid.normalise_text(sentence), k=5)
        group = sum(p for l, p in zip(labels, probs) if l in ("__label__zh", "__label__wuu", "__label__yue"))
        if labels[0] == "__label__ja":
            continue  # a ja/zh mix-up, tested above
        lang, score = identify([sentence])[0]
        assert lang == "zh"
        assert score == pytest.approx(min(group, 1.0))


def first_sentence(paragraph: str) -> str:
    return re.split(r"(?<=[.!?。？！])\s*", paragraph, maxsplit=1)[0]


def test_single_sentences_are_identified():
    cases = [
        (first_sentence(p), expected)
        for locale, expected in EXPECTED.items()
        for p in paragraphs(locale)
        if len(first_sentence(p)) >= 20
    ]
    got = identify([s for s, _ in cases])
    correct = [lang == expected for (_, expected), (lang, _) in zip(cases, got)]
    assert len(cases) >= 60 and sum(correct) >= 0.85 * len(cases)
    # Languages with no close neighbour in lid.176 must be right on every sentence.
    for (sentence, expected), ok in zip(cases, correct):
        if expected in {"en", "fr", "de", "ru", "el", "ja", "ko", "zh", "ar", "vi"}:
            assert ok, sentence


def test_newlines_and_odd_whitespace_do_not_change_the_result():
    for locale in ("fr-FR", "ja-JP", "ru-RU"):
        p = paragraphs(locale)[0]
        one_word_per_line = "\n".join(p.split())
        spaced = "\u3000\r\n\t".join(p.split(" ")) + "\n\n\n"
        assert identify([one_word_per_line, spaced]) == identify([p]) * 2
    # A whole chapter-like document with blank lines between paragraphs.
    document = "\n\n".join(paragraphs("de-DE")) + "\n"
    assert identify([document])[0][0] == "de"


def test_half_english_half_french_scores_lower_than_either():
    english, french = paragraphs("en-US")[0], paragraphs("fr-FR")[0]  # the same passage
    (en_lang, en_score), (fr_lang, fr_score), (mixed_lang, mixed_score) = identify(
        [english, french, english + "\n" + french]
    )
    assert (en_lang, fr_lang) == ("en", "fr")
    assert mixed_lang in {"en", "fr"}
    assert mixed_score < min(en_score, fr_score)


def test_uncommon_input():
    assert identify(["", " \n\t\u3000 "]) == [("", 0.0), ("", 0.0)]
    lang, score = identify(["Bonjour \udcff, ceci est une phrase tout à fait française."])[0]
    assert lang == "fr" and score > 0.5  # lone surrogate from a lenient decode
    assert identify(["12345 67890"])[0][0] != ""  # digits only: the model still answers, weakly


def test_batch_and_single_predictions_agree():
    texts = [d["text"] for d in all_docs()]
    assert identify(texts) == [identify([t])[0] for t in texts]
    one, _ = run(all_docs(), LangIdConfig(languages="all", batch_size=1))
    many, _ = run(all_docs(), LangIdConfig(languages="all", batch_size=7))
    assert [(d["id"], d["language"], d["language_score"]) for d in one] == [
        (d["id"], d["language"], d["language_score"]) for d in many
    ]


# ---- filtering -------------------------------------------------------------------------------


def test_only_wanted_languages_are_kept_in_order_and_everyone_is_tagged():
    docs = all_docs()
    kept, dropped = run(docs, LangIdConfig(languages="en,fr,ja", batch_size=5))
    assert [d["id"] for d in kept] == [d["id"] for d in docs if d["expect"] in {"en", "fr", "ja"}]
    assert {reason for _, reason in dropped} == {"language_not_kept"}
    assert len(kept) + len(dropped) == len(docs)
    for doc in docs:
        assert doc["language"] == doc["expect"]
        assert isinstance(doc["language_score"], float)
        assert doc["language_score"] == round(doc["language_score"], 4)


def test_empty_text_is_dropped_with_its_columns_set():
    docs = [{"id": 0, "text": ""}, {"id": 1, "text": " \n\n\t "}, {"id": 2, "text": None}, {"id": 3}]
    kept, dropped = run(docs, LangIdConfig(languages="all", min_language_score=0.0))
    assert kept == []
    assert [(d["id"], d["language"], d["language_score"], r) for d, r in dropped] == [
        (i, "", 0.0, "empty_text") for i in range(4)
    ]


def test_non_string_text_is_a_clear_error():
    with pytest.raises(TypeError, match="'text' column must hold strings, got bytes"):
        run([{"text": b"bytes"}], LangIdConfig())


def test_all_keeps_every_language():
    docs = all_docs()
    kept, dropped = run(docs, LangIdConfig(languages="all", min_language_score=0.0))
    assert dropped == [] and len(kept) == len(docs)
    assert len({d["language"] for d in kept}) >= 20


def test_per_language_threshold_overrides_only_that_language():
    kept, dropped = run(all_docs(), LangIdConfig(languages="all"))
    low = [d for d, reason in dropped if reason == "low_language_score"]
    assert low and all(d["language_score"] < 0.65 for d in low)
    assert all(d["language_score"] >= 0.65 for d in kept)
    # Lower the bar for one of the languages that fell short: its documents come back, no others.
    lang = low[0]["language"]
    kept2, dropped2 = run(all_docs(), LangIdConfig(languages="all", language_thresholds=f"{lang}:0.2"))
    assert {d["id"] for d in kept2} == {d["id"] for d in kept} | {d["id"] for d in low if d["language"] == lang}
    # Raising a language's bar drops its documents that score below it, and no others.
    kept3, dropped3 = run(all_docs(), LangIdConfig(languages="all", language_thresholds="de:1.0"))
    newly_dropped = {d["id"] for d, _ in dropped3} - {d["id"] for d in low}
    assert newly_dropped == {d["id"] for d in kept if d["language"] == "de" and d["language_score"] < 1.0}
    assert newly_dropped


def test_language_decision_reasons():
    config = LangIdConfig(languages="en,zh", min_language_score=0.65, language_thresholds="zh:0.5")
    assert language_decision("", 0.0, config) == "empty_text"
    assert language_decision("fr", 0.99, config) == "language_not_kept"
    assert language_decision("en", 0.64, config) == "low_language_score"
    assert language_decision("en", 0.65, config) is None
    assert language_decision("zh", 0.55, config) is None


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"languages": "eng"}, "unknown language code 'eng'"),
        ({"languages": "yue"}, "'yue' is counted as 'zh'"),
        ({"languages": " , "}, "languages is empty"),
        ({"languages": "all,en"}, "'all' cannot be combined"),
        ({"language_thresholds": "ja"}, "'ja' is not code:score"),
        ({"language_thresholds": "ja:high"}, "'ja:high' is not code:score"),
        ({"language_thresholds": "ja:1.5"}, "'ja:1.5' is not code:score"),
        ({"language_thresholds": "ja:0.5,JA:0.6"}, "'ja' is given twice"),
        ({"language_thresholds": "xx:0.5"}, "unknown language code 'xx'"),
        ({"min_language_score": 1.5}, "min_language_score must be within"),
    ],
)
def test_bad_settings_fail_at_configuration(settings, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        LangIdConfig(**settings)


def test_settings_are_forgiving_about_case_and_spaces():
    config = LangIdConfig(languages=" EN , Fr ", language_thresholds=" fr : 0.9 ")
    assert language_decision("fr", 0.85, config) == "low_language_score"
    assert language_decision("en", 0.85, config) is None
