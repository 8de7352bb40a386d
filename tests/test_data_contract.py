"""The data contract (features/contract.py) against what the pipeline's code does with
a small simulated log: ExampleGen's rows (`log_rows`), the Transform's outputs, the
selection job's parse and the serving inputs."""
import os
import subprocess
import sys

import pytest
import tensorflow as tf

from pfdx.components import log_rows
from pfdx.config import load_config
from pfdx.features import contract, selection_beam, transform
from pfdx.simulator import simulate

SPACES = {contract.CLICK: "none", contract.IMPRESSION: "taml"}  # a strategy of each space


def _config(space: str):
    return load_config(None, [f"model.strategy={SPACES[space]}"])


@pytest.fixture(scope="module")
def examples(tmp_path_factory) -> dict[str, list[tf.train.Example]]:
    """{space: the tf.Examples ExampleGen's row code makes of a simulated CSV log}."""
    (path,) = simulate.write(simulate.simulate(3000, seed=4), str(tmp_path_factory.mktemp("log")))
    out = {}
    for space in SPACES:
        schema = log_rows.RowSchema.from_config(_config(space).to_dict()["data"], space)
        with open(path, "rb") as stream:
            _, rows = log_rows.read_rows(path, stream, "csv", ",", schema)
            out[space] = [tf.train.Example.FromString(row.payload.serialized) for row in rows
                          if row.status != log_rows.QUARANTINED and row.payload is not None]
    assert len(out[contract.CLICK]) > 50 and len(out[contract.IMPRESSION]) == 3000
    return out


def test_import_needs_no_tensorflow():
    code = "import sys, pfdx.features.contract; sys.exit('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], env=dict(os.environ)).returncode == 0


@pytest.mark.parametrize("space", SPACES)
def test_example_features_are_what_example_gen_writes(examples, space):
    features = contract.DataContract.from_config(_config(space)).example_features
    seen = set()
    for example in examples[space]:
        feature = example.features.feature
        assert {n: feature[n].WhichOneof("kind") for n in feature} == {
            n: features[n].kind.list for n in feature}
        assert {n for n, f in features.items() if f.always} <= set(feature)
        seen |= set(feature)
    assert seen == set(features)  # every feature the contract lists occurs, and only those
    assert (_config(space).data.columns.click in features) == (space == contract.IMPRESSION)


def test_no_privileged_feature_on_an_unclicked_impression(examples):
    roles = _config(contract.IMPRESSION).data.columns
    unclicked = [e.features.feature for e in examples[contract.IMPRESSION]
                 if e.features.feature[roles.click].int64_list.value == [0]]
    assert unclicked and not any(set(f) & set(roles.privileged) for f in unclicked)


@pytest.mark.parametrize("space", SPACES)
def test_raw_feature_spec_parses_example_gen_output(examples, space):
    """A FixedLenFeature without a default fails the parse on an example that lacks it."""
    data_contract = contract.DataContract.from_config(_config(space))
    spec = data_contract.raw_feature_spec()
    assert set(spec) == set(data_contract.example_features) - {data_contract.time}
    parsed = tf.io.parse_example([e.SerializeToString() for e in examples[space]], spec)
    for label in data_contract.labels:
        assert isinstance(spec[label], tf.io.FixedLenFeature)
        assert parsed[label].dtype == tf.int64


def test_selection_job_reads_example_gen_output(examples):
    roles = _config(contract.CLICK).data.columns
    records = [e.SerializeToString() for e in examples[contract.CLICK]]
    labels, columns, unclicked = selection_beam.decode_examples(records, roles, "ExampleGen")
    assert len(labels) == len(records) and unclicked == 0 and set(columns) == set(roles.privileged)


def test_serving_inputs_are_regular_features_only():
    for space in SPACES:
        config = _config(space)
        roles, data_contract = config.data.columns, contract.DataContract.from_config(config)
        inputs = data_contract.serving_inputs
        assert tuple(inputs) == roles.regular
        served_elsewhere = {*roles.privileged, *data_contract.labels, roles.click, roles.truth,
                            data_contract.time, *roles.ignore}
        assert not set(inputs) & served_elsewhere
        assert set(inputs.values()) <= set(contract.SERVING_KINDS)
        assert all(inputs[n] == data_contract.example_features[n].kind for n in inputs)


def test_transformed_names(examples, tmp_path):
    """The Transform's outputs, fitted as `pfdx compare` fits it: the regular features
    as they are, the labels, each selected privileged feature's flag, and a continuous
    one's quantile buckets."""
    from pfdx.experiments import preprocessing, windows

    config = _config(contract.IMPRESSION)
    data_contract = contract.DataContract.from_config(config)
    path = str(tmp_path / "examples.tfrecord.gz")
    with tf.io.TFRecordWriter(path, tf.io.TFRecordOptions(compression_type="GZIP")) as writer:
        for example in examples[contract.IMPRESSION]:
            writer.write(example.SerializeToString())
    continuous, flag = "duration", "page_jump"
    selection = {"selected": [continuous, flag], "or_groups": {}, "thresholds": {continuous: 0.5}}
    window = windows.Window("train", path, 0, 0, (0.0, 0.0), contract.IMPRESSION)
    output = preprocessing.fit_transform(config, selection, window, str(tmp_path))
    names = set(output.transformed_feature_spec())
    assert names == {*config.data.columns.regular, *data_contract.labels,
                     contract.privileged_flag(continuous), contract.privileged_flag(flag),
                     contract.privileged_quantiles(continuous)}
    assert not names & set(config.data.columns.privileged)
    assert {contract.flagged_feature(n) for n in names} == {None, continuous, flag}
    assert set(transform.privileged_vocab(names, "quantiles", 8)) == {
        contract.privileged_quantiles(continuous), contract.privileged_flag(flag)}
