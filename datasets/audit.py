"""A dataset's audit record (skipped items, leakage findings) as a JSON-able dict and as console text.

Backs :meth:`PairedDataset.audit`, :meth:`PairedDataset.format_skipped` and
:meth:`PairedDataset.format_leakage`; the findings themselves are computed by :mod:`medhash_datasets.leakage`.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from medhash_datasets.base import PairedDataset

#: Keys of one skipped-item dict (``PairedDataset.skipped_items``).
SKIPPED_ITEM_KEYS = ("reason", "id", "split", "path", "source", "detail")


def jsonable(value: Any) -> Any:
    """``value`` with paths as ``str``, numpy scalars/arrays as Python numbers/lists, tuples/sets as lists."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _first_per_reason(items: list[dict], first: int) -> list[dict]:
    seen: dict[str, int] = defaultdict(int)
    out = []
    for item in items:
        seen[item["reason"]] += 1
        if seen[item["reason"]] <= first:
            out.append(item)
    return out


def _truncate(findings: Any, first: int) -> Any:
    """Cut every list of dicts in ``findings`` to ``first`` entries; a dict that lost entries gets ``truncated``."""
    if isinstance(findings, dict):
        out = {k: _truncate(v, first) for k, v in findings.items()}
        if any(isinstance(v, list) and len(v) > first and v and isinstance(v[0], dict) for v in findings.values()):
            out["truncated"] = True
        return out
    if isinstance(findings, list) and findings and isinstance(findings[0], dict):
        return [_truncate(v, first) for v in findings[:first]]
    return findings


def audit_dict(dataset: PairedDataset, first: int | None = None) -> dict[str, Any]:
    """See :meth:`PairedDataset.audit`."""
    items = [dict(item) for item in dataset.skipped_items]
    leakage = dataset.leakage
    if first is not None:
        items = _first_per_reason(items, first)
        leakage = _truncate(leakage, first)
    return jsonable({
        "dataset": dataset.name,
        "label_scheme": dataset.label_scheme,
        "n_items": len(dataset),
        "split_sizes": dataset.split_sizes(),
        "skipped": dict(dataset.skipped),
        "skipped_items": items,
        "leakage": leakage,
        "info": {k: v for k, v in dataset.info.items() if k != "source_files"},
    })  # fmt: skip


def describe_item(item: dict) -> str:
    """``"MPX1_c (train, descriptions_train.jsonl:3) /data/images/MPX1_c.png: detail"`` for one skipped item."""
    where = ", ".join(str(item[k]) for k in ("split", "source") if item.get(k))
    text = str(item.get("id") or "?") + (f" ({where})" if where else "")
    if item.get("path"):
        text += f" {item['path']}"
    if item.get("detail"):
        text += f": {item['detail']}"
    return text


def format_skipped(dataset: PairedDataset, first: int | None = 5) -> str:
    """See :meth:`PairedDataset.format_skipped`."""
    if not dataset.skipped:
        return ""
    total = sum(dataset.skipped.values())
    lines = [
        f"skipped {total} source record{'s' if total != 1 else ''}: "
        + ", ".join(f"{k}={v}" for k, v in sorted(dataset.skipped.items()))
    ]
    by_reason: dict[str, list[dict]] = defaultdict(list)
    for item in dataset.skipped_items:
        by_reason[item["reason"]].append(item)
    for reason in sorted(by_reason):
        shown = by_reason[reason] if first is None else by_reason[reason][: max(first, 0)]
        lines += [f"  {reason}: {describe_item(item)}" for item in shown]
        rest = len(by_reason[reason]) - len(shown)
        if rest:
            lines.append(f"  {reason}: ... and {rest} more (all listed by `data info` and in the run record)")
    return "\n".join(lines)


def _case_text(case: dict) -> str:
    parts = "; ".join(f"{s}: {', '.join(ids)}" for s, ids in case["splits"].items())
    moved = f" -> moved to {case['moved_to']}" if "moved_to" in case else ""
    return f"{case['case']} ({parts}){moved}"


def _group_text(group: dict) -> str:
    text = " = ".join(f"{it['id']} ({it['split']})" for it in group["items"])
    return text + (f" -> dropped {', '.join(group['dropped'])}" if group.get("dropped") else "")


def format_leakage(dataset: PairedDataset, first: int | None = 5) -> str:
    """See :meth:`PairedDataset.format_leakage`."""
    leak = dataset.leakage
    if not leak:
        return ""
    lines: list[str] = []

    def examples(entries: list, render) -> None:
        shown = entries if first is None else entries[: max(first, 0)]
        lines.extend(f"    {render(e)}" for e in shown)
        if len(entries) > len(shown):
            lines.append(
                f"    ... and {len(entries) - len(shown)} more (all listed by `data info` and in the run record)"
            )

    cases = leak.get("case_overlap")
    if cases is not None and not cases.get("checked", True):
        lines.append(f"leakage by case: not checked ({cases.get('reason', 'no case ids')})")
    elif cases is not None:
        n = cases["n_cases"]
        lines.append(
            f"leakage by {cases['case_kind']}: {n} with items in two or more splits"
            + (f" [case_overlap={cases['policy']}]" if n else "")
        )
        examples(cases["cases"], _case_text)
    images = leak.get("duplicate_images")
    if images is not None:
        if not images.get("checked"):
            lines.append(f"leakage: byte-identical images across splits not checked ({images.get('reason', 'off')})")
        else:
            n = images["n_groups"]
            compared = images.get("compared")
            how = (
                f"{images['files']} {compared} compared"
                if compared
                else f"{images['files']} image files present, {images['hashed']} hashed: those of a shared size"
            )
            lines.append(
                f"leakage: {n} group{'s' if n != 1 else ''} of byte-identical images across splits ({how})"
                + (f" [duplicate_images={images['policy']}]" if n else "")
            )
            examples(images["groups"], _group_text)
    captions = leak.get("caption_duplicates")
    if captions is not None:
        lines.append(
            f"leakage: {captions['n_query_with_duplicate']} of {captions['n_query']} query texts equal a database "
            f"text ({captions['normalisation']}; reported only)"
        )
        examples(
            captions["items"],
            lambda e: (
                f"{e['query']} = {', '.join(e['database'])}"
                + (f" (+{e['n_database'] - len(e['database'])})" if e["n_database"] > len(e["database"]) else "")
                + (f": {e['text'][:80]!r}" if e.get("text") else "")
            ),
        )
    return "\n".join(lines)
