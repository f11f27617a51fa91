"""Build hook: the wheel ships the repository's templates/ as the package data dtf/_templates.

Everything else about the package is in pyproject.toml. An editable install reads
templates/ in place (dtf.templates.builtin_root finds either layout).
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


class BuildPyWithTemplates(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        source = HERE / "templates"
        if not source.is_dir():
            raise SystemExit(f"templates/ not found next to setup.py ({source}); the wheel would have no templates")
        target = Path(self.build_lib) / "dtf" / "_templates"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": BuildPyWithTemplates})
