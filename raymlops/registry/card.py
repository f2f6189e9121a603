"""The model card of a version: what it was trained on, how good it is, why it was promoted.

:func:`render_card` turns a version's own records (metrics, gate decision, lineage, trials,
features, schema, dataset checks, and the optional ``card:`` section of the config kept in
lineage) into ``model_card.md`` and a standalone ``model_card.html``: inline CSS and SVG plots,
no script and no CDN, so it opens offline. Both files are written into the version at
registration and listed in its manifest, so an edited card fails ``registry verify``.

What happened to the version *after* training (promotions, rollbacks, drift per window) is
never written into it: :func:`render_history` draws that part at view time, from the audit
log and the monitor's decisions, for ``raymlops registry card --serve``.

Pure: no Ray, no storage; the caller reads the files.

Example:
    >>> md, html = render_card(CardData.from_files(files, version="v3", name="churn"))  # doctest: +SKIP
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["CARD_HTML", "CARD_MD", "CardData", "HistoryRow", "render_card", "render_history"]

CARD_MD = "model_card.md"
CARD_HTML = "model_card.html"
#: at most this many features get a distribution plot (the card stays one page to scroll)
_MAX_PLOTS = 12


@dataclass(frozen=True)
class CardData:
    """Everything a card shows, read from the version's files (and its parent's reference)."""

    name: str
    version: str
    metrics: Mapping[str, Any]
    gate: Mapping[str, Any]
    lineage: Mapping[str, Any]
    trials: Sequence[Mapping[str, Any]] = ()
    features: Mapping[str, Any] = field(default_factory=dict)
    schema: Mapping[str, Any] = field(default_factory=dict)
    checks: Mapping[str, Any] | None = None
    reference: pd.DataFrame | None = None
    parent_reference: pd.DataFrame | None = None

    @classmethod
    def from_files(
        cls,
        files: Mapping[str, bytes],
        *,
        name: str,
        version: str,
        parent_reference: pd.DataFrame | None = None,
    ) -> CardData:
        """From a version's files by name (JSON files parsed; reference.parquet read)."""
        import io

        def load(filename: str, default: Any) -> Any:
            data = files.get(filename)
            return json.loads(data) if data else default

        reference = None
        if files.get("reference.parquet"):
            reference = pd.read_parquet(io.BytesIO(files["reference.parquet"]))
        return cls(
            name=name,
            version=version,
            metrics=load("metrics.json", {}),
            gate=load("gate.json", {}),
            lineage=load("lineage.json", {}),
            trials=load("trials.json", []),
            features=load("features.json", {}),
            schema=load("schema.json", {}),
            checks=load("checks.json", None),
            reference=reference,
            parent_reference=parent_reference,
        )

    @property
    def card_config(self) -> Mapping[str, Any]:
        return (self.lineage.get("config") or {}).get("card") or {}


@dataclass(frozen=True)
class HistoryRow:
    """One event after training: a promotion, a rollback, or a monitored window."""

    when: str
    what: str
    detail: str = ""
    drift_share: float | None = None


# -- markdown -------------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if value is None:
        return "-"
    return str(value)


def _metric_rows(data: CardData) -> list[tuple[str, Any, Any]]:
    holdout = data.metrics.get("holdout") or {}
    champion = (data.metrics.get("champion") or {}).get("holdout") or {}
    return [(k, holdout[k], champion.get(k)) for k in holdout]


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_fmt(v).replace("|", "\\|") for v in row) + " |" for row in rows]
    return out


def _sections(data: CardData) -> list[tuple[str, list[str]]]:
    """The card as (title, markdown lines) sections, shared by the .md and the .html."""
    card, lineage = data.card_config, data.lineage
    source = lineage.get("data") or {}
    rows = source.get("rows") or {}
    champion = (data.metrics.get("champion") or {}).get("version")
    out: list[tuple[str, list[str]]] = []
    use = [
        card.get("description") or "_No description: add `card.description` to the config._",
        "",
        f"- **Intended use:** {card.get('intended_use') or 'not stated (`card.intended_use`)'}",
        f"- **Owners:** {', '.join(card.get('owners') or []) or 'not stated (`card.owners`)'}",
    ]
    if card.get("limitations"):
        use.append(f"- **Limitations:** {card['limitations']}")
    out.append(("Intended use", use))
    metric = data.metrics.get("metric", "")
    out.append(
        (
            "Holdout metrics",
            [
                f"Main metric: `{metric}`. Both models scored on this version's holdout "
                f"({rows.get('holdout', '?')} rows); champion at training time: "
                f"{champion or 'none'}.",
                "",
                *_md_table(["metric", data.version, f"champion {champion or '-'}"], _metric_rows(data)),
            ],
        )
    )
    gate = data.gate
    verdict = "passed" if gate.get("passed") else "failed"
    out.append(
        ("Gate", [f"The gate **{verdict}**:", "", *[f"- {r}" for r in gate.get("reasons") or []]])
    )
    data_lines = [
        f"- **Source:** `{source.get('source', '?')}` ({len(source.get('files') or [])} file(s))",
        f"- **Content digest (sha256):** `{source.get('digest', '?')}`",
        f"- **Rows:** {rows.get('total', '?')} total, {rows.get('train', '?')} train, "
        f"{rows.get('holdout', '?')} holdout (split seed {(lineage.get('seeds') or {}).get('split', '?')})",
    ]
    columns = (data.schema.get("columns") or {}) if data.schema else {}
    if columns:
        data_lines += ["", *_md_table(["column", "type", "role", "nullable"], _column_rows(columns))]
    out.append(("Data", data_lines))
    if data.checks is not None:
        findings = [f for f in data.checks.get("findings", []) if f.get("severity") != "ok"]
        passed = sum(1 for f in data.checks.get("findings", []) if f.get("severity") == "ok")
        lines = [f"{passed} check(s) passed."]
        lines += [
            f"- **{f['severity']}** {f['check']}"
            + (f" (`{f['column']}`)" if f.get("column") else "")
            + f": {f['message']}"
            for f in findings
        ]
        out.append(("Dataset checks", lines))
    names = data.features.get("feature_names") or []
    out.append(
        (
            "Features",
            [f"{len(names)} model inputs: " + ", ".join(f"`{n}`" for n in names[:60])
             + (" …" if len(names) > 60 else "")],
        )
    )
    trial = lineage.get("trial") or {}
    params = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted((trial.get("params") or {}).items()))
    seeds = lineage.get("seeds") or {}
    config = (lineage.get("config") or {}).get("training") or {}
    out.append(
        (
            "Training",
            [
                f"- **Trials:** {len(data.trials)} ({', '.join(config.get('models') or [])})",
                f"- **Best:** {trial.get('model', '?')} trial #{trial.get('index', '?')}, "
                f"validation {_fmt(trial.get('validation_score'))}",
                f"- **Parameters:** {params or '-'}",
                "- **Seeds:** " + ", ".join(f"{k} {v}" for k, v in seeds.items()),
                f"- **Resources per trial:** {config.get('resources_per_trial', '-')}",
                f"- **Nodes:** {len((lineage.get('ray') or {}).get('nodes') or [])}",
            ],
        )
    )
    lineage_lines = [
        f"- **Parent:** {lineage.get('parent') or 'none (first version)'}",
        f"- **Created:** {lineage.get('created_at', '?')}",
        f"- **Code:** {_fmt((lineage.get('code') or {}).get('git_commit'))}"
        + (" (dirty tree)" if (lineage.get("code") or {}).get("git_dirty") else ""),
    ]
    retrain = lineage.get("retrain") or {}
    if retrain:
        lineage_lines.append(
            f"- **Retrained after drift:** window {retrain.get('trigger_window', '?')}, "
            f"report `{retrain.get('trigger_report') or '?'}`"
        )
    out.append(("Lineage", lineage_lines))
    packages = lineage.get("packages") or {}
    out.append(("Packages", [", ".join(f"{k} {v}" for k, v in sorted(packages.items())) or "-"]))
    return out


def _column_rows(columns: Mapping[str, Any]) -> list[list[Any]]:
    return [
        [name, spec.get("type"), spec.get("role") or "feature", bool(spec.get("nullable"))]
        for name, spec in columns.items()
    ]


def render_markdown(data: CardData) -> str:
    lines = [f"# Model card: {data.name} {data.version}", ""]
    for title, body in _sections(data):
        lines += [f"## {title}", "", *body, ""]
    return "\n".join(lines)


# -- HTML with inline SVG -------------------------------------------------------------------------

_CSS = """
body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:60rem;color:#1d2330}
h1{font-size:1.6rem}h2{font-size:1.2rem;border-bottom:1px solid #dde;padding-bottom:.2rem}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccd;padding:.2rem .6rem}
th{background:#f3f4f8}code{background:#f3f4f8;padding:0 .2rem}.block{color:#b00020}
.warn{color:#a15c00}.plots{display:flex;flex-wrap:wrap;gap:1rem}figure{margin:0}
figcaption{font-size:.85rem;color:#555}.pass{color:#1b7f3b}.fail{color:#b00020}
"""


def _svg_bars(groups: Sequence[str], series: Mapping[str, Sequence[float | None]]) -> str:
    """Grouped bars, one group per metric, one bar per series (version)."""
    colors = ["#3465a4", "#999999", "#c17d11"]
    width, height, pad = 120 * max(len(groups), 1) + 40, 200, 30
    values = [v for vs in series.values() for v in vs if v is not None and np.isfinite(v)]
    top = max(values + [1e-9])
    slot = (width - 40) / max(len(groups), 1)
    bar = slot * 0.7 / max(len(series), 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + pad}" role="img">']
    for i, group in enumerate(groups):
        x0 = 30 + i * slot
        for j, (label, vs) in enumerate(series.items()):
            v = vs[i]
            if v is None or not np.isfinite(v):
                continue
            h = (height - 34) * v / top
            x = x0 + j * bar
            parts.append(
                f'<rect x="{x:.1f}" y="{height - h:.1f}" width="{bar - 2:.1f}" height="{h:.1f}" '
                f'fill="{colors[j % 3]}"><title>{html.escape(label)} {group}: {v:.4f}</title></rect>'
            )
            parts.append(
                f'<text x="{x + bar / 2:.1f}" y="{height - h - 3:.1f}" font-size="10" '
                f'text-anchor="middle">{v:.3f}</text>'
            )
        parts.append(
            f'<text x="{x0 + slot * 0.35:.1f}" y="{height + 15}" font-size="12" '
            f'text-anchor="middle">{html.escape(group)}</text>'
        )
    for j, label in enumerate(series):
        parts.append(
            f'<rect x="{30 + j * 110}" y="2" width="10" height="10" fill="{colors[j % 3]}"/>'
            f'<text x="{44 + j * 110}" y="11" font-size="11">{html.escape(label)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _svg_distribution(column: pd.Series, other: pd.Series | None, numeric: bool) -> str:
    """This version's reference against the parent's: histogram steps or category shares."""
    width, height = 260, 120
    if numeric:
        values = pd.to_numeric(column, errors="coerce").dropna().to_numpy(dtype=float)
        others = (
            pd.to_numeric(other, errors="coerce").dropna().to_numpy(dtype=float)
            if other is not None
            else np.array([])
        )
        both = np.concatenate([values, others])
        if both.size == 0:
            return ""
        edges = np.histogram_bin_edges(both, bins=20)
        shares = [np.histogram(v, bins=edges)[0] / max(v.size, 1) for v in (values, others)]
        labels: list[str] = [f"{edges[0]:.3g}", f"{edges[-1]:.3g}"]
    else:
        counts = column.astype("string").fillna("∅").value_counts(normalize=True)
        prev = (
            other.astype("string").fillna("∅").value_counts(normalize=True)
            if other is not None
            else pd.Series(dtype=float)
        )
        cats = list(counts.index[:10])
        shares = [counts.reindex(cats).fillna(0).to_numpy(), prev.reindex(cats).fillna(0).to_numpy()]
        labels = [str(cats[0]) if cats else "", str(cats[-1]) if cats else ""]
    top = max(float(np.max(s)) if len(s) else 0 for s in shares) or 1.0
    n = len(shares[0])
    step = (width - 20) / max(n, 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 16}">']
    for k, color in ((0, "#3465a4"), (1, "#c17d11")):
        if k == 1 and (other is None or not len(shares[1]) or not np.any(shares[1])):
            continue
        for i, share in enumerate(shares[k]):
            h = (height - 10) * float(share) / top
            x = 10 + i * step + (k * step * 0.45)
            parts.append(
                f'<rect x="{x:.1f}" y="{height - h:.1f}" width="{step * 0.45:.1f}" '
                f'height="{h:.1f}" fill="{color}" opacity="0.85"/>'
            )
    parts.append(
        f'<text x="10" y="{height + 13}" font-size="10">{html.escape(labels[0][:18])}</text>'
        f'<text x="{width - 10}" y="{height + 13}" font-size="10" text-anchor="end">'
        f"{html.escape(labels[1][:18])}</text></svg>"
    )
    return "".join(parts)


def _md_to_html(lines: Sequence[str]) -> str:
    """The small markdown subset the sections use: tables, bullets, bold, code, paragraphs."""
    import re

    def inline(text: str) -> str:
        text = html.escape(text)
        text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
        text = re.sub(r"`(.+?)`", r"<code>\1</code>", text)
        return re.sub(r"_(.+?)_", r"<em>\1</em>", text) if text.startswith("_") else text

    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("| "):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                if not lines[i].startswith("|---"):
                    rows.append([c.strip() for c in lines[i].strip("|").split(" | ")])
                i += 1
            head, *body = rows
            out.append("<table><tr>" + "".join(f"<th>{inline(c)}</th>" for c in head) + "</tr>")
            for row in body:
                cells = "".join(
                    f'<td data-key="{html.escape(row[0])}">{inline(c)}</td>' for c in row
                )
                out.append(f"<tr>{cells}</tr>")
            out.append("</table>")
            continue
        if line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                text = inline(lines[i][2:])
                kind = "block" if "<strong>block</strong>" in text else (
                    "warn" if "<strong>warn</strong>" in text else ""
                )
                items.append(f'<li class="{kind}">{text}</li>' if kind else f"<li>{text}</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
            continue
        if line.strip():
            out.append(f"<p>{inline(line)}</p>")
        i += 1
    return "\n".join(out)


def _plots(data: CardData) -> str:
    rows = _metric_rows(data)
    champion = (data.metrics.get("champion") or {}).get("version")
    parts = []
    if rows:
        series: dict[str, list[float | None]] = {data.version: [r[1] for r in rows]}
        if any(r[2] is not None for r in rows):
            series[f"champion {champion}"] = [r[2] for r in rows]
        parts.append(
            '<figure id="metric-plot">'
            + _svg_bars([r[0] for r in rows], series)
            + "<figcaption>Holdout metrics, this version against the champion at training "
            "time (same holdout)</figcaption></figure>"
        )
    columns = (data.schema.get("columns") or {}) if data.schema else {}
    if data.reference is not None and columns:
        figures = []
        features = [
            c
            for c, spec in columns.items()
            if (spec.get("role") or "feature") == "feature" and c in data.reference
        ][:_MAX_PLOTS]
        for column in features:
            numeric = columns[column].get("type") in ("float", "int")
            other = (
                data.parent_reference[column]
                if data.parent_reference is not None and column in data.parent_reference
                else None
            )
            svg = _svg_distribution(data.reference[column], other, numeric)
            if svg:
                figures.append(
                    f"<figure>{svg}<figcaption><code>{html.escape(column)}</code></figcaption></figure>"
                )
        legend = (
            " (blue: this version's reference sample; orange: the parent's)"
            if data.parent_reference is not None
            else " (this version's reference sample)"
        )
        parts.append(
            f'<h2>Feature distributions</h2><p>Training rows kept as the drift reference{legend}.</p>'
            f'<div class="plots" id="feature-plots">{"".join(figures)}</div>'
        )
    return "\n".join(parts)


def render_html(data: CardData, *, history: str = "") -> str:
    """The standalone page; ``history`` is the view-time part (never stored in the version)."""
    gate = "pass" if data.gate.get("passed") else "fail"
    body = []
    for title, lines in _sections(data):
        body.append(f"<h2>{html.escape(title)}</h2>\n{_md_to_html(lines)}")
        if title == "Holdout metrics":
            body.append(_plots(data))
    title = f"Model card: {data.name} {data.version}"
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f'<h1>{html.escape(title)} <span class="{gate}" id="gate">gate {gate}ed</span></h1>'
        + "\n".join(body)
        + history
        + "</body></html>\n"
    )


def render_card(data: CardData) -> tuple[str, str]:
    """(model_card.md, model_card.html) of a version, as written at registration."""
    return render_markdown(data), render_html(data)


def render_history(rows: Sequence[HistoryRow]) -> str:
    """The view-time part: promotions, rollbacks and drift share per monitored window."""
    if not rows:
        return "<h2>Since training</h2><p>No promotion, rollback or monitored window yet.</p>"
    drift = [r for r in rows if r.drift_share is not None]
    plot = ""
    if drift:
        plot = (
            '<figure id="drift-plot">'
            + _svg_bars([r.what for r in drift], {"drift share": [r.drift_share for r in drift]})
            + "<figcaption>Share of drifted columns per monitored window</figcaption></figure>"
        )
    table = "".join(
        f"<tr><td>{html.escape(r.when)}</td><td>{html.escape(r.what)}</td>"
        f"<td>{html.escape(r.detail)}</td></tr>"
        for r in rows
    )
    return (
        "<h2>Since training</h2><p>Drawn when this page was served, from the audit log and the "
        f"monitor's decisions.</p>{plot}<table id=history><tr><th>when</th><th>what</th>"
        f"<th>detail</th></tr>{table}</table>"
    )
