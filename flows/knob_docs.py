"""The README's knob reference, generated from the config dataclasses (`python -m flows.knob_docs`).

A test checks the README's copy is current, so the knobs stay documented in exactly one place."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from pipeline.knobs import help_of
from pipeline.runner import RunOptions
from pipeline.stages import STAGE_MODULES, get_stage

START, END = "<!-- knobs:start -->", "<!-- knobs:end -->"


def knob_table(config_cls: type) -> str:
    rows = ["| knob | default | help |", "|---|---|---|"]
    for f in dataclasses.fields(config_cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        option = "--" + f.name.replace("_", "-")
        note = "" if f.metadata.get("in_key", True) else " *(not in the artifact key)*"
        rows.append(f"| `{option}` | `{default!r}` | {help_of(f).replace('|', '/')}{note} |")
    return "\n".join(rows)


def knob_reference() -> str:
    parts = [START, "", "Every stage also takes the run options:", "", knob_table(RunOptions), ""]
    for name in STAGE_MODULES:
        stage = get_stage(name)
        parts += [f"#### `{name}`", "", stage.description, "", knob_table(stage.config_cls), ""]
    parts.append(END)
    return "\n".join(parts)


def update_readme(readme: Path) -> bool:
    text = readme.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    new = head + knob_reference() + tail
    changed = new != text
    readme.write_text(new)
    return changed


if __name__ == "__main__":
    readme = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    print("updated" if update_readme(readme) else "already current", readme)
