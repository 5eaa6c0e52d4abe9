"""``scdl models`` through the CLI entry point, the catalog, the cache and import of plain state dicts."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from model_factory import make_tiny_package
from scdl.cli.main import main
from scdl.labels.table import table_from_names
from scdl.models.catalog import DEFAULT_MODEL_ID, load_catalog, resolve_model
from scdl.models.listing import list_models
from scdl.models.package import ModelPackage
from scdl.networks.vnet import VNet, build_network

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCDL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SCDL_MODELS_DIR", raising=False)
    monkeypatch.delenv("SCDL_RESOURCES", raising=False)


def scdl(capsys, *argv):
    """Run ``scdl ARGV...`` in-process; returns (exit status, stdout, stderr)."""
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


class Evil:
    """Unpickling this would run a shell command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _random_bn(net: VNet, seed: int) -> VNet:
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return net.eval()


# -- list / path / info / verify ---------------------------------------------------------------------
def test_list_shows_the_shipped_default_model_installed(capsys):
    rc, out, _ = scdl(capsys, "models", "list")
    assert rc == 0
    row = next(line for line in out.splitlines() if line.startswith(DEFAULT_MODEL_ID))
    assert "bundled" in row and " installed" in row and "not installed" not in row and "(default)" in row
    rc, out, err = scdl(capsys, "models", "verify", DEFAULT_MODEL_ID)
    assert rc == 0, err


def test_list_shows_catalog_and_that_the_bundled_default_is_not_installed(capsys, monkeypatch,
                                                                          resources_without_default_model):
    monkeypatch.setenv("SCDL_RESOURCES", str(resources_without_default_model))
    rc, out, _ = scdl(capsys, "models", "list")
    assert rc == 0
    row = next(line for line in out.splitlines() if line.startswith(DEFAULT_MODEL_ID))
    assert "bundled" in row and "not installed" in row and "(default)" in row
    assert "scdl-authors-amos-cps" in out and "downloadable" in out
    rc, out, _ = scdl(capsys, "models", "list", "--json")
    items = {i["id"]: i for i in json.loads(out)}
    assert items[DEFAULT_MODEL_ID]["installed"] is False and items["scdl-authors-amos-cps"]["n_classes"] == 16
    assert load_catalog()["default"] == DEFAULT_MODEL_ID


def test_path_prints_the_cache_folder(capsys, tmp_path, monkeypatch):
    rc, out, _ = scdl(capsys, "models", "path")
    assert rc == 0 and out.strip() == str(tmp_path / "home" / "models")
    monkeypatch.setenv("SCDL_MODELS_DIR", str(tmp_path / "elsewhere"))
    assert scdl(capsys, "models", "path")[1].strip() == str(tmp_path / "elsewhere")


def test_import_info_verify_export_of_a_package(capsys, tiny_model, tmp_path, monkeypatch):
    rc, out, _ = scdl(capsys, "models", "import", tiny_model)
    installed = tmp_path / "home" / "models" / "tiny-test-model"
    assert rc == 0 and out.strip().splitlines()[-1] == str(installed)
    assert resolve_model("tiny-test-model") == installed
    rc, out, _ = scdl(capsys, "models", "import", tiny_model)
    assert rc == 2  # already installed
    assert scdl(capsys, "models", "import", tiny_model, "--force")[0] == 0
    rc, out, _ = scdl(capsys, "models", "info", "tiny-test-model")
    assert rc == 0 and "spacing 6 x 6 x 6 mm" in out and "right adrenal gland" in out and "random weights" in out
    rc, out, _ = scdl(capsys, "models", "verify", "tiny-test-model")
    assert rc == 0 and out.startswith("OK tiny-test-model: 3 files match") and "2 network(s) load" in out
    single = tmp_path / "share" / "tiny.scdlmodel"
    assert scdl(capsys, "models", "export", "tiny-test-model", "-o", single)[0] == 0
    assert scdl(capsys, "models", "verify", single)[0] == 0
    # an offline site imports the single file into its own cache
    monkeypatch.setenv("SCDL_MODELS_DIR", str(tmp_path / "site-cache"))
    rc, out, _ = scdl(capsys, "models", "import", single)
    assert rc == 0 and Path(out.strip()) == tmp_path / "site-cache" / "tiny-test-model"
    ids = {i["id"]: i for i in list_models()}
    assert ids["tiny-test-model"]["kind"] == "user" and ids["tiny-test-model"]["status"] == "installed"


def test_verify_of_a_tampered_package_fails_with_one_error_line(capsys, tiny_model, tmp_path):
    pkg = Path(shutil.copytree(tiny_model, tmp_path / "bad"))
    data = bytearray((pkg / "weights.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (pkg / "weights.safetensors").write_bytes(bytes(data))
    rc, out, err = scdl(capsys, "models", "verify", pkg)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: ")
    assert str(pkg / "weights.safetensors") in lines[0] and "SHA-256" in lines[0] and "Fix:" in lines[0]
    rc, _, err = scdl(capsys, "models", "import", pkg)
    assert rc == 2 and not (tmp_path / "home" / "models" / "tiny-test-model").exists()


def test_resolve_model_messages(capsys, tmp_path, monkeypatch, resources_without_default_model):
    monkeypatch.setenv("SCDL_RESOURCES", str(resources_without_default_model))
    rc, _, err = scdl(capsys, "models", "verify", "scdl-authors-amos-cps")
    assert rc == 2 and "not downloaded yet" in err and "scdl models download scdl-authors-amos-cps" in err
    rc, _, err = scdl(capsys, "models", "verify", "no-such-model")
    assert rc == 2 and "unknown model 'no-such-model'" in err and "scdl-authors-synapse-cps" in err
    rc, _, err = scdl(capsys, "models", "verify", tmp_path / "missing.scdlmodel")
    assert rc == 2 and "does not exist" in err
    rc, _, err = scdl(capsys, "models", "verify", DEFAULT_MODEL_ID)
    assert rc == 2 and "not installed in this copy of SCDL" in err


def test_bundled_model_is_found_and_its_id_is_reserved(capsys, tmp_path, monkeypatch, repo_root, tiny_model):
    resources = tmp_path / "Resources"
    shutil.copytree(repo_root / "Resources" / "Labels", resources / "Labels")
    shutil.copy(repo_root / "Resources" / "Catalog.json", resources / "Catalog.json")
    make_tiny_package(resources / "Models" / DEFAULT_MODEL_ID, model_id=DEFAULT_MODEL_ID, ensemble=1)
    monkeypatch.setenv("SCDL_RESOURCES", str(resources))
    assert resolve_model(DEFAULT_MODEL_ID) == resources / "Models" / DEFAULT_MODEL_ID
    item = next(i for i in list_models() if i["id"] == DEFAULT_MODEL_ID)
    assert item["installed"] and item["status"] == "installed" and item["default"]
    clash = make_tiny_package(tmp_path / "clash", model_id=DEFAULT_MODEL_ID, ensemble=1)
    rc, _, err = scdl(capsys, "models", "import", clash)
    assert rc == 2 and "belongs to a model bundled with SCDL" in err


# -- import of plain state dicts -------------------------------------------------------------------------
def test_import_of_the_reference_state_dict_reproduces_the_reference_output(capsys, reference_file, tmp_path):
    ref = torch.load(reference_file, weights_only=True)["vnet"]
    pth = tmp_path / "reference_vnet.pth"
    torch.save(ref["state"], pth)
    labels = table_from_names(["organ a", "organ b", "organ c"]).save(tmp_path / "three.csv")
    rc, out, err = scdl(capsys, "models", "import", pth, "--id", "ref-vnet", "--labels", labels,
                        "--spacing", 1, 1, 1, "--patch", 32, 32, 32, "--n-filters", 4)
    assert rc == 0, err
    pkg = ModelPackage.load("ref-vnet")
    assert pkg.card["architecture"] == {"name": "vnet", "in_channels": 1, "n_classes": 4, "n_filters": 4, "norm": "batch"}
    assert pkg.card["provenance"]["source"] == "reference_vnet.pth"
    (net,) = pkg.build_networks()
    with torch.no_grad():
        out = net(ref["input"])
    torch.testing.assert_close(out, ref["output"], rtol=1e-5, atol=1e-5)


def test_import_of_a_generated_cps_pair_gives_identical_outputs(capsys, tmp_path):
    arch = {"name": "vnet", "in_channels": 1, "n_classes": 16, "n_filters": 2, "norm": "batch"}
    torch.manual_seed(11)
    nets = [_random_bn(build_network(arch), seed) for seed in (1, 2)]
    a, b = tmp_path / "best_A.pth", tmp_path / "best_B.pth"
    torch.save(nets[0].state_dict(), a)
    # DataParallel prefix inside a {"state_dict": ...} wrapper is unwrapped
    torch.save({"state_dict": {f"module.{k}": v for k, v in nets[1].state_dict().items()}, "epoch": 3}, b)
    rc, out, err = scdl(capsys, "models", "import", a, b, "--id", "amos-pair", "--labels", "amos",
                        "--fixed-size", 160, 160, 80, "--orientation", "LAS", "--licence", "unstated",
                        "--warning", "test warning", "--out", tmp_path / "amos-pair.scdlmodel")
    assert rc == 0, err
    pkg = ModelPackage.load(tmp_path / "amos-pair.scdlmodel")
    assert pkg.networks == 2 and pkg.card["preprocessing"]["size"] == [160, 160, 80]
    assert pkg.card["preprocessing"]["orientation"] == "LAS" and pkg.card["warnings"] == ["test warning"]
    x = torch.randn(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        for original, imported in zip(nets, pkg.build_networks()):
            assert torch.equal(original(x), imported(x))


def test_import_refuses_wrong_labels_missing_options_and_mismatched_width(capsys, tmp_path):
    arch = {"name": "vnet", "in_channels": 1, "n_classes": 16, "n_filters": 2, "norm": "batch"}
    pth = tmp_path / "net.pth"
    torch.save(build_network(arch).state_dict(), pth)
    rc, _, err = scdl(capsys, "models", "import", pth, "--id", "x", "--labels", "synapse", "--spacing", 1, 1, 1)
    assert rc == 2 and "predicts 16 classes" in err and "has 14" in err and str(pth) in err
    rc, _, err = scdl(capsys, "models", "import", pth, "--labels", "amos")
    assert rc == 2 and "--id" in err and "--spacing X Y Z or --fixed-size X Y Z" in err
    rc, _, err = scdl(capsys, "models", "import", pth, "--id", "x", "--labels", "amos", "--spacing", 1, 1, 1,
                      "--n-filters", 16)
    assert rc == 2 and "n_filters = 2, not 16" in err
    assert not (tmp_path / "home" / "models" / "x").exists()


def test_import_never_unpickles_code(capsys, tmp_path):
    marker = tmp_path / "pwned"
    pth = tmp_path / "evil.pth"
    torch.save({"block_one.conv.0.weight": torch.zeros(1), "payload": Evil(marker)}, pth)
    rc, _, err = scdl(capsys, "models", "import", pth, "--id", "evil", "--labels", "amos", "--spacing", 1, 1, 1)
    assert rc == 2 and "will not unpickle" in err and str(pth) in err
    assert not marker.exists()
    truncated = tmp_path / "truncated.pth"
    torch.save(build_network({"name": "vnet", "n_classes": 16, "n_filters": 2}).state_dict(), truncated)
    truncated.write_bytes(truncated.read_bytes()[:5000])
    rc, _, err = scdl(capsys, "models", "import", truncated, "--id", "t", "--labels", "amos", "--spacing", 1, 1, 1)
    assert rc == 2 and "not a readable PyTorch state dict" in err


def _walk(parser, path=()):
    """(command path, parser) of every scdl sub-command, nested ones included."""
    import argparse

    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, (*path, name))


def test_every_sub_command_has_a_description_and_an_example() -> None:
    """README: every sub-command's --help has a description and an example (issue 15)."""
    from scdl.cli.main import build_parser

    commands = list(_walk(build_parser()))
    names = {" ".join(p) for p, _ in commands}
    assert {"segment", "evaluate", "models list", "models info", "models verify", "models import",
            "models download", "models export", "models path", "train", "demo", "phantom", "synth", "bench",
            "bench ssl"} <= names
    for path, parser in commands[1:]:
        text = parser.format_help()
        assert parser.description, f"scdl {' '.join(path)} has no description"
        assert "example" in text and f"scdl {path[0]}" in (parser.epilog or ""), f"scdl {' '.join(path)}: no example"
