"""One cell of a run: load a dataset's features, fit one method, encode, evaluate, time, and build the
cell's result rows (:func:`run_cell`). The grid around cells is :mod:`benchmarks.runner`."""

from __future__ import annotations

import datetime as _dt
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.exports import export_dir, write_codes, write_per_query
from benchmarks.results import config_hash, git_commit, package_versions
from medhash_datasets.base import Features, FeatureSplit, PairedDataset, feature_split
from medhash_datasets.loaders import DATASETS
from methods import METHODS, HashingMethod, create_method, method_config

PROTOCOLS = ("unimodal", "paired")
TASKS = ("i2t", "t2i", "i2i", "t2t")
TIES = ("aware", "index")
SEARCH_K = 100
#: (query modality, database modality) per task.
TASK_SIDES = {"i2t": ("image", "text"), "t2i": ("text", "image"), "i2i": ("image", "image"), "t2t": ("text", "text")}


# ---- data -------------------------------------------------------------------------------------------
def prepare_features(
    dataset_name: str,
    *,
    data_root: Path | None,
    encoder: str = "auto",
    device: str = "cpu",
    dataset_options: dict[str, str] | None = None,
    cache_dir: Path | None = None,
    label_scheme: str | None = None,
    dataset_seed: int = 0,
    progress: bool = True,
    encoder_options: dict[str, str] | None = None,
) -> tuple[PairedDataset, Features]:
    """Load dataset ``dataset_name`` and its frozen-encoder features (extracted and cached on first use).

    Parameters
    ----------
    dataset_name : str
        Registry name (``synthetic``, ``medpix``, ...).
    data_root : Path | None
        Folder holding the datasets in their original layouts.
    encoder : str
        Encoder registry name, ``"auto"`` (BiomedCLIP if its weights are available locally, else
        ``offline``) or ``"precomputed"`` for datasets that ship features.
    dataset_options : dict[str, str] | None
        Loader options (``--dataset-option k=v``).
    dataset_seed : int
        Seed of seeded splits / generated data (fixed across method seeds).
    encoder_options : dict[str, str] | None
        Encoder options (``--encoder-option k=v``, e.g. ``path=DIR`` for a local BiomedCLIP folder).

    Returns
    -------
    (PairedDataset, Features)
        Features hold (N, d_img) and (N, d_txt) float32 arrays in the dataset's item order.

    Raises
    ------
    DatasetError
        Missing data, bad options, or an encoder that cannot be loaded (with how to fix it).
    """
    from medhash_datasets.features import load_or_extract_features

    loader = DATASETS.get(dataset_name)
    dataset = loader(data_root, label_scheme=label_scheme, seed=dataset_seed, **(dataset_options or {}))
    features = load_or_extract_features(
        dataset, encoder, cache_dir=cache_dir, device=device, progress=progress,
        text_field=str(dataset.info.get("text_field", "caption")), encoder_options=encoder_options,
    )
    return dataset, features


def encode_split(method: HashingMethod, split: FeatureSplit, protocol: str) -> dict[str, np.ndarray]:
    """Relaxed codes (or float embeddings) of one split under ``protocol``.

    ``unimodal``: each modality encoded from its own features only. ``paired``: both halves of the code
    computed from the full (image, text) pair (the UCMFH/MCMFH papers' protocol).

    Returns
    -------
    dict with keys ``image`` and ``text``, arrays of shape (n, K) float32.
    """
    if protocol == "unimodal":
        return {"image": method.encode(image=split.image).image, "text": method.encode(text=split.text).text}
    if protocol == "paired":
        out = method.encode(image=split.image, text=split.text)
        return {"image": out.image, "text": out.text}
    raise ValueError(f"unknown protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}")


def evaluate_codes(
    method: HashingMethod,
    q_codes: np.ndarray,
    db_codes: np.ndarray,
    q_labels: np.ndarray,
    db_labels: np.ndarray,
    *,
    tie: str,
    shuffle_seed: int,
    metrics: Any = None,
):
    """Evaluate one task: Hamming ranking of ``code >= 0`` bits for hashing methods (the relaxed convention of
    the methods spec, so an output of exactly 0 is bit 1), cosine for float ones."""
    from benchmarks.evaluation import evaluate_hamming, evaluate_scores

    if method.binary:
        return evaluate_hamming(q_codes, db_codes, q_labels, db_labels, tie=tie, metrics=metrics,
                                shuffle_seed=shuffle_seed, convention="relaxed")
    return evaluate_scores(q_codes, db_codes, q_labels, db_labels, tie=tie, metrics=metrics, shuffle_seed=shuffle_seed)


def validation_score(
    method: HashingMethod, dataset: PairedDataset, features: Features, *, protocol: str = "unimodal"
) -> float:
    """Model-selection score: mean of i2t and t2i tie-aware mAP, validation split as queries, train split
    as database (labels of those two splits only; the query split is never touched)."""
    val = feature_split(dataset, features, "validation")
    train = feature_split(dataset, features, "train")
    qv, dv = encode_split(method, val, protocol), encode_split(method, train, protocol)
    scores = []
    for task in ("i2t", "t2i"):
        qs, ds = TASK_SIDES[task]
        res = evaluate_codes(method, qv[qs], dv[ds], val.labels, train.labels, tie="aware", shuffle_seed=0)
        scores.append(res.get("map"))
    return float(np.mean(scores))


# ---- timing -----------------------------------------------------------------------------------------
def time_encode_one(method: HashingMethod, features: np.ndarray, modality: str, n_items: int = 20) -> float:
    """Median milliseconds to encode ONE query item (batch size 1) of ``modality`` from its features.

    Parameters
    ----------
    features : np.ndarray, shape (n, d), float32 — query features of that modality; the first
        ``n_items`` rows are timed one at a time after one warm-up call.
    """
    rows = features[: max(1, min(n_items, len(features)))]
    method.encode(**{modality: rows[:1]})  # warm-up
    times = []
    for i in range(len(rows)):
        t0 = time.perf_counter()
        method.encode(**{modality: rows[i : i + 1]})
        times.append((time.perf_counter() - t0) * 1e3)
    return float(statistics.median(times))


def time_search(queries: np.ndarray, database: np.ndarray, *, binary: bool, k: int = SEARCH_K, n_queries: int = 50) -> float:
    """Median milliseconds to return the top-``k`` for ONE query (batch size 1) with the exact engine
    (``popcount`` for codes, ``numpy-ip`` for floats), single-threaded: with two cores shared by other
    work, multi-threaded single-query timings measure scheduler wake-ups, not search.

    Parameters
    ----------
    queries : (nq, K) relaxed codes if ``binary`` else (nq, d) float features.
    database : (nd, K) relaxed codes or (nd, d) float features.
    """
    from benchmarks.evaluation import binarize, pack_bits
    from benchmarks.search.registry import create_engine

    if binary:
        engine = create_engine("popcount", threads=1)
        engine.build(pack_bits(binarize(database, convention="relaxed")))
        q = pack_bits(binarize(queries, convention="relaxed"))
    else:
        engine = create_engine("numpy-ip")
        engine.build(np.ascontiguousarray(database, dtype=np.float32))
        q = np.ascontiguousarray(queries, dtype=np.float32)
    k = min(k, database.shape[0])
    rows = q[: max(1, min(n_queries, len(q)))]
    times = []
    engine.search(rows[:1], k)  # warm-up
    for i in range(len(rows)):
        t0 = time.perf_counter()
        engine.search(rows[i : i + 1], k)
        times.append((time.perf_counter() - t0) * 1e3)
    return float(statistics.median(times))


def real_valued_reference(query: FeatureSplit, db: FeatureSplit) -> tuple[np.ndarray, np.ndarray, str]:
    """Query and database float32 features for the per-cell real-valued search time (i2t direction).

    With a shared space (``d_img == d_txt``, e.g. BiomedCLIP's 512-d) image queries search the database's text
    features, as ``real-valued`` does. Without one (the offline encoders: 1,280-d image, 384-d text) the
    ``real-valued`` method searches a CCA space of at most ``d_txt`` dims, so the reference is the database's
    own text space at ``d_txt`` dims (text queries against text features: the same cost as any search in a
    ``d_txt``-dim space; exact search time depends on N and d, not on the values).

    Returns
    -------
    (queries (nq, d) float32, database (nd, d) float32, description of the space)
    """
    if query.image.shape[1] == db.text.shape[1]:
        return query.image, db.text, "shared encoder space (image queries vs text database)"
    d = int(db.text.shape[1])
    return query.text, db.text, f"text space ({d}-d, the largest CCA space real-valued can use)"


# ---- cells ------------------------------------------------------------------------------------------
@dataclass
class RunSpec:
    """Everything ``run`` was asked to do (one invocation)."""

    methods: list[str]
    datasets: list[str]
    bits: list[int]
    seeds: list[int]
    protocols: list[str] = field(default_factory=lambda: list(PROTOCOLS))
    tasks: list[str] = field(default_factory=lambda: ["i2t", "t2i"])
    ties: list[str] = field(default_factory=lambda: list(TIES))
    out: Path = Path("results")
    data_root: Path | None = None
    encoder: str = "auto"
    encoder_options: dict[str, str] = field(default_factory=dict)
    cache_dir: Path | None = None
    device: str = "cpu"
    dataset_options: dict[str, str] = field(default_factory=dict)
    label_scheme: str | None = None
    dataset_seed: int = 0
    params: dict[str, dict[str, Any]] = field(default_factory=dict)  # per method name
    force: bool = False
    progress: bool = True
    #: torch/BLAS/OpenMP threads of the process that runs a cell (part of the cell's identity: float
    #: reductions, hence results, depend on it).
    threads: int = 1
    #: Tuned parameters per cell group, keyed by :func:`tuned_key` (method, dataset, bits): ``{"params": {...},
    #: "tuning": {"study", "trial", "budget", "n_complete", "n_pruned", "best_value", "params",
    #: "shared_across_bits"}}``; ``--param`` values still win over tuned ones.
    tuned: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: What each cell also writes under ``out/exports/``: ``codes`` (the evaluate file layout), ``model``,
    #: ``per-query`` (per-query AP as CSV); see :mod:`benchmarks.exports`.
    exports: list[str] = field(default_factory=list)
    #: The ``run`` flags that made this spec (written into the run manifest so ``run --config`` can replay it).
    command: dict[str, Any] = field(default_factory=dict)


def tuned_key(method: str, dataset: str, bits: int | None) -> str:
    """Key of :attr:`RunSpec.tuned`: ``"method|dataset|bits"`` (``bits`` ``None`` for float methods)."""
    return f"{method}|{dataset}|{bits}"


def cell_params(spec: RunSpec, method: str, dataset: str, bits: int | None, select: str | None = None) -> dict[str, Any]:
    """Parameters of one cell's method: tuned ones (if any), then the user's ``--param`` values on top, then
    ``select_protocol = select`` for a cell selected under one protocol (:func:`cell_selections`)."""
    tuned = spec.tuned.get(tuned_key(method, dataset, bits), {}).get("params", {})
    params = {**tuned, **spec.params.get(method, {})}
    if select is not None:
        params["select_protocol"] = select
    return params


def cell_selections(spec: RunSpec, method: str) -> list[str | None]:
    """The cells one (method, dataset, bits, seed) of ``spec`` needs, as the protocol each cell's model is
    selected under.

    A method whose ``fit`` selects its model under a protocol (``selects_under_protocol``: UCMFH, MCMFH and its
    ablations) gets one cell per protocol of ``spec.protocols``, each fitting a model selected under that
    protocol and evaluating only that protocol (methods spec: model selection "under the protocol being
    evaluated"). Every other method, and a fusion method whose ``select_protocol`` the user pinned with
    ``--param``, gets one cell evaluating every protocol (``[None]``).

    Returns
    -------
    list of str | None
        ``["unimodal", "paired"]`` (in ``spec.protocols`` order) or ``[None]``.
    """
    entry = METHODS.get(method)
    if entry.cls.selects_under_protocol and "select_protocol" not in spec.params.get(method, {}):
        return list(spec.protocols)
    return [None]


def describe_inputs(dataset: PairedDataset, features: Features, requested_encoder: str,
                    encoder_options: dict[str, str] | None = None) -> list[str]:
    """Console lines saying which encoder was used and why, and which items were dropped or flagged.

    The encoder line names the resolved encoder; for ``auto`` it says whether BiomedCLIP weights were found
    (:func:`medhash_datasets.encoders.resolve_encoder_name`) and how to supply them otherwise.
    """
    options = encoder_options or {}
    if features.encoder == "precomputed":
        why = "features shipped with the dataset" + (f"; --encoder {requested_encoder} does not apply"
                                                    if requested_encoder not in ("auto", "precomputed") else "")
    elif requested_encoder == "auto":
        if features.encoder.startswith("biomedclip"):
            why = "auto: BiomedCLIP weights found locally"
        else:
            why = ("auto: no local BiomedCLIP weights (pass --encoder-option path=DIR or --encoder biomedclip to use "
                   "them), so the general-domain offline encoder is used")
    else:
        why = "as requested" + (f" ({', '.join(f'{k}={v}' for k, v in sorted(options.items()))})" if options else "")
    d_img, d_txt = features.image.shape[1], features.text.shape[1]
    lines = [f"{dataset.name}: encoder {features.encoder} ({why}); image {d_img}-d, text {d_txt}-d features"]
    for text in (dataset.format_skipped(), dataset.format_leakage()):
        lines += [f"{dataset.name}: {line.strip()}" for line in text.splitlines() if line.strip()]
    return lines


def cell_config(spec: RunSpec, dataset: PairedDataset, features: Features, method: str, bits: int | None, seed: int,
                select: str | None = None) -> dict[str, Any]:
    """The full config of a cell; its hash names the result file.

    ``select``: the protocol the cell's model is selected under and the only one it evaluates
    (:func:`cell_selections`); the config then also holds ``select_per_protocol: True``. ``None``: one model
    evaluated under every protocol of ``spec`` (the config has no ``select_per_protocol`` key, so the cell ids
    of such cells do not depend on this option's existence).
    """
    from benchmarks.evaluation import MetricSpec

    entry = METHODS.get(method)
    config = {
        "method": method,
        "method_class": f"{entry.cls.__module__}.{entry.cls.__qualname__}",
        "method_config": method_config(method, cell_params(spec, method, dataset.name, bits, select)).to_dict(),
        "dataset": dataset.name,
        "dataset_options": dict(sorted(spec.dataset_options.items())),
        "dataset_seed": spec.dataset_seed,
        "label_scheme": dataset.label_scheme,
        "encoder": features.encoder,
        "bits": bits,
        "seed": seed,
        "protocols": [select] if select is not None else list(spec.protocols),
        "tasks": list(spec.tasks),
        "ties": list(spec.ties),
        "metrics": repr(MetricSpec()),
        "split_sizes": dataset.split_sizes(),
        "cell_threads": int(spec.threads),
        "device": spec.device,
    }
    if select is not None:
        config["select_per_protocol"] = True
    return config


def run_cell(spec: RunSpec, dataset: PairedDataset, features: Features, method_name: str, bits: int | None, seed: int, *,
             run_id: str, select: str | None = None) -> list[dict[str, Any]]:
    """Fit one method and return every result row of the cell (accuracy, latency, memory, extras).

    ``select``: see :func:`cell_config`; the accuracy rows then cover that protocol only and every row carries
    ``select_per_protocol: True``. Latency, memory and expert-load rows are written by every cell (they
    measure that cell's model); expert-load rows carry the protocol the model was selected under (``"-"`` for a
    cell evaluating every protocol with one model).
    """
    t_start = time.perf_counter()
    config = cell_config(spec, dataset, features, method_name, bits, seed, select)
    cid = config_hash(config)
    entry = METHODS.get(method_name)
    method = create_method(method_name, cell_params(spec, method_name, dataset.name, bits, select), device=spec.device)
    train = feature_split(dataset, features, "train")
    val = feature_split(dataset, features, "validation")
    query = feature_split(dataset, features, "query")
    db = feature_split(dataset, features, "database")
    method.fit(train, val, bits if bits is not None else 0, seed)
    sizes = dataset.split_sizes()
    info = method.info()
    base = {
        "run_id": run_id,
        "cell_id": cid,
        "method": entry.base or method_name,
        "variant": method_name,
        "method_config": config["method_config"],
        "method_info": {k: v for k, v in info.items() if k != "expert_load"},
        "router_collapse": info.get("router_collapse"),
        "tuning": spec.tuned.get(tuned_key(method_name, dataset.name, bits), {}).get("tuning"),
        "dataset_audit": dataset.audit(first=0),
        "dataset": dataset.name,
        "dataset_options": config["dataset_options"],
        "dataset_seed": spec.dataset_seed,
        "label_scheme": dataset.label_scheme,
        "encoder": features.encoder,
        "bits": bits,
        "seed": seed,
        "n_train": sizes["train"],
        "n_validation": sizes["validation"],
        "n_query": sizes["query"],
        "n_database": sizes["database"],
        "db_includes_train": dataset.db_includes_train,
        "config_hash": cid,
        "select_per_protocol": select is not None,
        "cell_threads": config["cell_threads"],
        "device": config["device"],
        "versions": package_versions(),
        "git_commit": git_commit(),
    }
    rows: list[dict[str, Any]] = []

    def add(**fields: Any) -> None:
        row = {**base, "k": None, "chance": None, "n_queries": None, "n_queries_without_relevant": None}
        row.update(fields)
        rows.append(row)

    folder = export_dir(spec.out, dataset.name, method_name, cid)
    per_query: list[dict[str, Any]] = []
    for protocol in config["protocols"]:
        q_codes, db_codes = encode_split(method, query, protocol), encode_split(method, db, protocol)
        if "codes" in spec.exports and method.binary:
            write_codes(folder, protocol, q_codes, db_codes, query.labels, db.labels)
        for task in spec.tasks:
            qs, ds = TASK_SIDES[task]
            for tie in spec.ties:
                res = evaluate_codes(method, q_codes[qs], db_codes[ds], query.labels, db.labels, tie=tie, shuffle_seed=seed)
                diagnostics = res.diagnostic_fields()  # distinct codes, bit balance, degenerate flag (issue 13.2)
                for mv in res.values:
                    add(protocol=protocol, task=task, metric=mv.metric, k=mv.k, tie=tie, value=float(mv.value),
                        chance=None if mv.chance is None else float(mv.chance), n_queries=res.n_queries,
                        n_queries_without_relevant=res.n_queries_without_relevant, n_database=res.n_database,
                        tie_shuffle_seed=res.shuffle_seed, **diagnostics)
                per_query += [{"protocol": protocol, "task": task, "tie": tie, "metric": metric, "k": k, "values": v}
                              for (metric, k), v in res.per_query.items()]
    if "per-query" in spec.exports:
        write_per_query(folder, per_query)
    if "model" in spec.exports:
        method.save(folder / "model.pt")

    # Latency and memory (evaluation spec, "Latency and memory in every run").
    for task, modality in (("i2t", "image"), ("t2i", "text")):
        add(protocol="unimodal", task=task, metric="encode_ms_per_item", tie=None,
            value=time_encode_one(method, getattr(query, modality), modality))
    q_img = encode_split(method, query, "unimodal")["image"]
    db_txt = encode_split(method, db, "unimodal")["text"]
    real_q, real_db, real_space = real_valued_reference(query, db)
    feat_dim = int(real_db.shape[1])
    from benchmarks.threads import ThreadSettings

    with ThreadSettings(1):
        search_ms = time_search(q_img, db_txt, binary=method.binary)
        real_ms = time_search(real_q, real_db, binary=False)
    code_bytes = (bits + 7) // 8 if method.binary and bits else 4 * int(q_img.shape[1])
    real_extra = {"feature_dim": feat_dim, "real_space": real_space}
    for metric, value, extra in (
        ("search_ms_per_query", search_ms, {"search_k": SEARCH_K, "threads": 1}),
        ("search_ms_per_query_real", real_ms, {"search_k": SEARCH_K, "threads": 1, **real_extra}),
        ("bytes_per_item", float(code_bytes), {}),
        ("bytes_per_item_real", float(4 * feat_dim), real_extra),
    ):
        add(protocol="unimodal", task="i2t", metric=metric, tie=None, value=value, **extra)

    for e, load in enumerate(info.get("expert_load", []) or []):
        # the load of THIS cell's model: tagged with its selection protocol when the method has one cell per protocol
        add(protocol=select or "-", task="-", metric="expert_load", k=e, tie=None, value=float(load))

    wall = time.perf_counter() - t_start
    stamp = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    for row in rows:
        row.setdefault("n_database", sizes["database"])
        row["wall_time_s"] = round(wall, 3)
        row["timestamp"] = stamp
    return rows


