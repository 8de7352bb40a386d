"""`pfdx run` as a user sees it (issue 17, items 9, 13, 17): a line per component and
a short summary on the terminal, library output in a log file under the output root,
a one-line error when a component fails, and nothing left in the temporary folder.

TFX's Beam executors used to build an sdist of TFX into a fresh temporary folder at
every Beam step (~52 MB each, never removed), and TF autograph writes its generated
files there too; `local_runner.run` gives the run a temporary folder of its own under
the output root and removes it.
"""
import glob
import os
import subprocess
import sys

import pytest

from tests.pipeline_helpers import FAST

pytestmark = pytest.mark.e2e

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A small model on a small log: what is under test is what the user sees.
SMALL = ["data.simulated_rows=20000", "model.epochs=1", "model.hash_buckets=1000",
         "model.batch_size=64", "model.hidden_units=[32,16]",
         "model.alignment.mapping_hidden_units=[16]"]


def _pfdx_run(tmp_path, *overrides):
    """Runs `pfdx run` in a subprocess whose TMPDIR is a private, empty folder."""
    private = tmp_path / "tmp"
    private.mkdir()
    sets = [arg for o in (f"runner.output_root={tmp_path / 'out'}", *FAST, *overrides)
            for arg in ("--set", o)]
    proc = subprocess.run([sys.executable, "-m", "pfdx.pipeline.cli", "run", *sets], cwd=REPO,
                          env=dict(os.environ, TMPDIR=str(private)), capture_output=True,
                          text=True, timeout=1500)
    return proc, private


def test_a_run_is_quiet_and_leaves_the_temporary_folder_as_it_found_it(tmp_path):
    proc, private = _pfdx_run(tmp_path, *SMALL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = (proc.stdout + proc.stderr).splitlines()
    assert len(lines) <= 30, "\n".join(lines)
    assert proc.stderr == ""
    by_component = {line.split()[0]: line for line in lines if line.split()[1:2] in (
        ["ran"], ["cached"])}
    assert "rows read" in by_component["ClickLogExampleGen"]
    assert "student AUC" in by_component["Trainer"]
    assert {"PrivilegedTransform", "Evaluator", "Pusher"} <= set(by_component)
    (log_file,) = glob.glob(str(tmp_path / "out" / "logs" / "run-*.log"))
    assert "tensorflow" in open(log_file).read()  # what the terminal was spared
    assert os.listdir(private) == []
    assert glob.glob(str(tmp_path / "out" / ".tmp-*")) == []


def test_a_failed_component_is_one_error_without_a_traceback(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "part-0.csv").write_text("conversion,click\n1,1\n")  # no feature column
    proc, private = _pfdx_run(tmp_path, f"data.path={logs}")
    assert proc.returncode == 1
    assert proc.stdout.splitlines()[-1].startswith("ClickLogExampleGen")
    assert "failed" in proc.stdout.splitlines()[-1]
    assert "Traceback" not in proc.stderr and "apache_beam" not in proc.stderr
    assert proc.stderr.startswith("pfdx: error: ") and "missing required column" in proc.stderr
    assert len(proc.stderr.splitlines()) <= 4, proc.stderr
    assert os.listdir(private) == []
