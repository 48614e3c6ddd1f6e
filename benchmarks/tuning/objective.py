"""The real tuning objective: fit a method on the train split and score it on the validation split.

The score is ``benchmarks.cell.validation_score`` (the harness evaluator, tie-aware mAP, mean of i2t and
t2i, validation queries against the train database); the query split is never seen while tuning.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.tuning.study import TuneSpec, score_subruns

#: The last (key, (dataset, features)) prepared in this process: a grid of studies on one dataset
#: (:func:`benchmarks.tuning.grid.tune_grid`) loads the dataset and its cached features once.
_PREPARED: list[tuple[tuple[Any, ...], Any]] = []


def _prepare(spec: TuneSpec) -> Any:
    from benchmarks.cell import prepare_features

    key = (spec.dataset, spec.data_root, spec.encoder, tuple(sorted((spec.encoder_options or {}).items())),
           spec.device, tuple(sorted((spec.dataset_options or {}).items())), spec.cache_dir, spec.label_scheme,
           int(spec.dataset_seed))
    for cached_key, value in _PREPARED:
        if cached_key == key:
            return value
    value = prepare_features(
        spec.dataset,
        data_root=Path(spec.data_root) if spec.data_root else None,
        encoder=spec.encoder,
        device=spec.device,
        dataset_options=spec.dataset_options or None,
        cache_dir=Path(spec.cache_dir) if spec.cache_dir else None,
        label_scheme=spec.label_scheme,
        dataset_seed=int(spec.dataset_seed),
        progress=False,
        encoder_options=dict(spec.encoder_options) or None,
    )
    _PREPARED[:] = [(key, value)]
    return value


def validation_objective(spec: TuneSpec) -> Callable[[Any], float]:
    """Build the objective: fit ``spec.method`` on train and score it on validation, once per tuning seed.

    Features are prepared once per worker process (``benchmarks.cell.prepare_features``, cached on disk
    and, for consecutive studies on the same data, in memory); every trial builds the method from its search
    space (``methods.variant_search_space``) with ``methods.create_method`` and scores it with
    ``benchmarks.cell.validation_score`` (labels of the validation and train splits only), with ``spec.threads``
    CPU threads when set. A method that selects its epoch under a protocol (``selects_under_protocol``) selects
    under ``spec.protocol``, the protocol the study scores.

    Returns
    -------
    callable
        ``objective(trial) -> float``, the mean validation mAP over ``spec.seeds`` (pruned between seeds).
        Its ``settings`` attribute holds ``{"features_encoder": name}``, the encoder the features came from
        (``auto`` resolved), which the worker records on (or checks against) the study.
    """
    import torch

    from benchmarks.cell import validation_score
    from benchmarks.threads import ThreadSettings
    from medhash_datasets.base import feature_split
    from methods import METHODS, create_method, variant_search_space

    dataset, features = _prepare(spec)
    train = feature_split(dataset, features, "train")
    validation = feature_split(dataset, features, "validation")

    # a method selecting its epoch under a protocol selects under the protocol the study scores (as run does)
    selection = {"select_protocol": spec.protocol} if METHODS.get(spec.method).cls.selects_under_protocol else {}

    def objective(trial: Any) -> float:
        params = variant_search_space(spec.method, trial)
        trial.set_user_attr("config", params)
        # float reductions (hence a score, in the 4th digit on MedPix) depend on the thread count: record it once
        trial.set_user_attr("threads", int(spec.threads) if spec.threads else torch.get_num_threads())

        def subrun(seed: int) -> float:
            with ThreadSettings(int(spec.threads)) if spec.threads else contextlib.nullcontext():
                method = create_method(spec.method, {**params, **selection}, device=spec.device)
                method.fit(train, validation, int(spec.bits), int(seed))
                return validation_score(method, dataset, features, protocol=spec.protocol)

        return score_subruns(trial, [lambda s=s: subrun(s) for s in spec.seeds])

    objective.settings = {"features_encoder": features.encoder}  # type: ignore[attr-defined]
    return objective


__all__ = ["validation_objective"]
