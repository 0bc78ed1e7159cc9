"""Step 0: restore-check's arguments, checked before TensorFlow is imported (which takes seconds): the model file
exists and defines FUNCTION (read with `ast`, never imported here), a rename map to apply is one, and the
checkpoint path names a checkpoint. A typo costs a fraction of a second, not a TensorFlow start-up."""

from __future__ import annotations

import ast
import os
import zipfile
from collections.abc import Iterator

from ckptcheck.errors import UsageError
from ckptcheck.restore_check.user_model import model_file_and_function

MAX_MODEL_SOURCE_BYTES = 16 << 20  # a model file larger than this is imported without the early check


def check_arguments(checkpoint: str, model: str, apply_map: str | None = None) -> None:
    """Raise UsageError (or CheckpointNotFoundError) for the first argument that cannot work, naming it."""
    check_model_spec(model)
    if apply_map is not None:
        from ckptcheck.restore_check.suggest import read_rename_map

        read_rename_map(apply_map)
    from ckptcheck.formats.resolve import resolve

    resolve(checkpoint)


def check_model_spec(spec: str) -> None:
    """``FILE.keras`` exists and is a zip; ``FILE.py:FUNCTION`` names a file that parses and binds FUNCTION at
    its top level (a def, a class, an assignment or an import: anything the import would bind)."""
    if spec.lower().endswith(".keras"):
        if not os.path.isfile(spec):
            raise UsageError("no such model file", path=spec)
        if not zipfile.is_zipfile(spec):
            raise UsageError("not a .keras archive (not a zip file)", path=spec)
        return
    path, function = model_file_and_function(spec)
    if os.path.getsize(path) > MAX_MODEL_SOURCE_BYTES:
        return
    try:
        with open(path, "rb") as f:
            source = f.read()
        tree = ast.parse(source, filename=path)
    except SyntaxError as exc:
        from ckptcheck.restore_check.user_model import ModelLoadError, one_line

        where = f"{exc.filename or path}:{exc.lineno}" if exc.lineno is not None else path
        raise ModelLoadError(f"SyntaxError: {one_line(str(exc))}", path=where,
                             hint=f"raised while importing {os.path.basename(path)}") from None
    except (OSError, ValueError, UnicodeDecodeError):
        return  # the import says what is wrong with it, in its own words
    bound, dynamic = top_level_names(tree)
    if function in bound or dynamic:
        return
    defined = sorted(n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
                     and not n.name.startswith("_"))
    raise UsageError(f"defines no function {function!r}", path=path,
                     hint=f"functions it defines: {', '.join(defined)}" if defined else "it defines no functions")


def top_level_names(tree: ast.Module) -> tuple[set[str], bool]:
    """The names a module binds when imported (at its top level, in `if`/`try`/`with`/`for` blocks too), and
    whether it may bind others no parse can see (`from x import *`, `globals()`, a module `__getattr__`)."""
    bound: set[str] = set()
    dynamic = False
    for node in _top_level(tree.body):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
            dynamic |= node.name == "__getattr__"
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                if alias.name == "*":
                    dynamic = True
                else:
                    bound.add((alias.asname or alias.name).split(".")[0])
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign | ast.For | ast.AsyncFor | ast.With
                        | ast.AsyncWith):
            targets: list[ast.AST] = []
            if isinstance(node, ast.Assign):
                targets = list(node.targets)
            elif isinstance(node, ast.AnnAssign | ast.AugAssign | ast.For | ast.AsyncFor):
                targets = [node.target]
            else:
                targets = [item.optional_vars for item in node.items if item.optional_vars is not None]
            for target in targets:
                bound.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        if any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in ("globals", "exec", "setattr")
               for n in ast.walk(node)) and not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef
                                                           | ast.ClassDef):
            dynamic = True
    for expr in ast.walk(tree):  # a walrus binds a name too (lenient: inside functions as well)
        if isinstance(expr, ast.NamedExpr) and isinstance(expr.target, ast.Name):
            bound.add(expr.target.id)
    return bound, dynamic


def _top_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Statements run at import: the body, and the bodies of its compound statements (not of functions or
    classes)."""
    for node in body:
        yield node
        for field in ("body", "orelse", "finalbody"):
            inner = getattr(node, field, None)
            if isinstance(inner, list) and not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef
                                                          | ast.ClassDef):
                yield from _top_level([n for n in inner if isinstance(n, ast.stmt)])
        for handler in getattr(node, "handlers", ()) or ():
            yield from _top_level(handler.body)
        if isinstance(node, ast.Match):
            for case in node.cases:
                yield from _top_level(case.body)
