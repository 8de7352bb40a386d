"""The `pfdx` command: simulate logs, run the pipeline, select features, compare
strategies, inspect the config, compile and schedule on Kubeflow."""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import tempfile
import time
import warnings

# A command-line user wants pfdx's messages, not TensorFlow's C++ start-up chatter
# or google-cloud's Python-version notices; -v brings INFO logs back.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
warnings.filterwarnings("ignore", category=FutureWarning)
# ... and in the Beam worker processes, which inherit the environment, not filters.
os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")

import pfdx  # noqa: E402,F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pfdx.config import ConfigError, load_config  # noqa: E402


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML/JSON pipeline config (see pipeline/configs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value, e.g. --set model.epochs=3 (repeatable)")


def _cmd_simulate(args: argparse.Namespace) -> int:
    from pfdx.simulator import simulate

    if args.days is not None and args.days < 1:
        raise ConfigError(f"--days: {args.days} is below 1")
    if args.days is None:
        frame = simulate.simulate(args.rows, args.seed, args.scenario)
        paths = simulate.write(frame, args.out, fmt=args.format, shards=args.shards)
        where = f"{len(paths)} file(s) in {args.out}"
    else:
        frame = simulate.simulate(args.rows, args.seed, args.scenario, days=args.days)
        folders = simulate.write_days(frame, args.out, fmt=args.format, shards=args.shards)
        where = (f"{len(folders)} day folder(s) {min(folders)} .. {max(folders)} in {args.out}; "
                 f"read them with data.file_pattern: \"{simulate.DAY_PATTERNS[args.format]}\"")
    clicks = int(frame["click"].sum())
    print(f"wrote {len(frame)} impressions of scenario {args.scenario} ({clicks} clicks, "
          f"{int(frame['conversion'].sum())} conversions) to {where}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from pfdx.pipeline import console

    config = load_config(args.config, args.overrides)
    log_file = config.resolve(os.path.join("logs", time.strftime("run-%Y%m%d-%H%M%S.log")))
    with contextlib.ExitStack() as stack:
        # Quiet: library output (TensorFlow's C++ and Beam's worker processes included)
        # to the log file, a line per component on the terminal; -v: all of it there.
        out = sys.stdout if args.verbose else stack.enter_context(
            console.library_output_to(log_file))
        try:
            from pfdx.pipeline import local_runner

            with console.ComponentLines(config.metadata_path, out):
                summary = local_runner.run(config)
        except Exception as e:
            if not args.verbose:
                e.add_note(f"library output and tracebacks: {log_file}")
            raise
    student = summary["trainer_eval"]
    teacher = (f", teacher AUC {student['teacher_auc']:.4f}" if "teacher_auc" in student else "")
    print(f"pipeline finished; outputs under {config.resolve('.')}")
    print(f"student on eval: AUC {student['student_auc']:.4f}, ECE {student['student_ece']:.4f}, "
          f"MCE {student['student_mce']:.4f}{teacher}")
    if "shipped" in student:  # the baseline gate's choice (models/champion.py)
        print(f"ships the {student['shipped'].replace('_', ' ')}: {student['ship_reason']}")
    if summary["blessed"]:
        print(f"blessed and pushed to {config.serving_dir}")
    else:
        print("not blessed, nothing pushed:\n  " + "\n  ".join(summary["blessing_failures"]))
    print(f"report: {os.path.join(config.reports_dir, 'report.md')}")
    return 0


def _cmd_show_config(args: argparse.Namespace) -> int:
    print(load_config(args.config, args.overrides).to_json())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pfdx", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    from pfdx.simulator.scenarios import SCENARIOS
    p = sub.add_parser("simulate", help="write a simulated ad impression log")
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--format", choices=("csv", "parquet", "tfrecord"), default="csv")
    p.add_argument("--shards", type=int, default=1)
    p.add_argument("--days", type=int, default=None,
                   help="spread the rows over N days from 2024-01-01 (UTC) and write one "
                        "folder per day, day=YYYY-MM-DD/ (data.file_pattern "
                        "\"day={YYYY}-{MM}-{DD}/*.csv\"); default: 14 days, one folder")
    p.add_argument("--scenario", choices=list(SCENARIOS), default="default",
                   help="the simulated regime (simulator/README.md)")
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser("run", help="run the pipeline locally (LocalDagRunner)")
    _add_config_args(p)
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("show-config", help="print the effective config as JSON")
    _add_config_args(p)
    p.set_defaults(func=_cmd_show_config)

    from pfdx.experiments import cli as compare_cli
    from pfdx.features import selection_cli
    from pfdx.pipeline import kubeflow
    selection_cli.add_cli_parser(sub, _add_config_args)
    compare_cli.add_cli_parser(sub, _add_config_args)
    kubeflow.add_parsers(sub, _add_config_args)
    # `pfdx run -v` as well as `pfdx -v run`; SUPPRESS keeps a flag given before
    # the command from being reset by the sub-command's default.
    for command in sub.choices.values():
        command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                             help="log at INFO level")
    return parser


def main(argv: list[str] | None = None) -> int:
    from pfdx.pipeline import console

    # The sub-commands' modules import TensorFlow, whose C++ start-up chatter (cuFFT /
    # cuDNN registration errors) bypasses Python: held back unless -v.
    with tempfile.TemporaryFile() as startup:
        with console.output_to(startup.fileno()):
            parser = build_parser()
        args = parser.parse_args(argv)
        if args.verbose:
            startup.seek(0)
            sys.stderr.buffer.write(startup.read())
    # TFX's Beam executors parse sys.argv + the Beam args with absl flags, where
    # pfdx's own `-v` would read as `--verbosity <next Beam arg>`: pfdx's arguments
    # are consumed here, so the executors must not see them.
    sys.argv = sys.argv[:1]
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError) as e:
        print(f"pfdx: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001  (a failed component: its message, not a trace)
        if args.verbose:
            raise
        notes = "".join(f"\n{note}" for note in getattr(e, "__notes__", ()))
        print(f"pfdx: error: {type(e).__name__}: {e}{notes}\n(run with -v for the full "
              "traceback and component logs)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
