"""alphapo.training: an accelerate-based preference-optimisation trainer with AlphaPO diagnostics.

Public API::

    from alphapo.training import TrainConfig, load_config, train
    config = load_config("run.yaml", ["train.learning_rate=1e-6", "loss.beta=2.5"])
    result = train(config)          # -> TrainResult (OUT/metrics.jsonl, OUT/final/, ...)

Command line: ``alphapo train CONFIG.yaml [key=value ...]`` and ``alphapo plot-run OUT``.
Modules: ``config`` (dataclass tree), ``data`` (batch planning), ``logps`` (sequence log-probs),
``reference`` (cached reference log-probs), ``metrics`` (pure diagnostics), ``checkpoint`` (atomic
checkpoints), ``optim`` (AdamW, schedule, precision), ``outputs`` (metrics log, saved models, model card),
``trainer`` (the loop), ``plotting`` (Figure-2-style curves), ``cli``.
"""

from alphapo.training.config import (
    ConfigError,
    DataConfig,
    LoggingConfig,
    LoraConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    ReferenceConfig,
    TrainConfig,
    apply_overrides,
    load_config,
    save_config,
)


def train(config):
    """Run training (see :mod:`alphapo.training.trainer`); imported lazily to keep the CLI fast."""
    from alphapo.training.trainer import train as _train

    return _train(config)


def __getattr__(name):  # lazy: keep ``import alphapo.training`` free of torch
    if name in ("TrainResult", "NonFiniteLossError"):
        from alphapo.training import trainer

        return getattr(trainer, name)
    if name in ("plot_run", "plot_compare"):
        from alphapo.training import plotting

        return getattr(plotting, name)
    raise AttributeError(f"module 'alphapo.training' has no attribute {name!r}")


__all__ = [
    "ConfigError", "DataConfig", "LoggingConfig", "LoraConfig", "LossConfig", "ModelConfig", "OptimConfig",
    "ReferenceConfig", "TrainConfig", "apply_overrides", "load_config", "save_config", "train",
    "TrainResult", "NonFiniteLossError", "plot_run", "plot_compare",
]
