"""Sphinx extension: resolve Python cross-references the way Python itself resolves names.

The API reference (``api.md``, ``api/*.md``) documents every object once, where it is
defined or where the package exports it (``mtlbook.models.MMoE``, ``mtlbook.training.fit.fit``).
The docstrings, however, name objects the way a user writes them: ``mtlbook.fit`` (the
package re-exports it), ``MultiTaskData`` (imported into the module at hand),
``Callback.on_step_end`` or ``pd.DataFrame``. Sphinx's Python domain only matches names
textually, so with ``-n`` each of these would be a "reference target not found" warning.

On Sphinx's ``missing-reference`` event this extension imports the name in the context of
the module (and class) the reference was written in, and:

* if it is an object of ``mtlbook`` that the reference documents under another name, links
  to that page entry (``mtlbook.fit`` → ``mtlbook.training.fit.fit``); a member that a class
  inherits or overrides without a docstring links to the base class's entry
  (``CAGrad.weights`` → ``Weighting.weights``), and an instance attribute that a class sets
  in its methods links to the class (``RecordingTrainer.histories``);
* if it is an object of another package (Python's standard library, NumPy, pandas, PyTorch,
  matplotlib, ...; the usual aliases ``np``, ``pd``, ``nn``, ``plt`` are understood) or a
  private object of ``mtlbook`` (a name part starts with ``_``),
  renders it as plain code text: the site is built offline and links to no other site's
  documentation;
* otherwise (the name does not exist, or it is a public ``mtlbook`` object that no page
  documents) leaves the reference unresolved, so that Sphinx warns and the strict build
  fails. A typo in a docstring is still an error.

Names that cannot be imported from the reference's context are matched last against the
documented objects by their final dotted parts, and only when exactly one matches (this is
how summaries of module docstrings, shown in another page's table, find their targets).
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import re
from typing import Any

from docutils import nodes
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment

PACKAGE = "mtlbook"
_MISSING = object()


def _import_dotted(name: str) -> tuple[Any, str | None]:
    """The object named by the dotted path ``name`` (a module, then attributes) and the name
    of the module that holds it; ``(_MISSING, None)`` if there is no such object."""
    parts = name.split(".")
    for split in range(len(parts), 0, -1):
        modname = ".".join(parts[:split])
        try:
            obj: Any = importlib.import_module(modname)
        except ImportError:
            continue
        except Exception:  # a module that fails to import is not a target
            return _MISSING, None
        holder = obj.__name__
        for attr in parts[split:]:
            obj = _getattr_static_first(obj, attr)
            if obj is _MISSING:
                return _MISSING, None
            if inspect.ismodule(obj):
                holder = obj.__name__
        return obj, holder
    return _MISSING, None


def _getattr_static_first(obj: Any, attr: str) -> Any:
    """``obj.attr`` without running descriptors (a property stays a property)."""
    try:
        return inspect.getattr_static(obj, attr)
    except AttributeError:
        pass
    try:
        return getattr(obj, attr)
    except Exception:  # any failure means "no such attribute"
        return _MISSING


def _unwrap(obj: Any) -> Any:
    """The function behind a classmethod, staticmethod or bound method."""
    while True:
        inner = getattr(obj, "__func__", None)
        if inner is None:
            return obj
        obj = inner


def _owner_module(obj: Any, holder: str | None) -> str | None:
    """The module that defines ``obj``: its ``__module__`` for modules, classes and functions,
    else (a constant, an instance) the module it was found in."""
    if inspect.ismodule(obj):
        return obj.__name__
    if isinstance(obj, property):
        obj = obj.fget
    obj = _unwrap(obj)
    if inspect.isclass(obj) or inspect.isroutine(obj):
        module = getattr(obj, "__module__", None)
        if isinstance(module, str):
            return module
    return holder


def _is_ours(modname: str | None) -> bool:
    return modname is not None and (modname == PACKAGE or modname.startswith(PACKAGE + "."))


# Conventional import aliases that docstrings and annotations use (``pd.DataFrame``) even
# where the module at hand does not import them under that name.
ALIASES = {
    "np": "numpy",
    "pd": "pandas",
    "nn": "torch.nn",
    "F": "torch.nn.functional",
    "plt": "matplotlib.pyplot",
    "mpl": "matplotlib",
    "sns": "seaborn",
}


@functools.cache
def _type_checking_imports(modname: str) -> dict[str, str]:
    """Names that module ``modname`` imports only for type checking (under
    ``if TYPE_CHECKING:``), as ``{name: dotted path}``: its annotations use them, but Python
    cannot find them in the imported module."""
    try:
        module = importlib.import_module(modname)
        tree = ast.parse(inspect.getsource(module))
    except Exception:  # not an importable module with source: nothing to add
        return {}
    package = modname if hasattr(module, "__path__") else modname.rpartition(".")[0]
    names: dict[str, str] = {}
    for block in tree.body:
        if not isinstance(block, ast.If) or ast.unparse(block.test) not in (
            "TYPE_CHECKING",
            "typing.TYPE_CHECKING",
        ):
            continue
        for stmt in block.body:
            if isinstance(stmt, ast.Import):
                for alias in stmt.names:
                    if alias.asname:
                        names[alias.asname] = alias.name
            elif isinstance(stmt, ast.ImportFrom):
                source = stmt.module or ""
                if stmt.level:
                    base = package.split(".")[: len(package.split(".")) - stmt.level + 1]
                    source = ".".join([*base, *([source] if source else [])])
                for alias in stmt.names:
                    names[alias.asname or alias.name] = f"{source}.{alias.name}"
    return names


def _contexts(modname: str | None, clsname: str | None) -> list[str | None]:
    """Where a name written in ``modname`` (inside ``clsname``) may be looked up, innermost
    first: the class, the module, its parent packages, then nowhere (an absolute name)."""
    contexts: list[str | None] = []
    if modname:
        if clsname:
            contexts.append(f"{modname}.{clsname}")
        parts = modname.split(".")
        # A docstring of mtlbook.models.mmoe may name a sibling exported by mtlbook.models.
        contexts.extend(".".join(parts[:i]) for i in range(len(parts), 0, -1))
    contexts.append(None)
    return contexts


def _walk(context: str | None, parts: list[str]) -> tuple[Any, str | None, int] | None:
    """Look up ``parts`` in ``context`` as far as they go.

    Returns the deepest object reached, the module that holds it and how many of ``parts``
    were consumed, or None when not even the first part exists there. (None consumed: an
    instance attribute of the context class, which only its methods create.)
    """
    if context is None:
        # An absolute name: the longest importable module prefix, then attributes.
        for split in range(len(parts), 0, -1):
            obj, holder = _import_dotted(".".join(parts[:split]))
            if obj is not _MISSING:
                break
        else:
            return None
        consumed = split
    else:
        obj, holder = _import_dotted(context)
        if obj is _MISSING:
            return None
        if (
            inspect.isclass(obj)
            and len(parts) == 1
            and _getattr_static_first(obj, parts[0]) is _MISSING
            and _sets_attribute(obj, parts[0])
        ):
            return obj, holder, 0  # an instance attribute, named inside its class
        consumed = 0
    while consumed < len(parts):
        nxt = _getattr_static_first(obj, parts[consumed])
        if nxt is _MISSING:
            break
        obj = nxt
        if inspect.ismodule(obj):
            holder = obj.__name__
        consumed += 1
    if consumed == 0:
        return None
    return obj, holder, consumed


class _Index:
    """Documented (not aliased) Python objects of the build, keyed by object identity."""

    def __init__(self, env: BuildEnvironment) -> None:
        self.by_id: dict[int, str] = {}
        self._keep: list[Any] = []  # keep the objects alive so that their ids stay unique
        domain = env.get_domain("py")
        for name, entry in domain.objects.items():
            if entry.aliased or entry.objtype == "module":
                continue
            obj, _ = _import_dotted(name)
            if obj is _MISSING or not self._indexable(obj):
                continue
            key = self._key(obj)
            # Keep the shortest documented name (the exported one) if there are several.
            if key not in self.by_id or len(name) < len(self.by_id[key]):
                self.by_id[key] = name
            self._keep.append(obj)

    @staticmethod
    def _indexable(obj: Any) -> bool:
        obj = _unwrap(obj)
        return inspect.isclass(obj) or inspect.isfunction(obj) or isinstance(obj, property)

    @staticmethod
    def _key(obj: Any) -> int:
        return id(_unwrap(obj))

    def name_of(self, obj: Any) -> str | None:
        if not self._indexable(obj):
            return None
        return self.by_id.get(self._key(obj))


# Built at the first missing reference of a build (all pages have been read by then) and
# dropped when the environment changes; kept here, not in the pickled environment.
_STATE: dict[str, _Index | None] = {"index": None}


def _index(env: BuildEnvironment) -> _Index:
    index = _STATE["index"]
    if index is None:
        index = _STATE["index"] = _Index(env)
    return index


def _documented_name(env: BuildEnvironment, path: list[str], rest: list[str]) -> str | None:
    """The documented name of the ``mtlbook`` object at ``path``, followed by ``rest``.

    ``path`` names an object that exists; ``rest`` are names below it that Python cannot see
    (an instance attribute such as ``FitResult.history``, documented under its class).
    """
    index = _index(env)
    domain = env.get_domain("py")
    # The longest prefix of ``path`` that some page documents, under whatever name.
    for split in range(len(path), 0, -1):
        obj, _ = _import_dotted(".".join(path[:split]))
        if obj is _MISSING:
            continue
        if inspect.ismodule(obj):
            base = obj.__name__ if obj.__name__ in domain.modules else None
        else:
            base = index.name_of(obj)
        if base is None:
            continue
        tail = [*path[split:], *rest]
        name = ".".join([base, *tail])
        if name in domain.objects or name in domain.modules:
            return name
        if inspect.isclass(obj) and tail:
            # A member that the class inherits or overrides without a docstring: documented
            # on a base class (``CAGrad.weights`` → ``Weighting.weights``).
            for klass in obj.__mro__[1:]:
                klass_name = index.name_of(klass)
                if klass_name and f"{klass_name}.{'.'.join(tail)}" in domain.objects:
                    return f"{klass_name}.{'.'.join(tail)}"
            # An instance attribute that the class sets in its methods and describes in its
            # own docstring (``RecordingTrainer.histories``): link to the class.
            if len(tail) == 1 and _sets_attribute(obj, tail[0]):
                return base
    return None


def _sets_attribute(klass: type, attr: str) -> bool:
    """Whether a method of ``klass`` assigns ``self.<attr>`` (checked in its source)."""
    try:
        source = inspect.getsource(klass)
    except (OSError, TypeError):
        return False
    return re.search(rf"\bself\.{re.escape(attr)}\s*(:[^=\n]+)?=[^=]", source) is not None


def on_missing_reference(
    app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: nodes.Element
) -> nodes.Element | None:
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    if not target or " " in target.strip():
        return None  # not a Python name (e.g. prose that napoleon took for a type)
    modname = node.get("py:module")
    clsname = node.get("py:class")
    domain = env.get_domain("py")
    reftype = node.get("reftype") or "obj"

    parts = target.lstrip(".~").split(".")
    lookups = [(context, parts) for context in _contexts(modname, clsname)]
    if parts[0] in ALIASES:
        lookups.append((None, [*ALIASES[parts[0]].split("."), *parts[1:]]))
    if modname:
        checked_only = _type_checking_imports(modname)
        if parts[0] in checked_only:
            lookups.append((None, [*checked_only[parts[0]].split("."), *parts[1:]]))
    for context, names in lookups:
        found = _walk(context, names)
        if found is None:
            continue
        obj, holder, consumed = found
        if not _is_ours(_owner_module(obj, holder)):
            if consumed == len(names):
                return contnode  # another package's object: text, no link
            continue  # not found there (pandas.DataFrme): let Sphinx warn unless found later
        path = [*(context.split(".") if context else []), *names[:consumed]]
        rest = names[consumed:]
        name = _documented_name(env, path, rest)
        if name is not None:
            resolved = domain.resolve_xref(
                env, node["refdoc"], app.builder, reftype, name, node, contnode
            )
            if resolved is None and reftype != "obj":
                resolved = domain.resolve_xref(
                    env, node["refdoc"], app.builder, "obj", name, node, contnode
                )
            if resolved is not None:
                return resolved
        if any(part.startswith("_") and not part.startswith("__") for part in path + rest):
            return contnode  # a private helper of mtlbook: not documented on purpose
        break  # a public mtlbook object that no page documents: let Sphinx warn

    # Last resort: a unique documented object of a fitting type whose name ends with the
    # target.
    suffix = "." + target.lstrip(".~")
    objtypes = set(domain.objtypes_for_role(reftype) or ())
    matches = [
        name
        for name, entry in domain.objects.items()
        if name.endswith(suffix)
        and not entry.aliased
        and (reftype == "obj" or entry.objtype in objtypes)
    ]
    if len(matches) == 1:
        return domain.resolve_xref(
            env, node["refdoc"], app.builder, "obj", matches[0], node, contnode
        )
    return None


def on_env_updated(app: Sphinx, env: BuildEnvironment) -> None:
    _STATE["index"] = None  # pages were (re)read: index the documented objects again


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("env-updated", on_env_updated)
    app.connect("missing-reference", on_missing_reference)
    return {
        "version": "1.0",
        "parallel_read_safe": True,
        "parallel_write_safe": True,
        "env_version": 1,
    }
