"""Why the extract stage uses Resiliparse: docs/s per core against trafilatura on the same real
pages, a quality spot check on five of them, and how long html_to_text takes on hostile input.

Pages: HTML from Debian documentation packages (human-written, several languages, DocBook and
Sphinx layouts with navigation and footers). Fetch them once:

    mkdir -p /tmp/debdocs && cd /tmp/debdocs && apt-get download debian-handbook \
        python3.11-doc debian-reference-en developers-reference debian-policy debian-faq \
        && for deb in *.deb; do dpkg-deb -x "$deb" x; done

`compare` needs trafilatura, which must stay out of .venv, so it runs from a throwaway venv:

    python3 -m venv /tmp/trafi && /tmp/trafi/bin/pip install trafilatura==2.3.1 \
        resiliparse==2.0.1 lxml_html_clean==0.4.6
    PYTHONPATH=. /tmp/trafi/bin/python benchmarks/extract_choice.py compare --root /tmp/debdocs/x

`guards` needs only the project venv:

    .venv/bin/python benchmarks/extract_choice.py guards
"""
from __future__ import annotations

import argparse
import hashlib
import random
import statistics
import time
from collections import Counter, defaultdict
from pathlib import Path

from pipeline.html_text import ExtractLimits, decode_html, extract_main_text, html_to_text

# Five pages to read by eye: a sentence of the main text that must survive, and navigation /
# footer strings that must not. Paths are relative to --root.
SPOT_CHECKS = [
    ("usr/share/doc/python3.11/html/library/getpass.html",
     "Prompt the user for a password without echoing.",
     ["Previous topic", "Report a Bug", "© Copyright", "Quick search"]),
    ("usr/share/developers-reference/scope.html",
     "it is not what is called a normative document",
     ["Previous topic", "Show Source", "© Copyright", "Navigation"]),
    ("usr/share/doc/debian/FAQ/basic-defs.en.html",
     "The project name is pronounced Deb'-ee-en",
     ["Prev\t", "The Debian GNU/Linux FAQ", "Chapter 2. Getting and installing"]),
    ("usr/share/doc/debian-handbook/html/de-DE/sect.apt-get.html",
     "Logic patterns can be combined with other packages to form more complex expressions.",
     ["Zurück", "Weiter", "Download the ebook", "Nach oben"]),
    ("usr/share/doc/debian-handbook/html/zh-CN/sect.who-is-this-book-for.html",
     "亦将发现本书可助其一臂之力",
     ["上一页", "下一页", "Download the ebook", "Product Site"]),
]


def package_of(path: Path, root: Path) -> str:
    parts = path.relative_to(root).parts  # usr/share/[doc/]<package>/...
    return parts[3] if parts[2] == "doc" else parts[2]


def sample_pages(root: Path, n: int, seed: int) -> list[Path]:
    """Round-robin over packages so the few big manuals don't crowd out the small ones;
    identical files (symlinked language variants) are counted once."""
    by_package: dict[str, list[Path]] = defaultdict(list)
    seen: set[bytes] = set()
    for path in sorted(root.rglob("*.html")):
        if not path.is_file():
            continue
        digest = hashlib.sha1(path.read_bytes()).digest()
        if digest in seen:
            continue
        seen.add(digest)
        by_package[package_of(path, root)].append(path)
    rng = random.Random(seed)
    queues = [rng.sample(files, len(files)) for _, files in sorted(by_package.items())]
    picked: list[Path] = []
    while len(picked) < n and any(queues):
        for queue in queues:
            if queue and len(picked) < n:
                picked.append(queue.pop())
    return picked


def extractors() -> dict:
    import trafilatura

    return {
        "resiliparse (extract_main_text)": extract_main_text,
        # As datatrove (FineWeb) calls it.
        "trafilatura 2.3.1 (precision)": lambda html: trafilatura.extract(
            html, favor_precision=True, include_comments=False, deduplicate=True) or "",
        "trafilatura 2.3.1 (defaults)": lambda html: trafilatura.extract(html) or "",
    }


def time_extractor(extract, pages: list[str]) -> dict:
    for page in pages[:5]:  # warm up imports and caches
        extract(page)
    per_doc = []
    chars = empty = 0
    cpu_start = time.process_time()
    for page in pages:
        start = time.process_time()
        text = extract(page)
        per_doc.append(time.process_time() - start)
        chars += len(text)
        empty += not text.strip()
    cpu = time.process_time() - cpu_start
    return {
        "docs_per_s": len(pages) / cpu,
        "median_ms": 1000 * statistics.median(per_doc),
        "max_ms": 1000 * max(per_doc),
        "chars": chars,
        "empty": empty,
    }


def compare(root: Path, n: int, seed: int) -> None:
    paths = sample_pages(root, n, seed)
    raw = [p.read_bytes() for p in paths]
    pages = [decode_html(data, "")[0] for data in raw]
    megabytes = sum(map(len, raw)) / 1e6
    packages = Counter(package_of(p, root) for p in paths)
    print(f"{len(pages)} pages, {megabytes:.1f} MB, from {root}: {dict(sorted(packages.items()))}\n")

    print("| extractor | docs/s per core | MB/s | median ms/doc | max ms/doc | text chars | empty |")
    print("|---|---|---|---|---|---|---|")
    limits = ExtractLimits()
    rows = dict(extractors())
    rows["ours end to end (html_to_text on bytes)"] = None
    for name, extract in rows.items():
        if extract is None:  # guards + decoding + extraction, as the stage runs it
            stats = time_extractor(lambda data: html_to_text(data, "", limits)[0] or "", raw)
        else:
            stats = time_extractor(extract, pages)
        mb_per_s = megabytes * stats["docs_per_s"] / len(pages)
        print(f"| {name} | {stats['docs_per_s']:.0f} | {mb_per_s:.1f} | {stats['median_ms']:.1f} "
              f"| {stats['max_ms']:.0f} | {stats['chars']:,} | {stats['empty']} |")
    drops = Counter(html_to_text(data, "", limits)[1] for data in raw)
    print(f"\nhtml_to_text outcomes: {dict(drops)} (None = kept)")

    print("\nSpot check: main sentence kept? boilerplate left?")
    for relative, sentence, boilerplate in SPOT_CHECKS:
        page = decode_html((root / relative).read_bytes(), "")[0]
        print(f"\n## {relative}")
        for name, extract in extractors().items():
            text = extract(page)
            left = [b for b in boilerplate if b in text]
            print(f"- {name}: {len(text)} chars, main kept: {sentence in text}, "
                  f"boilerplate left: {left or 'none'}")
            print(f"    starts: {text[:90]!r}")
            print(f"    ends:   {text[-90:]!r}")


def hostile_pages() -> dict[str, bytes]:
    paragraph = b"<p>" + b"lorem ipsum dolor sit amet " * 20 + b"</p>\n"
    limits = ExtractLimits()
    return {
        "300k nested <div>": b"<html><body>" + b"<div>" * 300_000 + b"x" + b"</div>" * 300_000,
        "50 MB of paragraphs": b"<html><body>" + paragraph * (50 * 2**20 // len(paragraph)),
        "4 MB of paragraphs (just under cap)":
            b"<html><body>" + paragraph * (limits.max_bytes // len(paragraph) - 1),
        "4 MB of random bytes": random.Random(0).randbytes(limits.max_bytes - 1),
        "1M unclosed <b>": b"<html><body>" + b"<b>x" * 1_000_000,
        "199k unclosed <b> (just under cap)": b"<html><body>" + b"<b>x" * 199_990,
        "99k flat <div>": b"<html><body>" + b"<div>word</div>" * 99_000,
        "990 nested <div> (just under cap)": b"<html><body>" + b"<div>x" * 990 + b"</div>" * 990,
        "50k nested <div>": b"<html><body>" + b"<div>" * 50_000 + b"x" + b"</div>" * 50_000,
        "300 <div> around 60k tags": b"<html><body>" + b"<div>" * 300
            + b"<span>word</span> " * 30_000 + b"</div>" * 300,
        "25 <div> around 198k tags (just under work cap)": b"<html><body>" + b"<div>" * 25
            + b"<span>word</span> " * 99_000 + b"</div>" * 25,
    }


def guards() -> None:
    limits = ExtractLimits()
    print("| input | size MiB | outcome | wall s |")
    print("|---|---|---|---|")
    for name, page in hostile_pages().items():
        start = time.perf_counter()
        text, reason, _ = html_to_text(page, "", limits)
        seconds = time.perf_counter() - start
        outcome = reason or f"kept ({len(text):,} chars)"
        print(f"| {name} | {len(page) / 2**20:.1f} | {outcome} | {seconds:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    compare_args = sub.add_parser("compare", help="resiliparse vs trafilatura on real pages")
    compare_args.add_argument("--root", type=Path, default=Path("/tmp/debdocs/x"))
    compare_args.add_argument("--n", type=int, default=500)
    compare_args.add_argument("--seed", type=int, default=0)
    sub.add_parser("guards", help="html_to_text on pathological payloads")
    args = parser.parse_args()
    if args.command == "compare":
        compare(args.root, args.n, args.seed)
    else:
        guards()


if __name__ == "__main__":
    main()
