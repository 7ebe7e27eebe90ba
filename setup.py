"""Everything about the package is in pyproject.toml; this file only adds the lm_eval start-up hook.

``lmplanes-lm-eval.pth`` lands next to the installed packages, so ``site`` runs its one import line at
interpreter start (see lmplanes_lm_eval.py for why lm_eval needs it). setuptools has no declarative way to install
a file at the top of site-packages, hence the build_py subclass.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PTH_NAME = "lmplanes-lm-eval.pth"
PTH_LINE = "import lmplanes_lm_eval\n"


class BuildPyWithStartupHook(build_py):
    def run(self) -> None:
        super().run()
        folders = [Path(self.build_lib)]
        if self.editable_mode:
            # An editable wheel is assembled from the install command's install_lib, not from build_lib.
            folders.append(Path(self.get_finalized_command("install").install_lib))
        for folder in folders:
            (folder / PTH_NAME).write_text(PTH_LINE)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        return [*super().get_outputs(include_bytecode), str(Path(self.build_lib) / PTH_NAME)]


setup(cmdclass={"build_py": BuildPyWithStartupHook})
