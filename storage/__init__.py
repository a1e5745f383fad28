"""The artifact store: content keys, manifests, atomic writes, paths. No Prefect here."""
from storage.keys import canonical_json, content_key, file_digest
from storage.store import ArtifactStore, AtomicDir, default_root

__all__ = ["ArtifactStore", "AtomicDir", "canonical_json", "content_key", "default_root", "file_digest"]
