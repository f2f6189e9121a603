"""Model cards as a person opens them: a version's stored card plus what happened since.

The card in a version (``model_card.html``, written at registration and covered by its
manifest) is never rewritten. :func:`card_page` reads it through the verified path (an edited
card is refused like any other tampered file) and adds the part drawn at view time: the
version's promotions and rollbacks from ``audit.jsonl`` and the monitor's decisions for the
windows it answered (drift share per window). A version registered before cards existed gets
one rendered from its files.

:func:`serve_cards` serves an index of all versions and each card on 127.0.0.1 only, with the
standard library's threaded HTTP server (``raymlops registry card VERSION --serve``).

Example:
    >>> print(card_page(registry, "champion")[:15])  # doctest: +SKIP
    <!doctype html>
"""

from __future__ import annotations

import html
import io
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pandas as pd

from raymlops.errors import RegistryError
from raymlops.monitoring.policy import decisions_folder
from raymlops.registry import Registry
from raymlops.registry.card import (
    CARD_HTML,
    CardData,
    HistoryRow,
    render_history,
    render_html,
)

__all__ = ["card_data", "card_page", "history", "index_page", "serve_cards"]

def card_data(registry: Registry, ref: str) -> CardData:
    """A version's card inputs, every file read through its sha256 check."""
    manifest = registry.manifest(ref)
    version = manifest["version"]
    model_file = (manifest.get("summary") or {}).get("model_file")
    files = {
        name: registry.read_verified(version, name, manifest)
        for name in manifest["files"]
        if name != model_file and name.endswith((".json", ".parquet"))
    }
    data = CardData.from_files(files, name=registry.name, version=version)
    parent = data.lineage.get("parent")
    if parent and parent in registry.versions():
        parent_manifest = registry.manifest(parent)
        if "reference.parquet" in parent_manifest["files"]:
            raw = registry.read_verified(parent, "reference.parquet", parent_manifest)
            data = CardData(**{**data.__dict__, "parent_reference": pd.read_parquet(io.BytesIO(raw))})
    return data


def history(registry: Registry, version: str) -> list[HistoryRow]:
    """Promotions and rollbacks that involved ``version``, and the windows it answered."""
    rows = [
        HistoryRow(
            event.time,
            f"{event.action}: {event.alias} {event.previous or '(none)'} → {event.version}",
            f"{event.actor}: {event.reason}",
        )
        for event in registry.audit()
        if version in (event.version, event.previous)
    ]
    storage = registry.storage
    folder = decisions_folder(registry.name)
    for entry in sorted(storage.list_dir(folder)) if storage.exists(folder) else []:
        decision: Any = storage.read_json(f"{folder}/{entry}")
        if not isinstance(decision, dict) or decision.get("version") != version:
            continue
        drifted = ", ".join(decision.get("drifted_columns") or []) or "none"
        rows.append(
            HistoryRow(
                _when(decision.get("at")),
                f"window {decision.get('window')}",
                f"{decision.get('rows', '?')} rows; drifted: {drifted}"
                + ("; retrain started" if decision.get("retrain") else ""),
                drift_share=float(decision.get("share", 0.0)),
            )
        )
    return rows


def _when(at: Any) -> str:
    import datetime as dt

    if isinstance(at, (int, float)):
        return dt.datetime.fromtimestamp(at, dt.timezone.utc).isoformat(timespec="seconds")
    return str(at or "?")


def card_page(registry: Registry, ref: str) -> str:
    """The stored card (verified) with the view-time history added before ``</body>``."""
    manifest = registry.manifest(ref)
    version = manifest["version"]
    live = render_history(history(registry, version))
    if CARD_HTML in manifest["files"]:
        stored = registry.read_verified(version, CARD_HTML, manifest).decode()
        return stored.replace("</body>", live + "</body>", 1)
    return render_html(card_data(registry, version), history=live)


def index_page(registry: Registry) -> str:
    """Every version with its metric, gate and aliases, linking to its card."""
    rows = []
    for info in reversed(registry.list()):
        summary = info.summary
        score = summary.get("score")
        rows.append(
            f'<tr><td><a href="/{info.version}">{info.version}</a></td>'
            f"<td>{html.escape(', '.join(info.aliases))}</td>"
            f"<td>{html.escape(str(summary.get('model', '')))}</td>"
            f"<td>{html.escape(str(summary.get('metric', '')))}</td>"
            f"<td>{'' if score is None else f'{score:.4f}'}</td>"
            f"<td>{'passed' if summary.get('gate_passed') else 'failed'}</td>"
            f"<td>{html.escape(info.created_at)}</td></tr>"
        )
    title = f"raymlops: {registry.name} versions"
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}"
        "</title><style>body{font:15px system-ui,sans-serif;margin:2rem auto;max-width:60rem}"
        "td,th{border:1px solid #ccd;padding:.2rem .6rem}table{border-collapse:collapse}</style>"
        f"</head><body><h1>{html.escape(title)}</h1><table id=versions><tr><th>version</th>"
        "<th>aliases</th><th>model</th><th>metric</th><th>score</th><th>gate</th>"
        f"<th>created</th></tr>{''.join(rows)}</table></body></html>\n"
    )


def serve_cards(
    registry: Registry,
    *,
    port: int = 0,
    ready: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Serve the index (``/``) and each card (``/vN``, or an alias) on 127.0.0.1 until ``stop``
    is set (or forever). ``ready`` receives the URL once the socket listens."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            path = self.path.split("?", 1)[0].strip("/")
            try:
                body = index_page(registry) if not path else card_page(registry, path)
                status = 200
            except RegistryError as exc:
                body, status = f"<!doctype html><p>{html.escape(str(exc))}</p>", 404
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            return  # the CLI prints the URL; request lines would bury it

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    if ready is not None:
        ready(url)
    if stop is None:
        server.serve_forever()
        return
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    stop.wait()
    server.shutdown()
    server.server_close()
