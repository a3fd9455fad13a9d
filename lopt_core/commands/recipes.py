"""``lopt recipes``: the gin recipes that ship with lopt, and how a recipe name is found.

The recipes (``gin/*.gin`` in the source tree) are installed with the package
into ``<prefix>/share/lopt/gin``, so ``lopt train quickstart`` works after a
plain ``pip install`` too. A name is looked up in ``./gin``, the source tree
(editable installs), then the installed copies.
"""

from __future__ import annotations

import argparse
import site
import sys
from pathlib import Path

from lopt_core.commands import add_command

RECIPE_SUFFIX = ".gin"
SHARE = Path("share") / "lopt" / "gin"


def recipe_dirs() -> list[Path]:
    """Where recipes are looked for, first match wins."""
    here = Path(__file__).resolve()
    source_tree = here.parents[2] / "gin"
    # Installed: <prefix>/lib/pythonX.Y/site-packages/lopt_core/commands/recipes.py.
    install_prefix = here.parents[5:6]
    prefixes = [*install_prefix, Path(sys.prefix), Path(site.getuserbase())]
    return list(dict.fromkeys([Path("gin"), source_tree, *(p / SHARE for p in prefixes)]))


def shipped_recipes() -> dict[str, Path]:
    """Recipe name (file stem) -> its file, from the first folder that has it."""
    found: dict[str, Path] = {}
    for folder in recipe_dirs():
        for path in sorted(folder.glob(f"*{RECIPE_SUFFIX}")) if folder.is_dir() else ():
            found.setdefault(path.stem, path)
    return found


def find_recipe(name_or_path: str | Path) -> Path:
    """A gin file: ``name_or_path`` itself when it exists, else the shipped recipe so named.

    Raises ``FileNotFoundError`` naming the recipes there are (close matches first).
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    recipes = shipped_recipes()
    stem = path.name[: -len(RECIPE_SUFFIX)] if path.name.endswith(RECIPE_SUFFIX) else path.name
    if stem in recipes and (path.parent == Path(".") or path.parent == Path("gin")):
        return recipes[stem]
    import difflib

    close = difflib.get_close_matches(stem, list(recipes), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise FileNotFoundError(
        f"no gin file {str(name_or_path)!r} and no recipe of that name.{hint} The recipes: "
        f"{', '.join(recipes) or 'none found'} (`lopt recipes` lists them; looked in "
        f"{', '.join(str(d) for d in recipe_dirs())})."
    )


def _summary(path: Path) -> str:
    """The first comment line of a recipe."""
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


HELP = "List the gin recipes that ship with lopt (`lopt train NAME` runs one)."
DESCRIPTION = "List the gin recipes that ship with lopt, with their files."


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``lopt recipes``."""
    parser = add_command(subparsers, "recipes", run, HELP, DESCRIPTION)
    return parser


def run(args: argparse.Namespace) -> int:
    """Print one line per recipe: name, summary, file."""
    recipes = shipped_recipes()
    if not recipes:
        print("no recipes found in " + ", ".join(str(d) for d in recipe_dirs()), file=sys.stderr)
        return 1
    width = max(map(len, recipes))
    for name, path in recipes.items():
        print(f"{name:<{width}}  {_summary(path)}  ({path})")
    return 0
