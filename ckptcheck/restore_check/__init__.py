"""Will a model restore from this checkpoint, and what would be left behind?

`restore_check(checkpoint, model)` builds the user's model (``FILE.py:FUNCTION``, or the architecture of a
``.keras`` file), creates what it would otherwise create lazily, and restores the checkpoint into it with the
format's own restore: `tf.train.Checkpoint.restore` for TF2 checkpoints and SavedModel variables (object-based),
the same call for TF1 checkpoints (which have no object graph, so TensorFlow falls back to variable names), and
`Model.load_weights` for Keras files.

What happened is measured, not predicted. Before the restore every variable is filled with a fingerprint, a value
no checkpoint holds by chance; afterwards a variable whose fingerprint is gone was written by the restore, and its
value is compared bit for bit with the stored values, read by ckptcheck's own readers. Alongside, the format's
matching rule is computed to say why: the stored name each variable is looked up by (TF2: its object path, matched
edge by edge from the root as TensorFlow does; TF1: its variable name; Keras 3: the key Keras's own writer gives
it, found by saving the fingerprinted model; legacy .h5: its position among the layers with weights), and whether
that name is missing or holds another dtype or shape. Unrestored variables and unused values of the same dtype
and shape are paired into rename suggestions only on evidence (the value's own saved name equals the variable's,
or does after one consistent rename of a layer; or it is the only unused value of its dtype and shape under the
variable's layer, for the only variable there without one; or it is a Keras 2 optimizer slot of the variable's
source), which `write_rename_map` writes as a reviewable JSON mapping and `apply_rename_map` applies.

One module per step, in the order they run:

- `arguments`: the model file, FUNCTION (by `ast`), a rename map and the checkpoint path, checked before TensorFlow
  is imported;
- `user_model`: load the user's model and create what it creates lazily;
- `variables`: enumerate its variables, and the fingerprints they are filled with;
- `matching`: the stored name each variable is looked up by, per format;
- `stored`: the checkpoint's values, and whether a restored value is one of them;
- `measure`: run the restore and report what happened (`restore_check`);
- `suggest`: rename suggestions and rename maps;
- `keras3` (for a legacy .h5 restored into a Keras 3 model, and `keras3-check`): each layer of its config asked of
  the installed Keras.

TensorFlow and Keras are imported inside the functions that need them; the user's model file is imported with
its output sent to stderr, and its errors are reported as its own (type, message, file and line).
"""

from ckptcheck.formats.tensorflow.keys import VALUE_SUFFIX
from ckptcheck.restore_check.matching import short_key
from ckptcheck.restore_check.measure import restore_check
from ckptcheck.restore_check.suggest import (
    RENAME_MAP_SCHEMA,
    apply_rename_map,
    read_rename_map,
    rename_map_dict,
    rename_of,
    suggest,
    write_rename_map,
)
from ckptcheck.restore_check.user_model import (
    LoadedModel,
    ModelLoadError,
    build_lazy,
    load_model,
    parse_input_shapes,
    user_code,
)
from ckptcheck.restore_check.variables import initializer_text, variable_labels

__all__ = [
    "RENAME_MAP_SCHEMA",
    "VALUE_SUFFIX",
    "LoadedModel",
    "ModelLoadError",
    "apply_rename_map",
    "build_lazy",
    "initializer_text",
    "load_model",
    "parse_input_shapes",
    "read_rename_map",
    "rename_map_dict",
    "rename_of",
    "restore_check",
    "short_key",
    "suggest",
    "user_code",
    "variable_labels",
    "write_rename_map",
]
