"""Real model configurations, float checkpoints in mamba_ssm's layout, and full-size stand-ins
(narrow versions written here; the real sizes checked by shape bookkeeping)."""
from __future__ import annotations

import json

import pytest
import torch

from qmamba.cli import main
from qmamba.export.model_source import MAMBA_SSM_MAMBA2, QUAMBA2_W8A8, identify
from qmamba.export.quamba2 import load_quamba2
from qmamba.export.validate import QMambaInputError
from qmamba.models.mamba_ssm_layout import (convert_mamba_ssm_to_transformers,
                                            load_mamba_ssm)
from qmamba.models.real_configs import (mamba2_sizes, parameter_count, real_config,
                                        to_transformers_config)
from qmamba.models.safetensors_shards import ShardWriter, safetensors_files
from qmamba.models.standin import PROFILES, write_standin

# name -> (padded vocab, layers, heads, SSD groups, parameters)
EXPECTED = {
    "mamba2-130m": (50288, 24, 24, 1, 128_989_632),
    "mamba2-2.7b": (50288, 64, 80, 1, 2_702_599_680),
    "mamba2-8b": (256000, 56, 128, 8, 8_236_999_680),
    "mamba-codestral-7b": (32768, 64, 128, 8, 7_285_403_648),
}
IDS = torch.tensor([[5, 17, 99, 3, 250, 41]])


def narrow_config(ngroups: int = 1, tie: bool = True, n_layer: int = 2) -> dict:
    """130m's configuration at toy width: d_model 64, 8 heads of 16, d_state 16, vocab 300 -> 304."""
    c = real_config("mamba2-130m")
    c.update(d_model=64, n_layer=n_layer, vocab_size=300, tie_embeddings=tie)
    c["ssm_cfg"].update(headdim=16, d_state=16, ngroups=ngroups, chunk_size=32)
    return c


@pytest.mark.parametrize("name", list(EXPECTED))
def test_real_configs_match_the_released_models(name):
    vocab, layers, heads, groups, params = EXPECTED[name]
    c = real_config(name)
    s = mamba2_sizes(c)
    assert (s.vocab_size, s.n_layer, s.nheads, s.ngroups, s.headdim, s.d_state) == (vocab, layers, heads, groups, 64, 128)
    print(f"{name}: {parameter_count(c):,} parameters")
    assert parameter_count(c) == params
    # transformers' own model of the converted config has exactly these weights
    from transformers import Mamba2ForCausalLM

    with torch.device("meta"):
        hf = Mamba2ForCausalLM(to_transformers_config(c))
    assert sum(p.numel() for p in hf.parameters()) == params


def test_vocab_is_padded_as_mamba_ssm_pads_it():
    c = real_config("mamba2-130m")
    assert c["vocab_size"] == 50277 and mamba2_sizes(c).vocab_size == 50288
    c["pad_vocab_size_multiple"] = 8
    assert mamba2_sizes(c).vocab_size == 50280


@pytest.mark.parametrize("ngroups,tie", [(1, True), (2, False)])
def test_mamba_ssm_standin_loads_as_transformers(tmp_path, ngroups, tie):
    from transformers import Mamba2ForCausalLM

    c = narrow_config(ngroups, tie)
    write_standin(c, tmp_path / "ssm", "mamba_ssm", seed=3)
    write_standin(c, tmp_path / "hf", "transformers", seed=3)
    assert identify(tmp_path / "ssm").kind == MAMBA_SSM_MAMBA2 and identify(tmp_path / "hf").kind != MAMBA_SSM_MAMBA2
    sd = torch.load(tmp_path / "ssm" / "pytorch_model.bin", weights_only=True)
    assert sd["backbone.layers.1.mixer.conv1d.weight"].shape == (128 + 2 * ngroups * 16, 1, 4)
    assert sd["backbone.embedding.weight"].dtype == torch.float16
    a_log = sd["backbone.layers.0.mixer.A_log"].float()
    assert a_log.min() >= 0 and a_log.max() <= torch.log(torch.tensor(16.0)) + 1e-3
    m = load_mamba_ssm(tmp_path / "ssm")
    assert (m.lm_head.weight is m.backbone.embeddings.weight) == tie
    ref = Mamba2ForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    with torch.no_grad():
        got, want = m(IDS).logits, ref(IDS).logits
    assert got.shape == (1, 6, 304) and torch.equal(got, want)


def test_mamba_ssm_safetensors_and_sharded_conversion(tmp_path):
    from safetensors.torch import save_file
    from transformers import Mamba2ForCausalLM

    c = narrow_config(2, tie=False)
    write_standin(c, tmp_path / "ssm", "mamba_ssm", seed=4)
    st = tmp_path / "ssm_st"
    st.mkdir()
    sd = torch.load(tmp_path / "ssm" / "pytorch_model.bin", weights_only=True)
    save_file(sd, str(st / "model.safetensors"))
    (st / "config.json").write_text((tmp_path / "ssm" / "config.json").read_text())
    m = load_mamba_ssm(st)
    out = convert_mamba_ssm_to_transformers(tmp_path / "ssm", tmp_path / "hf", torch.float32)
    assert (out / "model.safetensors").is_file() and not (out / "model.safetensors.index.json").exists()
    shards = ShardWriter(tmp_path / "sharded", max_shard_bytes=40_000)
    for k, v in sd.items():
        shards.add(k, v)
    files = shards.close()
    assert len(files) > 2 and files[0].name == f"model-00001-of-{len(files):05d}.safetensors"
    assert safetensors_files(tmp_path / "sharded") == files
    (tmp_path / "sharded" / "config.json").write_text((tmp_path / "ssm" / "config.json").read_text())
    m_sharded = load_mamba_ssm(tmp_path / "sharded")
    ref = Mamba2ForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        want = ref(IDS).logits
        assert torch.equal(m(IDS).logits, want) and torch.equal(m_sharded(IDS).logits, want)


def _write(tmp_path, config: dict, sd: dict):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "config.json").write_text(json.dumps(config))
    torch.save(sd, tmp_path / "pytorch_model.bin")
    return tmp_path


def test_mamba_ssm_refusals_name_the_key(tmp_path):
    c = narrow_config()
    write_standin(c, tmp_path / "ok", "mamba_ssm")
    sd = torch.load(tmp_path / "ok" / "pytorch_model.bin", weights_only=True)
    hybrid = dict(c, attn_layer_idx=[1], attn_cfg={"num_heads": 4})
    with pytest.raises(QMambaInputError, match=r"attn_layer_idx is \[1\]: hybrid models with attention"):
        load_mamba_ssm(_write(tmp_path / "hybrid", hybrid, sd))
    mamba1 = dict(c, ssm_cfg={k: v for k, v in c["ssm_cfg"].items() if k != "layer"})
    with pytest.raises(QMambaInputError, match=r"ssm_cfg.layer is 'Mamba1'; only Mamba2"):
        load_mamba_ssm(_write(tmp_path / "mamba1", mamba1, sd))
    mlp = dict(c, d_intermediate=256)
    with pytest.raises(QMambaInputError, match=r"d_intermediate is 256: models with MLP"):
        load_mamba_ssm(_write(tmp_path / "mlp", mlp, sd))
    extra = dict(sd, **{"backbone.layers.0.mixer.x_proj.weight": torch.zeros(2)})
    with pytest.raises(QMambaInputError, match=r"unknown key backbone.layers.0.mixer.x_proj.weight"):
        load_mamba_ssm(_write(tmp_path / "extra", c, extra))
    missing = {k: v for k, v in sd.items() if k != "backbone.layers.1.mixer.D"}
    with pytest.raises(QMambaInputError, match=r"key backbone.layers.1.mixer.D is missing"):
        load_mamba_ssm(_write(tmp_path / "missing", c, missing))
    bad = dict(sd, **{"backbone.layers.0.mixer.dt_bias": torch.zeros(9)})
    with pytest.raises(QMambaInputError, match=r"backbone.layers.0.mixer.dt_bias has shape \[9\], "
                                               r"the config needs \[8\]"):
        load_mamba_ssm(_write(tmp_path / "shape", c, bad))


@pytest.mark.parametrize("ngroups,hadamard,per_tensor", [(1, True, False), (8, False, False), (8, True, True)])
def test_quamba2_standin_loads(tmp_path, ngroups, hadamard, per_tensor):
    c = narrow_config(ngroups, tie=False)
    c["ssm_cfg"]["headdim"] = 4 if ngroups == 8 else 16        # 8b-like: 4 heads per SSD group
    write_standin(c, tmp_path, "quamba2", seed=5, hadamard=hadamard, per_tensor=per_tensor)
    assert identify(tmp_path).kind == QUAMBA2_W8A8
    q = load_quamba2(tmp_path)
    qc = q.config
    assert (qc.ngroups, qc.hadamard, qc.per_tensor, qc.vocab_size) == (ngroups, hadamard, per_tensor, 304)
    x = q.layers[1].mixer.x_out_scales
    prof = PROFILES["8b" if ngroups == 8 else "130m"]
    assert x.shape == ((ngroups, 1, 1) if per_tensor else (ngroups, 4, 4))
    assert prof.x_out_range[0] <= float(x.min()) and float(x.max()) <= prof.x_out_range[1] * 1.001
    if ngroups == 8:
        assert torch.allclose(q.layers[0].mixer.B_out_scales, torch.tensor(prof.B_out))
    logits, _ = q(IDS)
    assert logits.shape == (1, 6, 304) and torch.isfinite(logits).all()


def test_standin_cli_writes_130m_shapes(tmp_path, capsys):
    assert main(["standin", "mamba2-130m", "-o", str(tmp_path), "--layout", "quamba2", "--layers", "1"]) == 0
    assert "vocab 50277 padded to 50288" in capsys.readouterr().out
    q = load_quamba2(tmp_path)
    qc = q.config
    assert (qc.d_model, qc.n_layer, qc.nheads, qc.headdim, qc.d_state, qc.ngroups, qc.vocab_size,
            qc.chunk_size, qc.hadamard) == (768, 1, 24, 64, 128, 1, 50288, 256, True)
    assert q.layers[0].mixer.x_out_scales.shape == (1, 4, 4)


def test_mamba_ssm_bin_too_big_is_refused(monkeypatch, tmp_path):
    import qmamba.models.standin as standin

    monkeypatch.setattr(standin, "_available_memory", lambda: 1 << 30)
    with pytest.raises(QMambaInputError, match=r"pytorch_model.bin does not fit .* --layout transformers"):
        standin.write_mamba_ssm(real_config("mamba2-8b"), tmp_path)


@pytest.mark.slow
def test_full_130m_mamba_ssm_standin(tmp_path):
    import time

    t0 = time.perf_counter()
    write_standin(real_config("mamba2-130m"), tmp_path, "mamba_ssm")
    elapsed = time.perf_counter() - t0
    if elapsed > 20:
        pytest.skip(f"writing 130m took {elapsed:.0f} s")
    sd = torch.load(tmp_path / "pytorch_model.bin", weights_only=True, mmap=True)
    params = sum(v.numel() for k, v in sd.items() if k != "lm_head.weight")
    assert params == EXPECTED["mamba2-130m"][4]
    m = load_mamba_ssm(tmp_path)
    assert sum(p.numel() for p in m.parameters()) == params
