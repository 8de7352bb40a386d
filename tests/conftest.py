"""Test-wide settings, following TFX's own conftest: quiet threads, no gRPC fork support;
and a private temporary folder, removed at the end, so the suite leaves /tmp as it found it."""
import os
import shutil
import tempfile

# Everything temporary (pytest's tmp_path, TFX, Beam workers, TF autograph) goes here:
# set before anything asks tempfile for its folder; workers inherit TMPDIR.
SUITE_TMP = tempfile.mkdtemp(prefix="pfdx-tests-")
os.environ["TMPDIR"] = tempfile.tempdir = SUITE_TMP

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

import pfdx  # noqa: E402,F401  (sets the Keras flag before any TF import)
from pfdx.simulator import simulate  # noqa: E402


@pytest.fixture(scope="session")
def sim_log():
    """A small simulated impression log shared by tests (read-only)."""
    return simulate.simulate(60_000, seed=11)


@pytest.fixture
def autograph_conversions(monkeypatch):
    """The qualified names of the functions autograph converts while the test runs."""
    from tensorflow.python.autograph.impl import api

    converted, convert = [], api._convert_actual

    def spy(entity, program_ctx):
        converted.append(getattr(entity, "__qualname__", repr(entity)))
        return convert(entity, program_ctx)

    monkeypatch.setattr(api, "_convert_actual", spy)
    return converted


def pytest_unconfigure(config):
    """Last hook of a run, after pytest's own tmp_path bookkeeping."""
    shutil.rmtree(SUITE_TMP, ignore_errors=True)
