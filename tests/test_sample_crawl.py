"""The committed sample crawl (data/sample-crawl), and the serve-and-crawl half of its builder.

The apt half (download, unpack, lay out) needs the network and takes minutes, so it is not run
here; the crawl half runs for real (http.server + wget) on small sites built in tmp_path.
"""
from __future__ import annotations

import difflib
import re
import xml.etree.ElementTree as ET
import zlib
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastwarc.warc import ArchiveIterator, WarcRecordType

from pipeline.sample_crawl import Seed, crawl_seed, crawl_site, fetch_packages

HTML_TYPES = ("text/html", "application/xhtml+xml")
LANG_ATTR = re.compile(rb"<html[^>]*?\blang=\"([A-Za-z]{2,3})", re.I)
LANG_SEGMENT = re.compile(r"^([a-z]{2})(?:[-_][A-Za-z]{2})?$")


def responses(warcs: list[Path]) -> list[dict]:
    out = []
    for warc in warcs:
        with open(warc, "rb") as f:
            for record in ArchiveIterator(f, record_types=WarcRecordType.response, parse_http=True):
                out.append({
                    "url": record.headers["WARC-Target-URI"].strip("<>"),
                    "status": record.http_headers.status_code,
                    "type": (record.http_content_type or "").lower(),
                    "body": record.reader.read(),
                })
    return out


def language_of(response: dict) -> str | None:
    """From <html lang="…">, else from a path segment such as /handbook/fr-FR/ or /install/amd64/de/."""
    found = LANG_ATTR.search(response["body"][:4096])
    if found:
        return found.group(1).decode().lower()
    for segment in urlsplit(response["url"]).path.split("/"):
        match = LANG_SEGMENT.match(segment)
        if match:
            return match.group(1)
    return None


@pytest.fixture(scope="module")
def sample(sample_warcs) -> list[dict]:
    return responses(sample_warcs)


@pytest.fixture(scope="module")
def pages(sample) -> dict[str, bytes]:
    """HTML pages with status 200, by URL path."""
    return {urlsplit(r["url"]).path: r["body"] for r in sample if r["status"] == 200 and r["type"] in HTML_TYPES}


# --- the committed sample -----------------------------------------------------------------------


def test_sample_is_a_few_megabytes_in_several_shards(sample_warcs):
    sizes = [w.stat().st_size for w in sample_warcs]
    assert 3 <= len(sample_warcs) <= 4
    assert 1_000_000 < sum(sizes) < 8_000_000, sizes
    assert max(sizes) < 2 * min(sizes), f"shards are badly unbalanced: {sizes}"


def test_every_record_is_its_own_gzip_member(sample_warcs):
    # Readers seek to a record by its offset; that only works with one gzip member per record.
    for warc in sample_warcs:
        data, members = warc.read_bytes(), 0
        while data:
            inflater = zlib.decompressobj(wbits=31)
            inflater.decompress(data)
            assert inflater.eof, f"{warc.name}: truncated gzip member"
            data, members = inflater.unused_data, members + 1
        with open(warc, "rb") as f:
            records = sum(1 for _ in ArchiveIterator(f, parse_http=False))
        assert members == records, f"{warc.name}: {members} gzip members for {records} records"


def test_sample_has_hundreds_of_pages_in_at_least_six_languages(pages, sample):
    assert len(pages) >= 500
    ok_html = [r for r in sample if r["status"] == 200 and r["type"] in HTML_TYPES]
    per_language = Counter(language_of(r) for r in ok_html)
    well_covered = {lang for lang, n in per_language.items() if lang and n >= 20}
    assert len(well_covered) >= 6, per_language
    assert {"en", "de", "fr", "ja", "zh", "ru"} <= well_covered


def test_sample_has_well_formed_xhtml_pages(sample):
    xhtml = [r for r in sample if r["type"] == "application/xhtml+xml" and r["status"] == 200]
    assert len(xhtml) >= 10
    for response in xhtml:
        assert response["url"].endswith(".xhtml")
        ET.fromstring(response["body"])  # served as XML, so it must parse as XML


def test_sample_has_responses_the_ingest_must_skip(sample):
    def count(status: int, type_prefix: str) -> int:
        return sum(1 for r in sample if r["status"] == status and r["type"].startswith(type_prefix))

    assert count(200, "image/") >= 5
    assert count(200, "text/css") >= 5
    assert count(200, "text/plain") >= 1
    assert count(404, "") >= 1
    assert count(301, "") >= 1
    listings = [r for r in sample if r["status"] == 200 and b"<title>Directory listing for" in r["body"]]
    assert len(listings) >= 3


def test_per_architecture_install_guides_are_near_duplicates(pages):
    pairs = [(path, path.replace("/amd64/", "/i386/")) for path in pages if path.startswith("/install/amd64/")]
    pairs = [(a, b) for a, b in pairs if b in pages]
    assert len(pairs) >= 100
    identical = [a for a, b in pairs if pages[a] == pages[b]]
    different = [(a, b) for a, b in pairs if pages[a] != pages[b]]
    assert identical and different
    for a, b in different:
        ratio = difflib.SequenceMatcher(None, pages[a], pages[b], autojunk=False).quick_ratio()
        assert ratio > 0.8, f"{a} and {b} are not near-duplicates ({ratio:.2f})"


def test_handbook_mirror_keeps_the_text_but_changes_the_boilerplate(pages):
    def paragraph_text(page: bytes) -> list[bytes]:
        paragraphs = re.findall(rb'<div class="para">(.*?)</div>', page, re.S)
        return [re.sub(rb"\s+", b" ", re.sub(rb"<[^>]+>", b"", p)).strip() for p in paragraphs]

    pairs = [(path, "/mirror" + path.removesuffix(".html") + ".xhtml") for path in pages if path.startswith("/handbook/")]
    pairs = [(a, b) for a, b in pairs if b in pages]
    assert len(pairs) >= 10
    assert sum(1 for a, _ in pairs if paragraph_text(pages[a])) >= 5
    for original, mirror in pairs:
        assert b"mirror-header" in pages[mirror] and b"mirror-header" not in pages[original]
        assert paragraph_text(pages[mirror]) == paragraph_text(pages[original])


# --- the crawler, on small local sites ----------------------------------------------------------


def write_page(path: Path, title: str, body: str = "", lang: str = "en") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f'<!DOCTYPE html>\n<html lang="{lang}"><head><meta charset="utf-8"><title>{title}</title>'
        f'<link rel="stylesheet" href="/docs/style.css"></head><body><h1>{title}</h1>{body}</body></html>\n',
        encoding="utf-8",
    )


@pytest.fixture
def site(tmp_path) -> Path:
    root = tmp_path / "site"
    write_page(root / "docs/index.html", "Start",
               '<a href="a.html">A</a> <a href="chapter.xhtml">X</a> <a href="gone.html">gone</a> '
               '<a href="/private/secret.html">outside</a> <a href="deep/one.html">deep</a>')
    write_page(root / "docs/a.html", "Seite A", "<p>Ein Absatz über Uhren.</p>", lang="de")
    write_page(root / "docs/deep/one.html", "One", '<a href="two.html">two</a>')
    write_page(root / "docs/deep/two.html", "Two links away from the seed")
    (root / "docs/chapter.xhtml").write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="fr" lang="fr">'
        "<head><title>Chapitre</title></head><body><p>Un chapitre.</p></body></html>\n", encoding="utf-8")
    (root / "docs/style.css").write_text("body { font-family: serif }\n")
    write_page(root / "private/secret.html", "Not for this seed")
    write_page(root / "other/index.html", "Other seed", '<a href="more.html">more</a>')
    write_page(root / "other/more.html", "More")
    return root


def crawled(warcs: list[Path]) -> dict[str, dict]:
    return {urlsplit(r["url"]).path: r for r in responses(warcs)}


def test_crawl_site_stays_in_scope_and_records_every_kind_of_response(site, tmp_path):
    seeds = [Seed("/docs/index.html", "en", depth=1, include=("/docs",)), Seed("/other/index.html", "en", depth=1)]
    warcs, report = crawl_site(site, seeds, tmp_path / "out", warc_files=2, progress=False)
    assert len(warcs) == 2 and all(w.name.endswith(".warc.gz") for w in warcs)
    got = crawled(warcs)
    assert got["/docs/a.html"]["status"] == 200 and got["/docs/a.html"]["type"] == "text/html"
    assert got["/docs/chapter.xhtml"]["type"] == "application/xhtml+xml"
    assert got["/docs/style.css"]["type"] == "text/css"  # a page requisite
    assert got["/docs/gone.html"]["status"] == 404
    assert "/docs/deep/one.html" in got and "/docs/deep/two.html" not in got  # two links away
    assert "/private/secret.html" not in got  # outside --include-directories
    assert "/other/more.html" in got
    assert [r["html_pages"] for r in report] == [4, 2]  # index, a, chapter, deep/one; index, more


def test_crawl_site_stops_starting_seeds_at_max_pages(site, tmp_path):
    seeds = [Seed("/docs/index.html", "en", depth=1, include=("/docs",)), Seed("/other/index.html", "en", depth=1)]
    warcs, report = crawl_site(site, seeds, tmp_path / "out", warc_files=3, max_pages=2, progress=False)
    assert [r["seed"] for r in report] == ["/docs/index.html"]
    assert len(warcs) == 1  # empty shards are not written
    assert not any(path.startswith("/other/") for path in crawled(warcs))


def test_quota_bounds_what_one_seed_downloads(tmp_path):
    root = tmp_path / "site"
    filler = "<p>" + "Lorem ipsum dolor sit amet. " * 400 + "</p>"  # ~11 KB a page
    links = " ".join(f'<a href="p{i:02d}.html">{i}</a>' for i in range(30))
    write_page(root / "big/index.html", "Index", links)
    for i in range(30):
        write_page(root / f"big/p{i:02d}.html", f"Page {i}", filler)
    seed = Seed("/big/index.html", "en", depth=1, include=("/big",))
    _, unbounded = crawl_site(root, [seed], tmp_path / "all", warc_files=1, progress=False)
    _, bounded = crawl_site(root, [seed], tmp_path / "some", warc_files=1, quota_kb=60, progress=False)
    assert unbounded[0]["html_pages"] == 31
    assert 2 <= bounded[0]["html_pages"] < 10


def test_missing_wget_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no wget, no apt-get
    with pytest.raises(RuntimeError, match="^wget not found"):
        crawl_seed("http://127.0.0.1:9", Seed("/", "en", 1), tmp_path / "seed", quota_kb=0, timeout_s=5)


def test_missing_apt_get_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match="^apt-get not found.*debian-handbook"):
        fetch_packages(["debian-handbook"], tmp_path / "cache", progress=False)
