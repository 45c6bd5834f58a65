"""Provenance of a published folder: an in-toto Statement v1 with a SLSA provenance v1 predicate, made from the
store's records (pure: the same builds give the same statement), signed with the farm's key.

Subjects are the folder's files with their sha256; the predicate names the source (its repo and resolved commit,
or a local directory's files and hashes), the matrix cell and its options, each build's toolchain (mlc_llm and TVM
versions and commits, the compilers beyond the wheel), the conversion fingerprint, the worker image, the host and
the flow run of each build.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from mlc_farm.records.schema import BuildRecord, CatalogEntry

FILE = "provenance.sigstore.json"  # a Sigstore bundle whose DSSE envelope holds the statement
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://github.com/mlc-farm/mlc-farm/blob/main/README.md#supply-chain"


def _source(source: dict[str, Any]) -> dict[str, Any]:
    """The source as a SLSA resolved dependency: a Hub repo at its commit, or a local directory by its files."""
    if source.get("kind") == "hf":
        return {
            "uri": f"https://huggingface.co/{source['ref']}",
            "digest": {"gitCommit": source.get("identity")},
            "annotations": {"revision": source.get("revision"), "license": source.get("license")},
        }
    files = source.get("files") or {}
    return {
        "name": "local model directory",
        "digest": {"sha256": source.get("identity")},
        "annotations": {"path": source.get("ref"), "files": files},
    }


def _build(kind: str, record: BuildRecord) -> dict[str, Any]:
    return {
        "name": f"{kind} {record.key}",
        "annotations": {
            "host": record.host,
            "image": record.image,
            "flow_run": record.flow_run,
            "started_at": record.started_at.isoformat(),
            "finished_at": record.finished_at.isoformat(),
            "toolchain": record.toolchain,
            **({"tools": record.inputs["tools"]} if "tools" in record.inputs else {}),
        },
    }


def statement(entry: CatalogEntry, records: dict[str, BuildRecord], files: dict[str, str]) -> dict[str, Any]:
    """The statement for a folder of `files` (path -> sha256) holding `entry`'s builds (`records` by key)."""
    convert, config = records[entry.convert], records[entry.config]
    libs = {d: records[ref.key] for d, ref in sorted(entry.libs.items())}
    converted_by = convert.inputs.get("toolchain") or {}
    builds = [
        _build("convert", convert),
        _build("config", config),
        *(_build(f"library {d}", r) for d, r in libs.items()),
    ]
    every = [convert, config, *libs.values()]
    keys = {d: r.key for d, r in libs.items()}
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": p, "digest": {"sha256": h}} for p, h in sorted(files.items())],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "model": entry.model,
                    "quantization": entry.quantization,
                    "config": {k: config.inputs.get(k) for k in ("conv_template", "overrides", "model_type")},
                    "devices": {
                        d: {k: r.inputs.get(k) for k in ("target", "host", "cuda_archs", "opt", "overrides")}
                        for d, r in libs.items()
                    },
                },
                "internalParameters": {
                    "conversion_fingerprint": converted_by.get("conversion_fingerprint"),
                    "toolchain": convert.toolchain,
                    "keys": {"convert": entry.convert, "config": entry.config, "libraries": keys},
                },
                "resolvedDependencies": [_source(entry.source)],
            },
            "runDetails": {
                "builder": {"id": "https://github.com/mlc-farm/mlc-farm", "version": {"mlc-farm": version("mlc-farm")}},
                "metadata": {
                    "invocationId": convert.flow_run or "",
                    "startedOn": min(r.started_at for r in every).isoformat(),
                    "finishedOn": max(r.finished_at for r in every).isoformat(),
                },
                "byproducts": builds,
            },
        },
    }
