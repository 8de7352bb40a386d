"""`pfdx select-features`: the selection Beam job outside the pipeline.

Beam and TFX are imported inside the handler, so `pfdx --help` stays fast.
"""
from __future__ import annotations

import argparse
from typing import Callable


def add_cli_parser(subparsers: argparse._SubParsersAction,
                   add_config_args: Callable[[argparse.ArgumentParser], None]) -> None:
    """Registers `select-features`; `add_config_args` adds the CLI's --config/--set."""
    p = subparsers.add_parser(
        "select-features",
        help="rank privileged features (HA-PFD §3.3, Eq. 8 + 9) with the selection Beam job")
    p.add_argument("--data", required=True,
                   help="tf.Example TFRecords, gzip or not: a glob, a directory, or an "
                        "ExampleGen output directory (its Split-train/ is read)")
    p.add_argument("--out", required=True,
                   help="selection JSON to write; the MI chart goes next to it (.png)")
    p.add_argument("--beam-arg", dest="beam_args", action="append", default=[], metavar="FLAG",
                   help="one more Beam pipeline flag, e.g. --beam-arg=--runner=FlinkRunner "
                        "(repeatable; default: DirectRunner with the config's runner settings)")
    add_config_args(p)
    p.set_defaults(func=select_features_command)


def select_features_command(args: argparse.Namespace) -> int:
    from pfdx.config import load_config
    from pfdx.features import selection_beam

    config = load_config(args.config, args.overrides)
    result = selection_beam.run_standalone(args.data, args.out, config,
                                           config.beam_pipeline_args + list(args.beam_args))
    dropped = sorted(n for n, f in result["features"].items()
                     if f["reason"] == "too_informative")
    print(f"selected {len(result['selected'])} of {len(config.data.columns.privileged)} "
          f"privileged features from {result['rows']['clicked']} clicked rows: "
          f"{', '.join(result['selected'])}")
    print(f"dropped as too informative: {', '.join(dropped) or '-'}; wrote {args.out}")
    return 0
