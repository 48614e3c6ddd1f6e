"""``data``: fetch a public dataset into the data root, or describe a dataset.

Examples::

    python -m benchmarks data fetch medpix --data-root ~/medhash-data
    python -m benchmarks data info medpix --data-root ../shared/data --label-scheme location
    python -m benchmarks data info openi --dataset-option views=all --dataset-option top_n=14

``data info`` loads real datasets in metadata mode (``require_images=false``: absent images are counted,
not skipped) unless ``--check-images`` is given, so it works on text-only copies such as ROCO without images.
It lists every skipped record (reason, id, split, source line, image path) and every leakage finding between
splits (:meth:`PairedDataset.audit` holds the same as a dict).
"""

from __future__ import annotations

import argparse

import numpy as np

from benchmarks.cli import UsageError
from benchmarks.commands._args import loader_options, nonnegative_int

NAME = "data"
HELP = "fetch a dataset into the data root, or print its counts, splits, label statistics and skipped records"

#: Loaders that accept ``require_images`` (metadata-only loading for ``data info``).
_METADATA_MODE = frozenset({"medpix", "roco", "openi", "mirflickr25k"})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``data fetch NAME`` and ``data info NAME``."""
    sub = parser.add_subparsers(dest="data_action", required=True, metavar="ACTION")
    fetch = sub.add_parser("fetch", help="download and unpack a dataset's public archive into the data root")
    fetch.add_argument("name", help="dataset: medpix, openi (roco and mirflickr25k explain how to get them)")
    fetch.add_argument("--data-root", default=None, help="target folder (default: $MEDHASH_DATA_ROOT)")
    fetch.add_argument("--keep-archive", action="store_true", help="keep the downloaded archive after unpacking")
    fetch.add_argument(
        "--connect-timeout", type=float, default=10.0, help="seconds to wait for the server (default: 10)"
    )
    info = sub.add_parser("info", help="print counts, splits, label statistics and skipped records")
    info.add_argument("name", help="registered dataset name (see `list`)")
    info.add_argument("--data-root", default=None, help="folder holding the datasets (default: $MEDHASH_DATA_ROOT)")
    info.add_argument("--label-scheme", default=None, help="label scheme (default: the dataset's default)")
    info.add_argument(
        "--dataset-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="loader option, repeatable (e.g. views=all, top_n=20)",
    )
    info.add_argument("--seed", type=nonnegative_int, default=0, help="split seed for seeded splits (default: 0)")
    info.add_argument(
        "--check-images", action="store_true", help="require the images (default: count absent images only)"
    )
    info.add_argument("--top", type=int, default=10, help="how many of the most frequent labels to list (default: 10)")


def main(args: argparse.Namespace) -> int:
    """Run ``data fetch`` or ``data info``; returns the exit code."""
    from medhash_datasets.base import resolve_data_root

    root = resolve_data_root(args.data_root)
    if args.data_action == "fetch":
        from medhash_datasets.fetch import fetch_dataset

        if root is not None and root.exists() and not root.is_dir():
            raise UsageError(f"--data-root {root} is a file, not a folder; give the folder to download into")
        try:
            for path in fetch_dataset(
                args.name, root, connect_timeout=args.connect_timeout, keep_archive=args.keep_archive
            ):
                print(f"ready: {path}")
        except (FileExistsError, NotADirectoryError, IsADirectoryError) as err:
            where = f" {err.filename}" if err.filename else ""
            raise UsageError(f"cannot write{where} under data root {root}: {err.strerror or err} "
                             "(a file stands where a folder is needed)") from None
        return 0
    return _info(args, root)


def _info(args: argparse.Namespace, root) -> int:
    from tabulate import tabulate

    from medhash_datasets.loaders import DATASETS

    loader = DATASETS.get(args.name)
    options: dict[str, str] = loader_options(args.dataset_option, seed_flag="--seed")
    if args.name in _METADATA_MODE and "require_images" not in options and not args.check_images:
        options["require_images"] = "false"
    ds = loader(root, label_scheme=args.label_scheme, seed=args.seed, **options)

    labels = ds.labels.astype(np.int64)
    per_item = labels.sum(1)
    freq = labels.sum(0)
    modalities = []
    if ds.texts is not None:
        lengths = np.array([len(t.split()) for t in ds.texts])
        modalities.append(f"texts (words per text: mean {lengths.mean():.1f}, max {lengths.max()})")
    if ds.image_paths is not None:
        modalities.append("image files")
    if ds.image_features is not None:
        modalities.append(f"image features {ds.image_features.shape[1]}-d")
    if ds.text_features is not None:
        modalities.append(f"text features {ds.text_features.shape[1]}-d")
    if ds.image_paths is None and ds.image_features is None:
        modalities.append("no image modality loaded")

    print(f"dataset {ds.name}: {len(ds)} items, label scheme {ds.label_scheme}, {len(ds.label_names)} labels")
    print("modalities: " + "; ".join(modalities))
    print()
    sizes = ds.split_sizes()
    print(tabulate([[s, n] for s, n in sizes.items()], headers=["split", "items"], tablefmt="github", disable_numparse=True,
                   colalign=("left", "right")))
    print(f"database includes train: {ds.db_includes_train}")
    print()
    print(
        f"labels per item: mean {per_item.mean():.2f}, min {per_item.min()}, max {per_item.max()}; "
        f"items with several labels: {int((per_item > 1).sum())}; "
        f"label frequency: min {freq.min()}, median {np.median(freq):g}, max {freq.max()}"
    )
    train_freq = labels[ds.splits["train"]].sum(0)
    order = sorted(range(len(freq)), key=lambda j: (-freq[j], ds.label_names[j]))[: max(args.top, 0)]
    rows = [[ds.label_names[j], int(freq[j]), f"{freq[j] / len(ds):.3f}", int(train_freq[j])] for j in order]
    print(tabulate(rows, headers=["label", "items", "fraction", "in train"], tablefmt="github", disable_numparse=True,
                   colalign=("left", "right", "right", "right")))
    print()
    if ds.skipped:
        print(tabulate(sorted(ds.skipped.items()), headers=["skipped because", "records"], tablefmt="github",
                       disable_numparse=True, colalign=("left", "right")))
        if ds.skipped_items:
            print()
            keys = ("reason", "id", "split", "source", "path", "detail")
            rows = [[item.get(k) or "" for k in keys] for item in ds.skipped_items]
            print(f"skipped records ({len(rows)}, every one):")
            print(tabulate(rows, headers=list(keys), tablefmt="github", disable_numparse=True))
    else:
        print("skipped: none")
    print()
    leakage = ds.format_leakage(first=None)
    print(leakage if leakage else "leakage: not checked (the loader has no splits from source files)")
    print()
    for key in sorted(ds.info):
        print(f"{key}: {ds.info[key]}")
    return 0
