"""Session-wide test set-up: checkpoints are built once per session, with TensorFlow and Keras as the oracle.

Builders live in their own modules (tf_builders.py, keras_builders.py); their session-scoped fixtures are
re-exported here so every test module can use them.
"""

from __future__ import annotations

import os

# Quiet TensorFlow before anything imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from keras_builders import *  # noqa: F403
from tf_builders import *  # noqa: F403
