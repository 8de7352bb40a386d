"""ClickLogExampleGen alone on a pipeline config's log: wall time and rows/s.

    python bench/example_gen.py [--config pipeline/configs/simulated.yaml] [--repeats 2]
                                [--set KEY=VALUE ...]

`make run`'s log is 1M simulated impressions of which 3 % are clicked: ExampleGen
reads and checks every row to keep those, and was the largest share of the run
after the Trainer. Each repeat runs the component in a fresh pipeline root and MLMD
(LocalDagRunner, the config's Beam settings), so none hits the cache; the log itself
is the one `make run` writes (simulated once, then reused).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pfdx  # noqa: E402,F401
from tfx import v1 as tfx  # noqa: E402

from pfdx.components.click_log_example_gen import ClickLogExampleGen  # noqa: E402
from pfdx.config import load_config  # noqa: E402
from pfdx.pipeline import local_runner  # noqa: E402


def run_once(config, input_base: str, root: str) -> tuple[float, dict]:
    gen = ClickLogExampleGen(input_base=input_base, data_config=config.to_dict()["data"],
                             pattern=config.data.file_pattern, space=config.space)
    pipeline = tfx.dsl.Pipeline(
        pipeline_name="bench-example-gen", pipeline_root=os.path.join(root, "pipeline"),
        components=[gen], enable_cache=False,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            os.path.join(root, "metadata.sqlite")),
        beam_pipeline_args=local_runner.beam_args(config))
    start = time.perf_counter()
    with local_runner.run_temp_dir(root):
        tfx.orchestration.LocalDagRunner().run(pipeline)
    seconds = time.perf_counter() - start
    (counts_file,) = [os.path.join(d, "row_counts.json")
                      for d, _, files in os.walk(root) if "row_counts.json" in files]
    with open(counts_file, encoding="utf-8") as f:
        return seconds, json.load(f)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="pipeline/configs/simulated.yaml")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, as `pfdx run --set`")
    args = parser.parse_args()
    config = load_config(args.config, args.set)
    input_base = local_runner.ensure_input(config)
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory() as root:
            seconds, counts = run_once(config, input_base, root)
        print(f"repeat {repeat}: {seconds:.1f} s, {counts['read']} rows read "
              f"({counts['read'] / seconds:,.0f} rows/s), {counts.get('used', 0)} used, "
              f"{counts.get('quarantined', 0)} quarantined", flush=True)


if __name__ == "__main__":
    sys.exit(main())
