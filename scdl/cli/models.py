"""``scdl models``: list, inspect, verify, import, download and export model packages."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from scdl.errors import ScdlError
from scdl.inference.config import InferenceSettings
from scdl.progress import MODES as PROGRESS_MODES

EPILOG = """examples:
  scdl models list
  scdl models info scdl-authors-amos-cps
  scdl models download scdl-authors-amos-cps            # the authors' AMOS CPS pair (internet)
  scdl models import best_A.pth best_B.pth --as scdl-authors-amos-cps   # same files, fetched elsewhere
  scdl models import my_model.scdlmodel                  # a package from a colleague (offline site)
  scdl models import net.pth --id my-vnet --labels synapse --spacing 1.5 1.5 2 --patch 96 96 96
  scdl models verify my-vnet
  scdl models export my-vnet -o my-vnet.scdlmodel
  scdl models path                                       # the model cache folder
"""


def _action(sub, name: str, help_text: str, description: str, examples: str):
    """A ``scdl models`` action with its description and examples (every sub-command's --help has one)."""
    return sub.add_parser(name, help=help_text, description=description,
                          epilog="examples:\n" + "".join(f"  {line}\n" for line in examples.strip().splitlines()),
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "models", help="list, inspect, verify, import and download models",
        description="Manage SCDL model packages: the bundled model, the catalog's downloadable models and your "
                    "own (imported or trained). Packages are verified (SHA-256 of every file) before use.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="models_command", metavar="ACTION")

    p = _action(sub, "list", "models in the catalog and in the cache",
                "Every model SCDL knows: the bundled default, the catalog's downloadable models and the packages in "
                "your cache (trained or imported), with their id, kind, number of organs (background not counted) "
                "and whether they are installed.",
                "scdl models list\nscdl models list --json        # for scripts")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.set_defaults(func=run_list)

    p = _action(sub, "info", "show a model's card",
                "The model card: classes, preprocessing, what it was trained on, its held-out scores and warnings.",
                "scdl models info scdl-abdominal-ct\nscdl models info runs/a/model --json")
    p.add_argument("model", metavar="ID|PATH")
    p.add_argument("--json", action="store_true", help="print the card (or catalog entry) as JSON")
    p.set_defaults(func=run_info)

    p = _action(sub, "verify", "check every checksum, the card and that the networks load",
                "Check a package: the SHA-256 of every file against its manifest, the card's schema and that the "
                "networks load with their stated architecture. Exit status 0 when everything holds.",
                "scdl models verify scdl-abdominal-ct\nscdl models verify my_model.scdlmodel")
    p.add_argument("model", metavar="ID|PATH")
    p.set_defaults(func=run_verify)

    p = sub.add_parser(
        "import", help="import a package, or VNet state dicts (.pth), into the cache",
        description="Import a model package (folder or .scdlmodel; verified, then copied into the cache), the "
                    "files of a catalog model downloaded elsewhere (--as ID; matched by git blob id), or plain VNet "
                    "state dicts in the authors' layout (one .pth per network) with a card made from the options.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--as", dest="catalog_id", metavar="ID", help="the files are this catalog model's checkpoints")
    p.add_argument("--out", metavar="PATH", help="write the package here (folder or .scdlmodel) instead of the cache")
    p.add_argument("--force", action="store_true", help="replace an installed model with the same id")
    g = p.add_argument_group("card of imported state dicts")
    g.add_argument("--id", dest="model_id", help="model id (lower-case letters, digits, '.', '_', '-')")
    g.add_argument("--title", help="human-readable name (default: the id)")
    g.add_argument("--labels", metavar="TABLE", help="label table: bundled name (synapse, amos) or CSV path")
    g.add_argument("--n-filters", type=int, help="VNet width (read from the file; checked if given)")
    g.add_argument("--norm", choices=("batch", "instance", "none"), help="normalisation (read from the file; checked)")
    mode = g.add_mutually_exclusive_group()
    mode.add_argument("--spacing", type=float, nargs=3, metavar=("X", "Y", "Z"), help="resample to this spacing (mm)")
    mode.add_argument("--fixed-size", type=int, nargs=3, metavar=("X", "Y", "Z"),
                      help="resize to this many voxels (the authors' AMOS recipe: 160 160 80)")
    g.add_argument("--orientation", default="LPS", help="ITK orientation code the CT is brought to (default LPS)")
    g.add_argument("--patch", type=int, nargs=3, default=[96, 96, 96], metavar=("X", "Y", "Z"),
                   help="sliding-window patch (default 96 96 96)")
    g.add_argument("--window", type=float, nargs=2, default=[-125.0, 275.0], metavar=("LO", "HI"),
                   help="HU window (default -125 275)")
    g.add_argument("--scale", type=float, nargs=2, default=[0.0, 1.0], metavar=("A", "B"),
                   help="values the window maps to (default 0 1)")
    g.add_argument("--overlap", type=float, default=InferenceSettings.overlap,
                   help=f"sliding-window overlap (default {InferenceSettings.overlap:g})")
    g.add_argument("--keep-largest", action="store_true", help="keep the largest component per organ by default")
    g.add_argument("--version", dest="model_version", default="1.0.0", help="model version (default 1.0.0)")
    g.add_argument("--description", default="", help="what the model does")
    g.add_argument("--licence", default="unstated", help="licence of the weights (default: unstated)")
    g.add_argument("--intended-use", default="Research use only; not for clinical use.")
    g.add_argument("--data", help="training data (provenance)")
    g.add_argument("--data-licence", help="licence of the training data")
    g.add_argument("--framework", help="training framework, e.g. cps-scdl")
    g.add_argument("--iterations", type=int, help="training iterations")
    g.add_argument("--warning", action="append", default=[], help="a warning shown with the model (repeatable)")
    p.set_defaults(func=run_import)

    p = _action(sub, "download", "download a catalog model into the cache (verified)",
                "Download a catalog model (internet), verify its checksums and install it into the cache. "
                "Without internet, fetch the files elsewhere and use 'scdl models import --as ID'.",
                "scdl models download scdl-authors-amos-cps\nscdl models download scdl-authors-amos-cps --force")
    p.add_argument("model", metavar="ID")
    p.add_argument("--force", action="store_true", help="download again even if installed")
    p.add_argument("--progress", choices=PROGRESS_MODES, default="tqdm",
                   help="progress as a bar (default), JSON lines on stdout, or none")
    p.set_defaults(func=run_download)

    p = _action(sub, "export", "write a verified copy of a package (folder or single .scdlmodel file)",
                "Write a verified copy of an installed or trained model, as a folder or one .scdlmodel file to "
                "hand to a colleague ('scdl models import' reads it).",
                "scdl models export scdl-abdominal-ct -o default.scdlmodel\nscdl models export runs/a/model -o /media/usb/liver_ft")
    p.add_argument("model", metavar="ID|PATH")
    p.add_argument("-o", "--output", required=True, metavar="PATH", help="FILE.scdlmodel or a folder")
    p.set_defaults(func=run_export)

    p = _action(sub, "path", "print the model cache folder",
                "Print the folder where downloaded, imported and registered models are kept (SCDL_MODELS_DIR, "
                "default ~/.scdl/models).",
                "scdl models path\nls \"$(scdl models path)\"")
    p.set_defaults(func=run_path)

    parser.set_defaults(func=lambda args: _no_action(parser))


def _no_action(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


# -- list / info / verify / path -------------------------------------------------------------------
def run_list(args: argparse.Namespace) -> int:
    from scdl.models.listing import list_models

    items = list_models()
    if args.json:
        print(json.dumps(items, indent=2))
        return 0
    rows = [("ID", "KIND", "STATUS", "ORGANS", "TITLE")]
    for item in items:
        status = item["status"] if not item["status"].startswith("invalid") else "invalid (run verify)"
        mark = " (default)" if item.get("default") else ""
        rows.append((item["id"], item["kind"], status, str(int(item["n_classes"]) - 1 if item.get("n_classes") else "?"), item["title"] + mark))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row[:4], widths)) + "  " + row[4])
    for item in items:
        if item["status"].startswith("invalid"):
            print(f"warning: {item['id']}: {item['status']}", file=sys.stderr)
    return 0


def _card_text(card: dict, labels, path: Path, networks: int) -> str:
    from scdl.models.cardtext import card_text

    return card_text(card, label_names=labels.names, path=path, networks=networks)


def run_info(args: argparse.Namespace) -> int:
    from scdl.models.catalog import catalog_entry, installed_path
    from scdl.models.package import ModelPackage

    entry = None
    if not Path(args.model).expanduser().exists() and installed_path(args.model) is None:
        entry = catalog_entry(args.model)
    if entry is not None:  # in the catalog, not installed
        if args.json:
            print(json.dumps(entry, indent=2))
            return 0
        print(f"{entry['title']}\n  id:            {entry['id']}  ({entry['kind']}, not installed)")
        if entry.get("description"):
            print(f"  description:   {entry['description']}")
        if entry["kind"] == "checkpoints":
            from scdl.models.fetch import file_urls

            for spec, url in zip(entry["source"]["files"], file_urls(entry["id"])):
                print(f"  file:          {url}\n                 git blob {spec['git_blob']}")
            print(f"  licence:       {entry.get('licence', 'unstated')}")
            card_warnings = list(entry["card"].get("warnings", []))
            short = [w for w in entry.get("warnings", []) if not any(c.startswith(w) for c in card_warnings)]
            for warning in short + card_warnings:
                print(f"  WARNING:       {warning}")
            print(f"  install with:  scdl models download {entry['id']}")
        else:
            print("  status:        the bundled model is not installed in this copy of SCDL.")
        return 0
    pkg = ModelPackage.load(args.model, verify=False)
    if args.json:
        print(json.dumps({**pkg.card, "path": str(pkg.path), "label_names": pkg.labels.names}, indent=2))
    else:
        print(_card_text(pkg.card, pkg.labels, pkg.path, pkg.networks))
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from scdl.models.package import ModelPackage

    pkg = ModelPackage.load(args.model, verify=True)
    nets = pkg.build_networks("cpu")
    print(f"OK {pkg.id}: {len(pkg.manifest)} files match their SHA-256, card valid, "
          f"{len(nets)} network(s) load ({pkg.path})")
    return 0


def run_path(args: argparse.Namespace) -> int:  # noqa: ARG001
    from scdl.models.cache import cache_dir

    print(cache_dir())
    return 0


def run_export(args: argparse.Namespace) -> int:
    from scdl.models.catalog import resolve_model
    from scdl.models.package import copy_package

    out = copy_package(resolve_model(args.model), Path(args.output).expanduser())
    print(out)
    return 0


# -- import / download ------------------------------------------------------------------------------
def _is_package(path: Path) -> bool:
    from scdl.models.source import is_package_path

    return is_package_path(path)


def run_import(args: argparse.Namespace) -> int:
    from scdl.models.fetch import import_catalog_files
    from scdl.models.install import install
    from scdl.models.package import copy_package

    paths = [Path(p).expanduser() for p in args.paths]
    for p in paths:
        if not p.exists():
            raise ScdlError("the file does not exist.", p, "check the path.")
    if args.catalog_id:
        if args.out:
            raise ScdlError("--as installs into the cache; --out cannot be combined with it.", fix="drop --out.")
        out = import_catalog_files(args.catalog_id, paths, force=args.force)
    elif len(paths) == 1 and _is_package(paths[0]):
        out = copy_package(paths[0], Path(args.out).expanduser()) if args.out else install(paths[0], args.force)
    else:
        out = _import_state_dicts(args, paths)
    print(out)
    return 0


def _import_state_dicts(args: argparse.Namespace, paths: list[Path]) -> Path:
    from scdl.models import cache
    from scdl.models.catalog import bundled_path
    from scdl.models.statedict import import_state_dicts

    for p in paths:
        if p.is_dir():
            raise ScdlError("this folder is not a model package (no manifest.json).", p,
                            "give a package folder, a .scdlmodel file, or .pth state dict files.")
    missing = [opt for opt, value in (("--id", args.model_id), ("--labels", args.labels)) if not value]
    if not (args.spacing or args.fixed_size):
        missing.append("--spacing X Y Z or --fixed-size X Y Z")
    if missing:
        raise ScdlError(f"importing state dicts needs {', '.join(missing)}.", paths[0],
                        "give the label table, the id and the preprocessing the networks were trained with "
                        "(see `scdl models import --help`).")
    if args.spacing:
        pre = {"mode": "spacing", "spacing_mm": args.spacing}
    else:
        pre = {"mode": "fixed_size", "size": args.fixed_size}
    pre.update(orientation=args.orientation, patch_size=args.patch, window=args.window, scale=args.scale)
    if args.out:
        out = Path(args.out).expanduser()
    else:
        if bundled_path(args.model_id) is not None:
            raise ScdlError(f"the id {args.model_id!r} belongs to a model bundled with SCDL.", fix="choose another --id.")
        out = cache.cached_path(args.model_id)
        if out.exists() and not args.force:
            raise ScdlError(f"a model with id {args.model_id!r} is already installed ({out}).",
                            fix="use --force to replace it, or choose another --id.")
    provenance = {"data": args.data, "data_licence": args.data_licence, "framework": args.framework,
                  "iterations": args.iterations}
    fields = {"version": args.model_version, "description": args.description, "licence": args.licence,
              "intended_use": args.intended_use, "warnings": args.warning,
              "inference": {"overlap": args.overlap, "keep_largest_component": args.keep_largest},
              "provenance": {k: v for k, v in provenance.items() if v is not None}}
    return import_state_dicts(paths, out, model_id=args.model_id, title=args.title or args.model_id,
                              labels=args.labels, preprocessing=pre, n_filters=args.n_filters, norm=args.norm,
                              card_fields=fields)


def run_download(args: argparse.Namespace) -> int:
    from scdl.models.catalog import catalog_entry
    from scdl.models.fetch import download_model
    from scdl.progress import Progress

    progress = Progress(args.progress)
    progress.install_signal_handlers()
    state = {"phase": None, "done": 0}

    def close_phase() -> None:
        if state["phase"] is not None:
            state["phase"].close()
            state["phase"] = None

    def on_file(index: int, count: int, url: str) -> None:
        close_phase()
        progress.message(f"downloading file {index + 1}/{count}: {url}")

    def on_bytes(done: int, total) -> None:
        if state["phase"] is None:
            state["phase"] = progress.phase("download", total or 1)
            state["done"] = 0
        if done > state["done"]:
            state["phase"].advance(done - state["done"])
            state["done"] = done
        else:
            progress.check_cancelled()

    entry = catalog_entry(args.model)
    from scdl.models.catalog import installed_path

    if not args.force and entry is not None and entry["kind"] == "checkpoints" and installed_path(args.model):
        progress.message(f"{args.model} is already installed (use --force to download it again).")
    try:
        path = download_model(args.model, force=args.force, on_file=on_file, on_bytes=on_bytes)
    finally:
        close_phase()
    if entry is not None:
        for warning in list(entry.get("warnings", [])):
            progress.warning(f"{args.model}: {warning}")
    progress.done(model=args.model, path=str(path))
    if progress.mode != "json":
        print(path)
    return 0
