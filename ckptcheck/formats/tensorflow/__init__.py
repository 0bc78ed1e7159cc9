"""TensorFlow's on-disk formats: tensor bundles, V1 checkpoints, their tables, protobufs and dtypes."""
