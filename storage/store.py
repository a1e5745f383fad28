"""Artifact folders: `<root>/<stage>/<key>/` holding data files and `manifest.json`.

A folder is complete exactly when its manifest exists. Everything is written into a hidden temp
folder beside the final one and renamed into place with the manifest already inside, so a crash
at any point leaves either nothing or a dot-folder that no lookup ever returns.
"""
from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from storage.keys import file_digest, remember_digest

MANIFEST = "manifest.json"
ROOT_ENV = "SCRATCHLM_STORE"
STALE_TEMP_SECONDS = 24 * 3600


def default_root() -> Path:
    return Path(os.environ.get(ROOT_ENV, "artifacts"))


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


class AtomicDir:
    """A folder that appears at `final` only once `commit(manifest)` has written its manifest.

    Used as a context manager: leaving the block without commit (an exception) removes the temp
    folder. If another process committed the same key first, ours is discarded: equal keys mean
    equal content, so either copy is right.
    """

    def __init__(self, final: Path, manifest_name: str = MANIFEST):
        self.final = Path(final)
        self.manifest_name = manifest_name
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.final.parent / f".tmp-{self.final.name}-{uuid.uuid4().hex[:8]}"
        self.tmp.mkdir()
        self.committed = False

    def path(self, name: str) -> Path:
        return self.tmp / name

    def commit(self, manifest: dict) -> Path:
        write_json_atomic(self.tmp / self.manifest_name, manifest)
        try:
            os.rename(self.tmp, self.final)
        except OSError:
            if not (self.final / self.manifest_name).exists():
                # A leftover incomplete folder from an older layout: replace it.
                shutil.rmtree(self.final, ignore_errors=True)
                os.rename(self.tmp, self.final)
            else:
                shutil.rmtree(self.tmp, ignore_errors=True)
        self.committed = True
        return self.final

    def __enter__(self) -> "AtomicDir":
        return self

    def __exit__(self, *exc) -> None:
        if not self.committed:
            shutil.rmtree(self.tmp, ignore_errors=True)


def describe_file(path: Path, rows: int | None = None) -> dict:
    entry = {"file": path.name, "bytes": path.stat().st_size, "sha256": file_digest(path).split(":", 1)[1]}
    if rows is not None:
        entry["rows"] = rows
    return entry


class ArtifactStore:
    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_root()

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def exists(self, stage: str, key: str) -> bool:
        return (self.path(stage, key) / MANIFEST).is_file()

    def manifest(self, stage: str, key: str) -> dict:
        return load_manifest(self.path(stage, key))

    def open(self, stage: str, key: str) -> AtomicDir:
        return AtomicDir(self.path(stage, key))

    def shard_path(self, stage: str, shard_key: str) -> Path:
        return self.root / stage / "_shards" / shard_key

    def artifacts(self, stage: str) -> list[Path]:
        folder = self.root / stage
        if not folder.is_dir():
            return []
        found = [p for p in folder.iterdir() if (p / MANIFEST).is_file()]
        return sorted(found, key=lambda p: (p / MANIFEST).stat().st_mtime)

    def remove_stale_temps(self, max_age_s: float = STALE_TEMP_SECONDS) -> int:
        """Delete temp folders left by crashed runs (never touches complete artifacts)."""
        removed = 0
        now = time.time()
        for tmp in self.root.glob("**/.tmp-*"):
            if tmp.is_dir() and now - tmp.stat().st_mtime > max_age_s:
                shutil.rmtree(tmp, ignore_errors=True)
                removed += 1
        return removed


def load_manifest(folder: str | os.PathLike) -> dict:
    return json.loads((Path(folder) / MANIFEST).read_text())


def is_artifact(folder: str | os.PathLike) -> bool:
    return (Path(folder) / MANIFEST).is_file()


def artifact_data_files(folder: str | os.PathLike) -> list[Path]:
    """The data files an artifact lists, with their digests seeded from the manifest."""
    folder = Path(folder)
    manifest = load_manifest(folder)
    files = []
    for entry in manifest.get("outputs", []):
        path = folder / entry["file"]
        remember_digest(path, "sha256:" + entry["sha256"])
        files.append(path)
    return files


def export_artifact(source: str | os.PathLike, destination: str | os.PathLike) -> Path:
    """Place a copy of a complete artifact at `destination` (hard links where possible).

    The copy is written to a temp folder and renamed, manifest inside, so it is complete or absent.
    An existing artifact with the same key there is kept; anything else there is an error."""
    source, destination = Path(source), Path(destination)
    if destination.exists():
        if is_artifact(destination) and load_manifest(destination).get("key") == load_manifest(source).get("key"):
            return destination
        if destination.is_dir() and not any(destination.iterdir()):
            destination.rmdir()
        else:
            raise FileExistsError(f"{destination}: already exists and is not this artifact")
    with AtomicDir(destination) as out:
        for item in sorted(source.iterdir()):
            if item.name == MANIFEST or not item.is_file():
                continue
            try:
                os.link(item, out.path(item.name))
            except OSError:
                shutil.copyfile(item, out.path(item.name))
        return out.commit(load_manifest(source))
