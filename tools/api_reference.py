"""Write docs/api.md, lopt's API reference, from the code: every public name, its signature
and its docstring.

    python tools/api_reference.py            # rewrite docs/api.md
    python tools/api_reference.py --check    # exit 1 if docs/api.md is out of date

Public names: a module's ``__all__``, else the classes and functions it defines whose
names do not start with ``_``; the modules are ``MODULES`` below. A name exported by
several modules is described once, at its first place, and referred to after that.
Classes list their public methods and properties (their first docstring paragraph).
The built-in plugins' registry entries follow, one line each, by kind.
(tests/integration/test_api_reference.py fails when the page is out of date.)
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "api.md"

MODULES = [
    ("lopt_core", "the names the docs use: protocols, optimizers, training, the registry"),
    ("lopt_core.model_tasks", "tasks from a flax linen or nnx model, or an (init, loss) pair"),
    ("lopt_core.tasks", "the Task and TaskFamily protocols"),
    ("lopt_core.datasets", "the Datasets protocol and its helpers"),
    ("lopt_core.task_distributions", "distributions over task families"),
    ("lopt_core.optimizers", "the Optimizer protocol, hand-designed optimizers, optax"),
    ("lopt_core.learned", "the LearnedOptimizer protocol and the export to optax"),
    ("lopt_core.training", "inner training: train and train_family"),
    ("lopt_core.evaluation", "learning curves, sweeps and tuning"),
    ("lopt_core.outer", "meta-training: estimators, truncated steps, the learner, the run"),
    ("lopt_core.bench", "suites, baselines and scores (lopt bench)"),
    ("lopt_core.distributed", "gradient workers on Ray"),
    ("lopt_core.metric_writers", "metric writers (TensorBoard, W&B...)"),
    ("lopt_core.registry", "the plugin registry"),
    ("lopt_core.gin_config", "gin: configurables, parsing, the operative config"),
    ("lopt_core.validation", "argument checks shared by the core and plugins"),
    ("lopt_core.files", "strict JSON, atomic writes, the cache folder"),
    ("lopt_core.plugin_template", "the package `lopt new-plugin` writes"),
]

ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
MAX_REPR = 80  # longer default values and constants are cut, with "..."


class _Short:
    """A default value whose repr is cut to ``MAX_REPR`` characters."""

    def __init__(self, value):
        text = ADDRESS.sub("", repr(value))
        self.text = text if len(text) <= MAX_REPR else text[: MAX_REPR - 3] + "..."

    def __repr__(self) -> str:
        return self.text


def public_names(module) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is not None:
        return [n for n in names if n != "__version__"]
    return [
        name
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(obj) or inspect.isfunction(obj))
        and getattr(obj, "__module__", None) == module.__name__
    ]


def signature(obj, name: str) -> str:
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return name
    parameters = [
        p if p.default is inspect.Parameter.empty else p.replace(default=_Short(p.default))
        for p in sig.parameters.values()
    ]
    return ADDRESS.sub("", f"{name}{sig.replace(parameters=parameters)}")


def doc(obj) -> str:
    text = inspect.getdoc(obj) or "(no docstring)"
    return ADDRESS.sub("", text)


def first_paragraph(obj) -> str:
    return " ".join(doc(obj).split("\n\n")[0].split())


def members(cls) -> list[str]:
    lines = []
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(value, property):
            lines.append(f"- `{name}` (property): {first_paragraph(value)}")
        elif isinstance(value, (staticmethod, classmethod)):
            fn = value.__func__
            lines.append(f"- `{signature(fn, name)}`: {first_paragraph(fn)}")
        elif inspect.isfunction(value):
            lines.append(f"- `{signature(value, name)}`: {first_paragraph(value)}")
    return lines


def describe(qualified: str, obj) -> list[str]:
    name = qualified.rsplit(".", 1)[1]
    if getattr(obj, "__module__", None) == "typing" or not callable(obj):
        return [f"### `{qualified}`", "", "```python", f"{name} = {_Short(obj)!r}", "```", ""]
    if inspect.isclass(obj):
        head = f"class {signature(obj, name)}"
    else:
        head = f"def {signature(obj, name)}"
    out = [f"### `{qualified}`", "", "```python", head, "```", "", doc(obj), ""]
    if inspect.isclass(obj):
        methods = members(obj)
        if methods:
            out += methods + [""]
    return out


def plugin_section() -> list[str]:
    from lopt_core.registry import Registry

    registry = Registry.from_entry_points(allow=["lopt"], strict=True)
    out = [
        "## Built-in plugins (registry entries)",
        "",
        "Every entry is a gin configurable under its name (`lopt plugins` lists the installed",
        "ones, with third-party packages'). Parameters are the factory's.",
        "",
    ]
    for kind in sorted({e.kind for e in registry.entries()}):
        out += [f"### {kind}", ""]
        for entry in sorted(registry.entries(kind), key=lambda e: e.name):
            out.append(
                f"- `{signature(entry.factory, entry.name)}`: {first_paragraph(entry.factory)}"
            )
        out.append("")
    return out


def render() -> str:
    out = [
        "# API reference",
        "",
        "Generated from the code by `python tools/api_reference.py`; "
        "`tests/integration/test_api_reference.py` fails when this page is out of date.",
        "Signatures are as written (annotations as strings). A name exported by several",
        "modules is described at its first place below.",
        "",
        "Modules:",
        "",
    ]
    out += [f"- [`{m}`](#{m.replace('.', '')}): {what}" for m, what in MODULES]
    out += ["- [Built-in plugins](#built-in-plugins-registry-entries)", ""]
    seen: dict[int, str] = {}
    for module_name, what in MODULES:
        module = importlib.import_module(module_name)
        out += [f"## {module_name}", "", f"{what[0].upper()}{what[1:]}.", ""]
        first_line = (inspect.getdoc(module) or "").split("\n\n")[0]
        out += [" ".join(first_line.split()), ""]
        for name in public_names(module):
            obj = getattr(module, name)
            qualified = f"{module_name}.{name}"
            if id(obj) in seen and (callable(obj) or inspect.isclass(obj)):
                out += [f"- `{qualified}`: see `{seen[id(obj)]}`", ""]
                continue
            seen[id(obj)] = qualified
            out += describe(qualified, obj)
    out += plugin_section()
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/api.md differs")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = OUTPUT.read_text() if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT} is out of date: run `python tools/api_reference.py`.", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
