"""docs/knobs.md, the knob reference, generated from the config dataclasses.

Regenerate it with `scratchlm knobs --write docs/knobs.md` (or `python -m flows.knob_docs`) after
adding a stage or a knob; a test checks the committed file is current, so the knobs stay
documented in exactly one place: their `knob(default, help)` definitions."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from pipeline.knobs import help_of
from pipeline.runner import RunOptions
from pipeline.stages import STAGE_MODULES, get_stage

KNOBS_FILE = Path(__file__).resolve().parent.parent / "docs" / "knobs.md"
REGENERATE = "scratchlm knobs --write docs/knobs.md"

HEADER = f"""# Knob reference

<!-- Generated from the config dataclasses; do not edit by hand. Regenerate: {REGENERATE} -->

Every knob of every stage, as `scratchlm stage NAME --knob-name VALUE`, as `scratchlm run --set
stage.knob_name=VALUE`, and as a field of the stage's form in the Prefect UI. Knobs marked *not in
the artifact key* change how a stage runs, not what it writes, so changing one reuses the cached
artifact.
"""


def knob_table(config_cls: type) -> str:
    rows = ["| knob | default | help |", "|---|---|---|"]
    for f in dataclasses.fields(config_cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        option = "--" + f.name.replace("_", "-")
        note = "" if f.metadata.get("in_key", True) else " *(not in the artifact key)*"
        rows.append(f"| `{option}` | `{default!r}` | {help_of(f).replace('|', '/')}{note} |")
    return "\n".join(rows)


def knob_reference() -> str:
    """The whole of docs/knobs.md."""
    parts = [HEADER, "Every stage also takes the run options:", "", knob_table(RunOptions), ""]
    for name in STAGE_MODULES:
        stage = get_stage(name)
        parts += [f"## `{name}`", "", stage.description, "", knob_table(stage.config_cls), ""]
    return "\n".join(parts)


def write_knob_reference(path: Path = KNOBS_FILE) -> bool:
    """Write the reference to `path`; True when the file changed."""
    new = knob_reference()
    old = path.read_text() if path.exists() else None
    if new != old:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(new)
    return new != old


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else KNOBS_FILE
    print("updated" if write_knob_reference(target) else "already current", target)
