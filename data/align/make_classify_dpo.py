"""Build the classification and preference sample sets from the bundled sample crawl:

    data/align/classify-train.jsonl, classify-eval.jsonl   {"text", "label"}: which collection a paragraph is from
    data/align/dpo-train.jsonl                              {"prompt", "chosen", "rejected"}

    .venv/bin/python data/align/make_classify_dpo.py          # rewrites the three files

No downloads: every example is made from the pages of data/sample-crawl (Debian 12 documentation
packages: the Debian Administrator's Handbook, the installation guide, the Python 3.11 docs, the
LibreOffice help, Jane Austen's novels; data/sample-crawl/PROVENANCE.md lists their versions and
licences: GPL-2+/CC-BY-SA-3.0, GPL-2, PSF, MPL-2.0, public domain). Pages are read with the
project's own WARC reader and text extraction; labels come from the page's URL (the crawl's site
layout, data/align/make_instructions.page_facts), not from a model. Deterministic: the same crawl
gives the same files, byte for byte.

- classify: a paragraph snippet (the first 160 characters of paragraphs 2-5 of each page, any
  language), labelled with its collection (handbook, install, python, libreoffice, books), at most
  300 per label (60 in the eval file). The classes stay as unbalanced as the crawl otherwise (the
  installation guide and the handbook dominate, the Python docs have a dozen), which is what
  --balance and the majority-class baseline in eval.json are for. 20% of the pages (by a hash of
  the URL, so no page is on both sides) are the eval file.
- dpo: the two questions of the instruction set (make_instructions.py) on other paragraphs than it
  uses, each with the right answer as `chosen` and a wrong one of the same kind as `rejected`:
  "Which language is this text written in?" (a plain string prompt) and "Which document does this
  page belong to?" (chat messages with the same system message as the instruction set).
"""
from __future__ import annotations

import hashlib
import json
import random
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from make_instructions import CRAWL, COLLECTIONS, page_facts, paragraphs, snippet  # noqa: E402

from pipeline.html_text import ExtractLimits, html_to_text  # noqa: E402
from pipeline.warc_reader import iter_html_records  # noqa: E402

SEED = 15
EVAL_PERCENT = 20
MAX_DPO_PAIRS = 400
MAX_PER_LABEL = 300  # the installation guide alone has 1,100 paragraphs in 10 languages
SYSTEM = "You answer questions about documentation pages."  # the instruction set's system message


def collection_label(url: str) -> str | None:
    """handbook / install / python / libreoffice / books, from the URL layout."""
    _, collection = page_facts(url)
    return next((key for key, name in COLLECTIONS.items() if name == collection), None)


def pages():
    """(url, language name, collection key, paragraphs) of every extracted HTML page, in crawl order."""
    limits = ExtractLimits()
    for warc in sorted(CRAWL.glob("*.warc.gz")):
        for record in iter_html_records(warc, lambda reason, message: None):
            if record.get("http_status") != 200:
                continue
            text, _, _ = html_to_text(record["html"], record.get("content_type", ""), limits)
            if text is None:
                continue
            language, _ = page_facts(record["url"])
            yield record["url"], language, collection_label(record["url"]), paragraphs(text)


def is_eval(url: str) -> bool:
    return int(hashlib.sha256(url.encode()).hexdigest()[:8], 16) % 100 < EVAL_PERCENT


def capped(rows: list[dict], limit: int) -> list[dict]:
    """At most `limit` records per label, in order: smaller files, still unbalanced."""
    seen: Counter = Counter()
    kept = []
    for row in rows:
        seen[row["label"]] += 1
        if seen[row["label"]] <= limit:
            kept.append(row)
    return kept


def build() -> tuple[list[dict], list[dict], list[dict]]:
    rng = random.Random(SEED)
    train, evaluation, language_pairs, collection_pairs = [], [], [], []
    all_pages = list(pages())
    languages = sorted({lang for _, lang, _, _ in all_pages if lang})
    for url, language, label, paras in all_pages:
        body = paras[2:6]  # past the heading and the paragraphs the instruction set asks about
        if label:
            target = evaluation if is_eval(url) else train
            target += [{"text": snippet(p), "label": label} for p in body]
        if language and body and len(languages) > 1:
            wrong = rng.choice([lang for lang in languages if lang != language])
            language_pairs.append({"prompt": f"Which language is this text written in?\n\n{snippet(body[0])}",
                                   "chosen": f"{language}.", "rejected": f"{wrong}."})
        if label and len(body) > 1:
            wrong = rng.choice([key for key in COLLECTIONS if key != label])
            name = COLLECTIONS[label]
            collection_pairs.append({
                "prompt": [{"role": "system", "content": SYSTEM},
                           {"role": "user", "content": f"Which document does this page belong to?\n\n{snippet(body[1])}"}],
                "chosen": [{"role": "assistant", "content": name[0].upper() + name[1:] + "."}],
                "rejected": [{"role": "assistant", "content": COLLECTIONS[wrong][0].upper() + COLLECTIONS[wrong][1:] + "."}]})
    for items in (train, evaluation, language_pairs, collection_pairs):
        rng.shuffle(items)
    train, evaluation = capped(train, MAX_PER_LABEL), capped(evaluation, MAX_PER_LABEL * EVAL_PERCENT // 100)
    pairs = language_pairs[:MAX_DPO_PAIRS // 2] + collection_pairs[:MAX_DPO_PAIRS // 2]
    rng.shuffle(pairs)
    return train, evaluation, pairs


def write_jsonl(rows: list[dict], path: Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def main() -> None:
    train, evaluation, pairs = build()
    for rows, name in ((train, "classify-train.jsonl"), (evaluation, "classify-eval.jsonl"), (pairs, "dpo-train.jsonl")):
        write_jsonl(rows, HERE / name)
        print(f"{len(rows)} records → data/align/{name}", file=sys.stderr)
    print("classify labels (train): " + ", ".join(f"{k} {v}" for k, v in Counter(r["label"] for r in train).most_common()),
          file=sys.stderr)


if __name__ == "__main__":
    main()
