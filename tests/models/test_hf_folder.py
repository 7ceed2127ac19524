"""Hugging Face model folders: read without torch, loaded (single file or shards, any dtype), bad folders refused clearly."""

import json
import subprocess
import sys

import pytest
import torch
import transformers
from llmos.drivers.models.hf import HFFolder, read_folder
from llmos.drivers.models.hf_weights import load_pretrained, save_pretrained
from safetensors.torch import save_file

TINY = dict(vocab_size=120, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=48, max_position_embeddings=64)  # fmt: skip


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
    """transformers' tiny Llama saved as bfloat16 (its own save_pretrained), and the model."""
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY)).to(torch.bfloat16).eval()
    folder = tmp_path_factory.mktemp("llama")
    model.save_pretrained(str(folder))
    return folder, model


def test_read_folder_names_arch_config_dtype_files(llama_folder):
    folder, model = llama_folder
    info = read_folder(str(folder))
    assert isinstance(info, HFFolder) and info.arch == "llama" and info.dtype == "bfloat16"
    assert info.files == [str(folder / "model.safetensors")]
    assert info.config["n_kv_heads"] == 2 and info.config["max_len"] == 64 and info.config["vocab_size"] == 120


def test_read_folder_does_not_import_torch(llama_folder):
    folder, _ = llama_folder
    code = f"import sys; from llmos.drivers.models.hf import read_folder; read_folder({str(folder)!r}); print('torch' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "False"


def test_load_keeps_the_stored_dtype_or_casts(llama_folder):
    folder, model = llama_folder
    arch, ours = load_pretrained(str(folder))
    assert arch == "llama" and ours.tok_emb.weight.dtype == torch.bfloat16
    tokens = torch.randint(0, 120, (1, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(tokens), model(tokens).logits, atol=2e-2, rtol=0)
        _, wide = load_pretrained(str(folder), "cpu", "float32")
        assert wide.tok_emb.weight.dtype == torch.float32
        assert torch.equal(wide.tok_emb.weight, model.model.embed_tokens.weight.float())


def test_dtype_falls_back_to_the_safetensors_header(tmp_path):
    torch.manual_seed(1)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=2,
                                                                 n_positions=32))  # fmt: skip
    model.half().save_pretrained(str(tmp_path))
    config = json.loads((tmp_path / "config.json").read_text())
    config.pop("torch_dtype", None), config.pop("dtype", None)
    (tmp_path / "config.json").write_text(json.dumps(config))
    info = read_folder(str(tmp_path))
    assert (info.arch, info.dtype) == ("gpt2", "float16")


def test_sharded_folder_loads_every_shard(tmp_path):
    from llmos.drivers.models.llama import Llama, LlamaConfig

    torch.manual_seed(2)
    model = Llama(LlamaConfig(vocab_size=80, d_model=16, n_layers=2, n_heads=2, ffn_dim=24, max_len=32, qkv_bias=True))
    save_pretrained(model, "llama", str(tmp_path))
    (tmp_path / "model.safetensors").unlink()
    tensors = model.hf_tensors()
    shards = {"model-00001-of-00002.safetensors": {}, "model-00002-of-00002.safetensors": {}}
    for i, (name, t) in enumerate(sorted(tensors.items())):
        shards[sorted(shards)[i % 2]][name] = t
    weight_map = {}
    for shard, part in shards.items():
        save_file(part, str(tmp_path / shard), metadata={"format": "pt"})
        weight_map |= dict.fromkeys(part, shard)
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    info = read_folder(str(tmp_path))
    assert [f.rsplit("/", 1)[1] for f in info.files] == sorted(shards) and info.config["qkv_bias"] is True
    _, loaded = load_pretrained(str(tmp_path))
    assert all(torch.equal(t, loaded.hf_tensors()[k]) for k, t in tensors.items())
    theirs = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()  # a Qwen2 to transformers
    tokens = torch.randint(0, 80, (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded(tokens), theirs(tokens).logits, atol=1e-4, rtol=0)

    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(ValueError, match="model-00002-of-00002"):
        read_folder(str(tmp_path))


def test_bad_folders_are_refused_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        read_folder(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="bert.*gpt2, llama, mistral, qwen2"):
        read_folder(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({**transformers.GPT2Config(n_layer=1).to_dict()}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(ValueError, match="no model.safetensors"):
        read_folder(str(tmp_path))
    (tmp_path / "model.safetensors").write_bytes(b"\x01")
    with pytest.raises(ValueError, match="not a safetensors file"):
        load_pretrained(str(tmp_path))
