"""Dataset checks and model cards through the CLI, on a dataset the project has never seen
(loan applications, generated here): overlap and a leaked feature are blocked with nothing
registered; a clean dataset registers versions whose cards open in a real browser."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.helpers import wait_for_condition

RAYMLOPS = shutil.which("raymlops", path=str(Path(sys.executable).parent)) or "raymlops"
CHROMIUM = shutil.which("chromium")


def loans(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    income = rng.lognormal(10.5, 0.4, rows)
    amount = rng.uniform(1_000, 40_000, rows)
    years = rng.integers(0, 30, rows)
    purpose = rng.choice(["car", "home", "study", "other"], rows)
    risk = amount / income - 0.05 * years + (purpose == "other") * 0.3
    default = np.where(risk + rng.normal(0, 0.35, rows) > 0.1, "default", "repaid")
    return pd.DataFrame(
        {
            "application": [f"a{seed}-{i}" for i in range(rows)],
            "income": income.round(2),
            "amount": amount.round(2),
            "years_employed": years,
            "purpose": purpose,
            "applied_at": pd.Timestamp("2025-01-01")
            + pd.to_timedelta(rng.integers(0, 365 * 24, rows), unit="h"),
            "outcome": default,
        }
    )


def project(root: Path, frame: pd.DataFrame, split: str = "{by: row}") -> Path:
    (root / "data").mkdir(parents=True)
    frame.to_csv(root / "data" / "loans.csv", index=False)
    config = root / "loans.yaml"
    config.write_text(
        textwrap.dedent(
            """\
            name: loans
            storage: ./store
            data:
              source: ./data/loans.csv
              target: outcome
              columns:
                application:    {type: string, role: id}
                income:         {type: float, min: 0}
                amount:         {type: float, min: 0}
                years_employed: {type: int, min: 0}
                purpose:        {type: category}
                applied_at:     {type: datetime, role: timestamp}
                outcome:        {type: category, categories: [default, repaid]}
              split: SPLIT
              reference_rows: 500
            training:
              task: classification
              models: [xgboost]
              search: {num_samples: 2, max_concurrent: 2, max_boosting_rounds: 20}
            card:
              description: Probability that a loan application defaults.
              intended_use: Rank applications for manual review; not for automatic refusal.
              owners: [credit-risk@example.com]
            """
        ).replace("SPLIT", split)
    )
    return config


def raymlops(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "160", "RAY_ADDRESS": "", "NO_COLOR": "1"}
    return subprocess.run(
        [RAYMLOPS, *args], cwd=cwd, capture_output=True, text=True, timeout=600, env=env
    )


def versions(root: Path) -> list[str]:
    folder = root / "store" / "models" / "loans" / "versions"
    return sorted(p.name for p in folder.glob("v*")) if folder.exists() else []


@pytest.mark.slow
def test_train_holdout_overlap_is_blocked_and_nothing_registered(tmp_path: Path) -> None:
    clean = loans(1500, seed=1)
    # the same applications twice: their copies land on both sides of the split
    leaky = pd.concat([clean, clean.iloc[:600]], ignore_index=True)
    config = project(tmp_path, leaky)
    done = raymlops("train", "--config", str(config), cwd=tmp_path)
    assert done.returncode == 3, done.stdout[-2000:] + done.stderr[-2000:]
    shown = done.stdout + done.stderr
    assert "split_overlap" in shown
    assert "first rows:" in shown
    assert "% of the holdout" in shown
    assert versions(tmp_path) == [], "a blocked run registers nothing"
    saved = list((tmp_path / "store" / "runs").rglob("checks.json"))
    assert saved, "a blocked run's checks are saved under {storage}/runs/"
    assert json.loads(saved[0].read_text())["blocked"] is True


@pytest.mark.slow
def test_a_leaked_feature_is_blocked_naming_it(tmp_path: Path) -> None:
    frame = loans(1500, seed=2)
    frame["amount"] = np.where(frame["outcome"] == "default", 30_000.0, 5_000.0) + np.random.default_rng(
        0
    ).normal(0, 10, len(frame))
    config = project(tmp_path, frame)
    done = raymlops("train", "--config", str(config), cwd=tmp_path)
    assert done.returncode == 3, done.stdout[-2000:] + done.stderr[-2000:]
    shown = done.stdout + done.stderr
    assert "leakage" in shown
    assert "column 'amount'" in shown
    assert versions(tmp_path) == []


def _browser(url: str, out: Path) -> tuple[str, str]:
    """Render ``url`` headless: (the DOM after load, chromium's stderr with console messages)."""
    assert CHROMIUM, "chromium is installed by `make install` (apt-get install chromium)"
    flags = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--enable-logging=stderr",
        "--v=0",
        f"--user-data-dir={out.parent / 'chromium-profile'}",
        "--window-size=1280,2000",
    ]
    shot = subprocess.run(
        [*flags, f"--screenshot={out}", url], capture_output=True, text=True, timeout=120
    )
    assert out.exists(), shot.stderr[-2000:]
    assert out.stat().st_size > 10_000, "a rendered card is more than a blank page"
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    return dom.stdout, shot.stderr + dom.stderr


@pytest.mark.slow
def test_a_clean_dataset_registers_versions_whose_cards_open_in_a_browser(tmp_path: Path) -> None:
    # held out by time: the model is judged on the latest applications
    config = project(tmp_path, loans(2000, seed=3), split="{by: time}")
    first = raymlops("train", "--config", str(config), "--promote", cwd=tmp_path)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    # fresh data: the second version's card shows its metrics next to the champion's (v1)
    loans(2000, seed=4).to_csv(tmp_path / "data" / "loans.csv", index=False)
    second = raymlops("train", "--config", str(config), cwd=tmp_path)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    assert versions(tmp_path) == ["v1", "v2"]
    version = tmp_path / "store" / "models" / "loans" / "versions" / "v2"
    manifest = json.loads((version / "MANIFEST.json").read_text())
    assert {"model_card.md", "model_card.html", "checks.json"} <= set(manifest["files"])
    checks = json.loads((version / "checks.json").read_text())["findings"]
    (time_split,) = [f for f in checks if f["check"] == "time_split"]
    assert (time_split["column"], time_split["severity"]) == ("applied_at", "ok")
    assert "before the holdout starts" in time_split["message"]
    metrics = json.loads((version / "metrics.json").read_text())
    ours = metrics["holdout"]["roc_auc"]
    theirs = metrics["champion"]["holdout"]["roc_auc"]

    env = {**os.environ, "COLUMNS": "200", "RAY_ADDRESS": "", "NO_COLOR": "1"}
    server = subprocess.Popen(
        [RAYMLOPS, "registry", "card", "--config", str(config), "v2", "--serve"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(server.stdout.readline, "")))  # type: ignore[union-attr]
    reader.start()
    try:
        url = wait_for_condition(
            lambda: next(
                (line.split()[3] for line in lines if line.startswith("serving cards at")), None
            ),
            timeout_s=60,
            message="the card server's URL",
        )
        assert url.startswith("http://127.0.0.1:")
        dom, console = _browser(url, tmp_path / "card.png")
        assert "Model card: loans v2" in dom
        assert f'<td data-key="roc_auc">{ours:.4f}</td>' in dom
        assert f"{theirs:.4f}" in dom, "the champion's metric sits next to the version's"
        assert "credit-risk@example.com" in dom
        assert 'id="metric-plot"' in dom
        assert "Since training" in dom
        assert "Uncaught" not in console, console[-2000:]
        assert ":ERROR:CONSOLE" not in console, console[-2000:]
        index, _ = _browser(url.rsplit("/", 1)[0] + "/", tmp_path / "index.png")
        assert '<a href="/v1">v1</a>' in index
        assert '<a href="/v2">v2</a>' in index
    finally:
        server.terminate()
        server.wait(timeout=30)
        reader.join(timeout=10)
    # editing the card fails verification: it is part of the manifest
    card = version / "model_card.html"
    card.write_text(card.read_text().replace("loans v2", "loans v9"))
    verify = raymlops("registry", "verify", "--config", str(config), "v2", cwd=tmp_path)
    assert verify.returncode == 4, verify.stdout + verify.stderr
    assert "model_card.html" in verify.stdout + verify.stderr
