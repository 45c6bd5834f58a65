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
import tempfile
from pathlib import Path
from typing import Any, TypeVar

import yaml

from mlc_farm.catalog import published
from mlc_farm.checks.speed import LIVENESS_STEPS, of_phase
from mlc_farm.devices import Family, of_target
from mlc_farm.devices import family as device_family
from mlc_farm.errors import HubConflict, PublishError, StoreError
from mlc_farm.huggingface.client import Hub
from mlc_farm.huggingface.endpoint import unanswerable
from mlc_farm.records.folder import lib_path
from mlc_farm.records.outcomes import Operation, PublishResult
from mlc_farm.records.reads import load_record
from mlc_farm.records.schema import CatalogEntry, FileEntry
from mlc_farm.store import ArtifactStore
from mlc_farm.trust import keys, provenance
from mlc_farm.trust.entry_signatures import Trusted, sign_folder, signed_provenance, trusted_files
from mlc_farm.trust.signatures import SIGNATURE

T = TypeVar("T")
MANIFEST = "mlc-farm-manifest.json"
CARD = "README.md"
log = logging.getLogger(__name__)


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


def publish(
    store: ArtifactStore, model: str, quantization: str, repo: str, private: bool | None, dry_run: bool = False
) -> PublishResult:
    """Make `repo` hold exactly this build, in one commit; `dry_run` only reads the Hub. Unless the matrix says
    (`private`), a repo made from a gated or private source is private: its terms may not allow more."""
    found, files = trusted_files(store, model, quantization)  # publishes only what verifies (else exit 1)
    entry = found.entry
    if private is None:
        private = bool(entry.source.get("restricted"))
    hub = Hub()
    with tempfile.TemporaryDirectory(prefix="mlc-farm-publish-") as tmp:
        local, card = _stage(store, found, repo, files, Path(tmp))
        if dry_run and (why := unanswerable()):
            adds, deletes, same = _diff(local, files, {})
            note = f"the Hub was not asked ({why}): every file is listed as an add; what {repo} has was not compared"
            return PublishResult(repo=repo, operations=adds, unchanged=0, dry_run=True, card=card, note=note)
        message = f"mlc-farm: {model} {quantization} ({', '.join(sorted(entry.libs)) or 'no libraries'})"
        for attempt in (1, 2):  # a commit answered 412 (someone pushed since we read): read again, once
            head = hub.head(repo) if not dry_run else None
            adds, deletes, same = _diff(local, files, hub.tree(repo, head) if head or dry_run else {})
            result = PublishResult(repo=repo, operations=adds + deletes, unchanged=same, dry_run=dry_run, card=card)
            if dry_run:
                return result
            if not result.operations:  # the repo holds these files already: pinned to the commit it is at
                published.record_published(store, entry, repo, head)
                return result
            try:
                commit = hub.commit(repo, private, {o.path: local[o.path] for o in adds}, [o.path for o in deletes],
                                    message, head)  # fmt: skip
                break
            except HubConflict:
                if attempt == 2:
                    raise PublishError(
                        f"someone else pushed to {repo} while this publish ran, twice (HTTP 412 on the commit "
                        "after reading it again): publish again once they are done"
                    ) from None
    published.record_published(store, entry, repo, commit)
    return result.model_copy(update={"commit": commit})


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
