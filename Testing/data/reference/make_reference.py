"""Regenerate (or check) ``scdl_reference.pt``: the SCDL authors' numbers that the method tests compare against.

The file holds inputs, weights and outputs of the authors' released implementation: the VNet and the SCDL
module of github.com/Zyh55555/SCDL, and the GA losses of github.com/cicailalala/GALoss (the code base the
SCDL authors build on; their own repository does not ship the losses). This script is our code; the authors'
code is NOT part of this repository (no licence is stated for it): point the script at checkouts of both
repositories at the commits recorded below, it imports their modules from there and runs them on CPU.

    python Testing/data/reference/make_reference.py --authors /tmp/authors/SCDL --galoss /tmp/authors/GALoss
    python Testing/data/reference/make_reference.py --authors ... --galoss ... --check   # compare with the file

What it builds (see README.md beside it; keys, shapes and settings are the ones the tests read):

- ``vnet``: the authors' ``VNet(n_channels=1, n_classes=4, n_filters=4, normalization='batchnorm')`` with
  seeded weights and random BN running statistics, in eval mode; ``input`` (1, 1, 32, 32, 32) -> ``output``.
- ``ga``: ``GADice`` on softmax(logits) and ``GACE(k=10 | 100, gama=0.5)`` on the logits, against a target
  with values 0..2 of 4 classes (class 3 absent).
- ``scdl``: the authors' ``SCDL(x_dim=16, z_dim=256, sample_num=50, num_classes=4)`` in eval mode (dropout
  off), the proxy noise ε injected; a labeled call (y_dist plus class tokens for the anchor loss) and an
  unlabeled call.
- ``meta``: where the numbers come from (repositories, commits, git blob ids of the files used, seed, torch).

Everything is drawn from one seeded ``torch.Generator`` in a fixed order (weights are drawn here, not by the
modules' own initialisers), so the inputs are bit-identical across runs; outputs are float32 CPU results
with one torch thread.

Shims (done here, by monkeypatching; the authors' files are never edited):

1. ``networks/vnet.py`` imports ``timm.models.layers.trunc_normal_`` and ``einops.rearrange/repeat`` and
   ``networks/SCDL.py`` imports ``matplotlib.pyplot`` and ``scipy.stats``; none of them is used by the code
   paths run here. Where a package is not installed, an empty stand-in module is put in ``sys.modules``
   while the file is imported, and removed afterwards.
2. ``SCDL.gaussian_noise`` draws ε from the global RNG inside ``forward``; the module instance gets a
   ``gaussian_noise`` that returns the recorded ε (its shape is checked), so the numbers are reproducible
   and a test can inject the same ε. (The module also draws an embedding-sampling noise with
   ``torch.randn``; no output recorded here depends on it.)
3. ``GACE`` passes the legacy ``size_average``/``reduce`` arguments to ``CrossEntropyLoss``; torch 2.x still
   accepts them (reduction 'none') with a deprecation warning, which is silenced. Nothing else is needed:
   no CUDA call lies on the paths run here.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import importlib.util
import math
import os
import subprocess
import sys
import types
import warnings
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "scdl_reference.pt"
SEED = 20260306

AUTHORS_REPO = "github.com/Zyh55555/SCDL"
AUTHORS_COMMIT = "6b2541c7c2910811d2fcca4abfc04fff9905a636"
GALOSS_REPO = "github.com/cicailalala/GALoss"
GALOSS_COMMIT = "65642f50209a6de134fac7b159fb7c2e84861573"

#: git blob ids (``git hash-object FILE``) of the authors' files the numbers were computed with.
EXPECTED_BLOBS = {
    ("authors", "networks/vnet.py"): "1c4dfba2814f2d11e8b9ba10542c3ad3f4d48a79",
    ("authors", "networks/SCDL.py"): "5b03e1f145c82a7b4800fefafdf4f6f120ea9ba6",
    ("galoss", "GALoss.py"): "445023c88afbb950114f4a58a989e5c83b5ca8de",
}

# Fixed settings of the three parts (README.md).
VNET = dict(n_channels=1, n_classes=4, n_filters=4, normalization="batchnorm")
VNET_INPUT = (1, 1, 32, 32, 32)
GA_LOGITS = (2, 4, 8, 8, 8)
GA_PRESENT = 3                    # target values 0..2: class 3 of 4 is absent
SCDL_CFG = dict(x_dim=16, z_dim=256, sample_num=50, num_classes=4, tau=0.2, dist_weight=0.1)
SCDL_BATCH, SCDL_TOKENS = 2, 27   # 2 patches of a 3³ token grid
N_SOFT = 5                        # tokens 0..4 of patch 0 get soft class proportions
Y_CLS = [0, 1, 1, 3, 0]           # class ids of the 5 class tokens given to the anchor loss


# -- the authors' modules ---------------------------------------------------------------------------------
def git_blob_id(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def git_head(directory: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(directory), "rev-parse", "HEAD"], capture_output=True, text=True,
                             check=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


@contextlib.contextmanager
def stand_ins(*names: str):
    """Empty modules for the given top-level imports that are not installed (shim 1), removed afterwards."""
    added = []
    for name in names:
        try:
            importlib.import_module(name)
            continue
        except ImportError:
            pass
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            sub = ".".join(parts[:i])
            if sub not in sys.modules:
                sys.modules[sub] = types.ModuleType(sub)
                added.append(sub)
    # attributes the files import by name
    for mod, attrs in {"timm.models.layers": ["trunc_normal_"], "einops": ["rearrange", "repeat"],
                       "scipy.stats": ["t"]}.items():
        if mod in added:
            for attr in attrs:
                setattr(sys.modules[mod], attr, None)
    try:
        yield added
    finally:
        for sub in reversed(added):
            sys.modules.pop(sub, None)


def load_file(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_authors(authors: Path, galoss: Path, allow_other: bool) -> tuple[dict, dict]:
    roots = {"authors": authors, "galoss": galoss}
    blobs, problems = {}, []
    for (root, rel), expected in EXPECTED_BLOBS.items():
        path = roots[root] / rel
        if not path.is_file():
            raise SystemExit(f"missing {path}: --{root} must be a checkout of "
                             f"{AUTHORS_REPO if root == 'authors' else GALOSS_REPO}")
        blobs[f"{root}:{rel}"] = blob = git_blob_id(path)
        if blob != expected:
            problems.append(f"{path}: git blob {blob}, expected {expected}")
    if problems:
        message = "the authors' files differ from the ones the reference was made with:\n  " + "\n  ".join(problems)
        if not allow_other:
            raise SystemExit(message + "\n(use --allow-other-version to go on anyway, then --check the result)")
        print("WARNING: " + message, file=sys.stderr)
    os.environ.setdefault("MPLBACKEND", "Agg")
    with stand_ins("timm.models.layers", "einops"):
        vnet = load_file("_authors_vnet", authors / "networks" / "vnet.py")
    with stand_ins("matplotlib.pyplot", "scipy.stats"):
        scdl = load_file("_authors_scdl", authors / "networks" / "SCDL.py")
    ga = load_file("_authors_galoss", galoss / "GALoss.py")
    return {"VNet": vnet.VNet, "SCDL": scdl.SCDL, "GADice": ga.GADice, "GACE": ga.GACE}, blobs


# -- seeded values ----------------------------------------------------------------------------------------
def uniform_(t: torch.Tensor, low: float, high: float, g: torch.Generator) -> None:
    with torch.no_grad():
        t.copy_(torch.rand(t.shape, generator=g, dtype=torch.float64).mul(high - low).add(low).to(t.dtype))


def default_style_init(module: torch.nn.Module, g: torch.Generator) -> None:
    """Conv/Linear weights and biases ~ U(±1/√fan_in) (torch's default bounds), drawn from g in module order;
    BatchNorm: weight 1, bias 0, running_mean ~ U(-0.1, 0.1), running_var ~ U(0.5, 1.5)."""
    for _, m in module.named_modules():
        if isinstance(m, (torch.nn.Conv3d, torch.nn.ConvTranspose3d, torch.nn.Linear)):
            fan_in, _ = torch.nn.init._calculate_fan_in_and_fan_out(m.weight)
            bound = 1.0 / math.sqrt(fan_in)
            uniform_(m.weight, -bound, bound, g)
            if m.bias is not None:
                uniform_(m.bias, -bound, bound, g)
        elif isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.weight.fill_(1.0)
                m.bias.zero_()
                m.num_batches_tracked.zero_()
            uniform_(m.running_mean, -0.1, 0.1, g)
            uniform_(m.running_var, 0.5, 1.5, g)


def plain_state(module: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# -- the three parts --------------------------------------------------------------------------------------
def make_vnet(A: dict, g: torch.Generator) -> dict:
    net = A["VNet"](has_dropout=False, **VNET)
    default_style_init(net, g)
    net.eval()
    x = torch.randn(VNET_INPUT, generator=g)
    with torch.no_grad():
        out = net(x.clone())
    assert out.shape == (1, VNET["n_classes"], *VNET_INPUT[2:])
    return {"config": {"n_filters": VNET["n_filters"], "classes": VNET["n_classes"], "norm": VNET["normalization"]},
            "state": plain_state(net), "input": x, "output": out.detach().clone()}


def make_ga(A: dict, g: torch.Generator) -> dict:
    logits = torch.randn(GA_LOGITS, generator=g)
    target = torch.randint(0, GA_PRESENT, (GA_LOGITS[0], *GA_LOGITS[2:]), generator=g)
    assert set(target.unique().tolist()) == set(range(GA_PRESENT))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)   # shim 3: legacy CrossEntropyLoss arguments
        gadice = A["GADice"]()(torch.softmax(logits, dim=1), target.clone())
        gace10 = A["GACE"](k=10, gama=0.5)(logits.clone(), target.clone())
        gace100 = A["GACE"](k=100, gama=0.5)(logits.clone(), target.clone())
    return {"logits": logits, "target": target, "gadice": gadice.detach().clone(),
            "gace_k10": gace10.detach().clone(), "gace_k100": gace100.detach().clone()}


def make_scdl(A: dict, g: torch.Generator) -> dict:
    c = SCDL_CFG
    module = A["SCDL"](c["x_dim"], z_dim=c["z_dim"], sample_num=c["sample_num"], num_classes=c["num_classes"],
                       dist_loss_weight=c["dist_weight"], tau_e2p=c["tau"], tau_p2e=c["tau"])
    default_style_init(module, g)                               # encoder.0 / .3 / .6
    bound = math.sqrt(6.0 / sum(module.proxies.shape))          # Xavier-uniform bound of the C × 2D proxies
    uniform_(module.proxies, -bound, bound, g)                  # sigma_emb keeps its 0.05
    module.eval()                                               # dropout off

    C, S, D = c["num_classes"], c["sample_num"], c["z_dim"]
    eps = torch.randn(C, S, D, generator=g)
    x = torch.randn(SCDL_BATCH, SCDL_TOKENS, c["x_dim"], generator=g)
    labels = torch.randint(0, C, (SCDL_BATCH, SCDL_TOKENS), generator=g)
    y_dist = torch.nn.functional.one_hot(labels, C).float()
    soft = torch.rand(N_SOFT, C, generator=g) + 0.05
    y_dist[0, :N_SOFT] = soft / soft.sum(dim=-1, keepdim=True)
    x_cls = torch.randn(len(Y_CLS), c["x_dim"], generator=g)
    y_cls = torch.tensor(Y_CLS, dtype=torch.int64)

    def recorded_noise(shape):                                  # shim 2
        assert tuple(shape) == tuple(eps.shape), shape
        return eps.clone()

    module.gaussian_noise = recorded_noise
    with torch.no_grad():
        proxy_l, _, p_e2p_l, _, sac_l, kl_l = module(x.clone(), y_dist.clone(), x_class_tok=x_cls.clone(),
                                                     y_class_idx=y_cls.clone())
        proxy_u, _, p_e2p_u, _, _, kl_u = module(x.clone())
    del module.gaussian_noise
    return {
        "config": {"x_dim": c["x_dim"], "z_dim": c["z_dim"], "sample_num": c["sample_num"],
                   "num_classes": c["num_classes"], "tau": c["tau"], "dist_weight": c["dist_weight"],
                   "p2e_axis": "classes", "dropout_off": True},
        "state": plain_state(module), "eps": eps, "x": x, "y_dist": y_dist, "x_cls": x_cls, "y_cls": y_cls,
        "labeled": {"proxy_loss": proxy_l.detach().clone(), "p_e2p": p_e2p_l.detach().clone(),
                    "sac": sac_l.detach().clone(), "kl": kl_l.detach().clone()},
        "unlabeled": {"proxy_loss": proxy_u.detach().clone(), "p_e2p": p_e2p_u.detach().clone(),
                      "kl": kl_u.detach().clone()},
    }


def build(authors: Path, galoss: Path, seed: int, allow_other: bool) -> dict:
    A, blobs = load_authors(authors, galoss, allow_other)
    torch.manual_seed(seed)          # the global RNG only feeds module construction and unrecorded noise
    g = torch.Generator().manual_seed(seed)
    ref = {"vnet": make_vnet(A, g), "ga": make_ga(A, g), "scdl": make_scdl(A, g)}
    ref["meta"] = {
        "authors_repository": AUTHORS_REPO, "authors_commit": AUTHORS_COMMIT,
        "authors_checkout_head": git_head(authors) or "unknown (not a git checkout)",
        "galoss_repository": GALOSS_REPO, "galoss_commit": GALOSS_COMMIT,
        "galoss_checkout_head": git_head(galoss) or "unknown (not a git checkout)",
        "git_blobs": blobs, "seed": seed, "torch": str(torch.__version__),
        "producer": "Testing/data/reference/make_reference.py",
    }
    return ref


# -- comparison -------------------------------------------------------------------------------------------
def compare(new: dict, old: dict, path: str = "") -> list[str]:
    """Differences between two reference trees: inputs must be equal, float outputs within 1e-6 (relative)."""
    problems = []
    if set(new) != set(old):
        problems.append(f"{path or '/'}: keys {sorted(set(new) ^ set(old))} differ")
    for key in sorted(set(new) & set(old)):
        a, b, where = new[key], old[key], f"{path}/{key}"
        if where.startswith("/meta"):
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            problems += compare(a, b, where)
        elif torch.is_tensor(a) and torch.is_tensor(b):
            if a.shape != b.shape or a.dtype != b.dtype:
                problems.append(f"{where}: {tuple(a.shape)} {a.dtype} vs {tuple(b.shape)} {b.dtype}")
            elif a.is_floating_point():
                err = float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))
                if err > 1e-6:
                    problems.append(f"{where}: relative error {err:.3g}")
            elif not torch.equal(a, b):
                problems.append(f"{where}: values differ")
        elif a != b:
            problems.append(f"{where}: {a!r} vs {b!r}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--authors", type=Path, required=True, help=f"checkout of {AUTHORS_REPO} @ {AUTHORS_COMMIT[:7]}")
    parser.add_argument("--galoss", type=Path, required=True, help=f"checkout of {GALOSS_REPO} @ {GALOSS_COMMIT[:7]}")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write (default: beside this script)")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
    parser.add_argument("--allow-other-version", action="store_true",
                        help="go on when the authors' files are not the recorded versions")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    ref = build(args.authors.resolve(), args.galoss.resolve(), args.seed, args.allow_other_version)
    if args.check:
        problems = compare(ref, torch.load(args.out, weights_only=True))
        for p in problems:
            print("DIFFERS " + p)
        print(f"{args.out}: {'matches' if not problems else f'{len(problems)} differences'}")
        return 1 if problems else 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ref, args.out)
    torch.load(args.out, weights_only=True)   # loadable without code
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
    for part, keys in (("ga", ("gadice", "gace_k10", "gace_k100")),):
        print("  " + ", ".join(f"{part}.{k} = {float(ref[part][k]):.7g}" for k in keys))
    lab, unl = ref["scdl"]["labeled"], ref["scdl"]["unlabeled"]
    print(f"  scdl.labeled: proxy_loss {float(lab['proxy_loss']):.7g}, sac {float(lab['sac']):.7g}, "
          f"kl {float(lab['kl']):.3g}; scdl.unlabeled: proxy_loss {float(unl['proxy_loss']):.7g}, kl {float(unl['kl']):.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
