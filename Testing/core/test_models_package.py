"""Model packages: round trip, single-file archives, and refusal of corrupt / tampered / incomplete packages."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest
import torch

from model_factory import make_tiny_package
from scdl.errors import ScdlError
from scdl.labels.table import LabelTable
from scdl.models.card import SCHEMA_VERSION, new_card, validate_card
from scdl.models.manifest import sha256_file
from scdl.models.package import ModelPackage, save_package
from scdl.networks.vnet import build_network

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCDL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SCDL_MODELS_DIR", raising=False)


@pytest.fixture()
def pkg_dir(tiny_model, tmp_path) -> Path:
    """A private copy of the session's tiny package (tests modify it)."""
    return Path(shutil.copytree(tiny_model, tmp_path / "pkg"))


def _outputs(nets, x):
    with torch.no_grad():
        return [net(x) for net in nets]


def test_round_trip_keeps_card_labels_and_weights(tmp_path):
    arch = {"name": "vnet", "in_channels": 1, "n_classes": 16, "n_filters": 3, "norm": "batch"}
    torch.manual_seed(3)
    nets = [build_network(arch).eval() for _ in range(2)]
    for net in nets:  # non-trivial running statistics, so eval mode matters
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    card = new_card(id="amos-test", title="AMOS test", architecture=arch, ensemble=2,
                    preprocessing={"mode": "fixed_size", "size": [160, 160, 80], "orientation": "LAS",
                                   "patch_size": [96, 96, 96]})
    path = save_package(tmp_path / "amos-test", card, [n.state_dict() for n in nets], "amos")
    pkg = ModelPackage.load(path)
    assert (pkg.id, pkg.networks, pkg.path) == ("amos-test", 2, path)
    assert pkg.card["preprocessing"]["size"] == [160, 160, 80] and pkg.card["preprocessing"]["window"] == [-125.0, 275.0]
    assert pkg.labels.names == LabelTable.load("amos").names and pkg.labels.num_classes == 16
    assert sorted(p.name for p in path.iterdir()) == ["card.json", "labels.csv", "manifest.json", "weights.safetensors"]
    with __import__("safetensors").safe_open(str(path / "weights.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert "net0.block_one.conv.0.weight" in keys and "net1.out_conv.bias" in keys
    for state, net in zip(pkg.state_dicts(), nets):
        for key, value in net.state_dict().items():
            assert torch.equal(state[key], value), key
    x = torch.randn(1, 1, 32, 32, 32, generator=torch.Generator().manual_seed(0))
    loaded = pkg.build_networks("cpu")
    assert all(not n.training for n in loaded)
    for a, b in zip(_outputs(loaded, x), _outputs(nets, x)):
        assert torch.equal(a, b)


def test_single_file_package_round_trip(tmp_path, tiny_model):
    single = make_tiny_package(tmp_path / "tiny.scdlmodel", table="amos", n_filters=2, ensemble=1, seed=5)
    assert single.is_file() and zipfile.is_zipfile(single)
    folder = make_tiny_package(tmp_path / "tiny", table="amos", n_filters=2, ensemble=1, seed=5)
    a, b = ModelPackage.load(single), ModelPackage.load(folder)
    assert a.networks == 1 and a.labels.num_classes == 16
    for key, value in a.state_dicts()[0].items():
        assert torch.equal(value, b.state_dicts()[0][key])
    assert sha256_file(folder / "weights.safetensors") == a.manifest["weights.safetensors"]["sha256"]


def test_lazy_load_without_verification(pkg_dir):
    pkg = ModelPackage.load(pkg_dir, verify=False)
    assert pkg.networks == 2 and len(pkg.build_networks()) == 2


def test_tampered_weights_are_refused(pkg_dir):
    weights = pkg_dir / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0x01  # one bit of one weight
    weights.write_bytes(bytes(data))
    with pytest.raises(ScdlError, match="does not match its SHA-256") as err:
        ModelPackage.load(pkg_dir)
    assert err.value.path == str(weights)


def test_tampered_card_is_refused(pkg_dir):
    card = json.loads((pkg_dir / "card.json").read_text(encoding="utf-8"))
    card["licence"] = "public domain"
    (pkg_dir / "card.json").write_text(json.dumps(card))
    with pytest.raises(ScdlError, match="'card.json' does not match its SHA-256") as err:
        ModelPackage.load(pkg_dir)
    assert err.value.path.endswith("card.json")


def test_missing_card_is_refused(pkg_dir):
    (pkg_dir / "card.json").unlink()
    with pytest.raises(ScdlError, match="incomplete: file 'card.json' is missing") as err:
        ModelPackage.load(pkg_dir)
    assert err.value.path.endswith("card.json")


def test_missing_weights_are_refused(pkg_dir):
    (pkg_dir / "weights.safetensors").unlink()
    with pytest.raises(ScdlError, match="weights.safetensors' is missing"):
        ModelPackage.load(pkg_dir, verify=False)


@pytest.mark.parametrize("edit", ["bad_hash", "unlisted_weights", "not_json", "no_manifest", "path_escape"])
def test_wrong_manifest_is_refused(pkg_dir, edit):
    manifest_path = pkg_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    if edit == "bad_hash":
        manifest["files"]["labels.csv"]["sha256"] = "0" * 64
        expected = "labels.csv' does not match its SHA-256"
    elif edit == "unlisted_weights":
        del manifest["files"]["weights.safetensors"]
        expected = "manifest does not list 'weights.safetensors'"
    elif edit == "path_escape":
        manifest["files"]["../card.json"] = manifest["files"]["card.json"]
        expected = "manifest entry '../card.json' is invalid"
    if edit == "not_json":
        manifest_path.write_text("{ not json")
        expected = "manifest is not valid JSON"
    elif edit == "no_manifest":
        manifest_path.unlink()
        expected = "not a model package: there is no manifest.json"
    else:
        manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ScdlError, match=expected):
        ModelPackage.load(pkg_dir)


def test_archive_with_unsafe_names_is_refused(tmp_path, pkg_dir):
    bad = tmp_path / "evil.scdlmodel"
    with zipfile.ZipFile(bad, "w") as zf:
        for p in pkg_dir.iterdir():
            zf.write(p, p.name)
        zf.writestr("../outside.txt", "x")
    with pytest.raises(ScdlError, match="unexpected paths"):
        ModelPackage.load(bad)
    assert not (tmp_path / "outside.txt").exists()


def test_truncated_archive_is_refused(tmp_path, tiny_model):
    single = make_tiny_package(tmp_path / "t.scdlmodel", n_filters=2, ensemble=1)
    data = single.read_bytes()
    single.write_bytes(data[: len(data) // 2])
    with pytest.raises(ScdlError) as err:
        ModelPackage.load(single)
    assert str(single) in str(err.value)


def _rewrite_card(pkg_dir: Path, card: dict) -> None:
    """Change the card AND fix its checksum (a well-formed package with a bad card)."""
    data = json.dumps(card).encode()
    (pkg_dir / "card.json").write_bytes(data)
    manifest = json.loads((pkg_dir / "manifest.json").read_text(encoding="utf-8"))
    manifest["files"]["card.json"] = {"sha256": __import__("hashlib").sha256(data).hexdigest(), "size": len(data)}
    (pkg_dir / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("change, message", [
    (lambda c: c.pop("architecture"), "missing field 'architecture'"),
    (lambda c: c["architecture"].pop("n_filters"), "missing field 'architecture.n_filters'"),
    (lambda c: c["preprocessing"].update(mode="voxels"), "preprocessing: mode must be one of"),
    (lambda c: c["preprocessing"].update(orientation="XYZ"), "orientation 'XYZ' is not a valid code"),
    (lambda c: c["inference"].update(overlap=1.5), "'inference.overlap' must be in"),
    (lambda c: c.update(ensemble="two"), "'ensemble' must be of type int"),
    (lambda c: c.update(id="Bad Id"), "field 'id'"),
    (lambda c: c.update(weights="../w.safetensors"), "plain file name"),
    (lambda c: c["provenance"].pop("created"), "missing field 'provenance.created'"),
    (lambda c: c["architecture"].update(n_classes=5), "label table has 14 classes"),
    (lambda c: c.update(ensemble=3), "card says ensemble = 3"),
])
def test_invalid_card_is_refused_with_the_field_named(pkg_dir, change, message):
    card = json.loads((pkg_dir / "card.json").read_text(encoding="utf-8"))
    change(card)
    _rewrite_card(pkg_dir, card)
    with pytest.raises(ScdlError, match=message):
        ModelPackage.load(pkg_dir)


def test_newer_schema_asks_for_an_update(pkg_dir):
    card = json.loads((pkg_dir / "card.json").read_text(encoding="utf-8"))
    card["schema_version"] = SCHEMA_VERSION + 1
    _rewrite_card(pkg_dir, card)
    with pytest.raises(ScdlError, match="update SCDL"):
        ModelPackage.load(pkg_dir)


def test_save_refuses_mismatched_labels_and_weights(tmp_path):
    arch = {"name": "vnet", "in_channels": 1, "n_classes": 14, "n_filters": 2, "norm": "batch"}
    card = new_card(id="x", title="x", architecture=arch, preprocessing={"mode": "spacing", "spacing_mm": [2, 2, 2]})
    state = build_network(arch).state_dict()
    with pytest.raises(ScdlError, match="16 classes"):
        save_package(tmp_path / "x", card, [state], "amos")
    narrow = build_network({**arch, "n_filters": 3}).state_dict()
    with pytest.raises(ScdlError, match="has shape"):
        save_package(tmp_path / "x", card, [narrow], "synapse")
    assert not (tmp_path / "x").exists()  # nothing partial left behind
    assert validate_card(card)["ensemble"] == 2


def test_weights_are_never_unpickled(pkg_dir, monkeypatch):
    import pickle

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle used while loading a package")

    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    pkg = ModelPackage.load(pkg_dir)
    assert len(pkg.build_networks()) == 2


def test_card_with_nan_metric_is_written_as_strict_json(tmp_path) -> None:
    """A class absent from validation has Dice NaN: the card stays strict JSON (null), and loads again."""
    import json

    from scdl.models.package import ModelPackage, save_package

    source = ModelPackage.load(make_tiny_package(tmp_path / "src", ensemble=1), verify=True)
    card = dict(source.card)
    card["provenance"] = dict(card.get("provenance") or {}, validation={"dice": {"liver": 0.5, "spleen": float("nan")}})
    out = save_package(tmp_path / "nan", card, source.state_dicts(), source.labels)
    text = (out / "card.json").read_text(encoding="utf-8")
    assert "NaN" not in text
    parsed = json.loads(text, parse_constant=lambda name: (_ for _ in ()).throw(ValueError(name)))
    assert parsed["provenance"]["validation"]["dice"] == {"liver": 0.5, "spleen": None}
    assert ModelPackage.load(out, verify=True).card["provenance"]["validation"]["dice"]["spleen"] is None
