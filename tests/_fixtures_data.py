"""Fixtures: the committed test files in tests/data/ and small generated datasets.

* ``fixture_index``           the parsed ``tests/data/fixtures.json``
* ``root_file``               every committed file, ids like ``ROOT-RNTuple-zstd``
* ``rntuple_file`` / ``ttree_file``   the RNTuple / TTree files only
* ``records_file``            the files with record fields (``PV.x``, ``Track.pt``)
* ``small_dataset``           3 small RNTuple files written by ``rntensor.datagen``
* ``small_ttree_dataset``     the same events as TTree files
* ``pyroot``                  the ``ROOT`` module, or a skip when ROOT is not installed

A fixture file is a :class:`FixtureFile`: a ``str`` (the absolute path, so it goes straight
to ``open_source`` or ``uproot.open``) that also carries the index entry as attributes
(``.tree``, ``.format``, ``.writer``, ``.compression``, ``.n_entries``, ``.has_records``...).
None of these fixtures needs ROOT; tests that do are marked ``@pytest.mark.root`` and take
``pyroot``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "DATA_DIR",
    "FIXTURE_FILES",
    "FixtureFile",
    "SmallDataset",
    "fixture_index",
    "pyroot",
    "records_file",
    "rntuple_file",
    "root_file",
    "small_dataset",
    "small_ttree_dataset",
    "ttree_file",
]

DATA_DIR = Path(__file__).resolve().parent / "data"

# the NanoAOD-like fields of the fixture files and of rntensor.datagen: name -> dtype
# (flat) or (dtype, collection) (jagged); records (``records=True``) add PV and Track
FLAT = {
    "run": "int64",
    "luminosityBlock": "int64",
    "event": "int64",
    "MET_pt": "float32",
    "MET_phi": "float32",
    "weight": "float32",
    "label": "int32",
    "passTrigger": "bool",
    "nJet": "int32",
    "nMuon": "int32",
}
JAGGED = {
    "Jet_pt": ("float32", "Jet"),
    "Jet_eta": ("float32", "Jet"),
    "Jet_phi": ("float32", "Jet"),
    "Jet_mass": ("float32", "Jet"),
    "Jet_btag": ("float32", "Jet"),
    "Muon_pt": ("float32", "Muon"),
    "Muon_eta": ("float32", "Muon"),
    "Muon_charge": ("int32", "Muon"),
}
RECORD_FLAT = {"PV.x": "float32", "PV.y": "float32", "PV.z": "float32", "PV.npvs": "int32"}
RECORD_JAGGED = {
    "Track.pt": ("float32", "Track"),
    "Track.eta": ("float32", "Track"),
    "Track.phi": ("float32", "Track"),
}


class FixtureFile(str):
    """Absolute path of a committed fixture file, with its ``fixtures.json`` entry."""

    info: dict[str, Any]

    def __new__(cls, info: dict[str, Any]) -> FixtureFile:
        self = super().__new__(cls, str(DATA_DIR / info["path"]))
        self.info = dict(info)
        return self

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["info"][name]
        except KeyError:
            raise AttributeError(name) from None

    # explicit properties: ``str.format`` would otherwise shadow the entry ``format``
    format = property(lambda self: self.info["format"], doc="``TTree`` or ``RNTuple``")
    tree = property(lambda self: self.info["tree"])
    writer = property(lambda self: self.info["writer"], doc="``ROOT`` or ``uproot``")
    compression = property(lambda self: self.info["compression"])
    n_entries = property(lambda self: self.info["n_entries"])
    n_clusters = property(lambda self: self.info["n_clusters"])
    has_records = property(lambda self: self.info["has_records"])
    extra_fields = property(lambda self: self.info.get("extra_fields", []))

    @property
    def path(self) -> str:
        return str(self)

    @property
    def spec(self) -> str:
        """``path:tree``, as accepted by ``open_source``."""
        return f"{self}:{self.info['tree']}"

    @property
    def id(self) -> str:
        return f"{self.info['writer']}-{self.info['format']}-{self.info['compression']}"

    def __reduce__(self):  # pickles as a FixtureFile, not a bare str
        return (FixtureFile, (self.info,))


def _load_index() -> dict[str, Any]:
    return json.loads((DATA_DIR / "fixtures.json").read_text())


FIXTURE_FILES: list[FixtureFile] = [FixtureFile(e) for e in _load_index()["files"]]


def _params(files: list[FixtureFile]) -> list[Any]:
    return [pytest.param(f, id=f.id) for f in files]


@pytest.fixture(scope="session")
def fixture_index() -> dict[str, Any]:
    """The parsed ``tests/data/fixtures.json``: ``{"files": [{path, tree, format, ...}]}``."""
    return _load_index()


@pytest.fixture(params=_params(FIXTURE_FILES))
def root_file(request: pytest.FixtureRequest) -> FixtureFile:
    """Every committed fixture file: ROOT- and uproot-written, TTree and RNTuple."""
    return request.param


@pytest.fixture(params=_params([f for f in FIXTURE_FILES if f.format == "RNTuple"]))
def rntuple_file(request: pytest.FixtureRequest) -> FixtureFile:
    return request.param


@pytest.fixture(params=_params([f for f in FIXTURE_FILES if f.format == "TTree"]))
def ttree_file(request: pytest.FixtureRequest) -> FixtureFile:
    return request.param


@pytest.fixture(params=_params([f for f in FIXTURE_FILES if f.has_records]))
def records_file(request: pytest.FixtureRequest) -> FixtureFile:
    """Files with the record ``PV`` and the vector of records ``Track`` (RNTuple)."""
    return request.param


@dataclass(frozen=True)
class SmallDataset:
    """Files written by ``rntensor.datagen.generate_dataset``.

    Args:
        folder: the folder holding the files.
        paths: the files, in event order.
        n_events: events in all files together.
        fmt: ``"rntuple"`` or ``"ttree"``.
        tree: the tree name in every file.
        seed: the generator seed.
        cluster_entries: events per cluster.
        entries: events per file.
    """

    folder: str
    paths: list[str]
    n_events: int
    fmt: str
    tree: str = "Events"
    seed: int = 7
    cluster_entries: int = 250
    entries: list[int] = field(default_factory=list)


def _small(tmp_path_factory: pytest.TempPathFactory, fmt: str) -> SmallDataset:
    from rntensor.datagen import generate_dataset

    folder = tmp_path_factory.mktemp(f"small_{fmt}")
    n_events, seed, cluster = 3000, 7, 250
    paths = generate_dataset(
        folder,
        n_events=n_events,
        n_files=3,
        fmt=fmt,
        compression="zstd",
        seed=seed,
        cluster_entries=cluster,
    )
    import uproot

    entries = []
    for p in paths:
        with uproot.open(p) as f:
            entries.append(int(f["Events"].num_entries))
    return SmallDataset(str(folder), paths, n_events, fmt, "Events", seed, cluster, entries)


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> SmallDataset:
    """3 RNTuple files (zstd, 3000 events in all, different sizes, 250-event clusters)."""
    return _small(tmp_path_factory, "rntuple")


@pytest.fixture(scope="session")
def small_ttree_dataset(tmp_path_factory: pytest.TempPathFactory) -> SmallDataset:
    """The events of ``small_dataset`` as 3 TTree files."""
    return _small(tmp_path_factory, "ttree")


@pytest.fixture(scope="session")
def pyroot() -> Any:
    """The ROOT module; skips the test when ROOT is not installed (``pip install root``)."""
    root = pytest.importorskip("ROOT")
    root.gROOT.SetBatch(True)
    return root
