"""Our `evaluate` against lm-evaluation-harness on the same model and the same JSONL files.

    make lm-eval-venv                      # lm-eval 0.4.13 in .venv-lmeval (reuses .venv's torch/transformers)
    .venv/bin/python benchmarks/lm_eval_parity.py --checkpoint ARTIFACT_OR_CHECKPOINT \\
        --benchmark task.jsonl [--benchmark more.jsonl] [--limit 500] [--out benchmarks/lm_eval_parity.json]

The checkpoint is exported with `model.export.export_hf` (what `scratchlm export --format hf`
does), each benchmark file becomes a local lm-eval task (a YAML with the prompt lm-eval uses for
that format: hellaswag `{{ctx}}`, ARC and PIQA `Question: ...\\nAnswer:`, LAMBADA the text
without its last word), and `lm-eval run --model hf` scores it on CPU in float32. Ours scores the
same file with `model.evaluate`. Printed and written: acc, acc_norm (LAMBADA: acc, perplexity) of
both, and the largest difference of any per-choice log-likelihood (from lm-eval's --log_samples).

lm-eval runs in its own venv as a subprocess (like datatrove in benchmarks/run_all.py): its
dependencies (datasets, evaluate, ...) stay out of ours. Nothing is downloaded: the task reads a
local file through the `json` dataset builder, HF_HUB_OFFLINE and HF_DATASETS_OFFLINE are set."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TASK_PROMPTS = {  # lm-eval's own prompts for these formats (lm_eval/tasks/{hellaswag,arc,piqa,lambada})
    "hellaswag": dict(doc_to_text="{{ctx}}", doc_to_choice="{{endings}}", doc_to_target="{{label}}"),
    "arc": dict(doc_to_text="Question: {{question}}\nAnswer:", doc_to_choice="{{choices.text}}",
                doc_to_target="{{choices.label.index(answerKey)}}"),
    "piqa": dict(doc_to_text="Question: {{goal}}\nAnswer:", doc_to_choice="{{[sol1, sol2]}}", doc_to_target="{{label}}"),
}


def task_yaml(name: str, path: Path, format: str) -> str:
    lines = [f"task: {name}", "dataset_path: json", "dataset_kwargs:", "  data_files:",
             f"    test: {json.dumps(str(path.resolve()))}", "test_split: test"]
    if format == "lambada":
        lines += ["output_type: loglikelihood",
                  "doc_to_text: \"{{text.split(' ')[:-1]|join(' ')}}\"",
                  "doc_to_target: \"{{' '+text.split(' ')[-1]}}\"",
                  "metric_list:", "  - metric: perplexity", "    aggregation: perplexity", "    higher_is_better: false",
                  "  - metric: acc", "    aggregation: mean", "    higher_is_better: true"]
    else:
        lines += ["output_type: multiple_choice"]
        lines += [f"{k}: {json.dumps(v)}" for k, v in TASK_PROMPTS[format].items()]
        lines += ["metric_list:", "  - metric: acc", "    aggregation: mean", "    higher_is_better: true",
                  "  - metric: acc_norm", "    aggregation: mean", "    higher_is_better: true"]
    return "\n".join(lines) + "\n"


def run_lm_eval(python: str, hf_dir: Path, tasks_dir: Path, names: list[str], out_dir: Path, limit: int,
                batch_size: int) -> tuple[dict, dict, float]:
    cmd = [python, "-m", "lm_eval", "run", "--model", "hf",
           "--model_args", f"pretrained={hf_dir},dtype=float32",
           "--tasks", ",".join(names), "--include_path", str(tasks_dir), "--device", "cpu",
           "--batch_size", str(batch_size), "--output_path", str(out_dir), "--log_samples"]
    if limit:
        cmd += ["--limit", str(limit)]
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
    parser.add_argument("--benchmark", action="append", required=True, help="Benchmark JSONL (repeatable).")
    parser.add_argument("--limit", type=int, default=0, help="First N items of each (0: all).")
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
    model, tokenizer_path, meta = load_model(args.checkpoint)
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    work = Path(tempfile.mkdtemp(prefix="lm-eval-parity-"))
    hf_dir = export_hf(model, tokenizer_path, work / "hf")
    tasks_dir = work / "tasks"
    tasks_dir.mkdir()
    benchmarks, names = [], []
    for n, path in enumerate(args.benchmark):
        bench = read_benchmark(path, limit=args.limit)
        name = f"scratchlm_parity_{n}_{bench.format}"
        (tasks_dir / f"{name}.yaml").write_text(task_yaml(name, Path(path), bench.format))
        benchmarks.append(bench)
        names.append(name)

    results, samples, lm_eval_seconds = run_lm_eval(args.lm_eval_python, hf_dir, tasks_dir, names, work / "out",
                                                     args.limit, args.batch_size)
    report = {"checkpoint": str(args.checkpoint), "step": meta.get("step"), "lm_eval_seconds": round(lm_eval_seconds, 1),
              "benchmarks": []}
    for bench, name in zip(benchmarks, names):
        started = time.perf_counter()
        if bench.kind == "multiple_choice":
            ours = score_multiple_choice(model, tokenizer, bench.items, args.batch_size)
            our_lls = [r["loglikelihoods"] for r in ours.per_item]
            keys = ("acc", "acc_norm")
        else:
            ours = score_cloze(model, tokenizer, bench.items, args.batch_size)
            our_lls = [[r["loglikelihood"]] for r in ours.per_item]
            keys = ("acc", "perplexity")
        ours_seconds = time.perf_counter() - started
        theirs = results[name]
        their_lls = [samples[name][i] for i in range(len(bench.items))]
        diff = max(float(np.max(np.abs(np.array(a) - np.array(b)))) for a, b in zip(our_lls, their_lls))
        row = {"file": str(bench.path), "format": bench.format, "items": len(bench.items),
               "max_abs_loglikelihood_diff": diff, "ours_seconds": round(ours_seconds, 2)}
        for key in keys:
            row[key] = {"ours": ours.metrics[key], "lm_eval": theirs[f"{key},none"]}
            if f"{key}_stderr,none" in theirs:
                row[key].update(ours_stderr=ours.metrics.get(f"{key}_stderr"), lm_eval_stderr=theirs[f"{key}_stderr,none"])
        report["benchmarks"].append(row)
        # accuracies must be equal; a perplexity is exp of a mean of float32 sums, equal to ~1e-6
        same = all(row[k]["ours"] == row[k]["lm_eval"] if k.startswith("acc") else
                   abs(row[k]["ours"] - row[k]["lm_eval"]) <= 1e-6 * abs(row[k]["lm_eval"]) for k in keys)
        row["same"] = same
        print(f"{bench.path.name} ({bench.format}, {len(bench.items)} items): "
              + ", ".join(f"{k} ours {row[k]['ours']:.4f} lm-eval {row[k]['lm_eval']:.4f}" for k in keys)
              + f"; max |Δ log-likelihood| {diff:.2e}; {'SAME' if same else 'DIFFERENT'}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"lm-eval took {lm_eval_seconds:.0f} s (start-up included); work folder {work}")


if __name__ == "__main__":
    main()
