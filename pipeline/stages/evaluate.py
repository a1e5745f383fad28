"""Stage `evaluate`: a pretrained GPT (pretrain artifact or checkpoint folder) → eval.json + eval.md.

- held-out loss, perplexity and bits per byte on the val split of the token data (by default the
  token files the checkpoint was trained on), with the unigram baseline beside them;
- every `--benchmark` file: multiple choice (HellaSwag, ARC, PIQA formats: acc, acc_norm, with
  standard errors, as lm-evaluation-harness computes them) or cloze (LAMBADA: greedy whole-word
  accuracy and perplexity);
- the crawl-made continuation task (model/benchmarks.py) built from the val documents of the token
  data, so every evaluation has a benchmark of the model's own domain even with no file given;
- a few sampled continuations of fixed prompts.
The torch code is model/evaluate.py; this module wires it into the stage contract. Benchmark files
and the token data are references: their digests enter the key, their paths do not."""
from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from model.benchmarks import FORMATS, BenchmarkError
from pipeline.errors import StageError, check_range
from pipeline.knobs import knob
from pipeline.stage import GlobalStage

MIN_TASK_ITEMS = 20  # below this the crawl-made task's accuracy is noise (stderr > 0.09)
DEFAULT_PROMPTS = ["The", "Debian is", "To install the package,", "In this chapter we"]


@dataclass
class EvaluateConfig:
    benchmark: list[str] = knob([], "Benchmark file (JSONL or Parquet in HellaSwag, ARC, PIQA or LAMBADA format); "
                                    "repeat for several. Its content enters the key, not its path.", in_key=False)
    benchmark_format: str = knob("auto", "Format of the benchmark files (auto: detected from the fields).",
                                 choices=("auto",) + FORMATS)
    tokens: str = knob("", "Token artifact whose val split gives loss and bits per byte [default: the token files "
                           "named in the checkpoint's config.json, when they are absolute paths that exist].",
                       in_key=False)
    continuation_task: int = knob(500, "Also build and score up to N items of the crawl-made continuation task "
                                       "(scratchlm make-benchmark, every long paragraph) from the val split of the "
                                       "token data; written beside the report as continuation-task.jsonl (0: off).")
    max_items: int = knob(0, "Score at most the first N items of each benchmark (0: all).")
    max_val_tokens: int = knob(200_000, "Held-out tokens for loss and bits per byte (0: the whole val split).")
    prompt: list[str] = knob(list(DEFAULT_PROMPTS), "Prompt of a sampled generation in the report; repeat for several.")
    max_new_tokens: int = knob(48, "Tokens generated per prompt.")
    temperature: float = knob(0.8, "Sampling temperature of the generations (0: greedy).")
    top_k: int = knob(50, "Sample among the k most likely tokens (0: all).")
    seed: int = knob(0, "Seed of the sampled generations.")
    batch_size: int = knob(32, "Sequences per forward pass.", in_key=False)
    device: str = knob("auto", "Device: auto (cuda if available), cpu, cuda, cuda:1, mps.", in_key=False)
    cpu_threads: int = knob(0, "Threads of CPU math (0: torch's default, one per core; 1 is much faster on cores that "
                               "other programs keep busy).", in_key=False)

    def check(self) -> None:
        check_range(self, ("continuation_task", "max_items", "max_val_tokens", "max_new_tokens", "top_k", "cpu_threads"), low=0)
        check_range(self, "temperature", low=0.0)
        check_range(self, "batch_size", low=1)


# ----------------------------------------------------------------------------- inputs and references

def checkpoint_input_files(inputs: Sequence) -> list[Path]:
    """`--input` is one pretrain artifact or checkpoint folder: its weights, config and tokenizer."""
    from model.checkpoint import MODEL_FILES, CheckpointError, latest_checkpoint

    if len(inputs) != 1:
        raise StageError(f"evaluate takes one pretrain artifact or checkpoint folder, got {len(inputs)} inputs")
    path = Path(inputs[0])
    if not path.exists():
        raise StageError(f"{path}: no such file or folder")
    try:
        folder = latest_checkpoint(path, MODEL_FILES)
    except CheckpointError as exc:
        raise StageError(str(exc)) from None
    files = [folder / name for name in MODEL_FILES]
    if not (folder / "tokenizer.json").is_file():
        raise StageError(f"{folder}: no tokenizer.json beside the weights")
    return files + [folder / "tokenizer.json"]


def token_files(tokens: str) -> list[Path]:
    """A token artifact's parts (its manifest stands for them: it holds their sha256)."""
    folder = Path(tokens)
    if not folder.is_dir():
        raise StageError(f"{tokens}: not a folder (expected a tokenize artifact)")
    parts = sorted(folder.glob("part-*.parquet"))
    if not parts:
        raise StageError(f"{tokens}: no part-*.parquet token files")
    return parts


def evaluate_references(config: EvaluateConfig) -> list[Path]:
    files = []
    for item in config.benchmark:
        path = Path(item)
        if not path.is_file():
            raise StageError(f"{item}: no such benchmark file")
        files.append(path)
    if config.tokens:
        manifest = Path(config.tokens) / "manifest.json"
        files += [manifest] if manifest.is_file() else token_files(config.tokens)
    return files


def trained_on(meta: dict) -> list[Path]:
    """The token files a checkpoint's config.json says it was trained on, when they are still there
    (config.json "data": {"files": [...]} or a list; relative names cannot be found)."""
    data = meta.get("data")
    files = data.get("files", []) if isinstance(data, dict) else data or []
    paths = [Path(p) for p in files if isinstance(p, str)]
    return paths if paths and all(p.is_absolute() and p.is_file() for p in paths) else []


# ------------------------------------------------------------------------------------------- run

def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def run_evaluate(files: list[Path], config: EvaluateConfig, out_dir: Path, against=()):
    from tokenizers import Tokenizer

    from model.benchmarks import read_benchmark
    from model.checkpoint import CheckpointError, load_model
    from model.evaluate import evaluate_held_out, score_benchmark
    from model.generate import generate_text

    if config.cpu_threads > 0:
        import torch

        torch.set_num_threads(config.cpu_threads)
    try:  # every file is checked before any time is spent on the model
        benchmarks = [read_benchmark(p, config.benchmark_format, config.max_items) for p in config.benchmark]
    except BenchmarkError as exc:
        raise StageError(str(exc)) from None
    folder = files[0].parent
    try:
        model, tokenizer_path, meta = load_model(folder, _device(config.device))
    except CheckpointError as exc:
        raise StageError(str(exc)) from None
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    data = token_files(config.tokens) if config.tokens else trained_on(meta)
    if data and (data[0].parent / "tokenizer.json").is_file() and \
            (data[0].parent / "tokenizer.json").read_bytes() != Path(tokenizer_path).read_bytes():
        raise StageError(f"{data[0].parent}: tokenized with another tokenizer than the model's ({tokenizer_path}); "
                         "its token ids would mean other text")

    report: dict = {"checkpoint": str(folder), "step": meta.get("step"), "tokens_seen": meta.get("tokens_seen"),
                    "model": meta.get("model"), "parameters": model.num_params(),
                    "config": asdict(config)}
    if data:
        report["held_out"] = evaluate_held_out(model, data, tokenizer, "val", config.max_val_tokens,
                                               max(1, config.batch_size // 4))
    else:
        report["held_out"] = {"note": "no token data (set --tokens to a tokenize artifact)"}
    if config.continuation_task and data:
        task = crawl_task(data, config, out_dir)
        if isinstance(task, str):
            report["continuation_task"] = task
        else:
            benchmarks.append(task)
    report["benchmarks"] = [score_benchmark(model, tokenizer, b, config.batch_size) for b in benchmarks]
    report["generations"] = [
        {"prompt": prompt, "text": generate_text(model, tokenizer, prompt, config.max_new_tokens, config.temperature,
                                                 config.top_k, 1.0, config.seed + n)}  # not the same draws for each
        for n, prompt in enumerate(config.prompt)]
    (out_dir / "eval.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (out_dir / "eval.md").write_text(markdown_report(report))
    side = {"eval.json": out_dir / "eval.json", "eval.md": out_dir / "eval.md"}
    if (out_dir / "continuation-task.jsonl").is_file():
        side["continuation-task.jsonl"] = out_dir / "continuation-task.jsonl"
    if _plot(report, out_dir / "eval.png"):
        side["eval.png"] = out_dir / "eval.png"
    for line in summary_lines(report):
        print(line, file=sys.stderr)

    items = sum(b["items"] for b in report["benchmarks"])
    stats = {"docs_in": items, "docs_out": items, "bytes_in": report["held_out"].get("bytes", 0), "bytes_out": 0,
             "dropped": {}, "faults": {}, "skipped": {}, "extra": {},
             "eval": {**{k: report["held_out"].get(k) for k in ("loss", "perplexity", "bits_per_byte")},
                      **{b["name"]: {k: b.get(k) for k in ("acc", "acc_norm", "perplexity") if k in b}
                         for b in report["benchmarks"]}}}
    return [], stats, side


def crawl_task(data: list[Path], config: EvaluateConfig, out_dir: Path):
    """The continuation task from the val documents of the token data, as a Benchmark (or, when the
    split is too small for it, a note saying so)."""
    from model.benchmarks import (ContinuationTaskConfig, continuation_items, read_benchmark,
                                  read_held_out_documents, write_jsonl)

    task_config = ContinuationTaskConfig(items=config.continuation_task, per_document=0, seed=config.seed)
    try:
        items = continuation_items(read_held_out_documents(data, "val"), task_config)
    except BenchmarkError as exc:
        return f"no continuation task: {exc}"
    if len(items) < MIN_TASK_ITEMS:
        return (f"no continuation task: the val split gives only {len(items)} items (fewer than {MIN_TASK_ITEMS}); "
                "more held-out documents would (tokenize --val-fraction)")
    path = out_dir / "continuation-task.jsonl"
    write_jsonl(items, path)
    task = read_benchmark(path)
    task.name = "crawl-continuation"
    return task


# ---------------------------------------------------------------------------------------- report

def _fmt(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def summary_lines(report: dict) -> list[str]:
    lines = []
    held = report["held_out"]
    if "bits_per_byte" in held:
        lines.append(f"val: loss {held['loss']:.4f}, bits/byte {held['bits_per_byte']:.4f} "
                     f"(unigram {held['unigram']['bits_per_byte']:.4f}) over {held['tokens']} tokens")
    for b in report["benchmarks"]:
        if b["kind"] == "multiple_choice":
            lines.append(f"{b['name']}: acc {b['acc']:.4f} ± {_fmt(b['acc_stderr'])}, acc_norm {b['acc_norm']:.4f} "
                         f"± {_fmt(b['acc_norm_stderr'])} (chance {b['chance']:.3f}, {b['items']} items)")
        else:
            lines.append(f"{b['name']}: acc {b['acc']:.4f} ± {_fmt(b['acc_stderr'])}, perplexity "
                         f"{b['perplexity']:.2f} ({b['items']} items)")
    return lines


def markdown_report(report: dict) -> str:
    out = [f"# Evaluation of {report['checkpoint']}", "",
           f"Step {report.get('step')}, {report.get('tokens_seen')} tokens seen, {report['parameters']:,} parameters.", ""]
    held = report["held_out"]
    out += ["## Held-out text (val split)", ""]
    if "bits_per_byte" in held:
        uni = held["unigram"]
        out += ["| | loss (nats/token) | perplexity | bits per byte |", "|---|---|---|---|",
                f"| model | {held['loss']:.4f} | {held['perplexity']:.2f} | {held['bits_per_byte']:.4f} |",
                f"| unigram baseline (train-split frequencies) | {uni['loss']:.4f} | {uni['perplexity']:.2f} | "
                f"{uni['bits_per_byte']:.4f} |", "",
                f"{held['tokens']:,} tokens, {held['bytes']:,} bytes of text.", ""]
    else:
        out += [held.get("note", "not measured"), ""]
    if report.get("continuation_task"):
        out += [report["continuation_task"], ""]
    if report["benchmarks"]:
        out += ["## Benchmarks", "", "| benchmark | format | items | acc | acc_norm | chance / perplexity |",
                "|---|---|---|---|---|---|"]
        for b in report["benchmarks"]:
            if b["kind"] == "multiple_choice":
                out.append(f"| {b['name']} | {b['format']} | {b['items']} | {b['acc']:.4f} ± {_fmt(b['acc_stderr'])} | "
                           f"{b['acc_norm']:.4f} ± {_fmt(b['acc_norm_stderr'])} | {b['chance']:.3f} |")
            else:
                out.append(f"| {b['name']} | {b['format']} | {b['items']} | {b['acc']:.4f} ± {_fmt(b['acc_stderr'])} | "
                           f"– | ppl {b['perplexity']:.2f} |")
        out += ["", "acc: the choice with the highest log-likelihood; acc_norm: per character of the choice "
                    "(lm-evaluation-harness's definitions); ± one standard error.", ""]
    if report["generations"]:
        out += ["## Samples", ""]
        for g in report["generations"]:
            text = (g["prompt"] + g["text"]).replace("\n", " ⏎ ")
            out += [f"- **{g['prompt']}**{text[len(g['prompt']):]}"]
        out.append("")
    return "\n".join(out)


def _plot(report: dict, path: Path) -> bool:
    """Benchmark accuracies against chance, and bits per byte against the unigram baseline."""
    held, benches = report["held_out"], [b for b in report["benchmarks"] if b["kind"] == "multiple_choice"]
    if "bits_per_byte" not in held and not benches:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5), gridspec_kw={"width_ratios": [1, 2]})
    if "bits_per_byte" in held:
        axes[0].bar(["model", "unigram"], [held["bits_per_byte"], held["unigram"]["bits_per_byte"]],
                    color=["tab:blue", "tab:gray"])
        axes[0].set_ylabel("bits per byte (val)")
    axes[0].set_title("held-out text")
    if benches:
        x = range(len(benches))
        axes[1].bar([i - 0.2 for i in x], [b["acc"] for b in benches], 0.4,
                    yerr=[b["acc_stderr"] for b in benches], label="acc")
        axes[1].bar([i + 0.2 for i in x], [b["acc_norm"] for b in benches], 0.4,
                    yerr=[b["acc_norm_stderr"] for b in benches], label="acc_norm")
        for i, b in enumerate(benches):
            axes[1].hlines(b["chance"], i - 0.45, i + 0.45, colors="black", linestyles="dashed")
        axes[1].set_xticks(list(x), [b["name"] for b in benches], rotation=15)
        axes[1].set_ylim(0, 1)
        axes[1].legend()
    axes[1].set_title("benchmarks (dashed: chance)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


STAGE = GlobalStage(
    name="evaluate",
    version="1",
    config_cls=EvaluateConfig,
    run=run_evaluate,
    description="Evaluates a pretrain artifact or checkpoint: val loss, perplexity and bits per byte (with the "
                "unigram baseline), multiple-choice and cloze benchmarks (--benchmark, lm-eval's acc/acc_norm), "
                "sampled generations; writes eval.json, eval.md and eval.png.",
    references=evaluate_references,
    input_files=checkpoint_input_files,
)
