"""Signatures in the OpenSSF model-signing format (`model.sig`: a Sigstore bundle whose DSSE envelope holds an
in-toto statement listing every file's sha256), made with the farm's elliptic-curve key, offline, in memory.

The statement is model-signing's own (predicate `https://model_signing/signature/v1.0`: the serialization and a
resource per file, the subject the digest of them all), so `model_signing verify key` accepts the folder once its
files are there; the farm adds what model-signing leaves open ("other properties can go here"): the name and
time the signature is bound to (`mlc_farm` in the predicate, mlc_farm/trust/entry_signatures.py).
"""

from __future__ import annotations

import hashlib
from pathlib import Path, PurePosixPath
from typing import Any

from mlc_farm.digests import file_sha256
from mlc_farm.trust import dsse
from mlc_farm.trust.dsse import SignatureRefused, SigningKey

SIGNATURE = "model.sig"  # in a signed folder: the one file its signature does not cover
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
BINDING = "mlc_farm"  # the predicate's field of what the farm binds beyond the files
# Not part of a folder, as model-signing has it (git's files), and huggingface_hub's download bookkeeping.
_NOT_OURS = (".git", ".gitattributes", ".github", ".gitignore", ".cache/huggingface")
_SERIALIZATION = {"method": "files", "hash_type": "sha256", "allow_symlinks": False, "ignore_paths": [SIGNATURE]}


def manifest(files: dict[str, str], name: str, binding: dict[str, Any] | None = None) -> dict[str, Any]:
    """model-signing's statement of a folder of `files` (path -> sha256) named `name`, with the farm's `binding`."""
    ordered = sorted(files, key=PurePosixPath)  # model-signing's order: the root digest is over the digests in it
    root = hashlib.sha256(b"".join(bytes.fromhex(files[p]) for p in ordered)).hexdigest()
    predicate: dict[str, Any] = {
        "serialization": _SERIALIZATION,
        "resources": [{"name": p, "algorithm": "sha256", "digest": files[p]} for p in ordered],
    }
    if binding is not None:
        predicate[BINDING] = binding
    return {
        "_type": dsse.STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": root}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": predicate,
    }


def sign(files: dict[str, str], name: str, key: SigningKey, binding: dict[str, Any] | None = None) -> dict[str, Any]:
    """The bundle signing a folder of `files` (relative path -> sha256) named `name`."""
    return key.sign(manifest(files, name, binding))


def files_of(statement: dict[str, Any], what: str) -> dict[str, str]:
    """The files (path -> sha256) a verified model-signing statement lists, once its root digest holds."""
    try:
        if statement["predicateType"] != PREDICATE_TYPE:
            raise SignatureRefused(f"{what}: its signature does not list files as model-signing does")
        files = {r["name"]: r["digest"] for r in statement["predicate"]["resources"] if r["algorithm"] == "sha256"}
        if manifest(files, statement["subject"][0]["name"])["subject"] != statement["subject"]:
            raise SignatureRefused(f"{what}: its signature's files do not hash to its subject")
    except (KeyError, TypeError, ValueError, IndexError):
        raise SignatureRefused(f"{what}: its signature does not list files as model-signing does") from None
    return files


def check(files: dict[str, str], signed: dict[str, str], what: str, whole: bool) -> None:
    """Each of `files` is what was signed (every signed file there too, when `whole`): else the first file that
    differs, named."""
    for path, sha in sorted(files.items()):
        if path not in signed:
            raise SignatureRefused(f"{what}: {path} is not among the files the farm signed: refused")
        if signed[path] != sha:
            raise SignatureRefused(
                f"{what}: {path} is not the file the farm signed (sha256 {sha[:12]}, signed "
                f"{signed[path][:12]}): refused"
            )
    if whole and (gone := sorted(set(signed) - set(files))):
        raise SignatureRefused(f"{what}: {gone[0]} was signed but is missing: refused")


def folder_files(folder: Path) -> dict[str, str]:
    """Every file of a folder (but its signature) with its sha256; links are refused, as model-signing does."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if any(rel == p or rel.startswith(f"{p}/") for p in _NOT_OURS):
            continue
        if path.is_symlink():
            raise SignatureRefused(f"{folder}: {rel} is a link: refused")
        if path.is_file() and rel != SIGNATURE:
            out[rel] = file_sha256(path)
    return out


def read_signature(folder: Path, trusted: list[bytes]) -> tuple[dsse.Verified, dict[str, str]]:
    """A folder's `model.sig` verified with a trusted key: the statement and the files it signs."""
    sig = folder / SIGNATURE
    if not sig.is_file() or sig.is_symlink():
        raise SignatureRefused(f"{folder}: no {SIGNATURE}: unsigned")
    with sig.open("rb") as f:
        raw = f.read(dsse.MAX_BUNDLE + 1)
    found = dsse.verify(raw, trusted, str(folder))
    return found, files_of(found.statement, str(folder))


def verify_folder(folder: Path, trusted: list[bytes], whole: bool = True) -> dict[str, str]:
    """A downloaded folder holds exactly the files its `model.sig` signs (`whole`; else only files it signs), signed
    by a trusted key: the signed files."""
    _, signed = read_signature(folder, trusted)
    check(folder_files(folder), signed, str(folder), whole)
    return signed
