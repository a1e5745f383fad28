"""`scratchlm generate`, `chat`, `export`, `serve-model` and `make-benchmark`: the model commands.

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
    format: str = typer.Option("hf", "--format", help="Export format: hf (Hugging Face transformers, Llama; with the "
                                                    "chat template when the tokenizer has chat markers), or peft (an sft "
                                                    "artifact's LoRA adapter, with its base model exported under base/)."),
    dtype: str = typer.Option("float32", "--dtype", help="Weight dtype: float32, bfloat16, float16."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output folder."),
):
    from model.export import ExportError, export_hf, export_peft

    if format not in ("hf", "peft"):
        fail(f"--format {format!r}: choose hf or peft")
    if format == "peft":
        if not checkpoint.exists():
            fail(f"{checkpoint}: no such file or folder")
        try:
            typer.echo(str(export_peft(checkpoint, output, overwrite=overwrite)))
        except ExportError as exc:
            fail(str(exc))
        return
    from flows.cli_align import export_classifier, is_classifier

    if is_classifier(checkpoint):  # a classify artifact: LlamaForSequenceClassification
        return export_classifier(checkpoint, output, overwrite)
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


def chat_command(
    checkpoint: Path = typer.Argument(..., help="sft artifact (or any pretrain artifact or checkpoint folder)."),
    prompt: Optional[str] = typer.Argument(None, help="One user message; without it, a conversation on stdin "
                                                      "(one message per line, history kept; Ctrl-D ends it)."),
    system: str = typer.Option("", "--system", help="A system message in front of the conversation."),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", "-n", help="Tokens per answer at most."),
    temperature: float = typer.Option(0.0, "--temperature", "-t", help="Sampling temperature (0: greedy)."),
    top_k: int = typer.Option(50, "--top-k", help="Sample among the k most likely tokens (0: all)."),
    top_p: float = typer.Option(1.0, "--top-p", help="Sample among the most likely tokens whose probabilities sum to p (1: all)."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the sampling."),
    as_json: bool = typer.Option(False, "--json", help='Print one JSON object per answer: {"text", "finish_reason" '
                                                       '("stop" | "length"), "tokens"}, instead of streaming text.'),
    device: str = typer.Option("auto", "--device", help="auto (cuda if available), cpu, cuda, mps."),
):
    import json

    from tokenizers import Tokenizer

    from model.chat import ChatError, stop_ids
    from model.generate import chat_reply

    if temperature < 0 or not 0 < top_p <= 1 or top_k < 0 or max_new_tokens < 1:
        fail("need --temperature >= 0, 0 < --top-p <= 1, --top-k >= 0 and --max-new-tokens >= 1")
    model, tokenizer_path, meta = _load(checkpoint, _device(device))
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    try:
        stop_ids(tokenizer)
    except ChatError as exc:
        fail(f"{checkpoint}: {exc}")
    if "sft" not in meta:
        typer.echo(f"note: {checkpoint} is not instruction-tuned (run `scratchlm stage sft` on it); its answers "
                   "will rarely end by themselves", err=True)
    history = [{"role": "system", "content": system}] if system else []
    interactive = prompt is None and sys.stdin.isatty()

    def answer(text: str) -> None:
        history.append({"role": "user", "content": text})
        on_text = None if as_json else (lambda piece: (sys.stdout.write(piece), sys.stdout.flush()))
        reply = chat_reply(model, tokenizer, history, max_new_tokens, temperature, top_k, top_p, seed, on_text=on_text)
        history.append({"role": "assistant", "content": reply.text})
        if as_json:
            typer.echo(json.dumps({"text": reply.text, "finish_reason": reply.finish_reason, "tokens": reply.tokens},
                                  ensure_ascii=False))
        else:
            sys.stdout.write("\n")
            if reply.finish_reason == "length":
                typer.echo(f"[cut off after {reply.tokens} tokens: --max-new-tokens]", err=True)

    try:
        if prompt is not None:
            answer(prompt)
            return
        while True:
            if interactive:
                sys.stderr.write("you> ")
                sys.stderr.flush()
            line = sys.stdin.readline()
            if not line:
                break
            if line.strip():
                answer(line.rstrip("\n"))
    except KeyboardInterrupt:
        sys.stdout.write("\n")


def serve_model_command(
    checkpoint: Path = typer.Argument(..., help="sft artifact, pretrain artifact or checkpoint folder, or a folder "
                                                "`scratchlm export` wrote."),
    port: int = typer.Option(8000, "--port", help="Port on 127.0.0.1."),
    engine: str = typer.Option("auto", "--engine", help="transformers (`transformers serve`, CPU or GPU), vllm "
                                                        "(`vllm serve`, GPU), or auto: vllm when installed, else transformers."),
    export_dir: Optional[Path] = typer.Option(None, "--export-dir", help="Where to write the Hugging Face export "
                                                                         "[default: a temporary folder, removed on exit]."),
    device: str = typer.Option("auto", "--device", help="transformers engine: auto, cpu, cuda:0."),
    lifetime: float = typer.Option(0, "--lifetime", help="Stop the server after this many seconds (0: run until Ctrl-C)."),
):
    from flows.serve_model import ServeError, serve_model

    if not checkpoint.exists():
        fail(f"{checkpoint}: no such file or folder")
    if not 0 < port < 65536:
        fail(f"--port: must be between 1 and 65535, got {port}")
    if lifetime < 0:
        fail(f"--lifetime: must not be negative, got {lifetime}")
    try:
        code = serve_model(checkpoint, port, engine, export_dir, device, lifetime, echo=lambda m: typer.echo(m, err=True))
    except ServeError as exc:
        fail(str(exc))
    raise typer.Exit(code)


def align_command(
    model: Path = typer.Option(..., "--model", "-m", help="Pretrain artifact (or checkpoint folder) to align."),
    data: Optional[list[Path]] = typer.Option(None, "--data", help="Instruction data for sft (JSONL/JSON; repeat for "
                                                                   "several). Required."),
    preferences: Optional[list[Path]] = typer.Option(None, "--preferences", help="Preference pairs for dpo "
                                                                                "(prompt, chosen, rejected); without them dpo is skipped."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="A knob, STAGE.KNOB=VALUE (repeatable), e.g. sft.lora_rank=8."),
    store: Optional[Path] = typer.Option(None, "--store", envvar="SCRATCHLM_STORE", help="Artifact store root [default: ./artifacts]."),
):
    import dataclasses

    from flows.options import check_store, parse_assignments
    from pipeline.errors import StageError
    from pipeline.stages import STAGE_MODULES, get_stage

    names = [n for n in ("sft", "dpo") if n in STAGE_MODULES]
    check_store(store)
    for path in [model, *(data or []), *(preferences or [])]:
        if not path.exists():
            fail(f"{path}: no such file or folder")
    from model.chat import ChatDataError, read_chat_examples
    from pipeline.stages.sft import model_input_files

    try:  # everything a user can get wrong, before a Prefect server starts
        model_input_files([model])
        if not data:
            fail("--data: give the instruction data for sft (JSONL/JSON)")
        for path in data:
            read_chat_examples(path)
    except (StageError, ChatDataError) as exc:
        fail(str(exc))
    for path in preferences or []:
        if not path.is_file():
            fail(f"{path}: not a file (preference pairs: JSONL or JSON)")
    try:
        configs = parse_assignments(set_ or [], {n: get_stage(n).config_cls() for n in names})
    except typer.BadParameter as exc:
        fail(str(exc))
    configs["sft"] = dataclasses.replace(configs["sft"], data=[str(p.resolve()) for p in data])
    if "dpo" in configs and preferences:
        configs["dpo"] = dataclasses.replace(configs["dpo"], data=[str(p.resolve()) for p in preferences])
    from flows.align_flow import align_pipeline
    from storage.store import default_root

    try:
        outputs = align_pipeline(model=[str(model)], store=str(store or default_root()), **configs)
    except StageError as exc:
        fail(str(exc))
    for name, path in outputs.items():
        typer.echo(f"{name:5s} {path}", err=True)
    typer.echo(list(outputs.values())[-1])


HELP = {
    "generate": "Continue a prompt with a pretrained GPT (pretrain artifact or checkpoint folder), "
              "printing tokens as they are produced. The prompt is the argument, or stdin.",
    "export": "Export a pretrained GPT to a folder that transformers loads with no custom code "
              "(AutoModelForCausalLM / AutoTokenizer.from_pretrained): Llama config, safetensors, "
              "tokenizer files. Also what lm-evaluation-harness runs on (see docs/design.md).",
    "chat": "Chat with a fine-tuned model (sft artifact): one answer to PROMPT, or a conversation on stdin "
            "(history kept). The answer streams as it is generated and stops at the end-of-turn marker; --json "
            "prints {text, finish_reason, tokens}.",
    "serve-model": "Serve a model over an OpenAI-compatible API on 127.0.0.1 with an existing server: exports it "
                   "to Hugging Face format (chat template, stop tokens) and runs `transformers serve` (CPU/GPU) or "
                   "`vllm serve` (GPU, when installed) on the folder. POST /v1/chat/completions.",
    "align": "Run the scratchlm-align Prefect flow on a pretrained model: sft on --data, then dpo on "
             "--preferences when given. Cached like every stage; prints the last artifact.",
    "make-benchmark": "Build the crawl-made multiple-choice task (HellaSwag JSONL: ctx, endings, label) "
              "from held-out documents: context = the start of a paragraph, endings = its true "
              "continuation and 3 from other documents. Deterministic for a seed.",
}


def register(app: typer.Typer) -> None:
    app.command("generate", help=HELP["generate"])(generate_command)
    app.command("export", help=HELP["export"])(export_command)
    app.command("make-benchmark", help=HELP["make-benchmark"])(make_benchmark_command)
    app.command("chat", help=HELP["chat"])(chat_command)
    app.command("serve-model", help=HELP["serve-model"])(serve_model_command)
    app.command("align", help=HELP["align"])(align_command)
