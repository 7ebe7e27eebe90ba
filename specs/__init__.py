"""lmplanes contracts: versioned configs, presets, TensorSpec, KVCache, Batch, attention call and kernel
capabilities, ModelCard, model sizes from a config, and the model protocols the application planes rely on.

Imports no torch at runtime, so configs load, validate and migrate on any machine.

Dim legend used across every plane: ``B`` batch, ``T`` sequence (``Tq`` queries, ``Tk`` keys), ``Hq`` query
heads, ``Hkv`` key/value heads, ``D`` head dim, ``C`` model width, ``V`` vocabulary, ``L`` layers.
"""

from specs.attention import AttentionCall, AttentionKernel, KernelCaps
from specs.batch import IGNORE_INDEX, Batch
from specs.cache import CacheFull, CacheLayout, CacheStep, KVCache, MemoryKV, PagedCache, PagedSpec, RecurrentState
from specs.card import DataRef, FileRef, ModelCard
from specs.config_files import (
    apply_overrides,
    dump_config,
    dumps_config,
    load_config,
    load_preset,
    preset_kinds,
    preset_names,
)
from specs.config_io import FieldProblem, config_kinds, from_dict, register_migration, to_dict
from specs.deltanet_config import DeltaNetConfig
from specs.errors import CheckpointError, ConfigError, InputError, ShapeError
from specs.generation_config import GenerationConfig
from specs.manifest import read_manifest, verify_manifest, write_manifest
from specs.model_config import AttentionConfig, MLPConfig, ModelConfig, RoPEConfig
from specs.moe_config import MoEConfig
from specs.protocols import (
    CausalLM,
    ChatGenerator,
    EncoderModel,
    LMOutput,
    ModelStore,
    ParallelizableModel,
    Seq2SeqLM,
    TextEmbedder,
)
from specs.sizing import ModelSizes, model_sizes, parameter_count, parameter_parts
from specs.tensor_spec import TensorSpec, checks_enabled, set_checks
from specs.train_config import DataConfig, OptimizerConfig, ParallelConfig, ScheduleConfig, TrainConfig
from specs.train_memory import TrainingMemory, training_memory

__all__ = [
    "IGNORE_INDEX",
    "AttentionCall",
    "AttentionConfig",
    "AttentionKernel",
    "Batch",
    "CacheFull",
    "CacheLayout",
    "CacheStep",
    "CausalLM",
    "CheckpointError",
    "ConfigError",
    "DataConfig",
    "DataRef",
    "DeltaNetConfig",
    "EncoderModel",
    "FieldProblem",
    "FileRef",
    "GenerationConfig",
    "InputError",
    "KVCache",
    "KernelCaps",
    "LMOutput",
    "MLPConfig",
    "ModelCard",
    "MemoryKV",
    "ModelConfig",
    "ModelSizes",
    "ModelStore",
    "MoEConfig",
    "OptimizerConfig",
    "PagedCache",
    "PagedSpec",
    "ParallelConfig",
    "ParallelizableModel",
    "RecurrentState",
    "RoPEConfig",
    "ScheduleConfig",
    "Seq2SeqLM",
    "ShapeError",
    "TensorSpec",
    "TextEmbedder",
    "ChatGenerator",
    "TrainConfig",
    "TrainingMemory",
    "apply_overrides",
    "checks_enabled",
    "config_kinds",
    "dump_config",
    "dumps_config",
    "from_dict",
    "load_config",
    "load_preset",
    "model_sizes",
    "parameter_count",
    "parameter_parts",
    "preset_kinds",
    "preset_names",
    "read_manifest",
    "register_migration",
    "set_checks",
    "to_dict",
    "training_memory",
    "verify_manifest",
    "write_manifest",
]
