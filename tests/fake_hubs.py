"""Local stand-ins for the Hugging Face hub (or a mirror of it) and for ModelScope, each speaking the HTTP protocol
its client uses, so that downloads are tested offline and end to end (the real ``huggingface_hub`` and
``modelscope_hub`` clients, pointed at ``HF_ENDPOINT`` / ``MODELSCOPE_ENDPOINT``).

What each serves, as read from its client's source:

* Hugging Face: ``GET /api/models/<id>[/revision/<rev>]`` (the commit and the file list), ``HEAD``/``GET
  /[datasets/]<id>/resolve/<rev>/<file>`` with ``ETag``, ``X-Repo-Commit`` and ``Content-Length``; large files
  answer with a redirect to ``/lfs/<sha256>`` and ``X-Linked-Etag``/``X-Linked-Size``, plus the Xet headers
  that huggingface.co sends; errors carry ``X-Error-Code`` (``GatedRepo``, ``RepoNotFound``).
* ModelScope: ``GET /api/v1/models/<id>/repo/files`` (``{"Code": 200, "Data": {"Files": [...]}}``) and ``GET
  /api/v1/models/<id>/repo?Revision=..&FilePath=..``; the token arrives as ``Authorization: Bearer`` and the
  ``m_session_id`` cookie.

Both honour ``Range`` (206 with ``Content-Range``), record every request, and can cut a file's body short once
(:meth:`FakeHub.cut_next`), as a dropped connection does, optionally refusing the next request for that file.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

LFS_SUFFIXES = (".safetensors", ".zip", ".bin")


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]

    @property
    def token(self) -> str | None:
        """The token the client sent, as a bearer token or ModelScope's session cookie."""
        auth = self.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:]
        cookie = SimpleCookie(self.headers.get("cookie", ""))
        return cookie["m_session_id"].value if "m_session_id" in cookie else None


@dataclass
class Repo:
    files: dict[str, bytes]
    gated: bool = False
    granted: set[str] = field(default_factory=set)  # tokens whose owners were granted access
    sha: str = ""

    def __post_init__(self):
        digest = hashlib.sha1(b"".join(name.encode() + data for name, data in sorted(self.files.items())))
        self.sha = self.sha or digest.hexdigest()


class FakeHub:
    """A threaded HTTP server on 127.0.0.1; ``with FakeHub() as hub: hub.url``."""

    def __init__(self):
        self.models: dict[str, Repo] = {}
        self.datasets: dict[str, Repo] = {}
        self.requests: list[Request] = []
        self._cuts: dict[str, int] = {}  # file path -> bytes to send before dropping the connection, once
        self._refusals: dict[str, int] = {}  # file path -> HTTP status of the next request for it, once
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                hub._handle(self, body=True)

            def do_HEAD(self):
                hub._handle(self, body=False)

            def log_message(self, *args):  # keep the test output clean
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "FakeHub":
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()

    def cut_next(self, path: str, after_bytes: int, then_status: int | None = None) -> None:
        """The next response carrying ``path``'s bytes announces them all but drops the connection after
        ``after_bytes``; with ``then_status``, the request after that (a client's own retry) is refused with it."""
        self._cuts[path] = after_bytes
        if then_status is not None:
            self._refusals[path] = then_status

    def requests_for(self, fragment: str) -> list[Request]:
        return [request for request in self.requests if fragment in request.path]

    def _handle(self, handler: BaseHTTPRequestHandler, body: bool) -> None:
        headers = {key.lower(): value for key, value in handler.headers.items()}
        request = Request(handler.command, handler.path, headers)
        self.requests.append(request)
        url = urlparse(handler.path)
        reply = self.route(request, unquote(url.path), parse_qs(url.query))
        status, reply_headers, payload, file_path = reply
        cut = self._cuts.pop(file_path, None) if body and file_path else None
        if cut is None and file_path in self._refusals and file_path not in self._cuts:
            status, reply_headers, payload = self._refusals.pop(file_path), {}, b"refused"
        handler.send_response(status)
        for key, value in reply_headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        if body:
            handler.wfile.write(payload if cut is None else payload[:cut])
            handler.wfile.flush()
        if cut is not None:
            handler.close_connection = True

    def route(self, request: Request, path: str, query: dict) -> tuple[int, dict, bytes, str | None]:
        raise NotImplementedError


def ranged(data: bytes, request: Request, headers: dict) -> tuple[int, dict, bytes]:
    """The whole file, or the part a ``Range: bytes=a-[b]`` header asks for."""
    match = re.fullmatch(r"bytes=(\d+)-(\d*)", request.headers.get("range", ""))
    headers = {"Accept-Ranges": "bytes", **headers}
    if match is None:
        return 200, headers, data
    start = int(match[1])
    end = int(match[2]) if match[2] else len(data) - 1
    if start >= len(data):
        return 416, {**headers, "Content-Range": f"bytes */{len(data)}"}, b""
    headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
    return 206, headers, data[start:end + 1]


def json_reply(status: int, value, headers: dict | None = None) -> tuple[int, dict, bytes, None]:
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(value).encode(), None


class HuggingFaceHub(FakeHub):
    """The hub's protocol as ``huggingface_hub`` 0.36 uses it for ``snapshot_download`` and ``hf_hub_download``."""

    def access_error(self, repo_id: str, repo: Repo | None, request: Request):
        if repo is None:
            return json_reply(401, {"error": "Repository not found"},
                              {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"})
        if repo.gated and request.token not in repo.granted:
            status = 401 if request.token is None else 403
            message = f"Access to model {repo_id} is restricted."
            return json_reply(status, {"error": message}, {"X-Error-Code": "GatedRepo", "X-Error-Message": message})
        return None

    def route(self, request, path, query):
        if match := re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path):
            repo = self.models.get(match[1])
            if repo is None:  # a gated repo's card and file list are public; its files are not
                return self.access_error(match[1], repo, request)
            siblings = [{"rfilename": name} for name in sorted(repo.files)]
            return json_reply(200, {"id": match[1], "modelId": match[1], "sha": repo.sha, "private": False,
                                    "gated": "manual" if repo.gated else False, "siblings": siblings})
        if match := re.fullmatch(r"/(datasets/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
            repo_id, file_name = match[2], match[4]
            repo = (self.datasets if match[1] else self.models).get(repo_id)
            if (error := self.access_error(repo_id, repo, request)) is not None:
                return error
            if match[3] not in ("main", repo.sha) or file_name not in repo.files:
                return json_reply(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
            data = repo.files[file_name]
            headers = {"X-Repo-Commit": repo.sha, "ETag": f'"{hashlib.sha1(data).hexdigest()}"'}
            if file_name.endswith(LFS_SUFFIXES):
                sha256 = hashlib.sha256(data).hexdigest()
                headers |= {"Location": f"{self.url}/lfs/{sha256}", "X-Linked-Etag": f'"{sha256}"',
                            "X-Linked-Size": str(len(data)), "X-Xet-Hash": sha256,
                            "Link": f'<{self.url}/api/models/{repo_id}/xet-read-token/{repo.sha}>; rel="xet-auth"'}
                return 302, headers, b"", None
            status, headers, payload = ranged(data, request, headers)
            return status, headers, payload, file_name
        if match := re.fullmatch(r"/lfs/([0-9a-f]{64})", path):
            for repo in [*self.models.values(), *self.datasets.values()]:
                for file_name, data in repo.files.items():
                    if hashlib.sha256(data).hexdigest() == match[1]:
                        status, headers, payload = ranged(data, request, {"ETag": f'"{match[1]}"'})
                        return status, headers, payload, file_name
        return json_reply(404, {"error": "not found"})


class ModelScopeHub(FakeHub):
    """ModelScope's protocol as ``modelscope_hub`` 0.5 uses it for ``HubApi.download_repo``."""

    def route(self, request, path, query):
        match = re.fullmatch(r"/api/v1/models/([^/]+/[^/]+)/repo(/files)?", path)
        if match is None:  # e.g. the client's probe for Alibaba Cloud's internal network
            return json_reply(404, {"Code": 404, "Message": "not found", "Success": False})
        repo = self.models.get(match[1])
        if repo is None:
            return json_reply(404, {"Code": 404, "Message": f"model {match[1]} not found", "Success": False})
        if repo.gated and request.token not in repo.granted:
            status = 401 if request.token is None else 403
            return json_reply(status, {"Code": status, "Message": "please agree to the license", "Success": False})
        if match[2]:
            files = [{"Name": name.rsplit("/", 1)[-1], "Path": name, "Type": "blob", "Size": len(data),
                      "Sha256": hashlib.sha256(data).hexdigest(), "Revision": repo.sha}
                     for name, data in sorted(repo.files.items())]
            folders = sorted({name.rsplit("/", 1)[0] for name in repo.files if "/" in name})
            files += [{"Name": folder, "Path": folder, "Type": "tree", "Size": 0} for folder in folders]
            return json_reply(200, {"Code": 200, "Data": {"Files": files}, "Message": "success", "Success": True})
        file_name = query.get("FilePath", [""])[0]
        if file_name not in repo.files:
            return json_reply(404, {"Code": 404, "Message": "file not found", "Success": False})
        status, headers, payload = ranged(repo.files[file_name], request, {"Content-Type": "application/octet-stream"})
        return status, headers, payload, file_name
