"""`scratchlm ui`, `scratchlm report` and `scratchlm knobs`: registered onto the main CLI by
flows/cli.py calling `register(app)`; this module does not import flows.cli (no import circle)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def fail(message: str, code: int = 2):
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def ui(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(4200, "--port", help="Port of the UI and API."),
    home: Optional[Path] = typer.Option(None, "--home", help="PREFECT_HOME, where the SQLite database lives [default: $PREFECT_HOME or ~/.prefect]."),
):
    from flows.ui import run_ui

    raise typer.Exit(run_ui(host, port, str(home) if home else None))


def report(
    run: Optional[Path] = typer.Argument(None, help="A report folder (<store>/reports/<id>) or a JSON file of flow outputs."),
    compare_runs: Optional[list[Path]] = typer.Option(None, "--compare", help="Two runs, RUN_A RUN_B (report folders or JSON files of flow outputs)."),
):
    from flows.report import compare, load_run, render_markdown

    try:
        if compare_runs:
            if len(compare_runs) != 2:
                fail("--compare takes two runs: RUN_A RUN_B")
            typer.echo(compare(load_run(compare_runs[0]), load_run(compare_runs[1])))
        elif run is not None:
            typer.echo(render_markdown(load_run(run), {}))
        else:
            fail("give a run (report folder) or --compare RUN_A RUN_B")
    except ValueError as exc:
        fail(str(exc))


def knobs(
    write: Optional[Path] = typer.Option(None, "--write", help="Write the reference to this file (docs/knobs.md) instead of printing it."),
):
    from flows.knob_docs import knob_reference, write_knob_reference

    if write is None:
        typer.echo(knob_reference(), nl=False)
        return
    if write.is_dir():
        fail(f"--write {write}: a folder, not a file")
    changed = write_knob_reference(write)
    typer.echo(f"{'updated' if changed else 'already current'}: {write}", err=True)


def register(app: typer.Typer) -> None:
    app.command("ui", help="Start a local Prefect server and UI (SQLite under PREFECT_HOME) and say where to open it. "
                           "The UI calls the API on the same --host and --port. Then, in another shell: "
                           "export PREFECT_API_URL=http://127.0.0.1:4200/api (your port); scratchlm serve.")(ui)
    app.command("report", help="Show a run report (a report folder from `scratchlm run`), or compare two runs: "
                               "what changed upstream (artifact keys, knobs) and what it did to the funnel and the scores.")(report)
    app.command("knobs", help="Print the knob reference of every stage (markdown, generated from the config dataclasses), "
                              "or write it: scratchlm knobs --write docs/knobs.md.")(knobs)
