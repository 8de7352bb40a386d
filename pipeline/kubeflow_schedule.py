"""Schedules a compiled pipeline on Kubeflow Pipelines: upload, then a recurring run.

Reads the PipelineJob JSON of `pfdx compile-kubeflow`, uploads its pipeline spec
(a new pipeline, or a new version of the pipeline of the same name, so re-scheduling
after a recompile keeps one pipeline with its history) and creates a recurring run
in an experiment through the kfp client. Every run parameter is sent explicitly:
the compiled defaults with the caller's overrides on top, so each run records the
values it used.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from typing import Any

import kfp
import yaml

# Parameter types of a compiled spec (pipeline spec schema 2.1) -> Python type.
_PARAMETER_TYPES = {"STRING": str, "NUMBER_INTEGER": int, "NUMBER_DOUBLE": float}


class ScheduleError(ValueError):
    """A spec, cron expression or parameter that cannot be scheduled; names what is wrong."""


def kfp_cron(expression: str) -> str:
    """`expression` as KFP's scheduler reads it.

    KFP parses cron with a leading seconds field (robfig/cron v1 `Parse`), so a
    standard 5-field expression would be misread: "0 3 * * *" would mean minute 3 of
    every hour. 5-field expressions get "0" seconds prepended; 6-field ones and
    descriptors (@daily, @every 6h) pass through.
    """
    fields = expression.split()
    if fields and fields[0].startswith("@"):
        return " ".join(fields)
    if len(fields) == 5:
        return " ".join(["0", *fields])
    if len(fields) == 6:
        return " ".join(fields)
    raise ScheduleError(f"--cron {expression!r}: expected 5 fields (minute hour day month "
                        "weekday), 6 (seconds first) or a descriptor such as @daily")


def load_job(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        job = json.load(f)
    if "pipelineSpec" not in job:
        raise ScheduleError(f"{path} is not a compiled PipelineJob (no pipelineSpec); "
                            "write one with `pfdx compile-kubeflow --out FILE.json`")
    return job


def run_parameters(job: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """The job's default run parameters with `overrides` ("NAME=VALUE") applied, typed."""
    malformed = [item for item in overrides if "=" not in item]
    if malformed:
        raise ScheduleError(f"--param {malformed[0]!r}: expected NAME=VALUE")
    overrides = dict(item.split("=", 1) for item in overrides)
    declared = job["pipelineSpec"]["root"].get("inputDefinitions", {}).get("parameters", {})
    unknown = sorted(set(overrides) - set(declared))
    if unknown:
        raise ScheduleError(f"--param {', '.join(unknown)}: not a run parameter of this "
                            f"pipeline; known: {', '.join(sorted(declared))}")
    values = dict(job.get("runtimeConfig", {}).get("parameterValues", {}), **overrides)
    typed = {}
    for name, spec in declared.items():
        if name not in values:
            raise ScheduleError(f"run parameter {name!r} has no default; pass --param {name}=VALUE")
        # Overrides are strings; compiled defaults are JSON numbers (an int one as 2.0).
        ptype = _PARAMETER_TYPES[spec["parameterType"]]
        try:
            typed[name] = ptype(values[name])
        except ValueError:
            raise ScheduleError(f"--param {name}={values[name]}: expected "
                                f"{ptype.__name__}") from None
    return typed


def _upload(client: kfp.Client, package: str, name: str) -> tuple[str, str]:
    """(pipeline id, version id) of `package` uploaded under pipeline `name`."""
    pipeline_id = client.get_pipeline_id(name)
    if pipeline_id is None:
        pipeline_id = client.upload_pipeline(package, pipeline_name=name).pipeline_id
        (version,) = client.list_pipeline_versions(pipeline_id).pipeline_versions
        return pipeline_id, version.pipeline_version_id
    version = client.upload_pipeline_version(
        package, pipeline_version_name=f"{name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}",
        pipeline_id=pipeline_id)
    return pipeline_id, version.pipeline_version_id


def schedule(host: str, spec_path: str, cron: str, overrides: list[str],
             namespace: str | None = None, experiment: str | None = None,
             name: str | None = None):
    """Uploads the compiled pipeline and creates a recurring run; returns the recurring run."""
    job = load_job(spec_path)
    cron = kfp_cron(cron)
    params = run_parameters(job, overrides)
    pipeline_spec = job["pipelineSpec"]
    pipeline_name = pipeline_spec["pipelineInfo"]["name"]
    # Multi-user Kubeflow keeps experiments (and runs) per profile namespace.
    client = kfp.Client(host=host, namespace=namespace) if namespace else kfp.Client(host=host)
    with tempfile.TemporaryDirectory() as tmp:
        # KFP's upload takes a pipeline spec (YAML), not TFX's PipelineJob wrapper.
        package = os.path.join(tmp, f"{pipeline_name}.yaml")
        with open(package, "w", encoding="utf-8") as f:
            yaml.safe_dump(pipeline_spec, f, sort_keys=True)
        pipeline_id, version_id = _upload(client, package, pipeline_name)
    experiment_id = client.create_experiment(experiment or pipeline_name).experiment_id
    return client.create_recurring_run(
        experiment_id=experiment_id, job_name=name or pipeline_name, cron_expression=cron,
        params=params, pipeline_id=pipeline_id, version_id=version_id,
        # The uploaded spec does not carry the pipeline root; the compiled job does.
        pipeline_root=job.get("runtimeConfig", {}).get("gcsOutputDirectory"),
        # One run at a time, and no backfill of missed days after a pause.
        max_concurrency=1, no_catchup=True)
