"""How TensorFlow spells the keys a tensor bundle stores, named once."""

OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"  # a TF2 checkpoint's serialized TrackableObjectGraph
VALUE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"  # a TF2 variable's key: its object path, then this
SAVE_COUNTER_KEY = "save_counter" + VALUE_SUFFIX  # tf.train.Checkpoint's own counter, a root child
