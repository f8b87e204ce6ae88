"""APS posterior sampling with a pretrained masked model (APS-style and APS-like), and its baselines.

*Test-Time Anchoring for Discrete Diffusion Posterior Sampling* (APS; Rout et al., arXiv 2510.02291). No
code is released and the method section was read only through the project page, the theorem images and
the ICLR reviews (BRIEFS-addendum Sec. 2), so both samplers here are reconstructions:

* :func:`aps_style_sample` -- **APS as its authors describe it** ("APS-style": the prose is confirmed,
  the equations INFERRED). Per reverse step, free per-token logits start at the prior's and an inner
  optimiser (the authors: 100 steps) fits the **quantized expectation** -- the expected embedding
  ``e = sum_k pi_k E_k``, snapped to its nearest code with a straight-through estimator
  (:func:`straight_through_quantize`), decoded and measured -- to ``y`` (L1, optional perceptual term,
  optional KL-to-prior of Theorem 3.2; :func:`quantized_expectation_fit`). The nearest codes are the
  anchor candidates (tokens the prior gives zero mass included). ``variant="I"`` (APS-I) keeps the ``k_n``
  of highest *prior* confidence, as the base sampler does; ``variant="II"`` (APS-II, **anchored
  remasking**) keeps those of highest confidence under the fitted posterior and remasks the rest.
* :func:`aps_sample` -- the earlier **APS-like** reconstruction (BRIEFS.md Sec. 16, from the abstract
  alone): one model call per step, the logits guided by a per-token Gauss-Newton expansion of
  ``||y - A(D(q~))||^2 / (2 sigma^2)`` around the straight-through quantized expectation ``q~``
  (:func:`quantized_expectation_guidance`), all masked tokens *drawn* from the guided posterior and the
  ``k_n`` (cosine schedule, MaskGIT) most confident under it anchored, the rest remasked. With
  ``anchor=False`` a uniformly random ``k_n``-subset is kept instead; with ``eta = 0`` it is a MaskGIT
  confidence sampler (choice temperature 0), the prior-confidence sampler APS's anchoring replaces.

The codebook ``E`` (``K x d``) and decoder ``D`` are the model's
:class:`~diffzoo.discrete.tokens.TokenSpace`: digits: ``E_k`` is the grey value of level ``k``; shapes:
a 4x4 RGB patch of the VQ codebook.

Baselines (same model, same operator, no retraining): :func:`replacement_sample` (inpainting: observed
pixels clamped to their measured level), :func:`smc_sample` (derivative-free SMC: particles unmask in random order,
i.e. from the model's own law, and are reweighted by the incremental likelihood of their expected
reconstruction, with multinomial resampling), and
:func:`split_gibbs_sample` (split-Gibbs-style: an exact Gaussian ``z``-step for linear operators /
Langevin for nonlinear ones, and a masked-model ``x``-step that remasks and redraws tokens under
``p_theta(x_i | x) N(z_i; E_{x_i}, rho^2)``).

Every function takes an optional ``space`` (default :func:`~diffzoo.discrete.tokens.token_space` of the
model); the operator acts on ``space.image_shape`` images.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from diffzoo.core.errors import check_choice, check_range, check_tensor
from diffzoo.core.random import Generator, rand, randn
from diffzoo.discrete.categorical import race_noise, sample_categorical
from diffzoo.discrete.masked import TokenModel, model_seq_len, model_vocab, predictive_probs
from diffzoo.discrete.samplers import _device, cosine_unmask_counts, first_hitting_sample, unmask_top
from diffzoo.discrete.tokens import TokenSpace, levels_space, nearest_code, token_space

Tensor = torch.Tensor


def codebook(vocab_size: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """Grey value of each pixel level: ``E_k = 2k/(K-1) - 1`` in ``[-1, 1]`` (digits: ``k/8 - 1``)."""
    return levels_space(vocab_size, (1, 1, 1)).codebook[:, 0].to(dtype)


def tokens_to_images(x: Tensor, space: TokenSpace) -> Tensor:
    """Clean token ids ``(B, L)`` -> images ``(B, C, H, W)`` (float64) through the token space's decoder."""
    return space.decode(x)


def measure_tokens(x0: Tensor, op, space: TokenSpace, sigma_y: float = 0.0, generator: Generator = None) -> Tensor:
    """``y = A(D(x0)) + sigma_y n`` for clean tokens ``x0`` (a ``[MASK]`` in ``x0`` is an error)."""
    space.check(x0, "x0")
    return op.measure(space.decode(x0), sigma_y, generator)


def _problem(model: TokenModel, op, y: Tensor, space: TokenSpace | None) -> tuple[TokenSpace, int, int]:
    space = token_space(model) if space is None else space
    vocab = model_vocab(model)
    if vocab != space.vocab_size:
        raise ValueError(f"space: {space.vocab_size} codes but the model has {vocab} tokens")
    length = model_seq_len(model, space.seq_len)
    if tuple(op.in_shape) != tuple(space.image_shape):
        raise ValueError(f"op: acts on images {tuple(op.in_shape)} but the tokens decode to {space.image_shape}")
    check_tensor(y, "y", floating=True)
    op.check_measurement(y)
    return space, vocab, length


def _token_columns(a: Tensor, space: TokenSpace) -> tuple[Tensor, Tensor]:
    """Columns of a dense ``(m, n)`` operator matrix grouped by token, restricted to the rows each token
    touches: row ids ``(L, r)`` and values ``(L, r, d)`` (``r`` = the most rows any token touches; padding
    rows have zero values). Local operators (blur, pooling) touch few rows, which keeps the blocks cheap."""
    idx = space.image_to_embed(torch.arange(a.shape[1], dtype=torch.float64).reshape(1, *space.image_shape))[0]
    cols = a[:, idx.long()].permute(1, 0, 2)  # (L, m, d)
    touched = cols.abs().amax(-1) > 0  # (L, m)
    r = max(1, int(touched.sum(1).max()))
    rows = touched.to(torch.int8).argsort(dim=1, descending=True, stable=True)[:, :r]  # touched rows first
    return rows, cols.gather(1, rows[..., None].expand(-1, -1, cols.shape[-1]))


def token_hessian(op, space: TokenSpace) -> Tensor | Callable[[Tensor], Tensor]:
    """Per-token Gauss-Newton blocks ``J_i^T J_i`` of the measurement (``J_i``: the columns of token ``i``).

    Linear ``A``: the constant ``(L, d, d)`` blocks of ``A^T A`` -- ``||A(D(q')) - y||^2 / 2`` changes, when
    only token ``i`` moves by ``delta``, by exactly ``g_i . delta + delta^T A_i^T A_i delta / 2``.
    Operators ``f(L x)`` with an elementwise ``f`` that expose ``jacobian_scale`` and ``inner`` (e.g.
    saturation): a function of the images ``(B, C, H, W)`` returning per-image blocks ``(B, L, d, d)`` of
    ``J^T J`` with ``J = diag(f') L`` (re-linearised where it is called). Other operators: zeros.
    """
    if getattr(op, "linear", False):
        _, vals = _token_columns(op.matrix(torch.float64), space)
        return torch.einsum("lrd,lre->lde", vals, vals)
    if hasattr(op, "jacobian_scale") and getattr(getattr(op, "inner", None), "linear", False):
        rows, vals = _token_columns(op.inner.matrix(torch.float64), space)

        def blocks(img: Tensor) -> Tensor:
            w = op.jacobian_scale(img.to(torch.float64)) ** 2  # (B, m)
            return torch.einsum("blr,lrd,lre->blde", w[:, rows], vals, vals)

        return blocks
    return torch.zeros(space.seq_len, space.dim, space.dim, dtype=torch.float64)


def straight_through_quantize(e: Tensor, space: TokenSpace) -> tuple[Tensor, Tensor]:
    """Nearest code of each expected embedding with a straight-through gradient: ``(e + sg(E_k* - e), k*)``.

    ``k*_i = argmin_k ||e_i - E_k||`` (:func:`nearest_code`). The forward value is the valid code
    ``E_k*`` and the gradient is the identity in ``e``, so for ``e = sum_k pi_k E_k``
    (:meth:`TokenSpace.expected_embed`) a loss on the decoded code reaches ``pi`` through ``de/dpi_k = E_k``
    (APS, arXiv 2510.02291, "quantized expectation"; the straight-through form is BRIEFS-addendum Sec. 2,
    INFERRED from the authors' prose).
    """
    cb = space.codebook.to(e.device)
    idx = nearest_code(e.detach(), cb)
    q = cb[idx].to(e.dtype)
    return e + (q - e).detach(), idx


def quantized_expectation_guidance(
    logits: Tensor,
    x: Tensor,
    op,
    y: Tensor,
    sigma: float,
    space: TokenSpace,
    eta: float = 1.0,
    iters: int = 3,
    hessian: Tensor | Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """Guided logits ``l_ik - eta [ (E_k - q_i) . g_i + 0.5 (E_k - q_i)^T H_i (E_k - q_i) ]`` on masked tokens.

    ``e_i = sum_k softmax(l)_ik E_k`` (the expected embedding, under the current guided logits), ``q_i``
    its nearest code, ``q~ = e + sg(q - e)`` (straight-through); ``g = grad_{q~} ||y - A(D(q~))||^2 / (2 sigma^2)``
    is the gradient-like signal in embedding space, ``H_i = J_i^T J_i / sigma^2`` the token's Gauss-Newton
    block (:func:`token_hessian`; re-linearised at the current image for saturating operators). The
    bracket is the change of the negative log-likelihood when token ``i`` alone switches from ``q_i`` to
    code ``E_k`` (exact for linear ``A``),
    so ``eta = 1`` is the per-token Bayes posterior around the current expectation; ``iters`` re-linearises.
    Clean tokens of ``x`` enter ``D`` with their own code. Returns float64, detached.
    """
    vocab = space.vocab_size
    e_k = space.codebook.to(logits.device)  # (K, d)
    masked = x == vocab
    clean = e_k[x.clamp_max(vocab - 1)]  # (B, L, d)
    base = logits.detach().to(torch.float64)
    if eta == 0 or iters == 0:
        return base
    hessian = token_hessian(op, space) if hessian is None else hessian
    guided = base
    for _ in range(iters):
        e = space.expected_embed(torch.softmax(guided, -1)).requires_grad_(True)
        q_st, _ = straight_through_quantize(e, space)
        q = q_st.detach()
        img = space.embed_to_image(torch.where(masked[..., None], q_st, clean))
        nll = ((op.forward(img) - y.to(img.dtype)) ** 2).flatten(1).sum(1) / (2 * sigma**2)
        (g,) = torch.autograd.grad(nll.sum(), e)
        h = hessian(img.detach()) if callable(hessian) else hessian
        h = h.to(base.device) / sigma**2  # (L, d, d), or (B, L, d, d) re-linearised
        ehe = ((e_k @ h) * e_k).sum(-1)  # E_k^T H_i E_k: (L, K) or (B, L, K)
        hq = (h @ q[..., None])[..., 0]  # H_i q_i: (B, L, d)
        linear = g @ e_k.T - (g * q).sum(-1, keepdim=True)  # (E_k - q) . g
        quad = ehe - 2 * hq @ e_k.T + (q * hq).sum(-1, keepdim=True)  # (E_k - q)^T H (E_k - q)
        guided = torch.where(masked[..., None], base - eta * (linear + 0.5 * quad), base)
    return guided.detach()


@torch.no_grad()
def aps_sample(
    model: TokenModel,
    op,
    y: Tensor,
    steps: int = 16,
    sigma_y: float = 0.05,
    eta: float = 1.0,
    guidance_iters: int = 3,
    anchor: bool = True,
    sigma_floor: float = 0.1,
    generator: Generator = None,
    space: TokenSpace | None = None,
) -> Tensor:
    """APS-like posterior sampling (see the module docstring): ``steps`` model calls, returns tokens ``(B, L)``.

    ``y``: the measurement ``A(D(x)) + noise`` of a batch (``op.check_measurement`` shape). The likelihood
    uses ``sigma = sqrt(sigma_y^2 + sigma_floor^2)`` (the floor tempers it for model misfit).
    """
    space, vocab, length = _problem(model, op, y, space)
    check_range(eta, "eta", 0.0)
    sigma = math.sqrt(sigma_y**2 + sigma_floor**2)
    x = torch.full((y.shape[0], length), vocab, dtype=torch.long, device=_device(model))
    hessian = token_hessian(op, space) if eta > 0 else None
    for k in cosine_unmask_counts(length, steps):
        logits = model(x)
        with torch.enable_grad():
            guided = quantized_expectation_guidance(logits, x, op, y, sigma, space, eta, guidance_iters, hessian)
        probs = torch.softmax(guided, -1)
        draw = sample_categorical(probs, generator)
        score = probs.gather(-1, draw[..., None])[..., 0] if anchor else rand(draw.shape, generator, torch.float64)
        x = unmask_top(x, draw, score, k, vocab)
    return x


LOG_FLOOR = math.log(1e-300)
APS_VARIANTS = ("I", "II")


def quantized_expectation_fit(
    prior_logits: Tensor,
    x: Tensor,
    op,
    y: Tensor,
    space: TokenSpace,
    steps: int = 100,
    lr: float = 0.1,
    l1_weight: float = 1.0,
    perceptual: Callable[[Tensor, Tensor], Tensor] | None = None,
    perceptual_weight: float = 0.0,
    kl_weight: float = 0.0,
    kl_scale: Tensor | float = 1.0,
) -> tuple[Tensor, Tensor]:
    """Test-time fit of free per-token logits ``phi`` through the quantized expectation (APS-style).

    On the masked positions of ``x``, ``phi`` starts at the prior's log-probabilities ``log p_theta``
    (``prior_logits``, floored at ``log 1e-300``); clean tokens enter the decoder with their own code. With
    ``pi = softmax(phi)``, ``e = sum_k pi_k E_k`` and ``e~ = e + sg(E_k* - e)`` (:func:`straight_through_quantize`),
    Adam (learning rate ``lr``, ``steps`` updates) minimises per sample::

        l1_weight * mean|A(D(e~)) - y| + perceptual_weight * perceptual(A(D(e~)), y)
          + kl_weight * kl_scale * mean_{masked l} KL(pi_l || p_theta,l)

    The first two terms are the practical loss of APS (arXiv 2510.02291; L1 + LPIPS per the ICLR reviews,
    BRIEFS-addendum Sec. 2); the KL term is the prior term of its Theorem 3.2, whose per-step weight
    ``(alpha_s - alpha_t) / (1 - alpha_t)`` the caller passes as ``kl_scale`` ((B,) or a number). The
    optimiser, ``lr`` and the weights are not published: INFERRED. ``perceptual(pred, y)`` must return one
    differentiable loss per sample ``(B,)``. The loss is a sum over samples and Adam is elementwise, so
    every sample is fitted independently of its batch. No network call.

    Returns ``(phi, k*)``: the fitted logits ``(B, L, K)`` (float64, detached; the prior's on clean
    positions) and the anchor candidates ``k*`` = the nearest code of the fitted expectation on masked
    positions, ``x`` elsewhere. ``k*`` may be a token the prior gives zero mass (any code nearest to a point
    of the codebook's convex hull).
    """
    vocab = space.vocab_size
    masked = x == vocab
    logp = torch.log_softmax(prior_logits.detach().to(torch.float64), -1).clamp_min(LOG_FLOOR)
    clean = space.codebook.to(x.device)[x.clamp_max(vocab - 1)]  # (B, L, d)
    y = y.to(torch.float64)
    scale = torch.as_tensor(kl_scale, dtype=torch.float64, device=x.device).reshape(-1)
    n_masked = masked.sum(1).clamp_min(1)
    phi = logp.clone().requires_grad_(True)
    opt = torch.optim.Adam([phi], lr=lr)

    def embed(pi: Tensor) -> tuple[Tensor, Tensor]:
        e_st, idx = straight_through_quantize(space.expected_embed(pi), space)
        return torch.where(masked[..., None], e_st, clean), idx

    for _ in range(steps):
        log_pi = torch.log_softmax(phi, -1)
        pi = log_pi.exp()
        e, _ = embed(pi)
        pred = op.forward(space.embed_to_image(e))
        loss = l1_weight * (pred - y).abs().flatten(1).mean(1)
        if perceptual is not None and perceptual_weight > 0:
            loss = loss + perceptual_weight * perceptual(pred, y)
        if kl_weight > 0:
            kl = (pi * (log_pi - logp)).sum(-1)  # (B, L)
            loss = loss + kl_weight * scale * torch.where(masked, kl, 0.0).sum(1) / n_masked
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
    phi = torch.where(masked[..., None], phi.detach(), logp)
    _, idx = embed(torch.softmax(phi, -1))
    return phi, torch.where(masked, idx, x)


@torch.no_grad()
def aps_style_sample(
    model: TokenModel,
    op,
    y: Tensor,
    steps: int = 16,
    variant: str = "II",
    inner_steps: int = 100,
    lr: float = 0.1,
    l1_weight: float = 1.0,
    perceptual: Callable[[Tensor, Tensor], Tensor] | None = None,
    perceptual_weight: float = 1.0,
    kl_weight: float = 0.0,
    choice_temperature: float = 0.0,
    generator: Generator = None,
    space: TokenSpace | None = None,
) -> Tensor:
    """APS-style posterior sampling (arXiv 2510.02291 as its authors describe it; equations INFERRED).

    ``steps`` reverse steps, one network call each (no back-propagation through the network). At step
    ``n`` with ``m_n`` masked tokens, of which ``k_n`` unmask (MaskGIT cosine schedule,
    :func:`~diffzoo.discrete.samplers.cosine_unmask_counts`):

    1. **Quantized expectation**: ``inner_steps`` Adam updates of free logits initialised at the prior
       (:func:`quantized_expectation_fit`, KL weight ``kl_weight * k_n / m_n`` -- Theorem 3.2's
       ``(alpha_s - alpha_t)/(1 - alpha_t)``); anchor candidates ``k*`` = nearest codes of the fitted
       expectations. The authors use 100 inner steps per reverse step.
    2. **Remasking**: the ``k_n`` masked positions of highest confidence keep ``k*``, the rest stay masked.
       ``variant="II"`` (APS-II, anchored remasking): confidence ``log pi_l(k*_l)`` under the fitted
       posterior. ``variant="I"`` (APS-I, quantized expectation only): the base sampler's confidence under
       the prior, ``log p_theta,l(k*_l)``. Confidence measure (max-prob of the anchor, not entropy) and
       count (the base schedule's, not adaptive) are INFERRED.

    ``choice_temperature``: MaskGIT's annealed Gumbel noise ``tau_n g``, ``tau_n = choice_temperature
    (1 - (n+1)/N)``, on the confidences (0, the default, is deterministic: ``generator`` unused).
    ``perceptual(pred, y)``: an optional differentiable per-sample loss between the measurement of the
    estimate and ``y`` (APS uses LPIPS). Returns tokens ``(B, L)``.
    """
    space, vocab, length = _problem(model, op, y, space)
    check_choice(variant, APS_VARIANTS, "variant")
    if steps < 1:
        raise ValueError(f"steps: expected >= 1, got {steps}")
    if inner_steps < 0:
        raise ValueError(f"inner_steps: expected >= 0, got {inner_steps}")
    check_range(lr, "lr", 0.0, lo_open=True)
    for name, val in (
        ("l1_weight", l1_weight),
        ("perceptual_weight", perceptual_weight),
        ("kl_weight", kl_weight),
        ("choice_temperature", choice_temperature),
    ):
        check_range(val, name, 0.0)
    if perceptual is not None and not callable(perceptual):
        raise TypeError(f"perceptual: expected a callable (pred, y) -> (B,) loss, got {type(perceptual).__name__}")
    x = torch.full((y.shape[0], length), vocab, dtype=torch.long, device=_device(model))
    counts = cosine_unmask_counts(length, steps)
    for n, k in enumerate(counts):
        logits = model(x).to(torch.float64)
        masked = x == vocab
        kl_scale = k / masked.sum(1).clamp_min(1).to(torch.float64)
        with torch.enable_grad():
            phi, anchor = quantized_expectation_fit(
                logits, x, op, y, space, inner_steps, lr, l1_weight, perceptual, perceptual_weight, kl_weight, kl_scale
            )
        conf_logits = phi if variant == "II" else logits
        conf = torch.log_softmax(conf_logits, -1).clamp_min(LOG_FLOOR).gather(-1, anchor[..., None])[..., 0]
        tau = choice_temperature * (1.0 - (n + 1) / len(counts))
        if tau > 0:
            conf = conf - tau * torch.log(race_noise(conf.shape, generator, device=conf.device))  # + tau * Gumbel
        x = unmask_top(x, anchor, conf, k, vocab)
    return x


@torch.no_grad()
def replacement_sample(
    model: TokenModel, op, y: Tensor, generator: Generator = None, space: TokenSpace | None = None
) -> Tensor:
    """Inpainting baseline: tokens whose pixels are all observed are fixed to the nearest code of the
    observed values; the rest are drawn by FHS (the model's exact conditional)."""
    space, vocab, _ = _problem(model, op, y, space)
    if not hasattr(op, "mask"):
        raise ValueError(f"op: replacement conditioning needs an inpainting operator, got {type(op).__name__}")
    x = space.encode(op.adjoint(y.to(torch.float64)))
    known = space.fully_observed(op.mask).to(x.device)
    x = torch.where(known[None], x, torch.full_like(x, vocab))
    return first_hitting_sample(model, x.shape[0], generator=generator, x_init=x)


def _expected_images(probs: Tensor, space: TokenSpace) -> Tensor:
    return space.embed_to_image(space.expected_embed(probs))


def _single(generator: Generator) -> torch.Generator | None:
    return generator if isinstance(generator, torch.Generator) else None


@torch.no_grad()
def smc_sample(
    model: TokenModel,
    op,
    y: Tensor,
    steps: int = 16,
    particles: int = 8,
    sigma_y: float = 0.05,
    generator: Generator = None,
    space: TokenSpace | None = None,
) -> Tensor:
    """Derivative-free SMC (twisted-SMC style): ``particles`` per measurement unmask ``k_n`` uniformly random
    positions per step (cosine counts) with tokens drawn from the model, so each particle follows the prior;
    the twist is ``L_n(x) = N(y; A(E[D(x_0) | x]), s^2)`` (``s^2 = sigma_y^2 + 0.05^2`` tempers the proxy) and
    particles are resampled by the incremental weights ``L_n / L_{n-1}``; the particle of highest final
    likelihood is returned. NFE = ``steps * particles``.
    """
    space, vocab, length = _problem(model, op, y, space)
    b = y.shape[0]
    yr = y.repeat_interleave(particles, 0).to(torch.float64)
    x = torch.full((b * particles, length), vocab, dtype=torch.long, device=_device(model))
    var = sigma_y**2 + 0.05**2
    prev = torch.zeros(b, particles, dtype=torch.float64)
    probs = predictive_probs(model, x)
    counts = cosine_unmask_counts(length, steps)
    for n, k in enumerate(counts):
        draw = sample_categorical(probs, _single(generator))
        x = unmask_top(x, draw, rand(draw.shape, _single(generator), torch.float64), k, vocab)
        probs = predictive_probs(model, x) if n + 1 < len(counts) else F.one_hot(x, vocab).to(torch.float64)
        resid = (op.forward(_expected_images(probs, space)) - yr).flatten(1)
        loglik = (-(resid**2).sum(1) / (2 * var)).view(b, particles)
        idx = torch.multinomial(
            torch.softmax(loglik - prev, 1).float(), particles, replacement=True, generator=_single(generator)
        )
        rows = (idx + particles * torch.arange(b)[:, None]).flatten()
        x, probs, prev = x[rows], probs[rows], loglik.gather(1, idx)
    best = prev.argmax(1)
    return x.view(b, particles, length)[torch.arange(b), best]


def _gram_blocks(a: Tensor, channels: int) -> list[tuple[slice, Tensor]]:
    """``(columns, A_c^T A_c)`` per channel when every row of the dense ``A`` (``(m, C H W)``, channel-major
    columns) touches a single channel -- per-channel operators (inpainting, pooling, blur), for which the
    Gaussian z-step factorises over channels; otherwise one block ``(all columns, A^T A)``."""
    n = a.shape[1]
    hw = n // channels
    touch = (a != 0).reshape(a.shape[0], channels, hw).any(-1)  # (m, C)
    if channels == 1 or bool((touch.sum(1) > 1).any()):
        return [(slice(0, n), a.T @ a)]
    out = []
    for c in range(channels):
        ac = a[touch[:, c], c * hw : (c + 1) * hw]
        out.append((slice(c * hw, (c + 1) * hw), ac.T @ ac))
    return out


def _z_step(
    op,
    y: Tensor,
    x_img: Tensor,
    sigma_y: float,
    rho: float,
    generator: Generator,
    a: Tensor | None = None,
    blocks: list[tuple[slice, Tensor]] | None = None,
) -> Tensor:
    """Sample ``z ~ N(y; A z, sigma^2) N(z; x, rho^2)``: exact Gaussian for linear ``A`` (dense matrix ``a``
    and its Gram blocks :func:`_gram_blocks`, built from ``op`` when not given), else Langevin."""
    s2 = max(sigma_y, 1e-3) ** 2
    flat = x_img.flatten(1).to(torch.float64)
    n = flat.shape[1]
    if getattr(op, "linear", False):
        a = op.matrix(torch.float64) if a is None else a  # (m, n)
        blocks = _gram_blocks(a, x_img.shape[1]) if blocks is None else blocks
        rhs = (y.flatten(1).to(torch.float64) @ a) / s2 + flat / rho**2
        noise = randn((n, flat.shape[0]), _single(generator), torch.float64)
        out = torch.empty_like(rhs)
        for cols, gram in blocks:  # block-diagonal precision: the Cholesky factor is the blocks' factors
            chol = torch.linalg.cholesky(gram / s2 + torch.eye(gram.shape[0], dtype=torch.float64) / rho**2)
            mean = torch.cholesky_solve(rhs[:, cols].T, chol).T
            out[:, cols] = mean + torch.linalg.solve_triangular(chol.T, noise[cols], upper=True).T
        return out.reshape(x_img.shape)
    z = flat.clone()
    step = 0.1 * min(s2, rho**2)
    for _ in range(50):
        z = z.detach().requires_grad_(True)
        with torch.enable_grad():
            img = z.reshape(x_img.shape)
            energy = ((op.forward(img) - y.to(img.dtype)) ** 2).flatten(1).sum(1) / (2 * s2) + ((z - flat) ** 2).sum(
                1
            ) / (2 * rho**2)
            (g,) = torch.autograd.grad(energy.sum(), z)
        z = z - step * g + math.sqrt(2 * step) * randn(z.shape, _single(generator), torch.float64)
    return z.detach().reshape(x_img.shape)


@torch.no_grad()
def split_gibbs_sample(
    model: TokenModel,
    op,
    y: Tensor,
    sweeps: int = 8,
    sigma_y: float = 0.05,
    rho_max: float = 0.5,
    rho_min: float = 0.08,
    remask: float = 0.5,
    generator: Generator = None,
    space: TokenSpace | None = None,
) -> Tensor:
    """Split-Gibbs-style sampler: start from an FHS prior draw, then ``sweeps`` of (z-step; x-step).

    x-step: remask a random ``remask`` fraction of tokens and redraw them, one model call, from
    ``p_theta(x_i | x) * N(z_i; E_{x_i}, rho^2 I)`` (``z_i`` the token's pixels); ``rho`` anneals
    geometrically ``rho_max -> rho_min``. NFE = L (prior draw) + ``sweeps``.
    """
    space, vocab, _ = _problem(model, op, y, space)
    x = first_hitting_sample(model, y.shape[0], generator=generator)
    e_k = space.codebook
    a = op.matrix(torch.float64) if getattr(op, "linear", False) else None
    blocks = _gram_blocks(a, space.image_shape[0]) if a is not None else None
    for j in range(sweeps):
        rho = rho_max * (rho_min / rho_max) ** (j / max(1, sweeps - 1))
        z = space.image_to_embed(_z_step(op, y, space.decode(x), sigma_y, rho, generator, a, blocks))  # (B, L, d)
        drop = rand(x.shape, generator, torch.float64) < remask
        xm = torch.where(drop, torch.full_like(x, vocab), x)
        probs = predictive_probs(model, xm)
        d2 = (z**2).sum(-1, keepdim=True) - 2 * z @ e_k.T + (e_k**2).sum(-1)
        logpost = torch.log(probs.clamp_min(1e-300)) - d2 / (2 * rho**2)
        x = torch.where(drop, sample_categorical(torch.softmax(logpost, -1), generator), x)
    return x
