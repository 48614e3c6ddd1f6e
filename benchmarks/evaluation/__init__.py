"""Hamming retrieval evaluator: codes, counting-sort ranking, metrics and ``.mat``/``.npz`` code files.

Modules, in the order data flows through them (see ``../shared/spec/evaluation.md`` and ``DEVELOPERS.md``)::

    convention   binarize, binarize_together, CONVENTIONS       one binary convention per set of matrices
    codes        pack_bits, unpack_bits, hamming_distances      packing (faiss layout), popcount kernel
    diagnostics  code_diagnostics, diagnostic_fields            distinct codes, bit balance, degenerate flag
    ranking      counting sort over distance buckets, query chunks under a memory budget
    tie_aware    tie_aware_ap_sum and hypergeometric helpers    exact expectations over tie orders
    per_query    per-chunk metric values and their accumulation
    result       MetricSpec, MetricValue, RetrievalResult
    metrics      evaluate_hamming, evaluate_scores              metric definitions, the two evaluators
    code_io      reading .npz / .mat (v5/v7, v7.3 HDF5), atomic writing
    codefile     load_code_file, evaluate_code_file, write_code_file, TASKS

The public names are re-exported here.
"""

from benchmarks.evaluation.codefile import (
    CODE_KEYS,
    TASKS,
    CodeFile,
    evaluate_code_file,
    load_code_file,
    write_code_file,
)
from benchmarks.evaluation.codes import code_bytes, hamming_distances, pack_bits, packed_words, unpack_bits
from benchmarks.evaluation.convention import CONVENTIONS, binarize, binarize_together
from benchmarks.evaluation.diagnostics import DIAGNOSTIC_FIELDS, code_diagnostics, diagnostic_fields
from benchmarks.evaluation.metrics import evaluate_hamming, evaluate_scores
from benchmarks.evaluation.result import DEFAULT_P_AT_N, TIES, MetricSpec, MetricValue, RetrievalResult
from benchmarks.evaluation.tie_aware import tie_aware_ap_sum

__all__ = [
    "CODE_KEYS",
    "CONVENTIONS",
    "DEFAULT_P_AT_N",
    "DIAGNOSTIC_FIELDS",
    "TASKS",
    "TIES",
    "CodeFile",
    "MetricSpec",
    "MetricValue",
    "RetrievalResult",
    "binarize",
    "binarize_together",
    "code_bytes",
    "code_diagnostics",
    "diagnostic_fields",
    "evaluate_code_file",
    "evaluate_hamming",
    "evaluate_scores",
    "hamming_distances",
    "load_code_file",
    "pack_bits",
    "packed_words",
    "tie_aware_ap_sum",
    "unpack_bits",
    "write_code_file",
]
