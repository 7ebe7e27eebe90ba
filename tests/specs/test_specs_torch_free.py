"""specs must import, load, validate and migrate configs without importing torch or any other plane."""

from __future__ import annotations

import subprocess
import sys

import specs

SCRIPT = """
import sys
import specs
cfg = specs.load_preset('llama-55m')
specs.load_config(sys.argv[1])
specs.apply_overrides(cfg, ['n_layers=2'])
specs.dumps_config(cfg, 'json')
specs.model_sizes(cfg)
assert 'torch' not in sys.modules, 'specs imported torch'
planes = {'tensor', 'kernel', 'attn', 'blocks', 'model', 'data', 'train', 'serve', 'eval', 'export', 'governance',
          'rag', 'pack'}
leaked = sorted(planes & set(sys.modules))
assert not leaked, f'specs imported other planes: {leaked}'
print('ok')
"""


def test_specs_is_torch_free(repo_root, data_dir):
    out = subprocess.run(  # cwd is on sys.path for `python -c`, so this checkout's specs is the one imported
        [sys.executable, "-c", SCRIPT, str(data_dir / "llama-tiny.v1.yaml")],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_public_api_is_complete():
    for name in specs.__all__:
        assert hasattr(specs, name), name
    assert len(set(specs.__all__)) == len(specs.__all__)
