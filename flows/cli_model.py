"""`scratchlm generate`, `scratchlm export` and `scratchlm make-benchmark`: the model commands.

flows/cli.py calls `register(app)` (not an import of flows.cli from here: under
`python -m flows.cli` that would be a second copy of the module with its own app). torch is
imported inside the commands, so `scratchlm --help` stays fast."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer



def fail(message: str, code: int = 2):
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _load(checkpoint: Path, device: str = "cpu"):
    from model.checkpoint import CheckpointError, load_model

    if not checkpoint.exists():
        fail(f"{checkpoint}: no such file or folder")
    try:
        model, tokenizer_path, meta = load_model(checkpoint, device)
    except CheckpointError as exc:
        fail(str(exc))
    if tokenizer_path is None:
        fail(f"{checkpoint}: no tokenizer.json beside the weights")
    return model, tokenizer_path, meta


def _device(name: str) -> str:
    import torch

    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


def generate_command(
    checkpoint: Path = typer.Argument(..., help="Pretrain artifact or checkpoint folder."),
    prompt: Optional[str] = typer.Argument(None, help="Text to continue [default: stdin; none: start a new document]."),
    max_new_tokens: int = typer.Option(200, "--max-new-tokens", "-n", help="Tokens to generate at most."),
    temperature: float = typer.Option(0.8, "--temperature", "-t", help="Sampling temperature (0: greedy)."),
    top_k: int = typer.Option(50, "--top-k", help="Sample among the k most likely tokens (0: all)."),
    top_p: float = typer.Option(1.0, "--top-p", help="Sample among the most likely tokens whose probabilities sum to p (1: all)."),
    seed: int = typer.Option(0, "--seed", help="Random seed (the same seed gives the same text)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Recompute the whole sequence at each step (no KV cache)."),
    device: str = typer.Option("auto", "--device", help="auto (cuda if available), cpu, cuda, mps."),
):
    from tokenizers import Tokenizer

    from model.generate import EOT_TOKEN, TextStream, generate_tokens

    if prompt is None and not sys.stdin.isatty():
        prompt = sys.stdin.read()
        prompt = prompt[:-1] if prompt.endswith("\n") else prompt  # `echo text |` adds one
    if temperature < 0 or not 0 < top_p <= 1 or top_k < 0 or max_new_tokens < 1:
        fail("need --temperature >= 0, 0 < --top-p <= 1, --top-k >= 0 and --max-new-tokens >= 1")
    model, tokenizer_path, _ = _load(checkpoint, _device(device))
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    eot = tokenizer.token_to_id(EOT_TOKEN)
    ids = tokenizer.encode(prompt, add_special_tokens=False).ids if prompt else [eot]
    if prompt:
        sys.stdout.write(prompt)
    stream = TextStream(tokenizer)
    try:
        for token in generate_tokens(model, ids, max_new_tokens, temperature, top_k, top_p, seed,
                                     stop_ids=[eot], use_cache=not no_cache):
            sys.stdout.write(stream.push(token))
            sys.stdout.flush()
    except KeyboardInterrupt:
        pass
    sys.stdout.write(stream.flush() + "\n")


def export_command(
    checkpoint: Path = typer.Argument(..., help="Pretrain artifact or checkpoint folder."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder to write (must not exist, unless --overwrite)."),
    format: str = typer.Option("hf", "--format", help="Export format: hf (Hugging Face transformers, Llama)."),
    dtype: str = typer.Option("float32", "--dtype", help="Weight dtype: float32, bfloat16, float16."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output folder."),
):
    from model.export import ExportError, export_hf

    if format != "hf":
        fail(f"--format {format!r}: the only format is hf")
    model, tokenizer_path, _ = _load(checkpoint)
    try:
        path = export_hf(model, tokenizer_path, output, dtype=dtype, overwrite=overwrite)
    except ExportError as exc:
        fail(str(exc))
    typer.echo(str(path))


def make_benchmark_command(
    input: list[Path] = typer.Option(..., "--input", "-i", help="A token artifact (its --split documents, decoded), "
                                                               "or JSONL/Parquet files with a `text` column."),
    output: Path = typer.Option(..., "--output", "-o", help="JSONL file to write."),
    items: int = typer.Option(1000, "--items", help="Items at most."),
    context_words: int = typer.Option(24, "--context-words", help="Words of context (the start of a paragraph)."),
    ending_words: int = typer.Option(12, "--ending-words", help="Words of each ending."),
    choices: int = typer.Option(4, "--choices", help="Endings per item (1 true, the rest from other documents)."),
    per_document: int = typer.Option(1, "--per-document", help="Items per document at most (0: every paragraph "
                                                               "long enough; for a small held-out split)."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    split: str = typer.Option("val", "--split", help="Split of a token artifact to draw from (held out from training: val)."),
    language: Optional[str] = typer.Option(None, "--language", help="Only documents with this `language` (e.g. en)."),
):
    from model.benchmarks import (BenchmarkError, ContinuationTaskConfig, continuation_items,
                                  read_held_out_documents, write_jsonl)

    if items < 1 or context_words < 1 or ending_words < 1 or choices < 2 or per_document < 0:
        fail("need --items >= 1, --context-words >= 1, --ending-words >= 1, --choices >= 2 and --per-document >= 0")
    config = ContinuationTaskConfig(items=items, context_words=context_words, ending_words=ending_words,
                                    choices=choices, per_document=per_document, seed=seed)
    try:
        made = continuation_items(read_held_out_documents(input, split, language), config)
    except BenchmarkError as exc:
        fail(str(exc))
    write_jsonl(made, output)
    typer.echo(f"make-benchmark: {len(made)} items, {choices} endings each", err=True)
    typer.echo(str(output))


HELP = {
    "generate": "Continue a prompt with a pretrained GPT (pretrain artifact or checkpoint folder), "
              "printing tokens as they are produced. The prompt is the argument, or stdin.",
    "export": "Export a pretrained GPT to a folder that transformers loads with no custom code "
              "(AutoModelForCausalLM / AutoTokenizer.from_pretrained): Llama config, safetensors, "
              "tokenizer files. Also what lm-evaluation-harness runs on (see README).",
    "make-benchmark": "Build the crawl-made multiple-choice task (HellaSwag JSONL: ctx, endings, label) "
              "from held-out documents: context = the start of a paragraph, endings = its true "
              "continuation and 3 from other documents. Deterministic for a seed.",
}


def register(app: typer.Typer) -> None:
    app.command("generate", help=HELP["generate"])(generate_command)
    app.command("export", help=HELP["export"])(export_command)
    app.command("make-benchmark", help=HELP["make-benchmark"])(make_benchmark_command)
