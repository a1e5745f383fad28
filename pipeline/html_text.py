"""HTML bytes -> main text: decode with the right charset, refuse pathological pages cheaply,
then let Resiliparse keep the main content and drop navigation, headers, footers and scripts.

`html_to_text` is the one entry point the extract stage calls per document.
"""
from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

from resiliparse.extract.html2text import extract_plain_text
from resiliparse.parse.encoding import detect_encoding, map_encoding_to_html5
from resiliparse.parse.html import HTMLParserException, HTMLTree

from pipeline.errors import check_range
from pipeline.knobs import knob


@dataclass
class ExtractLimits:
    max_bytes: int = knob(
        4 * 2**20,
        "Drop pages larger than this many bytes (too_large). Common Crawl cuts payloads at 1 MiB "
        "(5 MiB planned); pages beyond 4 MiB are dumps or listings, and tag-dense ones need ~6x "
        "their size in memory to parse.",
    )
    max_tags: int = knob(
        200_000,
        "Drop pages with more '<' than this (too_many_tags). Closing tags count too, so this is "
        "~100k elements (Debian doc pages: median 600, max 98k); 200k take ~0.5-1.5 s to extract.",
    )
    max_div_depth: int = knob(
        1_000,
        "Drop pages whose <div> nesting goes deeper than this (too_deep). Pages people read nest "
        "tens deep; main-content extraction time grows with the square of div depth.",
    )
    max_nesting_work: int = knob(
        5_000_000,
        "Drop pages whose sum, over all tags, of enclosing <div> depth exceeds this (too_deep). "
        "Main-content extraction costs up to ~0.3 us per unit, so 5M is ~1.5 s on top of the "
        "parse (Debian doc pages: at most 0.5M).",
    )
    min_text_chars: int = knob(
        20,
        "Drop pages whose extracted text has fewer characters than this (no_text).",
    )

    def check(self) -> None:
        check_range(self, ("max_bytes", "max_tags", "max_div_depth", "max_nesting_work"), low=1)
        check_range(self, "min_text_chars", low=0)


# ---------------------------------------------------------------------------------------------
# Guards: cheap byte-level checks that run before any parsing.

_BINARY_MAGICS = (
    b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"%PDF-",
    b"PK\x03\x04", b"\x1f\x8b", b"\x28\xb5\x2f\xfd", b"\xfd7zXZ\x00", b"\x7fELF",
    b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", b"wOFF", b"wOF2", b"OggS",
)
# UTF-16/32 text is full of NUL bytes (the UTF-32-LE BOM starts with the UTF-16-LE one).
_BOMS_WITH_NULS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF32_BE)
_BINARY_SAMPLE_BYTES = 4096
_MAX_NULS = 2  # a stray NUL or two from a broken CMS is not a binary file
_MAX_CONTROL_SHARE = 0.05  # random bytes are ~10% control bytes; text is ~0%
# C0 controls that never appear in text: everything below 0x20 except \t \n \v \f \r and
# ESC (0x1b, which ISO-2022-JP uses to switch character sets).
_CONTROL_BYTES = bytes(b for b in range(0x20) if b not in b"\t\n\x0b\x0c\r\x1b")
_NOT_CONTROL_BYTES = bytes(b for b in range(256) if b not in _CONTROL_BYTES)

# An HTML parser ignores the "/" in <div/>, so it opens a div like <div> does.
_DIV_TAG = re.compile(rb"<(/?)div[\s/>]", re.IGNORECASE)


def _looks_binary(html: bytes) -> bool:
    if html.startswith(_BINARY_MAGICS) or html[4:8] == b"ftyp":  # ftyp: MP4/MOV/HEIC
        return True
    if html.startswith(_BOMS_WITH_NULS):
        return False
    sample = html[:_BINARY_SAMPLE_BYTES]
    if sample.count(b"\x00") > _MAX_NULS:
        return True
    n_control = len(sample.translate(None, _NOT_CONTROL_BYTES))
    return n_control > _MAX_CONTROL_SHARE * len(sample)


def _div_nesting_too_deep(html: bytes, max_depth: int, max_work: int) -> bool:
    """Estimate, without parsing, what makes Resiliparse's main-content pass slow: its cost
    grows with (nodes inside a div) x (how many divs enclose them). We walk only the div
    tags and count the '<' between consecutive ones in C, stopping as soon as a cap is hit."""
    depth = work = pos = 0
    for match in _DIV_TAG.finditer(html):
        start = match.start()
        if depth:
            work += depth * html.count(b"<", pos, start)
            if work > max_work:
                return True
        pos = start
        if match.group(1):
            depth = max(depth - 1, 0)  # a stray </div> closes nothing
        else:
            depth += 1
            if depth > max_depth:
                return True
    return work + depth * html.count(b"<", pos) > max_work


def html_problem(html: bytes, limits: ExtractLimits) -> str | None:
    """Why this payload should not be parsed at all, or None. Each check is cheap (the
    div scan is linear and stops early), so a bad page costs milliseconds, not seconds."""
    if len(html) > limits.max_bytes:
        return "too_large"
    if _looks_binary(html):
        return "binary_content"
    tags = html.count(b"<")
    if tags > limits.max_tags:
        return "too_many_tags"
    # Depth can be at most the number of <div openings, and the nesting work at most that times
    # the tag count: when those bounds are within the caps (most pages), skip the exact scan.
    div_opens = html.lower().count(b"<div")
    if div_opens <= limits.max_div_depth and div_opens * tags <= limits.max_nesting_work:
        return None
    if _div_nesting_too_deep(html, limits.max_div_depth, limits.max_nesting_work):
        return "too_deep"
    return None


# ---------------------------------------------------------------------------------------------
# Decoding.

_BOMS = (  # longest first: the UTF-32-LE BOM starts with the UTF-16-LE one
    (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
)
# Decode legacy charsets with the superset that Windows (and so most authors) actually used:
# e.g. "Shift_JIS" pages routinely contain NEC/IBM extension characters only cp932 has.
_SUPERSETS = {
    "shift_jis": "cp932", "gbk": "gb18030", "gb2312": "gb18030", "euc_kr": "cp949",
    "big5": "big5hkscs", "iso8859-11": "cp874", "iso8859-1": "cp1252", "ascii": "cp1252",
}
_META_SCAN_BYTES = 4096
_HEADER_CHARSET = re.compile(r"""charset\s*=\s*["']?\s*([^\s;"',]+)""", re.IGNORECASE)
# Matches both <meta charset="x"> and <meta http-equiv=Content-Type content="...; charset=x">.
_META_CHARSET = re.compile(rb"""<meta\s[^>]*?charset\s*=\s*["']?\s*([\w.:-]+)""", re.IGNORECASE)
_XML_ENCODING = re.compile(rb"""<\?xml\s[^>]*?encoding\s*=\s*["']([\w.:-]+)""", re.IGNORECASE)


def normalise_charset(label: str) -> str | None:
    """A charset label from a header or a page -> the Python codec to decode it with, or None
    if the label names nothing we know. Follows the WHATWG label table (what browsers do)."""
    label = label.strip().strip("\"'").lower()
    if not label:
        return None
    name = map_encoding_to_html5(label, fallback_utf8=False)
    if name is None:  # not a WHATWG label; maybe a Python alias such as "cp932" or "latin-1"
        try:
            name = codecs.lookup(label).name
        except LookupError:
            return None
        name = map_encoding_to_html5(name, fallback_utf8=False) or name
    name = codecs.lookup(name).name
    return _SUPERSETS.get(name, name)


def _declared_charsets(html: bytes, content_type: str) -> list[str]:
    """Charset labels in priority order: HTTP header, then <meta>, then <?xml encoding?>."""
    labels = []
    if content_type and (m := _HEADER_CHARSET.search(content_type)):
        labels.append(m.group(1))
    head = html[:_META_SCAN_BYTES]
    for pattern in (_META_CHARSET, _XML_ENCODING):
        if m := pattern.search(head):
            labels.append(m.group(1).decode("ascii"))
    return labels


def _strict_decode(html: bytes, encoding: str) -> str | None:
    try:
        return html.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        return None


def decode_html(html: bytes, content_type: str) -> tuple[str, str]:
    """Return (text, codec used). Order: byte-order mark; UTF-8 if the bytes are valid UTF-8 and
    not plain ASCII; declared charsets (header, meta, xml); uchardet detection. A declaration
    whose strict decode fails is skipped, so latin-1 labelled UTF-8 is not turned to mojibake."""
    for bom, encoding in _BOMS:
        if html.startswith(bom) and (text := _strict_decode(html, encoding)) is not None:
            return text, "utf-8" if encoding == "utf-8-sig" else encoding

    # Non-ASCII bytes that happen to form valid UTF-8 are almost never legacy text, while
    # pages converted to UTF-8 that keep an old charset declaration are common.
    # (7-bit charsets such as ISO-2022-JP are pure ASCII, so they fall through to below.)
    if not html.isascii() and (text := _strict_decode(html, "utf-8")) is not None:
        return text, "utf-8"

    tried = set()
    for label in _declared_charsets(html, content_type):
        encoding = normalise_charset(label)
        # A charset read from inside the page can't really be UTF-16 without a BOM: the page
        # was readable as ASCII to find it (the WHATWG rule), so such a label is wrong.
        if encoding is None or encoding in tried or encoding.startswith(("utf-16", "utf-32")):
            continue
        tried.add(encoding)
        if (text := _strict_decode(html, encoding)) is not None:
            return text, encoding
    # No usable declaration (or it lied): ask uchardet, whose answer is always a known codec.
    detected = normalise_charset(detect_encoding(html)) or "cp1252"
    if detected not in tried and (text := _strict_decode(html, detected)) is not None:
        return text, detected
    # Nothing decodes cleanly, e.g. a page mixing charsets: keep the detector's reading.
    return html.decode(detected, errors="replace"), detected


# ---------------------------------------------------------------------------------------------
# Extraction.

_BLANK_RUNS = re.compile(r"\n{3,}")


def extract_main_text(html: str, *, main_content: bool = True) -> str:
    """Main text of a page: blocks separated by newlines, <p> paragraphs by a blank line.
    Options chosen for LM training text: no alt texts (mostly "logo", "icon", file names,
    glued onto neighbouring words), no link URLs, form fields or <noscript> fallbacks
    ("please enable JavaScript"), no comment threads or post meta lines ("Posted by ... on");
    list bullets kept, since they show where list items start and end."""
    tree = HTMLTree.parse(html)
    text = extract_plain_text(
        tree,
        preserve_formatting=True,
        main_content=main_content,
        list_bullets=True,
        alt_texts=False,
        links=False,
        form_fields=False,
        noscript=False,
        comments=False,
        post_meta=False,
    )
    return tidy_whitespace(text)


def tidy_whitespace(text: str) -> str:
    """Light touch: no trailing spaces, at most one blank line in a row, no blank edges.
    Leading indentation stays (it carries list nesting and code layout)."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return _BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip("\n")


def html_to_text(
    html: bytes, content_type: str, limits: ExtractLimits
) -> tuple[str | None, str | None, str]:
    """Return (text, None, encoding) for a usable page, or (None, drop_reason, encoding)."""
    if problem := html_problem(html, limits):
        return None, problem, ""
    text, encoding = decode_html(html, content_type)
    try:
        main_text = extract_main_text(text)
    except HTMLParserException:
        return None, "parse_error", encoding
    if len(main_text) < limits.min_text_chars:
        return None, "no_text", encoding
    return main_text, None, encoding
