"""HTML -> main text on real pages from Debian documentation packages (see fixtures/html/README.md):
charset handling, boilerplate removal, and the guards against pathological payloads."""
from __future__ import annotations

import codecs
import dataclasses
import gzip
import io
import random
import struct
import zipfile
import zlib
from pathlib import Path

import pytest

from pipeline.html_text import (
    ExtractLimits,
    decode_html,
    extract_main_text,
    html_problem,
    html_to_text,
    normalise_charset,
)

FIXTURES = Path(__file__).parent / "fixtures" / "html"
LIMITS = ExtractLimits()


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


JA = fixture("handbook_ja_role_of_distributions.html")
FR = fixture("handbook_fr_who_is_this_book_for.html")
PY = fixture("python_tutorial_appetite.html")


def without_charset_declarations(page: bytes) -> str:
    """The page as text with its <?xml encoding?> and <meta ... charset> removed."""
    text = page.decode("utf-8")
    stripped = text.replace(' encoding="UTF-8"', "").replace("; charset=UTF-8", "")
    assert "UTF-8" not in stripped[:2000]  # the fixture still looks as expected
    return stripped


def main_text(page: bytes, content_type: str = "") -> str:
    text, reason, _ = html_to_text(page, content_type, LIMITS)
    assert reason is None
    return text


# --- decoding ------------------------------------------------------------------------------


def test_utf8_pages_decode_as_utf8():
    for page in (JA, FR, PY):
        text, encoding = decode_html(page, "text/html")
        assert encoding == "utf-8"
        assert text == page.decode("utf-8")


@pytest.mark.parametrize(
    "label_in_page, content_type",
    [("Shift_JIS", ""), ("x-sjis", ""), ("UTF-8", "text/html; charset=Shift_JIS"), ("", "")],
    ids=["meta_shift_jis", "meta_x_sjis", "header_beats_wrong_meta", "undeclared"],
)
def test_shift_jis_gives_the_same_text_as_the_utf8_original(label_in_page, content_type):
    page = without_charset_declarations(JA)
    if label_in_page:
        page = page.replace('content="text/html"', f'content="text/html; charset={label_in_page}"')
    sjis = page.encode("cp932")

    text, encoding = decode_html(sjis, content_type)

    assert encoding == "cp932"
    assert text == page
    assert main_text(sjis, content_type) == main_text(JA)
    assert "ディストリビューションの役割" in main_text(sjis, content_type)


def test_iso_2022_jp_is_not_mistaken_for_binary_or_ascii():
    # 7-bit encoding full of ESC bytes: valid ASCII, so only the declaration/detector can tell.
    page = JA.decode("utf-8").replace("UTF-8", "ISO-2022-JP")
    jis = page.encode("iso2022_jp")
    assert html_problem(jis, LIMITS) is None
    assert decode_html(jis, "") == (page, "iso2022_jp")
    assert main_text(jis) == main_text(JA)


@pytest.mark.parametrize("content_type", ["", "text/html; charset=UTF-8", "text/html;charset=utf8"])
def test_latin1_page_labelled_utf8_keeps_its_accents(content_type):
    # The page itself still says charset=UTF-8 (meta and <?xml?>); its bytes are latin-1.
    latin1 = FR.decode("utf-8").encode("latin-1")
    text, encoding = decode_html(latin1, content_type)
    assert encoding == "cp1252"
    assert text == FR.decode("utf-8")
    extracted = main_text(latin1, content_type)
    assert "À qui s'adresse cet ouvrage" in extracted
    assert "\ufffd" not in extracted and "Ã" not in extracted


def test_utf8_page_labelled_latin1_is_read_as_utf8():
    # A page converted to UTF-8 whose server still announces latin-1.
    text, encoding = decode_html(FR, "text/html; charset=ISO-8859-1")
    assert encoding == "utf-8"
    assert "développement" in text


def test_unknown_charset_label_falls_back_to_detection():
    latin1 = FR.decode("utf-8").replace("UTF-8", "klingon-8").encode("latin-1")
    text, encoding = decode_html(latin1, "text/html; charset=x-no-such-charset")
    assert encoding == "cp1252"
    assert text == FR.decode("utf-8").replace("UTF-8", "klingon-8")


def test_utf8_with_bom():
    text, encoding = decode_html(codecs.BOM_UTF8 + FR, "")
    assert encoding == "utf-8"
    assert text == FR.decode("utf-8")  # BOM gone
    assert main_text(codecs.BOM_UTF8 + FR) == main_text(FR)


@pytest.mark.parametrize(
    "codec, bom, expected",
    [("utf-16", b"", "utf-16"), ("utf-16-be", codecs.BOM_UTF16_BE, "utf-16"),
     ("utf-32", b"", "utf-32"), ("utf-32-be", codecs.BOM_UTF32_BE, "utf-32")],
)
def test_utf16_and_utf32_with_bom_beat_the_utf8_declaration(codec, bom, expected):
    original = JA.decode("utf-8")
    data = bom + original.encode(codec)  # the plain "utf-16"/"utf-32" codecs write a BOM
    assert html_problem(data, LIMITS) is None  # their NUL bytes are not "binary"
    text, encoding = decode_html(data, "text/html; charset=UTF-8")
    assert encoding == expected
    assert text == original
    assert main_text(data) == main_text(JA)


@pytest.mark.parametrize(
    "label, codec",
    [
        ("shift_jis", "cp932"), ("SJIS", "cp932"), ("x-sjis", "cp932"), ("cp932", "cp932"),
        ("Windows-31J", "cp932"), ("iso-8859-1", "cp1252"), ("latin-1", "cp1252"),
        ("Latin1", "cp1252"), ("us-ascii", "cp1252"), ("gb2312", "gb18030"), ("GBK", "gb18030"),
        ("euc-kr", "cp949"), ("ks_c_5601-1987", "cp949"), ("big5", "big5hkscs"),
        ('"utf-8"', "utf-8"), ("UTF8", "utf-8"), ("windows-1251", "cp1251"),
        ("euc-jp", "euc_jp"), ("koi8-r", "koi8-r"), ("no-such-charset", None), ("", None),
    ],
)
def test_charset_labels_map_to_the_codec_browsers_use(label, codec):
    assert normalise_charset(label) == codec


# --- extraction ----------------------------------------------------------------------------


def test_sphinx_page_keeps_the_article_and_drops_navigation_and_footer():
    text = main_text(PY)
    paragraphs = text.split("\n\n")
    assert paragraphs[0] == "1. Whetting Your Appetite"
    assert "Python is just the language for you." in paragraphs  # a one-line paragraph
    assert any(p.startswith("By the way, the language is named after the BBC show") for p in paragraphs)
    assert "  • no variable or argument declarations are necessary." in paragraphs  # list item
    for boilerplate in (
        "Previous topic", "Navigation", "Report a Bug", "Show Source", "3.11.2 Documentation",
        "© Copyright", "Created using Sphinx", "Please donate", "Quick search", "Theme",
    ):
        assert boilerplate not in text, boilerplate


def test_handbook_page_drops_previous_next_links_banner_and_logo_alt_texts():
    text = main_text(FR)
    assert text.startswith("2.\xa0À qui s'adresse cet ouvrage\xa0?")
    assert "rejoindre les rangs de nos contributeurs." in text
    for boilerplate in ("Précédent", "Suivant", "Sommaire", "Download the ebook", "Product Site"):
        assert boilerplate not in text, boilerplate


def test_scripts_styles_forms_and_noscript_never_reach_the_text():
    page = PY.decode("utf-8").replace(
        "<p>Python is just the language for you.</p>",
        "<p>Python is just the language for you.</p>"
        "<script>var trackingCode = 'UA-1234';</script>"
        "<style>.promo { color: red }</style>"
        "<noscript>Please enable JavaScript to view the comments.</noscript>"
        "<form><input type='text' value='Your email address'><button>Subscribe</button></form>",
    )
    assert "Python is just the language for you." in page
    text = extract_main_text(page)
    assert "Python is just the language for you." in text
    for injected in ("trackingCode", "promo", "enable JavaScript", "Your email", "Subscribe"):
        assert injected not in text, injected


def test_whitespace_is_tidied():
    text = main_text(PY)
    assert "\n\n\n" not in text
    assert text == text.strip()
    assert all(line == line.rstrip() for line in text.split("\n"))


# --- guards --------------------------------------------------------------------------------


def tiny_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00")) + chunk(b"IEND", b""))


def zipped(page: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("index.html", page)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "payload",
    [
        tiny_png(),
        gzip.compress(PY),  # a Content-Encoding the fetcher forgot to undo
        zipped(PY),
        b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n",
        b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01",
        b"GIF89a\x01\x00\x01\x00\x80\x00\x00",
        random.Random(0).randbytes(8192),  # no magic at all
        PY[:500] + b"\x00" * 64 + PY[500:],  # text with a run of NULs
    ],
    ids=["png", "gzip", "zip", "pdf", "jpeg", "gif", "random", "nul_run"],
)
def test_binary_payloads_are_refused(payload):
    assert html_problem(payload, LIMITS) == "binary_content"
    assert html_to_text(payload, "text/html", LIMITS) == (None, "binary_content", "")


def test_a_stray_nul_does_not_lose_a_page():
    page = PY.replace(b"Python is just", b"Python\x00 is just", 1)
    text = main_text(page)
    assert "Whetting Your Appetite" in text


def test_too_large():
    body = PY * (LIMITS.max_bytes // len(PY) + 1)
    assert len(body) > LIMITS.max_bytes
    assert html_to_text(body, "", LIMITS)[1] == "too_large"
    # The cap is a knob: the same page passes when allowed.
    roomy = dataclasses.replace(LIMITS, max_bytes=len(body), max_tags=10**7)
    assert html_problem(body, roomy) is None


def test_too_many_tags():
    page = b"<html><body><p>" + b"word<br>" * (LIMITS.max_tags + 1) + b"</p></body></html>"
    assert len(page) < LIMITS.max_bytes
    assert html_problem(page, LIMITS) == "too_many_tags"


@pytest.mark.timeout(20)  # a hang guard, not a speed assertion
def test_300k_nested_divs_are_refused_without_parsing():
    page = b"<html><body>" + b"<div>" * 300_000 + b"deep text" + b"</div>" * 300_000
    text, reason, _ = html_to_text(page, "", LIMITS)
    assert text is None and reason in {"too_many_tags", "too_deep"}
    # With the tag cap lifted the depth guard alone must catch it.
    no_tag_cap = dataclasses.replace(LIMITS, max_tags=10**7)
    assert html_problem(page, no_tag_cap) == "too_deep"


def test_deep_but_bounded_nesting_is_still_extracted():
    depth = LIMITS.max_div_depth - 20  # the page nests its own divs a few levels deep
    page = b"<html><body>" + b"<div>" * depth + PY + b"</div>" * depth
    assert html_problem(page, LIMITS) is None
    assert "Python is just the language for you." in main_text(page)
    assert html_problem(b"<div>" * (LIMITS.max_div_depth + 1), LIMITS) == "too_deep"


def test_a_big_subtree_under_moderately_deep_divs_is_refused():
    # 300 divs is not too deep by itself, but main-content extraction would revisit each of the
    # 60k tags inside once per enclosing div (~18M steps).
    inner = b"<span>word</span> " * 30_000
    page = b"<html><body>" + b"<div>" * 300 + inner + b"</div>" * 300
    assert html_problem(page, LIMITS) == "too_deep"
    shallow = b"<html><body>" + b"<div>" * 30 + inner + b"</div>" * 30
    assert html_problem(shallow, LIMITS) is None


def test_stray_closing_divs_do_not_hide_depth():
    page = b"</div>" * 5_000 + b"<div>" * (LIMITS.max_div_depth + 1)
    assert html_problem(page, LIMITS) == "too_deep"


def test_page_without_main_text_is_no_text():
    head = PY.split(b"<body")[0]
    page = head + b"<body><script>render()</script><div id='app'></div></body></html>"
    text, reason, encoding = html_to_text(page, "", LIMITS)
    assert (text, reason, encoding) == (None, "no_text", "utf-8")


def test_real_fixture_pages_pass_every_guard():
    for page in (JA, FR, PY):
        assert html_problem(page, LIMITS) is None
