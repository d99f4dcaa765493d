"""nblib.models.hf_io: weight files (sharded too), config reading, and one key-mapping loader for any family."""

import json
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from nblib.models.hf_io import (
    CheckpointMismatchError,
    KeyMap,
    activation_from_hf,
    config_from_hf,
    export_hf_weights,
    find_weights,
    load_hf_weights,
    read_hf_checkpoint,
)


class Toy(nn.Module):
    """A stand-in for a third family: a packed q/k projection, an (in, out) weight, a tied head."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(5, 4)
        self.q, self.k = nn.Linear(4, 4), nn.Linear(4, 4)
        self.fc = nn.Linear(4, 3)
        self.norm = nn.LayerNorm(3)


def toy_keys() -> KeyMap:
    return KeyMap(
        {"toy.emb.weight": "emb.weight",
         "toy.qk.weight": ("q.weight", "k.weight"), "toy.qk.bias": ("q.bias", "k.bias"),
         "toy.fc.weight": "fc.weight", "toy.fc.bias": "fc.bias",
         "toy.LayerNorm.weight": "norm.weight", "toy.LayerNorm.bias": "norm.bias"},
        model_name="Toy", tied={"head.weight": "toy.emb.weight"}, ignored=(".position_ids",),
        prefix="toy.", bare_roots=("emb.", "qk.", "fc.", "LayerNorm."),
        transposed=lambda key: key == "toy.fc.weight")


def _scrambled(module: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return module


def test_a_third_family_plugs_in_with_a_key_map_both_ways():
    source = _scrambled(Toy())
    exported = export_hf_weights(source, toy_keys())
    assert exported["toy.qk.weight"].shape == (8, 4) and exported["toy.fc.weight"].shape == (4, 3)
    torch.testing.assert_close(exported["head.weight"], exported["toy.emb.weight"])
    target = _scrambled(Toy(), seed=1)
    report = load_hf_weights(target, exported, toy_keys())
    for name, value in source.state_dict().items():
        torch.testing.assert_close(target.state_dict()[name], value, msg=name)
    assert report.missing == [] and report.unexpected == [] and report.ignored == ["head.weight"]


def test_old_names_bare_checkpoints_and_buffers_are_normalised():
    exported = export_hf_weights(_scrambled(Toy()), toy_keys())
    old = {k.removeprefix("toy.").replace("LayerNorm.weight", "LayerNorm.gamma")
           .replace("LayerNorm.bias", "LayerNorm.beta"): v for k, v in exported.items()}
    old["emb.position_ids"] = torch.arange(5)
    target = Toy()
    report = load_hf_weights(target, old, toy_keys())
    assert ("LayerNorm.gamma", "toy.LayerNorm.weight") in report.renamed
    assert report.ignored == ["emb.position_ids", "head.weight"]
    torch.testing.assert_close(target.norm.weight, exported["toy.LayerNorm.weight"])


def test_mismatches_raise_one_error_carrying_the_report():
    exported = export_hf_weights(Toy(), toy_keys())
    del exported["toy.fc.bias"]
    exported["toy.extra.weight"] = torch.zeros(2)
    with pytest.raises(CheckpointMismatchError, match=r"Toy.*toy\.fc\.bias.*toy\.extra\.weight") as err:
        load_hf_weights(Toy(), exported, toy_keys())
    assert err.value.report.missing == ["toy.fc.bias"]
    assert err.value.report.unexpected == ["toy.extra.weight"]
    assert load_hf_weights(Toy(), exported, toy_keys(), strict=False).missing == ["toy.fc.bias"]
    exported = export_hf_weights(Toy(), toy_keys())
    exported["toy.fc.weight"] = exported["toy.fc.weight"].t()  # (out, in) where (in, out) is stored
    with pytest.raises(CheckpointMismatchError, match=r"toy\.fc\.weight: checkpoint \(3, 4\) vs model \(4, 3\)"):
        load_hf_weights(Toy(), exported, toy_keys())
    exported = export_hf_weights(Toy(), toy_keys())
    exported["head.weight"] = exported["head.weight"] + 1
    with pytest.raises(CheckpointMismatchError, match="head.weight differs"):
        load_hf_weights(Toy(), exported, toy_keys())


@pytest.mark.parametrize("safe", [True, False])
def test_sharded_checkpoints_are_found_and_merged(tmp_path, safe):
    state = {"a.weight": torch.randn(2, 3), "b.weight": torch.randn(4)}
    suffix = "safetensors" if safe else "bin"
    for i, key in enumerate(state):
        shard = tmp_path / f"model-0000{i + 1}-of-00002.{suffix}"
        if safe:
            from safetensors.torch import save_file

            save_file({key: state[key]}, str(shard))
        else:
            torch.save({key: state[key]}, shard)
    index = "model.safetensors.index.json" if safe else "pytorch_model.bin.index.json"
    (tmp_path / index).write_text(json.dumps(
        {"weight_map": {key: f"model-0000{i + 1}-of-00002.{suffix}" for i, key in enumerate(state)}}))
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 3}))
    assert find_weights(tmp_path).name == index
    loaded, config = read_hf_checkpoint(tmp_path)
    assert config == {"hidden_size": 3} and set(loaded) == set(state)
    for key, value in state.items():
        torch.testing.assert_close(loaded[key], value)
    (tmp_path / f"model-00002-of-00002.{suffix}").unlink()
    with pytest.raises(FileNotFoundError, match="model-00002-of-00002"):
        read_hf_checkpoint(tmp_path)


def test_a_folder_without_weights_names_what_was_looked_for(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no weights in .*model\.safetensors"):
        find_weights(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        read_hf_checkpoint(tmp_path / "missing.bin")


def test_one_config_convention_and_one_activation_table():
    @dataclass
    class Cfg:
        hidden_size: int = 8
        hidden_act: str = "gelu"
        local_only: bool = False

    cfg = config_from_hf(Cfg, {"hidden_size": 16, "local_only": True, "model_type": "x"},
                         skip=("local_only",), hidden_act=activation_from_hf("gelu_new"))
    assert cfg == Cfg(hidden_size=16, hidden_act="gelu_tanh", local_only=False)
    with pytest.raises(ValueError, match="'relu' is not supported.*gelu_new"):
        activation_from_hf("relu")
