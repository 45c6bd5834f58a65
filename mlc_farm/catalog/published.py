"""Where the farm published a catalog entry on the Hub (`published/<model>/<quant>.json`), signed for the entry's
name: exports, installs and the page follow it only while it serves exactly the entry's builds."""

from __future__ import annotations

import logging
from typing import Any

from mlc_farm.digests import digest
from mlc_farm.huggingface.endpoint import repo_url
from mlc_farm.names import BuildKey, Name, RepoId
from mlc_farm.records.schema import CatalogEntry
from mlc_farm.store import ArtifactStore
from mlc_farm.store.documents import read_document
from mlc_farm.store.layout import published_path
from mlc_farm.trust import dsse, keys
from mlc_farm.trust.dsse import STATEMENT_TYPE, SignatureRefused
from mlc_farm.written import Written

log = logging.getLogger(__name__)

PUBLISHED_TYPE = "https://github.com/mlc-farm/mlc-farm/blob/main/README.md#signatures"  # a published document's


class Published(Written):
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
        return f"{repo_url(self.repo)}/resolve/{self.commit or 'main'}/"

    def serves(self, entry: CatalogEntry) -> bool:
        libs = {d: ref.key for d, ref in entry.libs.items()}
        return (self.convert, self.config, self.libs) == (entry.convert, entry.config, libs)


def record_published(store: ArtifactStore, entry: CatalogEntry, repo: str, commit: str | None) -> None:
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
