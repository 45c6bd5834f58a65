"""A small local server speaking the Hugging Face Hub HTTP API as huggingface_hub uses it, for the tests.

Repo creation, model info, preupload, LFS batch + upload (single and multipart) + verify, NDJSON commits,
tree listing, resolve/download with the headers the client needs, YAML validation. It records what was
committed and uploaded so tests assert on the Hub's state, not on return values. Unknown routes are
recorded too (and answered 404), so a test notices when the client starts using an endpoint we lack.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import yaml

LFS_SUFFIXES = (".bin", ".safetensors", ".so", ".dylib", ".dll", ".tar", ".wasm", ".model")
MULTIPART_OVER = 1_000_000  # objects above this go through the multipart large-file path
PART_SIZE = 512 * 1024


def git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class HubFile:
    data: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def oid(self) -> str:
        """What the tree and preupload answer: sha256 for LFS files, the git blob id otherwise."""
        return self.sha256 if self.lfs else git_oid(self.data)


@dataclass
class Commit:
    oid: str
    summary: str
    operations: list[dict[str, Any]]
    files: dict[str, HubFile]


@dataclass
class Repo:
    id: str
    private: bool = False
    gated: bool = False
    commits: list[Commit] = field(default_factory=list)

    def at(self, revision: str) -> Commit | None:
        if revision == "main":
            return self.commits[-1] if self.commits else None
        return next((c for c in self.commits if c.oid == revision), None)


class HubState:
    def __init__(self, token: str):
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.lfs: dict[str, bytes] = {}
        self.lfs_puts: Counter[str] = Counter()
        self.parts: dict[str, dict[int, bytes]] = {}
        self.unknown: list[str] = []
        self.lock = threading.Lock()
        # Fault injection: answer this many LFS part/object uploads, or commits, with HTTP 500; this many commits
        # with 429 and `Retry-After: limit_after` (-1: every one), noting when each commit came; let someone else
        # push to the repo just before this many commits (which then fail 412, as their parent is not the head).
        self.fail_uploads = 0
        self.fail_commits = 0
        self.limit_commits = 0
        self.limit_after = "1"
        self.commit_times: list[float] = []
        self.push_before_commits = 0

    def seed(self, repo_id: str, files: dict[str, bytes], gated: bool = False) -> str:
        """A source repository with one commit; returns the commit oid."""
        repo = self.repos.setdefault(repo_id, Repo(repo_id, gated=gated))
        hub_files = {p: HubFile(d, p.endswith(LFS_SUFFIXES)) for p, d in files.items()}
        return self._commit(repo, "seed", [{"key": "file", "value": {"path": p}} for p in files], hub_files).oid

    def _commit(self, repo: Repo, summary: str, ops: list[dict], files: dict[str, HubFile]) -> Commit:
        parent = repo.commits[-1].oid if repo.commits else ""
        oid = hashlib.sha1((parent + json.dumps(ops, sort_keys=True) + summary).encode()).hexdigest()
        commit = Commit(oid, summary, ops, files)
        repo.commits.append(commit)
        return commit


class _Handler(BaseHTTPRequestHandler):
    state: HubState
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    # plumbing ---------------------------------------------------------------------------------------------
    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, code: int, body: Any = b"", headers: dict[str, str] | None = None, head: bool = False) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if not isinstance(body, bytes):
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def _error(self, code: int, error_code: str, message: str) -> None:
        self._send(code, {"error": message}, {"X-Error-Code": error_code, "X-Error-Message": message})

    def _authorized(self) -> bool:
        if self.headers.get("Authorization") != f"Bearer {self.state.token}":
            self._error(401, "Unauthorized", "Invalid credentials in Authorization header")
            return False
        return True

    def _repo(self, repo_id: str, head: bool = False) -> Repo | None:
        repo = self.state.repos.get(repo_id)
        if repo is None or (repo.private and self.headers.get("Authorization") != f"Bearer {self.state.token}"):
            self._error(404, "RepoNotFound", "Repository not found")
            return None
        if repo.gated and self.headers.get("Authorization") != f"Bearer {self.state.token}":
            self._error(403, "GatedRepo", "Access to model is restricted. You must have access to it.")
            return None
        return repo

    def _commit_at(self, repo: Repo, revision: str) -> Commit | None:
        commit = repo.at(unquote(revision))
        if commit is None and repo.commits:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        elif commit is None:
            self._send(200, [])  # empty repo, nothing at any revision
        return commit

    def _base(self) -> str:
        return f"http://{self.headers['Host']}"

    # routing ----------------------------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self._route("HEAD")

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_PUT(self) -> None:
        self._route("PUT")

    def _route(self, method: str) -> None:
        url = urlparse(self.path)
        path, query = unquote(url.path), parse_qs(url.query)
        with self.state.lock:
            for pattern, verbs, handler in ROUTES:
                m = re.fullmatch(pattern, path)
                if m and method in verbs:
                    return handler(self, method, query, *m.groups())
            self.state.unknown.append(f"{method} {path}")
        self._error(404, "EntryNotFound", f"no route {method} {path}")

    # endpoints --------------------------------------------------------------------------------------------
    def create_repo(self, _m: str, _q: dict) -> None:
        if not self._authorized():
            return
        body = json.loads(self._body())
        repo_id = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
        if repo_id in self.state.repos:
            return self._send(409, {"error": "You already created this model repo", "url": f"{self._base()}/{repo_id}"})
        private = body.get("visibility", "private" if body.get("private") else "public") == "private"
        self.state.repos[repo_id] = Repo(repo_id, private=private)
        self._send(200, {"url": f"{self._base()}/{repo_id}", "name": repo_id})

    def model_info(self, _m: str, _q: dict, repo_id: str, revision: str | None) -> None:
        repo = self._repo(repo_id)
        if repo is None:
            return
        commit = repo.at(unquote(revision or "main"))
        if commit is None and revision:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        files = commit.files if commit else {}
        readme = files["README.md"].data.decode() if "README.md" in files else ""
        card = re.match(r"^---\n(.*?)\n---\n", readme, re.S)
        self._send(200, {
            "id": repo_id, "modelId": repo_id, "sha": commit.oid if commit else None, "private": repo.private,
            "gated": repo.gated, "disabled": False, "tags": [], "siblings": [{"rfilename": p} for p in sorted(files)],
            "cardData": yaml.safe_load(card.group(1)) if card else None,
        })  # fmt: skip

    def preupload(self, _m: str, _q: dict, repo_id: str, revision: str) -> None:
        if not self._authorized() or (repo := self._repo(repo_id)) is None:
            return
        current = repo.at(unquote(revision))
        files = current.files if current else {}
        out = []
        for f in json.loads(self._body())["files"]:
            lfs = f["path"].endswith(LFS_SUFFIXES) or f["size"] > MULTIPART_OVER
            existing = files.get(f["path"])
            out.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                        "oid": existing.oid if existing else None})  # fmt: skip
        self._send(200, {"files": out, "commitOid": current.oid if current else None})

    def lfs_batch(self, _m: str, _q: dict, repo_id: str) -> None:
        if not self._authorized() or self._repo(repo_id) is None:
            return
        objects = []
        base = self._base()
        for obj in json.loads(self._body())["objects"]:
            oid, size = obj["oid"], obj["size"]
            entry: dict[str, Any] = {"oid": oid, "size": size}
            if oid not in self.state.lfs:
                verify = {"href": f"{base}/lfs/verify/{oid}"}
                if size > MULTIPART_OVER:
                    n = -(-size // PART_SIZE)
                    header = {"chunk_size": str(PART_SIZE)} | {
                        f"{i:05d}": f"{base}/lfs/part/{oid}/{i}" for i in range(1, n + 1)
                    }
                    entry["actions"] = {
                        "upload": {"href": f"{base}/lfs/complete/{oid}", "header": header},
                        "verify": verify,
                    }
                else:
                    entry["actions"] = {"upload": {"href": f"{base}/lfs/object/{oid}"}, "verify": verify}
            objects.append(entry)
        self._send(200, {"transfer": "basic", "objects": objects})

    def _injected_failure(self, counter: str) -> bool:
        if getattr(self.state, counter) > 0:
            setattr(self.state, counter, getattr(self.state, counter) - 1)
            self._error(500, "InternalError", "injected failure")
            return True
        return False

    def lfs_put(self, _m: str, _q: dict, oid: str) -> None:
        data = self._body()
        if self._injected_failure("fail_uploads"):
            return
        if hashlib.sha256(data).hexdigest() != oid:
            return self._error(400, "BadDigest", "content does not match oid")
        self.state.lfs[oid] = data
        self.state.lfs_puts[oid] += 1
        self._send(200, b"")

    def lfs_part(self, _m: str, _q: dict, oid: str, number: str) -> None:
        data = self._body()
        if self._injected_failure("fail_uploads"):
            return
        self.state.parts.setdefault(oid, {})[int(number)] = data
        self._send(200, b"", {"ETag": f'"{hashlib.md5(data).hexdigest()}"'})

    def lfs_complete(self, _m: str, _q: dict, oid: str) -> None:
        payload = json.loads(self._body())
        parts = self.state.parts.pop(oid, {})
        data = b"".join(parts[p["partNumber"]] for p in payload["parts"])
        if hashlib.sha256(data).hexdigest() != oid:
            return self._error(400, "BadDigest", "assembled parts do not match oid")
        self.state.lfs[oid] = data
        self.state.lfs_puts[oid] += 1
        self._send(200, {"oid": oid})

    def lfs_verify(self, _m: str, _q: dict, oid: str) -> None:
        body = json.loads(self._body())
        ok = oid in self.state.lfs and len(self.state.lfs[oid]) == body["size"]
        self._send(200 if ok else 404, {"ok": ok})

    def commit(self, _m: str, _q: dict, repo_id: str, revision: str) -> None:
        if not self._authorized() or (repo := self._repo(repo_id)) is None:
            return
        body = self._body()
        self.state.commit_times.append(time.monotonic())
        if self._injected_failure("fail_commits"):
            return
        if self.state.limit_commits:
            self.state.limit_commits -= self.state.limit_commits > 0
            return self._send(429, {"error": "rate limited"}, {"Retry-After": self.state.limit_after,
                                                              "X-Error-Message": "You are rate limited"})  # fmt: skip
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if self.state.push_before_commits > 0:
            self.state.push_before_commits -= 1
            self.state._commit(repo, "someone else", [{"op": "add", "path": "theirs.txt"}],
                               {**(repo.commits[-1].files if repo.commits else {}), "theirs.txt": HubFile(b"x", False)})  # fmt: skip
        parent = lines[0]["value"].get("parentCommit")
        if parent and repo.commits and parent != repo.commits[-1].oid:
            return self._error(412, "PreconditionFailed", "A commit has happened since. Please refresh and try again.")
        current = repo.at(unquote(revision))
        files = dict(current.files) if current else {}
        ops = []
        for item in lines[1:]:
            key, value = item["key"], item["value"]
            if key == "file":
                files[value["path"]] = HubFile(base64.b64decode(value["content"]), lfs=False)
                ops.append({"op": "add", "path": value["path"], "sha256": files[value["path"]].sha256, "lfs": False})
            elif key == "lfsFile":
                if value["oid"] not in self.state.lfs:
                    return self._error(422, "LfsObjectMissing", f"LFS object {value['oid']} was not uploaded")
                files[value["path"]] = HubFile(self.state.lfs[value["oid"]], lfs=True)
                ops.append({"op": "add", "path": value["path"], "sha256": value["oid"], "lfs": True})
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    return self._error(404, "EntryNotFound", "A file with this name doesn't exist")
                ops.append({"op": "delete", "path": value["path"]})
            else:
                return self._error(400, "BadRequest", f"unsupported commit operation {key}")
        commit = self.state._commit(repo, lines[0]["value"]["summary"], ops, files)
        self._send(200, {"commitUrl": f"{self._base()}/{repo_id}/commit/{commit.oid}", "commitOid": commit.oid,
                         "pullRequestUrl": None})  # fmt: skip

    def tree(self, _m: str, _q: dict, repo_id: str, revision: str, prefix: str | None) -> None:
        if (repo := self._repo(repo_id)) is None or (commit := self._commit_at(repo, revision)) is None:
            return
        entries = []
        for p, f in sorted(commit.files.items()):
            if prefix and not p.startswith(prefix.strip("/") + "/"):
                continue
            entry: dict[str, Any] = {"type": "file", "oid": git_oid(f.data), "size": len(f.data), "path": p}
            if f.lfs:
                entry["lfs"] = {"oid": f.sha256, "size": len(f.data), "pointerSize": 134}
            entries.append(entry)
        self._send(200, entries)

    def resolve(self, method: str, _q: dict, repo_id: str, revision: str, filename: str) -> None:
        if (repo := self._repo(repo_id)) is None:
            return
        commit = repo.at(unquote(revision))
        if commit is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        f = commit.files.get(filename)
        if f is None:
            return self._error(404, "EntryNotFound", f"{filename} does not exist at {revision}")
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{f.oid}"', "Accept-Ranges": "bytes"}
        if f.lfs:
            headers |= {"X-Linked-Etag": f'"{f.sha256}"', "X-Linked-Size": str(len(f.data))}
        self._send(200, f.data, headers, head=method == "HEAD")

    def validate_yaml(self, _m: str, _q: dict) -> None:
        content = json.loads(self._body())["content"]
        match = re.match(r"^---\n(.*?)\n---\n", content, re.S)
        try:
            if match:
                yaml.safe_load(match.group(1))
        except yaml.YAMLError as e:
            return self._send(400, {"error": f"Invalid metadata in README.md: {e}"})
        self._send(200, {"errors": [], "warnings": []})


REPO = r"([^/]+/[^/]+)"
ROUTES = [
    (r"/api/repos/create", {"POST"}, _Handler.create_repo),
    (rf"/api/models/{REPO}(?:/revision/(.+))?", {"GET"}, _Handler.model_info),
    (rf"/api/models/{REPO}/preupload/([^/]+)", {"POST"}, _Handler.preupload),
    (rf"/{REPO}\.git/info/lfs/objects/batch", {"POST"}, _Handler.lfs_batch),
    (r"/lfs/object/([0-9a-f]{64})", {"PUT"}, _Handler.lfs_put),
    (r"/lfs/part/([0-9a-f]{64})/(\d+)", {"PUT"}, _Handler.lfs_part),
    (r"/lfs/complete/([0-9a-f]{64})", {"POST"}, _Handler.lfs_complete),
    (r"/lfs/verify/([0-9a-f]{64})", {"POST"}, _Handler.lfs_verify),
    (rf"/api/models/{REPO}/commit/([^/]+)", {"POST"}, _Handler.commit),
    (rf"/api/models/{REPO}/tree/([^/]+)(?:/(.+))?", {"GET"}, _Handler.tree),
    (rf"/{REPO}/resolve/([^/]+)/(.+)", {"GET", "HEAD"}, _Handler.resolve),
    (r"/api/validate-yaml", {"POST"}, _Handler.validate_yaml),
]


class LocalHub:
    """Start with `LocalHub(token)`; `endpoint` for HF_ENDPOINT; `state` to seed and to inspect."""

    def __init__(self, token: str):
        self.state = HubState(token)
        handler = type("Handler", (_Handler,), {"state": self.state})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def commits(self, repo_id: str) -> list[Commit]:
        return self.state.repos[repo_id].commits

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
