"""Session-scoped fixtures that build Keras files (see conftest.py)."""
