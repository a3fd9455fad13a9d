"""The layering rules of docs/architecture.md, checked on the source of every module.

Every import counts, also one inside a function; only imports under
``if TYPE_CHECKING:`` (annotations, never run) are exempt. Importing
``lopt_core.a.b`` also runs the package ``lopt_core.a``'s ``__init__`` (a facade),
so it counts as importing that facade too: a facade that re-exports from above
its package would make every importer of the package import upwards.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
MAX_MODULE_LINES = 400

# Top to bottom; a module may import modules of its own layer or below, never above.
# The first matching prefix decides (longest prefixes first within this list's order).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("cli", ("lopt_core.cli", "lopt_core.commands", "lopt_core.plugin_template")),
    ("reports", ("lopt_core.run_report", "lopt_core.bench_report")),
    ("gin", ("lopt_core.gin_config", "lopt_core.gin_errors")),
    (
        "entry points",
        ("lopt_core.outer.run", "lopt_core.outer.meta_train", "lopt_core.pretrained_optimizers"),
    ),
    ("distributed", ("lopt_core.distributed",)),
    (
        "outer engine",
        (
            "lopt_core.outer",
            "lopt_core.outer.run_loop",
            "lopt_core.outer.metrics_log",
            "lopt_core.outer.progress",
            "lopt_core.outer.stop_requests",
            "lopt_core.outer.run_dir",
            "lopt_core.outer.settings",
            "lopt_core.outer.mixture_executor",
            "lopt_core.outer.executors",
            "lopt_core.outer.task_slots",
            "lopt_core.outer.workers",
            "lopt_core.outer.learner",
            "lopt_core.outer.checkpoints",
            "lopt_core.outer.gradient_estimators",
            "lopt_core.outer.truncated_step",
            "lopt_core.outer.particle_groups",
            "lopt_core.outer.truncation_schedules",
        ),
    ),
    (
        "evaluation",
        (
            "lopt_core.bench",
            "lopt_core.evaluation",
            "lopt_core.plotting",
        ),
    ),
    ("inner training", ("lopt_core.training", "lopt_core.train_loop")),
    (
        "protocols",
        (
            "lopt_core.learned",
            "lopt_core.optimizers",
            "lopt_core.static_graph",
            "lopt_core.task_distributions",
            "lopt_core.tasks",
            "lopt_core.datasets",
            "lopt_core.model_tasks",
        ),
    ),
    (
        "foundations",
        (
            "lopt_core.registry",
            "lopt_core.hookspecs",
            "lopt_core.jit",
            "lopt_core.sharding",
            "lopt_core.keys",
            "lopt_core.validation",
            "lopt_core.files",
            "lopt_core.compile_cache",
            "lopt_core.version",
            "lopt_core.metric_writers",
        ),
    ),
]
# The root package: the public face, imported first by everything; it loads the
# protocols and, lazily on first use (lopt_core.meta_train), the entry point.
FACADE = "lopt_core"
FACADE_LAYER = "entry points"
ENGINE_LAYERS = {name for name, _ in LAYERS} - {"cli", "reports", "gin"}
FORBIDDEN_IN_CORE = ("lopt_plugins", "benchmarks")


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def core_modules() -> dict[str, pathlib.Path]:
    return {module_name(p): p for p in sorted((ROOT / "lopt_core").rglob("*.py"))}


def layer_of(module: str) -> str:
    if module == FACADE:
        return FACADE_LAYER
    best = None
    for name, prefixes in LAYERS:
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > len(best[1]):
                    best = (name, prefix)
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS (docs/architecture.md).")
    return best[0]


def rank(layer: str) -> int:
    return [name for name, _ in LAYERS].index(layer)


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports_of(source: str, module: str, known: set[str]) -> list[tuple[int, str, str]]:
    """(line, imported module, imported name or '') of every run-time import in ``source``."""
    tree = ast.parse(source)
    skip = _type_checking_lines(tree)
    package = (
        module if module in known and _is_package(module, known) else module.rpartition(".")[0]
    )
    out = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name, "") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                target = f"{base}.{alias.name}"
                out.append((node.lineno, target if target in known else base, alias.name))
    return out


def _parent_packages(module: str, known: set[str]) -> list[str]:
    """The subpackages (not the root) whose ``__init__`` runs when ``module`` is imported."""
    parts = module.split(".")
    return [p for i in range(2, len(parts)) if (p := ".".join(parts[:i])) in known]


def _is_package(module: str, known: set[str]) -> bool:
    return any(other.startswith(module + ".") for other in known)


def violations(modules: dict[str, str]) -> list[str]:
    """Every broken rule in ``modules`` (name -> source), one line each."""
    known = set(modules)
    problems = []
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, source in modules.items():
        here = layer_of(module)
        for line, target, name in imports_of(source, module, known):
            where = f"{module}:{line}"
            top = target.split(".")[0]
            if top in FORBIDDEN_IN_CORE:
                problems.append(f"{where} imports {target}: lopt_core never imports {top}")
                continue
            if here in ENGINE_LAYERS and (top == "gin" or target.startswith("lopt_core.cli")):
                problems.append(f"{where} imports {target}: engines import neither gin nor the CLI")
            if not target.startswith("lopt_core"):
                continue
            if name.startswith("_") and not name.startswith("__") and target != module:
                problems.append(f"{where} imports the private name {target}.{name}")
            if target not in known:
                continue
            there = layer_of(target)
            if rank(there) < rank(here):
                problems.append(f"{where} imports {target} upwards (layer {here!r} -> {there!r})")
            if target != module:
                graph[module].add(target)
            for facade in _parent_packages(target, known):
                if not module.startswith(facade + ".") and module != facade:
                    graph[module].add(facade)
                    if rank(layer_of(facade)) < rank(here):
                        problems.append(
                            f"{where} imports {target}, so its package {facade} upwards "
                            f"(layer {here!r} -> {layer_of(facade)!r})"
                        )
    problems += [f"import cycle: {' -> '.join(c)}" for c in cycles(graph)]
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component) + [sorted(component)[0]])

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _sources() -> dict[str, str]:
    return {name: path.read_text() for name, path in core_modules().items()}


def test_lopt_core_layers_point_one_way():
    assert violations(_sources()) == []


def test_the_checker_catches_what_it_forbids():
    sources = _sources()
    broken = dict(sources)
    # An upward import hidden inside a function, a plugin import, gin in an engine, a cycle.
    broken["lopt_core.outer.learner"] += (
        "\n\ndef _f():\n    from lopt_core.gin_config import parse_config\n"
        "    import lopt_plugins.tasks\n    import gin\n"
    )
    broken["lopt_core.keys"] += "\nfrom lopt_core.validation import positive_int\n"
    broken["lopt_core.validation"] += "\nfrom lopt_core.keys import INIT\n"
    found = "\n".join(violations(broken))
    assert "lopt_core.outer.learner" in found and "upwards" in found
    assert "lopt_core never imports lopt_plugins" in found
    assert "engines import neither gin" in found
    assert "import cycle: lopt_core.keys -> lopt_core.validation" in found
    # A package facade re-exporting the entry point: every importer of lopt_core.outer.*
    # (the Ray backend) would reach the entry point, which imports the Ray backend.
    facade = dict(sources)
    facade["lopt_core.outer"] += "\nfrom lopt_core.outer.run import meta_train\n"
    found = "\n".join(violations(facade))
    assert "lopt_core.outer:" in found and "upwards" in found
    assert "import cycle:" in found and "lopt_core.distributed" in found
    private = dict(sources)
    private["lopt_core.outer.run"] += (
        "\nfrom lopt_core.outer.run_loop import _default_validation_steps\n"
    )
    assert any("private name" in v for v in violations(private))


def test_every_core_module_has_a_layer():
    for module in core_modules():
        layer_of(module)


@pytest.mark.parametrize("package", ["lopt_core", "lopt_plugins"])
def test_no_module_is_over_400_lines(package):
    long = {
        str(p.relative_to(ROOT)): n
        for p in sorted((ROOT / package).rglob("*.py"))
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}, f"split these modules (one job each): {long}"


def test_every_module_says_its_job():
    missing = [
        name for name, src in _sources().items() if ast.get_docstring(ast.parse(src)) is None
    ]
    assert missing == []
