"""Runs the pipeline locally: LocalDagRunner, MLMD in SQLite, Beam DirectRunner."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from typing import Iterator

from tfx import v1 as tfx

from pfdx.components.evaluation_report import EvaluationReportArtifact
from pfdx.config import PipelineConfig
from pfdx.pipeline import dag
from pfdx.simulator import simulate

log = logging.getLogger(__name__)


def ensure_input(config: PipelineConfig) -> str:
    """The log directory to read: the configured one, or the built-in simulated log.

    The simulated log is written once per (scenario, rows, seed) and reused, so re-runs
    hit ExampleGen's cache instead of re-reading a freshly written copy.
    """
    if config.data.path is not None:
        path = os.path.abspath(config.data.path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"data.path {path} does not exist")
        return path
    d = config.data
    out = config.resolve(os.path.join(
        "data", f"simulated-{d.simulated_scenario}-{d.simulated_rows}-seed{d.simulated_seed}"))
    marker = out + ".done.json"  # beside the folder, so the file pattern never matches it
    if not os.path.exists(marker):
        log.info("simulating %d impressions (scenario %s, seed %d) into %s",
                 d.simulated_rows, d.simulated_scenario, d.simulated_seed, out)
        frame = simulate.simulate(d.simulated_rows, d.simulated_seed, d.simulated_scenario)
        simulate.write(frame, out, fmt=d.format, shards=4)
        with open(marker, "w", encoding="utf-8") as f:
            json.dump({"scenario": d.simulated_scenario, "rows": d.simulated_rows,
                       "seed": d.simulated_seed}, f)
    return out


def run(config: PipelineConfig) -> dict:
    """Builds and runs the pipeline; outputs go under config.runner.output_root.
    Returns the run report's summary (metrics.json)."""
    input_base = ensure_input(config)
    os.makedirs(config.resolve("."), exist_ok=True)
    with open(config.resolve("config.json"), "w", encoding="utf-8") as f:
        f.write(config.to_json())
    pipeline = dag.create_pipeline(
        config, input_base=input_base, pipeline_root=config.pipeline_root,
        serving_dir=config.serving_dir,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            config.metadata_path),
        beam_pipeline_args=beam_args(config))
    with run_temp_dir(config.resolve(".")):
        tfx.orchestration.LocalDagRunner().run(pipeline)
    return publish_report(config)


# Unless a Beam dependency flag is given, every TFX Beam executor copies TFX's install
# and builds an sdist of it for remote workers (tfx/utils/dependency_utils.py): ~2 s
# and 52 MB of temporary files per Beam step, never removed. The DirectRunner's
# workers use this environment and ignore the image named here.
NO_TFX_PACKAGE = "--sdk_container_image=unused-by-the-direct-runner"


def beam_args(config: PipelineConfig) -> list[str]:
    """The run's Beam arguments; on the DirectRunner (the default), with NO_TFX_PACKAGE."""
    args = config.beam_pipeline_args
    remote = [a for a in args if a.startswith("--runner") and not a.endswith("DirectRunner")]
    return args if remote else args + [NO_TFX_PACKAGE]


@contextlib.contextmanager
def run_temp_dir(parent: str) -> Iterator[str]:
    """Points temporary files (TFX, Beam workers, TF autograph) to a fresh folder in
    `parent` for the run, and removes it afterwards, whatever happens."""
    path = tempfile.mkdtemp(prefix=".tmp-", dir=parent)
    saved = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"] = tempfile.tempdir = path  # this process; workers read TMPDIR
    try:
        yield path
    finally:
        if saved[0] is None:
            os.environ.pop("TMPDIR")
        else:
            os.environ["TMPDIR"] = saved[0]
        tempfile.tempdir = saved[1]
        shutil.rmtree(path, ignore_errors=True)


def publish_report(config: PipelineConfig) -> dict:
    """Copies the run's report (newest EvaluationReport artifact in MLMD) to
    `<output_root>/reports/` and returns its metrics.json, so a user finds it without
    browsing the pipeline root."""
    from ml_metadata import metadata_store

    store = metadata_store.MetadataStore(
        tfx.orchestration.metadata.sqlite_metadata_connection_config(config.metadata_path))
    reports = store.get_artifacts_by_type(EvaluationReportArtifact.TYPE_NAME)
    if not reports:
        raise RuntimeError(f"the run wrote no report; see the MLMD store {config.metadata_path}")
    latest = max(reports, key=lambda a: a.id)
    shutil.rmtree(config.reports_dir, ignore_errors=True)
    shutil.copytree(latest.uri, config.reports_dir)
    with open(os.path.join(config.reports_dir, "metrics.json"), encoding="utf-8") as f:
        return json.load(f)
