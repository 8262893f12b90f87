"""The reference cache key: what must (and must not) change ``model_fingerprint`` / ``cache_key``.

A stale key is a silent wrong result (old reference log-probs reused for a different model), so each
case below is a model folder that differs from another in one way only.
"""

from __future__ import annotations

import os
import shutil

from alphapo.training import reference as refmod

MIB = 1 << 20


def _model_dir(path, weights: bytes, config: str = '{"hidden_size": 8}'):
    path.mkdir(parents=True)
    (path / "config.json").write_text(config)
    (path / "model.safetensors").write_bytes(weights)
    return path


def _weights(middle: int = 0) -> bytes:
    """3 MiB whose first and last MiB never change; one byte in the middle MiB is ``middle``."""
    data = bytearray(3 * MIB)
    data[MIB + MIB // 2] = middle
    return bytes(data)


def test_a_change_in_the_middle_of_a_weight_file_changes_the_fingerprint(tmp_path):
    # same size, same first and last MiB (a merged attention-only LoRA saved over the old folder):
    # sampling only the ends of the file gave both the same key, so the stale cache was reused
    a = _model_dir(tmp_path / "a", _weights(0))
    b = _model_dir(tmp_path / "b", _weights(1))
    assert refmod.model_fingerprint(str(a)) != refmod.model_fingerprint(str(b))


def test_fingerprint_is_content_based_and_sees_config(tmp_path):
    a = _model_dir(tmp_path / "a", _weights(7))
    copy = tmp_path / "copy"
    shutil.copytree(a, copy)
    assert refmod.model_fingerprint(str(a)) == refmod.model_fingerprint(str(copy))  # path is not content
    other_cfg = _model_dir(tmp_path / "c", _weights(7), config='{"hidden_size": 16}')
    assert refmod.model_fingerprint(str(a)) != refmod.model_fingerprint(str(other_cfg))
    # a hub id without a folder: its name
    assert refmod.model_fingerprint("org/x") != refmod.model_fingerprint("org/y")


def test_large_files_rewritten_in_place_get_a_new_key(tmp_path, monkeypatch):
    # above FULL_HASH_BYTES only the ends are read; the modification time stands in for the middle
    monkeypatch.setattr(refmod, "FULL_HASH_BYTES", MIB)
    a = _model_dir(tmp_path / "a", _weights(0))
    before = refmod.model_fingerprint(str(a))
    os.utime(a / "model.safetensors", ns=(1_000_000_000, 1_000_000_000))
    (a / "model.safetensors").write_bytes(_weights(1))  # rewrite: a new modification time
    assert refmod.model_fingerprint(str(a)) != before


def test_cache_key_separates_model_data_and_precision():
    base = refmod.cache_key("m", "d", "float32|no")
    assert base == refmod.cache_key("m", "d", "float32|no")
    assert len({base, refmod.cache_key("m2", "d", "float32|no"), refmod.cache_key("m", "d2", "float32|no"),
                refmod.cache_key("m", "d", "float32|bf16")}) == 4


def test_hub_id_is_keyed_by_its_cached_snapshot(tmp_path, monkeypatch):
    # a new revision of the same repo id (refs/main moved to another snapshot) must not reuse the old
    # reference log-probs; the name alone gave both revisions one key
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    repo = tmp_path / "hub" / "models--org--tiny"
    for commit, byte in (("a" * 40, 0), ("b" * 40, 1)):
        _model_dir(repo / "snapshots" / commit, _weights(byte))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    first = refmod.model_fingerprint("org/tiny")
    assert first == refmod.model_fingerprint(str(repo / "snapshots" / ("a" * 40)))
    (repo / "refs" / "main").write_text("b" * 40)
    assert refmod.model_fingerprint("org/tiny") != first
    assert refmod.model_fingerprint("org/not-cached") != refmod.model_fingerprint("org/also-not-cached")
