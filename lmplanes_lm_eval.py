"""Makes ``lmplanes`` a model name for lm-evaluation-harness's own ``lm_eval`` command.

lm_eval fills its model registry when ``lm_eval.models`` is imported and has no entry-point discovery, so an
installed package cannot add a model to it the usual way. The wheel therefore installs ``lmplanes-lm-eval.pth``
(see setup.py), whose one line imports this module when the interpreter starts. It puts one finder on
``sys.meta_path`` that does nothing until ``lm_eval.models`` is imported, and then registers ``lmplanes`` as a
lazy ``module:Class`` target: nothing of lmplanes (or torch) loads until lm_eval asks for the model.

Why ``lm_eval.models`` and not the registry module: ``lm_eval.api.registry.get_model`` imports the built-in models
only when the registry is empty, so registering earlier would hide them.
"""

from __future__ import annotations

import sys

# This module runs at every interpreter start, so it imports nothing beyond sys at run time (not even typing,
# ~6 ms): type checkers treat a constant named TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from importlib.abc import Loader
    from importlib.machinery import ModuleSpec
    from types import ModuleType

TRIGGER = "lm_eval.models"
NAME = "lmplanes"
TARGET = "eval.harness:LMPlanesLM"


def register() -> None:
    """Register ``lmplanes`` with lm_eval's model registry (idempotent).

    A start-up hook must never break the program it runs in: an lm_eval whose registry API differs from the one
    this targets (``model_registry.register(name, target=...)``, lm-eval >= 0.4.13) is left as it is, and lm_eval
    then reports the unknown model name itself.
    """
    try:
        from lm_eval.api.registry import model_registry

        if NAME not in model_registry:
            model_registry.register(NAME, target=TARGET)
    except (ImportError, AttributeError, TypeError):
        return


class _RegisterAfterExec:
    """lm_eval.models' own loader, with the registration run once the module has executed."""

    def __init__(self, inner: Loader) -> None:
        self._inner = inner

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self._inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._inner.exec_module(module)
        register()

    def __getattr__(self, name: str) -> object:  # resource readers, get_data, is_package, ...
        return getattr(self._inner, name)


class _WaitForLmEval:
    """A ``sys.meta_path`` finder that answers for ``lm_eval.models`` only, with the spec the others find."""

    def find_spec(self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None) -> ModuleSpec | None:
        if fullname != TRIGGER:
            return None
        sys.meta_path.remove(self)  # one shot
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if find is not None else None
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _RegisterAfterExec(spec.loader)
                return spec
        return None


def install() -> None:
    """Put the finder on ``sys.meta_path`` (or register at once when ``lm_eval.models`` is already imported)."""
    if TRIGGER in sys.modules:
        register()
    elif not any(isinstance(finder, _WaitForLmEval) for finder in sys.meta_path):
        sys.meta_path.insert(0, _WaitForLmEval())


install()
