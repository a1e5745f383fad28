"""Stage `evaluate`: a pretrained GPT (pretrain artifact or checkpoint folder) → eval.json + eval.md.

- held-out loss, perplexity and bits per byte, with standard errors over documents: on a fixed
  held-out set (`--held-out`: text in JSONL/Parquet, a folder of them, or a dedup/tokenize
  artifact; tokenized here with the model's tokenizer, so runs with other tokenizers are scored on
  the same bytes) or, by default, on the val split of the token data the checkpoint was trained
  on; with the unigram baseline beside them. eval.json names the set by the sha256 of its text;
- every `--benchmark` file: multiple choice (HellaSwag, MMLU, ARC, PIQA: acc, acc_norm with
  standard errors, as lm-evaluation-harness computes them; MMLU per subject) or cloze (LAMBADA:
  greedy whole-word accuracy and perplexity); each score names the file's sha256;
- the crawl-made continuation task (model/benchmarks.py) built from the val documents of the token
  data, so every evaluation has a benchmark of the model's own domain even with no file given;
- decontamination (pipeline/decontaminate.py): every held-out document and benchmark item is
  checked against the train split the checkpoint was trained on (exact 13-gram overlap); the
  counts, and every score again without the contaminated items ("clean");
- a few sampled continuations of fixed prompts.
The torch code is model/evaluate.py; this module wires it into the stage contract. Benchmark files,
the held-out set and the token data are references: their digests enter the key, their paths do not.
docs/evaluation.md explains the choices."""
from __future__ import annotations

import hashlib
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
from pipeline.stages.model_inputs import checkpoint_files, load_input_model

TASK_FILE = "continuation-task.jsonl"  # the crawl-made task, inside the evaluate artifact
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
    held_out: str = knob("", "A fixed held-out set scored instead of the val split (bits per byte, loss, with standard "
                             "errors): JSONL/Parquet with a `text` column, a folder of them, or a dedup/tokenize "
                             "artifact (all its documents). The same set for every run makes scores comparable, "
                             "whatever the tokenizer. Its content enters the key, not its path.", in_key=False)
    max_held_out_docs: int = knob(0, "Score the first N documents of --held-out (0: all).")
    decontaminate: bool = knob(True, "Check held-out documents and benchmark items against the train split the "
                                     "checkpoint was trained on (exact 13-gram overlap) and report every score "
                                     "also without the contaminated ones.")
    contamination_overlap: float = knob(0.0, "A text is contaminated when this share of its 13-grams occurs in the "
                                             "training data (0: any one, GPT-3's and lm-eval's rule).")
    continuation_task: int = knob(500, "Also build and score up to N items of the crawl-made continuation task "
                                       "(scratchlm make-benchmark, every long paragraph) from the val split of the "
                                       "token data; written beside the report as continuation-task.jsonl (0: off).")
    max_items: int = knob(0, "Score at most the first N items of each benchmark (0: all).")
    chat_form: str = knob("auto", "Also score multiple-choice benchmarks in chat form (question and lettered choices "
                                  "as the user's turn, the letter's logit after the assistant marker; model/chat_eval.py) "
                                  "beside the base-model form. auto: for sft artifacts.", choices=("auto", "on", "off"))
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
        check_range(self, ("continuation_task", "max_items", "max_val_tokens", "max_held_out_docs", "max_new_tokens",
                           "top_k", "cpu_threads"), low=0)
        check_range(self, "contamination_overlap", low=0.0, high=1.0)
        check_range(self, "temperature", low=0.0)
        check_range(self, "batch_size", low=1)


# ----------------------------------------------------------------------------- inputs and references

def checkpoint_input_files(inputs: Sequence) -> list[Path]:
    return checkpoint_files(inputs, "evaluate")  # module level: stages are pickled


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
    if config.held_out:
        files += held_out_files(config.held_out)
    return files


def held_out_files(spec: str) -> list[Path]:
    """The files whose content names the held-out set: an artifact's manifest (it holds its parts'
    digests), else the set's files themselves."""
    path = Path(spec)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise StageError(f"{spec}: no such held-out file or folder")
    if (path / "manifest.json").is_file():
        return [path / "manifest.json"]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith((".parquet", ".jsonl", ".jsonl.gz")))
    if not files:
        raise StageError(f"{spec}: no Parquet or JSONL files in this held-out folder")
    return files


def read_held_out(spec: str, max_docs: int = 0) -> list[str]:
    """The held-out texts, in a fixed order (every split of a token artifact)."""
    from model.benchmarks import read_held_out_documents

    texts = []
    try:
        for _, text in read_held_out_documents([spec], split=None):
            texts.append(text)
            if max_docs and len(texts) >= max_docs:
                break
    except BenchmarkError as exc:
        raise StageError(str(exc)) from None
    if not texts:
        raise StageError(f"{spec}: no held-out documents")
    return texts


def trained_on(meta: dict) -> list[Path]:
    """The token files a checkpoint's config.json says it was trained on, when they are still there
    (config.json "data": {"files": [...]} or a list; relative names cannot be found)."""
    data = meta.get("data")
    files = data.get("files", []) if isinstance(data, dict) else data or []
    paths = [Path(p) for p in files if isinstance(p, str)]
    return paths if paths and all(p.is_absolute() and p.is_file() for p in paths) else []


# ------------------------------------------------------------------------------------------- run

def run_evaluate(files: list[Path], config: EvaluateConfig, out_dir: Path, against=()):
    from model.benchmarks import read_benchmark
    from model.evaluate import evaluate_held_out, score_benchmark
    from model.generate import generate_text

    if config.cpu_threads > 0:
        import torch

        torch.set_num_threads(config.cpu_threads)
    try:  # every file is checked before any time is spent on the model
        benchmarks = [read_benchmark(p, config.benchmark_format, config.max_items) for p in config.benchmark]
    except BenchmarkError as exc:
        raise StageError(str(exc)) from None
    held_out_texts = read_held_out(config.held_out, config.max_held_out_docs) if config.held_out else None
    folder = files[0].parent
    model, tokenizer, tokenizer_path, meta = load_input_model(files, config.device)
    data = token_files(config.tokens) if config.tokens else trained_on(meta)
    if data and (data[0].parent / "tokenizer.json").is_file() and \
            (data[0].parent / "tokenizer.json").read_bytes() != Path(tokenizer_path).read_bytes():
        raise StageError(f"{data[0].parent}: tokenized with another tokenizer than the model's ({tokenizer_path}); "
                         "its token ids would mean other text")

    report: dict = {"checkpoint": str(folder), "step": meta.get("step"), "tokens_seen": meta.get("tokens_seen"),
                    "model": meta.get("model"), "parameters": model.num_params(),
                    "config": asdict(config)}
    held = {"note": "no token data (set --tokens to a tokenize artifact, or --held-out)"}
    if held_out_texts is not None:
        held = evaluate_held_out(model, data, tokenizer, "held-out", batch_size=max(1, config.batch_size // 4),
                                 texts=held_out_texts, keep_documents=True)
        held["set"] = {"kind": "held-out", "path": str(Path(config.held_out).resolve())}
    elif data:
        held = evaluate_held_out(model, data, tokenizer, "val", config.max_val_tokens, max(1, config.batch_size // 4),
                                 keep_documents=True)
        held["set"] = {"kind": "val split", "path": str(data[0].parent)}
    documents = held.pop("_documents", None)
    if "sha256" in held:
        held["set"].update(sha256=held["sha256"], documents=held["documents"], bytes=held["bytes"])
    if documents is not None:  # for paired comparisons of two models on the same documents (report --compare)
        held["per_document"] = {"nats": documents.nats.tolist(), "tokens": documents.tokens.tolist(),
                                "bits": (documents.bpb_nats / math.log(2)).tolist(), "bytes": documents.bytes.tolist()}
    report["tokenizer_sha256"] = hashlib.sha256(Path(tokenizer_path).read_bytes()).hexdigest()
    report["held_out"] = held
    if config.continuation_task and (data or held_out_texts is not None):
        task = crawl_task(data, config, out_dir, held_out_texts)
        if isinstance(task, str):
            report["continuation_task"] = task
        else:
            benchmarks.append(task)

    training = training_ngrams(trained_on(meta) or data) if config.decontaminate else None
    report["decontamination"] = decontamination_note(config, training)
    if training is not None and documents is not None:
        from pipeline.decontaminate import contaminated

        found = contaminated(training, documents.texts, config.contamination_overlap)
        held["contamination"] = {**found.summary(), "clean": documents.metrics(~found.flags) if (~found.flags).any() else None,
                                 "documents": [int(i) for i in found.flags.nonzero()[0]]}  # which ones, by position
    report["benchmarks"] = []
    for bench in benchmarks:
        flags = None
        if training is not None:
            from pipeline.decontaminate import contaminated

            found = contaminated(training, [item.text for item in bench.items], config.contamination_overlap)
            flags = found.flags.tolist()
        scored = score_benchmark(model, tokenizer, bench, config.batch_size, contaminated=flags, per_item=True)
        if bench.kind == "multiple_choice" and (config.chat_form == "on" or (config.chat_form == "auto" and "sft" in meta)):
            from model.chat_eval import score_chat_choices

            scored["chat_form"] = score_chat_choices(model, tokenizer, bench.items, config.batch_size)
        if flags is not None:
            scored["contamination"].update(seconds=found.summary()["seconds"],
                                           positions=[i for i, flagged in enumerate(flags) if flagged])
        report["benchmarks"].append(scored)
    report["generations"] = [
        {"prompt": prompt, "text": generate_text(model, tokenizer, prompt, config.max_new_tokens, config.temperature,
                                                 config.top_k, 1.0, config.seed + n)}  # not the same draws for each
        for n, prompt in enumerate(config.prompt)]
    (out_dir / "eval.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (out_dir / "eval.md").write_text(markdown_report(report))
    side = {"eval.json": out_dir / "eval.json", "eval.md": out_dir / "eval.md"}
    if (out_dir / TASK_FILE).is_file():
        side[TASK_FILE] = out_dir / TASK_FILE
    if _plot(report, out_dir / "eval.png"):
        side["eval.png"] = out_dir / "eval.png"
    for line in summary_lines(report):
        print(line, file=sys.stderr)

    items = sum(b["items"] for b in report["benchmarks"])
    # docs_in/out stay 0: a model stage keeps no documents; the funnel shows items scored instead
    stats = {"docs_in": 0, "docs_out": 0, "bytes_in": held.get("bytes", 0), "bytes_out": 0,
             "dropped": {}, "faults": {}, "skipped": {}, "extra": {},
             "items_scored": items, "held_out_documents": held.get("documents", 0),
             "eval": {**{k: held.get(k) for k in ("loss", "perplexity", "bits_per_byte")},
                      **{b["name"]: {k: b.get(k) for k in ("acc", "acc_norm", "perplexity") if k in b}
                         for b in report["benchmarks"]}},
             "scores": score_records(report)}
    return [], stats, side


def training_ngrams(files: list[Path]):
    """The 13-grams of the train split of the token files (decoded), or None without any."""
    if not files:
        return None
    from model.benchmarks import read_held_out_documents
    from pipeline.decontaminate import TrainingNgrams

    try:
        return TrainingNgrams(text for _, text in read_held_out_documents(files, split="train"))
    except BenchmarkError as exc:
        raise StageError(f"decontamination: {exc}") from None


def decontamination_note(config: EvaluateConfig, training) -> dict:
    if not config.decontaminate:
        return {"method": "off"}
    if training is None:
        return {"method": "none: the training data is unknown (no token files in the checkpoint's config.json, "
                          "no --tokens)"}
    return {"method": f"exact {training.n}-gram overlap with the train split (words after dedup's normalisation)",
            "min_overlap": config.contamination_overlap, "training_documents": training.documents,
            "training_ngrams": int(len(training.hashes)), "build_seconds": round(training.build_seconds, 3)}


SCORE_KEYS = {"multiple_choice": ("acc", "acc_norm", "acc_macro"), "cloze": ("acc",)}


def score_records(report: dict) -> list[dict]:
    """One record per score, what `scratchlm report --compare` reads: value, standard error, the set
    it was made on (sha256 of the held-out text or of the benchmark file) and the contamination."""
    records = []
    held = report["held_out"]
    if "bits_per_byte" in held:
        contamination = held.get("contamination") or {}
        for key in ("bits_per_byte", "loss"):
            clean = contamination.get("clean") or {}
            records.append({"name": f"held_out.{key}", "value": held[key], "stderr": held[f"{key}_stderr"],
                            "set": held["set"]["kind"], "sha256": held["sha256"], "items": held["documents"],
                            "contaminated": contamination.get("items"), "clean_value": clean.get(key),
                            "clean_stderr": clean.get(f"{key}_stderr"), "lower_is_better": True})
            if key == "loss":  # nats per token: only comparable between runs with the same tokenizer
                records[-1]["tokenizer_sha256"] = report.get("tokenizer_sha256")
    for b in report["benchmarks"]:
        contamination = b.get("contamination") or {}
        clean = contamination.get("clean") or {}
        for key in SCORE_KEYS[b["kind"]]:
            if key not in b:
                continue
            records.append({"name": f"{b['name']}.{key}", "value": b[key], "stderr": b.get(f"{key}_stderr"),
                            "set": b["path"], "sha256": b["sha256"], "items": b["items"],
                            "contaminated": contamination.get("items"), "clean_value": clean.get(key),
                            "clean_stderr": clean.get(f"{key}_stderr"), "lower_is_better": False})
    return records


def crawl_task(data: list[Path], config: EvaluateConfig, out_dir: Path, held_out_texts: list[str] | None = None):
    """The continuation task from the held-out set when there is one (the same file for every run
    on that set, so `report --compare` compares it), else from the val documents of the token data,
    as a Benchmark (or, when there are too few documents for it, a note saying so). Its path is
    recorded relative to the artifact (out_dir is a work folder, renamed into place at the end)."""
    from model.benchmarks import (ContinuationTaskConfig, continuation_items, read_benchmark,
                                  read_held_out_documents, write_jsonl)

    task_config = ContinuationTaskConfig(items=config.continuation_task, per_document=0, seed=config.seed)
    source = "the held-out set" if held_out_texts is not None else "the val split"
    documents = (((str(n), text) for n, text in enumerate(held_out_texts)) if held_out_texts is not None
                 else read_held_out_documents(data, "val"))
    try:
        items = continuation_items(documents, task_config)
    except BenchmarkError as exc:
        return f"no continuation task: {exc}"
    if len(items) < MIN_TASK_ITEMS:
        return (f"no continuation task: {source} gives only {len(items)} items (fewer than {MIN_TASK_ITEMS}); "
                "more held-out documents would (tokenize --val-fraction, or a larger --held-out)")
    path = out_dir / TASK_FILE
    write_jsonl(items, path)
    task = read_benchmark(path)
    task.name, task.path = "crawl-continuation", Path(TASK_FILE)
    return task


# ---------------------------------------------------------------------------------------- report

def _fmt(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _contamination_text(c: dict | None) -> str:
    if not c:
        return ""
    return f"; contaminated {c['items']} of {c['of']} ({100 * c['share']:.1f}%)"


def summary_lines(report: dict) -> list[str]:
    lines = []
    held = report["held_out"]
    if "bits_per_byte" in held:
        unigram = f" (unigram {held['unigram']['bits_per_byte']:.4f})" if "unigram" in held else ""
        lines.append(f"{held['set']['kind']}: loss {held['loss']:.4f} ± {_fmt(held['loss_stderr'])}, bits/byte "
                     f"{held['bits_per_byte']:.4f} ± {_fmt(held['bits_per_byte_stderr'])}{unigram} over "
                     f"{held['documents']} documents, {held['tokens']} tokens (set {held['sha256'][:12]})"
                     + _contamination_text(held.get("contamination")))
    for b in report["benchmarks"]:
        if b["kind"] == "multiple_choice":
            macro = f", macro acc {b['acc_macro']:.4f} over {len(b['subjects'])} subjects" if "acc_macro" in b else ""
            lines.append(f"{b['name']}: acc {b['acc']:.4f} ± {_fmt(b['acc_stderr'])}, acc_norm {b['acc_norm']:.4f} "
                         f"± {_fmt(b['acc_norm_stderr'])}{macro} (chance {b['chance']:.3f}, {b['items']} items"
                         f"{_contamination_text(b.get('contamination'))})")
            if "chat_form" in b:
                chat = b["chat_form"]
                lines.append(f"{b['name']} (chat form): acc {chat['acc']:.4f} ± {_fmt(chat['acc_stderr'])} "
                             f"(chance {chat['chance']:.3f})")
        else:
            lines.append(f"{b['name']}: acc {b['acc']:.4f} ± {_fmt(b['acc_stderr'])}, perplexity "
                         f"{b['perplexity']:.2f} ({b['items']} items{_contamination_text(b.get('contamination'))})")
    return lines


def markdown_report(report: dict) -> str:
    out = [f"# Evaluation of {report['checkpoint']}", "",
           f"Step {report.get('step')}, {report.get('tokens_seen')} tokens seen, {report['parameters']:,} parameters.", ""]
    held = report["held_out"]
    kind = held.get("set", {}).get("kind", "val split")
    out += [f"## Held-out text ({kind})", ""]
    if "bits_per_byte" in held:
        rows = [("model", held)]
        clean = (held.get("contamination") or {}).get("clean")
        if clean:
            rows.append(("model, contaminated documents left out", clean))
        out += ["| | documents | loss (nats/token) | perplexity | bits per byte |", "|---|---|---|---|---|"]
        out += [f"| {name} | {m['documents']} | {m['loss']:.4f} ± {_fmt(m['loss_stderr'])} | {m['perplexity']:.2f} | "
                f"{m['bits_per_byte']:.4f} ± {_fmt(m['bits_per_byte_stderr'])} |" for name, m in rows]
        if "unigram" in held:
            uni = held["unigram"]
            out.append(f"| unigram baseline (train-split frequencies) | {held['documents']} | {uni['loss']:.4f} | "
                       f"{uni['perplexity']:.2f} | {uni['bits_per_byte']:.4f} |")
        out += ["", f"{held['tokens']:,} tokens, {held['bytes']:,} bytes of text from `{held['set']['path']}`, "
                    f"sha256 `{held['sha256']}`; ± one standard error over documents.", ""]
        if held.get("contamination"):
            c = held["contamination"]
            out += [f"Contaminated: {c['items']} of {c['of']} documents ({100 * c['share']:.1f}%) share 13-grams "
                    "with the training data.", ""]
    else:
        out += [held.get("note", "not measured"), ""]
    if report.get("continuation_task"):
        out += [report["continuation_task"], ""]
    if report["benchmarks"]:
        out += ["## Benchmarks", "", "| benchmark | format | items | acc | acc_norm | chance / perplexity | "
                "contaminated | acc without them | file sha256 |", "|---|---|---|---|---|---|---|---|---|"]
        for b in report["benchmarks"]:
            c = b.get("contamination") or {}
            clean = c.get("clean") or {}
            cont = [f"{c['items']} ({100 * c['share']:.1f}%)" if c else "–",
                    f"{clean['acc']:.4f} ± {_fmt(clean['acc_stderr'])}" if clean else "–", f"`{b['sha256'][:12]}`"]
            if b["kind"] == "multiple_choice":
                out.append("| " + " | ".join([b["name"], b["format"], str(b["items"]), f"{b['acc']:.4f} ± {_fmt(b['acc_stderr'])}",
                                              f"{b['acc_norm']:.4f} ± {_fmt(b['acc_norm_stderr'])}", f"{b['chance']:.3f}"] + cont) + " |")
            else:
                out.append("| " + " | ".join([b["name"], b["format"], str(b["items"]), f"{b['acc']:.4f} ± {_fmt(b['acc_stderr'])}",
                                              "–", f"ppl {b['perplexity']:.2f}"] + cont) + " |")
        out += ["", "acc: the choice with the highest log-likelihood; acc_norm: per character of the choice "
                    "(lm-evaluation-harness's definitions); ± one standard error. "
                    f"Decontamination: {report.get('decontamination', {}).get('method', 'off')}.", ""]
        for b in report["benchmarks"]:
            if "subjects" in b:
                out += [f"### {b['name']}: acc per subject (macro {b['acc_macro']:.4f}, micro {b['acc_micro']:.4f})", "",
                        "| subject | items | acc |", "|---|---|---|"]
                out += [f"| {name} | {v['items']} | {v['acc']:.4f} ± {_fmt(v['acc_stderr'])} |" for name, v in b["subjects"].items()]
                out.append("")
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
        uni = held.get("unigram", {}).get("bits_per_byte", float("nan"))
        axes[0].bar(["model", "unigram"], [held["bits_per_byte"], uni], yerr=[held["bits_per_byte_stderr"], 0],
                    color=["tab:blue", "tab:gray"])
        axes[0].set_ylabel(f"bits per byte ({held['set']['kind']})")
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
