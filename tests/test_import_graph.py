"""The dependency rule of DESIGN.md, read from the source: ``predictions`` uses ``images``, not back.

Every ``.py`` file under ``images/`` and ``predictions/`` is parsed with ``ast``
(nothing is imported, so the check costs no Django set-up). Every import counts:
at module level, inside functions, under ``if TYPE_CHECKING:``, ``import x`` and
``from x import y``, relative imports resolved against the file's package.

- ``images`` may import from ``predictions`` only in its admin (``images/admin.py``,
  or an ``images/admin/`` package): the admin screens show predictions. The
  post-upload hook (``images/hooks.py``) imports nothing of ``predictions``:
  ``predictions`` registers its handler into it from ``PredictionsConfig.ready()``.
- No import cycle runs through both apps (module by module, counting every
  import and the packages an import loads on the way).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = ("images", "predictions")
# The only modules of images that may import predictions (and their submodules).
IMAGES_DOORWAYS = ("images.admin",)


@dataclass(frozen=True)
class Import:
    importer: str
    target: str  # the module imported, as precise as the known modules allow
    line: int
    in_function: bool

    def __str__(self) -> str:
        where = "in a function" if self.in_function else "at module level"
        return f"{self.importer} line {self.line} ({where}) imports {self.target}"


def module_name(path: Path, root: Path = ROOT) -> tuple[str, bool]:
    """Dotted name of a source file, and whether it is a package's ``__init__``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    return ".".join(parts), is_package


def app_sources(root: Path = ROOT, apps: Iterable[str] = APPS) -> dict[str, tuple[str, bool]]:
    """module name -> (source, is_package) for every .py file of the apps."""
    sources = {}
    for app in apps:
        for path in sorted((root / app).rglob("*.py")):
            name, is_package = module_name(path, root)
            sources[name] = (path.read_text(encoding="utf-8"), is_package)
    return sources


def _resolve(module: str, *, level: int, importer: str, is_package: bool) -> str:
    """The absolute module a (possibly relative) ``from ... import`` names."""
    if level == 0:
        return module
    package = importer.split(".") if is_package else importer.split(".")[:-1]
    if level - 1 > len(package) - 1:
        raise ValueError(f"relative import beyond the top-level package in {importer}")
    base = package[: len(package) - (level - 1)]
    return ".".join([*base, module] if module else base)


def _closest_known(name: str, known: set[str]) -> str:
    """``name`` itself when it is one of the parsed modules, else its longest known parent (or itself)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in known:
            return candidate
    return name


def imports_of(source: str, *, importer: str, is_package: bool = False, known: set[str] = frozenset()) -> list[Import]:
    """Every import statement of one module, wherever it is in the file."""
    tree = ast.parse(source)
    found: list[Import] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append(Import(importer, _closest_known(alias.name, set(known)), node.lineno, in_function))
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node.module or "", level=node.level, importer=importer, is_package=is_package)
            for alias in node.names:
                # `from pkg import mod` imports a module; `from mod import name` a name in it.
                submodule = f"{base}.{alias.name}"
                target = submodule if submodule in known else _closest_known(base, set(known))
                found.append(Import(importer, target, node.lineno, in_function))
        inside = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inside)

    visit(tree, False)
    return list(dict.fromkeys(found))  # `from m import a, b` is one import of m


def import_graph(sources: Mapping[str, tuple[str, bool]]) -> dict[str, list[Import]]:
    known = set(sources)
    return {
        name: imports_of(source, importer=name, is_package=is_package, known=known)
        for name, (source, is_package) in sources.items()
    }


def _app(module: str) -> str:
    return module.split(".", 1)[0]


def _within(module: str, prefixes: Iterable[str]) -> bool:
    return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)


def forbidden_imports(graph: Mapping[str, list[Import]]) -> list[Import]:
    """Imports from images into predictions outside the images admin."""
    return [
        imp
        for imports in graph.values()
        for imp in imports
        if _app(imp.importer) == "images" and _app(imp.target) == "predictions"
        and not _within(imp.importer, IMAGES_DOORWAYS)
    ]


def _edges(graph: Mapping[str, list[Import]]) -> dict[str, set[str]]:
    """Module -> modules it loads: its imports, and the packages each import goes through."""
    known = set(graph)
    edges: dict[str, set[str]] = {name: set() for name in graph}
    for name, imports in graph.items():
        for imp in imports:
            parts = imp.target.split(".")
            for end in range(1, len(parts) + 1):
                loaded = ".".join(parts[:end])
                if loaded in known and loaded != name:
                    edges[name].add(loaded)
    return edges


def cycles_across_apps(graph: Mapping[str, list[Import]]) -> list[list[str]]:
    """The strongly connected groups of modules (import cycles) that hold modules of both apps."""
    edges = _edges(graph)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def connect(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(edges[node]):
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            groups.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            connect(node)
    return [group for group in groups if len({_app(member) for member in group}) > 1]


# --- the code as it is ---------------------------------------------------------------


@pytest.fixture(scope="module")
def graph() -> dict[str, list[Import]]:
    return import_graph(app_sources())


def test_images_imports_predictions_only_in_its_admin(graph):
    forbidden = forbidden_imports(graph)
    assert not forbidden, "images must not import predictions outside its admin:\n" + "\n".join(map(str, forbidden))


def test_no_import_cycle_runs_through_both_apps(graph):
    assert cycles_across_apps(graph) == []


def test_the_post_upload_hook_is_registered_by_predictions_not_imported_by_images(graph):
    hook_imports = {imp.target for imp in graph["images.hooks"]}
    assert not {target for target in hook_imports if _app(target) == "predictions"}
    assert "images.hooks" in {imp.target for imp in graph["predictions.apps"]}
    assert "images.hooks" in {imp.target for imp in graph["images.services"]}


def test_every_source_file_was_read(graph):
    """The checks above mean something only if the walk found the modules that matter."""
    assert {"images.admin", "images.services", "images.hooks", "predictions.services.jobs", "predictions.tasks"} <= set(
        graph
    )


# --- the checks themselves -----------------------------------------------------------

# The shape of the circle this test was written against: images/services.py queued
# predictions through a function-local import of predictions.services.jobs.
_UPLOAD_SERVICE_BEFORE = '''
from django.db import transaction

from .models import Image
from . import selectors


def _queue_follow_up_work(*, image_ids, batch, user):
    try:
        from predictions.services.jobs import enqueue_predictions
    except ImportError:
        raise
    enqueue_predictions(image_ids=image_ids, batch=batch, reason="upload", user=user)
'''

_JOBS_BEFORE = '''
from typing import TYPE_CHECKING

from images.models import Image

if TYPE_CHECKING:
    from images.services import SavedFile


def _thumbnails_set(*, thumbnails):
    from images.services import thumbnails_set
'''


def _fake_apps(**modules: str) -> dict[str, tuple[str, bool]]:
    packages = {"images", "predictions", "predictions.services"}
    sources = {name: ("", True) for name in packages}
    sources.update({name: (source, False) for name, source in modules.items()})
    return sources


def test_a_function_local_import_into_predictions_is_caught_and_so_is_the_circle():
    graph = import_graph(
        _fake_apps(
            **{
                "images.services": _UPLOAD_SERVICE_BEFORE,
                "images.models": "",
                "images.selectors": "",
                "predictions.services.jobs": _JOBS_BEFORE,
            }
        )
    )
    forbidden = forbidden_imports(graph)
    assert [(imp.importer, imp.target, imp.in_function) for imp in forbidden] == [
        ("images.services", "predictions.services.jobs", True)
    ]
    assert cycles_across_apps(graph) == [["images.services", "predictions.services.jobs"]]


@pytest.mark.parametrize(
    "source",
    [
        "import predictions.models",
        "import predictions.models as pm",
        "from predictions import models",
        "from predictions.models import Label",
        "if TYPE_CHECKING:\n    from predictions.models import Label",
        "class Form:\n    def clean(self):\n        import predictions",
        "def f():\n    return lambda: __import__('x')\nfrom predictions.services import jobs",
    ],
)
def test_every_form_of_import_into_predictions_is_caught(source):
    graph = import_graph(_fake_apps(**{"images.selectors": source, "predictions.models": ""}))
    assert [imp.importer for imp in forbidden_imports(graph)] == ["images.selectors"]


def test_the_admin_may_import_predictions():
    graph = import_graph(
        _fake_apps(**{"images.admin": "from predictions.models import Label", "predictions.models": ""})
    )
    assert forbidden_imports(graph) == []


def test_relative_imports_are_resolved_against_the_package():
    known = {"images", "images.services", "images.selectors", "predictions", "predictions.services",
             "predictions.services.jobs", "predictions.selectors", "predictions.selectors.images"}  # fmt: skip
    in_module = imports_of(
        "from . import selectors\nfrom .services import image_create\n", importer="images.admin", known=known
    )
    assert [imp.target for imp in in_module] == ["images.selectors", "images.services"]
    in_package_module = imports_of(
        "from . import selectors\nfrom ..selectors.images import x\n", importer="predictions.services.jobs", known=known
    )
    # No predictions.services.selectors: `from . import selectors` names the package's attribute.
    assert [imp.target for imp in in_package_module] == ["predictions.services", "predictions.selectors.images"]
    in_init = imports_of("from . import jobs", importer="predictions.services", is_package=True, known=known)
    assert [imp.target for imp in in_init] == ["predictions.services.jobs"]
