"""Code copied as it is into best_model.py: the runtime's modules and single definitions.

    RUNTIME          every module of automodel.runtime, body after its imports, in MODULES order
    IMPORTS          the import block those bodies need (and the script's generated part)
    ENSEMBLE_RUNTIME the same for an ensemble script: runtime.ensemble's `train` in place of
                     api's; ENSEMBLE_IMPORTS, and ENSEMBLE_GENERATED, the names it reads
    definition(m, n) the source of top-level definition `n` of module `m` (a class, a table)
    NAMES            the script's top-level names besides its blocks'

A runtime module imports its siblings by name, so once the modules are pasted one after another
those names are defined in the script and the imports of automodel are simply left out.
"""

from __future__ import annotations

import ast
import inspect
import sys
from types import ModuleType

from automodel.runtime import (
    api,
    cli,
    ensemble,
    evaluation,
    explain,
    importance,
    inputs,
    loop,
    placeholders,
    recipe,
)

# The user's entry points first, then what they run, then the command line: a reader meets
# the script top-down. Module-level statements only read generated names or their own module,
# and default values those of a module above (explain's read importance's REPEATS).
MODULES = (api, inputs, evaluation, importance, explain, recipe, loop, cli)
ENSEMBLE_MODULES = (api, ensemble, inputs, evaluation, importance, explain, recipe, loop, cli)
# What an ensemble script leaves out of a module: its own definition replaces it.
ENSEMBLE_REPLACES = {api: ("train",)}


def _tree(module: ModuleType) -> tuple[str, ast.Module]:
    source = inspect.getsource(module)
    return source, ast.parse(source)


def body(module: ModuleType, without: tuple[str, ...] = ()) -> str:
    """A module's source after its docstring and imports (which must all come first),
    less the top-level functions or classes named in `without` (and the blank lines after
    them, so the layout stays as ruff formats it)."""
    source, tree = _tree(module)
    statements = tree.body[1:] if ast.get_docstring(tree) is not None else tree.body
    imports = [s for s in statements if isinstance(s, (ast.Import, ast.ImportFrom))]
    if statements[: len(imports)] != imports:
        raise ValueError(f"{module.__name__}: imports must precede the module's code")
    lines = source.splitlines(keepends=True)
    for node in reversed(statements):
        if getattr(node, "name", None) in without:
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)]) - 1
            end = node.end_lineno
            while end < len(lines) and not lines[end].strip():
                end += 1
            lines[first:end] = []
    missing = set(without) - {getattr(node, "name", None) for node in statements}
    if missing:
        raise ValueError(f"{module.__name__} defines no {sorted(missing)[0]!r} to leave out")
    start = imports[-1].end_lineno if imports else 0
    return "".join(lines[start:]).strip("\n")


def imports(modules: tuple[ModuleType, ...]) -> str:
    """The modules' imports from outside automodel, merged and ordered as isort orders them:
    __future__, the standard library, then the rest; `import x` before `from x import y`."""
    plain: set[tuple[str, str | None]] = set()
    named: dict[str, set[str]] = {}
    for module in modules:
        for node in _tree(module)[1].body:
            if isinstance(node, ast.Import):
                plain |= {(a.name, a.asname) for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.module.startswith("automodel"):
                named.setdefault(node.module, set()).update(a.name for a in node.names)
    future = named.pop("__future__", set())
    groups = []
    for stdlib in (True, False):
        lines = [
            f"import {name}" + (f" as {alias}" if alias else "")
            for name, alias in sorted(plain)
            if _stdlib(name) == stdlib
        ]
        lines += [
            f"from {name} import {', '.join(sorted(named[name]))}"
            for name in sorted(named)
            if _stdlib(name) == stdlib
        ]
        groups.append("\n".join(lines))
    return "\n\n".join([f"from __future__ import {', '.join(sorted(future))}", *groups])


def _stdlib(module: str) -> bool:
    return module.split(".")[0] in sys.stdlib_module_names


def definition(module: ModuleType, name: str) -> str:
    """The source of the top-level class, function or assignment `name` in `module`."""
    source, tree = _tree(module)
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and node.name == name:
            return ast.get_source_segment(source, node)
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return ast.get_source_segment(source, node)
    raise ValueError(f"{module.__name__} defines no {name!r} at its top level")


def defined(tree: ast.Module) -> set[str]:
    """The names a module's top-level statements bind: classes, functions, assignments and
    imports."""
    out: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            out.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            out |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            out |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return out


def _bodies(modules: tuple[ModuleType, ...], generated: set[str], without=None) -> str:
    """The modules' bodies, one after another; a name two of them define (or one defines and
    the exporter generates) would silently replace the other in the script, so it is refused.
    `without` maps a module to the definitions left out of it."""
    seen = {name: "the generated constants" for name in generated}
    texts = []
    for module in modules:
        text = body(module, (without or {}).get(module, ()))
        for name in defined(ast.parse(text)):
            if name in seen:
                raise ValueError(f"{module.__name__} and {seen[name]} both define {name!r}")
            seen[name] = module.__name__
        texts.append(text)
    return "\n\n\n".join(texts)


def reads(text: str, names: frozenset[str]) -> frozenset[str]:
    """Which of `names` the code `text` reads."""
    loaded = {n.id for n in ast.walk(ast.parse(text)) if isinstance(n, ast.Name)}
    return frozenset(loaded & names)


# The names the exporter writes above the runtime, for which placeholders stands in.
GENERATED = frozenset(defined(ast.parse(body(placeholders))))
RUNTIME = _bodies(MODULES, GENERATED)
IMPORTS = imports(MODULES)
ENSEMBLE_RUNTIME = _bodies(ENSEMBLE_MODULES, GENERATED, ENSEMBLE_REPLACES)
ENSEMBLE_IMPORTS = imports(ENSEMBLE_MODULES)
# An ensemble script has no single recipe (OPTIMIZER, LR, ..., new_model): only these.
ENSEMBLE_GENERATED = reads(ENSEMBLE_RUNTIME, GENERATED)

# The script's top-level names other than its blocks': a block class must not shadow one.
NAMES = (
    GENERATED
    | defined(ast.parse(IMPORTS + "\n" + RUNTIME))
    | defined(ast.parse(ENSEMBLE_IMPORTS + "\n" + ENSEMBLE_RUNTIME))
)
