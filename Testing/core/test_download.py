"""Downloads on 127.0.0.1: git-blob verification, resume, offline message, and the catalog's checkpoint models."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from scdl.cli.main import main
from scdl.errors import Cancelled, ScdlError
from scdl.models.catalog import load_catalog
from scdl.models.download import download_file, git_blob_id, git_blob_id_bytes
from scdl.models.package import ModelPackage
from scdl.networks.vnet import build_network

pytestmark = pytest.mark.usefixtures("one_torch_thread")

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FileServer:
    """A tiny HTTP server on 127.0.0.1 serving ``files`` ({url path: bytes}) with Range support."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.requests: list[tuple[str, str | None]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                rng = self.headers.get("Range")
                outer.requests.append((self.path, rng))
                data = outer.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                if rng:
                    start = int(re.match(r"bytes=(\d+)-", rng).group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                self.wfile.write(data[start:])

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)

    def __enter__(self) -> "FileServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("SCDL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SCDL_MODELS_DIR", raising=False)
    monkeypatch.delenv("SCDL_RESOURCES", raising=False)
    monkeypatch.delenv("SCDL_DOWNLOAD_BASE_URL", raising=False)


def _payload(n: int = 3_000_000, seed: int = 0) -> bytes:
    return torch.randint(0, 256, (n,), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8).numpy().tobytes()


# -- git blob ids ------------------------------------------------------------------------------------
def test_git_blob_id_matches_git(tmp_path):
    # `git hash-object` of an empty file and of "hello\n" (well-known ids)
    assert git_blob_id_bytes(b"") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
    assert git_blob_id_bytes(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"
    big = _payload(2_500_000)
    (tmp_path / "f").write_bytes(big)
    assert git_blob_id(tmp_path / "f") == hashlib.sha1(b"blob 2500000\0" + big).hexdigest()


#: The authors' released checkpoints and their git blob ids, as the method specification (METHOD.md section 7)
#: lists them: the files of github.com/Zyh55555/SCDL at commit 31e6d6ed530194257eb50c43695564c6913a0929.
AUTHORS_CHECKPOINTS = {
    ("model/AMOS_CPS_10labeled/iter_16000_dice_0.514633_best_A.pth", "80c15c6a01137f11e25938280802bac93db2e8e9"),
    ("model/AMOS_CPS_10labeled/iter_16000_dice_0.514633_best_B.pth", "08dd528ae0a8952fc476bd59959d156fba6290c2"),
    ("model/Synapse_CPS_GA_4labeled_seed_1337/iter_12500_dice_0.654470_best_A.pth",
     "340d79b9de888fc921bd633448df11adfd7f4cbd"),
    ("model/Synapse_CPS_GA_4labeled_seed_1337/iter_12500_dice_0.654470_best_B.pth",
     "d0788a278fe127e68b67e90a7520fe34bdf52d0c"),
}


def test_catalog_lists_the_authors_files_exactly_as_method_md():
    expected = AUTHORS_CHECKPOINTS
    listed = set()
    for entry in load_catalog()["models"]:
        if entry["kind"] == "checkpoints":
            assert entry["source"]["commit"] == "31e6d6ed530194257eb50c43695564c6913a0929"
            assert "unstated" in entry["licence"]
            listed |= {(f["path"], f["git_blob"]) for f in entry["source"]["files"]}
    assert listed == expected
    synapse = next(e for e in load_catalog()["models"] if e["id"] == "scdl-authors-synapse-cps")
    assert "preprocessing unverified" in synapse["warnings"]
    assert any(w.startswith("preprocessing unverified") for w in synapse["card"]["warnings"])


# -- download_file -----------------------------------------------------------------------------------
def test_download_good_file_with_progress(tmp_path):
    data = _payload()
    seen = []
    with FileServer({"/f.bin": data}) as server:
        out = download_file(f"{server.url}/f.bin", tmp_path / "f.bin", git_blob=git_blob_id_bytes(data),
                            progress=lambda done, total: seen.append((done, total)))
    assert out.read_bytes() == data and not (tmp_path / "f.bin.part").exists()
    assert seen[0] == (0, len(data)) and seen[-1] == (len(data), len(data)) and len(seen) >= 3


def test_download_with_wrong_checksum_leaves_nothing(tmp_path):
    data = _payload()
    with FileServer({"/f.bin": data}) as server:
        with pytest.raises(ScdlError, match="not the expected one: its git blob id is") as err:
            download_file(f"{server.url}/f.bin", tmp_path / "f.bin", git_blob="1" * 40)
        assert f"{server.url}/f.bin" in str(err.value)
        with pytest.raises(ScdlError, match="SHA-256"):
            download_file(f"{server.url}/f.bin", tmp_path / "f.bin", sha256="2" * 64)
    assert list(tmp_path.iterdir()) == []


def test_cancelled_download_resumes_with_a_range_request(tmp_path):
    data = _payload()
    blob = git_blob_id_bytes(data)

    def cancel_after_first_chunk(done, total):
        if done >= 1 << 20:
            raise Cancelled("cancelled by the user")

    with FileServer({"/f.bin": data}) as server:
        with pytest.raises(Cancelled):
            download_file(f"{server.url}/f.bin", tmp_path / "f.bin", git_blob=blob, progress=cancel_after_first_chunk)
        part = tmp_path / "f.bin.part"
        assert part.stat().st_size == 1 << 20 and not (tmp_path / "f.bin").exists()
        out = download_file(f"{server.url}/f.bin", tmp_path / "f.bin", git_blob=blob)
        assert out.read_bytes() == data and not part.exists()
        assert server.requests[-1] == ("/f.bin", f"bytes={1 << 20}-")


def test_stale_partial_file_is_discarded_and_downloaded_again(tmp_path):
    data = _payload()
    (tmp_path / "f.bin.part").write_bytes(b"garbage" * 1000)
    with FileServer({"/f.bin": data}) as server:
        out = download_file(f"{server.url}/f.bin", tmp_path / "f.bin", git_blob=git_blob_id_bytes(data))
        assert out.read_bytes() == data
        assert [r[1] for r in server.requests] == ["bytes=7000-", None]


def test_offline_and_http_errors_are_clear(tmp_path):
    with FileServer({}) as server:
        port_url = server.url
        with pytest.raises(ScdlError, match="HTTP 404"):
            download_file(f"{server.url}/missing.bin", tmp_path / "m.bin", git_blob="0" * 40)
    with pytest.raises(ScdlError, match="could not download the file .*offline") as err:
        download_file(f"{port_url}/f.bin", tmp_path / "f.bin", git_blob="0" * 40, timeout=5)
    assert "scdl models import FILES... --as MODEL_ID" in str(err.value)
    with pytest.raises(ScdlError, match="only http"):
        download_file("file:///etc/passwd", tmp_path / "p", git_blob="0" * 40)


# -- catalog checkpoint models end to end ---------------------------------------------------------------
def _checkpoint_catalog(tmp_path: Path, repo_root: Path, files: dict[str, bytes]) -> Path:
    """A Resources copy whose catalog has one 'checkpoints' model made of ``files`` (AMOS recipe card)."""
    resources = tmp_path / "Resources"
    shutil.copytree(repo_root / "Resources" / "Labels", resources / "Labels")
    catalog = load_catalog(repo_root / "Resources" / "Catalog.json")
    entry = json.loads(json.dumps(next(e for e in catalog["models"] if e["id"] == "scdl-authors-amos-cps")))
    entry["id"] = "test-authors-amos"
    entry["card"]["architecture"]["n_filters"] = 2  # small networks; everything else is the authors' AMOS card
    entry["source"].update(base_url="http://127.0.0.1:9/unused", commit=COMMIT,
                           files=[{"path": p, "git_blob": git_blob_id_bytes(d)} for p, d in files.items()])
    catalog["models"].append(entry)
    (resources / "Catalog.json").write_text(json.dumps(catalog))
    return resources


def _amos_pair(tmp_path: Path):
    arch = {"name": "vnet", "in_channels": 1, "n_classes": 16, "n_filters": 2, "norm": "batch"}
    torch.manual_seed(5)
    nets = [build_network(arch).eval() for _ in range(2)]
    blobs = {}
    for name, net in zip(("A", "B"), nets):
        torch.save(net.state_dict(), tmp_path / f"{name}.pth")
        blobs[f"model/AMOS_test/best_{name}.pth"] = (tmp_path / f"{name}.pth").read_bytes()
    return nets, blobs


def test_download_command_installs_the_checkpoints_as_a_verified_package(capsys, tmp_path, repo_root, monkeypatch):
    nets, files = _amos_pair(tmp_path)
    monkeypatch.setenv("SCDL_RESOURCES", str(_checkpoint_catalog(tmp_path, repo_root, files)))
    with FileServer({f"/{COMMIT}/{p}": d for p, d in files.items()}) as server:
        monkeypatch.setenv("SCDL_DOWNLOAD_BASE_URL", server.url)
        capsys.readouterr()
        rc = main(["models", "download", "test-authors-amos", "--progress", "json"])
        out, err = capsys.readouterr()
    assert rc == 0, err
    lines = [json.loads(line) for line in out.strip().splitlines()]
    assert any(line.get("phase") == "download" for line in lines)
    target = tmp_path / "home" / "models" / "test-authors-amos"
    assert lines[-1] == {"phase": "done", "model": "test-authors-amos", "path": str(target)}
    pkg = ModelPackage.load("test-authors-amos")
    pre = pkg.card["preprocessing"]
    assert (pre["mode"], pre["size"], pre["orientation"], pre["patch_size"]) == ("fixed_size", [160, 160, 80], "LAS", [96, 96, 96])
    assert (pre["window"], pre["scale"]) == ([-125.0, 275.0], [0.0, 1.0])
    assert pkg.labels.num_classes == 16 and pkg.labels.names[0] == "spleen" and "unstated" in pkg.card["licence"]
    x = torch.randn(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for original, imported in zip(nets, pkg.build_networks()):
            assert torch.equal(original(x), imported(x))
    assert not any((tmp_path / "home" / "models" / ".downloads").glob("*.pth"))  # downloads removed after import
    # offline site: the same files fetched elsewhere, given in any order, are matched by git blob id
    monkeypatch.setenv("SCDL_MODELS_DIR", str(tmp_path / "offline"))
    capsys.readouterr()
    assert main(["models", "import", str(tmp_path / "B.pth"), str(tmp_path / "A.pth"), "--as", "test-authors-amos"]) == 0
    offline = ModelPackage.load("test-authors-amos")
    for a, b in zip(offline.state_dicts(), pkg.state_dicts()):
        assert all(torch.equal(a[k], b[k]) for k in a)
    torch.save({"x": torch.zeros(1)}, tmp_path / "other.pth")
    capsys.readouterr()
    assert main(["models", "import", str(tmp_path / "A.pth"), str(tmp_path / "other.pth"), "--as", "test-authors-amos",
                 "--force"]) == 2
    assert "none of the given files is model/AMOS_test/best_B.pth" in capsys.readouterr().err


def test_download_of_the_authors_model_refuses_a_file_with_another_blob_id(capsys, tmp_path, monkeypatch):
    entry = next(e for e in load_catalog()["models"] if e["id"] == "scdl-authors-amos-cps")
    commit = entry["source"]["commit"]
    fake = {f"/{commit}/{f['path']}": b"not the authors' weights" for f in entry["source"]["files"]}
    with FileServer(fake) as server:
        monkeypatch.setenv("SCDL_DOWNLOAD_BASE_URL", server.url)
        capsys.readouterr()
        rc = main(["models", "download", "scdl-authors-amos-cps", "--progress", "none"])
        err = capsys.readouterr().err
    assert rc == 2 and "not the expected one" in err and "80c15c6a01137f11e25938280802bac93db2e8e9" in err
    assert [line.startswith("error: ") for line in err.strip().splitlines()] == [False, True]  # progress note, error
    home = tmp_path / "home" / "models"
    assert not (home / "scdl-authors-amos-cps").exists() and not list(home.glob(".downloads/*"))


def test_download_command_offline(capsys, tmp_path, monkeypatch):
    with FileServer({}) as server:
        url = server.url
    monkeypatch.setenv("SCDL_DOWNLOAD_BASE_URL", url)  # nothing listens there any more
    capsys.readouterr()
    rc = main(["models", "download", "scdl-authors-synapse-cps", "--progress", "none"])
    err = capsys.readouterr().err
    assert rc == 2 and "offline" in err and f"{url}/31e6d6ed530194257eb50c43695564c6913a0929/model/Synapse" in err
