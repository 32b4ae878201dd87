"""A local stand-in for the Hugging Face Hub's HTTP API, for tests of `rlhf push` and `rlhf reproduce`.

A real HTTP server on 127.0.0.1 (a thread): the real `huggingface_hub.HfApi` talks
to it through `endpoint=stub.url`, so the requests are exactly those the Hub would
get. It implements the endpoints our code uses, for model, dataset and Space repos
alike (`{type}`: models, datasets, spaces), and keeps repos in memory:

    POST /api/repos/create                          create_repo (409 + url when it exists)
    POST /api/validate-yaml                         README metadata check (create_commit)
    POST /api/{type}s/{ns}/{name}/preupload/{rev}   every file "regular" (inline in the commit)
    POST /api/{type}s/{ns}/{name}/commit/{rev}      NDJSON commit: recorded in `stub.commits`
    POST /api/{type}s/{ns}/{name}/branch/{branch}   create_branch
    POST /api/spaces/{ns}/{name}/variables          add_space_variable
    POST /api/spaces/{ns}/{name}/hardware           request_space_hardware (create_repo's `hardware` too)
    GET  /api/{type}s/{ns}/{name}/revision/{rev}    repo_info (snapshot_download)
    GET  /api/{type}s/{ns}/{name}/tree/{rev}        list_repo_tree
    HEAD/GET /[{type}s/]{ns}/{name}/resolve/{rev}/{path}   file download

Write calls need `Authorization: Bearer <stub.token>` (401 otherwise). `stub.fail(...)`
makes the next matching requests answer an error status, to test retries. The
stub stores request paths and bodies' parsed content, never request headers, so
a token can only end up in a file if our code writes it there.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse


@dataclass
class Commit:
    repo_id: str
    repo_type: str
    revision: str
    message: str
    files: dict[str, bytes]
    oid: str


@dataclass
class Repo:
    repo_type: str
    private: bool
    sdk: str | None = None
    branches: dict[str, dict[str, bytes]] = field(default_factory=lambda: {"main": {}})
    heads: dict[str, str] = field(default_factory=lambda: {"main": "0" * 40})
    variables: dict[str, str] = field(default_factory=dict)
    hardware: str | None = None  # the flavor asked for (create_repo's `hardware`, then request_space_hardware)


URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}  # a repo's page: {hub}/{prefix}{repo_id}


class HubStub:
    """with HubStub(token="hf_...") as hub: HfApi(endpoint=hub.url, token=...)..."""

    def __init__(self, token: str = "hf_stub_token"):
        self.token = token
        self.repos: dict[tuple[str, str], Repo] = {}
        self.commits: list[Commit] = []
        self.requests: list[tuple[str, str]] = []
        self._failures: list[list] = []  # [method, path regex, status, remaining]
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -------------------------------------------------------------- control

    @property
    def url(self) -> str:
        assert self._server is not None, "start the stub first (with HubStub() as hub)"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def fail(self, method: str, path_regex: str, status: int = 503, times: int = 1) -> None:
        """The next `times` requests matching (method, path) get `status`."""
        self._failures.append([method, re.compile(path_regex), status, times])

    def files(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> dict[str, bytes]:
        return self.repos[(repo_type, repo_id)].branches[revision]

    def __enter__(self) -> "HubStub":
        stub = self

        class Handler(_Handler):
            hub = stub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # -------------------------------------------------------------- state

    def _failure(self, method: str, path: str) -> int | None:
        with self._lock:
            for f in self._failures:
                if f[0] == method and f[1].search(path) and f[3] > 0:
                    f[3] -= 1
                    return f[2]
        return None

    def _commit(self, repo_type: str, repo_id: str, revision: str, lines: list[dict]) -> Commit:
        with self._lock:
            repo = self.repos[(repo_type, repo_id)]
            if revision not in repo.branches:
                raise KeyError(revision)
            header, files = {}, {}
            for item in lines:
                if item["key"] == "header":
                    header = item["value"]
                elif item["key"] == "file":
                    v = item["value"]
                    files[v["path"]] = base64.b64decode(v["content"]) if v.get("encoding") == "base64" else v["content"].encode()
                else:
                    raise ValueError(f"the stub does not support {item['key']} operations")
            tree = repo.branches[revision]
            tree.update(files)
            oid = hashlib.sha1(json.dumps(sorted((k, hashlib.sha1(v).hexdigest()) for k, v in tree.items())).encode()
                               + repo.heads[revision].encode()).hexdigest()
            repo.heads[revision] = oid
            commit = Commit(repo_id, repo_type, revision, header.get("summary", ""), files, oid)
            self.commits.append(commit)
            return commit


class _Handler(BaseHTTPRequestHandler):
    hub: HubStub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet: the test output is ours
        pass

    # -------------------------------------------------------------- helpers

    def _send(self, status: int, body: object = None, headers: dict | None = None, raw: bytes | None = None) -> None:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream" if raw is not None else "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, status: int, message: str) -> None:
        self._send(status, {"error": message}, {"X-Error-Message": message})

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _authorised(self) -> bool:
        return self.headers.get("Authorization") == f"Bearer {self.hub.token}"

    def _route(self, method: str) -> None:
        path = unquote(urlparse(self.path).path)
        self.hub.requests.append((method, path))
        body = self._body() if method == "POST" else b""
        status = self.hub._failure(method, path)
        if status is not None:
            return self._error(status, "injected failure")
        try:
            self._dispatch(method, path, body)
        except Exception as e:  # a stub bug must show up as a failing request, not a hang
            self._error(500, f"stub error: {type(e).__name__}: {e}")

    def do_POST(self) -> None:
        self._route("POST")

    def do_GET(self) -> None:
        self._route("GET")

    def do_HEAD(self) -> None:
        self._route("HEAD")

    # -------------------------------------------------------------- endpoints

    def _dispatch(self, method: str, path: str, body: bytes) -> None:
        hub = self.hub
        if method == "POST" and path == "/api/validate-yaml":
            return self._send(200, {"errors": [], "warnings": []})
        if method == "POST" and path == "/api/repos/create":
            if not self._authorised():
                return self._error(401, "Invalid credentials in Authorization header")
            req = json.loads(body)
            repo_id = f"{req['organization']}/{req['name']}" if req.get("organization") else req["name"]
            repo_type = req.get("type") or "model"
            url = f"{hub.url}/{URL_PREFIX[repo_type]}{repo_id}"
            with hub._lock:
                if (repo_type, repo_id) in hub.repos:
                    return self._send(409, {"error": "You already created this repo", "url": url})
                hub.repos[(repo_type, repo_id)] = Repo(repo_type, req.get("visibility") == "private", req.get("sdk"),
                                                       hardware=req.get("hardware"))
            return self._send(200, {"url": url, "name": repo_id})
        m = re.fullmatch(r"/api/(model|space|dataset)s/([^/]+/[^/]+)/(preupload|commit|branch|revision|tree)/(.+?)/?", path)
        if m:
            repo_type, repo_id, action, rest = m.groups()
            repo = hub.repos.get((repo_type, repo_id))
            if repo is None:
                return self._error(404, f"Repository not found: {repo_id}")
            if method == "POST" and not self._authorised():
                return self._error(401, "Invalid credentials in Authorization header")
            if action == "preupload":
                files = json.loads(body)["files"]
                return self._send(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                                  for f in files]})
            if action == "commit":
                lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
                try:
                    commit = hub._commit(repo_type, repo_id, rest, lines)
                except KeyError:
                    return self._error(404, f"Revision not found: {rest}")
                return self._send(200, {"commitUrl": f"{hub.url}/{URL_PREFIX[repo_type]}{repo_id}/commit/{commit.oid}",
                                        "commitOid": commit.oid, "success": True})
            if action == "branch":
                with hub._lock:
                    if rest in repo.branches:
                        return self._error(409, f"Branch {rest} already exists")
                    repo.branches[rest] = dict(repo.branches["main"])
                    repo.heads[rest] = repo.heads["main"]
                return self._send(200, {})
            rev = self._resolve(repo, rest.split("/")[0])
            if rev is None:
                return self._error(404, f"Revision not found: {rest}")
            files = repo.branches[rev]
            if action == "revision":
                return self._send(200, {"id": repo_id, "sha": repo.heads[rev], "private": repo.private,
                                        "siblings": [{"rfilename": p} for p in sorted(files)]},
                                  {"X-Repo-Commit": repo.heads[rev]})
            if action == "tree":
                return self._send(200, [{"type": "file", "path": p, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                                        for p, b in sorted(files.items())])
        m = re.fullmatch(r"/api/spaces/([^/]+/[^/]+)/(variables|hardware)", path)
        if m and method == "POST":  # Space settings: the repo must exist, then the token must be valid
            repo = hub.repos.get(("space", m.group(1)))
            if repo is None:
                return self._error(404, f"Repository not found: {m.group(1)}")
            if not self._authorised():
                return self._error(401, "Invalid credentials in Authorization header")
            if m.group(2) == "variables":
                req = json.loads(body)
                repo.variables[req["key"]] = req["value"]
                return self._send(200, {k: {"value": v, "updatedAt": "2030-01-01T00:00:00.000Z"}
                                        for k, v in repo.variables.items()})
            repo.hardware = json.loads(body)["flavor"]
            return self._send(200, {"stage": "BUILDING", "hardware": {"current": None, "requested": repo.hardware}})
        m = re.fullmatch(r"/(?:(spaces|datasets)/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if m and method in ("GET", "HEAD"):
            prefix, repo_id, rev, file = m.groups()
            repo = hub.repos.get(({"spaces": "space", "datasets": "dataset"}.get(prefix or "", "model"), repo_id))
            if repo is None:
                return self._error(404, f"Repository not found: {repo_id}")
            branch = self._resolve(repo, rev)
            if branch is None or file not in repo.branches[branch]:
                return self._send(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
            data = repo.branches[branch][file]
            return self._send(200, headers={"X-Repo-Commit": repo.heads[branch],
                                            "ETag": f'"{hashlib.sha1(data).hexdigest()}"'}, raw=data)
        return self._error(404, f"stub: no route for {method} {path}")

    @staticmethod
    def _resolve(repo: Repo, rev: str) -> str | None:
        if rev in repo.branches:
            return rev
        return next((b for b, head in repo.heads.items() if head == rev), None)
