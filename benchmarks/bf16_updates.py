"""How many weights 5 optimizer steps at lr 5e-7 change, by precision set-up (tiny Llama, CPU, seconds).

    PYTHONPATH=src python benchmarks/bf16_updates.py

SimPO, constant learning rate 5e-7, global batch 2, 5 steps. A weight counts as changed when its final
value differs from its initial value stored in the same dtype. With bfloat16 weights and plain AdamW the
updates (~5e-7 of a weight) round away; float32 master weights under bf16 autocast (the shipped configs)
change as many weights as pure float32; KahanAdamW's bfloat16 weights move only once the compensated sum
crosses a bfloat16 step (the rest is carried in its compensation buffer, not lost).
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file


def main() -> None:
    from alphapo.tiny_models import save_tiny_model
    from alphapo.training import load_config, train, trainer

    tmp = Path(tempfile.mkdtemp())
    model_dir = tmp / "model"
    save_tiny_model(model_dir)
    rng = random.Random(0)
    data = tmp / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"What is {i} plus {i}?", "chosen": f"The answer is {2 * i}.",
                                        "rejected": "no " * rng.randint(1, 6)}) + "\n" for i in range(16)))
    before = load_file(model_dir / "model.safetensors")

    def run(name: str, *extra: str) -> None:
        out = tmp / name.replace(" ", "_")
        train(load_config(None, [
            f"model.name_or_path={model_dir}", f"data.train_path={data}", f"output_dir={out}", "loss.name=simpo",
            "train.learning_rate=5e-7", "train.max_steps=5", "train.lr_scheduler=constant", "train.warmup_ratio=0",
            "train.global_batch_size=2", "train.per_device_batch_size=2", "logging.progress_bar=false",
            "logging.tensorboard=false", *extra]))
        after = load_file(out / "final" / "model.safetensors")
        changed = sum(int((before[k].to(after[k].dtype) != after[k]).sum()) for k in before)
        print(f"{name:50s} {changed / sum(v.numel() for v in before.values()):7.2%}", file=sys.stdout, flush=True)

    run("float32 weights, no autocast")
    run("float32 weights + bf16 autocast (shipped)", "train.mixed_precision=bf16")
    run("bfloat16 weights + KahanAdamW", "model.dtype=bfloat16", "train.mixed_precision=bf16")
    trainer.make_adamw = lambda groups, fused, device, **kw: torch.optim.AdamW(groups, **kw)
    run("bfloat16 weights + plain AdamW (the old default)", "model.dtype=bfloat16", "train.mixed_precision=bf16")


if __name__ == "__main__":
    main()
