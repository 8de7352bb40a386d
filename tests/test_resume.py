"""The Trainer's backups (components/resume.py): at an epoch's end, at most every
`runner.backup_seconds`."""
import os

import pfdx  # noqa: F401
import numpy as np
import tensorflow as tf

from pfdx.components import resume


class _Backups(tf.keras.callbacks.Callback):
    """After each epoch (and its backup): whether the backup folder holds a checkpoint."""

    def __init__(self, folder):
        super().__init__()
        self.folder, self.seen = folder, []

    def on_epoch_end(self, epoch, logs=None):
        self.seen.append(os.path.exists(os.path.join(self.folder, "chief", "checkpoint")))


def _backups_per_epoch(folder: str, seconds: float) -> list[bool]:
    model = tf.keras.Sequential([tf.keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    x, y = np.ones((8, 2), np.float32), np.ones((8, 1), np.float32)
    spy = _Backups(folder)
    model.fit(x, y, epochs=3, verbose=0,
              callbacks=[resume.PeriodicBackupAndRestore(folder, seconds), spy])
    return spy.seen


def test_backs_up_every_epoch_at_zero_seconds_and_deletes_it_at_the_end(tmp_path):
    folder = str(tmp_path / "backup")
    assert _backups_per_epoch(folder, 0) == [True, True, True]
    assert not os.path.exists(os.path.join(folder, "chief", "checkpoint"))


def test_writes_nothing_before_its_interval(tmp_path):
    folder = str(tmp_path / "backup")
    assert _backups_per_epoch(folder, 3600) == [False, False, False]
