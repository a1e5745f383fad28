"""`scratchlm classify`: the command of the classify stage's artifacts.

flows/cli.py calls `register(app)`. torch is imported inside the command, so `scratchlm --help`
stays fast."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer


def fail(message: str, code: int = 2):
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def classify_command(
    artifact: Path = typer.Argument(..., help="A classify artifact."),
    text: Optional[str] = typer.Argument(None, help="The text to classify [default: stdin]."),
    top: int = typer.Option(1, "--top", help="Print the N most likely labels."),
    as_json: bool = typer.Option(False, "--json", help="Print {\"label\", \"probability\", \"probabilities\"} as JSON."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, mps."),
):
    from tokenizers import Tokenizer

    from model.classify import ClassifyError, encode_texts, load_classifier, predict

    if not artifact.exists():
        fail(f"{artifact}: no such folder")
    if not artifact.is_dir():
        fail(f"{artifact}: a file, not a classify artifact folder")
    if top < 1:
        fail(f"--top: must be at least 1, got {top}")
    if text is None:
        if sys.stdin.isatty():
            fail("give the text as an argument or on stdin")
        text = sys.stdin.read().rstrip("\n")
    if not text.strip():
        fail("the text is empty")
    try:
        classifier, meta = load_classifier(artifact, device)
    except ClassifyError as exc:
        fail(str(exc))
    if not (artifact / "tokenizer.json").is_file():
        fail(f"{artifact}: no tokenizer.json")
    tokenizer = Tokenizer.from_file(str(artifact / "tokenizer.json"))
    probs = predict(classifier, encode_texts(tokenizer, [text], meta.get("max_len", classifier.model.config.block_size)),
                    meta["pad_id"])[0]
    labels = meta["labels"]
    ranked = sorted(range(len(labels)), key=lambda i: -float(probs[i]))
    if as_json:
        typer.echo(json.dumps({"label": labels[ranked[0]], "probability": round(float(probs[ranked[0]]), 6),
                               "probabilities": {labels[i]: round(float(probs[i]), 6) for i in ranked}},
                              ensure_ascii=False))
        return
    for i in ranked[:top]:
        typer.echo(f"{labels[i]}\t{float(probs[i]):.4f}")


def is_classifier(folder: Path) -> bool:
    try:
        return json.loads((folder / "config.json").read_text()).get("kind") == "classifier"
    except (OSError, ValueError, AttributeError):
        return False


def export_classifier(artifact: Path, output: Path, overwrite: bool = False) -> None:
    """`scratchlm export` of a classify artifact: a folder transformers loads as LlamaForSequenceClassification."""
    from model.classify import ClassifyError, export_sequence_classification, load_classifier
    from model.export import ExportError

    try:
        classifier, meta = load_classifier(artifact)
        path = export_sequence_classification(classifier, meta["labels"], artifact / "tokenizer.json", output,
                                              overwrite=overwrite)
    except (ClassifyError, ExportError) as exc:
        fail(str(exc))
    typer.echo(str(path))


def register(app: typer.Typer) -> None:
    app.command("classify", help="Classify a text with a classify artifact: prints the label and its probability "
                                 "(tab-separated; --top N for more labels, --json for all).")(classify_command)
