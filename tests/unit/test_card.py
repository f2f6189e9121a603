"""Model cards (raymlops.registry.card): what a version holds, rendered for a person, offline."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from raymlops.registry.card import CardData, HistoryRow, render_card, render_history


def card_data(**overrides) -> CardData:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    reference = pd.DataFrame(
        {"tenure": rng.normal(10, 2, 300), "plan": rng.choice(["basic", "pro"], 300)}
    )
    parent = pd.DataFrame(
        {"tenure": rng.normal(14, 2, 300), "plan": rng.choice(["basic", "pro"], 300)}
    )
    base = {
        "name": "churn",
        "version": "v2",
        "metrics": {
            "metric": "roc_auc",
            "holdout": {"roc_auc": 0.8731, "log_loss": 0.41},
            "champion": {"version": "v1", "holdout": {"roc_auc": 0.8512, "log_loss": 0.44}},
        },
        "gate": {"passed": True, "reasons": ["roc_auc 0.8731 >= champion 0.8512 + 0"]},
        "lineage": {
            "created_at": "2026-11-29T04:00:00+00:00",
            "data": {
                "source": "./data/train.csv",
                "files": ["train.csv"],
                "digest": "ab" * 32,
                "rows": {"total": 1000, "train": 800, "holdout": 200},
            },
            "seeds": {"split": 42, "search": 42, "trial": 7},
            "trial": {"model": "xgboost", "index": 3, "params": {"eta": 0.1}, "validation_score": 0.86},
            "parent": "v1",
            "packages": {"xgboost": "3.2.0", "ray": "2.60.0"},
            "config": {
                "training": {"models": ["xgboost"], "resources_per_trial": {"cpu": 1, "gpu": 0}},
                "card": {
                    "description": "Churn risk <script>alert(1)</script> per customer",
                    "intended_use": "rank customers for retention calls",
                    "owners": ["growth-ml@example.com"],
                },
            },
            "retrain": {"trigger_window": 12, "trigger_report": "reports/churn/window-000012.html"},
        },
        "trials": [{"index": i} for i in range(4)],
        "features": {"feature_names": ["tenure", "plan=basic", "plan=pro"]},
        "schema": {
            "columns": {
                "tenure": {"type": "float"},
                "plan": {"type": "category"},
                "churned": {"type": "category", "role": "target"},
            }
        },
        "checks": {
            "rows": 1000,
            "blocked": False,
            "findings": [
                {"check": "duplicates", "severity": "warn", "message": "3 of 1000 rows repeat", "column": None},
                {"check": "leakage", "severity": "ok", "message": "fine", "column": "tenure"},
            ],
        },
        "reference": reference,
        "parent_reference": parent,
    }
    base.update(overrides)
    return CardData(**base)


def test_markdown_card_holds_metrics_next_to_the_champion_and_the_why() -> None:
    md, _ = render_card(card_data())
    assert md.startswith("# Model card: churn v2")
    assert "| roc_auc | 0.8731 | 0.8512 |" in md
    assert "The gate **passed**" in md
    assert "rank customers for retention calls" in md
    assert "growth-ml@example.com" in md
    assert "800 train, 200 holdout (split seed 42)" in md
    assert "**warn** duplicates: 3 of 1000 rows repeat" in md
    assert "window 12" in md
    assert "xgboost trial #3" in md


def test_html_card_is_standalone_escaped_and_has_its_plots() -> None:
    _, page = render_card(card_data())
    # offline: no script, no stylesheet or image from elsewhere
    assert "<script" not in page
    assert not re.search(r"""(src|href)=["']?https?:""", page)
    assert "&lt;script&gt;" in page  # the description is text, not markup
    assert 'id="metric-plot"' in page
    assert page.count("<svg") == 1 + 2  # metrics + one plot per feature
    assert "blue: this version's reference sample; orange: the parent's" in page
    assert '<td data-key="roc_auc">0.8731</td>' in page


def test_a_first_version_card_says_so_and_still_renders() -> None:
    data = card_data(
        metrics={"metric": "rmse", "holdout": {"rmse": 1.5}, "champion": {"version": None, "holdout": None}},
        gate={"passed": True, "reasons": ["no champion yet: the first model becomes champion"]},
        lineage={},
        checks=None,
        parent_reference=None,
    )
    md, page = render_card(data)
    assert "none (first version)" in md
    assert "_No description: add `card.description` to the config._" in md
    assert "Dataset checks" not in md
    assert "(this version's reference sample)" in page


def test_history_is_drawn_at_view_time_with_the_drift_plot() -> None:
    part = render_history(
        [
            HistoryRow("2026-11-29T05:00", "promoted to champion", "by ci@host"),
            HistoryRow("2026-11-29T06:00", "window 1", "no drift", drift_share=0.1),
            HistoryRow("2026-11-29T06:10", "window 2", "drift", drift_share=0.7),
        ]
    )
    assert 'id="drift-plot"' in part
    assert part.count("<tr>") == 4
    assert "No promotion" in render_history([])
