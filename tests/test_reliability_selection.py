"""Fault injection into the selection Beam job (features/selection_beam.py, issue 7).

A job that fails part-way — a corrupt input shard, a worker that dies mid-job —
raises, writes no result a reader could trust, and a re-run once the fault is gone
gives the very bytes of an undisturbed run.
"""
import gzip
import os
import re
import shutil

import pytest

from pfdx.config import PipelineConfig
from pfdx.features import selection_beam, selection_report
from pfdx.simulator import simulate

IN_MEMORY = ["--direct_running_mode=in_memory"]
SHARDS = 2


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    """ExampleGen-shaped input: <dir>/Split-train/*.gz, clicked rows only."""
    root = tmp_path_factory.mktemp("examples")
    frame = simulate.simulate(60_000, seed=12)
    raw = simulate.write(frame[frame["click"] == 1], str(root / "raw"), fmt="tfrecord",
                         shards=SHARDS)
    os.makedirs(root / "Split-train")
    for i, path in enumerate(raw):
        with open(path, "rb") as src, gzip.open(
                root / "Split-train" / f"data_tfrecord-{i:05d}-of-{SHARDS:05d}.gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
    shutil.rmtree(root / "raw")
    return root


@pytest.fixture(scope="module")
def reference(examples, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / selection_report.SELECTION_FILE
    selection_beam.run_standalone(str(examples), str(out), PipelineConfig(), IN_MEMORY)
    return out.read_bytes()


def _run(examples, out_dir):
    out = os.path.join(out_dir, selection_report.SELECTION_FILE)
    selection_beam.run_standalone(str(examples), out, PipelineConfig(), IN_MEMORY)
    with open(out, "rb") as f:
        return f.read()


def _trusted_files(out_dir) -> list[str]:
    """What a reader of the output folder would take as a result, and any scratch
    or Beam temporary files left behind."""
    return sorted(os.listdir(out_dir))


def test_a_corrupt_shard_fails_the_job_and_a_repaired_rerun_matches(examples, reference, tmp_path):
    data = tmp_path / "examples"
    shutil.copytree(examples, data)
    (shard,) = sorted((data / "Split-train").glob("*-00001-*"))
    intact = shard.read_bytes()
    shard.write_bytes(intact[: len(intact) // 2])  # a copy cut short
    out = tmp_path / "out"
    os.makedirs(out)
    with pytest.raises(RuntimeError, match=f"selection over {re.escape(str(data))}.*TFRecord"):
        _run(data, out)
    assert _trusted_files(out) == []

    shard.write_bytes(intact)
    assert _run(data, out) == reference


def test_a_worker_dying_mid_job_leaves_no_result_and_a_rerun_matches(
        examples, reference, tmp_path, monkeypatch):
    # Small batches: many bundles, so the fault strikes after others were combined
    # (the statistics are exact, so the batch size must not change the result).
    monkeypatch.setattr(selection_beam, "BATCH_SIZE", 128)
    process = selection_beam._BatchStats.process
    calls = []

    def dies_on_third_batch(self, records):
        calls.append(len(records))
        if len(calls) == 3:
            raise RuntimeError("injected worker failure")
        return process(self, records)

    out = tmp_path / "out"
    os.makedirs(out)
    with monkeypatch.context() as fault:
        fault.setattr(selection_beam._BatchStats, "process", dies_on_third_batch)
        with pytest.raises(Exception, match="injected worker failure"):
            _run(examples, out)
    assert len(calls) == 3 and _trusted_files(out) == []
    assert _run(examples, out) == reference
