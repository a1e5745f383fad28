"""The run report: pure functions over the manifests of one run's artifacts (nothing heavy is
computed here; the stages already counted everything).

`write_report(outputs, folder)` writes `report.md` with its images beside it (the funnel, each
stage's report.png, the loss curve) and `run.json` (each stage's key, config, stats and folder), which
`compare(run_a, run_b)` reads to show what changed upstream and what it did to the scores.
"""
from __future__ import annotations

import json
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
    return dict(sorted(record.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))


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

def funnel_rows(record: dict[str, dict]) -> list[dict]:
    rows = []
    for stage, entry in record.items():
        stats = entry["stats"]
        dropped = sorted((stats.get("dropped") or {}).items(), key=lambda kv: -kv[1])
        rows.append({"stage": stage, **{k: stats.get(k, 0) for k in COUNTS}, "tokens": tokens_of(stats),
                     "dropped": dropped, "faults": sum((stats.get("faults") or {}).values())})
    return rows


def _funnel_plot(rows: list[dict], path: Path) -> bool:
    rows = [r for r in rows if r["docs_in"] or r["docs_out"]]
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
                      ", ".join(f"{k} {v}" for k, v in r["dropped"][:4])] for r in rows])
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
    scores = scores_of(record)
    if scores:
        lines += ["", "## Scores", ""] + _table(["measure", "value"], [[k, _fmt(v)] for k, v in scores.items()])
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
        docs = f"{a['stats'].get('docs_out', 0)} → {b['stats'].get('docs_out', 0)}"
        rows.append([stage, "same" if same else "changed", "; ".join(changes) or ("inputs" if not same else ""), docs])
    lines += _table(["stage", "artifact", "knobs changed", "docs out"], rows)
    scores_a, scores_b = scores_of(run_a), scores_of(run_b)
    names = sorted(set(scores_a) | set(scores_b))
    if names:
        lines += ["", "## Scores", ""]
        lines += _table(["measure", "A", "B", "B − A"],
                        [[n, _fmt(scores_a.get(n, "")), _fmt(scores_b.get(n, "")),
                          _fmt(scores_b[n] - scores_a[n]) if n in scores_a and n in scores_b else ""] for n in names])
    return "\n".join(lines) + "\n"


def changed_stages(run_a: dict[str, dict], run_b: dict[str, dict]) -> list[str]:
    return [s for s in run_a if s in run_b and run_a[s]["key"] != run_b[s]["key"]]
