"""Build a real web crawl, offline, from Debian documentation packages.

The pipeline needs WARC files that look like a crawl of the web: pages written by people in
many languages, navigation boilerplate, near-duplicate pages, directory listings, redirects,
404s, stylesheets and images. Debian ships exactly that as documentation packages, under
free licences, so we:

1. `apt-get download` the packages into a cache and unpack them with `dpkg-deb -x`;
2. lay them out as one web site (plus a mirror of the handbook served as XHTML, per-arch
   copies of the installation guide, Jane Austen's novels as HTML chapters, and dictionary
   text served as text/plain);
3. serve the site with `python -m http.server` on 127.0.0.1;
4. crawl it with wget (`--recursive --warc-file`), one wget run per seed page, each bounded
   by depth, a byte quota and a timeout;
5. concatenate the per-seed WARCs into `warc_files` shards of similar size (a .warc.gz is a
   sequence of gzip members, so concatenation gives a valid WARC).

Run: `python -m pipeline.sample_crawl --small data/sample-crawl`.
"""
from __future__ import annotations

import argparse
import dataclasses
import gzip
import html
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from pipeline.errors import check_range
from pipeline.knobs import help_of, knob

USER_AGENT = "scratchlm-sample-crawl/0.1 (+offline; wget)"
# The crawl fetches page requisites (CSS, small icons) so the WARCs hold non-HTML responses,
# but skips what only costs bytes: scripts, fonts, screenshots, archives, markup sources.
REJECT_SUFFIXES = "js,json,woff,woff2,ttf,eot,otf,svg,ico,jpg,jpeg,gif,webp,mp4,webm,gz,bz2,xz,zip,pdf,epub,tex"
REJECT_REGEX = r"/(_sources|_downloads|_images)/|/handbook/[^/]+/images/|/icon-themes/|/screenshots/"
OK_WGET_CODES = {0, 8}  # 8: the server answered some request with an error (a 404) — normal

DEFAULT_PACKAGES = [
    "debian-handbook",
    "installation-guide-amd64",
    "installation-guide-i386",
    "python3.11-doc",
    "linux-doc-6.1",
    "libreoffice-help-common",
    "libreoffice-help-de",
    "libreoffice-help-fr",
    "libreoffice-help-es",
    "libreoffice-help-it",
    "libreoffice-help-ja",
    "libreoffice-help-ru",
    "libreoffice-help-zh-cn",
    "libreoffice-help-pt-br",
    "r-cran-janeaustenr",
    "dict-gcide",
]


@dataclass
class SampleCrawlConfig:
    packages: list[str] = knob(DEFAULT_PACKAGES, "Debian packages whose documentation becomes the crawled site.")
    languages: list[str] = knob([], "Language codes (ISO 639-1, e.g. de, ja, zh) to lay out; empty keeps every language.")
    max_pages: int = knob(20000, "Stop starting new seeds once this many HTML pages were fetched.")
    depth: int = knob(3, "Link depth wget follows from each seed page (--level).")
    seed_quota_kb: int = knob(16384, "Bytes (KiB) wget may download per seed before it stops (--quota); 0: no limit.")
    warc_files: int = knob(8, "Number of WARC files the crawl is split into.")
    mirror_languages: list[str] = knob(["en", "fr"], "Handbook languages also served as an XHTML mirror with another navigation header.")
    book_chapters: int = knob(0, "Chapters per Jane Austen novel to publish; 0: all.")
    dictionary_pages: int = knob(40, "Plain-text pages of GCIDE dictionary entries to publish.")
    wget_timeout_s: int = knob(900, "Wall-clock limit for one wget run (one seed), in seconds.", in_key=False)
    cache_dir: str = knob(
        str(Path.home() / ".cache" / "scratchlm" / "debian-docs"),
        "Where downloaded .deb files and their unpacked trees are kept.",
        in_key=False,
    )

    def check(self) -> None:
        check_range(self, ("max_pages", "warc_files", "wget_timeout_s"), low=1)
        check_range(self, ("depth", "seed_quota_kb", "book_chapters", "dictionary_pages"), low=0)

    @classmethod
    def small(cls) -> "SampleCrawlConfig":
        """The committed sample (data/sample-crawl): a few MB, 10 languages, 4 WARC files."""
        return cls(
            packages=[
                "debian-handbook",
                "installation-guide-amd64",
                "installation-guide-i386",
                "python3.11-doc",
                "libreoffice-help-common",
                "libreoffice-help-de",
                "libreoffice-help-ja",
                "r-cran-janeaustenr",
                "dict-gcide",
            ],
            languages=["en", "de", "fr", "es", "it", "pt", "ru", "ja", "zh", "ar"],
            max_pages=1500,
            depth=1,
            seed_quota_kb=160,
            warc_files=4,
            mirror_languages=["en", "fr"],
            book_chapters=2,
            dictionary_pages=3,
        )


@dataclass(frozen=True)
class Seed:
    """One wget run: where it starts, how deep it goes, which directories it may enter."""

    path: str  # URL path on the local server
    language: str  # what the pages under this seed are written in ("und": mixed/unknown)
    depth: int
    include: tuple[str, ...] = ()  # wget --include-directories; empty: --no-parent only
    exclude: tuple[str, ...] = ()  # wget --exclude-directories


@dataclass
class Package:
    name: str
    version: str
    deb: Path
    root: Path  # the unpacked tree (what dpkg-deb -x wrote)


# ---------------------------------------------------------------------------------------------
# 1. Packages


def _run(cmd: list[str], what: str, **kwargs) -> subprocess.CompletedProcess:
    if shutil.which(cmd[0]) is None:
        raise RuntimeError(f"{cmd[0]} not found on PATH: needed to {what}")
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("E:")] or lines[-1:] or ["(no output)"]
        raise RuntimeError(f"{' '.join(cmd[:3])} failed (exit {proc.returncode}) while trying to {what}: {errors[0]}")
    return proc


def _cached_deb(cache: Path, name: str) -> Path | None:
    debs = sorted(cache.glob(f"{name}_*.deb"), key=lambda p: p.stat().st_mtime)
    return debs[-1] if debs else None


def fetch_packages(names: list[str], cache_dir: Path, progress: bool = True) -> list[Package]:
    """Download (once) and unpack Debian packages; nothing is installed."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    missing = [n for n in names if _cached_deb(cache_dir, n) is None]
    if missing:
        _say(progress, f"apt-get download {' '.join(missing)}")
        _run(["apt-get", "download", *missing], f"download the Debian packages {', '.join(missing)}", cwd=cache_dir)
    packages = []
    for name in names:
        deb = _cached_deb(cache_dir, name)
        if deb is None:
            raise RuntimeError(f"apt-get download {name} left no {name}_*.deb in {cache_dir}")
        version = _run(["dpkg-deb", "--field", str(deb), "Version"], f"read the version of {deb}").stdout.strip()
        root = cache_dir / "unpacked" / deb.stem
        if not (root / ".unpacked").exists():
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            _run(["dpkg-deb", "-x", str(deb), str(root)], f"unpack {deb.name}")
            (root / ".unpacked").touch()
        packages.append(Package(name, version, deb, root))
    return packages


# ---------------------------------------------------------------------------------------------
# 2. Site layout. Each layout function puts one package's pages under `site` and returns the
# seeds that crawl them.


def primary_language(code: str) -> str:
    """'pt-BR' / 'zh_CN' / 'en' -> 'pt' / 'zh' / 'en'."""
    return re.split(r"[-_]", code)[0].lower()


def _wanted(code: str, config: SampleCrawlConfig) -> bool:
    return not config.languages or primary_language(code) in {c.lower() for c in config.languages}


def _package_dir(pkg: Package, relative: str) -> Path:
    path = pkg.root / relative
    if not path.exists():
        raise RuntimeError(f"package {pkg.name} {pkg.version} has no /{relative}: its layout is not the one this builder knows")
    return path


def _link_or_copy(src: str, dst: str) -> None:
    # Hard links keep a full-size site cheap; the cache and the work folder share a disk.
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _copy_tree(src: Path, dst: Path, ignore: Callable | None = None) -> None:
    shutil.copytree(
        src, dst, symlinks=False, ignore=ignore, copy_function=_link_or_copy,
        ignore_dangling_symlinks=True, dirs_exist_ok=True,
    )


def _layout_handbook(pkg: Package, site: Path, config: SampleCrawlConfig) -> list[Seed]:
    src = _package_dir(pkg, "usr/share/doc/debian-handbook/html")
    seeds = []
    for lang_dir in sorted(p for p in src.iterdir() if p.is_dir() and (p / "index.html").exists()):
        lang = lang_dir.name
        if not _wanted(lang, config):
            continue
        # Screenshots are never crawled (REJECT_REGEX), so they are not copied either.
        _copy_tree(lang_dir, site / "handbook" / lang, ignore=lambda d, names: ["images"] if d == str(lang_dir) else [])
        seeds.append(Seed(f"/handbook/{lang}/index.html", lang, config.depth, include=(f"/handbook/{lang}",)))
        if primary_language(lang) in {c.lower() for c in config.mirror_languages}:
            seeds.append(_mirror_handbook(lang_dir, site, f"/mirror/handbook/{lang}", lang, pkg.version, config))
    return seeds


_LOCAL_HTML_LINK = re.compile(r'href="([^":/#"]+)\.html(#[^"]*)?"')
_HANDBOOK_BANNER = re.compile(r'<div id="banner">.*?</div><p id="title">.*?</p>', re.S)


def _mirror_handbook(src: Path, site: Path, prefix: str, lang: str, version: str, config: SampleCrawlConfig) -> Seed:
    """The same handbook pages at other URLs, with a different header, served as XHTML.

    Dedup stages should find these as near-duplicates of /handbook/<lang>/ (same body text,
    different boilerplate); `.xhtml` makes http.server answer `application/xhtml+xml`.
    """
    dst = site / prefix.lstrip("/")
    dst.mkdir(parents=True, exist_ok=True)
    _copy_tree(src / "Common_Content", dst / "Common_Content")
    for page in sorted(src.glob("*.html")):
        text = page.read_text(encoding="utf-8")
        original = f"/handbook/{lang}/{page.name}"
        header = (
            '<div id="mirror-header"><p><strong>Free Software Manuals Mirror</strong> — '
            "an unofficial copy of <em>The Debian Administrator's Handbook</em>, synchronised from "
            f"the Debian package debian-handbook {html.escape(version)}.</p><p>"
            '<a href="/">Mirror home</a> | <a href="/mirror/">All mirrored manuals</a> | '
            f'<a href="{original}">Read this page on the main site</a> | '
            '<a href="index.xhtml">Table of contents</a></p></div>'
        )
        text, n = _HANDBOOK_BANNER.subn(lambda m: header, text, count=1)
        if n == 0:  # layout changed upstream: still mirror it, header on top of the body
            text = text.replace("<body>", "<body>" + header, 1)
        text = _LOCAL_HTML_LINK.sub(lambda m: f'href="{m.group(1)}.xhtml{m.group(2) or ""}"', text)
        (dst / (page.stem + ".xhtml")).write_text(text, encoding="utf-8")
    return Seed(f"{prefix}/index.xhtml", lang, config.depth, include=(prefix,))


def _layout_installation_guide(pkg: Package, site: Path, config: SampleCrawlConfig) -> list[Seed]:
    # installation-guide-amd64, -i386, ...: the same manual per architecture, pages nearly equal.
    arch = pkg.name.removeprefix("installation-guide-")
    src = _package_dir(pkg, f"usr/share/doc/{pkg.name}")
    seeds = []
    for lang_dir in sorted(p for p in src.iterdir() if p.is_dir() and (p / "index.html").exists()):
        if _wanted(lang_dir.name, config):
            _copy_tree(lang_dir, site / "install" / arch / lang_dir.name)
            prefix = f"/install/{arch}/{lang_dir.name}"
            seeds.append(Seed(f"{prefix}/index.html", lang_dir.name, config.depth, include=(prefix,)))
    # /install/<arch>/ has no index.html, so the server answers with a directory listing whose
    # links lead to the same index pages under a second URL (…/fr/ as well as …/fr/index.html).
    if seeds:
        seeds.append(Seed(f"/install/{arch}/", "und", 1, include=(f"/install/{arch}",)))
    return seeds


def _layout_python_doc(pkg: Package, site: Path, config: SampleCrawlConfig) -> list[Seed]:
    if not _wanted("en", config):
        return []
    version = pkg.name.removeprefix("python").removesuffix("-doc")  # "3.11"
    _copy_tree(_package_dir(pkg, f"usr/share/doc/python{version}/html"), site / "python",
               ignore=shutil.ignore_patterns("_sources", "_downloads"))
    return [Seed("/python/index.html", "en", config.depth, include=("/python",))]


def _layout_kernel_doc(pkg: Package, site: Path, config: SampleCrawlConfig) -> list[Seed]:
    src = _package_dir(pkg, f"usr/share/doc/{pkg.name}/html")
    _copy_tree(src, site / "kernel", ignore=shutil.ignore_patterns("_sources"))
    seeds = []
    if _wanted("en", config):
        seeds.append(Seed("/kernel/index.html", "en", config.depth, include=("/kernel",), exclude=("/kernel/translations",)))
    for index in sorted((site / "kernel" / "translations").glob("*/index.html")):
        code = index.parent.name
        if _wanted(code, config):
            seeds.append(Seed(f"/kernel/translations/{code}/index.html", code, config.depth,
                              include=(f"/kernel/translations/{code}", "/kernel/_static")))
    return seeds


def _layout_libreoffice_help(pkg: Package, site: Path, config: SampleCrawlConfig) -> list[Seed]:
    help_root = _package_dir(pkg, "usr/share/libreoffice/help")
    if pkg.name == "libreoffice-help-common":
        # Stylesheets and images shared by every language; each language links to them below.
        _copy_tree(help_root, site / "libreoffice" / "_common", ignore=shutil.ignore_patterns("icon-themes", "screenshots"))
        return []
    seeds = []
    for lang_dir in sorted(p for p in help_root.iterdir() if p.is_dir() and (p / "text").is_dir()):
        code = lang_dir.name
        if not _wanted(code, config):
            continue
        # Pages say <base href="../../../"> and link to "<code>/text/…", so each language gets
        # its own help root: /libreoffice/<code>/ holding the shared files and <code>/text/.
        root = site / "libreoffice" / code
        _copy_tree(lang_dir, root / code)
        common = site / "libreoffice" / "_common"
        if common.exists():
            for item in common.iterdir():
                if not (root / item.name).exists():
                    (root / item.name).symlink_to(Path("..") / "_common" / item.name)
        start = f"/libreoffice/{code}/{code}/text/swriter/main0000.html"
        seeds.append(Seed(start, code, max(config.depth, 2), include=(f"/libreoffice/{code}",)))
    return seeds


def read_r_character_vectors(rdb: Path) -> Iterator[list[str]]:
    """The character vectors in an R lazy-load database (`data/Rdata.rdb`).

    The .rdb is a run of entries, each a 4-byte length and a zlib stream holding one object in
    R's XDR serialisation. janeaustenr stores each novel as a character vector (one element per
    line of text); anything else is skipped.
    """
    blob = rdb.read_bytes()
    pos = 0
    while pos + 4 < len(blob):
        inflater = zlib.decompressobj()
        try:
            data = inflater.decompress(blob[pos + 4:])
        except zlib.error as error:
            raise RuntimeError(f"{rdb}: entry at byte {pos} is not zlib data ({error})") from None
        pos = len(blob) - len(inflater.unused_data)
        try:
            lines = _character_vector(data)
        except (struct.error, IndexError):
            raise RuntimeError(f"{rdb}: entry ending at byte {pos} is truncated R data") from None
        if lines is not None:
            yield lines


def _character_vector(data: bytes) -> list[str] | None:
    """One serialised R object → its lines if it is a character vector, else None."""
    if not data.startswith(b"X\n"):
        return None
    # Header: format "X\n", version, R version, min R version, then (v3) the native encoding.
    (version,) = struct.unpack(">i", data[2:6])
    at = 14
    if version == 3:
        (enc_len,) = struct.unpack(">i", data[at:at + 4])
        at += 4 + enc_len
    flags, length = struct.unpack(">ii", data[at:at + 8])
    at += 8
    if flags & 0xFF != 16:  # STRSXP
        return None
    lines = []
    for _ in range(length):
        _, n = struct.unpack(">ii", data[at:at + 8])  # CHARSXP flags, byte length (-1: NA)
        at += 8
        lines.append("" if n < 0 else data[at:at + n].decode("utf-8", "replace"))
        at += max(n, 0)
    return lines


_CHAPTER = re.compile(r"^\s*chapter\s+([ivxlc]+|\d+)\.?\s*$", re.I)


def _paragraphs_html(lines: list[str]) -> str:
    paragraphs, current = [], []
    for line in lines + [""]:
        if line.strip():
            current.append(line.strip())
        elif current:
            text = html.escape(" ".join(current))
            paragraphs.append("<p>" + re.sub(r"_([^_]+)_", r"<em>\1</em>", text) + "</p>")
            current = []
    return "\n".join(paragraphs)


def _austen_page(title: str, crumbs: str, body: str, prev_next: str = "") -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)} — The Austen Shelf</title>\n"
        '<link rel="stylesheet" href="/books/austen/shelf.css">\n</head>\n<body>\n'
        '<header class="site"><a href="/books/austen/index.html">The Austen Shelf</a> · '
        '<a href="/">Home</a> · <span>Public-domain novels, one chapter per page</span></header>\n'
        f'<nav class="crumbs">{crumbs}</nav>\n<main>\n<h1>{html.escape(title)}</h1>\n{body}\n</main>\n'
        f'<nav class="pager">{prev_next}</nav>\n'
        '<footer>Text: Project Gutenberg, via the janeaustenr R package (Debian r-cran-janeaustenr). '
        "Public domain. Found a typo? There is no one to tell.</footer>\n</body>\n</html>\n"
    )


def _layout_janeaustenr(pkg: Package, site: Path, config: SampleCrawlConfig) -> list[Seed]:
    if not _wanted("en", config):
        return []
    rdb = _package_dir(pkg, "usr/lib/R/site-library/janeaustenr/data/Rdata.rdb")
    shelf = site / "books" / "austen"
    shelf.mkdir(parents=True, exist_ok=True)
    (shelf / "shelf.css").write_text("body{max-width:40em;margin:auto;font-family:serif}header,nav,footer{font-size:90%}\n")
    books = []
    for lines in read_r_character_vectors(rdb):
        starts = [i for i, line in enumerate(lines) if _CHAPTER.match(line)]
        if not starts:
            continue
        title = next(line.strip() for line in lines if line.strip()).title()
        slug = re.sub(r"[^a-z]+", "-", title.lower()).strip("-")
        chapters = list(zip(starts, starts[1:] + [len(lines)]))
        if config.book_chapters:
            chapters = chapters[: config.book_chapters]
        book_dir = shelf / slug
        book_dir.mkdir(exist_ok=True)
        crumbs = f'<a href="/books/austen/index.html">Shelf</a> › <a href="index.html">{html.escape(title)}</a>'
        for number, (start, end) in enumerate(chapters, 1):
            pager = []
            if number > 1:
                pager.append(f'<a rel="prev" href="chapter-{number - 1:03d}.html">Previous chapter</a>')
            if number < len(chapters):
                pager.append(f'<a rel="next" href="chapter-{number + 1:03d}.html">Next chapter</a>')
            page = _austen_page(f"{title}, Chapter {number}", crumbs, _paragraphs_html(lines[start + 1:end]), " | ".join(pager))
            (book_dir / f"chapter-{number:03d}.html").write_text(page, encoding="utf-8")
        toc = "\n".join(f'<li><a href="chapter-{n:03d}.html">Chapter {n}</a></li>' for n in range(1, len(chapters) + 1))
        (book_dir / "index.html").write_text(_austen_page(title, crumbs, f"<ol>\n{toc}\n</ol>"), encoding="utf-8")
        books.append((slug, title))
    if not books:
        raise RuntimeError(f"{rdb}: no novel with chapter headings found in this R data file")
    shelf_list = "\n".join(f'<li><a href="{slug}/index.html">{html.escape(title)}</a></li>' for slug, title in books)
    (shelf / "index.html").write_text(_austen_page("Novels by Jane Austen", "", f"<ul>\n{shelf_list}\n</ul>"), encoding="utf-8")
    # Shelf -> book -> chapter: two links deep whatever the configured depth.
    return [Seed("/books/austen/index.html", "en", max(config.depth, 2), include=("/books/austen",))]


_DICTD_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _dictd_number(text: str) -> int:
    value = 0
    for char in text:
        value = value * 64 + _DICTD_B64.index(char)
    return value


def _layout_gcide(pkg: Package, site: Path, config: SampleCrawlConfig) -> list[Seed]:
    """Dictionary entries as text/plain pages: responses the HTML ingest has to skip or handle."""
    if not _wanted("en", config) or config.dictionary_pages <= 0:
        return []
    dictd = _package_dir(pkg, "usr/share/dictd")
    entries = []  # (offset, length, headword), in file order
    for line in (dictd / "gcide.index").read_text(encoding="utf-8", errors="replace").splitlines():
        fields = line.split("\t")
        if len(fields) < 3 or not fields[1] or set(fields[1] + fields[2]) - set(_DICTD_B64):
            continue  # not a "headword<TAB>offset<TAB>length" line
        word, offset, length = fields[:3]
        if not word.startswith("00-database"):
            entries.append((_dictd_number(offset), _dictd_number(length), word))
    entries.sort()
    page_bytes = 16 * 1024
    pages, current, size = [], [], 0
    for entry in entries:
        current.append(entry)
        size += entry[1]
        if size >= page_bytes:
            pages.append(current)
            current, size = [], 0
            if len(pages) == config.dictionary_pages:
                break
    if not pages:
        raise RuntimeError(f"{dictd / 'gcide.index'}: no dictionary entries found")
    end = max(off + n for off, n, _ in pages[-1])
    with gzip.open(dictd / "gcide.dict.dz") as f:  # dictzip is gzip with an index in the header
        data = f.read(end)
    out = site / "dictionary" / "gcide"
    out.mkdir(parents=True, exist_ok=True)
    items = []
    for number, page in enumerate(pages, 1):
        text = "\n".join(data[off:off + n].decode("utf-8", "replace").rstrip() + "\n" for off, n, _ in page)
        (out / f"page-{number:03d}.txt").write_text(text, encoding="utf-8")
        items.append(f'<li><a href="page-{number:03d}.txt">{html.escape(page[0][2])} – {html.escape(page[-1][2])}</a></li>')
    index = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>GCIDE — plain-text pages</title></head>\n'
        "<body><h1>The Collaborative International Dictionary of English</h1>\n"
        "<p>Entries in dictionary order, as plain text.</p>\n<ul>\n" + "\n".join(items) + "\n</ul></body></html>\n"
    )
    (out / "index.html").write_text(index, encoding="utf-8")
    return [Seed("/dictionary/gcide/index.html", "en", 1, include=("/dictionary/gcide",))]


def _layout_generic(pkg: Package, site: Path, config: SampleCrawlConfig) -> list[Seed]:
    """Any other package: its /usr/share/doc folder, entered through the directory listing."""
    src = _package_dir(pkg, f"usr/share/doc/{pkg.name}")
    _copy_tree(src, site / "docs" / pkg.name)
    return [Seed(f"/docs/{pkg.name}/", "und", config.depth, include=(f"/docs/{pkg.name}",))]


LAYOUTS: list[tuple[Callable[[str], bool], Callable]] = [
    (lambda n: n == "debian-handbook", _layout_handbook),
    (lambda n: n.startswith("installation-guide-"), _layout_installation_guide),
    (lambda n: re.fullmatch(r"python3\.\d+-doc", n) is not None, _layout_python_doc),
    (lambda n: re.fullmatch(r"linux-doc-[\d.]+", n) is not None, _layout_kernel_doc),
    (lambda n: n.startswith("libreoffice-help-"), _layout_libreoffice_help),
    (lambda n: n == "r-cran-janeaustenr", _layout_janeaustenr),
    (lambda n: n == "dict-gcide", _layout_gcide),
]


def _interleave(groups: list[list[Seed]]) -> list[Seed]:
    # Round-robin across packages, so a max_pages cut still leaves every source represented.
    out = []
    for i in range(max((len(g) for g in groups), default=0)):
        out.extend(g[i] for g in groups if i < len(g))
    return out


def layout_site(packages: list[Package], site: Path, config: SampleCrawlConfig) -> list[Seed]:
    """Build the web site under `site`; return the seeds to crawl it, in crawl order."""
    # libreoffice-help-common first: the language packages link to its files.
    ordered = sorted(packages, key=lambda p: p.name != "libreoffice-help-common")
    groups = []
    for pkg in ordered:
        layout = next((fn for matches, fn in LAYOUTS if matches(pkg.name)), _layout_generic)
        groups.append(layout(pkg, site, config))
    seeds = _interleave(groups)
    if not seeds:
        raise RuntimeError(f"nothing to crawl: none of {config.packages} has pages in languages {config.languages}")
    sections = sorted(p.name for p in site.iterdir() if p.is_dir())
    # No trailing slash: the server answers 301 to ".../", so the crawl holds redirects too.
    links = "\n".join(f'<li><a href="/{name}">{name}</a></li>' for name in sections)
    (site / "index.html").write_text(
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>Local documentation mirror</title></head>\n'
        "<body><h1>Local documentation mirror</h1><p>Manuals and books from Debian packages.</p>\n"
        f"<ul>\n{links}\n</ul></body></html>\n",
        encoding="utf-8",
    )
    # The home page and the section directory listings it links to.
    return [Seed("/", "und", 1)] + seeds


# ---------------------------------------------------------------------------------------------
# 3-4. Serve and crawl


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve_directory(site: Path, startup_timeout_s: float = 15.0) -> Iterator[str]:
    """Serve `site` with `python -m http.server` on 127.0.0.1; yield its base URL."""
    port = _free_port()
    log = tempfile.TemporaryFile()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(site), str(port)],
        stdout=log, stderr=log,
    )
    try:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            if server.poll() is not None:
                log.seek(0)
                tail = log.read().decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
                raise RuntimeError(f"http.server for {site} exited at start-up: {tail[0]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"http.server for {site} did not accept connections within {startup_timeout_s:.0f} s")
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def wget_command(url: str, seed: Seed, warc_prefix: Path, download_dir: Path, quota_kb: int) -> list[str]:
    cmd = [
        "wget", "--recursive", f"--level={seed.depth}", "--page-requisites",
        "-e", "robots=off",  # our own server; nothing to be polite to
        f"--reject={REJECT_SUFFIXES}", f"--reject-regex={REJECT_REGEX}",
        "--timeout=10", "--tries=2", "--waitretry=1",
        f"--user-agent={USER_AGENT}", "--no-verbose",
        f"--directory-prefix={download_dir}", "--delete-after",
        f"--warc-file={warc_prefix}", "--no-warc-keep-log", f"--warc-tempdir={download_dir}",
    ]
    # Without --span-hosts wget never leaves 127.0.0.1:<port>; these keep it inside the seed's part
    # of the site (--no-parent alone would forbid the sibling folders a manual links to).
    cmd.append(f"--include-directories={','.join(seed.include)}" if seed.include else "--no-parent")
    if seed.exclude:
        cmd.append(f"--exclude-directories={','.join(seed.exclude)}")
    if quota_kb > 0:
        cmd.append(f"--quota={quota_kb}k")
    return cmd + [url]


def crawl_seed(base_url: str, seed: Seed, warc_prefix: Path, *, quota_kb: int, timeout_s: float,
               on_fetch: Callable[[str], None] | None = None) -> Path:
    """Run wget for one seed; return the .warc.gz it wrote."""
    if shutil.which("wget") is None:
        raise RuntimeError("wget not found on PATH: the sample crawl is made by wget (apt-get install wget)")
    download_dir = Path(str(warc_prefix) + ".files")
    download_dir.mkdir(parents=True, exist_ok=True)
    # Relative paths, run from the seed's folder: the arguments wget records in the WARC's
    # warcinfo then name no temporary folder of the machine that built it.
    cmd = wget_command(base_url + seed.path, seed, Path(warc_prefix.name), Path(download_dir.name), quota_kb)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                            cwd=warc_prefix.parent)
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        proc.kill()

    timer = threading.Timer(timeout_s, kill)
    timer.start()
    tail: list[str] = []
    try:
        for line in proc.stdout:
            tail = (tail + [line.rstrip()])[-5:]
            if on_fetch is not None and " URL:" in line:
                on_fetch(line.split(" URL:", 1)[1].split(" ", 1)[0])
        code = proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(download_dir, ignore_errors=True)
    if timed_out.is_set():
        raise RuntimeError(f"wget did not finish crawling {seed.path} within {timeout_s:.0f} s (--wget-timeout-s)")
    if code not in OK_WGET_CODES:
        raise RuntimeError(f"wget failed on {seed.path} (exit {code}): {' / '.join(t for t in tail if t)}")
    warc = Path(str(warc_prefix) + ".warc.gz")
    if not warc.exists():
        raise RuntimeError(f"wget wrote no WARC for {seed.path} (expected {warc})")
    return warc


def count_responses(warc: Path) -> dict[str, int]:
    """Response records in a WARC: all, HTML pages with status 200, and everything else."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    counts = {"responses": 0, "html_pages": 0}
    with open(warc, "rb") as f:
        for record in ArchiveIterator(f, record_types=WarcRecordType.response, parse_http=True):
            counts["responses"] += 1
            ctype = (record.http_content_type or "").lower()
            if record.http_headers.status_code == 200 and ctype in ("text/html", "application/xhtml+xml"):
                counts["html_pages"] += 1
    return counts


def crawl_site(site: Path, seeds: list[Seed], out_dir: Path, *, warc_files: int, quota_kb: int = 0,
               max_pages: int = 0, timeout_s: float = 900, progress: bool = True,
               name: str = "crawl") -> tuple[list[Path], list[dict]]:
    """Serve `site`, crawl each seed with wget, and write `warc_files` shards to `out_dir`.

    Returns the shard paths and one record per seed crawled (language, shard, counts). Seeds are
    crawled in order; once `max_pages` HTML pages are in, the remaining seeds are skipped.
    """
    if warc_files < 1:
        raise RuntimeError(f"warc_files must be at least 1, got {warc_files}")
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="seeds-", dir=out_dir))
    shard_paths = [out_dir / f"{name}-{i:05d}.warc.gz" for i in range(warc_files)]
    shard_bytes = [0] * warc_files
    for path in shard_paths:
        path.write_bytes(b"")
    report, total_pages, fetched = [], 0, [0]

    def on_fetch(url: str) -> None:
        fetched[0] += 1
        if progress and fetched[0] % 200 == 0:
            _say(True, f"  … {fetched[0]} files fetched")

    complete = False
    try:
        with serve_directory(site) as base_url:
            for number, seed in enumerate(seeds):
                if max_pages and total_pages >= max_pages:
                    _say(progress, f"max_pages={max_pages} reached; skipping {len(seeds) - number} seeds")
                    break
                warc = crawl_seed(base_url, seed, work / f"seed-{number:05d}", quota_kb=quota_kb,
                                  timeout_s=timeout_s, on_fetch=on_fetch)
                counts = count_responses(warc)
                # Greedy: each seed's records go to the smallest shard so far, so shards are even.
                shard = min(range(warc_files), key=lambda i: (shard_bytes[i], i))
                with open(shard_paths[shard], "ab") as dst, open(warc, "rb") as src:
                    shutil.copyfileobj(src, dst)
                shard_bytes[shard] += warc.stat().st_size
                total_pages += counts["html_pages"]
                report.append({"seed": seed.path, "language": seed.language, "shard": shard_paths[shard].name,
                               "bytes": warc.stat().st_size, **counts})
                warc.unlink()
                _say(progress, f"[{number + 1}/{len(seeds)}] {seed.path}: {counts['html_pages']} pages, "
                               f"{counts['responses']} responses (total {total_pages} pages)")
        complete = True
    finally:
        shutil.rmtree(work, ignore_errors=True)
        written = [p for p, size in zip(shard_paths, shard_bytes) if size > 0 and complete]
        for path in set(shard_paths) - set(written):  # empty shards, or all of a failed crawl
            path.unlink(missing_ok=True)
    return written, report


# ---------------------------------------------------------------------------------------------
# 5. The whole build


def build_sample_crawl(config: SampleCrawlConfig, out_dir: Path, progress: bool = True) -> list[Path]:
    """Download the packages, lay out the site, crawl it; return the WARC files in `out_dir`.

    Also writes `out_dir/crawl-manifest.json` (packages and versions, config, per-seed counts).
    Earlier `crawl-*.warc.gz` files in `out_dir` are replaced.
    """
    out_dir = Path(out_dir)
    cache = Path(config.cache_dir).expanduser()
    packages = fetch_packages(list(config.packages), cache, progress)
    with tempfile.TemporaryDirectory(prefix="site-", dir=cache) as tmp:
        site = Path(tmp) / "site"
        site.mkdir()
        seeds = layout_site(packages, site, config)
        _say(progress, f"site laid out: {len(seeds)} seeds from {len(packages)} packages")
        staging = Path(tmp) / "warcs"
        warcs, report = crawl_site(site, seeds, staging, warc_files=config.warc_files,
                                   quota_kb=config.seed_quota_kb, max_pages=config.max_pages,
                                   timeout_s=config.wget_timeout_s, progress=progress)
        out_dir.mkdir(parents=True, exist_ok=True)
        for old in out_dir.glob("crawl-*.warc.gz"):
            old.unlink()
        final = [Path(shutil.move(str(w), out_dir / w.name)) for w in warcs]
    manifest = {
        "config": dataclasses.asdict(config) | {"cache_dir": None},
        "packages": [{"name": p.name, "version": p.version, "deb": p.deb.name} for p in packages],
        "warcs": [{"file": w.name, "bytes": w.stat().st_size} for w in final],
        "seeds": report,
    }
    (out_dir / "crawl-manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    pages = sum(r["html_pages"] for r in report)
    languages = {primary_language(r["language"]) for r in report if r["html_pages"] and r["language"] != "und"}
    _say(progress, f"done: {pages} HTML pages in {len(languages)} languages, "
                   f"{sum(w.stat().st_size for w in final) / 1e6:.1f} MB in {len(final)} WARC files → {out_dir}")
    return final


def _say(progress: bool, message: str) -> None:
    if progress:
        print(f"sample-crawl: {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.sample_crawl", description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", type=Path, help="Folder for the WARC files.")
    parser.add_argument("--small", action="store_true", help="The committed sample's settings (data/sample-crawl).")
    for field in dataclasses.fields(SampleCrawlConfig):
        flag = "--" + field.name.replace("_", "-")
        if field.default_factory is not dataclasses.MISSING:  # the list knobs
            parser.add_argument(flag, nargs="*", default=None, help=help_of(field))
        else:
            parser.add_argument(flag, type=type(field.default), default=None, help=help_of(field))
    args = parser.parse_args(argv)
    config = SampleCrawlConfig.small() if args.small else SampleCrawlConfig()
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(config) if getattr(args, f.name) is not None}
    config = dataclasses.replace(config, **overrides)
    try:
        build_sample_crawl(config, args.out_dir)
    except RuntimeError as error:
        print(f"sample-crawl: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
