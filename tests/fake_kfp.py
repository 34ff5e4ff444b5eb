"""A stand-in Kubeflow Pipelines API (v2beta1 REST, the calls ``kfp.Client`` makes for upload, runs and
recurring runs) on 127.0.0.1, recording what it receives: no Kubernetes here, so the cluster path is
tested up to the server. Run it in a thread (:func:`start`) or as a process (``python -m tests.fake_kfp
PORT RECORD.json``)."""

from __future__ import annotations

import json
import sys
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

PREFIX = "/apis/v2beta1"


@dataclass
class Record:
    """What the fake server saw and holds."""

    pipelines: dict[str, dict[str, Any]] = field(default_factory=dict)
    versions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    packages: dict[str, bytes] = field(default_factory=dict)  # version id → uploaded package
    experiments: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    recurring: dict[str, dict[str, Any]] = field(default_factory=dict)
    auth: list[str] = field(default_factory=list)
    final_state: str = "SUCCEEDED"

    def to_dict(self) -> dict[str, Any]:
        return {
            "pipelines": self.pipelines,
            "versions": self.versions,
            "packages": {k: v.decode(errors="replace") for k, v in self.packages.items()},
            "experiments": self.experiments,
            "runs": self.runs,
            "recurring": self.recurring,
            "auth": self.auth,
        }


def _name_filter(query: dict[str, list[str]]) -> str | None:
    raw = (query.get("filter") or [""])[0]
    if not raw:
        return None
    preds = json.loads(raw).get("predicates", [])
    return next((p.get("stringValue") or p.get("string_value") for p in preds), None)


def _package(body: bytes) -> bytes:
    """The file part of a multipart upload (the compiled pipeline YAML)."""
    head, _, rest = body.partition(b"\r\n\r\n")
    boundary = head.split(b"\r\n", 1)[0]
    return rest.split(b"\r\n" + boundary, 1)[0]


def make_handler(rec: Record, lock: threading.Lock) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_: Any) -> None:  # quiet
            pass

        def _send(self, payload: dict[str, Any], status: int = 200) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def do_GET(self) -> None:
            url = urlparse(self.path)
            q, path = parse_qs(url.query), url.path.removeprefix(PREFIX)
            rec.auth.append(self.headers.get("Authorization", ""))
            with lock:
                if path == "/healthz":
                    return self._send({"multi_user": True})
                if path == "/pipelines":
                    name = _name_filter(q)
                    found = [p for p in rec.pipelines.values() if name is None or p["display_name"] == name]
                    return self._send({"pipelines": found, "total_size": len(found)})
                if path.startswith("/pipelines/") and path.endswith("/versions"):
                    pid = path.split("/")[2]
                    found = rec.versions.get(pid, [])
                    return self._send({"pipeline_versions": found, "total_size": len(found)})
                if path == "/experiments":
                    name = _name_filter(q)
                    found = [e for e in rec.experiments.values() if e["display_name"] == name]
                    return self._send({"experiments": found, "total_size": len(found)})
                if path.startswith("/runs/"):
                    run = rec.runs.get(path.split("/")[2])
                    if run is None:
                        return self._send({"error": "no such run"}, 404)
                    return self._send({**run, "state": rec.final_state})
            return self._send({"error": f"unknown path {path}"}, 404)

        def do_POST(self) -> None:
            url = urlparse(self.path)
            q, path = parse_qs(url.query), url.path.removeprefix(PREFIX)
            body = self._body()
            rec.auth.append(self.headers.get("Authorization", ""))
            with lock:
                if path == "/pipelines/upload":
                    pid, vid = uuid.uuid4().hex, uuid.uuid4().hex
                    name = q["name"][0]
                    rec.pipelines[pid] = {"pipeline_id": pid, "display_name": name}
                    rec.versions[pid] = [
                        {"pipeline_id": pid, "pipeline_version_id": vid, "display_name": name}
                    ]
                    rec.packages[vid] = _package(body)
                    return self._send(rec.pipelines[pid])
                if path == "/pipelines/upload_version":
                    pid, vid = q["pipelineid"][0], uuid.uuid4().hex
                    version = {"pipeline_id": pid, "pipeline_version_id": vid, "display_name": q["name"][0]}
                    rec.versions.setdefault(pid, []).append(version)
                    rec.packages[vid] = _package(body)
                    return self._send(version)
                if path == "/experiments":
                    eid = uuid.uuid4().hex
                    rec.experiments[eid] = {**json.loads(body), "experiment_id": eid}
                    return self._send(rec.experiments[eid])
                if path == "/runs":
                    rid = uuid.uuid4().hex
                    rec.runs[rid] = {**json.loads(body), "run_id": rid, "state": "PENDING"}
                    return self._send(rec.runs[rid])
                if path == "/recurringruns":
                    rid = uuid.uuid4().hex
                    rec.recurring[rid] = {**json.loads(body), "recurring_run_id": rid}
                    return self._send(rec.recurring[rid])
            return self._send({"error": f"unknown path {path}"}, 404)

    return Handler


def start(port: int = 0) -> tuple[str, Record, ThreadingHTTPServer]:
    """A fake KFP API in a thread: (URL, its record, the server to ``shutdown()``)."""
    rec, lock = Record(), threading.Lock()
    server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(rec, lock))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", rec, server


def main() -> None:
    """``python -m tests.fake_kfp PORT RECORD.json``: serve until killed, rewriting RECORD.json after
    every request."""
    port, out = int(sys.argv[1]), Path(sys.argv[2])
    rec, lock = Record(), threading.Lock()
    base = make_handler(rec, lock)

    class Dumping(base):  # type: ignore[misc, valid-type]
        def do_GET(self) -> None:
            super().do_GET()
            out.write_text(json.dumps(rec.to_dict()))

        def do_POST(self) -> None:
            super().do_POST()
            out.write_text(json.dumps(rec.to_dict()))

    ThreadingHTTPServer(("127.0.0.1", port), Dumping).serve_forever()


if __name__ == "__main__":
    main()
