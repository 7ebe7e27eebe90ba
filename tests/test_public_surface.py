"""Public surfaces are frozen: each plane's ``__all__``, the registered kernels and their capabilities, the
preset names and every config schema (fields and types per kind and version).

A failure here means a public name, capability or schema changed. If that is deliberate, regenerate the
snapshot with ``LMPLANES_UPDATE_SNAPSHOT=1 python -m pytest tests/test_public_surface.py`` and review the diff like code; a changed config
schema also needs a new version and a migration (specs.register_migration).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
from pathlib import Path

from tools.planes import PLANES

SNAPSHOT = Path(__file__).parent / "snapshots" / "public_surface.json"


def _plain(value):
    return sorted(value) if isinstance(value, frozenset) else value


def _schema(cls) -> dict[str, str]:
    return {f.name: str(f.type) for f in dataclasses.fields(cls)}


def current_surface() -> dict:
    import kernel
    import specs
    from kernel.caps import triton_flash_caps

    def caps(c: specs.KernelCaps) -> dict:
        return {f.name: _plain(getattr(c, f.name)) for f in dataclasses.fields(specs.KernelCaps)}

    # triton_flash is registered only where Triton is installed, with CPU only under TRITON_INTERPRET: the
    # snapshot holds what it declares on a GPU machine, whatever this machine has.
    kernels = {name: caps(kernel.capabilities(name)) for name in kernel.available() if name != "triton_flash"}
    kernels["triton_flash"] = caps(triton_flash_caps(interpreted=False))
    return {
        "__all__": {plane: sorted(importlib.import_module(plane).__all__) for plane in PLANES},
        "kernels": kernels,
        "presets": {kind: specs.preset_names(kind) for kind in specs.preset_kinds()},
        "config_schemas": {
            kind: {"version": cls.VERSION, "fields": _schema(cls)} for kind, cls in sorted(specs.config_kinds().items())
        },
        "nested_schemas": {
            cls.__name__: _schema(cls)
            for cls in (
                specs.AttentionConfig,
                specs.RoPEConfig,
                specs.MLPConfig,
                specs.DataRef,
                specs.FileRef,
                specs.DataConfig,
                specs.OptimizerConfig,
                specs.ScheduleConfig,
            )
        },
    }


def test_public_surface_matches_the_snapshot():
    got = json.loads(json.dumps(current_surface()))
    if os.environ.get("LMPLANES_UPDATE_SNAPSHOT") == "1":
        SNAPSHOT.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    want = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    for section in sorted(set(want) | set(got)):
        assert got.get(section) == want.get(section), (
            f"public surface {section!r} changed; if deliberate, rerun with LMPLANES_UPDATE_SNAPSHOT=1 and review"
        )
