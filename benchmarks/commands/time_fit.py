"""``python -m benchmarks time-fit``: time one training run of a method (the training-speed benchmark).

Example (the MCMFH target of issue 15: one 16-bit fit on MedPix offline features in at most 60 s on 2 CPU
cores)::

    python -m benchmarks time-fit --method mcmfh --dataset medpix --bits 16 --encoder offline \\
        --data-root ../shared/data --device cpu --threads 2

Loads (or extracts) the cached features, fits the method once on the train split (model selection on the
validation split, as in ``run``; one progress line per epoch on stderr unless ``--quiet``), and prints the
wall-clock and CPU seconds of ``fit``, the epochs run and selected (per stage where the method reports them),
the selection rule, the per-expert load and router-collapse flag for MCMFH, the median batch-size-1 encode
latency per modality (one thread), and the validation-split mAP: validation items as queries against the
training items as database, tie-aware mAP@all (``map``), i2t and t2i, for the unimodal protocol and, for
fusion methods, the paired protocol (the one model fitted here is selected under its ``select_protocol``; the line
of the other protocol says so, since ``run`` scores each protocol on a model selected under it). The query split
is never touched.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Any

from benchmarks.cli import UsageError, add_device_argument, resolve_device
from benchmarks.commands._args import loader_options, nonnegative_int

NAME = "time-fit"
HELP = "time one fit of a method on a dataset's features; print seconds, epochs and validation-split mAP"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of the ``time-fit`` command."""
    parser.add_argument("--method", required=True, help="registered method name (e.g. mcmfh, ucmfh, mcmfh-no-moe)")
    parser.add_argument("--dataset", required=True, help="registered dataset name (e.g. medpix, synthetic)")
    parser.add_argument("--bits", type=int, default=16, help="code length K >= 8 (default: 16)")
    parser.add_argument("--seed", type=nonnegative_int, default=0, help="method seed, >= 0 (default: 0)")
    parser.add_argument("--data-root", default=None, help="folder holding the datasets (default: $MEDHASH_DATA_ROOT)")
    parser.add_argument("--encoder", default="auto", help="feature encoder: auto, offline, biomedclip (default: auto)")
    parser.add_argument("--cache-dir", default=None,
                        help="feature cache folder (else $MEDHASH_CACHE_DIR or ~/.cache/medhash-bench/features)")
    parser.add_argument("--label-scheme", default=None, help="label scheme of the dataset loader (default: its default)")
    parser.add_argument("--dataset-seed", type=nonnegative_int, default=0,
                        help="seed of generated data / seeded splits (default: 0)")
    parser.add_argument("--dataset-option", action="append", metavar="KEY=VALUE",
                        help="loader option (repeatable), e.g. append_findings=true for medpix")
    parser.add_argument("--param", action="append", metavar="KEY=VALUE", help="method config override (repeatable)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch progress lines on stderr")
    parser.add_argument("--latency-items", type=nonnegative_int, default=20,
                        help="validation items encoded one at a time for the batch-size-1 latency (0: skip; default 20)")
    add_device_argument(parser)


def validation_map(method: Any, train: Any, validation: Any) -> dict[str, tuple[float, float | None]]:
    """Tie-aware mAP@all of validation queries against the training items, per protocol and task.

    Parameters
    ----------
    method : HashingMethod
        A fitted method.
    train, validation : FeatureSplit
        Database and query features/labels.

    Returns
    -------
    dict
        ``"<protocol> <task>" -> (mAP, chance mAP)`` for protocols ``unimodal`` (and ``paired`` when the method uses both
        modalities at encode) and tasks ``i2t``, ``t2i``. Real-valued methods are scored by cosine similarity.
    """
    from benchmarks.evaluation import MetricSpec, evaluate_hamming, evaluate_scores

    spec = MetricSpec.map_only()

    def score(q: Any, d: Any) -> tuple[float, float | None]:
        evaluate = evaluate_hamming if method.binary else evaluate_scores
        result = evaluate(q, d, validation.labels, train.labels, tie="aware", metrics=spec)
        return result.get("map"), result.chance("map")

    out: dict[str, tuple[float, float | None]] = {}
    q_img, q_txt = method.encode(image=validation.image).image, method.encode(text=validation.text).text
    d_img, d_txt = method.encode(image=train.image).image, method.encode(text=train.text).text
    out["unimodal i2t"], out["unimodal t2i"] = score(q_img, d_txt), score(q_txt, d_img)
    if method.uses_both_modalities_at_encode:
        q = method.encode(image=validation.image, text=validation.text)
        d = method.encode(image=train.image, text=train.text)
        out["paired i2t"], out["paired t2i"] = score(q.image, d.text), score(q.text, d.image)
    return out


def encode_latency_ms(method: Any, features: Any, modality: str, n_items: int) -> float:
    """Median milliseconds to encode ONE item of ``modality`` (batch size 1) with one torch thread.

    Parameters
    ----------
    method : HashingMethod
        A fitted method.
    features : np.ndarray, shape (n, d)
        Items of that modality; the first ``n_items`` (at most n − 1) are timed one at a time after one
        warm-up call on row 0. The caller's torch thread count is restored afterwards.
    """
    import statistics

    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        method.encode(**{modality: features[:1]})
        times = []
        for i in range(1, min(n_items, len(features) - 1) + 1):
            start = time.perf_counter()
            method.encode(**{modality: features[i : i + 1]})
            times.append((time.perf_counter() - start) * 1e3)
    finally:
        torch.set_num_threads(threads)
    return float(statistics.median(times))


def main(args: argparse.Namespace) -> int:
    """Load features, fit once with a timer, print the figures; returns 0."""
    import torch

    from benchmarks.commands.run import parse_param_values
    from medhash_datasets.base import feature_split, resolve_data_root
    from medhash_datasets.features import load_or_extract_features
    from medhash_datasets.loaders import DATASETS
    from methods import create_method

    if args.bits < 8:
        raise UsageError(f"--bits must be >= 8, got {args.bits}")
    if args.seed < 0:  # also checked by the flag's type; callers may build the namespace themselves
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    dataset_options = loader_options(args.dataset_option)
    if args.threads is not None:
        if args.threads < 1:
            raise UsageError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    method = create_method(args.method, parse_param_values(args.param), device=device)
    dataset = DATASETS.get(args.dataset)(
        resolve_data_root(args.data_root),
        label_scheme=args.label_scheme,
        seed=args.dataset_seed,
        **dataset_options,
    )
    feats = load_or_extract_features(dataset, args.encoder, cache_dir=args.cache_dir, device=device, progress=False)
    train = feature_split(dataset, feats, "train")
    validation = feature_split(dataset, feats, "validation")
    if len(train) < 2:
        raise UsageError(f"dataset {args.dataset!r} has {len(train)} training items; need at least 2")

    print(
        f"method: {args.method}  dataset: {dataset.name}  encoder: {feats.encoder}  bits: {args.bits}  "
        f"seed: {args.seed}  device: {device}  threads: {torch.get_num_threads()}"
    )
    print(
        f"train: {len(train)} items (image {train.image.shape[1]}-d, text {train.text.shape[1]}-d)  "
        f"validation: {len(validation)} items"
    )
    # One-time import cost (torch's first optimiser step imports torch._dynamo, seconds) is not training time.
    warm = torch.nn.Parameter(torch.zeros(1))
    for fused in (False, True):
        opt = torch.optim.Adam([warm], fused=fused)
        warm.sum().backward()
        opt.step()
    methods_logger, handler = logging.getLogger("methods"), logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("  %(message)s"))
    level = methods_logger.level
    if not args.quiet:  # per-epoch progress lines of the methods' own loggers
        methods_logger.addHandler(handler)
        methods_logger.setLevel(logging.INFO)
    start, cpu_start = time.perf_counter(), time.process_time()
    try:
        method.fit(train, validation, args.bits, args.seed)
    finally:
        methods_logger.removeHandler(handler)
        methods_logger.setLevel(level)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    info = method.info()
    print(f"fit: {seconds:.1f} s wall ({cpu:.1f} s CPU time of this process, all threads)")
    if "epochs" in info:
        per_stage = info.get("epochs_per_stage")
        best = info.get("best_epoch_per_stage")
        detail = f"  per stage: {per_stage}  best epoch per stage: {best}" if per_stage else ""
        print(f"epochs run: {info['epochs']}{detail}")
    if info.get("selection"):
        best = info.get("best_val_map_per_stage") or {}
        print(f"selection: {info['selection']}" + (f"  best per stage: {{{', '.join(f'{k}: {v:.4f}' for k, v in best.items())}}}" if best else ""))
    if info.get("expert_load"):
        print("expert load (fraction of assignments): " + ", ".join(f"{v:.3f}" for v in info["expert_load"])
              + f"  router collapse: {'YES' if info.get('router_collapse') else 'no'}")
    if args.latency_items and len(validation) >= 2:
        print("encode latency at batch size 1, one thread (median ms per item): " + ", ".join(
            f"{mod} {encode_latency_ms(method, getattr(validation, mod), mod, args.latency_items):.2f}"
            for mod in ("image", "text")))
    if len(validation) >= 1:
        scores = validation_map(method, train, validation)
        print("validation-split mAP (tie-aware mAP@all, validation queries vs training database):")
        selected = method.config.select_protocol if method.selects_under_protocol else None
        for key, (value, chance) in scores.items():
            other = selected is not None and not key.startswith(selected)
            note = (f"  [model selected under the {selected} protocol; --param select_protocol={key.split()[0]} "
                    "selects under this one, as run does for its rows]") if other else ""
            print(f"  {key}: {value:.4f}" + (f"  (chance {chance:.4f})" if chance is not None else "") + note)
    return 0
