"""The Kubeflow commands of `pfdx`: `compile-kubeflow` and `schedule`.

TFX and kfp are imported inside the handlers, so `pfdx --help` stays fast.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Callable

from pfdx.config import PipelineConfig, load_config

def add_parsers(sub: argparse._SubParsersAction,
                add_config_args: Callable[[argparse.ArgumentParser], None]) -> None:
    """Registers both commands; `add_config_args` adds the CLI's --config/--set."""
    p = sub.add_parser("compile-kubeflow",
                       help="compile the pipeline to a KFP v2 spec (KubeflowV2DagRunner)")
    p.add_argument("--out", required=True, help="PipelineJob JSON to write, e.g. pipeline.json")
    p.add_argument("--image", help="pipeline image (sets kubeflow.image)")
    p.add_argument("--beam-runner", help="DirectRunner, DataflowRunner, FlinkRunner or "
                   "SparkRunner (sets kubeflow.beam_runner)")
    p.add_argument("--beam-arg", dest="beam_args", action="append", default=[], metavar="FLAG",
                   help="one more flag for the Beam runner, e.g. --beam-arg=--project=my-project "
                        "(repeatable; added to kubeflow.beam_args.<runner>)")
    add_config_args(p)
    p.set_defaults(func=_cmd_compile)

    p = sub.add_parser("schedule",
                       help="upload a compiled pipeline and create a recurring run (kfp client)")
    p.add_argument("--host", required=True, help="Kubeflow Pipelines API endpoint, e.g. "
                   "http://localhost:8080 after `kubectl port-forward svc/ml-pipeline-ui`")
    p.add_argument("--cron", required=True, help='schedule, e.g. "0 3 * * *" (daily, 03:00 UTC)')
    p.add_argument("--spec", required=True, help="PipelineJob JSON from compile-kubeflow")
    p.add_argument("--param", dest="params", action="append", default=[], metavar="NAME=VALUE",
                   help="run parameter (data_path, strategy, epochs, kd_gamma, kd_lam) for every "
                        "scheduled run instead of the compiled default (repeatable)")
    p.add_argument("--namespace", help="Kubeflow profile namespace (multi-user Kubeflow)")
    p.add_argument("--experiment", help="KFP experiment (default: the pipeline name)")
    p.add_argument("--name", help="recurring run name (default: the pipeline name)")
    p.set_defaults(func=_cmd_schedule)


def _with_cli_settings(config: PipelineConfig, image: str | None, beam_runner: str | None,
                       beam_args: list[str]) -> PipelineConfig:
    """`config` with compile-kubeflow's --image/--beam-runner/--beam-arg applied."""
    kf = config.kubeflow
    runner = beam_runner or kf.beam_runner
    kf = dataclasses.replace(
        kf, image=image or kf.image, beam_runner=runner,
        beam_args={**kf.beam_args, runner: (*kf.beam_args.get(runner, ()), *beam_args)})
    return dataclasses.replace(config, kubeflow=kf)


def _cmd_compile(args: argparse.Namespace) -> int:
    from pfdx.pipeline import kubeflow_compile, kubeflow_params

    config = _with_cli_settings(load_config(args.config, args.overrides), args.image,
                                args.beam_runner, args.beam_args)
    job = kubeflow_compile.compile_pipeline(config, args.out)
    tasks = job["pipelineSpec"]["root"]["dag"]["tasks"]
    params = kubeflow_params.declare(config)
    print(f"wrote {args.out}: {len(tasks)} tasks, image {config.kubeflow.image}, "
          f"Beam {config.kubeflow.beam_runner}, Trainer GPUs {config.kubeflow.trainer_gpus}; "
          f"run parameters {', '.join(f'{k}={p.default}' for k, p in params.items())}")
    return 0


def _cmd_schedule(args: argparse.Namespace) -> int:
    import kfp_server_api
    import urllib3

    from pfdx.pipeline import kubeflow_schedule

    try:
        run = kubeflow_schedule.schedule(args.host, args.spec, args.cron, args.params,
                                         namespace=args.namespace, experiment=args.experiment,
                                         name=args.name)
    except kubeflow_schedule.ScheduleError as e:
        print(f"pfdx: error: {e}", file=sys.stderr)
        return 2
    except kfp_server_api.ApiException as e:
        print(f"pfdx: error: Kubeflow Pipelines at {args.host} answered {e.status} "
              f"{e.reason}: {e.body}", file=sys.stderr)
        return 1
    except urllib3.exceptions.HTTPError as e:
        print(f"pfdx: error: cannot reach Kubeflow Pipelines at {args.host}: {e}", file=sys.stderr)
        return 1
    print(f"recurring run {run.recurring_run_id} ({run.display_name}): cron "
          f"{run.trigger.cron_schedule.cron!r}, parameters {run.runtime_config.parameters}")
    return 0
