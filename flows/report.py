"""The run report: pure functions over the manifests of one run's artifacts (nothing heavy is
computed here; the stages already counted everything).

`write_report(outputs, folder)` writes `report.md` with its images beside it (the funnel, each
stage's report.png, the loss curve) and `run.json` (each stage's key, config, stats and folder), which
`compare(run_a, run_b)` reads to show what changed upstream and what it did to the scores.

Scores come with a standard error and the sha256 of the set they were made on (the evaluate
stage's `scores` records). `compare` prints B − A with the standard error of the difference and
marks it "not significant" within 2 standard errors; a score made on different held-out bytes or
benchmark files in A and B is not compared (one line says why). A run repeated over seeds
(`scratchlm run --seeds 0,1,2`: stages `pretrain@seed1`, `evaluate@seed1`, ... beside the first
seed's) reports each score as the mean over seeds ± their spread (standard deviation), and its
standard error adds the seed variance of the mean to the evaluation's own (evaluation_scores).
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

from storage.store import load_manifest, write_json_atomic

RUN_FILE = "run.json"
COUNTS = ("docs_in", "docs_out", "bytes_in", "bytes_out")


# ------------------------------------------------------------------------------------- reading

def run_record(outputs: dict[str, str]) -> dict[str, dict]:
    """{stage: {folder, key, config, stats, side}} from the manifests of a flow's outputs."""
    record = {}
    for stage, folder in outputs.items():
        folder = Path(folder)
        if not (folder / "manifest.json").is_file():
            continue
        manifest = load_manifest(folder)
        record[stage] = {
            "folder": str(folder),
            "key": manifest.get("key"),
            "config": manifest.get("config", {}),
            "stats": {k: v for k, v in manifest.get("stats", {}).items() if k != "fault_messages"},
            "side": [f["file"] for f in manifest.get("side_outputs", [])],
        }
    return record


def load_run(path: str | Path) -> dict[str, dict]:
    """A report folder (its run.json), a run.json, or a JSON file of flow outputs {stage: folder}."""
    path = Path(path)
    if path.is_dir():
        if (path / RUN_FILE).is_file():
            path = path / RUN_FILE
        else:
            raise ValueError(f"{path}: not a report folder (no {RUN_FILE})")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable run record ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    if all(isinstance(v, str) for v in data.values()):  # flow outputs: {stage: artifact folder}
        return run_record({k: v for k, v in data.items() if Path(v).is_dir()})
    return in_dag_order(data.get("stages", data))


def in_dag_order(record: dict[str, dict]) -> dict[str, dict]:
    """run.json is written with sorted keys: back to the registry's (DAG) order."""
    from pipeline.stages import STAGE_MODULES

    order = list(STAGE_MODULES)
    position = lambda name: order.index(base_stage(name)) if base_stage(name) in order else len(order)  # noqa: E731
    return dict(sorted(record.items(), key=lambda kv: position(kv[0])))


def tokens_of(stats: dict) -> int | None:
    for source in (stats, stats.get("extra") or {}):
        for name in ("tokens", "n_tokens", "tokens_out"):
            if isinstance(source.get(name), (int, float)):
                return int(source[name])
    return None


def scores_of(record: dict[str, dict]) -> dict[str, float]:
    """Flat {name: number} of the evaluation stage's scores and the pretraining's final losses."""
    scores: dict[str, float] = {}
    for stage in ("pretrain", "evaluate"):
        stats = record.get(stage, {}).get("stats", {})
        for group in ("eval", "scores", "train"):
            _flatten(stats.get(group), f"{stage}.{group}", scores)
    return scores


def _flatten(value: Any, prefix: str, out: dict) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        out[prefix] = value
    elif isinstance(value, dict):
        for k, v in value.items():
            _flatten(v, f"{prefix}.{k}", out)


# ------------------------------------------------------------------------------------- writing

MODEL_STAGES = ("pretrain", "evaluate")


def base_stage(name: str) -> str:
    """`evaluate@seed1` → `evaluate` (a stage repeated over seeds)."""
    return name.split("@", 1)[0]


def model_output(stage: str, stats: dict) -> str | None:
    """What a model stage made, in place of documents in → out (it keeps no documents): tokens
    trained, items scored. None for a data stage."""
    stage = base_stage(stage)
    if stage == "pretrain":
        tokens = (stats.get("train") or {}).get("tokens_seen", stats.get("tokens"))
        return f"{tokens:,} tokens trained" if isinstance(tokens, (int, float)) else "trained"
    if stage == "evaluate":
        items = stats.get("items_scored", stats.get("docs_out", 0))
        docs = stats.get("held_out_documents")
        return f"{items:,} items scored" + (f", {docs:,} held-out documents" if docs else "")
    return None


def funnel_rows(record: dict[str, dict]) -> list[dict]:
    rows = []
    for stage, entry in record.items():
        stats = entry["stats"]
        dropped = sorted((stats.get("dropped") or {}).items(), key=lambda kv: -kv[1])
        rows.append({"stage": stage, **{k: stats.get(k, 0) for k in COUNTS}, "tokens": tokens_of(stats),
                     "dropped": dropped, "faults": sum((stats.get("faults") or {}).values()),
                     "made": model_output(stage, stats)})
    return rows


def _funnel_plot(rows: list[dict], path: Path) -> bool:
    # model stages keep no documents: drawn as "all rejected" they would mislead; the table says what they made
    rows = [r for r in rows if (r["docs_in"] or r["docs_out"]) and r["made"] is None]
    if not rows:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.5 * len(rows) + 1.5))
    names = [r["stage"] for r in rows][::-1]
    ax.barh(names, [r["docs_in"] for r in rows][::-1], color="#ccc", label="documents in")
    ax.barh(names, [r["docs_out"] for r in rows][::-1], color="#3a7", label="documents out")
    ax.set_xlabel("documents")
    ax.legend(loc="lower right")
    ax.set_title("funnel")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in rows]
    return lines


def render_markdown(record: dict[str, dict], images: dict[str, str], title: str = "scratchlm run") -> str:
    rows = funnel_rows(record)
    lines = [f"# {title}", "", "## Funnel", ""]
    lines += _table(["stage", "docs in", "docs out", "bytes in", "bytes out", "tokens", "faults", "top drop reasons"],
                    [[r["stage"], r["docs_in"], r["docs_out"], r["bytes_in"], r["bytes_out"],
                      "" if r["tokens"] is None else r["tokens"], r["faults"],
                      ", ".join(f"{k} {v}" for k, v in r["dropped"][:4])] if r["made"] is None else
                     [r["stage"], "", r["made"], r["bytes_in"], r["bytes_out"], "" if r["tokens"] is None else r["tokens"],
                      r["faults"], ""] for r in rows])
    if "funnel" in images:
        lines += ["", f"![funnel]({images['funnel']})"]
    for row in rows:
        if row["stage"] == "tokenize" and row["tokens"]:
            lines += ["", f"**Bytes per token**: {row['bytes_in'] / row['tokens']:.3f} (text bytes in / tokens out)"]
        per_language = record[row["stage"]]["stats"].get("bytes_per_token")
        if isinstance(per_language, dict) and per_language:
            lines += ["", f"**Bytes per token by language** ({row['stage']}): "
                      + ", ".join(f"{k} {v}" for k, v in per_language.items())]
    stage_images = [(k, v) for k, v in images.items() if k != "funnel"]
    if stage_images:
        lines += ["", "## Signals, clusters, loss", ""]
        lines += [f"### {name}\n\n![{name}]({file})\n" for name, file in stage_images]
    measured = evaluation_scores(record)
    if measured:
        lines += ["", "## Scores", "", "± one standard error" + (f"; mean ± spread over {_seeds_of(record)} seeds"
                                                                  if _seeds_of(record) > 1 else "") + ".", ""]
        lines += _table(["measure", "value", "set (sha256)", "contaminated", "without contaminated"],
                        [[name, _value(s), f"{s['set']} ({s['sha256'][:12]})", _contaminated(s), _clean(s)]
                         for name, s in measured.items()])
    scores = {k: v for k, v in scores_of(record).items() if not k.startswith("evaluate.")} if measured else scores_of(record)
    if scores:
        lines += ["", "## Training" if measured else "## Scores", ""] + _table(["measure", "value"], [[k, _fmt(v)] for k, v in scores.items()])
    lines += ["", "## Stages: key and config", ""]
    for stage, entry in record.items():
        lines += [f"### {stage}", "", f"key `{entry['key']}` — `{entry['folder']}`", "",
                  "```json", json.dumps(entry["config"], indent=1, sort_keys=True, default=str), "```", ""]
    return "\n".join(lines) + "\n"


def _fmt(value: float) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_report(outputs: dict[str, str], folder: str | Path, title: str = "scratchlm run") -> Path:
    """report.md, its images and run.json in `folder`; returns the report.md path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    record = run_record(outputs)
    images: dict[str, str] = {}
    if _funnel_plot(funnel_rows(record), folder / "funnel.png"):
        images["funnel"] = "funnel.png"
    for stage, entry in record.items():
        for side in entry["side"]:
            if side.endswith(".png"):
                name = f"{stage}-{side}"
                shutil.copyfile(Path(entry["folder"]) / side, folder / name)
                images[f"{stage} {side[:-4]}"] = name
    write_json_atomic(folder / RUN_FILE, {"stages": record})
    report = folder / "report.md"
    report.write_text(render_markdown(record, images, title))
    return report


# ------------------------------------------------------------------------------------ comparing

def _config_changes(a: dict, b: dict) -> list[str]:
    keys = sorted(set(a) | set(b))
    return [f"{k}: {a.get(k)!r} → {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]


def compare(run_a: dict[str, dict], run_b: dict[str, dict]) -> str:
    """Markdown: which stages changed (key), which knobs, how the funnel and the scores moved."""
    lines = ["# Run comparison (A → B)", "", "## Stages", ""]
    rows = []
    for stage in list(dict.fromkeys(list(run_a) + list(run_b))):
        a, b = run_a.get(stage), run_b.get(stage)
        if a is None or b is None:
            rows.append([stage, "only in " + ("B" if a is None else "A"), "", ""])
            continue
        same = a["key"] == b["key"]
        changes = _config_changes(a["config"], b["config"])
        made_a, made_b = model_output(stage, a["stats"]), model_output(stage, b["stats"])
        out = f"{made_a} → {made_b}" if made_a else f"{a['stats'].get('docs_out', 0)} → {b['stats'].get('docs_out', 0)} docs"
        rows.append([stage, "same" if same else "changed", "; ".join(changes) or ("inputs" if not same else ""), out])
    lines += _table(["stage", "artifact", "knobs changed", "output"], rows)
    measured_a, measured_b = evaluation_scores(run_a), evaluation_scores(run_b)
    if measured_a or measured_b:
        lines += ["", "## Scores", "",
                  "± one standard error (over documents or items" + ("; with seeds, the seed variance of the mean added"
                                                                     if max(_seeds_of(run_a), _seeds_of(run_b)) > 1 else "")
                  + "). B − A is marked not significant when it is within 2 standard errors of 0. Its standard "
                    "error is paired when both runs kept per-document (per-item) results on the same set: the "
                    "spread of the differences, document by document; otherwise independent, sqrt(se_A² + se_B²), "
                    "which overstates the noise of two models scored on the same documents.", ""]
        rows, refused = [], []
        for name in sorted(set(measured_a) | set(measured_b)):
            a, b = measured_a.get(name), measured_b.get(name)
            if a is None or b is None:
                refused.append(f"- {name}: only in {'B' if a is None else 'A'}")
                continue
            if a["sha256"] != b["sha256"]:
                what = "held-out bytes" if name.startswith("held_out.") else "benchmark files"
                refused.append(f"- {name}: not comparable, made on different {what} "
                               f"(A: {a['set']} {a['sha256'][:12]}, B: {b['set']} {b['sha256'][:12]})")
                continue
            if a.get("tokenizer_sha256") != b.get("tokenizer_sha256"):
                refused.append(f"- {name}: not comparable, nats per token of different tokenizers "
                               "(bits per byte compares them)")
                continue
            diff = b["value"] - a["value"]
            se, how = paired_stderr(name, run_a, run_b), "paired"
            if se is None:
                se, how = _hypot(a.get("stderr"), b.get("stderr")), "independent"
            verdict = "–" if se is None else ("not significant" if abs(diff) <= 2 * se else
                                              "significant, " + ("better" if (diff < 0) == bool(a.get("lower_is_better"))
                                                                 else "worse"))
            rows.append([name, _value(a), _value(b), f"{diff:+.4f}" + (f" ± {se:.4f} ({how})" if se is not None else ""),
                         verdict, f"{_contaminated(a)} → {_contaminated(b)}", f"{_clean(a)} → {_clean(b)}",
                         a["sha256"][:12]])
        if rows:
            lines += _table(["measure", "A", "B", "B − A", "significance", "contaminated", "without contaminated",
                             "set sha256"], rows)
        if refused:
            lines += [""] + refused
    scores_a, scores_b = scores_of(run_a), scores_of(run_b)
    if measured_a or measured_b:  # the evaluation's scores are above, with their errors
        scores_a = {k: v for k, v in scores_a.items() if not k.startswith("evaluate.")}
        scores_b = {k: v for k, v in scores_b.items() if not k.startswith("evaluate.")}
    names = sorted(set(scores_a) | set(scores_b))
    if names:
        lines += ["", "## Training" if measured_a or measured_b else "## Scores", ""]
        lines += _table(["measure", "A", "B", "B − A"],
                        [[n, _fmt(scores_a.get(n, "")), _fmt(scores_b.get(n, "")),
                          _fmt(scores_b[n] - scores_a[n]) if n in scores_a and n in scores_b else ""] for n in names])
    return "\n".join(lines) + "\n"


def _per_unit(entry: dict, name: str):
    """(numerator, denominator) per document or item behind a score, from the evaluate
    artifact's eval.json; None when it did not keep them."""
    try:
        report = json.loads((Path(entry["folder"]) / "eval.json").read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return None
    group, _, metric = name.partition(".")
    if group == "held_out":
        units = report.get("held_out", {}).get("per_document") or {}
        pair = {"bits_per_byte": ("bits", "bytes"), "loss": ("nats", "tokens")}.get(metric)
        return (units[pair[0]], units[pair[1]]) if pair and pair[0] in units else None
    for bench in report.get("benchmarks", []):
        if bench.get("name") == group and metric in (bench.get("per_item") or {}):
            outcomes = bench["per_item"][metric]
            return outcomes, [1] * len(outcomes)
    return None


def paired_stderr(name: str, run_a: dict[str, dict], run_b: dict[str, dict]) -> float | None:
    """Standard error of B − A over the same documents (items): the delta method for the
    difference of two ratios Σx/Σy, per document d_i = (x_Bi − R_B·y_Bi)/ȳ_B − (x_Ai − R_A·y_Ai)/ȳ_A,
    se = sqrt(Σ d_i² / (n (n − 1))). Only for single runs (no seeds) that kept per-unit results."""
    if _seeds_of(run_a) != 1 or _seeds_of(run_b) != 1 or "evaluate" not in run_a or "evaluate" not in run_b:
        return None
    a, b = _per_unit(run_a["evaluate"], name), _per_unit(run_b["evaluate"], name)
    if a is None or b is None or len(a[0]) != len(b[0]) or len(a[0]) < 2:
        return None
    terms = []
    for x, y in (a, b):
        total_x, total_y = float(sum(x)), float(sum(y))
        if total_y <= 0:
            return None
        ratio, mean_y = total_x / total_y, total_y / len(y)
        terms.append([(xi - ratio * yi) / mean_y for xi, yi in zip(x, y)])
    d = [tb - ta for ta, tb in zip(*terms)]
    return math.sqrt(sum(v * v for v in d) / (len(d) * (len(d) - 1)))


def _hypot(a, b) -> float | None:
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or math.isnan(a) or math.isnan(b):
        return None
    return math.hypot(a, b)


def _value(score: dict) -> str:
    text = f"{score['value']:.4f}"
    if isinstance(score.get("stderr"), (int, float)) and not math.isnan(score["stderr"]):
        text += f" ± {score['stderr']:.4f}"
    if score.get("seeds", 1) > 1:
        text += f" (mean of {score['seeds']} seeds, spread {score['spread']:.4f})"
    return text


def _contaminated(score: dict) -> str:
    if score.get("contaminated") is None:
        return "not checked"
    return f"{score['contaminated']}/{score['items']}"


def _clean(score: dict) -> str:
    if not isinstance(score.get("clean_value"), (int, float)):
        return "–"
    stderr = score.get("clean_stderr")
    return f"{score['clean_value']:.4f}" + (f" ± {stderr:.4f}" if isinstance(stderr, (int, float)) and not math.isnan(stderr) else "")


def _seeds_of(record: dict[str, dict]) -> int:
    return sum(1 for stage in record if base_stage(stage) == "evaluate")


def evaluation_scores(record: dict[str, dict]) -> dict[str, dict]:
    """{name: score record} of the run's evaluation (the evaluate stage's score_records). Over k
    seeds: the mean, its spread (the standard deviation across seeds, sd) and a standard error of
    sqrt(mean se² + sd²/k): seed noise averages out over seeds, the error of the held-out sample
    does not (every seed is scored on the same documents)."""
    runs = [entry["stats"].get("scores") for stage, entry in record.items() if base_stage(stage) == "evaluate"]
    runs = [{s["name"]: s for s in scores} for scores in runs if scores]
    if not runs:
        return {}
    out = {}
    for name, first in runs[0].items():
        members = [r[name] for r in runs if name in r]
        if len(members) == 1:
            out[name] = dict(first)
            continue
        values = [m["value"] for m in members]
        k = len(values)
        mean = sum(values) / k
        spread = math.sqrt(sum((v - mean) ** 2 for v in values) / (k - 1))
        within = [m["stderr"] for m in members if isinstance(m.get("stderr"), (int, float)) and not math.isnan(m["stderr"])]
        within_var = sum(e * e for e in within) / len(within) if within else 0.0
        cleans = [m["clean_value"] for m in members if isinstance(m.get("clean_value"), (int, float))]
        out[name] = {**first, "value": mean, "stderr": math.sqrt(within_var + spread ** 2 / k), "seeds": k, "spread": spread, "values": values,
                     "sha256": first["sha256"] if all(m["sha256"] == first["sha256"] for m in members) else "mixed",
                     "contaminated": max((m["contaminated"] for m in members if m.get("contaminated") is not None), default=None),
                     "clean_value": sum(cleans) / len(cleans) if len(cleans) == k else None, "clean_stderr": None}
    return out


def changed_stages(run_a: dict[str, dict], run_b: dict[str, dict]) -> list[str]:
    return [s for s in run_a if s in run_b and run_a[s]["key"] != run_b[s]["key"]]
