"""Only for what setup.cfg cannot say: forksafe_logging.pth goes to the top of site-packages."""

from __future__ import annotations

import os

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "forksafe_logging.pth"


class BuildWithStartupHook(build_py):
    """Puts the start-up hook beside the package, where ``site`` reads ``.pth`` files."""

    def run(self) -> None:
        super().run()
        self.copy_file(PTH, os.path.join(self.build_lib, PTH), preserve_mode=False)

    def get_outputs(self, include_bytecode: bool = True) -> list:  # type: ignore[type-arg]
        return [*super().get_outputs(include_bytecode), os.path.join(self.build_lib, PTH)]


setup(cmdclass={"build_py": BuildWithStartupHook})
