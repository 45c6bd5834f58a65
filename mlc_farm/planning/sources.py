"""Model sources: a Hugging Face repo@revision resolved to a commit, or a local directory by content.

Resolution gives each source an identity (the commit, or the sha256 of the files the toolchain reads)
and its config.json; both go into the build keys. A source is read, never trusted (mlc_farm/planning/source_checks.py):
a link out of it or an impossible config.json makes it `invalid`, and its cells fail with the reason.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from mlc_farm.digests import NotRegular, copy_sha256, file_sha256, open_regular
from mlc_farm.errors import BadInput, HubRefused, ServiceUnreachable, ValidationFailed
from mlc_farm.matrix.schema import HFSource, LoadedMatrix, LocalSource, ModelSpec, TinySource
from mlc_farm.planning.source_checks import SourceRefused, inside, listed, read_config
from mlc_farm.settings import load_settings

# What convert_weight and gen_config read from a model directory (shared/mlc-reference/README.md).
TOOLCHAIN_FILES = (
    "config.json", "generation_config.json", "*.safetensors", "*.safetensors.index.json",
    "pytorch_model*.bin", "pytorch_model*.bin.index.json", "tokenizer.json", "tokenizer_config.json",
    "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json", "special_tokens_map.json",
)  # fmt: skip


class ResolvedSource(BaseModel):
    """A source pinned to an identity, or the reason it could not be (`error`)."""

    model: str
    kind: str
    ref: str
    revision: str | None = None
    identity: str | None = None
    config: dict[str, Any] | None = None
    license: str | None = None
    restricted: bool = False  # gated or private on the Hub: what is built from it is published privately
    files: dict[str, str] | None = None  # a local source: the files the toolchain reads, with their sha256
    error: str | None = None
    unreachable: bool = False  # the error is the Hub not answering (offline, 5xx): a service, not the input
    invalid: bool = False  # the error is the source itself (a link out of it, a config.json it cannot trust)

    def key_part(self) -> dict[str, Any]:
        return {"kind": self.kind, "ref": self.ref if self.kind == "hf" else None, "identity": self.identity}


def needed_files(names: list[str]) -> list[str]:
    """The files of a model directory the toolchain reads; `.bin` weights only when there is no safetensors."""
    picked = [n for n in names if any(fnmatch.fnmatch(Path(n).name, p) for p in TOOLCHAIN_FILES)]
    if any(n.endswith(".safetensors") for n in picked):
        picked = [n for n in picked if not Path(n).name.startswith("pytorch_model")]
    return sorted(picked)


def resolve_local(model: str, path: Path) -> ResolvedSource:
    names = listed(path)
    try:
        if "config.json" not in names:
            raise SourceRefused(f"model {model}: {path} holds no config.json")
        files = inside(model, path, needed_files(names) + [n for n in names if n == "README.md"])
        config = read_config(model, files["config.json"])
    except SourceRefused as e:
        return ResolvedSource(model=model, kind="local", ref=str(path), error=str(e), invalid=True)
    readme = files.pop("README.md", None)
    listing = [(name, real.stat().st_size, file_sha256(real)) for name, real in files.items()]
    identity = hashlib.sha256(json.dumps(listing).encode()).hexdigest()
    return ResolvedSource(
        model=model,
        kind="local",
        ref=str(path),
        identity=identity,
        config=config,
        license=_card_license(readme),
        files={name: sha for name, _, sha in listing},
    )


def _card_license(readme: Path | None) -> str | None:
    """The `license` of a local model card's YAML front matter, when there is one."""
    import yaml

    text = readme.read_text(errors="replace") if readme else ""
    if text.startswith("---\n") and "\n---" in text[4:]:
        try:
            meta = yaml.safe_load(text[4 : text.index("\n---", 4)])
        except yaml.YAMLError:
            return None
        return str(meta["license"]) if isinstance(meta, dict) and meta.get("license") else None
    return None


def resolve_hf(model: str, source: HFSource) -> ResolvedSource:
    """Resolve the revision to a commit and read config.json; a Hub that refuses or cannot be reached gives
    `error` (and `unreachable`), not a raise. The token is read first: a bad setting is bad input."""
    from mlc_farm.huggingface.client import Hub

    base = ResolvedSource(model=model, kind="hf", ref=source.hf, revision=source.revision)
    hub = Hub()
    try:
        info = hub.model_info(source.hf, source.revision)
        config_path = hub.download(source.hf, "config.json", info.sha)
    except HubRefused as e:
        return base.model_copy(update={"error": str(e)})
    except ServiceUnreachable as e:
        return base.model_copy(update={"error": str(e), "unreachable": True})
    try:
        config = read_config(model, config_path)
    except SourceRefused as e:
        return base.model_copy(update={"error": str(e), "invalid": True})
    return base.model_copy(
        update={"identity": info.sha, "config": config, "license": info.license, "restricted": info.restricted}
    )


def resolve(loaded: LoadedMatrix, models: list[ModelSpec]) -> dict[str, ResolvedSource]:
    out = {}
    for m in models:
        if isinstance(m.source, LocalSource):
            out[m.id] = resolve_local(m.id, loaded.local_path(m.source))
        elif isinstance(m.source, TinySource):
            out[m.id] = resolve_tiny(m.id, m.source.tiny)
        else:
            out[m.id] = resolve_hf(m.id, m.source)
    return out


def tiny_dir(seed: int) -> Path:
    """The farm's tiny Llama of `seed` in the cache, made once (in a temporary folder, then renamed: a killed
    writer leaves no half model under the name)."""
    from mlc_farm.tiny_model import write_tiny_llama

    root = load_settings().cache_dir / "tiny" / f"llama-{seed}"
    if not (root / "config.json").is_file():
        root.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".llama-{seed}-", dir=root.parent) as tmp:
            made = write_tiny_llama(Path(tmp) / "model", seed)
            with contextlib.suppress(OSError):  # another process made it first: theirs is the same model
                made.rename(root)
    return root


def resolve_tiny(model: str, seed: int) -> ResolvedSource:
    local = resolve_local(model, tiny_dir(seed))
    return local.model_copy(
        update={"kind": "tiny", "ref": f"the farm's tiny Llama, seed {seed}", "revision": str(seed)}
    )


WEIGHTS = ("*.safetensors", "*.bin")  # linked into a staging directory; every other file is copied


@dataclass(frozen=True)
class SourceFiles:
    """The files of a source the toolchain reads, each as the real file it is, every one inside the source;
    `hashes`: the sha256 of each as its key was made from them (a local source), None where the key is the Hub's
    commit."""

    model: str
    files: dict[str, Path]
    hashes: dict[str, str] | None = None

    def stage(self, staging: Path) -> Path:
        """A directory the toolchain reads the source through, holding exactly what was checked: each file opened
        without following a link (one put in its place after the check is refused), the small files (config,
        tokenizer) copied and hashed against the key's hashes, the weights linked to the very file opened (a hard
        link where the filesystem allows, so a later swap of the name is not followed). Anything the toolchain
        writes lands in `staging`, not in the source."""
        if self.hashes is not None and set(self.files) != set(self.hashes):
            changed = sorted(set(self.files) ^ set(self.hashes))[0]
            raise ValidationFailed(f"model {self.model}: {changed} was added or removed since its key was made")
        staging.mkdir(parents=True)
        for name, real in self.files.items():
            fd = _open_checked(self.model, name, real)
            with os.fdopen(fd, "rb") as src:
                if any(fnmatch.fnmatch(name, p) for p in WEIGHTS):
                    _link(src.fileno(), real, staging / name)
                    continue
                with (staging / name).open("wb") as out:
                    got = copy_sha256(src, out)
                    assert got is not None  # no limit: always a digest
            if self.hashes is not None and got != self.hashes[name]:
                raise ValidationFailed(
                    f"model {self.model}: {name} changed after it was checked (sha256 {got[:12]}, its key was made "
                    f"from {self.hashes[name][:12]}): nothing of it was stored"
                )
        return staging


def _open_checked(model: str, name: str, real: Path) -> int:
    """A descriptor of the checked file itself: a link or anything but a regular file in its place is refused."""
    try:
        return open_regular(real)
    except NotRegular as e:
        if e.link:
            raise ValidationFailed(f"model {model}: {name} is no longer the file that was checked (a link)") from None
        raise ValidationFailed(f"model {model}: {name} is no longer a regular file: refused") from None
    except OSError as e:
        raise ValidationFailed(f"model {model}: {name} is no longer the file that was checked ({e.strerror})") from None


def _link(fd: int, real: Path, dest: Path) -> None:
    """`dest` as a hard link to the open file (Linux: its /proc/self/fd entry), else, on another filesystem, a
    symbolic link to the checked path."""
    try:
        os.link(f"/proc/self/fd/{fd}", dest, follow_symlinks=True)
    except OSError:
        dest.symlink_to(real)


def fetch(source: ResolvedSource, cache_dir: Path | None = None) -> SourceFiles:
    """The source's files, checked again where they are read: the local directory's, or those of a Hub snapshot
    in the cache (its links point into the repo's own `blobs/`, inside its cache folder)."""
    if source.kind == "local":
        path = Path(source.ref)
        return SourceFiles(source.model, inside(source.model, path, needed_files(listed(path))), source.files)
    if source.kind == "tiny":
        made = resolve_tiny(source.model, int(source.revision or 0))
        if made.identity != source.identity:
            raise BadInput(
                f"model {source.model}: {source.ref} made here differs from the one planned (another "
                "numpy or tokenizers version than the planner's?)"
            )
        path = tiny_dir(int(source.revision or 0))
        return SourceFiles(source.model, inside(source.model, path, needed_files(listed(path))), source.files)
    from mlc_farm.huggingface.client import Hub

    if not source.identity:
        raise BadInput(source.error or f"model {source.model}: source not resolved")
    hub = Hub()
    names = hub.model_info(source.ref, source.identity).files
    cache = cache_dir or load_settings().cache_dir / "hf"
    snapshot = hub.snapshot(source.ref, source.identity, needed_files(names), cache)
    # snapshots/<commit>/ of the repo's cache folder models--ORG--NAME, which holds its blobs/
    return SourceFiles(
        source.model, inside(source.model, snapshot, needed_files(listed(snapshot)), snapshot.parents[1])
    )
