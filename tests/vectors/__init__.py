"""Test vectors kept in the repository (each folder's README says where they come from).

``bson-corpus/``: the BSON Corpus, vendored from PyMongo's sdist (pinned version,
checksums and licence in its README). Everything here is read through
:func:`bson_corpus_files`, which refuses a folder that is not exactly what the README
describes, so a missing or changed file fails at collection instead of leaving a
parameter set empty.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

BSON_CORPUS = Path(__file__).resolve().parent / "bson-corpus"
BSON_CORPUS_FILES = 31


def _listed_sums() -> dict[str, str]:
    sums = {}
    for line in (BSON_CORPUS / "SHA256SUMS").read_text().splitlines():
        digest, _, name = line.partition("  ")
        sums[name] = digest
    return sums


def bson_corpus_files() -> list[Path]:
    """The corpus's JSON files, sorted; RuntimeError unless all 31 are there, unchanged."""
    files = sorted(BSON_CORPUS.glob("*.json"))
    listed = _listed_sums()
    if len(files) != BSON_CORPUS_FILES or sorted(listed) != [f.name for f in files]:
        raise RuntimeError(
            f"{BSON_CORPUS} should hold the {BSON_CORPUS_FILES} files of its SHA256SUMS, "
            f"found {len(files)}: restore it from git (see its README)"
        )
    for path in files:
        if hashlib.sha256(path.read_bytes()).hexdigest() != listed[path.name]:
            raise RuntimeError(f"{path} differs from its SHA256SUMS entry: restore it from git")
    return files
