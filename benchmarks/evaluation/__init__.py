"""Hamming retrieval evaluator: codes, counting-sort ranking, metrics and ``.mat``/``.npz`` code files.

Public API (see ``../shared/spec/evaluation.md`` and ``DEVELOPERS.md``)::

    binarize, pack_bits, unpack_bits, hamming_distances         # benchmarks.evaluation.codes
    MetricSpec, MetricValue, RetrievalResult                     # benchmarks.evaluation.metrics
    evaluate_hamming, evaluate_scores
    load_code_file, evaluate_code_file, TASKS                    # benchmarks.evaluation.codefile
"""

from benchmarks.evaluation.codefile import TASKS, CodeFile, evaluate_code_file, load_code_file
from benchmarks.evaluation.codes import binarize, code_bytes, hamming_distances, pack_bits, packed_words, unpack_bits
from benchmarks.evaluation.metrics import (
    DEFAULT_P_AT_N,
    TIES,
    MetricSpec,
    MetricValue,
    RetrievalResult,
    evaluate_hamming,
    evaluate_scores,
    tie_aware_ap_sum,
)

__all__ = [
    "DEFAULT_P_AT_N",
    "TASKS",
    "TIES",
    "CodeFile",
    "MetricSpec",
    "MetricValue",
    "RetrievalResult",
    "binarize",
    "code_bytes",
    "evaluate_code_file",
    "evaluate_hamming",
    "evaluate_scores",
    "hamming_distances",
    "load_code_file",
    "pack_bits",
    "packed_words",
    "tie_aware_ap_sum",
    "unpack_bits",
]
