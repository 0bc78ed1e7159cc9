"""The training run README's `ckptcheck history` example reads (issue 25's scenario): a small BERT-like Keras 3
model trained 200 steps with Adam, a tf.train.CheckpointManager save every 25 steps, one layer frozen by mistake
(block_1_ffn_out, trainable=False) and an Inf written into block_0's attention query kernel after step 160 (the
next save, at 175, is the first to hold it).

    python bench/history_demo.py DIR        # then: ckptcheck history DIR --group --html run.html

Needs the tf extra. Fixed seeds: the same run each time.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

VOCAB, LENGTH, WIDTH, HEADS, BLOCKS = 200, 16, 32, 2, 2
STEPS, EVERY, INF_AT = 200, 25, 160


def build():  # type: ignore[no-untyped-def]
    import keras

    tokens = keras.Input((LENGTH,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(VOCAB, WIDTH, name="embeddings")(tokens)
    for i in range(BLOCKS):
        attended = keras.layers.MultiHeadAttention(HEADS, WIDTH // HEADS, name=f"block_{i}_attention")(x, x)
        x = keras.layers.LayerNormalization(name=f"block_{i}_attention_norm")(x + attended)
        hidden = keras.layers.Dense(4 * WIDTH, activation="gelu", name=f"block_{i}_ffn_in")(x)
        x = keras.layers.LayerNormalization(name=f"block_{i}_ffn_norm")(
            x + keras.layers.Dense(WIDTH, name=f"block_{i}_ffn_out")(hidden))
    pooled = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    outputs = keras.layers.Dense(2, name="classifier")(pooled)
    return keras.Model(tokens, outputs, name="bert")


def main() -> None:
    import keras
    import numpy as np
    import tensorflow as tf

    directory = sys.argv[1]
    keras.utils.set_random_seed(0)
    model = build()
    model.get_layer("block_1_ffn_out").trainable = False  # the mistake
    optimizer = keras.optimizers.Adam(1e-3)
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=model, optimizer=optimizer), directory,
                                         max_to_keep=10)
    rng = np.random.default_rng(0)
    x = rng.integers(0, VOCAB, size=(64, LENGTH), dtype=np.int32)
    y = (x[:, 0] % 2).astype(np.int32)
    for step in range(1, STEPS + 1):
        batch = rng.integers(0, 64, size=16)
        model.train_on_batch(x[batch], y[batch])
        if step == INF_AT:  # between two saves: the save at 175 is the first to hold it
            query = model.get_layer("block_0_attention")._query_dense.kernel
            value = query.numpy()
            value[0, 0, 0] = np.inf
            query.assign(value)
        if step % EVERY == 0:
            manager.save(checkpoint_number=step)
    print(f"wrote {len(manager.checkpoints)} checkpoints to {directory}")


if __name__ == "__main__":
    main()
