"""Build data/align/instructions.jsonl: a small instruction set from the bundled sample crawl.

    .venv/bin/python data/align/make_instructions.py            # rewrites data/align/instructions.jsonl

No downloads: every example is made from the pages of data/sample-crawl (Debian documentation,
see data/sample-crawl/PROVENANCE.md for the packages and licences), read with the project's own
WARC reader and text extraction. Deterministic: the same crawl gives the same file, byte for byte.

Three tasks whose answers are in (or follow from) the question, so a model of a few million
parameters can learn them in minutes, and whose answers are short, so it learns above all the
format: answer, then end the turn. Each task is written in one of the three data shapes sft reads:
- "Which language is this text written in?" + a snippet → "German." (Alpaca: instruction, input, output);
- "What is the first sentence of this text?" + a paragraph → that sentence (prompt/completion);
- "Which document does this page belong to?" + a snippet → the collection's name, e.g. "The Debian
  Administrator's Handbook." (chat messages, with a system message).
The language and collection come from the page's URL (the crawl's site layout), not from a model.
"""
from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from pipeline.html_text import ExtractLimits, html_to_text  # noqa: E402
from pipeline.warc_reader import iter_html_records  # noqa: E402

CRAWL = REPO / "data" / "sample-crawl"
OUT = Path(__file__).resolve().parent / "instructions.jsonl"
LANGUAGES = {"en": "English", "de": "German", "fr": "French", "es": "Spanish", "it": "Italian", "pt": "Portuguese",
             "pt-BR": "Portuguese", "ru": "Russian", "ja": "Japanese", "ja-JP": "Japanese", "zh": "Chinese",
             "zh-CN": "Chinese", "zh_CN": "Chinese", "zh-TW": "Chinese", "ar": "Arabic", "ar-EG": "Arabic"}
COLLECTIONS = {"handbook": "The Debian Administrator's Handbook", "install": "the Debian installation guide",
               "python": "the Python 3.11 documentation", "libreoffice": "the LibreOffice help",
               "books": "a Jane Austen novel"}
SNIPPET_CHARS = 160  # examples stay well inside the tiny model's 256-token window
SEED = 15


def page_facts(url: str) -> tuple[str | None, str | None]:
    """(language name, collection name) from the crawl's URL layout, None where it does not say."""
    parts = [p for p in url.split("/", 3)[-1].split("/") if p]
    if not parts:
        return None, None
    top = "handbook" if parts[0] == "mirror" and parts[1:2] == ["handbook"] else parts[0]
    collection = COLLECTIONS.get(top)
    language = None
    if top == "handbook":
        language = LANGUAGES.get(parts[2] if parts[0] == "mirror" and len(parts) > 2 else parts[1] if len(parts) > 1 else "")
    elif top == "install" and len(parts) > 2:
        language = LANGUAGES.get(parts[2])
    elif top == "libreoffice" and len(parts) > 1:
        language = LANGUAGES.get(parts[1])
    elif top in ("python", "books"):
        language = "English"
    return language, collection


def paragraphs(text: str) -> list[str]:
    return [" ".join(p.split()) for p in text.split("\n") if len(p.split()) >= 8 or len(p.strip()) >= 40]


def first_sentence(paragraph: str) -> str | None:
    match = re.match(r"(.{20,160}?[.!?。！？])(\s|$)", paragraph)
    return match.group(1) if match else None


def snippet(paragraph: str) -> str:
    if len(paragraph) <= SNIPPET_CHARS:
        return paragraph
    cut = paragraph[:SNIPPET_CHARS]
    return cut[:cut.rfind(" ")] if " " in cut[40:] else cut


def build() -> list[dict]:
    limits = ExtractLimits()
    language_items, sentence_items, collection_items = [], [], []
    for warc in sorted(CRAWL.glob("*.warc.gz")):
        for record in iter_html_records(warc, lambda reason, message: None):
            if record.get("http_status") != 200:
                continue
            text, problem, _ = html_to_text(record["html"], record.get("content_type", ""), limits)
            if text is None:
                continue
            language, collection = page_facts(record["url"])
            paras = paragraphs(text)[1:6]  # skip the heading line; a few paragraphs per page
            for n, para in enumerate(paras):
                piece = snippet(para)
                if language and n < 2:
                    language_items.append({"instruction": "Which language is this text written in?",
                                           "input": piece, "output": f"{language}."})
                if collection and n == 0:
                    collection_items.append({"messages": [
                        {"role": "system", "content": "You answer questions about documentation pages."},
                        {"role": "user", "content": f"Which document does this page belong to?\n\n{piece}"},
                        {"role": "assistant", "content": collection[0].upper() + collection[1:] + "."}]})
                sentence = first_sentence(para)
                if sentence and len(para) <= 2 * SNIPPET_CHARS and language == "English":
                    sentence_items.append({"prompt": f"What is the first sentence of this text?\n\n{para}",
                                           "completion": sentence})
    rng = random.Random(SEED)
    for items in (language_items, sentence_items, collection_items):
        rng.shuffle(items)
    # Balance: at most 300 language items (the largest group), the rest as found.
    examples = language_items[:300] + sentence_items[:150] + collection_items[:150]
    rng.shuffle(examples)
    return examples


def main() -> None:
    examples = build()
    with open(OUT, "w", encoding="utf-8") as f:
        for example in examples:
            f.write(json.dumps(example, ensure_ascii=False) + "\n")
    print(f"{len(examples)} examples → {OUT.relative_to(REPO)}", file=sys.stderr)


if __name__ == "__main__":
    main()
