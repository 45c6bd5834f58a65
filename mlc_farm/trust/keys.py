"""The farm's keys: the private key it signs with and the public keys whose signatures it accepts."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from mlc_farm.credentials import load_block
from mlc_farm.errors import BadInput
from mlc_farm.settings import load_settings
from mlc_farm.trust.signatures import new_private_key, public_key

LOCAL_KEY = "signing/private.pem"  # under the cache dir: the key of a machine given none


def signing_key() -> bytes:
    """The farm's private signing key (PEM): MLC_FARM_SIGNING_KEY's file, else the Secret block of
    MLC_FARM_SIGNING_KEY_BLOCK, else this machine's own key (made now, 0600, if there is none yet)."""
    settings = load_settings()
    if settings.signing_key is not None:
        try:
            return settings.signing_key.read_bytes()
        except OSError as e:
            raise BadInput(f"MLC_FARM_SIGNING_KEY={str(settings.signing_key)!r}: {e.strerror or e}") from None
    if settings.signing_key_block:
        from prefect.blocks.system import Secret

        return str(
            load_block(Secret, settings.signing_key_block, "MLC_FARM_SIGNING_KEY_BLOCK", "--signing-key").get()
        ).encode()
    path = settings.cache_dir / LOCAL_KEY
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".new-")  # 0600
        with os.fdopen(fd, "wb") as f:
            f.write(new_private_key())
        try:
            os.link(tmp, path)  # the first key made wins (another thread or process may race): never replaced
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    return path.read_bytes()


def trusted_keys() -> list[bytes]:
    """The public keys whose signatures are accepted: MLC_FARM_TRUSTED_KEYS's files, else the signing key's."""
    names = load_settings().trusted_keys
    if not names:
        return [public_key(signing_key())]
    keys = []
    for name in (n.strip() for n in names.split(",") if n.strip()):
        try:
            keys.append(Path(name).read_bytes())
        except OSError as e:
            raise BadInput(f"MLC_FARM_TRUSTED_KEYS: {name!r}: {e.strerror or e}") from None
    return keys
