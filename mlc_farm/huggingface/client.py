"""A client of the Hub with the farm's endpoint and token: each call's errors in the farm's words
(huggingface/errors.py), the calls huggingface_hub does not retry itself under the one retry layer.

The token is read when the client is made, outside any network call: a missing MLC_FARM_HF_TOKEN_BLOCK is bad
input (exit 2), a Prefect server that drops the connection while it is read is a service (exit 3); neither is
reported as the Hub.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlc_farm import credentials
from mlc_farm.huggingface.endpoint import endpoint
from mlc_farm.huggingface.errors import hub_errors, with_backoff


@dataclass(frozen=True)
class RepoInfo:
    """What the farm reads of a model repo at a revision."""

    sha: str
    files: list[str]
    license: str | None
    restricted: bool  # gated or private: its terms may not allow republishing


class Hub:
    """The Hub at HF_ENDPOINT with the farm's token (HF_TOKEN, else the MLC_FARM_HF_TOKEN_BLOCK Secret)."""

    def __init__(self) -> None:
        from huggingface_hub import HfApi

        self.endpoint, self.token = endpoint(), credentials.hf_token()
        self.api = HfApi(endpoint=self.endpoint, token=self.token)

    def model_info(self, repo: str, revision: str | None) -> RepoInfo:
        """Asked once: a plan or a nightly says at once that a source cannot be resolved (the run then ends
        `hub unreachable`, exit 3, and the next one resolves it), rather than waiting out the retry budget."""
        with hub_errors(repo, self.endpoint, revision):
            info = self.api.model_info(repo, revision=revision)
        card = info.card_data
        return RepoInfo(
            sha=str(info.sha),
            files=[s.rfilename for s in info.siblings or []],
            license=getattr(card, "license", None) if card else None,
            restricted=bool(getattr(info, "gated", False)) or bool(getattr(info, "private", False)),
        )

    def download(self, repo: str, filename: str, revision: str) -> Path:
        """One file of the repo at a commit, through huggingface_hub's cache (its own retries)."""
        from huggingface_hub import hf_hub_download

        with hub_errors(repo, self.endpoint, revision):
            return Path(hf_hub_download(repo, filename, revision=revision, endpoint=self.endpoint, token=self.token))

    def snapshot(self, repo: str, revision: str, patterns: list[str], cache_dir: Path) -> Path:
        """These files of the repo at a commit in `cache_dir` (huggingface_hub's fast, resumable downloads)."""
        from huggingface_hub import snapshot_download

        with hub_errors(repo, self.endpoint, revision):
            return Path(
                snapshot_download(
                    repo, revision=revision, allow_patterns=patterns, cache_dir=cache_dir, token=self.token,
                    endpoint=self.endpoint,
                )
            )  # fmt: skip

    def head(self, repo: str) -> str | None:
        """The commit the repo's main branch is at; None for a repo that does not exist yet."""
        from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

        with hub_errors(repo, self.endpoint, writing=True):
            try:
                sha = with_backoff(lambda: self.api.model_info(repo).sha)
                return str(sha) if sha else None
            except (RepositoryNotFoundError, RevisionNotFoundError):
                return None

    def tree(self, repo: str, revision: str | None) -> dict[str, tuple[str, str | None]]:
        """path -> (git blob id, LFS sha256 or None) of the repo at `revision`; empty for a new repo."""
        from huggingface_hub import RepoFile
        from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

        with hub_errors(repo, self.endpoint, writing=True):
            try:
                listed = self.api.list_repo_tree(repo, revision=revision, recursive=True, expand=True)
                return {f.path: (f.blob_id, f.lfs.sha256 if f.lfs else None) for f in listed if isinstance(f, RepoFile)}
            except (RepositoryNotFoundError, RevisionNotFoundError):
                return {}

    def commit(
        self, repo: str, private: bool, adds: Mapping[str, Path], deletes: list[str], message: str, parent: str | None
    ) -> str:
        """One commit on top of `parent` (the commit the diff was read at); its id. The Hub refuses it with 412
        (HubConflict) when someone pushed since; a commit is atomic, so a retry never leaves half of one."""
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        with hub_errors(repo, self.endpoint, writing=True):
            with_backoff(lambda: self.api.create_repo(repo, private=private, exist_ok=True))
            additions = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(f)) for p, f in adds.items()]
            self.api.preupload_lfs_files(repo, additions)  # each part retried by huggingface_hub; the commit by us
            operations: list[Any] = [*additions, *(CommitOperationDelete(path_in_repo=p) for p in deletes)]
            info = with_backoff(
                lambda: self.api.create_commit(repo, operations, commit_message=message, parent_commit=parent)
            )
            return str(info.oid)
