"""A local stand-in for the Hugging Face Hub HTTP API, used only by the tests (it is not part of the package).

It implements only the endpoints that huggingface_hub 2.4's client calls for what the recipes do: `create_repo`,
`whoami`, `repo_info`/`model_info`, `list_repo_files` (recursive tree), `file_exists`, `hf_hub_download`,
`snapshot_download`, and `upload_file`/`upload_folder`/`create_commit` over the LFS path (preupload, LFS batch,
single-part PUT, verify, ndjson commit). Model repos only, branch `main` only for writes.

Clients must run with `HF_HUB_DISABLE_XET=1` (see `HubServer.env`): with `hf_xet` installed the client otherwise
uploads through Xet, which needs a content-addressed storage server this stand-in does not provide.

In-process: `with HubServer(tmp_path) as hub: ...` then `hub.files(repo_id)`, `hub.commits(repo_id)`,
`hub.requests`; `hub.mode = "refuse_commits"` fails uploads with HTTP 500, `hub.stop()` takes the Hub down and
`hub.start()` brings it back. In a client process, `skip_client_backoff()` spares the client's 23 s of retries.
Standalone: `python tests/hub_server.py --port 8123 --root /tmp/hub` (state lives in memory).
"""

import argparse
import base64
import contextlib
import fnmatch
import hashlib
import hmac
import json
import os
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs, unquote, urlsplit

INVALID_CREDENTIALS = "Invalid credentials in Authorization header"  # the Hub's message; the client keys on it
# A subset of the .gitattributes the Hub writes into a new model repo: files matching these go to LFS.
LFS_PATTERNS = (
    "*.bin *.safetensors *.pt *.pth *.ckpt *.h5 *.msgpack *.onnx *.npy *.npz *.pkl *.pickle *.model "
    "*.zip *.tar *.gz *.zst *.parquet *.arrow *tfevents*"
).split()
LFS_MIN_SIZE = 10 * 1024 * 1024  # the Hub refuses regular (non-LFS) files over 10 MiB, so preupload says "lfs"
GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in LFS_PATTERNS).encode()
REPO = r"(?P<repo>[\w.-]+/[\w.-]+)"
CHECKPOINT = r"(last-checkpoint|checkpoint-\d+)/"  # what mode "refuse_checkpoints" refuses to take


def _flag(query: dict, name: str) -> bool:
    return query.get(name, [""])[0].lower() in ("true", "1")


def git_oid(data: bytes) -> str:
    """The git blob id (`git hash-object`), which the client compares against to skip unchanged regular files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class Blob:
    sha256: str
    size: int
    lfs: bool

    @property
    def pointer(self) -> bytes:
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {self.size}\n".encode()


@dataclass
class Commit:
    oid: str
    title: str
    description: str
    added: list[str]
    deleted: list[str]
    tree: dict[str, Blob]
    date: str = field(default_factory=lambda: datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z"))


@dataclass
class Repo:
    id: str
    private: bool
    commits: list[Commit] = field(default_factory=list)


class HubError(Exception):
    """An error response: JSON `{"error": message}` plus the X-Error-* headers the client turns into exceptions."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None, **body):
        super().__init__(message)
        self.status, self.message, self.headers, self.body = status, message, dict(headers or {}), body
        self.headers["X-Error-Message"] = message
        if code:
            self.headers["X-Error-Code"] = code


class HubServer:
    """The Hub on 127.0.0.1. `mode` is read on every request, so it can change live: "ok", "refuse_commits" (every
    upload fails with HTTP 500) or "refuse_checkpoints" (only uploads into checkpoint folders fail)."""

    def __init__(self, root, token: str = "hf_test_token", user: str = "tester", mode: str = "ok", port: int = 0):
        self.root, self.token, self.user, self.mode, self.port = Path(root), token, user, mode, port
        (self.root / "objects").mkdir(parents=True, exist_ok=True)  # file contents, by sha256
        self.requests: list[tuple[str, str, int]] = []  # (method, path without query, status), in arrival order
        self._released = threading.Event()  # cleared by hold(): uploads wait until release(), as on a slow link
        self._released.set()
        self._repos: dict[str, Repo] = {}
        self._lock = threading.Lock()
        self._secret = os.urandom(16)  # signs the LFS upload URLs, which the client PUTs to without a token
        self._httpd: ThreadingHTTPServer | None = None

    def hold(self) -> None:
        """Make every upload request wait until release(): an upload still in flight, for as long as a test needs."""
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, token: str | None = None) -> dict[str, str]:
        """What a client process needs in its environment (set before it starts: the client reads it at import)."""
        return {
            "HF_ENDPOINT": self.url,
            "HF_TOKEN": self.token if token is None else token,
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_OFFLINE": "0",
            "HF_HUB_DISABLE_TELEMETRY": "1",
        }

    def start(self) -> "HubServer":
        """Listen (again, on the same port after a `stop()`: the repos survive, as the Hub's would an outage)."""
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), _Handler)
        self._httpd.daemon_threads, self._httpd.hub, self._httpd.connections = True, self, set()
        self.port = self._httpd.server_address[1]
        threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="hub_server", daemon=True).start()
        return self

    def stop(self) -> None:
        """Close the port and the open keep-alive connections, so clients see the Hub as down."""
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            for conn in list(httpd.connections):  # else their threads would go on serving the client
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            httpd.server_close()

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """The repo's files at `revision` (LFS files with their real content), including the Hub's .gitattributes."""
        with self._lock:
            tree = self._commit(self._repo(repo_id), revision).tree
        return {path: self._read(blob) for path, blob in sorted(tree.items())}

    def commits(self, repo_id: str) -> list[Commit]:
        """The repo's commits, oldest first; the first is the Hub's "initial commit" adding .gitattributes."""
        with self._lock:
            return list(self._repo(repo_id).commits)

    # -- storage ------------------------------------------------------------------------------------------------
    def _store(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        path = self.root / "objects" / sha
        if not path.exists():
            tmp = path.with_name(f"{sha}.{threading.get_ident()}.tmp")
            tmp.write_bytes(data)
            tmp.replace(path)  # atomic: parallel uploads of one object never expose a partial file
        return sha

    def _read(self, blob: Blob) -> bytes:
        return (self.root / "objects" / blob.sha256).read_bytes()

    def _has_object(self, sha: str, size: int) -> bool:
        path = self.root / "objects" / sha
        return path.is_file() and path.stat().st_size == size

    def _repo(self, repo_id: str) -> Repo:
        if repo_id not in self._repos:
            raise HubError(404, "Repository not found", "RepoNotFound")
        return self._repos[repo_id]

    def _commit(self, repo: Repo, revision: str) -> Commit:
        if revision == "main":
            return repo.commits[-1]
        for commit in repo.commits:  # the client pins downloads to the full sha it got from repo_info
            if len(revision) >= 7 and commit.oid.startswith(revision):
                return commit
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _new_commit(self, repo: Repo, title: str, description: str, tree: dict, added: list, deleted: list) -> Commit:
        parent = repo.commits[-1].oid if repo.commits else ""
        listing = json.dumps([parent, title, description, sorted((p, b.sha256) for p, b in tree.items())])
        commit = Commit(hashlib.sha1(listing.encode()).hexdigest(), title, description, added, deleted, tree)
        repo.commits.append(commit)
        return commit

    # -- routing ------------------------------------------------------------------------------------------------
    def _routes(self):
        # (method, path regex, handler, kind): "public" needs no token, "commit" is what refuse_commits fails
        return [
            ("GET", r"/api/agent-harnesses", self._agent_harnesses, "public"),
            ("POST", r"/api/repos/create", self._create_repo, "auth"),
            ("GET", r"/api/whoami-v2", self._whoami, "auth"),
            ("POST", r"/api/validate-yaml", self._validate_yaml, "auth"),
            ("GET", rf"/api/models/{REPO}(?:/revision/(?P<rev>[^/]+))?", self._repo_info, "auth"),
            ("GET", rf"/api/models/{REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?", self._tree, "auth"),
            ("POST", rf"/api/models/{REPO}/preupload/(?P<rev>[^/]+)", self._preupload, "commit"),
            ("POST", rf"/api/models/{REPO}/commit/(?P<rev>[^/]+)", self._commit_endpoint, "commit"),
            ("POST", rf"/{REPO}\.git/info/lfs/objects/batch", self._lfs_batch, "commit"),
            ("POST", rf"/{REPO}\.git/info/lfs/objects/verify", self._lfs_verify, "auth"),
            ("GET", rf"/{REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", self._resolve, "auth"),
            ("HEAD", rf"/{REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", self._resolve, "auth"),
        ]

    def handle(self, method: str, path: str, query: dict, headers, body: bytes) -> tuple[int, dict, bytes]:
        """Answer one request: (status, headers, body). Errors are HubErrors, rendered like the Hub renders them."""
        try:
            if method == "PUT" and path.startswith("/__lfs/"):  # a pre-signed storage URL: no token, a signature
                return self._lfs_put(path.removeprefix("/__lfs/"), query, body)
            found = [(h, k, m) for v, rx, h, k in self._routes() if v == method and (m := re.fullmatch(rx, path))]
            handler, kind, match = found[0] if found else (None, "auth", None)
            # As on the Hub, a bad token is refused whatever it asks for.
            if kind != "public" and headers.get("Authorization") != f"Bearer {self.token}":
                raise HubError(401, INVALID_CREDENTIALS)
            if handler is None:
                hint = " (it speaks LFS only: run the client with HF_HUB_DISABLE_XET=1)" if "xet" in path else ""
                raise HubError(404, f"hub_server does not implement {method} {path}{hint}")
            if kind == "commit" and self.mode == "refuse_commits":
                raise HubError(500, "Internal Error - We're working hard to fix this as soon as possible!")
            if kind == "commit" and not self._released.wait(timeout=120):
                raise HubError(504, "hub_server: the test held this upload and never released it")
            args = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
            # JSON bodies are parsed here, except the commit's ndjson (one JSON object a line).
            is_json = "json" in headers.get("Content-Type", "") and "ndjson" not in headers.get("Content-Type", "")
            with self._lock:
                result = handler(query=query, data=json.loads(body) if is_json else body, **args)
            if isinstance(result, tuple):
                return result
            return 200, {"Content-Type": "application/json"}, json.dumps(result).encode()
        except HubError as e:
            body = json.dumps({"error": e.message, **e.body}).encode()
            return e.status, {"Content-Type": "application/json", **e.headers}, body

    # -- endpoints ----------------------------------------------------------------------------------------------
    def _agent_harnesses(self, **_):
        return {"standardEnvVars": [], "harnesses": {}}  # the client fetches this registry once a day, tokenless

    def _whoami(self, **_):
        return {"type": "user", "name": self.user, "auth": {"type": "access_token", "accessToken": {"role": "write"}}}

    def _validate_yaml(self, **_):
        return {"errors": [], "warnings": []}  # the client checks README.md metadata before uploading it

    def _create_repo(self, data, **_):
        namespace = data.get("organization") or self.user  # a bare name goes under the token's user
        repo_id = f"{namespace}/{data['name']}"
        if namespace != self.user:
            raise HubError(403, f'You don\'t have the rights to create a model under the namespace "{namespace}"')
        if data.get("type", "model") != "model":
            raise HubError(400, "hub_server only implements model repos")
        if repo_id in self._repos:
            # create_repo(exist_ok=True) takes the repo's URL from this very error.
            raise HubError(409, "You already created this model repo", url=f"{self.url}/{repo_id}")
        repo = self._repos[repo_id] = Repo(repo_id, private=data.get("visibility") == "private")
        tree = {".gitattributes": Blob(self._store(GITATTRIBUTES), len(GITATTRIBUTES), lfs=False)}
        self._new_commit(repo, "initial commit", "", tree, added=[".gitattributes"], deleted=[])
        return {"url": f"{self.url}/{repo_id}", "name": repo_id, "id": repo_id}

    def _repo_info(self, repo, query, rev="main", **_):
        r = self._repo(repo)
        commit = self._commit(r, rev)
        siblings = [{"rfilename": p} for p in sorted(commit.tree)]
        if _flag(query, "blobs"):  # files_metadata=True: sizes, blob ids and LFS info too
            for s in siblings:
                entry = self._entry(s["rfilename"], commit.tree[s["rfilename"]])
                lfs = entry.get("lfs") and {"sha256": entry["lfs"]["oid"], **entry["lfs"]}  # siblings say "sha256"
                s.update(size=entry["size"], blobId=entry["oid"], lfs=lfs)
        info = {"id": repo, "sha": commit.oid, "private": r.private, "lastModified": commit.date}
        return {**info, "createdAt": r.commits[0].date, "siblings": siblings}

    def _entry(self, path: str, blob: Blob) -> dict:
        entry = {"type": "file", "path": path, "size": blob.size}
        if blob.lfs:
            entry["lfs"] = {"oid": blob.sha256, "size": blob.size, "pointerSize": len(blob.pointer)}
        entry["oid"] = git_oid(blob.pointer) if blob.lfs else git_oid(self._read(blob))
        return entry

    def _tree(self, repo, rev, query, path="", **_):
        # The client lists trees recursively (list_repo_files, snapshot_download, delete_patterns), and keeps only
        # the files: so this lists the files under `path`, and no folders.
        if not _flag(query, "recursive"):
            raise HubError(400, "hub_server lists trees recursively only")
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        tree = self._commit(self._repo(repo), rev).tree
        return [self._entry(p, blob) for p, blob in sorted(tree.items()) if p.startswith(prefix)]

    def _preupload(self, repo, rev, data, **_):
        if self.mode == "refuse_checkpoints" and any(re.match(CHECKPOINT, f["path"]) for f in data["files"]):
            raise HubError(500, "Internal Error - We're working hard to fix this as soon as possible!")
        tree = self._commit(self._writable(repo, rev), rev).tree
        files = []
        for f in data["files"]:
            lfs = f["size"] >= LFS_MIN_SIZE or any(fnmatch.fnmatch(f["path"].split("/")[-1], p) for p in LFS_PATTERNS)
            old = tree.get(f["path"])
            # The oid of the file already there lets the client drop unchanged files from the commit.
            oid = None if old is None else old.sha256 if old.lfs else git_oid(self._read(old))
            mode = "lfs" if lfs else "regular"
            files.append({"path": f["path"], "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        return {"files": files}

    def _writable(self, repo: str, rev: str) -> Repo:
        if rev != "main":
            raise HubError(404, f"Invalid rev id: {rev} (hub_server commits to main only)", "RevisionNotFound")
        return self._repo(repo)

    def _lfs_batch(self, repo, data, **_):
        self._writable(repo, data.get("ref", {}).get("name", "main"))
        if data.get("operation") != "upload":
            raise HubError(400, "hub_server implements LFS uploads only (downloads go through /resolve)")
        objects = []
        for obj in data["objects"]:
            oid, size = obj["oid"], obj["size"]
            if self._has_object(oid, size):  # no "actions": the client skips the upload
                objects.append({"oid": oid, "size": size})
                continue
            sig = hmac.new(self._secret, oid.encode(), "sha256").hexdigest()
            # No "chunk_size" in the header: the client then PUTs the whole object at once (no multipart).
            actions = {
                "upload": {"href": f"{self.url}/__lfs/{oid}?sig={sig}", "header": {}},
                "verify": {"href": f"{self.url}/{repo}.git/info/lfs/objects/verify", "header": {}},
            }
            objects.append({"oid": oid, "size": size, "authenticated": True, "actions": actions})
        body = json.dumps({"transfer": "basic", "objects": objects}).encode()
        return 200, {"Content-Type": "application/vnd.git-lfs+json"}, body

    def _lfs_put(self, oid: str, query: dict, body: bytes):
        sig = hmac.new(self._secret, oid.encode(), "sha256").hexdigest()
        if not hmac.compare_digest(query.get("sig", [""])[0], sig):
            raise HubError(403, "Request signature does not match")
        if hashlib.sha256(body).hexdigest() != oid:
            raise HubError(400, f"Uploaded content does not match sha256 {oid}")
        self._store(body)
        return 200, {}, b""

    def _lfs_verify(self, data, **_):
        if not self._has_object(data["oid"], data["size"]):
            raise HubError(404, f"Object {data['oid']} not found")
        return {"success": True}

    def _commit_endpoint(self, repo, rev, data, query, **_):
        r = self._writable(repo, rev)
        if query.get("create_pr"):
            raise HubError(400, "hub_server does not implement pull requests")
        lines = [json.loads(line) for line in data.splitlines() if line.strip()]
        header = next(line["value"] for line in lines if line["key"] == "header")
        head = r.commits[-1]
        if header.get("parentCommit") and not head.oid.startswith(header["parentCommit"]):
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        tree, added, deleted = dict(head.tree), [], []
        for line in lines:
            key, value = line["key"], line["value"]
            if key == "file":
                content = base64.b64decode(value["content"])
                tree[value["path"]] = Blob(self._store(content), len(content), lfs=False)
                added.append(value["path"])
            elif key == "lfsFile":
                if not self._has_object(value["oid"], value.get("size", -1)):
                    raise HubError(400, f"LFS object {value['oid']} of {value['path']} was never uploaded")
                tree[value["path"]] = Blob(value["oid"], value["size"], lfs=True)
                added.append(value["path"])
            elif key in ("deletedFile", "deletedFolder"):
                folder = value["path"].rstrip("/") + "/"
                gone = [p for p in tree if p == value["path"] or (key == "deletedFolder" and p.startswith(folder))]
                if not gone:
                    raise HubError(404, f"A file with this name doesn't exist: {value['path']}", "EntryNotFound")
                for p in gone:
                    del tree[p]
                deleted += gone
            elif key != "header":
                raise HubError(400, f"hub_server does not implement commit operation {key!r}")
        commit = self._new_commit(r, header["summary"], header.get("description", ""), tree, added, deleted)
        url = f"{self.url}/{repo}/commit/{commit.oid}"
        return {"success": True, "commitOid": commit.oid, "commitUrl": url, "pullRequestUrl": None}

    def _resolve(self, repo, rev, path, **_):
        commit = self._commit(self._repo(repo), rev)
        blob = commit.tree.get(path)
        if blob is None:  # the client caches "no such file at this commit", keyed on X-Repo-Commit
            raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": commit.oid})
        data = self._read(blob)
        etag = blob.sha256 if blob.lfs else git_oid(data)
        headers = {"Content-Type": "application/octet-stream", "ETag": f'"{etag}"', "X-Repo-Commit": commit.oid}
        if blob.lfs:  # the Hub redirects LFS files to a CDN and names the real object in X-Linked-*; served directly
            headers |= {"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(blob.size)}
        return 200, headers, data


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects

    def log_message(self, *args):  # quiet: the request log is HubServer.requests
        pass

    def setup(self):  # track keep-alive connections, for stop() to cut them
        super().setup()
        self.server.connections.add(self.connection)

    def finish(self):
        self.server.connections.discard(self.connection)
        super().finish()

    def _serve(self):
        hub = self.server.hub
        url = urlsplit(self.path)
        # The client always sends a Content-Length, even when it PUTs a file or a BytesIO: no chunked bodies.
        request_body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, headers, body = hub.handle(self.command, url.path, parse_qs(url.query), self.headers, request_body)
        with hub._lock:
            hub.requests.append((self.command, url.path, status))
        self.send_response(status)
        # The client quotes X-Request-Id in its error messages, as it would the Hub's.
        headers = {**headers, "X-Request-Id": f"Root=1-{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex[:24]}"}
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_POST = do_PUT = _serve


def skip_client_backoff() -> list[float]:
    """Call in a client process: huggingface_hub's retry loop then notes its waits in the returned list instead of
    sleeping them. It retries a failed preupload/LFS batch (HTTP 5xx, connection refused) 5 times over 23 s; with
    this, a test sees the same requests and the same exception at once."""
    import huggingface_hub.utils._http as http  # here: the server itself needs the standard library only

    waits: list[float] = []
    http.time = SimpleNamespace(**{**vars(time), "sleep": waits.append})
    return waits


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve a local stand-in of the Hugging Face Hub API.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--root", required=True, help="folder for the uploaded file contents")
    parser.add_argument("--token", default="hf_test_token")
    parser.add_argument("--user", default="tester")
    parser.add_argument("--mode", default="ok", choices=["ok", "refuse_commits", "refuse_checkpoints"])
    args = parser.parse_args()
    hub = HubServer(args.root, token=args.token, user=args.user, mode=args.mode, port=args.port).start()
    print(hub.url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        hub.stop()


if __name__ == "__main__":
    main()
