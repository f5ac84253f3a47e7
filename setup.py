"""Packaging hook: ship the top-level ``recipes/`` and ``ensembles/`` folders and
``docs/formats.md`` in the wheel.

Everything else lives in ``pyproject.toml``. The top-level folders stay the source of truth;
a built wheel carries copies as ``zoo/_builtin/recipes/*.toml`` and
``zoo/_builtin/ensembles/*.toml``, which ``zoo.recipes.recipe.builtin_folder`` finds with
``importlib.resources``. An editable install reads the top-level folders directly.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
BUILTIN = {"recipes": "*.toml", "ensembles": "*.toml", "docs": "formats.md"}


class BuildPyWithBuiltins(build_py):
    """``build_py`` that also copies the recipes, the ensemble definitions and the file-format
    reference that ``zoo --help`` cites to ``zoo/_builtin/<folder>/``."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the top-level folders in place
        for folder, pattern in BUILTIN.items():
            sources = sorted((ROOT / folder).glob(pattern))
            if folder == "recipes" and not sources:
                raise SystemExit(f"no recipes in {ROOT / folder}: the wheel would have none")
            target = Path(self.build_lib) / "zoo" / "_builtin" / folder
            self.mkpath(str(target))
            for source in sources:
                self.copy_file(str(source), str(target / source.name))


setup(cmdclass={"build_py": BuildPyWithBuiltins})
