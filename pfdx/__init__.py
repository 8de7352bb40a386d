"""pfdx: privileged features distillation for CVR prediction on TFX.

The installed package is ``pfdx``; its sub-packages live in the repository's
top-level folders (``pipeline/``, ``components/``, ``models/``, ``features/``,
``serving/``, ``simulator/``, ``experiments/``, ``reports/``) and are mapped to
``pfdx.<name>`` by setup.py.
"""
import os

# tensorflow-recommenders and TFX 1.16 need Keras 2 (tf-keras). TF >= 2.16 picks
# Keras 3 unless this is set before TensorFlow is first imported, so the package
# sets it on import rather than leaving it to every user and worker process.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

__version__ = "0.1.0"
