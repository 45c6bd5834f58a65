"""Signatures in the OpenSSF model-signing format (`model.sig`: a Sigstore bundle whose DSSE envelope holds an
in-toto statement listing every file's sha256), made with the farm's elliptic-curve key, offline.

A folder's manifest is its files' sha256 digests, which the store already holds: the farm signs a catalog entry
or a published folder from its records, without downloading anything, and the signature verifies with
`model_signing verify` on the folder once the files are there (it hashes them the same way: sha256 per file).
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlc_farm.digests import file_sha256
from mlc_farm.errors import BadInput, PermanentError

SIGNATURE = "model.sig"  # in a signed folder: the one file its signature does not cover
# Not part of a folder, as model-signing has it (git's files), and huggingface_hub's download bookkeeping.
_NOT_OURS = (".git", ".gitattributes", ".github", ".gitignore", ".cache/huggingface")


class SignatureRefused(PermanentError):
    """A folder or a store entry whose files are not the ones the farm signed, or that nobody trusted signed."""


def new_private_key() -> bytes:
    """A new P-256 private key, PEM (PKCS#8, unencrypted: it is kept in a Secret block or a 0600 file)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_key(private_pem: bytes) -> bytes:
    """The PEM public key (SubjectPublicKeyInfo) of a private key; a key that is not one is BadInput."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_private_key(private_pem, None)
    except (ValueError, TypeError) as e:
        raise BadInput(f"the signing key is not an unencrypted PEM private key ({e})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise BadInput("the signing key is not an elliptic-curve key (model-signing signs with P-256/P-384/P-521)")
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def fingerprint(public_pem: bytes) -> str:
    """`sha256:<hex>` of the PEM public key: the key hint model-signing writes into every bundle."""
    return f"sha256:{hashlib.sha256(public_pem).hexdigest()}"


def files_digest(files: dict[str, str]) -> str:
    """What a signature covers, as one digest: the sorted (path, sha256) pairs."""
    return hashlib.sha256(json.dumps(sorted(files.items()), separators=(",", ":")).encode()).hexdigest()


@contextmanager
def _key_file(pem: bytes) -> Iterator[pathlib.Path]:
    """model-signing reads keys from files: a 0600 file in a private temporary directory, gone afterwards."""
    with tempfile.TemporaryDirectory(prefix="mlc-farm-key-") as tmp:
        path = Path(tmp) / "key.pem"
        path.touch(mode=0o600)
        path.write_bytes(pem)
        yield path


def sign(files: dict[str, str], name: str, private_pem: bytes) -> str:
    """The bundle (JSON text) signing a folder of `files` (relative path -> sha256) named `name`."""
    from model_signing import manifest
    from model_signing._hashing.hashing import Digest
    from model_signing._signing import sign_ec_key, signing

    items = [
        manifest.FileManifestItem(path=pathlib.PurePosixPath(p), digest=Digest("sha256", bytes.fromhex(h)))
        for p, h in sorted(files.items())
    ]
    kind = manifest._FileSerialization("sha256", allow_symlinks=False, ignore_paths=[pathlib.Path(SIGNATURE)])
    with _key_file(private_pem) as key:
        signature = sign_ec_key.Signer(key).sign(signing.Payload(manifest.Manifest(name, items, kind)))
    bundle: str = signature.bundle.to_json()  # type: ignore[attr-defined]
    return bundle


def signed_files(bundle: str, trusted: list[bytes], what: str) -> dict[str, str]:
    """The files (path -> sha256) a model-signing bundle signs, once it verifies with one of the `trusted` keys."""
    from model_signing._signing.signing import dsse_payload_to_manifest

    statement = signed_statement(bundle, trusted, what)
    try:
        signed = dsse_payload_to_manifest(statement)
    except (ValueError, KeyError, TypeError) as e:
        raise SignatureRefused(f"{what}: its signature does not list files as model-signing does ({e})") from None
    return {rd.identifier: rd.digest.digest_value.hex() for rd in signed.resource_descriptors()}


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


def verify_folder(folder: Path, trusted: list[bytes]) -> dict[str, str]:
    """A downloaded folder holds exactly the files its `model.sig` signs, signed by a trusted key."""
    sig = folder / SIGNATURE
    if not sig.is_file():
        raise SignatureRefused(f"{folder}: no {SIGNATURE}: unsigned")
    signed = signed_files(sig.read_text(errors="replace"), trusted, str(folder))
    check(folder_files(folder), signed, str(folder), whole=True)
    return signed


_IN_TOTO = "application/vnd.in-toto+json"


def sign_statement(statement: dict[str, Any], private_pem: bytes) -> str:
    """An in-toto statement signed as model-signing signs its own: a Sigstore bundle (v0.3) whose DSSE envelope
    holds the statement, with the key's hint (its fingerprint without `sha256:`)."""
    import base64

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from model_signing._signing.sign_sigstore_pb import pae

    payload = json.dumps(statement, sort_keys=True).encode()
    key = serialization.load_pem_private_key(private_pem, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey), "public_key() refuses other keys first"
    sig = key.sign(pae(payload), ec.ECDSA(hashes.SHA256()))
    hint = fingerprint(public_key(private_pem)).removeprefix("sha256:")
    return json.dumps(
        {
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {"publicKey": {"hint": hint}, "tlogEntries": []},
            "dsseEnvelope": {
                "payload": base64.b64encode(payload).decode(),
                "payloadType": _IN_TOTO,
                "signatures": [{"sig": base64.b64encode(sig).decode(), "keyid": ""}],
            },
        },
        sort_keys=True,
    )


def signed_statement(bundle: str, trusted: list[bytes], what: str) -> dict[str, Any]:
    """The in-toto statement of a bundle (a `model.sig`, or a provenance), once its DSSE envelope verifies with one
    of the `trusted` public keys."""
    from model_signing._signing import sign_ec_key, sign_sigstore_pb

    if not trusted:
        raise SignatureRefused(f"{what}: no public key is trusted (MLC_FARM_TRUSTED_KEYS)")
    with tempfile.TemporaryDirectory(prefix="mlc-farm-sig-") as tmp:
        path = Path(tmp) / "bundle.json"
        path.write_text(bundle)
        try:
            signature = sign_sigstore_pb.Signature.read(path)
        except (ValueError, KeyError, TypeError) as e:
            raise SignatureRefused(f"{what}: its signature is not a Sigstore bundle ({e})") from None
        for pem in trusted:
            with _key_file(pem) as key:
                try:
                    kind, payload = sign_ec_key.Verifier(key)._verify_signed_content(signature)
                except Exception:  # a wrong key: cryptography's InvalidSignature, ValueError
                    continue
            if kind != _IN_TOTO:
                raise SignatureRefused(f"{what}: its payload is {kind}, not an in-toto statement")
            doc: dict[str, Any] = json.loads(payload)
            return doc
    raise SignatureRefused(f"{what}: its signature was not made by a trusted key (MLC_FARM_TRUSTED_KEYS)")
