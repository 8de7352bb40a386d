"""Offline experiments beside the pipeline: `pfdx compare` trains several strategies on
one train window of a log and scores them on a later test window, as HA-PFD's Tables
2-5 do, each tuned and gated as the pipeline would ship it. It reuses the pipeline's
own code at every step and adds no model code of its own:

- `cli.py`: the `compare` sub-command and its flags as config overrides;
- `strategies.py`: which strategies run, their example space and training order;
- `windows.py`: the raw log (ExampleGen's reader and rules) -> TRAIN / VALIDATION /
  TEST windows of tf.Example files, click space and impression space;
- `preprocessing.py`: the selection job and the Transform, fitted on TRAIN;
- `runs.py`: per-run tuning and every strategy x seed, with the Trainer's `Fitter`;
- `reports.py`: compare.csv / .md / .json, runs.csv, tuning.csv, reliability.png;
- `compare.py`: `run`, the whole comparison, in that order.

The default strategy list is the click-space strategies only: the impression-space
ones train on every impression (~25x the clicked rows on the simulated log, whose
CTR is ~4 %), and must be named in `--strategies`.
"""
