"""The `data` section: where the log is, its format, the role of each column, the
splits, the spans a run reads and the quarantine rules."""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Literal

from pfdx.config.coercion import ConfigError
from pfdx.simulator import scenarios as sim_scenarios
from pfdx.simulator import schema as sim_schema


@dataclasses.dataclass(frozen=True)
class ColumnRoles:
    """Which raw columns play which role. Nothing is guessed from names."""

    label: str = "conversion"
    # Rows are kept for CVR training only where this column is 1 (click space).
    # None: every row is already a click.
    click: str | None = "click"
    regular_categorical: tuple[str, ...] = sim_schema.REGULAR_CATEGORICAL
    regular_numeric: tuple[str, ...] = sim_schema.REGULAR_NUMERIC
    privileged_continuous: tuple[str, ...] = sim_schema.PRIVILEGED_CONTINUOUS
    privileged_discrete: tuple[str, ...] = sim_schema.PRIVILEGED_DISCRETE
    # Columns read but never used as features (ids, time stamps); dropped.
    ignore: tuple[str, ...] = sim_schema.IGNORED
    # The true conversion probability, when the log has one (simulated logs): kept
    # in the examples so evaluation can compare predictions to it; never a feature.
    truth: str | None = sim_schema.TRUE_CVR

    @property
    def regular(self) -> tuple[str, ...]:
        return self.regular_categorical + self.regular_numeric

    @property
    def privileged(self) -> tuple[str, ...]:
        return self.privileged_continuous + self.privileged_discrete

    def validate(self) -> None:
        seen: dict[str, str] = {}
        for role in ("regular_categorical", "regular_numeric", "privileged_continuous",
                     "privileged_discrete", "ignore"):
            for col in getattr(self, role):
                if col in seen:
                    raise ConfigError(f"data.columns: column {col!r} is in both "
                                      f"{seen[col]} and {role}")
                seen[col] = role
        for name in (self.label, self.click, self.truth):
            if name is not None and name in seen:
                raise ConfigError(f"data.columns: label/click column {name!r} is also "
                                  f"listed as {seen[name]}")
        if not self.regular:
            raise ConfigError("data.columns: at least one regular feature is required")


# TFX's span placeholders in a file pattern (tfx/components/example_gen/utils.py):
# {SPAN} or {SPAN:width}, or the date specs {YYYY} {MM} {DD} (span = days since
# 1970-01-01), and optionally {VERSION}. The config cannot import TFX (TensorFlow).
_SPAN_SPEC = re.compile(r"{SPAN(:[^}]*)?}")
_VERSION_SPEC = re.compile(r"{VERSION(:[^}]*)?}")
_DATE_SPECS = ("{YYYY}", "{MM}", "{DD}")


def span_specs(pattern: str) -> str | None:
    """'span' or 'date' when `pattern` holds TFX span placeholders, else None."""
    if _SPAN_SPEC.search(pattern):
        return "span"
    return "date" if any(spec in pattern for spec in _DATE_SPECS) else None


@dataclasses.dataclass(frozen=True)
class SpanConfig:
    """Which spans of a `data.file_pattern` with span placeholders a run reads
    (docs/data-and-failures.md, Continuous training). Without a placeholder: the
    whole folder, as always."""

    # The newest `num_spans` span numbers (TFX's RollingRange): 1 = the latest span only;
    # N = the latest span L and the spans L-N+1 .. L-1 that exist.
    num_spans: int = 1
    # The eval split: "tail" = the last data.eval_fraction of the newest span's time
    # range (with one span: the split of a run without spans); "newest_span" = all of
    # the newest span (needs num_spans >= 2: the older spans train and validate).
    eval_split: Literal["tail", "newest_span"] = "tail"

    def validate(self, file_pattern: str) -> None:
        if self.num_spans < 1:
            raise ConfigError(f"data.spans.num_spans: {self.num_spans} is below 1")
        kind = span_specs(file_pattern)
        if kind is None and self != SpanConfig():
            key = "num_spans" if self.num_spans != 1 else "eval_split"
            raise ConfigError(f"data.spans.{key}: set, but data.file_pattern {file_pattern!r} "
                              "has no span placeholder ({SPAN} or {YYYY}-{MM}-{DD}), so the whole "
                              "folder is read; e.g. data.file_pattern: 'day={SPAN}/*.csv'")
        if self.eval_split == "newest_span" and self.num_spans < 2:
            raise ConfigError("data.spans.eval_split: 'newest_span' makes the newest span "
                              "the eval split; it needs data.spans.num_spans >= 2 (older "
                              f"spans to train on), got {self.num_spans}")
        where = f"data.file_pattern: {file_pattern!r}"
        if kind == "span":
            if len(_SPAN_SPEC.findall(file_pattern)) > 1:
                raise ConfigError(f"{where}: only one {{SPAN}} is allowed")
            if any(spec in file_pattern for spec in _DATE_SPECS):
                raise ConfigError(f"{where}: {{SPAN}} and the date specs {{YYYY}} {{MM}} "
                                  "{DD} exclude each other")
            width = _SPAN_SPEC.search(file_pattern).group(1)
            if width and not (width[1:].isdigit() and int(width[1:]) > 0):
                raise ConfigError(f"{where}: the width of {{SPAN:width}} is not a "
                                  "positive integer")
        if kind == "date" and any(file_pattern.count(s) != 1 for s in _DATE_SPECS):
            raise ConfigError(f"{where}: each of {{YYYY}}, {{MM}}, {{DD}} must appear "
                              "exactly once")
        versions = _VERSION_SPEC.findall(file_pattern)
        if versions and kind is None:
            raise ConfigError(f"{where}: {{VERSION}} needs a {{SPAN}} or date placeholder")
        if len(versions) > 1:
            raise ConfigError(f"{where}: only one {{VERSION}} is allowed")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    # None: the pipeline simulates `simulated_rows` rows into <output_root>/data.
    path: str | None = None
    format: Literal["csv", "parquet", "tfrecord"] = "csv"
    # Files under `path` to read (glob); gzip-compressed TFRecords need "*.gz".
    file_pattern: str = "*"
    separator: str = ","
    columns: ColumnRoles = ColumnRoles()
    # Train/eval split: by time when `time_column` is set (the last
    # `eval_fraction` of the time range is eval), else by a hash of the row.
    time_column: str | None = "event_time"
    eval_fraction: float = 0.2
    # The validation split: this last fraction of the train time range (or of the
    # train rows, hash split). Early stopping, per-run tuning, the baseline gate and
    # calibration read it (components/splits.py).
    validation_fraction: float = 0.2
    # ~30k clicked impressions: enough to train on, a few minutes on 2 cores.
    simulated_rows: int = 1_000_000
    simulated_seed: int = 7
    # The simulator's regime (simulator/README.md): default, paper, selection-bias, v1.
    simulated_scenario: str = "default"
    # Numeric columns whose negative values quarantine the row (durations, counters,
    # amounts). None: every regular numeric and privileged continuous column.
    non_negative: tuple[str, ...] | None = None
    # The run fails when more than this fraction of the rows that would be used
    # (used + quarantined) is quarantined: a drifted or misread log, not a few bad rows.
    max_quarantined_fraction: float = 0.05
    # Each split (train / validation / eval) must hold at least this many rows and
    # positive labels, else the run stops at ExampleGen naming the split: an AUC needs
    # both classes, and an outlying timestamp can leave a time split nearly empty.
    min_split_rows: int = 10
    min_split_positives: int = 1
    # A curated TFDV schema (schema.pbtxt: absolute path or URI) that the data is
    # validated, transformed and trained against instead of the one SchemaGen infers
    # (TFX ImportSchemaGen). TFX caches the import by path: give an edited schema a
    # new file name. None: infer the schema from each run's statistics.
    schema_path: str | None = None
    # Daily (or other) spans in `file_pattern`, e.g. "day={YYYY}-{MM}-{DD}/*.csv":
    # which spans a run reads and where its eval split is (SpanConfig).
    spans: SpanConfig = SpanConfig()

    def validate(self) -> None:
        if self.simulated_scenario not in sim_scenarios.SCENARIOS:
            raise ConfigError(f"data.simulated_scenario: {self.simulated_scenario!r} is not one "
                              f"of {', '.join(sim_scenarios.SCENARIOS)}")
        for key in ("eval_fraction", "validation_fraction"):
            if not 0.0 < getattr(self, key) < 1.0:
                raise ConfigError(f"data.{key}: {getattr(self, key)} is not in (0, 1)")
        parts = self.file_pattern.replace("\\", "/").split("/")
        if os.path.isabs(self.file_pattern) or ".." in parts:
            raise ConfigError(f"data.file_pattern: {self.file_pattern!r} is not a glob inside "
                              "data.path")
        if not 0.0 <= self.max_quarantined_fraction <= 1.0:
            raise ConfigError(f"data.max_quarantined_fraction: {self.max_quarantined_fraction} "
                              "is not in [0, 1]")
        if "**" in self.file_pattern:
            # TFX fingerprints ExampleGen's input with a glob where '**' does not recurse:
            # an edited file below data.path would be served from cache.
            raise ConfigError(f"data.file_pattern: {self.file_pattern!r}: '**' is not "
                              "supported; name each folder level, e.g. '*/*.csv'")
        if len(self.separator) != 1:
            raise ConfigError(f"data.separator: {self.separator!r} is not one character")
        self.spans.validate(self.file_pattern)
        for key, low in (("min_split_rows", 1), ("min_split_positives", 0)):
            if getattr(self, key) < low:
                raise ConfigError(f"data.{key}: {getattr(self, key)} is below {low}")
        roles = self.columns
        numeric = roles.regular_numeric + roles.privileged
        unknown = [c for c in self.non_negative or () if c not in numeric]
        if unknown:
            raise ConfigError(f"data.non_negative: {unknown} are not numeric columns "
                              f"(regular_numeric or privileged); numeric: {list(numeric)}")
        self.columns.validate()
