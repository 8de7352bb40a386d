"""The model library: layers, losses, strategies, the joint teacher/student model, metrics.

Importing it sets the Keras 2 flag (via `pfdx`) before TensorFlow is imported.
"""
import pfdx  # noqa: F401
