"""The `pfdx compare` sub-command: its flags, as config overrides applied after
--config and --set, and the command itself."""
from __future__ import annotations

import argparse
import json
import os
from typing import Callable

from pfdx.config import ConfigError
from pfdx.models.registry import CLICK, IMPRESSION, STRATEGIES, names


def add_cli_parser(subparsers: argparse._SubParsersAction,
                   add_config_args: Callable[[argparse.ArgumentParser], None]) -> None:
    """Registers `compare`; `add_config_args` adds the CLI's --config/--set."""
    p = subparsers.add_parser(
        "compare", help="train every strategy on one time window, score them on a later one "
                        "(AUC, ECE, MCE, pred/label avg; mean and spread over seeds)")
    p.add_argument("--data", required=True,
                   help="the raw impression log in data.format: a folder (files matching "
                        "data.file_pattern), a file or a glob")
    p.add_argument("--out", help="output folder (default: <runner.output_root>/compare)")
    staged = "; ".join(f"{n} brings its {s.teacher_stage}" for n, s in STRATEGIES.items()
                       if s.teacher_stage is not None)
    p.add_argument("--strategies", help="comma-separated strategy names (sets "
                   "compare.strategies; default: every click-space strategy: "
                   f"{', '.join(names(CLICK))}). The impression-space ones "
                   f"({', '.join(names(IMPRESSION))}) train on every impression, "
                   f"much slower, so only when named; {staged}")
    p.add_argument("--seeds", type=int, help="runs per strategy (sets compare.seeds)")
    p.add_argument("--grid", action="append", default=[], metavar="[STRATEGY:]SETTING=V1,V2",
                   help="the per-run tuning grid, e.g. --grid kd.lam=1,10 or --grid "
                        "ha_pfd_v2:kd.gamma=0.5,1 (repeatable; sets tuning.grid.SETTING)")
    p.add_argument("--grid-metric", help="student_auc | student_ece | student_mce "
                   "(sets tuning.metric)")
    p.add_argument("--fixed", action="store_true",
                   help="no per-run tuning: every strategy at its configured values (the "
                        "paper's defaults unless --config/--set change them), to reproduce "
                        "the paper's settings (sets tuning.enabled=false)")
    add_config_args(p)
    p.set_defaults(func=compare_command)


def cli_overrides(args: argparse.Namespace) -> list[str]:
    """The command's flags as config overrides, applied after --config and --set."""
    out = []
    if args.strategies:
        out.append("compare.strategies=" + json.dumps(
            [s.strip() for s in args.strategies.split(",") if s.strip()]))
    if args.seeds is not None:
        out.append(f"compare.seeds={args.seeds}")
    for item in args.grid:
        key, sep, values = item.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise ConfigError(f"--grid {item!r}: expected [STRATEGY:]SETTING=V1,V2,...")
        out.append(f"tuning.grid.{key.strip()}=[{values}]")
    if args.grid_metric:
        out.append(f"tuning.metric={args.grid_metric}")
    if args.fixed:
        out.append("tuning.enabled=false")
    return out


def compare_command(args: argparse.Namespace) -> int:
    from pfdx.config import load_config
    from pfdx.experiments import compare

    config = load_config(args.config, list(args.overrides) + cli_overrides(args))
    out = args.out or config.resolve("compare")
    summary = compare.run(config, args.data, out)
    print(f"wrote {os.path.join(out, 'compare.md')}, compare.csv, runs.csv and "
          f"reliability.png in {out} ({summary['seconds']:.0f}s)")
    return 0
