"""The data contract: what each configured column is at every stage, derived once
from the column roles (`pfdx.config.ColumnRoles`) and the example space.

    log row --ExampleGen--> tf.Example --Transform--> int64 ids --> teacher / student
                                 └─ regular features only --> the served student

- ExampleGen (`components/log_rows.py`) writes each column in one stored kind,
  whatever type the log held it in: `DataContract.example_features`;
- the Transform (`features/transform.py`) reads them (`DataContract.raw_feature_spec`)
  and names its outputs: a regular feature as it is, a selected privileged one under
  PRIVILEGED_PREFIX / QUANTILE_PREFIX (`privileged_flag`, `privileged_quantiles`),
  the labels as they are (`DataContract.labels`);
- serving (`serving/export.py`, `serving/parsing.py`) takes the regular features
  only: `DataContract.serving_inputs`.

TensorFlow-free on import (the ExampleGen config, the selection's schema check and
the tests read it without TensorFlow); `raw_feature_spec` imports it when called.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from pfdx.config import ColumnRoles
# The example spaces (PipelineConfig.space); each strategy declares its own there.
from pfdx.models.registry import CLICK, IMPRESSION

PRIVILEGED_PREFIX = "privileged__"  # a selected privileged feature's flag (HA-PFD Eq. 8)
QUANTILE_PREFIX = "privileged_q__"  # a continuous one's quantile buckets


@dataclasses.dataclass(frozen=True)
class Kind:
    """How a column is stored, named as each library names it: tf.train.Feature's
    list, the tf dtype it parses to, tensorflow_metadata's FeatureType."""

    list: str
    dtype: str
    schema_type: str


BYTES = Kind("bytes_list", "string", "BYTES")
FLOAT = Kind("float_list", "float32", "FLOAT")
INT64 = Kind("int64_list", "int64", "INT")

# Each role's kind. Categoricals are text, so a numeric id stays an id; a 0/1
# privileged flag is a float like the continuous signals, so the selection and the
# Transform read every candidate alike.
CATEGORICAL_KIND = BYTES
NUMERIC_KIND = FLOAT  # regular numeric, privileged (continuous and flags), the truth
LABEL_KIND = INT64  # the label, the click, the time
SERVING_KINDS = (CATEGORICAL_KIND, NUMERIC_KIND)  # serving inputs are regular features


@dataclasses.dataclass(frozen=True)
class RawFeature:
    """A tf.Example feature as ExampleGen writes it."""

    kind: Kind
    # In every example (a row without it is quarantined); else absent where the row
    # has no value, so it parses as variable-length.
    always: bool


def privileged_flag(feature: str) -> str:
    """The Transform's output of a selected privileged feature: its 0/1/missing flag."""
    return PRIVILEGED_PREFIX + feature


def privileged_quantiles(feature: str) -> str:
    """The Transform's output of a continuous privileged feature's quantile buckets."""
    return QUANTILE_PREFIX + feature


def flagged_feature(transformed: str) -> str | None:
    """The selected privileged feature whose flag `transformed` is, else None."""
    if not transformed.startswith(PRIVILEGED_PREFIX):
        return None
    return transformed[len(PRIVILEGED_PREFIX):]


@dataclasses.dataclass(frozen=True)
class DataContract:
    roles: ColumnRoles
    space: str = CLICK
    time: str | None = None  # data.time_column

    @classmethod
    def from_config(cls, config) -> "DataContract":
        """Of a `PipelineConfig`, in its example space (that of its strategy)."""
        return cls(config.data.columns, config.space, config.data.time_column)

    @classmethod
    def from_data(cls, data: Mapping[str, Any], space: str = CLICK) -> "DataContract":
        """Of the config's `data` section as plain data (JSON lists for tuples), as
        ExampleGen's custom config carries it."""
        columns = {k: tuple(v) if isinstance(v, list) else v for k, v in data["columns"].items()}
        return cls(ColumnRoles(**columns), space, data["time_column"])

    @property
    def click_label(self) -> str | None:
        """The click column as a label: impression space only (in click space every
        example is a click and the column is not written)."""
        return self.roles.click if self.space == IMPRESSION else None

    @property
    def labels(self) -> tuple[str, ...]:
        """The label columns, int64 in every example and through the Transform as they are."""
        return tuple(c for c in (self.roles.label, self.click_label) if c is not None)

    def kind(self, column: str) -> Kind:
        """The stored kind of a column the roles name (the click too, in either space:
        a raw simulated log's TFRecord holds it)."""
        roles = self.roles
        if column in (roles.label, roles.click, self.time):
            return LABEL_KIND
        if column in roles.regular_categorical:
            return CATEGORICAL_KIND
        if column in roles.regular_numeric + roles.privileged + (roles.truth,):
            return NUMERIC_KIND
        raise KeyError(f"column {column!r} has no role that is stored")

    @property
    def example_features(self) -> dict[str, RawFeature]:
        """Every feature ExampleGen may write, by name: the labels and the time in every
        example; the categoricals, numerics, privileged signals and the truth where the
        row has a value (never a privileged one on an unclicked row). Ignored columns
        are dropped."""
        roles = self.roles
        always = tuple(c for c in (*self.labels, self.time) if c is not None)
        maybe = roles.regular + roles.privileged + ((roles.truth,) if roles.truth else ())
        return {**{c: RawFeature(self.kind(c), True) for c in always},
                **{c: RawFeature(self.kind(c), False) for c in maybe}}

    def raw_feature_spec(self) -> dict[str, Any]:
        """The tf.io parsing spec of the features the Transform and the models read:
        every example feature but the time (it only splits the rows); FixedLenFeature([])
        for one in every example, VarLenFeature for one that may be absent (a
        SparseTensor the preprocessing_fn densifies, a missing value its own id)."""
        import tensorflow as tf

        return {name: tf.io.FixedLenFeature([], tf.as_dtype(f.kind.dtype)) if f.always
                else tf.io.VarLenFeature(tf.as_dtype(f.kind.dtype))
                for name, f in self.example_features.items() if name != self.time}

    @property
    def serving_inputs(self) -> dict[str, Kind]:
        """The served student's inputs: the regular features, in their stored kinds.
        Nothing privileged (it exists only after the click), no label, no truth."""
        return {c: self.kind(c) for c in self.roles.regular}
