"""Publishing a model x quantization to the Hugging Face Hub: one commit with the weights, config,
tokenizer, each device's library under `libs/`, a model card and `mlc-farm-manifest.json`.

Files whose content already matches on the Hub are not sent again, files no longer produced are deleted in
the same commit, and a republish with nothing changed makes no commit. The token comes from HF_TOKEN, the Secret block MLC_FARM_HF_TOKEN_BLOCK names, or
the usual huggingface_hub login and is never printed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import tempfile
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel

from mlc_farm import credentials
from mlc_farm.checks.speed import LIVENESS_STEPS, of_phase
from mlc_farm.devices import Family, of_target
from mlc_farm.devices import family as device_family
from mlc_farm.digests import digest
from mlc_farm.errors import PublishError, ServiceUnreachable, StoreError
from mlc_farm.matrix.schema import Matrix
from mlc_farm.names import BuildKey, Name, RepoId
from mlc_farm.planning.sources import hub_endpoint, hub_repo_url
from mlc_farm.records.folder import lib_path
from mlc_farm.records.reads import load_record
from mlc_farm.records.schema import CatalogEntry, FileEntry
from mlc_farm.retry import retry_transient
from mlc_farm.settings import load_settings
from mlc_farm.store import ArtifactStore
from mlc_farm.store.documents import read_document
from mlc_farm.store.layout import published_path
from mlc_farm.trust import dsse, keys, provenance
from mlc_farm.trust.dsse import STATEMENT_TYPE, SignatureRefused
from mlc_farm.trust.entry_signatures import Trusted, sign_folder, signed_provenance, trusted_files
from mlc_farm.trust.signatures import SIGNATURE

T = TypeVar("T")
MANIFEST = "mlc-farm-manifest.json"
CARD = "README.md"
PUBLISHED_TYPE = "https://github.com/mlc-farm/mlc-farm/blob/main/README.md#signatures"  # a published document's
log = logging.getLogger(__name__)


class Operation(BaseModel):
    op: Literal["add", "delete"]
    path: str
    size: int | None = None
    sha256: str | None = None


class PublishResult(BaseModel):
    repo: str
    operations: list[Operation]
    unchanged: int
    commit: str | None = None
    dry_run: bool = False
    card: str = ""
    note: str = ""  # what a dry run could not compare


def repo_for(matrix: Matrix, model: str, quantization: str) -> tuple[str, bool | None] | None:
    """(repo id, private) for a model x quantization, or None when it is not to be published; private None
    when the matrix does not say (then it follows the source: see `publish`)."""
    spec = matrix.model(model)
    if matrix.publish is None or not spec.publish.enabled:
        return None
    org = matrix.publish.org or load_settings().hf_org
    template = spec.publish.repo or matrix.publish.repo
    if "{org}" in template and not org:
        raise PublishError("publishing needs an organization: set publish.org in the matrix or MLC_FARM_HF_ORG")
    repo = template.format(org=org, model=model, quant=quantization)
    private = spec.publish.private if spec.publish.private is not None else matrix.publish.private
    return repo, private


def git_blob_id(path: Path) -> str:
    """The git object id the Hub lists for a regular (non-LFS) file."""
    h = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def manifest(store: ArtifactStore, entry: CatalogEntry, files: dict[str, FileEntry]) -> dict[str, Any]:
    """Everything needed to trust and reproduce the repo; deterministic, so an unchanged build republishes
    nothing."""
    weights = load_record(store, entry.convert)
    config = load_record(store, entry.config)
    if weights is None or config is None:
        raise StoreError(f"the builds of {entry.model} {entry.quantization} have no record")
    return {
        "model": entry.model,
        "quantization": entry.quantization,
        "source": entry.source,
        "toolchain": weights.toolchain,
        "builds": {
            "convert": {"key": entry.convert, "finished_at": weights.finished_at.isoformat()},
            "config": {"key": entry.config, "finished_at": config.finished_at.isoformat()},
            "libraries": {
                d: {
                    "key": ref.key,
                    "target": ref.target,
                    "host": ref.host,
                    "validation": ref.validation.model_dump(),
                    "fidelity": ref.fidelity.model_dump() if ref.fidelity else None,
                    "memory": {**ref.memory.model_dump(), "total_bytes": ref.memory.total_bytes}
                    if ref.memory
                    else None,
                    "runtime": ref.runtime.model_dump() if ref.runtime else None,
                    "jit_keys": {dev: key.model_dump() for dev, key in sorted(ref.jit_keys.items())},
                }
                for d, ref in sorted(entry.libs.items())
            },
        },
        "built_at": weights.finished_at.isoformat(),
        "files": [{"path": p, "size": f.size, "sha256": f.sha256} for p, f in sorted(files.items())],
    }


def _card_meta(entry: CatalogEntry) -> dict[str, Any]:
    """The card's front matter: what the Hub lists the repo under (library, tags, base model, license)."""
    webgpu = any("webllm" in _family(ref.target).exports for ref in entry.libs.values())
    meta: dict[str, Any] = {
        "library_name": "mlc-llm",
        "tags": ["mlc-llm", *(["web-llm"] if webgpu else []), entry.quantization],
    }
    if entry.source.get("kind") == "hf":  # listed on the Hub among the base model's quantizations
        meta["base_model"] = entry.source["ref"]
        meta["base_model_relation"] = "quantized"
    if entry.source.get("license"):
        meta["license"] = entry.source["license"]
    return meta


def model_card(entry: CatalogEntry, repo: str, lib_files: dict[str, str], signed_by: str | None = None) -> str:
    """README.md with the front matter the Hub and the MLC community expect, how to run the model and, with
    `signed_by` (the signing key's fingerprint), how to verify it."""
    meta = _card_meta(entry)
    base = (
        f"[{entry.source['ref']}](https://huggingface.co/{entry.source['ref']}) at commit `{entry.source['identity']}`"
        if entry.source.get("kind") == "hf"
        else f"a local model directory (content sha256 `{entry.source['identity']}`)"
    )
    rows = "\n".join(_card_row(entry, device, path) for device, path in sorted(lib_files.items()))
    runs = [entry.libs[d].validation.run for d in lib_files]
    methods = sorted({m for r in runs for m in [s.method for s in r.speeds] or ([r.method] if r.method else [])})
    speeds = "\n".join(f"- {m}" for m in methods) or "- not measured: no library ran where it was built"
    return f"""---
{yaml.safe_dump(meta, sort_keys=True).strip()}
---

# {repo.split("/")[-1]}

{entry.model} in [MLC-LLM](https://llm.mlc.ai) format, quantized with `{entry.quantization}`, converted from {base}
by mlc-farm. Weights, `mlc-chat-config.json` and tokenizer files are at the root; model libraries are in `libs/`.
`{MANIFEST}` lists every file with its size and sha256, the toolchain versions and the build keys.

## Model libraries

Every library was checked before publishing: its metadata against these weights (names, dtypes, shapes,
model type, quantization, context window), and a run with real weights where its device was present
(finite logits over a prefill and {LIVENESS_STEPS} decode steps). A library whose device was absent says
`not run`: nothing here claims more than was checked.

| device | target | library | runtime | fits the weights | run | decode tokens/s | prefill tokens/s | memory |
| --- | --- | --- | --- | --- | --- | --- | --- | --- |
{rows}

Speeds were measured on the device named in `run` (one sequence, batch 1), each figure the median of its timed
runs, by these methods (a figure compares only with one of its own method):
{speeds}

A library loads only in the runtime it was compiled with (the mlc_llm and TVM above): another one fails inside
TVM ("Cannot find global function ..."). `{MANIFEST}` also lists each library's mlc_llm JIT cache names
(`jit_keys`), the file names under `MLC_LLM_HOME/model_lib/` that `mlc_llm chat HF://...` would look for.

Memory is an estimate: the weights, the largest temporary buffer the library declares, and the KV cache
of one sequence over its context window.

## Fidelity

Each library was run over an evaluation sequence on its device, and its next-token distributions compared
with a reference's: top-1 agreement and KL(reference || library) per position, and the perplexity of the
text under both. A library beyond its quantization's threshold is never published.

{fidelity_table(entry, sorted(lib_files))}

## Run it

{_run_it(repo, lib_files, entry)}{_verify_it(repo, signed_by)}"""


def _verify_it(repo: str, signed_by: str | None) -> str:
    if signed_by is None:
        return ""
    name = repo.split("/")[-1]
    return f"""

## Verify it

Every file here (this card included) is signed by the farm's key, fingerprint `{signed_by}` (the sha256 of its
PEM public key), in the OpenSSF model-signing format: `{SIGNATURE}`, a Sigstore bundle over every file's sha256.
With the farm's public key (`farm.pub`, from whoever runs the farm):

```bash
pip install model-signing pyopenssl
huggingface-cli download {repo} --local-dir {name}
model_signing verify key --signature {name}/{SIGNATURE} --public_key farm.pub --ignore-paths {name}/.cache {name}
```

A changed, added or missing file fails the verification. `{provenance.FILE}` is the signed in-toto provenance
(SLSA v1) of every file: the source and its commit, the toolchain, the conversion fingerprint, the worker image and
the flow run of each build; `mlc-farm provenance` prints it from the farm's store."""


def _run_it(repo: str, lib_files: dict[str, str], entry: CatalogEntry) -> str:
    """How to run the repo: `mlc_llm chat`/`serve` per device with its library, MLCEngine, and WebLLM when a
    webgpu library is there."""
    name = repo.split("/")[-1]
    first = next(iter(sorted(lib_files.items())), ("cpu", "libs/<model>-<quant>-<device>.so"))
    device = _runtime_device(entry.libs[first[0]].target) if first[0] in entry.libs else "cpu"
    out = [
        "Straight from the Hub (mlc_llm compiles a library for your device on first use):",
        "",
        "```bash",
        f"mlc_llm chat HF://{repo} --device {device}",
        "```",
        "",
        f"Or download it (`huggingface-cli download {repo} --local-dir {name}`) and use the library of your device:",
        "",
        "```bash",
        *(
            f"mlc_llm chat ./{name} --device {_runtime_device(entry.libs[d].target)} --model-lib ./{name}/{path}"
            for d, path in sorted(lib_files.items())
        ),
        f"mlc_llm serve ./{name} --device {device} --model-lib ./{name}/{first[1]}",
        "```",
        "",
        "From Python:",
        "",
        "```python",
        "from mlc_llm import MLCEngine",
        "",
        f'engine = MLCEngine(model="./{name}", device="{device}", model_lib="./{name}/{first[1]}", mode="local")',
        'reply = engine.chat.completions.create(messages=[{"role": "user", "content": "Hello!"}], max_tokens=64)',
        "print(reply.choices[0].message.content)",
        "engine.terminate()",
        "```",
    ]
    web = next((p for d, p in sorted(lib_files.items()) if "webllm" in _family(entry.libs[d].target).exports), None)
    if web:
        out += [
            "",
            "In the browser with [WebLLM](https://github.com/mlc-ai/web-llm). The library's file name carries its "
            "content hash, so its URL never serves other bytes; `mlc-farm export webllm` prints the record with every "
            "URL pinned to the commit that published it:",
            "",
            "```js",
            f'const appConfig = {{ model_list: [{{ model: "https://huggingface.co/{repo}", model_id: "{name}",',
            f'  model_lib: "https://huggingface.co/{repo}/resolve/main/{web}" }}] }};',
            f'const engine = await webllm.CreateMLCEngine("{name}", {{ appConfig }});',
            "```",
        ]
    return "\n".join(out) + "\n"


def _family(target: str) -> Family:
    """The family of a library's target (a target no family knows is taken for a CPU one)."""
    return of_target(target) or device_family("cpu")


def _runtime_device(target: str) -> str:
    """The `--device` of mlc_llm for a library's target (`cuda`, `rocm`, `vulkan`, `metal`, `cpu`...)."""
    return _family(target).mlc_device


def fidelity_table(entry: CatalogEntry, devices: list[str]) -> str:
    """A row per device: what the reference was, on which tokens, and the numbers (or why there are none)."""
    rows = [
        "| device | reference | evaluation | top-1 | mean KL | p99 KL | perplexity (reference / library) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for d in devices:
        f = entry.libs[d].fidelity
        if f is None or f.measured is None:
            said = "not measured: from before fidelity" if f is None else f.describe().removeprefix("fidelity")
            rows.append(f"| {d} | {said.strip(' :')} | | | | | |")
            continue
        m = f.measured
        ppl = f"{m.ppl_reference:.2f} / {m.ppl_library:.2f}" if m.ppl_reference and m.ppl_library else "-"
        rows.append(
            f"| {d} | {f.reference} | {f.evaluation} | {m.top1:.3f} | {m.kl_mean:.4g} | {m.kl_p99:.4g} | {ppl} |"
        )
    return "\n".join(rows)


def _card_row(entry: CatalogEntry, device: str, path: str) -> str:
    ref = entry.libs[device]
    run = ref.validation.run
    ran = (
        f"passed on {run.device}"
        if run.status == "passed"
        else f"{run.status}: {run.detail}"
        if run.detail
        else run.status
    )
    if run.ran_with and run.ran_with != entry.model and run.status == "passed":
        ran += f" (with {run.ran_with}'s weights, same architecture)"
    speed = f"{run.tokens_per_s:.1f}" if run.tokens_per_s else "-"
    prefill = f"{p.tokens_per_s:.1f}" if (p := of_phase(run.speeds, "prefill")) and p.tokens_per_s else "-"
    needs = f"{ref.memory.total_mb:,.0f} MB" if ref.memory else "-"
    built = ref.runtime.describe_all() if ref.runtime else "not recorded"
    fits = ref.validation.fits.status
    return f"| {device} | `{ref.target}` | `{path}` | {built} | {fits} | {ran} | {speed} | {prefill} | {needs} |"


def _remote(api: Any, repo: str, revision: str | None = None) -> dict[str, tuple[str, str | None]]:
    """path -> (git blob id, LFS sha256 or None) of the repo at `revision` (its main branch by default); empty
    for a new repo."""
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        return {
            f.path: (f.blob_id, f.lfs.sha256 if f.lfs else None)
            for f in api.list_repo_tree(repo, revision=revision, recursive=True, expand=True)
            if hasattr(f, "blob_id")
        }
    except (RepositoryNotFoundError, RevisionNotFoundError):
        return {}


def _hub_answers(seconds: float = 3.0) -> str | None:
    """None when the Hub can be asked now; else why not (offline mode, or no connection in `seconds`). A dry run
    asks this first instead of riding out huggingface_hub's retries."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    url = urlsplit(hub_endpoint() or "https://huggingface.co")
    try:
        socket.create_connection(
            (url.hostname or "", url.port or (443 if url.scheme == "https" else 80)), seconds
        ).close()
    except OSError as e:
        return f"no connection to {url.scheme}://{url.netloc} ({e.strerror or type(e).__name__})"
    return None


def _diff(
    local: dict[str, Path], entries: dict[str, FileEntry], remote: dict[str, tuple[str, str | None]]
) -> tuple[list[Operation], list[Operation], int]:
    adds, same = [], 0
    for path, file in sorted(local.items()):
        have = remote.get(path)
        sha = entries[path].sha256
        if have and (have[1] == sha if have[1] else have[0] == git_blob_id(file)):
            same += 1
        else:
            adds.append(Operation(op="add", path=path, size=file.stat().st_size, sha256=sha))
    deletes = [Operation(op="delete", path=p) for p in sorted(remote) if p not in local and p != ".gitattributes"]
    return adds, deletes, same


def _hub_transient(error: BaseException) -> bool:
    """Hub answers worth another attempt: 5xx, 429, and the HTTP client's connection errors and timeouts
    (huggingface_hub 1.x: httpx's HTTPError)."""
    from huggingface_hub.errors import HfHubHTTPError, HTTPError  # type: ignore[attr-defined]  # its HTTP client's

    if isinstance(error, HfHubHTTPError):
        status = error.response.status_code if error.response is not None else 0
        return status >= 500 or status == 429
    # The HTTP client's connection errors and timeouts; any other OSError (a missing file) is not the Hub's.
    return isinstance(error, (HTTPError, ConnectionError, TimeoutError))


def _with_backoff(call: Callable[[], T]) -> T:
    """A Hub call that huggingface_hub does not retry itself (reading the repo's head, creating it, the commit)
    under the one retry layer (MLC_FARM_RETRY_SECONDS), waiting at least what a 429 or 503's Retry-After asks; a
    commit is atomic, so a retry never leaves half of one. Listing the repo and uploading LFS files are retried
    by huggingface_hub alone (which honours Retry-After in seconds itself)."""
    return retry_transient(call, transient=_hub_transient, asked_wait=retry_after)


def retry_after(error: BaseException) -> float | None:
    """The seconds a Hub answer's `Retry-After` asks to wait: a number, or an HTTP date (read against the answer's
    own `Date`, so this machine's clock does not matter); None when it asks nothing."""
    from email.utils import parsedate_to_datetime

    from huggingface_hub.errors import HfHubHTTPError

    response = error.response if isinstance(error, HfHubHTTPError) else None
    value = (response.headers.get("Retry-After") or "").strip() if response is not None else ""
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
        sent = parsedate_to_datetime(response.headers["Date"]) if response and "Date" in response.headers else None
    except (TypeError, ValueError, IndexError):
        return None
    now = sent or datetime.now(timezone.utc)
    return max(0.0, (when - now).total_seconds()) if when.tzinfo and now.tzinfo else None


def _status(error: BaseException) -> int:
    from huggingface_hub.errors import HfHubHTTPError

    response = error.response if isinstance(error, HfHubHTTPError) else None
    return response.status_code if response is not None else 0


def _hub_error(error: Exception, repo: str) -> Exception:
    """What a Hub failure that outlasted the retries means for this publish, in the farm's terms (never an
    internal error): huggingface_hub's upload threads wrap the HTTP error in a RuntimeError."""
    from huggingface_hub.errors import HfHubHTTPError, HTTPError  # type: ignore[attr-defined]  # its HTTP client's

    cause = error.__cause__ if isinstance(error, RuntimeError) and isinstance(error.__cause__, HTTPError) else error
    assert isinstance(cause, Exception)
    if unreachable := _unreachable(cause):
        return unreachable
    if not isinstance(cause, HfHubHTTPError):
        return error
    status, budget = _status(cause), load_settings().retry_seconds
    if status == 429:
        return ServiceUnreachable(
            f"the Hub is rate-limiting {repo}: it still answered 429 after {budget:g} s of "
            "retries (MLC_FARM_RETRY_SECONDS), or asked to wait beyond them; try again later"
        )
    if status >= 500:
        return ServiceUnreachable(
            f"the Hub kept failing {repo} (HTTP {status}) for {budget:g} s of retries "
            "(MLC_FARM_RETRY_SECONDS); try again later"
        )
    if status == 412:
        return PublishError(
            f"someone else pushed to {repo} while this publish ran, twice (HTTP 412 on the commit "
            "after reading it again): publish again once they are done"
        )
    return PublishError(
        f"the Hub refused {repo} (HTTP {status}): check that HF_TOKEN can write to it"
        + (" and that the organization exists" if status in (401, 403, 404) else "")
    )


def _head(api: Any, repo: str) -> str | None:
    """The commit the repo's main branch is at: the parent its next commit must have; None for a new repo."""
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        sha: str | None = _with_backoff(lambda: api.model_info(repo).sha)
    except (RepositoryNotFoundError, RevisionNotFoundError):
        return None
    return sha


def _unreachable(error: BaseException) -> ServiceUnreachable | None:
    """A connection error of the Hub's HTTP client (not an HTTP answer) as the service error it is."""
    from huggingface_hub.errors import HfHubHTTPError, HTTPError  # type: ignore[attr-defined]  # its HTTP client's

    if isinstance(error, HTTPError) and not isinstance(error, HfHubHTTPError):
        return ServiceUnreachable(
            f"cannot reach the Hugging Face Hub at {hub_endpoint() or 'https://huggingface.co'} "
            f"({type(error).__name__}: {error}); check HF_ENDPOINT and the network"
        )
    return None


def publish(
    store: ArtifactStore, model: str, quantization: str, repo: str, private: bool | None, dry_run: bool = False
) -> PublishResult:
    """Make `repo` hold exactly this build, in one commit; `dry_run` only reads the Hub. Unless the matrix says
    (`private`), a repo made from a gated or private source is private: its terms may not allow more."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, HTTPError  # type: ignore[attr-defined]  # its HTTP client's

    found, files = trusted_files(store, model, quantization)  # publishes only what verifies (else exit 1)
    entry = found.entry
    if private is None:
        private = bool(entry.source.get("restricted"))
    api = HfApi(endpoint=hub_endpoint(), token=credentials.hf_token())
    with tempfile.TemporaryDirectory(prefix="mlc-farm-publish-") as tmp:
        local, card = _stage(store, found, repo, files, Path(tmp))
        try:
            if dry_run and (why := _hub_answers()):
                adds, deletes, same = _diff(local, files, {})
                note = (
                    f"the Hub was not asked ({why}): every file is listed as an add; what {repo} has was not compared"
                )
                return PublishResult(repo=repo, operations=adds, unchanged=0, dry_run=True, card=card, note=note)
            message = f"mlc-farm: {model} {quantization} ({', '.join(sorted(entry.libs)) or 'no libraries'})"
            for attempt in (1, 2):  # a commit answered 412 (someone pushed since we read): read again, once
                head = _head(api, repo) if not dry_run else None
                adds, deletes, same = _diff(local, files, _remote(api, repo, head) if head or dry_run else {})
                result = PublishResult(repo=repo, operations=adds + deletes, unchanged=same, dry_run=dry_run, card=card)
                if dry_run:
                    return result
                if not result.operations:  # the repo holds these files already: pinned to the commit it is at
                    _record_published(store, entry, repo, head)
                    return result
                try:
                    info = _commit(api, repo, private, local, adds, deletes, message, head)
                    break
                except HfHubHTTPError as e:
                    if _status(e) != 412 or attempt == 2:
                        raise
        except (HTTPError, RuntimeError) as e:
            raise _hub_error(e, repo) from None
    _record_published(store, entry, repo, info.oid)
    return result.model_copy(update={"commit": info.oid})


def _stage(
    store: ArtifactStore, found: Trusted, repo: str, files: dict[str, FileEntry], root: Path
) -> tuple[dict[str, Path], str]:
    """The folder to publish under `root`: the build's files (the digests the entry's verified signature holds,
    each checked as it lands), the card, the manifest, the entry's signed provenance and the folder's signature
    over everything (model-signing format); `files` gains the farm's own."""
    entry, key = found.entry, keys.signing_key()
    local = {p: root / p for p in files}
    for p, f in files.items():
        store.get_blob(f.sha256, local[p], size=f.size)
    card = model_card(entry, repo, {d: lib_path(entry, d) for d in entry.libs}, key.fingerprint)
    listing = json.dumps(manifest(store, entry, files), indent=2) + "\n"  # of the build's files only

    def add(name: str, text: str) -> None:
        local[name] = root / name
        local[name].write_text(text)
        data = local[name].read_bytes()
        files[name] = FileEntry(path=name, size=len(data), sha256=hashlib.sha256(data).hexdigest())

    add(CARD, card)
    add(MANIFEST, listing)
    add(provenance.FILE, json.dumps(signed_provenance(store, found)[1], sort_keys=True))
    bundle = sign_folder(store, {p: f.sha256 for p, f in files.items()}, repo.split("/")[-1], key)
    add(SIGNATURE, json.dumps(bundle, sort_keys=True))
    return local, card


def _commit(
    api: Any,
    repo: str,
    private: bool,
    local: dict[str, Path],
    adds: list[Operation],
    deletes: list[Operation],
    message: str,
    parent: str | None,
) -> Any:
    """One commit of the diff on top of `parent` (the commit the diff was read at): the Hub refuses it with 412
    when someone pushed since."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    _with_backoff(lambda: api.create_repo(repo, private=private, exist_ok=True))
    additions = [CommitOperationAdd(path_in_repo=o.path, path_or_fileobj=str(local[o.path])) for o in adds]
    api.preupload_lfs_files(repo, additions)  # each part retried by huggingface_hub; the commit by us
    operations: list[CommitOperationAdd | CommitOperationDelete] = [*additions]
    operations += [CommitOperationDelete(path_in_repo=o.path) for o in deletes]
    return _with_backoff(lambda: api.create_commit(repo, operations, commit_message=message, parent_commit=parent))


class Published(BaseModel):
    """Where a catalog entry's builds are on the Hub: exports point there while the entry is still these builds."""

    repo: RepoId
    commit: str | None
    convert: BuildKey
    config: BuildKey
    libs: dict[Name, BuildKey]  # device -> library key
    # The farm's signature of this document for its entry's name: an unsigned one names nothing (its repo could be
    # anyone's), so no export, page or install default follows it.
    signature: dict[str, Any] | None = None

    def root(self) -> str:
        """The URL its files are under, pinned to the commit that published them (`resolve/<commit>/`): it never
        serves other bytes, whatever is committed later (a record from before commits were kept: `main`)."""
        return f"{hub_repo_url(self.repo)}/resolve/{self.commit or 'main'}/"

    def serves(self, entry: CatalogEntry) -> bool:
        libs = {d: ref.key for d, ref in entry.libs.items()}
        return (self.convert, self.config, self.libs) == (entry.convert, entry.config, libs)


def _record_published(store: ArtifactStore, entry: CatalogEntry, repo: str, commit: str | None) -> None:
    libs = {d: ref.key for d, ref in entry.libs.items()}
    doc = Published(repo=repo, commit=commit, convert=entry.convert, config=entry.config, libs=libs)
    signature = keys.signing_key().sign(_published_statement(entry.model, entry.quantization, doc))
    store.write_json(
        published_path(entry.model, entry.quantization),
        doc.model_copy(update={"signature": signature}).model_dump(mode="json"),
    )


def _published_statement(model: str, quantization: str, doc: Published) -> dict[str, Any]:
    """What the farm signs of a published document: its name (the entry's) and its content."""
    return {
        "_type": STATEMENT_TYPE,
        "subject": [
            {
                "name": f"{model}/{quantization}",
                "digest": {"sha256": digest(doc.model_dump(mode="json", exclude={"signature"}))},
            }
        ],
        "predicateType": PUBLISHED_TYPE,
        "predicate": {"repo": doc.repo, "commit": doc.commit},
    }


def signed_published(store: ArtifactStore, model: str, quantization: str) -> Published | None:
    """The Hub repo the farm published this entry to, if the farm signed that (else None, with a warning when a
    document is there: whoever can write to the store could have written it)."""
    found = read_document(store, published_path(model, quantization), Published)
    if found is None:
        return None
    try:
        if found.signature is None:
            raise SignatureRefused("unsigned")
        checked = dsse.verify(found.signature, keys.trusted_keys(), published_path(model, quantization))
        if checked.statement != _published_statement(model, quantization, found):
            raise SignatureRefused("signed for another entry or other content")
    except SignatureRefused as e:
        log.warning("%s/%s is not the farm's (%s): ignored", store.url, published_path(model, quantization), e)
        return None
    return found


def published(store: ArtifactStore, entry: CatalogEntry) -> Published | None:
    """The Hub repo that holds exactly this entry's builds, if the farm published it there."""
    found = signed_published(store, entry.model, entry.quantization)
    return found if found and found.serves(entry) else None
