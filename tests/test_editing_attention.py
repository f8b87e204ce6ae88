"""Prompt-to-prompt attention control on a tiny random SD-shaped UNet (float64)."""

from __future__ import annotations

import pytest
import torch

from diffzoo.core.guidance import cfg_denoiser
from diffzoo.core.parameterization import ddim_step
from diffzoo.latent import attention as A
from diffzoo.latent.model import tiny_random_latent_model

torch.set_num_threads(1)  # 2 shared cores: extra threads only contend

SRC, TGT = "a red circle on the left", "a blue circle on the left"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_random_latent_model(str(tmp_path_factory.mktemp("tok")), seed=0, dtype=torch.float64)


def _inputs(model, prompts, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 4, 8, 8, generator=g, dtype=torch.float64)
    with torch.no_grad():
        emb = model.encode_prompt(prompts)
    return x, emb


def _unet(model, x, t, emb):
    with torch.no_grad():
        return model.unet(x, torch.full((x.shape[0],), float(t), dtype=x.dtype), encoder_hidden_states=emb).sample


class Probe(A.PromptToPrompt):
    """Records the controlled cross-attention maps of the conditional group."""

    def _group(self, p, is_cross, place):
        out = super()._group(p, is_cross, place)
        if is_cross:
            self.seen.append(out.clone())
        return out

    def reset(self):
        super().reset()
        self.seen = []


def test_token_helpers(model):
    tok = model.tokenize
    assert A.prompt_length(tok, SRC) == 6
    idx = A.token_indices(tok, SRC, "circle")
    assert len(idx) == 1 and int(tok([SRC])[0, idx[0]]) == int(tok(["circle"])[0, 1])
    with pytest.raises(ValueError, match="word"):
        A.token_indices(tok, SRC, "square")
    src, tgt = tok(["a red circle"])[0].tolist(), tok(["a big red circle"])[0].tolist()
    mapper, alphas = A.refinement_alignment(src, tgt)
    for j in range(len(tgt)):
        if alphas[j] == 1:
            assert src[int(mapper[j])] == tgt[j]
    assert alphas[2] == 0 and alphas[3] == 1 and int(mapper[3]) == 2  # "big" is new, "red" maps back


def test_source_branch_unchanged_and_identity_edit(model):
    x, emb = _inputs(model, [SRC, TGT])
    ref = _unet(model, x, 500, emb[:1])
    ctl = A.replace(model.tokenize, [SRC, TGT], num_steps=4, cross_replace_steps=1.0, self_replace_steps=1.0)
    with A.attention_control(model.unet, ctl):
        out = _unet(model, torch.cat([x, x]), 500, emb)
    assert (out[:1] - ref).abs().max() < 1e-12  # the source row is untouched by the controller
    assert (out[1:] - ref).abs().max() > 1e-6  # the edit row follows its own prompt
    # identical prompts: replace is a no-op, the edit row equals the source row exactly
    same = torch.cat([emb[:1], emb[:1]])
    ctl = A.replace(model.tokenize, [SRC, SRC], num_steps=4)
    with A.attention_control(model.unet, ctl):
        out = _unet(model, torch.cat([x, x]), 500, same)
    assert torch.equal(out[0], out[1]) and (out[:1] - ref).abs().max() < 1e-12


def test_processors_restored(model):
    before = dict(model.unet.attn_processors)
    ctl = A.replace(model.tokenize, [SRC, TGT], num_steps=2)
    with pytest.raises(RuntimeError, match="boom"):
        with A.attention_control(model.unet, ctl):
            assert all(isinstance(p, A.ControlledAttnProcessor) for p in model.unet.attn_processors.values())
            raise RuntimeError("boom")
    after = model.unet.attn_processors
    assert before.keys() == after.keys() and all(before[k] is after[k] for k in before)
    with pytest.raises(TypeError, match="controller"):
        with A.attention_control(model.unet, object()):
            pass


def test_replace_window_cfg_layout_and_step_count(model):
    x, emb = _inputs(model, [SRC, TGT])
    un = model.null_embedding(2)
    ctl = Probe(num_steps=4, mode="replace", cross_replace_steps=0.5, self_replace_steps=0.0)
    den = cfg_denoiser(model.denoiser(), 5.0, un)
    with A.attention_control(model.unet, ctl):
        for i in range(4):
            n0 = len(ctl.seen)
            with torch.no_grad():
                den(torch.cat([x, x]), torch.tensor([700.0, 700.0], dtype=torch.float64), emb)
            assert ctl.cur_step == i + 1  # counted from the UNet calls
            maps = ctl.seen[n0:]
            assert maps and all(m.shape[0] == 2 for m in maps)  # only the conditional group is controlled
            injected = all(torch.equal(m[0], m[1]) for m in maps)
            assert injected == (i < 2)  # cross_replace_steps = 0.5 of 4 steps
    # outside every window the controlled pass equals the plain pass
    ctl = A.PromptToPrompt(num_steps=2, mode="replace", cross_replace_steps=0.0, self_replace_steps=0.0)
    with torch.no_grad():
        plain = den(torch.cat([x, x]), torch.tensor([300.0, 300.0], dtype=torch.float64), emb)
        with A.attention_control(model.unet, ctl):
            ctrl = den(torch.cat([x, x]), torch.tensor([300.0, 300.0], dtype=torch.float64), emb)
    assert (plain - ctrl).abs().max() < 1e-12


def test_reweight_scales_word_maps(model):
    x, emb = _inputs(model, [SRC, SRC])
    ctl = A.reweight(model.tokenize, [SRC, SRC], 2, {"red": 3.0})
    probe = Probe(2, "replace", equalizer=ctl.equalizer)
    j = A.token_indices(model.tokenize, SRC, "red")[0]
    with A.attention_control(model.unet, probe):
        _unet(model, torch.cat([x, x]), 400, emb)
    for m in probe.seen:
        assert torch.allclose(m[1][..., j], 3.0 * m[0][..., j])
        others = [k for k in range(m.shape[-1]) if k != j]
        assert torch.equal(m[1][..., others], m[0][..., others])


def test_refine_keeps_new_token_map(model):
    src, tgt = "a red circle", "a big red circle"
    x, emb = _inputs(model, [src, tgt])
    ctl = A.refine(model.tokenize, [src, tgt], 2, cross_replace_steps=1.0)
    probe = Probe(2, "refine", mapper=ctl.mapper, alphas=ctl.alphas, cross_replace_steps=1.0)
    with A.attention_control(model.unet, probe):
        _unet(model, torch.cat([x, x]), 400, emb)
    assert probe.seen
    for m in probe.seen:
        assert torch.equal(m[1][..., 3], m[0][..., 2])  # "red" (target pos 3) takes source pos 2's map


def test_local_blend_keeps_background(model):
    x, emb = _inputs(model, [SRC, TGT])
    ctl = A.replace(model.tokenize, [SRC, TGT], 2, blend_words=[["red"], ["blue"]], blend_threshold=0.99)
    ctl.local_blend.pool = 0
    ctl.local_blend.start_blend = 0.0
    with A.attention_control(model.unet, ctl):
        _unet(model, torch.cat([x, x]), 400, emb)
        lat = torch.randn(2, 4, 8, 8, dtype=torch.float64)
        out = ctl.step_callback(lat)
        mask = ctl.local_blend.mask(ctl, (8, 8))[0, 0]
        ctl.local_blend.normalize = "minmax"  # (m - min) / (max - min) <= m / max: a subset of the mask
        mm = ctl.local_blend.mask(ctl, (8, 8))[0, 0]
    assert bool(mm.any()) and not bool((mm & ~mask).any())
    assert torch.equal(out[0], lat[0])
    assert 0 < int(mask.sum()) < 64
    assert torch.equal(out[1][:, ~mask], lat[0][:, ~mask]) and torch.allclose(out[1][:, mask], lat[1][:, mask])
    with pytest.raises(ValueError, match="blend_words"):
        A.replace(model.tokenize, [SRC, TGT], 2, blend_words=[["red"]])


def test_p2p_ddim_loop_identity_edit_reproduces_source(model):
    """A DDIM edit loop over [source; edit] (stand-in for the inversion methods' edit pass): with
    target == source, the edit reproduces the source reconstruction exactly."""
    x, emb = _inputs(model, [SRC, SRC], seed=1)
    ts = torch.tensor([800.0, 500.0, 200.0], dtype=torch.float64)
    den = cfg_denoiser(model.denoiser(), 4.0, model.null_embedding(1))

    def run(xx, cond, ctl=None):
        for i in range(len(ts) - 1):
            with torch.no_grad():
                x0, eps = den.x0_eps(xx, ts[i].expand(xx.shape[0]), cond)
            a, s = model.schedule.alpha_sigma(ts[i + 1])
            xx = ddim_step(x0, eps, a, s)
            if ctl is not None:
                xx = ctl.step_callback(xx)
        return xx

    src_only = run(x, emb[:1])
    ctl = A.refine(model.tokenize, [SRC, SRC], 2, blend_words=[["circle"], ["circle"]])
    with A.attention_control(model.unet, ctl):
        both = run(torch.cat([x, x]), emb, ctl)
    assert torch.equal(both[0], both[1])
    assert (both[:1] - src_only).abs().max() < 1e-12


def test_bad_inputs(model):
    tok = model.tokenize
    with pytest.raises(ValueError, match="token count"):
        A.replace(tok, ["a red circle", "a big red circle"], 4)
    with pytest.raises(ValueError, match="prompts"):
        A.replace(tok, "a red circle", 4)
    with pytest.raises(ValueError, match="num_steps"):
        A.PromptToPrompt(0)
    with pytest.raises(ValueError, match="cross_replace_steps"):
        A.PromptToPrompt(4, cross_replace_steps=1.5)
    with pytest.raises(ValueError, match="mode"):
        A.PromptToPrompt(4, mode="swap")
    with pytest.raises(ValueError, match="weights"):
        A.reweight(tok, [SRC, SRC], 4, {})
    x, emb = _inputs(model, [SRC, TGT])
    ctl = A.PromptToPrompt(4, num_branches=3)
    with pytest.raises(ValueError, match="num_branches"):
        with A.attention_control(model.unet, ctl):
            _unet(model, torch.cat([x, x]), 400, emb)
    with pytest.raises(TypeError, match="unet"):
        with A.attention_control(torch.nn.Linear(2, 2), ctl):
            pass
