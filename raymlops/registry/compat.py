"""Whether two versions take the same requests (pure; no Ray, no storage).

Serving builds its HTTP request model (and so ``/openapi.json``) once, from the version it was
deployed with. A promotion that changes what a request may carry (a column added, removed,
retyped, re-bounded, a category list changed, ``extra``) would make serving refuse every
request (422) or accept rows the new model cannot read. :func:`input_schema_change` says what
changed between two versions' ``schema.json``; the registry refuses such a promotion (unless
allowed, then serving must be deployed again), and a serving replica can refuse such a swap.

Example:
    >>> input_schema_change(old_schema_json, new_schema_json)  # doctest: +SKIP
    "column 'plan': categories ['basic', 'pro'] -> ['basic', 'pro', 'team']"
"""

from __future__ import annotations

from typing import Any

from raymlops.config import ColumnSpec

__all__ = ["input_schema_change"]

# what a column's spec says about a request; a description is documentation only
_DOCS_ONLY = frozenset({"description"})


def _inputs(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The request-relevant spec of every input column (not the target), defaults filled in."""
    target = schema.get("target")
    out = {}
    for name, spec in (schema.get("columns") or {}).items():
        if name == target:
            continue
        try:
            full = ColumnSpec.model_validate(spec).model_dump(mode="json")
        except (ValueError, TypeError):  # an unreadable spec compares as written
            full = dict(spec) if isinstance(spec, dict) else {"spec": spec}
        out[name] = {k: v for k, v in full.items() if k not in _DOCS_ONLY}
    return out


def input_schema_change(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """What a request to ``new`` must carry that differs from ``old``, or None if nothing.

    Both are ``schema.json`` payloads (:meth:`raymlops.schema.Schema.to_dict`). Compared:
    the input columns (every column but the target) and, per column, its type, nullability,
    bounds, categories, unknown-category rule, role and format; and the ``extra`` rule.
    Column order and descriptions do not count.
    """
    before, after = _inputs(old), _inputs(new)
    changes = [f"new column {c!r} ({after[c]['type']})" for c in after if c not in before]
    changes += [f"column {c!r} removed" for c in before if c not in after]
    for column in (c for c in before if c in after):
        for key in sorted(set(before[column]) | set(after[column])):
            was, now = before[column].get(key), after[column].get(key)
            if was != now:
                changes.append(f"column {column!r}: {key} {was!r} -> {now!r}")
    was_extra, now_extra = old.get("extra", "error"), new.get("extra", "error")
    if was_extra != now_extra:
        changes.append(f"extra columns: {was_extra!r} -> {now_extra!r}")
    return "; ".join(changes) or None
