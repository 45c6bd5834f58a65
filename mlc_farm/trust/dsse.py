"""Signing and verifying an in-toto statement in a DSSE envelope inside a Sigstore bundle (v0.3), the format
model-signing writes for `model.sig`, entirely in memory: the private key never becomes a file (model-signing's
own signer reads its key from a path), and a bundle is read from bytes with a size and depth bound.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from mlc_farm.errors import BadInput, PermanentError
from mlc_farm.store.documents import parse_bounded

BUNDLE_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
IN_TOTO = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
MAX_BUNDLE = 16 * 2**20  # a signature of a folder of thousands of files is well under a megabyte


class SignatureRefused(PermanentError):
    """A folder or a store entry whose files are not the ones the farm signed, or that nobody trusted signed."""


@dataclass(frozen=True)
class SigningKey:
    """The farm's private key, held in memory only: its PEM never goes to a file or another process."""

    pem: bytes

    @cached_property
    def _key(self) -> Any:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        try:
            key = serialization.load_pem_private_key(self.pem, None)
        except (ValueError, TypeError) as e:
            raise BadInput(f"the signing key is not an unencrypted PEM private key ({e})") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name not in _HASHES:
            raise BadInput("the signing key is not a P-256/P-384/P-521 key (model-signing signs with those)")
        return key

    @cached_property
    def public(self) -> bytes:
        """The PEM public key (SubjectPublicKeyInfo)."""
        from cryptography.hazmat.primitives import serialization

        return bytes(
            self._key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public)

    def sign(self, statement: dict[str, Any]) -> dict[str, Any]:
        """The statement signed: a Sigstore bundle (as JSON data) with the key's hint, as model-signing makes."""
        from cryptography.hazmat.primitives.asymmetric import ec

        payload = json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()
        sig = self._key.sign(pae(payload), ec.ECDSA(_HASHES[self._key.curve.name]()))
        return {
            "mediaType": BUNDLE_TYPE,
            "verificationMaterial": {
                "publicKey": {"hint": self.fingerprint.removeprefix("sha256:")},
                "tlogEntries": [],
            },
            "dsseEnvelope": {
                "payload": base64.b64encode(payload).decode(),
                "payloadType": IN_TOTO,
                "signatures": [{"sig": base64.b64encode(sig).decode(), "keyid": ""}],
            },
        }


def _sha(name: str) -> Any:
    from cryptography.hazmat.primitives import hashes

    return getattr(hashes, name)


_HASHES = {"secp256r1": lambda: _sha("SHA256")(), "secp384r1": lambda: _sha("SHA384")(),
           "secp521r1": lambda: _sha("SHA512")()}  # fmt: skip


def new_private_key() -> bytes:
    """A new P-256 private key, PEM (PKCS#8, unencrypted: it is kept in a Secret block or a 0600 file)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_key(private_pem: bytes) -> bytes:
    """The PEM public key of a private key; a key that is not one is BadInput."""
    return SigningKey(private_pem).public


def fingerprint(public_pem: bytes) -> str:
    """`sha256:<hex>` of the PEM public key: the key hint model-signing writes into every bundle."""
    return f"sha256:{hashlib.sha256(public_pem).hexdigest()}"


def pae(payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding of an in-toto payload (what the signature is over)."""
    return b"DSSEv1 %d %s %d %s" % (len(IN_TOTO), IN_TOTO.encode(), len(payload), payload)


@dataclass(frozen=True)
class Verified:
    """A bundle's statement, once its signature verified, and the key that made it."""

    statement: dict[str, Any]
    key: str  # the fingerprint of the trusted key


def verify(bundle: bytes | str | dict[str, Any], trusted: list[bytes], what: str) -> Verified:
    """The statement of a bundle, once its DSSE signature verifies with one of the `trusted` public keys."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import ec

    if not trusted:
        raise SignatureRefused(f"{what}: no public key is trusted (MLC_FARM_TRUSTED_KEYS)")
    doc = bundle if isinstance(bundle, dict) else parse_bounded(what, bundle, MAX_BUNDLE, SignatureRefused)
    payload, sig = _envelope(doc, what)
    for pem in trusted:
        if (public := _public(pem)) is None:
            continue
        try:
            public.verify(sig, pae(payload), ec.ECDSA(_HASHES[public.curve.name]()))
        except InvalidSignature:
            continue
        statement = json.loads(payload)  # signed by a trusted key: the farm's own JSON, bounded by the bundle's
        if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
            raise SignatureRefused(f"{what}: its payload is not an in-toto statement")
        return Verified(statement, fingerprint(pem))
    raise SignatureRefused(f"{what}: its signature was not made by a trusted key (MLC_FARM_TRUSTED_KEYS)")


@functools.lru_cache(maxsize=16)
def _public(pem: bytes) -> Any:
    """A trusted PEM public key, parsed once (a nightly verifies thousands of attestations with the same few);
    None for one model-signing cannot sign with."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        public = serialization.load_pem_public_key(pem)
    except ValueError:
        raise BadInput("a trusted key is not a PEM public key (MLC_FARM_TRUSTED_KEYS)") from None
    return public if isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name in _HASHES else None


def _envelope(doc: dict[str, Any], what: str) -> tuple[bytes, bytes]:
    """The payload and the one signature of a bundle's DSSE envelope."""
    try:
        env = doc["dsseEnvelope"]
        if env["payloadType"] != IN_TOTO:
            raise SignatureRefused(f"{what}: its payload is {str(env['payloadType'])[:60]!r}, not an in-toto statement")
        (one,) = env["signatures"]
        return base64.b64decode(env["payload"], validate=True), base64.b64decode(one["sig"], validate=True)
    except (KeyError, TypeError, ValueError, binascii.Error):
        raise SignatureRefused(f"{what}: its signature is not a Sigstore bundle with one DSSE signature") from None
