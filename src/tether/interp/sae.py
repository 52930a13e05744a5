"""Sparse autoencoders on captured activations: TopK, BatchTopK and JumpReLU, trained and measured.

An SAE writes a site's activation ``x`` as a sparse sum of learned feature directions:
``f = σ((x − b_dec) W_enc + b_enc)``, ``x̂ = f W_dec + b_dec``. The kinds differ in ``σ``:

- ``topk`` (Gao et al. 2024): keep each row's ``k`` largest pre-activations (after a ReLU);
- ``batchtopk`` (Bussmann et al. 2024): keep the ``k × rows`` largest across the batch while training, so a
  row may use more or fewer than ``k``; at inference a single threshold replaces the batch (the value that
  keeps ``k`` per row on average over the training rows), so a row's features do not depend on its batch;
- ``matryoshka`` (Bussmann et al. 2025; Nabeshima 2024): BatchTopK whose features are trained in nested
  groups: the loss is the mean of the reconstruction errors of the first ``groups[0]`` features, the first
  ``groups[1]``, ..., all of them, so the first features must stand alone (general ones early, specific
  ones later, and less absorption of one feature by another); at inference it is BatchTopK;
- ``jumprelu`` (Rajamanoharan et al. 2024): ``f = pre · 1[pre > θ]`` with a learned threshold per feature,
  trained on ``MSE + λ · L0`` with straight-through estimates of the step's gradient (a rectangle kernel of
  width ``bandwidth``).

Training normalises activations to a mean squared norm of ``d_in`` and folds the scale back into the
weights when it ends, so a trained SAE reads raw activations. TopK and BatchTopK add Gao et al.'s auxiliary
loss: features that have not fired for ``dead_after`` rows are asked to explain what the live ones miss, so
fewer die. TopK trains its decoder rows as directions of any norm (short at the start:
``decoder_init_norm``; a feature's activation is its pre-activation times its row's norm, and it decodes
through the row made unit; SAELens's ``rescale_acts_by_decoder_norm``, with Anthropic's 0.1 initial
norm), so that Adam, which moves every weight by about ``lr`` a step, turns a row by a large angle early;
the norms are folded into the encoder when training ends (on world-model activations, 3 epochs: explained
variance 0.932 → 0.953 at k 16). BatchTopK and JumpReLU keep unit rows: under the same scheme BatchTopK
at k 4 lost 6 points of explained variance and 71% of its features died.

:func:`sae_metrics` gives L0, explained variance and the dead fraction on held-out rows;
:func:`spliced_losses` splices the SAE into the model at its site and gives the CE- and KL-loss recovered
against zero-ablating the site. :meth:`SparseAutoencoder.save` writes SAELens's on-disk format
(``cfg.json`` + ``sae_weights.safetensors``; a BatchTopK SAE as the JumpReLU it is at inference).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from tether.core.config import Config

Kind = Literal["topk", "batchtopk", "matryoshka", "jumprelu"]
BATCH_KINDS = ("batchtopk", "matryoshka")  # select k × rows across a batch in training, one threshold after


class SAEConfig(Config):
    """How to train one SAE."""

    kind: Kind = Field("topk", description="topk, batchtopk, matryoshka or jumprelu")
    width: int = Field(512, ge=1, description="features (d_sae)")
    k: int = Field(16, ge=1, description="topk / batchtopk / matryoshka: features per row (on average for the "
                   "batch kinds)")
    groups: list[int] = Field(default_factory=list, description="matryoshka: the nested prefix sizes, ascending, "
                              "the last the width (empty: width/8, width/4, width/2, width)")
    l0_coefficient: float = Field(1e-3, ge=0, description="jumprelu: λ, the price of one active feature")
    # Activations are normalised to a mean squared norm of d_in, so pre-activations are of order 1: the
    # kernel and the first threshold are set in those units.
    bandwidth: float = Field(0.05, gt=0, description="jumprelu: width of the straight-through rectangle kernel")
    initial_threshold: float = Field(0.5, gt=0, description="jumprelu: θ at the start")
    decoder_init_norm: float = Field(0.1, gt=0, description="topk: the decoder rows' norm at the "
                                     "start; they are trained as directions (each feature's activation "
                                     "rescaled by its row's norm), so Adam turns a short row quickly")
    lr: float = Field(2e-3, gt=0)
    threshold_lr_scale: float = Field(10.0, gt=0, description="jumprelu: the thresholds' learning rate, as a "
                                      "multiple of lr")
    epochs: float = Field(4.0, gt=0, description="passes over the activations")
    batch_size: int = Field(1024, ge=1, description="rows per step")
    aux_k: int = Field(64, ge=0, description="topk and the batch kinds: dead features used by the auxiliary loss "
                       "(0: off)")
    aux_coefficient: float = Field(1 / 32, ge=0)
    dead_after: int = Field(50_000, ge=1, description="rows without firing after which a feature counts as dead")
    seed: int = 0

    @model_validator(mode="after")
    def _groups_fit_the_width(self) -> SAEConfig:
        if self.groups and (self.groups != sorted(set(self.groups)) or self.groups[-1] != self.width
                            or self.groups[0] < 1):
            raise ValueError(f"groups {self.groups}: expected ascending sizes from 1 up to the width ({self.width})")
        return self


class _JumpReLU(torch.autograd.Function):
    """``pre · 1[pre > θ]``; the gradient to θ through a rectangle kernel of width ``bandwidth``."""

    @staticmethod
    def forward(ctx: Any, pre: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        pre, threshold = ctx.saved_tensors
        near = ((pre - threshold).abs() < ctx.bandwidth / 2).to(grad.dtype)
        return grad * (pre > threshold), (-(threshold / ctx.bandwidth) * near * grad).sum(0), None


class _Step(torch.autograd.Function):
    """``1[pre > θ]`` (the L0 count); only θ gets a gradient, through the same kernel."""

    @staticmethod
    def forward(ctx: Any, pre: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor, None]:
        pre, threshold = ctx.saved_tensors
        near = ((pre - threshold).abs() < ctx.bandwidth / 2).to(grad.dtype)
        return None, (-(1.0 / ctx.bandwidth) * near * grad).sum(0), None


class SparseAutoencoder(torch.nn.Module):
    """An SAE of ``width`` features over ``d_in``-wide activations (see the module docstring)."""

    def __init__(self, d_in: int, cfg: SAEConfig, *, site: str = "") -> None:
        super().__init__()
        self.cfg, self.site, self.d_in = cfg, site, d_in
        generator = torch.Generator().manual_seed(cfg.seed)
        decoder = torch.randn(cfg.width, d_in, generator=generator)
        decoder *= (cfg.decoder_init_norm if cfg.kind == "topk" else 1.0) / decoder.norm(dim=1, keepdim=True)
        self.W_dec = torch.nn.Parameter(decoder)
        self.W_enc = torch.nn.Parameter(decoder.T.clone())
        self.b_enc = torch.nn.Parameter(torch.zeros(cfg.width))
        self.b_dec = torch.nn.Parameter(torch.zeros(d_in))
        self.log_threshold = torch.nn.Parameter(torch.full((cfg.width,), math.log(cfg.initial_threshold)),
                                                requires_grad=cfg.kind == "jumprelu")
        self.register_buffer("batch_threshold", torch.tensor(-1.0))  # batchtopk's inference threshold; -1: unset

    def pre(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-activations (rows × width)."""
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    def encode(self, x: torch.Tensor, *, training: bool = False) -> torch.Tensor:
        """Feature activations (… × width); ``training``: batchtopk selects across the batch."""
        shape = x.shape
        return self.activate(self.pre(x.reshape(-1, self.d_in)), training=training).reshape(*shape[:-1],
                                                                                         self.cfg.width)

    def activate(self, pre: torch.Tensor, *, training: bool = False) -> torch.Tensor:
        """Feature activations from pre-activations (rows × width)."""
        kind = self.cfg.kind
        if kind == "jumprelu":
            return _JumpReLU.apply(pre, self.log_threshold.exp(), self.cfg.bandwidth)
        if kind == "topk" or (kind in BATCH_KINDS and (training or self.batch_threshold < 0)):
            relu = torch.relu(pre)
            if kind == "topk":
                top = relu.topk(min(self.cfg.k, relu.shape[1]), dim=1)
                return torch.zeros_like(relu).scatter(1, top.indices, top.values)
            flat = relu.flatten()
            kept = flat.topk(min(self.cfg.k * relu.shape[0], flat.numel()))
            return torch.zeros_like(flat).scatter(0, kept.indices, kept.values).view_as(relu)
        return pre * (pre > self.batch_threshold)

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """Reconstructions from feature activations."""
        return f @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``decode(encode(x))``."""
        return self.decode(self.encode(x))

    def save(self, directory: str | Path) -> Path:
        """SAELens's format: ``cfg.json`` and ``sae_weights.safetensors`` (plus tether's own config)."""
        from safetensors.torch import save_file

        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        weights = {"W_enc": self.W_enc, "W_dec": self.W_dec, "b_enc": self.b_enc, "b_dec": self.b_dec}
        architecture = self.cfg.kind
        if self.cfg.kind == "jumprelu":
            weights["threshold"] = self.log_threshold.exp()
        elif self.cfg.kind in BATCH_KINDS:  # at inference it is a JumpReLU with one threshold for every feature
            architecture = "jumprelu"
            weights["threshold"] = self.batch_threshold.clamp(min=0).expand(self.cfg.width)
        save_file({k: v.detach().float().contiguous() for k, v in weights.items()},
                  str(path / "sae_weights.safetensors"))
        saelens = {"architecture": architecture, "d_in": self.d_in, "d_sae": self.cfg.width, "dtype": "float32",
                   "device": "cpu", "apply_b_dec_to_input": True, "normalize_activations": "none",
                   "reshape_activations": "none", "metadata": {"hook_name": self.site, "tether_site": self.site}}
        if architecture == "topk":
            saelens["k"] = self.cfg.k
        (path / "cfg.json").write_text(json.dumps(saelens, indent=2) + "\n")
        (path / "tether_sae.json").write_text(json.dumps({"site": self.site, "d_in": self.d_in,
                                                          "config": self.cfg.model_dump()}, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> SparseAutoencoder:
        """What :meth:`save` wrote."""
        from safetensors.torch import load_file

        path = Path(directory)
        meta = json.loads((path / "tether_sae.json").read_text())
        sae = cls(meta["d_in"], SAEConfig(**meta["config"]), site=meta["site"])
        weights = load_file(str(path / "sae_weights.safetensors"))
        with torch.no_grad():
            for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
                getattr(sae, name).copy_(weights[name])
            if sae.cfg.kind == "jumprelu":
                sae.log_threshold.copy_(weights["threshold"].clamp(min=1e-12).log())
            elif sae.cfg.kind in BATCH_KINDS:
                sae.batch_threshold.fill_(float(weights["threshold"][0]))
        return sae


def matryoshka_groups(cfg: SAEConfig) -> list[int]:
    """The nested prefix sizes a Matryoshka SAE is trained on (ascending, ending at the width)."""
    if not cfg.groups:
        return sorted({max(1, cfg.width // 8), max(1, cfg.width // 4), max(1, cfg.width // 2), cfg.width})
    return list(cfg.groups)  # checked when the config was made


def train_sae(activations: torch.Tensor, cfg: SAEConfig, *, site: str = "") -> tuple[SparseAutoencoder,
                                                                                      dict[str, Any]]:
    """Train an SAE on ``activations`` (rows × d_in); returns it (reading raw activations) and a log:
    loss per step at a few points, rows per second, the normalising scale."""
    torch.manual_seed(cfg.seed)
    x_all = activations.float()
    d_in = x_all.shape[1]
    scale = math.sqrt(d_in / float((x_all ** 2).sum(1).mean()))
    sae = SparseAutoencoder(d_in, cfg, site=site)
    with torch.no_grad():
        sae.b_dec.copy_((x_all * scale).mean(0))
    # Adam moves a parameter by about lr a step whatever its gradient's size, so a log-threshold at the
    # weights' rate could move only by lr × steps in a whole run; it gets its own, faster rate.
    weights = [p for name, p in sae.named_parameters() if p.requires_grad and name != "log_threshold"]
    groups: list[dict[str, Any]] = [{"params": weights, "lr": cfg.lr, "base": cfg.lr}]
    if cfg.kind == "jumprelu":
        rate = cfg.lr * cfg.threshold_lr_scale
        groups.append({"params": [sae.log_threshold], "lr": rate, "base": rate})
    optimiser = torch.optim.Adam(groups, betas=(0.9, 0.999))
    prefixes = matryoshka_groups(cfg) if cfg.kind == "matryoshka" else []
    steps = max(1, int(math.ceil(cfg.epochs * len(x_all) / cfg.batch_size)))
    decay_from = int(0.8 * steps)
    generator = torch.Generator().manual_seed(cfg.seed)
    since_fired = torch.zeros(cfg.width)
    log: list[dict[str, float]] = []
    started = time.perf_counter()
    order = torch.randperm(len(x_all), generator=generator)
    cursor = 0
    for step in range(steps):
        if cursor + cfg.batch_size > len(order):
            order, cursor = torch.randperm(len(x_all), generator=generator), 0
        x = x_all[order[cursor:cursor + cfg.batch_size]] * scale
        cursor += cfg.batch_size
        for group in optimiser.param_groups:  # constant, then linear decay to 0 over the last fifth
            group["lr"] = group["base"] * min(1.0, (steps - step) / max(1, steps - decay_from))
        directions = sae.W_dec
        if cfg.kind == "topk":
            # Rows as directions: each feature's activation scaled by its row's norm, the scaling applied to
            # the encoder's columns (d_in × width numbers) rather than to every row's pre-activations.
            norms = sae.W_dec.norm(dim=1).clamp(min=1e-8)
            pre = (x - sae.b_dec) @ (sae.W_enc * norms) + sae.b_enc * norms
            directions = sae.W_dec / norms[:, None]
        else:
            pre = sae.pre(x)
        if cfg.kind == "topk":
            # Decoding only the k chosen rows of the decoder (not a mostly-zero dense product) is the
            # difference between k and width multiply-adds per row, forward and backward.
            top = torch.relu(pre).topk(min(cfg.k, cfg.width), dim=1)
            recon = torch.einsum("bk,bkd->bd", top.values, directions[top.indices]) + sae.b_dec
            fired = torch.zeros(cfg.width, dtype=torch.bool)
            fired[top.indices[top.values > 0]] = True
            active = (top.values > 0).sum(1).float()
        else:
            f = sae.activate(pre, training=True)
            recon = f @ directions + sae.b_dec
            fired = (f > 0).any(0)
            active = (f > 0).sum(1).float()
        error = x - recon
        mse = (error ** 2).sum(1).mean() / d_in
        loss = mse
        if cfg.kind == "matryoshka":  # every nested prefix must reconstruct on its own
            loss = torch.stack([((x - f[:, :m] @ directions[:m] - sae.b_dec) ** 2).sum(1).mean() / d_in
                                for m in prefixes[:-1]] + [mse]).mean()
        since_fired = torch.where(fired, torch.zeros_like(since_fired), since_fired + len(x))
        if cfg.kind == "jumprelu":
            l0 = _Step.apply(pre, sae.log_threshold.exp(), cfg.bandwidth).sum(1).mean()
            loss = loss + cfg.l0_coefficient * l0
        elif cfg.aux_k and cfg.aux_coefficient:
            dead = since_fired >= cfg.dead_after
            if dead.any():
                # Only the dead columns are read (not the whole batch × width, masked): the same choice. The
                # chosen ones decode as a dense product over the dead rows, not a gather of aux_k rows per
                # row of the batch (aux_k × d_in numbers each, forward and backward).
                dead_ids = dead.nonzero().squeeze(1)
                dead_pre = torch.relu(pre[:, dead_ids])
                revive = dead_pre.topk(min(cfg.aux_k, len(dead_ids)), dim=1)
                codes = torch.zeros_like(dead_pre).scatter(1, revive.indices, revive.values)
                aux = codes @ directions[dead_ids]
                aux_error = ((error.detach() - aux) ** 2).sum(1).mean() / d_in
                loss = loss + cfg.aux_coefficient * aux_error
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if cfg.kind != "topk":
            with torch.no_grad():
                sae.W_dec /= sae.W_dec.norm(dim=1, keepdim=True).clamp(min=1e-8)
        if step % max(1, steps // 20) == 0 or step == steps - 1:
            log.append({"step": step, "mse": round(float(mse.detach()), 6),
                        "l0": round(float(active.mean()), 3),
                        "dead": int((since_fired >= cfg.dead_after).sum())})
    if cfg.kind == "topk":
        _fold_norms(sae)
    if cfg.kind in BATCH_KINDS:
        _set_batch_threshold(sae, x_all * scale)
    seconds = time.perf_counter() - started
    _fold_scale(sae, scale)
    sae.eval()
    return sae, {"steps": steps, "seconds": round(seconds, 3), "rows_per_s": round(steps * cfg.batch_size / seconds, 1),
                 "scale": scale, "log": log}


@torch.no_grad()
def _set_batch_threshold(sae: SparseAutoencoder, x: torch.Tensor) -> None:
    """BatchTopK's inference threshold: the ``k × rows``-th largest activation over all the training rows,
    so that at inference the rows use ``k`` features on average, as in training."""
    relu = torch.cat([torch.relu(sae.pre(x[i:i + 8192])).flatten() for i in range(0, len(x), 8192)])
    kept = min(sae.cfg.k * len(x), relu.numel())
    sae.batch_threshold.fill_(float(relu.topk(kept).values[-1]))


@torch.no_grad()
def _fold_norms(sae: SparseAutoencoder) -> None:
    """Unit decoder rows with the same outputs: each row's norm moves into its encoder column and bias (the
    pre-activations were scaled by it in training, so the features, and which ``k`` win, are unchanged)."""
    norms = sae.W_dec.norm(dim=1).clamp(min=1e-8)
    sae.W_enc.mul_(norms[None, :])
    sae.b_enc.mul_(norms)
    sae.W_dec.div_(norms[:, None])


@torch.no_grad()
def _fold_scale(sae: SparseAutoencoder, scale: float) -> None:
    """Make an SAE trained on ``x · scale`` read ``x``: the pre-activations are unchanged, so the
    thresholds and the sparsity are too."""
    sae.W_enc.mul_(scale)
    sae.W_dec.div_(scale)
    sae.b_dec.div_(scale)


@torch.no_grad()
def sae_metrics(sae: SparseAutoencoder, activations: torch.Tensor, *, batch_size: int = 4096) -> dict[str, float]:
    """L0 (mean active features per row), explained variance (``1 − Σ‖x − x̂‖² / Σ‖x − x̄‖²``) and the
    share of features that never fire, on ``activations``."""
    x_all = activations.float()
    mean = x_all.mean(0)
    squared_error = total = active = 0.0
    fired = torch.zeros(sae.cfg.width, dtype=torch.bool)
    for start in range(0, len(x_all), batch_size):
        x = x_all[start:start + batch_size]
        f = sae.encode(x)
        squared_error += float(((x - sae.decode(f)) ** 2).sum())
        total += float(((x - mean) ** 2).sum())
        active += float((f > 0).sum())
        fired |= (f > 0).any(0)
    return {"l0": round(active / len(x_all), 3), "explained_variance": round(1 - squared_error / total, 5),
            "dead_fraction": round(1 - float(fired.float().mean()), 5), "rows": len(x_all)}


@torch.no_grad()
def spliced_losses(model: Any, tokenizer: Any, texts: Sequence[str], sae: SparseAutoencoder, *,
                   batch_size: int = 16, max_length: int = 256) -> dict[str, float]:
    """Next-token cross-entropy on ``texts`` with the site as it is, replaced by the SAE's reconstruction,
    and set to zero; ``ce_recovered = (CE_zero − CE_sae) / (CE_zero − CE_clean)``, and the same for the KL
    divergence from the clean next-token distribution (``kl_recovered = 1 − KL_sae / KL_zero``)."""

    def spliced(value: torch.Tensor) -> torch.Tensor:
        return sae(value.float()).to(value.dtype)

    side = tokenizer.padding_side
    tokenizer.padding_side = "right"
    sums = {"clean": 0.0, "sae": 0.0, "zero": 0.0, "kl_sae": 0.0, "kl_zero": 0.0}
    tokens = 0
    try:
        for start in range(0, len(texts), batch_size):
            encoded = tokenizer(list(texts[start:start + batch_size]), return_tensors="pt", padding=True,
                                truncation=True, max_length=max_length).to(next(model.parameters()).device)
            ids, mask = encoded["input_ids"], encoded["attention_mask"]
            keep = mask[:, 1:].bool()
            target = ids[:, 1:]

            clean = _logprobs(model, ids, mask, None, sae.site)
            for name, logp in (("clean", clean), ("sae", _logprobs(model, ids, mask, spliced, sae.site)),
                               ("zero", _logprobs(model, ids, mask, torch.zeros_like, sae.site))):
                sums[name] += float(-logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)[keep].sum())
                if name != "clean":
                    sums[f"kl_{name}"] += float((clean.exp() * (clean - logp)).sum(-1)[keep].sum())
            tokens += int(keep.sum())
    finally:
        tokenizer.padding_side = side
    ce = {k: sums[k] / tokens for k in ("clean", "sae", "zero")}
    kl_sae, kl_zero = sums["kl_sae"] / tokens, sums["kl_zero"] / tokens
    return {"ce_clean": round(ce["clean"], 5), "ce_sae": round(ce["sae"], 5), "ce_zero": round(ce["zero"], 5),
            "ce_recovered": round((ce["zero"] - ce["sae"]) / (ce["zero"] - ce["clean"]), 5),
            "kl_sae": round(kl_sae, 5), "kl_zero": round(kl_zero, 5), "kl_recovered": round(1 - kl_sae / kl_zero, 5),
            "tokens": tokens}


def _logprobs(model: Any, ids: torch.Tensor, mask: torch.Tensor, edit: Any, site: str) -> torch.Tensor:
    """Next-token log-probabilities, with ``edit`` at ``site`` (None: as the model is)."""
    from tether.interp.sites import hooked

    with hooked(model, {site: edit} if edit is not None else {}):
        return torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits[:, :-1].float(), -1)


@torch.no_grad()
def max_activating(sae: SparseAutoencoder, activations: torch.Tensor, rows: Sequence[dict[str, Any]],
                   features: Sequence[int], *, top: int = 8) -> dict[int, list[tuple[float, dict[str, Any]]]]:
    """Per feature, the ``top`` rows (with their index entries, e.g. text and token position) on which it
    fires hardest."""
    f = sae.encode(activations.float())
    out: dict[int, list[tuple[float, dict[str, Any]]]] = {}
    for feature in features:
        values, index = f[:, feature].topk(min(top, len(f)))
        out[feature] = [(float(v), rows[int(i)]) for v, i in zip(values, index, strict=True) if v > 0]
    return out
