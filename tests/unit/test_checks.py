"""Dataset checks (raymlops.data.checks): duplicates, leakage across the split, target leakage,
constant columns, profile shift and labels, on data built so the answer is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raymlops.config import ColumnSpec, ConfigError, DataChecksConfig, load_config
from raymlops.data.checks import (
    CheckInputs,
    OverlapFindings,
    check_column_profile,
    check_labels,
    check_leakage,
    check_overlap,
    check_time_ranges,
    check_time_split,
    digest_block,
    id_findings,
    overlap_findings,
    row_findings,
    run_checks,
)
from raymlops.data.split import holdout_mask
from raymlops.data.validation import validate_frame
from raymlops.features.pipeline import ColumnStats
from raymlops.schema import Schema
from tests.conftest import write_project
from tests.helpers import pandas_stats

SCHEMA = Schema.from_columns(
    {
        "customer": ColumnSpec(type="string", role="id"),
        "a": ColumnSpec(type="float"),
        "b": ColumnSpec(type="float"),
        "plan": ColumnSpec(type="category", categories=["basic", "pro"]),
    },
    target="y",
    task="classification",
)
RULES = DataChecksConfig()


def frame(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=rows)
    return pd.DataFrame(
        {
            "customer": [f"c{i}" for i in range(rows)],
            "a": a,
            "b": rng.normal(size=rows),
            "plan": rng.choice(["basic", "pro"], size=rows),
            # a noisy target: no single feature predicts it perfectly
            "y": np.where(a + rng.normal(scale=1.0, size=rows) > 0, "yes", "no"),
        }
    )


def typed(raw: pd.DataFrame, schema: Schema = SCHEMA) -> pd.DataFrame:
    out, report = validate_frame(raw, schema)
    assert report.ok, report.render()
    return out


def digests(data: pd.DataFrame, *, row_offset: int, fraction: float, seed: int) -> pd.DataFrame:
    """A block's digests with the row split's side, as the one-pass validation computes them."""
    rows = np.arange(row_offset, row_offset + len(data))
    side = holdout_mask(rows, fraction=fraction, seed=seed)
    return digest_block(data, SCHEMA, row_offset=row_offset, holdout=side)


def findings_of(raw: pd.DataFrame, *, fraction: float = 0.3) -> OverlapFindings:
    digest = digests(typed(raw), row_offset=0, fraction=fraction, seed=7)
    return overlap_findings(digest)


def by_check(findings, check):  # type: ignore[no-untyped-def]
    return [f for f in findings if f.check == check]


def test_clean_data_passes_every_overlap_check() -> None:
    found = check_overlap(findings_of(frame(400)), RULES)
    assert [f.severity for f in found] == ["ok", "ok", "ok"], [f.line() for f in found]


def test_exact_duplicates_are_counted_with_their_first_row_numbers() -> None:
    """Given rows 3 and 7 repeated at the end, the duplicates are the 1-based rows 401, 402."""
    raw = frame(400)
    raw = pd.concat([raw, raw.iloc[[2, 6]]], ignore_index=True)
    [duplicates] = by_check(check_overlap(findings_of(raw), RULES), "duplicates")
    assert duplicates.severity == "warn"
    assert duplicates.rows == (401, 402)
    assert duplicates.value == pytest.approx(2 / 402)
    assert "2 of 402 rows" in duplicates.message


def test_a_dataset_that_is_mostly_duplicates_is_blocked_saying_how_many_and_where() -> None:
    raw = frame(100)
    copies = pd.concat([raw] + [raw.iloc[:60]] * 3, ignore_index=True)  # 180 of 280 rows repeat
    [duplicates] = by_check(check_overlap(findings_of(copies), RULES), "duplicates")
    assert duplicates.severity == "block"
    assert "180 of 280 rows (64.29%) repeat an earlier row" in duplicates.message
    assert duplicates.rows == (101, 102, 103, 104, 105)
    assert duplicates.threshold == 0.5
    off = DataChecksConfig.model_validate({"duplicates": {"severity": "off"}})
    [quiet] = by_check(check_overlap(findings_of(copies), off), "duplicates")
    assert quiet.severity != "block"  # off means off, however many copies


def test_feature_rows_on_both_sides_of_the_split_are_found() -> None:
    """Copies of training rows (new ids, same features) landing in the holdout inflate the
    holdout metric: above 1% of the holdout they block by default, and warn when asked; with
    only discrete features the check says why it skips."""
    raw = frame(400)
    digest = digests(typed(raw), row_offset=0, fraction=0.3, seed=7)
    train_rows = digest.loc[~digest["holdout"], "row"].to_numpy()[:60] - 1
    copies = raw.iloc[train_rows].assign(customer=[f"copy{i}" for i in range(60)])
    both = pd.concat([raw, copies], ignore_index=True)
    found = findings_of(both)
    [overlap] = by_check(check_overlap(found, RULES), "split_overlap")
    assert overlap.severity == "block", overlap.line()
    lenient = DataChecksConfig.model_validate({"split_overlap": {"severity": "warn"}})
    [warned] = by_check(check_overlap(found, lenient), "split_overlap")
    assert warned.severity == "warn"
    [discrete] = by_check(check_overlap(found, RULES, continuous=False), "split_overlap")
    assert discrete.severity == "skipped"
    assert "every feature is discrete" in discrete.message
    # rows without any float value (all floats null) never count: a common pattern, not copies
    marked = digests(typed(both), row_offset=0, fraction=0.3, seed=7)
    assert marked["continuous"].all()
    marked.loc[marked["row"] > 400, "continuous"] = False
    assert overlap_findings(marked).cross_split.count == 0
    assert overlap.value is not None
    assert overlap.value > 0.01
    # the rows named are holdout rows whose features repeat a training row's
    full = digests(typed(both), row_offset=0, fraction=0.3, seed=7)
    train_hashes = set(full.loc[~full["holdout"], "feature_hash"])
    named = full.set_index("row").loc[list(overlap.rows)]
    assert len(named) == 5
    assert named["holdout"].all()
    assert named["feature_hash"].isin(train_hashes).all()


def test_an_id_on_both_sides_is_leakage_naming_the_column() -> None:
    raw = frame(400)
    raw.loc[:, "customer"] = [f"c{i % 150}" for i in range(400)]  # each id on several rows
    [ids] = by_check(check_overlap(findings_of(raw), RULES), "id_overlap")
    assert ids.severity == "block"
    assert ids.column == "customer"
    assert "carry an id also found in training" in ids.message


@settings(max_examples=25, deadline=None)
@given(cuts=st.integers(min_value=1, max_value=6), seed=st.integers(0, 10_000))
def test_partitions_by_hash_add_up_to_the_whole(cuts: int, seed: int) -> None:
    """Digests partitioned by row hash (as a distributed groupby does) give the same counts as
    one digest of the whole data: the checks scale out without a second read."""
    raw = frame(300, seed=seed)
    raw = pd.concat([raw, raw.sample(40, random_state=seed)], ignore_index=True)
    raw.loc[:, "customer"] = [f"c{i % 200}" for i in range(len(raw))]
    digest = digests(typed(raw), row_offset=0, fraction=0.3, seed=seed)
    whole = overlap_findings(digest)
    # equal features share a partition: partition by the feature hash (equal rows have equal
    # features, so exact duplicates fall together too); ids are checked by their own hash
    parts = OverlapFindings.merge(
        [row_findings(digest[digest["feature_hash"] % cuts == k]) for k in range(cuts)]
        + [
            id_findings(digest[digest["id:customer"] % cuts == k], "customer")
            for k in range(cuts)
        ]
    )
    assert parts.ids["customer"].count == whole.ids["customer"].count
    assert parts.ids["customer"].rows == whole.ids["customer"].rows
    assert parts.duplicates.count == whole.duplicates.count
    assert parts.duplicates.rows == whole.duplicates.rows
    assert parts.cross_split.count == whole.cross_split.count
    assert parts.cross_split.rows == whole.cross_split.rows
    assert parts.rows == whole.rows
    assert parts.train_rows == whole.train_rows


def test_row_numbers_follow_the_block_offset() -> None:
    raw = frame(50)
    digest = digests(typed(raw), row_offset=1000, fraction=0.3, seed=7)
    assert digest["row"].iloc[0] == 1001
    assert digest["row"].iloc[-1] == 1050


def test_a_feature_that_is_the_label_in_disguise_blocks_naming_it() -> None:
    raw = frame(500)
    raw["b"] = np.where(raw["y"] == "yes", 1.0, 0.0) + np.random.default_rng(1).normal(
        scale=0.01, size=500
    )
    found = check_leakage(typed(raw), SCHEMA, RULES)
    blocked = [f for f in found if f.severity == "block"]
    assert [f.column for f in blocked] == ["b"], [f.line() for f in found]
    assert blocked[0].value is not None
    assert blocked[0].value >= 0.99


def test_a_category_that_encodes_the_label_is_leakage_too() -> None:
    raw = frame(500)
    raw["plan"] = np.where(raw["y"] == "yes", "pro", "basic")
    found = check_leakage(typed(raw), SCHEMA, RULES)
    assert [f.column for f in found if f.severity == "block"] == ["plan"]


def test_an_honest_strong_feature_is_not_leakage() -> None:
    found = check_leakage(typed(frame(500)), SCHEMA, RULES)
    assert all(f.severity == "ok" for f in found), [f.line() for f in found]
    strongest = max(found, key=lambda f: f.value or 0)
    assert strongest.column == "a"
    assert 0.7 < (strongest.value or 0) < 0.99


def test_leakage_with_one_class_is_skipped_with_the_reason() -> None:
    raw = frame(100).assign(y="yes")
    [finding] = check_leakage(typed(raw), SCHEMA, RULES)
    assert finding.severity == "skipped"
    assert "one class" in finding.message


def test_regression_leakage_uses_correlation() -> None:
    schema = Schema.from_columns(
        {"a": ColumnSpec(type="float"), "b": ColumnSpec(type="float")},
        target="y",
        task="regression",
    )
    rng = np.random.default_rng(0)
    a = rng.normal(size=300)
    raw = pd.DataFrame({"a": a, "b": rng.normal(size=300), "y": 3 * a + 0.01 * rng.normal(size=300)})
    found = check_leakage(typed(raw, schema), schema, RULES)
    assert {f.column: f.severity for f in found} == {"a": "block", "b": "ok"}


def test_constant_and_all_null_columns_warn() -> None:
    stats = {
        "a": ColumnStats(count=10, missing=0, mean=1.0, std=0.0, min=1.0, max=1.0),
        "b": ColumnStats(count=0, missing=10),
        "plan": ColumnStats(count=10, missing=0, frequencies={"pro": 10}),
        "ok": ColumnStats(count=10, missing=0, mean=0.0, std=1.0, min=-1.0, max=1.0),
    }
    findings = check_column_profile(stats, RULES)
    found = {f.column: f for f in findings if f.check == "constant"}
    assert {c: f.severity for c, f in found.items()} == {
        "a": "warn",
        "b": "warn",
        "plan": "warn",
        "ok": "ok",
    }
    assert "null" in found["b"].message
    # with no champion there is no profile to compare with: said, not left out
    (shift,) = [f for f in findings if f.check == "profile_shift"]
    assert shift.severity == "skipped"
    assert "no champion" in shift.message


def test_time_split_ranges_are_checked_and_a_row_split_says_why_it_skips() -> None:
    day = 86_400 * 10**9
    ranges = {
        "event_time": ((0, 10 * day), (11 * day, 20 * day)),
        # a second timestamp whose training rows reach into the holdout period: the future leaks
        "updated_at": ((0, 15 * day), (12 * day, 20 * day)),
        "empty": (None, (1, 2)),
    }
    found = {f.column: f for f in check_time_ranges(ranges, SCHEMA, RULES)}
    assert found["event_time"].severity == "ok"
    assert found["updated_at"].severity == "block"  # follows the leakage rule
    assert "1970-01-16T00:00:00+00:00" in found["updated_at"].message
    assert found["empty"].severity == "skipped"
    (row_split,) = check_time_ranges(None, SCHEMA, RULES)
    assert row_split.severity == "skipped"
    assert row_split.message


def test_profile_shift_against_the_previous_version() -> None:
    before = {
        "a": ColumnStats(count=100, missing=0, mean=0, std=1, min=-1, max=1),
        "plan": ColumnStats(count=100, missing=0, frequencies={"basic": 50, "pro": 50}),
    }
    now = {
        "a": ColumnStats(count=50, missing=50, mean=0, std=1, min=-1, max=1),
        "plan": ColumnStats(count=100, missing=0, frequencies={"basic": 50, "gold": 50}),
    }
    shifts = by_check(check_column_profile(now, RULES, before), "profile_shift")
    warned = {f.column: f.message for f in shifts if f.severity == "warn"}
    assert set(warned) == {"a", "plan"}
    assert "50.0%" in warned["a"]
    assert "gold" in warned["plan"]
    assert "pro" in warned["plan"]


def test_label_checks() -> None:
    [rare] = check_labels({"no": 995, "yes": 5}, None, SCHEMA, RULES)
    assert rare.severity == "warn"
    assert "'yes'" in rare.message
    [one] = check_labels({"no": 10}, None, SCHEMA, RULES)
    assert one.severity == "block"
    regression = Schema.from_columns({"a": ColumnSpec(type="float")}, target="y", task="regression")
    inf = ColumnStats(count=3, missing=0, mean=float("inf"), std=None, min=0.0, max=float("inf"))
    [bad] = check_labels(None, inf, regression, RULES)
    assert bad.severity == "block"


def test_time_split_overlap() -> None:
    [overlap] = check_time_split("t", (1, 10), (5, 20), RULES)
    assert overlap.severity == "block"
    [clean] = check_time_split("t", (1, 4), (5, 20), RULES)
    assert clean.severity == "ok"


def test_report_renders_one_line_per_finding_and_off_checks_are_left_out() -> None:
    raw = frame(400)
    raw = pd.concat([raw, raw.iloc[[2]]], ignore_index=True)
    data = typed(raw)
    inputs = CheckInputs(
        overlap=overlap_findings(
            digests(data, row_offset=0, fraction=0.3, seed=7)
        ),
        stats=pandas_stats(data, SCHEMA),
        sample=data,
        class_counts=data["y"].value_counts().to_dict(),
    )
    report = run_checks(inputs, SCHEMA, RULES)
    # row 401 repeats row 3, id included, and the split put them on different sides
    assert report.blocked
    lines = report.render().splitlines()
    assert lines[0] == "dataset checks on 401 rows: 8 passed, training blocked"
    assert lines[1].startswith("  BLOCK   id_overlap: column 'customer': 1 holdout rows")
    assert lines[2].startswith("  WARN    duplicates: 1 of 401 rows")
    assert "first rows: 401" in lines[2]
    assert report.to_dict()["findings"][0]["check"] == "duplicates"
    quiet = DataChecksConfig.model_validate({"duplicates": {"severity": "off"}})
    assert not by_check(run_checks(inputs, SCHEMA, quiet).findings, "duplicates")


def test_unknown_check_or_severity_is_a_config_error_with_a_suggestion(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bad_key = write_project(tmp_path / "k", extra="")
    text = bad_key.read_text().replace(
        "data:\n", "data:\n  checks: {duplicate: {severity: warn}}\n", 1
    )
    bad_key.write_text(text)
    with pytest.raises(ConfigError, match="Did you mean 'duplicates'"):
        load_config(bad_key)
    bad_value = write_project(tmp_path / "v")
    bad_value.write_text(
        bad_value.read_text().replace(
            "data:\n", "data:\n  checks: {leakage: {severity: blok}}\n", 1
        )
    )
    with pytest.raises(ConfigError, match="Did you mean 'block'"):
        load_config(bad_value)
