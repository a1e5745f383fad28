"""Our `evaluate` against lm-evaluation-harness's OWN task definitions, on the same model and files.

    make lm-eval-venv                      # lm-eval 0.4.13 in .venv-lmeval (reuses .venv's torch/transformers)
    .venv/bin/python benchmarks/lm_eval_parity.py --checkpoint ARTIFACT_OR_CHECKPOINT \\
        --from-tokens TOKENIZE_ARTIFACT [--items 100] [--out benchmarks/lm_eval_parity.json]
    .venv/bin/python benchmarks/lm_eval_parity.py --checkpoint ... --benchmark hellaswag.jsonl --benchmark mmlu.jsonl ...

Each benchmark file is run through the task lm-eval ships for its format, not a task written here:
a small YAML that `include`s the installed lm_eval/tasks/<task>.yaml (so its doc_to_text,
doc_to_choice, doc_to_target, process_docs and metrics are lm-eval's) and overrides only where
the data comes from: `dataset_path: json` with `data_files` naming the local file, and the split
names. The tasks: hellaswag/hellaswag.yaml (with utils.process_docs, its preprocessing),
mmlu/default/mmlu_<subject>.yaml (one task per subject in the file, each with its own
description), arc/arc_easy.yaml, piqa/piqa.yaml, lambada/lambada_openai.yaml.

`--from-tokens` makes the five files first (in the work folder) from the crawl-made continuation
task of a token artifact's documents, written in each benchmark's published fields: HellaSwag
(activity_label, ctx_a, ctx_b, endings, label; a third of the items with WikiHow's [header] and
[title] markers, so the preprocessing is exercised), MMLU (question, subject, choices, answer; three
real MMLU subjects), ARC, PIQA and LAMBADA.

The checkpoint is exported with `model.export.export_hf`, and `lm-eval run --model hf` scores it
on CPU in float32. Ours scores the same files with `model.evaluate`. Printed and written: acc,
acc_norm (MMLU: acc per subject, macro and micro; LAMBADA: acc, perplexity) of both, and the largest
difference of any per-choice log-likelihood (from lm-eval's --log_samples).

lm-eval runs in its own venv as a subprocess: its dependencies stay out of ours. Nothing is
downloaded: HF_HUB_OFFLINE and HF_DATASETS_OFFLINE are set."""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# The format's lm-eval task (relative to lm_eval/tasks) and the split its YAML reads.
TASKS = {"hellaswag": ("hellaswag/hellaswag.yaml", "validation"), "arc": ("arc/arc_easy.yaml", "test"),
         "piqa": ("piqa/piqa.yaml", "validation"), "lambada": ("lambada/lambada_openai.yaml", "test"),
         "mmlu": ("mmlu/default/mmlu_{subject}.yaml", "test")}
MMLU_SUBJECTS = ("computer_security", "high_school_computer_science", "college_computer_science")


def lm_eval_tasks_dir(python: str) -> Path:
    out = subprocess.run([python, "-c", "import lm_eval, os; print(os.path.dirname(lm_eval.__file__))"],
                         capture_output=True, text=True, check=True)
    return Path(out.stdout.strip()) / "tasks"


def task_yaml(name: str, base: Path, split: str, data: Path) -> str:
    """lm-eval's own task, reading a local JSONL file: only the data source and split names change."""
    splits = {"training_split": None, "validation_split": None, "test_split": None, "fewshot_split": None}
    splits[f"{split}_split"] = split
    files = {split: str(data.resolve())}
    if "mmlu" in str(base):  # its template names a fewshot split (dev); zero-shot never reads it
        files["dev"], splits["fewshot_split"] = str(data.resolve()), "dev"
    lines = [f"include: {json.dumps(str(base))}", f"task: {name}", "dataset_path: json", "dataset_name: null",
             "dataset_kwargs:", "  data_files:"] + [f"    {k}: {json.dumps(v)}" for k, v in files.items()]
    lines += [f"{k}: {'null' if v is None else v}" for k, v in splits.items()]
    return "\n".join(lines) + "\n"


def make_files(tokens: Path, out_dir: Path, items: int, seed: int = 0) -> list[Path]:
    """The five benchmark files in their published fields, from the crawl-made continuation task."""
    from model.benchmarks import ContinuationTaskConfig, continuation_items, read_held_out_documents

    config = ContinuationTaskConfig(items=items, per_document=0, seed=seed)
    made = continuation_items(read_held_out_documents([tokens], split=None), config)
    rng = random.Random(seed)
    letters = ["A", "B", "C", "D"]
    rows: dict[str, list[dict]] = {k: [] for k in ("hellaswag", "mmlu", "arc", "piqa", "lambada")}
    for n, item in enumerate(made):
        words, endings, label = item["ctx"].split(), item["endings"], item["label"]
        ctx_a, ctx_b = " ".join(words[:-5]), " ".join(words[-5:]).lower()
        if n % 3 == 0:  # WikiHow's markers, which lm-eval's process_docs removes
            ctx_a = f"[header] {' '.join(words[:4])} [title] {' '.join(words[4:-5])}"
        rows["hellaswag"].append({"ind": n, "activity_label": " ".join(words[:2]).title(), "ctx_a": ctx_a, "ctx_b": ctx_b,
                                  "ctx": f"{ctx_a} {ctx_b}", "endings": [e + (" [step]" if n % 5 == 0 else "") for e in endings],
                                  "label": str(label)})
        rows["mmlu"].append({"question": item["ctx"] + "?", "subject": MMLU_SUBJECTS[n % len(MMLU_SUBJECTS)],
                             "choices": endings, "answer": label})
        labels = letters if n % 4 else ["1", "2", "3", "4"]  # ARC has both kinds
        rows["arc"].append({"id": str(n), "question": item["ctx"], "choices": {"text": endings, "label": labels},
                            "answerKey": labels[label]})
        rows["piqa"].append({"goal": item["ctx"], "sol1": endings[0], "sol2": endings[1], "label": 0 if label == 0 else 1})
        rows["lambada"].append({"text": item["ctx"] + " " + endings[label].split()[0]})
    rng.shuffle(rows["lambada"])
    paths = []
    for name, records in rows.items():
        path = out_dir / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        paths.append(path)
    return paths


def run_lm_eval(python: str, hf_dir: Path, tasks_dir: Path, names: list[str], out_dir: Path,
                batch_size: int) -> tuple[dict, dict, float]:
    cmd = [python, "-m", "lm_eval", "run", "--model", "hf",
           "--model_args", f"pretrained={hf_dir},dtype=float32",
           "--tasks", ",".join(names), "--include_path", str(tasks_dir), "--device", "cpu",
           "--batch_size", str(batch_size), "--output_path", str(out_dir), "--log_samples"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               HF_DATASETS_CACHE=str(out_dir / "datasets-cache"))
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"lm-eval failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    results_file = max(out_dir.rglob("results_*.json"), key=lambda p: p.stat().st_mtime)
    results = json.loads(results_file.read_text())["results"]
    samples = {}
    for name in names:
        sample_file = max(out_dir.rglob(f"samples_{name}_*.jsonl"), key=lambda p: p.stat().st_mtime)
        rows = [json.loads(line) for line in sample_file.read_text().splitlines() if line.strip()]
        samples[name] = {row["doc_id"]: [float(r[0][0]) for r in row["resps"]] for row in rows}
    return results, samples, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="Pretrain artifact or checkpoint folder.")
    parser.add_argument("--benchmark", action="append", default=[], help="Benchmark JSONL (repeatable).")
    parser.add_argument("--from-tokens", type=Path, help="Make the five files from this token artifact's documents.")
    parser.add_argument("--items", type=int, default=100, help="Items per file made with --from-tokens.")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lm-eval-python", default=str(REPO / ".venv-lmeval" / "bin" / "python"))
    parser.add_argument("--out", type=Path, default=None, help="Write the comparison here as JSON.")
    args = parser.parse_args()

    import numpy as np
    from tokenizers import Tokenizer

    from model.benchmarks import read_benchmark
    from model.checkpoint import load_model
    from model.evaluate import score_cloze, score_multiple_choice
    from model.export import export_hf

    if not Path(args.lm_eval_python).exists():
        sys.exit(f"{args.lm_eval_python}: no lm-eval venv (make lm-eval-venv)")
    official = lm_eval_tasks_dir(args.lm_eval_python)
    model, tokenizer_path, meta = load_model(args.checkpoint)
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    work = Path(tempfile.mkdtemp(prefix="lm-eval-parity-"))
    files = [Path(p) for p in args.benchmark]
    if args.from_tokens:
        (work / "files").mkdir()
        files += make_files(args.from_tokens, work / "files", args.items)
    hf_dir = export_hf(model, tokenizer_path, work / "hf")
    tasks_dir = work / "tasks"
    tasks_dir.mkdir()
    plan = []  # (benchmark, [(lm-eval task name, indices of the benchmark's items in its file)])
    for n, path in enumerate(files):
        bench = read_benchmark(path)
        base, split = TASKS[bench.format]
        if bench.format == "mmlu":
            records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            parts = []
            for subject in sorted({r["subject"] for r in records}):
                name = f"scratchlm_parity_{n}_mmlu_{subject}"
                indices = [i for i, r in enumerate(records) if r["subject"] == subject]
                data = tasks_dir / f"{name}.jsonl"
                data.write_text("".join(json.dumps(records[i]) + "\n" for i in indices))
                subject_yaml = official / base.format(subject=subject)
                if not subject_yaml.is_file():
                    sys.exit(f"{path}: subject {subject!r} is not one of lm-eval's MMLU tasks")
                (tasks_dir / f"{name}.yaml").write_text(task_yaml(name, subject_yaml, split, data))
                parts.append((name, indices))
        else:
            name = f"scratchlm_parity_{n}_{bench.format}"
            (tasks_dir / f"{name}.yaml").write_text(task_yaml(name, official / base, split, path))
            parts = [(name, list(range(len(bench.items))))]
        plan.append((bench, parts))

    names = [name for _, parts in plan for name, _ in parts]
    results, samples, lm_eval_seconds = run_lm_eval(args.lm_eval_python, hf_dir, tasks_dir, names, work / "out",
                                                     args.batch_size)
    report = {"checkpoint": str(args.checkpoint), "step": meta.get("step"), "lm_eval_version": "0.4.13",
              "lm_eval_seconds": round(lm_eval_seconds, 1), "benchmarks": []}
    all_same = True
    for bench, parts in plan:
        started = time.perf_counter()
        if bench.kind == "multiple_choice":
            ours = score_multiple_choice(model, tokenizer, bench.items, args.batch_size)
            our_lls = [r["loglikelihoods"] for r in ours.per_item]
        else:
            ours = score_cloze(model, tokenizer, bench.items, args.batch_size)
            our_lls = [[r["loglikelihood"]] for r in ours.per_item]
        ours_seconds = time.perf_counter() - started
        their_lls = [None] * len(bench.items)
        for name, indices in parts:
            for doc_id, i in enumerate(indices):
                their_lls[i] = samples[name][doc_id]
        diff = max(float(np.max(np.abs(np.array(a) - np.array(b)))) for a, b in zip(our_lls, their_lls))
        row = {"file": str(bench.path), "format": bench.format, "items": len(bench.items), "sha256": bench.sha256,
               "lm_eval_tasks": [TASKS[bench.format][0].format(subject=name.split("_mmlu_")[-1]) for name, _ in parts],
               "max_abs_loglikelihood_diff": diff, "ours_seconds": round(ours_seconds, 2)}
        pairs = []  # (what, ours, lm-eval's)
        if bench.format == "mmlu":
            sizes = {name: len(indices) for name, indices in parts}
            for name, _ in parts:
                subject = name.split("_mmlu_")[-1]
                pairs.append((f"acc[{subject}]", ours.metrics["subjects"][subject]["acc"], results[name]["acc,none"]))
            theirs = [results[name]["acc,none"] for name, _ in parts]
            pairs.append(("acc_macro", ours.metrics["acc_macro"], float(np.mean(theirs))))
            pairs.append(("acc_micro", ours.metrics["acc_micro"],
                          float(sum(results[n]["acc,none"] * sizes[n] for n in sizes) / sum(sizes.values()))))
        else:
            theirs = results[parts[0][0]]
            for key in (("acc", "acc_norm") if bench.kind == "multiple_choice" else ("acc", "perplexity")):
                pairs.append((key, ours.metrics[key], theirs[f"{key},none"]))
                if f"{key}_stderr,none" in theirs and ours.metrics.get(f"{key}_stderr") is not None:
                    pairs.append((f"{key}_stderr", ours.metrics.get(f"{key}_stderr"), theirs[f"{key}_stderr,none"]))
        for what, a, b in pairs:
            row[what] = {"ours": a, "lm_eval": b}
        # accuracies equal to the last bit of a mean; a perplexity is exp of a mean of float32 sums, ~1e-6
        same = all(abs(a - b) <= (1e-6 * abs(b) if what == "perplexity" else 1e-12) for what, a, b in pairs
                   if not what.endswith("_stderr")) and all(abs(a - b) <= 1e-9 for what, a, b in pairs if what.endswith("_stderr"))
        row["same"] = same
        all_same &= same
        report["benchmarks"].append(row)
        print(f"{bench.path.name} ({bench.format}, {len(bench.items)} items, lm-eval task {', '.join(row['lm_eval_tasks'])}): "
              + ", ".join(f"{what} ours {a:.4f} lm-eval {b:.4f}" for what, a, b in pairs if not what.endswith("_stderr"))
              + f"; max |Δ log-likelihood| {diff:.2e}; {'SAME' if same else 'DIFFERENT'}")
    report["all_same"] = all_same
    report["command"] = "benchmarks/lm_eval_parity.py " + " ".join(sys.argv[1:])
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"lm-eval took {lm_eval_seconds:.0f} s (start-up included); work folder {work}")
    if not all_same:
        sys.exit(1)


if __name__ == "__main__":
    main()
