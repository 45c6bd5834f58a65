"""The farm's keys: the private key it signs with (held in memory, never copied to a file) and the public keys
whose signatures it accepts. A key file someone else could have written is refused, with the reason."""

from __future__ import annotations

import functools
import os
import stat
import tempfile
from pathlib import Path

from mlc_farm.credentials import load_block
from mlc_farm.errors import BadInput
from mlc_farm.settings import load_settings
from mlc_farm.trust.dsse import SigningKey, new_private_key, public_key

LOCAL_KEY = "signing/private.pem"  # under the cache dir: the key of a machine given none (embedded builds only)


def signing_key() -> SigningKey:
    """The farm's private signing key: MLC_FARM_SIGNING_KEY's file, else the Secret block of
    MLC_FARM_SIGNING_KEY_BLOCK, else (embedded builds) this machine's own key, made now (0600) if there is none."""
    settings = load_settings()
    if settings.signing_key is not None:
        return _from_file(str(settings.signing_key), "MLC_FARM_SIGNING_KEY")
    if settings.signing_key_block:
        return _from_block(settings.signing_key_block)
    return _machine_key(str(settings.cache_dir / LOCAL_KEY))


def require_farm_key() -> SigningKey:
    """The key a farm signs with, which every worker shares: a farm-mode run without one is refused before it
    builds (each worker would otherwise sign with a key of its own that no user trusts)."""
    settings = load_settings()
    if settings.signing_key is None and not settings.signing_key_block:
        raise BadInput(
            "farm mode needs the farm's signing key: set MLC_FARM_SIGNING_KEY_BLOCK to the Secret block that "
            "`mlc-farm farm init --signing-key` made (the pool templates set it for workers)"
        )
    return signing_key()


@functools.lru_cache(maxsize=8)
def _from_block(name: str) -> SigningKey:
    from prefect.blocks.system import Secret

    pem = str(load_block(Secret, name, "MLC_FARM_SIGNING_KEY_BLOCK", "--signing-key").get()).encode()
    return _checked(SigningKey(pem), f"Secret block {name!r}")


def _from_file(name: str, setting: str) -> SigningKey:
    path = Path(name)
    refuse_unsafe(path, setting, private=True)
    try:
        pem = path.read_bytes()
    except OSError as e:
        raise BadInput(f"{setting}={name!r}: {e.strerror or e}") from None
    return _checked(SigningKey(pem), f"{setting}={name!r}")


def _checked(key: SigningKey, what: str) -> SigningKey:
    try:
        key.public  # noqa: B018  # parses it: a bad key is refused where it is named
    except BadInput as e:
        raise BadInput(f"{what}: {e}") from None
    return key


def _machine_key(name: str) -> SigningKey:
    path = Path(name)
    if not path.exists():
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
    return _from_file(name, f"this machine's key ({LOCAL_KEY} in MLC_FARM_CACHE)")


def refuse_unsafe(path: Path, setting: str, private: bool) -> None:
    """BadInput when someone other than this user could have written the key (or, `private`, could read it): the
    file or its directory owned by another user, writable by others, or the file a link."""
    try:
        st, parent = os.lstat(path), os.stat(path.parent)
    except OSError as e:
        raise BadInput(f"{setting}={str(path)!r}: {e.strerror or e}") from None
    me = os.geteuid()
    why = None
    if stat.S_ISLNK(st.st_mode):
        why = "it is a link"
    elif st.st_uid not in (me, 0):
        why = f"it is owned by user {st.st_uid}, not by you ({me})"
    elif st.st_mode & 0o022:
        why = f"others can write it (mode {stat.S_IMODE(st.st_mode):o})"
    elif private and st.st_mode & 0o044:
        why = f"others can read it (mode {stat.S_IMODE(st.st_mode):o}; chmod 600 it)"
    elif parent.st_uid not in (me, 0):
        why = f"its directory is owned by user {parent.st_uid}"
    elif parent.st_mode & 0o022 and not parent.st_mode & stat.S_ISVTX:
        why = f"others can write its directory {path.parent} (mode {stat.S_IMODE(parent.st_mode):o})"
    if why:
        raise BadInput(f"{setting}={str(path)!r}: refused: {why} (someone else could have put a key there)")


def trusted_keys() -> list[bytes]:
    """The public keys whose signatures are accepted: MLC_FARM_TRUSTED_KEYS's files (several, while a key
    rotates), else the signing key's."""
    names = load_settings().trusted_keys
    if not names:
        return [signing_key().public]
    keys = []
    for name in (n.strip() for n in names.split(",") if n.strip()):
        refuse_unsafe(Path(name), "MLC_FARM_TRUSTED_KEYS", private=False)
        try:
            keys.append(Path(name).read_bytes())
        except OSError as e:
            raise BadInput(f"MLC_FARM_TRUSTED_KEYS: {name!r}: {e.strerror or e}") from None
    return keys


__all__ = ["SigningKey", "public_key", "refuse_unsafe", "require_farm_key", "signing_key", "trusted_keys"]
