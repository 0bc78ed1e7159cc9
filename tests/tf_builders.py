"""Session-scoped fixtures that build TensorFlow bundle checkpoints (see conftest.py)."""
