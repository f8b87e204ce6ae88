"""Prompt-to-prompt attention control (Hertz et al., *Prompt-to-Prompt Image Editing with Cross
Attention Control*, ICLR 2023) through diffusers attention processors.

An edit pass denoises a batch of *branches* ``[source; edit]`` in one UNet call. Attention in the
UNet is ``softmax(q k^T / sqrt(d)) v``; the probabilities ``M = softmax(q k^T / sqrt(d))`` of the edit
branch are overwritten from the source branch's (P2P Sec. 3.2):

* **replace** (word swap, same token count): ``M_edit <- M_src`` for cross-attention while
  ``step < cross_replace_steps * num_steps`` (P2P Eq. "Edit(M, M*, t)").
* **refine** (added words): a global token alignment ``A`` (Needleman-Wunsch) of the two prompts;
  ``M_edit[..., j] <- M_src[..., A(j)]`` for aligned tokens, the edit's own map for new tokens.
* **reweight**: ``M_edit[..., j] <- c_j * M_base[..., j]`` for chosen words (P2P Sec. 3.2, "attention
  re-weighting"), on top of replace/refine (or of the source map when the prompts are equal).
* **self-attention injection**: ``M_edit <- M_src`` in the self-attention layers while
  ``step < self_replace_steps * num_steps`` (keeps the layout; P2P App. / null-text paper Sec. 4).
* **local blend** (P2P Sec. 3.2): a mask from the accumulated cross-attention maps of chosen words;
  after each step ``x_edit <- x_src + mask * (x_edit - x_src)`` (:meth:`PromptToPrompt.step_callback`).

The controller acts on the *conditional* CFG half only (as P2P does), and never modifies the source
branch: the source branch of a controlled pass equals an uncontrolled pass of the source alone (up to
the attention kernel's round-off; exact in float64 to ~1e-15).

Batch layout seen by the UNet: ``groups x branches`` rows, ``groups`` = 1 (no CFG) or 2 (CFG; with
diffzoo's :func:`~diffzoo.core.guidance.cfg_denoiser` the conditional group comes first,
``cond_first=True``; diffusers pipelines put the unconditional group first). Branch 0 is the source.

Usage (the loop that drives the UNet)::

    ctl = replace(tokenize, [src_prompt, tgt_prompt], num_steps=50, cross_replace_steps=0.8)
    with attention_control(unet, ctl):
        for i, (t, s) in enumerate(...):
            ctl.cur_step = i            # optional: otherwise counted from the UNet calls
            x = step(x)                 # one batched UNet call (CFG included) per step
            x = ctl.step_callback(x)    # local blend (identity without one)
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

from diffzoo.accel.cache import CachedUNet
from diffzoo.core.errors import check_choice, check_range, check_tensor

Tensor = torch.Tensor
Tokenize = Callable[[list[str]], Tensor]
log = logging.getLogger(__name__)

__all__ = [
    "AttentionController",
    "AttentionStore",
    "PromptToPrompt",
    "LocalBlend",
    "ControlledAttnProcessor",
    "attention_control",
    "replace",
    "refine",
    "reweight",
    "unified",
    "UnifiedAttentionControl",
    "token_indices",
    "prompt_length",
    "refinement_alignment",
]


# -------------------------------------------------------------------------------------------------
# Tokens: where a word sits in a prompt, and how two prompts align
# -------------------------------------------------------------------------------------------------


def _ids(tokenize: Tokenize, prompt: str) -> list[int]:
    ids = tokenize([prompt])
    check_tensor(ids, "tokenize(prompt)", ndim=2, floating=False)
    return [int(v) for v in ids[0]]


def _content_span(tokenize: Tokenize, prompt: str) -> tuple[int, int]:
    """``(start, stop)``: the positions of ``prompt``'s own tokens in its padded token sequence.

    Found by comparing with the tokens of ``""``: the common prefix is the begin token(s), and the
    tail after the content equals the empty prompt's tail (end token and padding).
    """
    e, w = _ids(tokenize, ""), _ids(tokenize, prompt)
    if len(e) != len(w):
        raise ValueError("tokenize: must return sequences of one fixed length (padding to max_length)")
    k = 0
    while k < len(w) and w[k] == e[k]:
        k += 1
    if k == len(w):
        return k, k
    for n in range(1, len(w) - k + 1):
        if w[k + n :] == e[k : len(e) - n]:
            return k, k + n
    raise ValueError(f"prompt: could not locate the tokens of {prompt!r} (is it longer than max_length?)")


def prompt_length(tokenize: Tokenize, prompt: str) -> int:
    """Number of content tokens of ``prompt`` (without begin/end/padding tokens)."""
    a, b = _content_span(tokenize, prompt)
    return b - a


def token_indices(tokenize: Tokenize, prompt: str, word: str) -> list[int]:
    """Positions (in the padded token sequence of ``prompt``) of the tokens of ``word``.

    ``word`` may be several words; every occurrence is returned. Raises ``ValueError`` naming the word
    if it does not occur.
    """
    ids = _ids(tokenize, prompt)
    ws, we = _content_span(tokenize, word)
    wtok = _ids(tokenize, word)[ws:we]
    if not wtok:
        raise ValueError(f"word: {word!r} has no tokens")
    out: list[int] = []
    for i in range(len(ids) - len(wtok) + 1):
        if ids[i : i + len(wtok)] == wtok:
            out.extend(range(i, i + len(wtok)))
    if not out:
        raise ValueError(f"word: {word!r} does not occur in prompt {prompt!r}")
    return out


def refinement_alignment(
    src: Sequence[int], tgt: Sequence[int], gap: float = -1.0, match: float = 1.0, mismatch: float = -1.0
) -> tuple[Tensor, Tensor]:
    """Global (Needleman-Wunsch) alignment of two token sequences, for P2P's *refine* edit.

    Returns ``mapper`` (for each target position ``j``, the source position it takes its attention map
    from) and ``alphas`` (1 where target token ``j`` is aligned to an equal source token, 0 for a new
    token, whose own map is kept).
    """
    n, m = len(src), len(tgt)
    score = torch.zeros(n + 1, m + 1)
    score[:, 0] = torch.arange(n + 1) * gap
    score[0, :] = torch.arange(m + 1) * gap
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            diag = score[i - 1, j - 1] + (match if src[i - 1] == tgt[j - 1] else mismatch)
            score[i, j] = max(diag, score[i - 1, j] + gap, score[i, j - 1] + gap)
    mapper = torch.zeros(m, dtype=torch.long)
    alphas = torch.zeros(m)
    i, j = n, m
    while i > 0 and j > 0:
        s = score[i, j]
        if s == score[i - 1, j - 1] + (match if src[i - 1] == tgt[j - 1] else mismatch):
            if src[i - 1] == tgt[j - 1]:
                mapper[j - 1], alphas[j - 1] = i - 1, 1.0
            else:
                mapper[j - 1] = min(i - 1, n - 1)
            i, j = i - 1, j - 1
        elif s == score[i, j - 1] + gap:
            mapper[j - 1] = min(i, n - 1)  # an inserted target token: keeps its own map (alpha 0)
            j -= 1
        else:
            i -= 1
    return mapper, alphas


# -------------------------------------------------------------------------------------------------
# Controllers
# -------------------------------------------------------------------------------------------------


class AttentionController:
    """Base controller: sees every attention probability tensor of the UNet during a pass.

    ``num_branches`` rows of each CFG group form one edit (branch 0 = source). The step counter
    ``cur_step`` advances after every full UNet call (``num_layers`` processor calls, set by
    :func:`attention_control`); a driving loop may also set ``cur_step`` itself.
    """

    def __init__(self, num_steps: int, num_branches: int = 2, cond_first: bool = True, edit_uncond: bool = False):
        if int(num_steps) < 1:
            raise ValueError(f"num_steps: must be >= 1, got {num_steps}")
        if int(num_branches) < 1:
            raise ValueError(f"num_branches: must be >= 1, got {num_branches}")
        self.num_steps, self.num_branches = int(num_steps), int(num_branches)
        self.cond_first, self.edit_uncond = bool(cond_first), bool(edit_uncond)
        self.num_layers = 0
        self.reset()

    def reset(self) -> None:
        """Forget the step counter (and any stored maps)."""
        self.cur_step = 0
        self._layer = 0
        self._cond_now = True

    # --- called by ControlledAttnProcessor ------------------------------------------------------
    def __call__(self, probs: Tensor, is_cross: bool, place: str, heads: int) -> Tensor:
        """Control ``probs`` of shape ``(batch * heads, Q, K)`` (diffusers' head-to-batch layout)."""
        n = probs.shape[0] // heads
        if n % self.num_branches:
            raise ValueError(f"batch: {n} rows is not a multiple of num_branches={self.num_branches}")
        groups = n // self.num_branches
        p = probs.reshape(groups, self.num_branches, heads, *probs.shape[1:])
        edited = []
        for g in range(groups):
            self._cond_now = self._is_cond_group(g, groups)
            edited.append(self._group(p[g], is_cross, place) if (self._cond_now or self.edit_uncond) else p[g])
        out = torch.stack(edited).reshape(probs.shape)
        self._layer += 1
        if self.num_layers and self._layer >= self.num_layers:
            self._layer = 0
            self.end_step()
            self.cur_step += 1
        return out

    def self_qkv(self, q: Tensor, k: Tensor, v: Tensor, heads: int) -> tuple[Tensor, Tensor, Tensor]:
        """Hook on the self-attention queries/keys/values ``(batch * heads, N, d)``; default: identity."""
        return q, k, v

    def _is_cond_group(self, g: int, groups: int) -> bool:
        return groups == 1 or g == (0 if self.cond_first else groups - 1)

    def _group(self, p: Tensor, is_cross: bool, place: str) -> Tensor:
        """Control one CFG group ``p`` of shape ``(branches, heads, Q, K)``; default: identity."""
        return p

    def end_step(self) -> None:
        """Hook run after every full UNet call."""

    def step_callback(self, x: Tensor) -> Tensor:
        """Hook the driving loop runs on the latents ``[source; edits]`` after each step."""
        return x


class AttentionStore(AttentionController):
    """Accumulates the conditional cross-attention maps of every branch, averaged over heads.

    ``maps()`` returns, per layer with at most ``max_queries`` queries, the sum over the steps so far of
    the head-averaged maps, shape ``(branches, Q, K)``.
    """

    def __init__(self, num_steps: int, num_branches: int = 2, max_queries: int = 32 * 32, **kw: Any):
        self.max_queries = int(max_queries)
        super().__init__(num_steps, num_branches, **kw)

    def reset(self) -> None:
        super().reset()
        self._store: dict[str, Tensor] = {}
        self._steps_stored = 0
        self._layer_of_step = 0

    def _record(self, p: Tensor, is_cross: bool, place: str) -> None:
        if not is_cross or not self._cond_now or p.shape[-2] > self.max_queries:
            return
        key = f"{place}{self._layer_of_step}"
        self._layer_of_step += 1
        m = p.mean(1).detach()
        self._store[key] = self._store[key] + m if key in self._store else m.clone()

    def _group(self, p: Tensor, is_cross: bool, place: str) -> Tensor:
        self._record(p, is_cross, place)
        return p

    def end_step(self) -> None:
        self._layer_of_step = 0
        self._steps_stored += 1

    def maps(self) -> list[Tensor]:
        return list(self._store.values())

    def word_maps(self, size: tuple[int, int], token_weights: Tensor) -> Tensor:
        """Average over layers and steps of ``sum_k w[b, k] M[b, :, k]``, resized to ``size``.

        ``token_weights``: ``(branches, K)``. Returns ``(branches, 1, H, W)``.
        """
        if not self._store:
            raise RuntimeError("AttentionStore: no cross-attention maps recorded yet")
        H, W = size
        acc = 0.0
        for m in self._store.values():
            q = m.shape[-2]
            r = round((H * W / q) ** 0.5)
            if r < 1 or (H // r) * (W // r) != q:
                raise ValueError(f"size: latent size {size} is incompatible with a map of {q} queries")
            w = torch.einsum("bqk,bk->bq", m, token_weights.to(m.dtype)).reshape(m.shape[0], 1, H // r, W // r)
            acc = acc + F.interpolate(w, size=(H, W), mode="nearest")
        return acc / (len(self._store) * max(self._steps_stored, 1))


@dataclass
class LocalBlend:
    """P2P's local blend: restrict the edit to where the chosen words attend (P2P Sec. 3.2).

    ``words``: one tuple of words per branch (e.g. ``(("circle",), ("square",))``). The mask is the
    union over branches of ``maxpool(map) / max(map) > threshold`` where ``map`` is the accumulated,
    layer- and head-averaged cross-attention of the branch's words; blending starts at step
    ``start_blend * num_steps``. ``pool`` is the max-pool radius on a 16x16 map (P2P's), scaled to the
    latent size (radius 0 below 16x16 latents). ``normalize="minmax"`` subtracts each map's minimum
    before dividing by its peak (a diffzoo option for the diffuse maps of small models; P2P: ``"max"``).
    """

    words: Sequence[Sequence[str]]
    threshold: float = 0.3
    start_blend: float = 0.2
    pool: int = 1
    normalize: str = "max"
    token_weights: Tensor | None = field(default=None, repr=False)

    def mask(self, store: AttentionStore, size: tuple[int, int]) -> Tensor:
        """The boolean blend mask ``(1, 1, H, W)``."""
        maps = store.word_maps(size, self.token_weights)
        k = int(self.pool * min(size) / 16)
        if k > 0:
            maps = F.max_pool2d(maps, 2 * k + 1, stride=1, padding=k)
        if self.normalize == "minmax":  # for diffuse maps (small models): stretch to [0, 1] first
            maps = maps - maps.amin(dim=(2, 3), keepdim=True)
        peak = maps.amax(dim=(2, 3), keepdim=True).clamp_min(1e-12)
        return ((maps / peak) > self.threshold).any(0, keepdim=True)


class PromptToPrompt(AttentionStore):
    """The prompt-to-prompt edit controller (replace, refine, reweight, self-injection, local blend).

    Use the factories :func:`replace`, :func:`refine`, :func:`reweight` to build one from prompts.

    Parameters
    ----------
    mode: ``"replace"``, ``"refine"`` or ``"none"`` (cross-attention maps of the edit left free;
        reweighting then scales the edit's own maps).
    mapper, alphas: refine's token alignment (``mode="refine"``), shape ``(K,)`` each.
    equalizer: ``(K,)`` scales of the edit branch's cross-attention per token (reweight) or ``None``.
    cross_replace_steps, self_replace_steps: fractions of ``num_steps`` (from the start) during which
        cross-/self-attention maps are injected from the source.
    self_max_queries: self-attention maps are injected only in layers with at most this many queries
        (P2P: 16x16), which leaves fine detail free.
    local_blend: an optional :class:`LocalBlend`.
    """

    def __init__(
        self,
        num_steps: int,
        mode: str = "replace",
        *,
        mapper: Tensor | None = None,
        alphas: Tensor | None = None,
        equalizer: Tensor | None = None,
        cross_replace_steps: float = 0.8,
        self_replace_steps: float = 0.4,
        self_max_queries: int = 16 * 16,
        local_blend: LocalBlend | None = None,
        num_branches: int = 2,
        **kw: Any,
    ):
        check_choice(mode, ("replace", "refine", "none"), "mode")
        check_range(cross_replace_steps, "cross_replace_steps", 0.0, 1.0)
        check_range(self_replace_steps, "self_replace_steps", 0.0, 1.0)
        if mode == "refine" and (mapper is None or alphas is None):
            raise ValueError("mapper, alphas: required for mode='refine' (use refine(...))")
        self.mode, self.mapper, self.alphas, self.equalizer = mode, mapper, alphas, equalizer
        self.cross_replace_steps, self.self_replace_steps = (
            float(cross_replace_steps),
            float(self_replace_steps),
        )
        self.self_max_queries = int(self_max_queries)
        self.local_blend = local_blend
        super().__init__(num_steps, num_branches, **kw)

    # --- per-step windows ------------------------------------------------------------------------
    def _in_window(self, frac: float) -> bool:
        return self.cur_step < int(frac * self.num_steps)

    def _cross(self, src: Tensor, edit: Tensor) -> Tensor:
        """Edited cross-attention of one edit branch from the source's ``(heads, Q, K)`` maps."""
        if self._in_window(self.cross_replace_steps) and self.mode != "none":
            if self.mode == "replace":
                base = src
            else:
                a = self.alphas.to(src)
                base = src[..., self.mapper.to(src.device)] * a + edit * (1 - a)
        else:
            base = edit
        if self.equalizer is not None:
            base = base * self.equalizer.to(base)
        return base

    def _group(self, p: Tensor, is_cross: bool, place: str) -> Tensor:
        self._record(p, is_cross, place)  # P2P stores the maps before editing them
        src = p[0]
        if is_cross:
            rows = [src] + [self._cross(src, p[b]) for b in range(1, p.shape[0])]
        elif self._in_window(self.self_replace_steps) and p.shape[-2] <= self.self_max_queries:
            rows = [src] * p.shape[0]
        else:
            rows = list(p)
        return torch.stack(rows)

    def step_callback(self, x: Tensor) -> Tensor:
        """Local blend of the latents ``[source; edits]`` (identity without a :class:`LocalBlend`)."""
        lb = self.local_blend
        if lb is None or self.cur_step < int(lb.start_blend * self.num_steps) or not self._store:
            return x
        check_tensor(x, "x", ndim=4)
        if x.shape[0] != self.num_branches:
            raise ValueError(f"x: expected {self.num_branches} rows [source; edits], got {x.shape[0]}")
        mask = lb.mask(self, tuple(x.shape[-2:])).to(x.dtype)
        return torch.cat([x[:1], x[:1] + mask * (x[1:] - x[:1])])


class UnifiedAttentionControl(PromptToPrompt):
    """InfEdit's unified attention control (Xu et al. CVPR 2024, Sec. 4) on ``[source; target; mutual]``.

    * cross-attention: the target's maps are refined from the source's (P2P refine) for the first
      ``cross_replace_steps`` of the steps; source and mutual branches are free;
    * self-attention, early steps (``< self_replace_steps``): the target attends with the source's
      queries and keys (the source's map) over its own values, the mutual branch equals the source;
    * self-attention, later steps: the mutual branch uses the target's queries on the source's keys and
      values (mutual self-attention, MasaCtrl), source and target are free;
    * local blend (when blend words are given): outside the mask of the target words the target latent
      is replaced by the mutual branch's, ``z_tgt <- where(mask, z_tgt, z_mut)`` (official
      ``LocalBlend``, without its source-blend mask).

    Self-attention control acts on every CFG group (as the official code), cross-attention control on
    the conditional group only.
    """

    def __init__(
        self,
        num_steps: int,
        mapper: Tensor,
        alphas: Tensor,
        *,
        cross_replace_steps: float = 0.7,
        self_replace_steps: float = 0.3,
        local_blend: LocalBlend | None = None,
        **kw: Any,
    ):
        super().__init__(
            num_steps,
            "refine",
            mapper=mapper,
            alphas=alphas,
            cross_replace_steps=cross_replace_steps,
            self_replace_steps=self_replace_steps,
            local_blend=local_blend,
            num_branches=3,
            **kw,
        )

    def self_qkv(self, q: Tensor, k: Tensor, v: Tensor, heads: int) -> tuple[Tensor, Tensor, Tensor]:
        groups = q.shape[0] // (heads * 3)
        if groups * heads * 3 != q.shape[0]:
            raise ValueError(f"batch: {q.shape[0] // heads} rows is not a multiple of num_branches=3")
        qs, ks, vs = (t.reshape(groups, 3, heads, *t.shape[1:]) for t in (q, k, v))
        early = self._in_window(self.self_replace_steps)
        q2, k2, v2 = qs.clone(), ks.clone(), vs.clone()
        if early:
            q2[:, 1], k2[:, 1] = qs[:, 0], ks[:, 0]  # target: the source's map, its own values
        q2[:, 2] = qs[:, 0] if early else qs[:, 1]  # mutual: source early, target queries later
        k2[:, 2], v2[:, 2] = ks[:, 0], vs[:, 0]
        return q2.reshape(q.shape), k2.reshape(k.shape), v2.reshape(v.shape)

    def _group(self, p: Tensor, is_cross: bool, place: str) -> Tensor:
        self._record(p, is_cross, place)
        if not is_cross:
            return p  # self-attention is controlled on q/k/v in self_qkv
        return torch.stack([p[0], self._cross(p[0], p[1]), p[2]])

    def step_callback(self, x: Tensor) -> Tensor:
        """``[z_src, z_tgt, z_mut]`` -> target outside the target words' mask taken from the mutual branch."""
        lb = self.local_blend
        if lb is None or self.cur_step < int(lb.start_blend * self.num_steps) or not self._store:
            return x
        check_tensor(x, "x", ndim=4)
        if x.shape[0] != 3:
            raise ValueError(f"x: expected 3 rows [source; target; mutual], got {x.shape[0]}")
        mask = lb.mask(self, tuple(x.shape[-2:]))
        return torch.cat([x[:1], torch.where(mask[0], x[1:2], x[2:3]), x[2:3]])


# -------------------------------------------------------------------------------------------------
# Factories from prompts
# -------------------------------------------------------------------------------------------------


def _word_weights(tokenize: Tokenize, prompts: Sequence[str], words: Sequence[Sequence[str]]) -> Tensor:
    k = len(_ids(tokenize, prompts[0]))
    w = torch.zeros(len(prompts), k)
    for b, (prompt, ws) in enumerate(zip(prompts, words)):
        for word in [ws] if isinstance(ws, str) else ws:
            w[b, token_indices(tokenize, prompt, word)] = 1.0
    return w


def _local_blend(
    tokenize: Tokenize, prompts: Sequence[str], blend_words: Sequence[Sequence[str]] | None, **kw: Any
) -> LocalBlend | None:
    if blend_words is None:
        return None
    if len(blend_words) != len(prompts):
        raise ValueError(f"blend_words: expected one entry per prompt ({len(prompts)}), got {len(blend_words)}")
    lb = LocalBlend(words=blend_words, **kw)
    lb.token_weights = _word_weights(tokenize, prompts, blend_words)
    return lb


def _check_prompts(prompts: Sequence[str]) -> None:
    if isinstance(prompts, str) or len(prompts) != 2:
        raise ValueError("prompts: expected [source_prompt, target_prompt]")


def prompt_to_prompt(
    tokenize: Tokenize,
    prompts: Sequence[str],
    num_steps: int,
    mode: str,
    *,
    cross_replace_steps: float = 0.8,
    self_replace_steps: float = 0.4,
    blend_words: Sequence[Sequence[str]] | None = None,
    blend_threshold: float = 0.3,
    blend_normalize: str = "max",
    **kw: Any,
) -> PromptToPrompt:
    """The one builder of prompt-to-prompt controllers for ``[source, target]`` prompts: ``mode`` ``replace``
    (equal token counts), ``refine`` (token alignment) or ``none`` (re-weighting alone); the injection windows,
    the local blend on ``blend_words`` and :class:`PromptToPrompt`'s own options (``kw``: ``equalizer``, ...)."""
    _check_prompts(prompts)
    check_choice(mode, ("replace", "refine", "none"), "mode")
    mapper = alphas = None
    if mode == "replace":
        ls, lt = prompt_length(tokenize, prompts[0]), prompt_length(tokenize, prompts[1])
        if ls != lt:
            raise ValueError(f"prompts: replace needs the same token count ({ls} vs {lt}); use refine")
    elif mode == "refine":
        mapper, alphas = refinement_alignment(_ids(tokenize, prompts[0]), _ids(tokenize, prompts[1]))
    lb = _local_blend(tokenize, prompts, blend_words, threshold=blend_threshold, normalize=blend_normalize)
    return PromptToPrompt(
        num_steps,
        mode,
        mapper=mapper,
        alphas=alphas,
        cross_replace_steps=cross_replace_steps,
        self_replace_steps=self_replace_steps,
        local_blend=lb,
        **kw,
    )


def replace(tokenize: Tokenize, prompts: Sequence[str], num_steps: int, **kw: Any) -> PromptToPrompt:
    """P2P word swap: the edit prompt has the same token count as the source (e.g. a colour word swapped).
    Options: :func:`prompt_to_prompt`'s."""
    return prompt_to_prompt(tokenize, prompts, num_steps, "replace", **kw)


def refine(tokenize: Tokenize, prompts: Sequence[str], num_steps: int, **kw: Any) -> PromptToPrompt:
    """P2P refinement: words added to / changed in the prompt; aligned tokens take the source's maps.
    Options: :func:`prompt_to_prompt`'s."""
    return prompt_to_prompt(tokenize, prompts, num_steps, "refine", **kw)


def unified(
    tokenize: Tokenize,
    prompts: Sequence[str],
    num_steps: int,
    *,
    cross_replace_steps: float = 0.7,
    self_replace_steps: float = 0.3,
    blend_words: Sequence[Sequence[str]] | None = None,
    blend_threshold: float = 0.3,
    blend_normalize: str = "max",
) -> UnifiedAttentionControl:
    """InfEdit's unified attention control for ``[source; target; mutual]`` from ``[source, target]`` prompts.

    ``blend_words``: ``(source words, target words)``; the blend mask uses the target words.
    """
    _check_prompts(prompts)
    mapper, alphas = refinement_alignment(_ids(tokenize, prompts[0]), _ids(tokenize, prompts[1]))
    lb = None
    if blend_words is not None:
        if len(blend_words) != 2:
            raise ValueError(f"blend_words: expected (source words, target words), got {len(blend_words)} entries")
        lb = LocalBlend(words=blend_words, threshold=blend_threshold, start_blend=0.0, normalize=blend_normalize)
        w = _word_weights(tokenize, prompts, blend_words)
        lb.token_weights = torch.stack([torch.zeros_like(w[1]), w[1], torch.zeros_like(w[1])])
    return UnifiedAttentionControl(
        num_steps,
        mapper,
        alphas,
        cross_replace_steps=cross_replace_steps,
        self_replace_steps=self_replace_steps,
        local_blend=lb,
    )


def reweight(
    tokenize: Tokenize,
    prompts: Sequence[str],
    num_steps: int,
    weights: dict[str, float],
    *,
    mode: str | None = None,
    **kw: Any,
) -> PromptToPrompt:
    """P2P attention re-weighting: scale the edit branch's cross-attention to ``weights`` words of the
    target prompt (on top of replace when the prompts have equal token counts, else refine).
    Other options: :func:`prompt_to_prompt`'s."""
    _check_prompts(prompts)
    if not weights:
        raise ValueError("weights: give at least one {word: scale}")
    eq = torch.ones(len(_ids(tokenize, prompts[1])))
    for word, c in weights.items():
        eq[token_indices(tokenize, prompts[1], word)] = float(c)
    if mode is None:
        same = prompt_length(tokenize, prompts[0]) == prompt_length(tokenize, prompts[1])
        mode = "replace" if same else "refine"
    return prompt_to_prompt(tokenize, prompts, num_steps, mode, equalizer=eq, **kw)


# -------------------------------------------------------------------------------------------------
# The diffusers attention processor and its installation
# -------------------------------------------------------------------------------------------------


def _place(name: str) -> str:
    for p in ("down", "mid", "up"):
        if name.startswith(p):
            return p
    return "other"


def explicit_attention(
    attn: Any,
    hidden_states: Tensor,
    encoder_hidden_states: Tensor | None = None,
    attention_mask: Tensor | None = None,
    temb: Tensor | None = None,
    *,
    qkv_hook: Callable[[Tensor, Tensor, Tensor, bool], tuple[Tensor, Tensor, Tensor]] | None = None,
    probs_hook: Callable[[Tensor, bool], Tensor] | None = None,
) -> Tensor:
    """Diffusers' classic ``AttnProcessor`` computation of the attention layer ``attn``, written out so that
    hooks can see and rewrite its intermediates: ``qkv_hook(q, k, v, is_cross)`` gets the per-head
    ``(B*heads, L, d)`` projections, ``probs_hook(probs, is_cross)`` the explicit
    ``softmax(q k^T * scale)``. Used by attention control (:class:`ControlledAttnProcessor`) and by
    quantized attention (:class:`diffzoo.quant.layers.QuantAttnProcessor`)."""
    if getattr(attn, "norm_q", None) is not None or getattr(attn, "norm_k", None) is not None:
        raise NotImplementedError("attn: q/k normalisation layers are not supported by the explicit attention")
    residual = hidden_states
    if getattr(attn, "spatial_norm", None) is not None:
        hidden_states = attn.spatial_norm(hidden_states, temb)
    ndim4 = hidden_states.ndim == 4
    if ndim4:
        b, c, h, w = hidden_states.shape
        hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
    is_cross = encoder_hidden_states is not None
    ctx = hidden_states if encoder_hidden_states is None else encoder_hidden_states
    batch, seq = ctx.shape[0], ctx.shape[1]
    attention_mask = attn.prepare_attention_mask(attention_mask, seq, batch)
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    if is_cross and attn.norm_cross:
        ctx = attn.norm_encoder_hidden_states(ctx)
    q = attn.head_to_batch_dim(attn.to_q(hidden_states))
    k = attn.head_to_batch_dim(attn.to_k(ctx))
    v = attn.head_to_batch_dim(attn.to_v(ctx))
    if qkv_hook is not None:
        q, k, v = qkv_hook(q, k, v, is_cross)
    probs = attn.get_attention_scores(q, k, attention_mask)
    if probs_hook is not None:
        probs = probs_hook(probs, is_cross)
    out = attn.batch_to_head_dim(torch.bmm(probs, v))
    out = attn.to_out[1](attn.to_out[0](out))
    if ndim4:
        out = out.transpose(-1, -2).reshape(b, c, h, w)
    if attn.residual_connection:
        out = out + residual
    return out / attn.rescale_output_factor


class ControlledAttnProcessor:
    """A diffusers attention processor that exposes the attention probabilities to a controller.

    Computes ``softmax(q k^T * scale)`` explicitly (as diffusers' ``AttnProcessor``), lets the
    controller rewrite it, then ``probs @ v`` and the output projection.
    """

    def __init__(self, controller: AttentionController, place: str):
        self.controller, self.place = controller, place

    def __call__(
        self,
        attn: Any,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        temb: Tensor | None = None,
        **kwargs: Any,
    ) -> Tensor:
        c, heads, place = self.controller, attn.heads, self.place
        return explicit_attention(
            attn,
            hidden_states,
            encoder_hidden_states,
            attention_mask,
            temb,
            qkv_hook=lambda q, k, v, is_cross: (q, k, v) if is_cross else c.self_qkv(q, k, v, heads),
            probs_hook=lambda probs, is_cross: c(probs, is_cross, place, heads),
        )


@contextlib.contextmanager
def attention_control(unet: Any, controller: AttentionController) -> Iterator[AttentionController]:
    """Install ``controller`` on every attention layer of ``unet`` for the ``with`` block.

    The UNet's own processors are restored on exit (also after an exception). The controller's step
    counter is reset on entry.
    """
    if not hasattr(unet, "attn_processors") or not hasattr(unet, "set_attn_processor"):
        raise TypeError(f"unet: expected a diffusers model with attention processors, got {type(unet).__name__}")
    if not isinstance(controller, AttentionController):
        raise TypeError(f"controller: expected an AttentionController, got {type(controller).__name__}")
    if isinstance(unet, CachedUNet):
        raise ValueError(
            "p2p: attention control counts the attention calls of every UNet call, and a cached UNet "
            "(Faster Diffusion / DeepCache) runs fewer of them at non-key steps; use p2p='none' with a cache"
        )
    saved = dict(unet.attn_processors)
    controller.num_layers = len(saved)
    controller.reset()
    unet.set_attn_processor({name: ControlledAttnProcessor(controller, _place(name)) for name in saved})
    try:
        yield controller
    finally:
        unet.set_attn_processor(saved)
