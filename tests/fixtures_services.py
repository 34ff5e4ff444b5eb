"""Real services for tests: an S3 server (moto, in-process, 127.0.0.1), an MLflow sqlite store (migrated
once per session, copied per test) and a real ``mlflow server`` subprocess with S3 artifacts.

Use with ``pytest_plugins = ["tests.fixtures_services"]`` (conftest) or import the fixtures.

    moto_server        session  S3Server (endpoint_url, client(), make_bucket(), env())
    s3_env             function S3 credentials + endpoint in the environment (AWS_*, MLFLOW_S3_ENDPOINT_URL)
    s3_bucket          function a fresh bucket name on moto_server (s3_env applied)
    mlflow_db_template session  a migrated, empty MLflow sqlite file (the first migration costs ~6 s; it
                                runs in a subprocess from mlflow_db_template_launch, so request that early)
    mlflow_store       function MlflowStore: a copy of the template under tmp_path, file artifacts;
                                MLFLOW_TRACKING_URI, TRU_MLFLOW_ARTIFACTS and TMPDIR set for the test
    mlflow_s3_store    function the same with artifacts in s3://<fresh bucket>/mlflow
    mlflow_server      session  MlflowServer: `mlflow server` on a free port, sqlite backend,
                                --artifacts-destination s3://<bucket>/proxied (clients need no S3 keys);
                                launched by mlflow_server_launch (request that early: 10-30 s start-up)
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

HOST = "127.0.0.1"
FAKE_KEYS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class S3Server:
    endpoint_url: str
    server: Any = field(repr=False, default=None)

    def env(self) -> dict[str, str]:
        """What a client (boto3, MLflow, DVC's s3fs) needs to reach this server."""
        return {
            **FAKE_KEYS,
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint_url,
            "AWS_ENDPOINT_URL": self.endpoint_url,
        }

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=FAKE_KEYS["AWS_DEFAULT_REGION"],
            aws_access_key_id=FAKE_KEYS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=FAKE_KEYS["AWS_SECRET_ACCESS_KEY"],
        )

    def make_bucket(self, name: str | None = None) -> str:
        name = name or f"tru-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


@pytest.fixture(scope="session")
def moto_server() -> Iterator[S3Server]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address=HOST, port=port, verbose=False)
    server.start()
    try:
        yield S3Server(f"http://{HOST}:{port}", server)
    finally:
        server.stop()


@pytest.fixture
def s3_env(moto_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    for key, val in moto_server.env().items():
        monkeypatch.setenv(key, val)
    return moto_server


@pytest.fixture
def s3_bucket(s3_env: S3Server) -> str:
    return s3_env.make_bucket()


@dataclass
class MlflowStore:
    uri: str
    db: Path
    artifacts: str  # artifact root of new experiments (file:// or s3://)


_MIGRATE = (
    "import sys; from mlflow import MlflowClient; u = sys.argv[1]; c = MlflowClient(u, u); "
    "c.search_experiments(); c.search_registered_models()"
)


@pytest.fixture(scope="session")
def mlflow_db_template_launch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Any]]:
    """Start migrating an empty MLflow sqlite file in a subprocess (~6 s idle) without waiting: request it
    early so that the migration overlaps other set-up. ``mlflow_db_template`` waits for it."""
    db = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    proc = subprocess.Popen(
        [sys.executable, "-c", _MIGRATE, f"sqlite:///{db}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        yield db, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


@pytest.fixture(scope="session")
def mlflow_db_template(mlflow_db_template_launch: tuple[Path, Any]) -> Path:
    """A migrated, empty MLflow sqlite file: copy it, never write to it."""
    db, proc = mlflow_db_template_launch
    out, _ = proc.communicate(timeout=300)
    if proc.returncode != 0 or not db.is_file():
        raise RuntimeError(
            f"migrating {db} failed ({proc.returncode}):\n{out.decode(errors='replace')[-3000:]}"
        )
    return db


def _store(db_template: Path, folder: Path, artifacts: str | None, mp: pytest.MonkeyPatch) -> MlflowStore:
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "mlflow.db"
    shutil.copyfile(db_template, db)
    artifacts = artifacts or (folder / "mlartifacts").as_uri()
    tmp = folder / "tmp"
    tmp.mkdir(exist_ok=True)
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    mp.setenv("TRU_MLFLOW_ARTIFACTS", artifacts)
    mp.setenv("TMPDIR", str(tmp))
    return MlflowStore(f"sqlite:///{db}", db, artifacts)


@pytest.fixture
def mlflow_store(mlflow_db_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MlflowStore:
    return _store(mlflow_db_template, tmp_path / "mlflow", None, monkeypatch)


@pytest.fixture
def mlflow_s3_store(
    mlflow_db_template: Path, tmp_path: Path, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> MlflowStore:
    return _store(mlflow_db_template, tmp_path / "mlflow-s3", f"s3://{s3_bucket}/mlflow", monkeypatch)


@dataclass
class MlflowServer:
    url: str
    db: Path
    bucket: str
    prefix: str
    log: Path
    proc: subprocess.Popen[bytes] = field(repr=False)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the server's own process group (uvicorn child)
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

    def wait(self, timeout: float = 120.0) -> MlflowServer:
        """Block until ``/health`` answers; raise with the server log if it exits or times out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"mlflow server not healthy after {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.is_file() else ""


def launch_mlflow_server(
    db: Path, s3: S3Server, bucket: str, folder: Path, prefix: str = "proxied"
) -> MlflowServer:
    """Start ``mlflow server`` (sqlite ``db``, created and migrated by the server itself when absent;
    artifacts proxied to ``s3://bucket/prefix``) without waiting; ``.wait()`` before use, ``.stop()``
    after."""
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tmp").mkdir(exist_ok=True)
    log = folder / "server.log"
    exe = Path(sys.executable).with_name("mlflow")
    cmd = [
        str(exe), "server", "--backend-store-uri", f"sqlite:///{db}",
        "--artifacts-destination", f"s3://{bucket}/{prefix}",
        "--host", HOST, "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    env = {**os.environ, **s3.env(), "TMPDIR": str(folder / "tmp"), "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return MlflowServer(f"http://{HOST}:{port}", db, bucket, prefix, log, proc)


@pytest.fixture(scope="session")
def mlflow_server_launch(
    moto_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MlflowServer]:
    """The session's server, launched but not waited for: request it early (e.g. from a module-scoped
    autouse fixture) so that its start-up (10-30 s) overlaps other set-up."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    server = launch_mlflow_server(folder / "mlflow.db", moto_server, moto_server.make_bucket(), folder)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mlflow_server(mlflow_server_launch: MlflowServer) -> MlflowServer:
    """A healthy ``mlflow server``: sqlite backend, --artifacts-destination s3://<bucket>/proxied."""
    return mlflow_server_launch.wait()
