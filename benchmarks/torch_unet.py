"""The DDPM U-Net and its train step in PyTorch (eager), to time against gen_jax on one machine.

An independent, straightforward PyTorch port of `gen_jax.models.unet.UNet` (Ho et al. 2020,
Appendix B; the released TF1 code's layout): the same modules, widths, skip bookkeeping,
GroupNorm epsilon, TF 'SAME' padding of the stride-2 downsampling conv, single-head
attention and timestep embedding, hence the same parameter count. `load_flax_params` copies a
gen_jax parameter tree into it (conv kernels HWIO -> OIHW, dense kernels (in, out) ->
(out, in)), so that outputs can be compared numerically. `TrainStep` is the update the
gen_jax diffusion method takes with the default recipe: L_simple (Ho et al. Eq. 14) with
t ~ U{0..T-1} and eps ~ N(0, I), Adam, global-norm clipping, EMA of the weights.

PyTorch is not a gen_jax dependency; benchmarks/unet.py imports this module (see there).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

GN_EPSILON = 1e-6   # tf.contrib.layers.group_norm's, as in gen_jax/models/unet.py


def timestep_embedding(t_B: torch.Tensor, dim: int) -> torch.Tensor:
  """Sinusoidal embedding, sines then cosines, frequencies 10000^(-i / (dim/2 - 1))."""
  half = dim // 2
  freqs = torch.exp(-math.log(10000.0) / max(half - 1, 1) * torch.arange(half, dtype=torch.float32))
  angles = t_B.float()[:, None] * freqs[None, :]
  emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
  return F.pad(emb, (0, 1)) if dim % 2 else emb


class ResBlock(nn.Module):
  """GN -> swish -> conv3x3 -> + Dense(swish(temb)) -> GN -> swish -> dropout -> conv3x3,
  plus a 1x1 projection of the input when the widths differ."""

  def __init__(self, in_ch: int, out_ch: int, temb_ch: int, dropout: float, groups: int):
    super().__init__()
    self.norm1 = nn.GroupNorm(groups, in_ch, eps=GN_EPSILON)
    self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
    self.temb_proj = nn.Linear(temb_ch, out_ch)
    self.norm2 = nn.GroupNorm(groups, out_ch, eps=GN_EPSILON)
    self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
    self.nin_shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None
    self.dropout = dropout

  def forward(self, x, temb):
    h = self.conv1(F.silu(self.norm1(x)))
    h = h + self.temb_proj(F.silu(temb))[:, :, None, None]
    h = F.dropout(F.silu(self.norm2(h)), self.dropout, self.training)
    h = self.conv2(h)
    return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h


class AttnBlock(nn.Module):
  """Single-head self-attention over the H*W positions, with a residual."""

  def __init__(self, ch: int, groups: int):
    super().__init__()
    self.norm = nn.GroupNorm(groups, ch, eps=GN_EPSILON)
    self.q, self.k, self.v = nn.Linear(ch, ch), nn.Linear(ch, ch), nn.Linear(ch, ch)
    self.proj_out = nn.Linear(ch, ch)

  def forward(self, x):
    B, C, H, W = x.shape
    h = self.norm(x).reshape(B, C, H * W).transpose(1, 2)           # [B, N, C]
    q, k, v = self.q(h), self.k(h), self.v(h)
    w = torch.softmax(torch.bmm(q, k.transpose(1, 2)) * C ** -0.5, dim=-1)
    h = self.proj_out(torch.bmm(w, v))
    return x + h.transpose(1, 2).reshape(B, C, H, W)


class UNet(nn.Module):
  """gen_jax.models.unet.UNet in PyTorch (NCHW); submodules carry the gen_jax names."""

  def __init__(self, in_ch: int, resolution: int, ch: int, ch_mult, num_res_blocks: int,
               attn_resolutions, dropout: float, num_groups: int):
    super().__init__()
    E = 4 * ch
    self.ch, self.ch_mult, self.num_res_blocks = ch, tuple(ch_mult), num_res_blocks
    self.attn_resolutions = tuple(attn_resolutions)
    m = nn.ModuleDict()
    m["temb_dense0"], m["temb_dense1"] = nn.Linear(ch, E), nn.Linear(E, E)
    m["conv_in"] = nn.Conv2d(in_ch, ch, 3, padding=1)
    widths, w, res = [ch], ch, resolution
    for level, mult in enumerate(self.ch_mult):
      for block in range(num_res_blocks):
        m[f"down_{level}_block_{block}"] = ResBlock(w, ch * mult, E, dropout, num_groups)
        w = ch * mult
        if res in self.attn_resolutions:
          m[f"down_{level}_attn_{block}"] = AttnBlock(w, num_groups)
        widths.append(w)
      if level != len(self.ch_mult) - 1:
        m[f"down_{level}_downsample"] = nn.Conv2d(w, w, 3, stride=2)
        widths.append(w)
        res //= 2
    m["mid_block_1"] = ResBlock(w, w, E, dropout, num_groups)
    m["mid_attn_1"] = AttnBlock(w, num_groups)
    m["mid_block_2"] = ResBlock(w, w, E, dropout, num_groups)
    for level in reversed(range(len(self.ch_mult))):
      for block in range(num_res_blocks + 1):
        m[f"up_{level}_block_{block}"] = ResBlock(w + widths.pop(), ch * self.ch_mult[level], E,
                                                  dropout, num_groups)
        w = ch * self.ch_mult[level]
        if res in self.attn_resolutions:
          m[f"up_{level}_attn_{block}"] = AttnBlock(w, num_groups)
      if level != 0:
        m[f"up_{level}_upsample"] = nn.Conv2d(w, w, 3, padding=1)
        res *= 2
    m["norm_out"] = nn.GroupNorm(num_groups, w, eps=GN_EPSILON)
    m["conv_out"] = nn.Conv2d(w, in_ch, 3, padding=1)
    self.m = m

  def forward(self, x, t):
    m, L = self.m, len(self.ch_mult)
    temb = m["temb_dense1"](F.silu(m["temb_dense0"](timestep_embedding(t, self.ch))))
    h = m["conv_in"](x)
    skips = [h]
    for level in range(L):
      for block in range(self.num_res_blocks):
        h = m[f"down_{level}_block_{block}"](h, temb)
        if h.shape[2] in self.attn_resolutions:
          h = m[f"down_{level}_attn_{block}"](h)
        skips.append(h)
      if level != L - 1:
        h = m[f"down_{level}_downsample"](F.pad(h, (0, 1, 0, 1)))   # TF 'SAME', stride 2
        skips.append(h)
    h = m["mid_block_2"](m["mid_attn_1"](m["mid_block_1"](h, temb)), temb)
    for level in reversed(range(L)):
      for block in range(self.num_res_blocks + 1):
        h = m[f"up_{level}_block_{block}"](torch.cat([h, skips.pop()], dim=1), temb)
        if h.shape[2] in self.attn_resolutions:
          h = m[f"up_{level}_attn_{block}"](h)
      if level != 0:
        h = m[f"up_{level}_upsample"](F.interpolate(h, scale_factor=2.0, mode="nearest"))
    return m["conv_out"](F.silu(m["norm_out"](h)))


def load_flax_params(model: UNet, params) -> None:
  """Copies a gen_jax UNet parameter tree (nested dicts of arrays) into `model`."""
  tensor = lambda a: torch.from_numpy(np.array(a, dtype=np.float32))
  with torch.no_grad():
    for name, module in model.named_modules():
      if not isinstance(module, (nn.Conv2d, nn.Linear, nn.GroupNorm)):
        continue
      node = params
      for part in name.split(".")[1:]:      # 'm.down_0_block_0.conv1' -> params[...][...]
        node = node[part]
      if isinstance(module, nn.GroupNorm):
        module.weight.copy_(tensor(node["scale"]))
      elif isinstance(module, nn.Conv2d) and np.ndim(node["kernel"]) == 4:
        module.weight.copy_(tensor(node["kernel"]).permute(3, 2, 0, 1))   # HWIO -> OIHW
      elif isinstance(module, nn.Conv2d):                                  # gen_jax Dense 1x1
        module.weight.copy_(tensor(node["kernel"]).T[:, :, None, None])
      else:
        module.weight.copy_(tensor(node["kernel"]).T)
      module.bias.copy_(tensor(node["bias"]))


class TrainStep:
  """One DDPM update (Ho et al. Alg. 1 with Eq. 14): t ~ U{0..T-1}, eps ~ N(0, I),
  x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, loss = mean (eps - net(x_t, t))^2; Adam,
  global-norm clipping, then EMA of the weights (no EMA warmup, as a steady-state step)."""

  def __init__(self, model: UNet, *, lr: float, b1: float, b2: float, eps: float,
               grad_clip: float, ema_decay: float, num_timesteps: int = 1000,
               beta_start: float = 1e-4, beta_end: float = 0.02):
    self.model = model.train()
    self.opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(b1, b2), eps=eps)
    self.params = [p for p in model.parameters()]
    self.ema = [p.detach().clone() for p in self.params]
    self.grad_clip, self.ema_decay, self.T = grad_clip, ema_decay, num_timesteps
    betas = torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)
    abar = torch.cumprod(1.0 - betas, 0)
    self.sqrt_abar, self.sqrt_1m_abar = abar.sqrt().float(), (1.0 - abar).sqrt().float()

  def __call__(self, x0: torch.Tensor) -> float:
    B = x0.shape[0]
    t = torch.randint(0, self.T, (B,))
    noise = torch.randn_like(x0)
    x_t = (self.sqrt_abar[t][:, None, None, None] * x0
           + self.sqrt_1m_abar[t][:, None, None, None] * noise)
    loss = F.mse_loss(self.model(x_t, t), noise)
    self.opt.zero_grad(set_to_none=True)
    loss.backward()
    if self.grad_clip:
      torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
    self.opt.step()
    with torch.no_grad():
      torch._foreach_lerp_(self.ema, self.params, 1.0 - self.ema_decay)
    return loss.item()
