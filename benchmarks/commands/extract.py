"""``python -m benchmarks extract``: encode a dataset with a frozen encoder into the feature cache.

Example::

    python -m benchmarks extract --dataset medpix --encoder offline --data-root ../shared/data

Prints the dataset size, feature dimensions, the time spent and the cache file. Running it again is a cache
hit (nothing encoded); an interrupted run resumes from its finished shards.

The text that is encoded is chosen by the loader's own options (e.g. ``--dataset-option append_findings=true``
for medpix, ``--dataset-option text_field=impression`` for openi); the cache key records the loader's
``info["text_field"]``.
"""

from __future__ import annotations

import argparse
import time

from benchmarks.cli import UsageError, add_device_argument, resolve_device
from benchmarks.commands._args import loader_options, nonnegative_int, parse_key_values

NAME = "extract"
HELP = "extract frozen-encoder features for a dataset into the feature cache (batched, resumable)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of the ``extract`` command."""
    parser.add_argument("--dataset", required=True, help="registered dataset name (e.g. medpix)")
    parser.add_argument(
        "--encoder", default="auto",
        help="offline | biomedclip | auto (biomedclip when its weights are local, else offline) (default: auto)",
    )
    parser.add_argument("--data-root", default=None, help="folder holding the datasets (default: $MEDHASH_DATA_ROOT)")
    parser.add_argument("--cache-dir", default=None,
                        help="feature cache folder (else $MEDHASH_CACHE_DIR or ~/.cache/medhash-bench/features)")
    parser.add_argument("--batch-size", type=int, default=32, help="items per encoder call (default: 32)")
    parser.add_argument("--label-scheme", default=None, help="label scheme of the dataset loader (default: its default)")
    parser.add_argument("--dataset-seed", type=nonnegative_int, default=0,
                        help="seed of generated data / seeded splits (default: 0)")
    parser.add_argument("--dataset-option", action="append", metavar="KEY=VALUE", default=[],
                        help="loader option, repeatable; it also selects the text, e.g. append_findings=true "
                             "(medpix) or text_field=impression (openi)")
    parser.add_argument("--encoder-option", action="append", metavar="KEY=VALUE", default=[],
                        help="encoder option, repeatable (e.g. path=DIR for biomedclip)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_device_argument(parser)


def main(args: argparse.Namespace) -> int:
    """Load the dataset, extract (or find) its features, print a summary; returns 0."""
    from medhash_datasets.base import resolve_data_root
    from medhash_datasets.features import extract_features
    from medhash_datasets.loaders import DATASETS

    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    dataset_options = loader_options(args.dataset_option)
    encoder_options = parse_key_values(args.encoder_option, "--encoder-option")
    device = resolve_device(args.device)
    loader = DATASETS.get(args.dataset)
    dataset = loader(
        resolve_data_root(args.data_root), label_scheme=args.label_scheme, seed=args.dataset_seed, **dataset_options
    )
    start = time.perf_counter()
    result = extract_features(
        dataset,
        args.encoder,
        cache_dir=args.cache_dir,
        device=device,
        batch_size=args.batch_size,
        progress=not args.no_progress,
        text_field=None,  # the loader's info["text_field"]: text selection is a loader option
        encoder_options=encoder_options,
    )
    elapsed = time.perf_counter() - start
    feats = result.features
    print(f"dataset: {dataset.name}  items: {len(dataset)}  encoder: {feats.encoder}  device: {device}")
    print(f"image features: {feats.image.shape[1]}-d  text features: {feats.text.shape[1]}-d  (float32)")
    if result.path is None:
        print("features ship with the dataset (precomputed); nothing cached")
    elif result.from_cache:
        print(f"cache hit in {elapsed:.1f} s: {result.path}")
    else:
        t = result.meta.get("timings", {})
        resumed = f", {result.reused_shards} shard(s) resumed" if result.reused_shards else ""
        print(
            f"extracted in {elapsed:.1f} s (images {t.get('image_s', 0):.1f} s, texts {t.get('text_s', 0):.1f} s"
            f"{resumed}): {result.path}"
        )
    return 0
