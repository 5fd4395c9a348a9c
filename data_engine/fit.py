"""``fit_4dgs``: fit 4D Gaussians (canonical Gaussians + deformation field) to a multi-view clip.

A :class:`Clip` is T frames of V calibrated views (some may be generated: their loss weight can be
lower). Fitting runs a static *coarse* stage (the canonical Gaussians alone, over every frame), then
a deforming *fine* stage (the field on, with its smoothness regularisers). The loss is L1 + an SSIM
term, plus an optional depth L1 where the clip has depth. Gaussians, grid and MLP have separate
learning rates; densify-and-prune (:mod:`data_engine.strategy`) grows the set where the image
gradient says detail is missing. The result is saved as safetensors + JSON (:func:`save_scene`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from data_engine.deform import Deformation
from data_engine.gaussians import Gaussians, init_from_rgbd
from data_engine.raster import rasterize
from data_engine.strategy import DensifySettings, GradientStats, densify_and_prune
from enerverse.core.frames import to_model
from enerverse.core.fsutil import write_json_atomic
from enerverse.core.progress import progress
from enerverse.metrics import masked_psnr, psnr, ssim


@dataclass
class Clip:
    """T frames of V views: ``rgb`` [T, V, H, W, 3] uint8, ``K`` [V, 3, 3], ``T_cam_world`` [T, V, 4, 4],
    optional ``depth`` [T, V, H, W] (metres, inf/0 = none), per-view loss ``weights`` [V] and frame
    ``times`` [T] in [-1, 1] (default: evenly spread)."""

    rgb: np.ndarray
    K: np.ndarray
    T_cam_world: np.ndarray
    depth: np.ndarray | None = None
    weights: np.ndarray | None = None
    times: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.rgb.ndim != 5 or self.rgb.shape[-1] != 3 or self.rgb.dtype != np.uint8:
            raise ValueError(f"expected rgb uint8 [T, V, H, W, 3], got {self.rgb.dtype} {self.rgb.shape}")
        T, V = self.rgb.shape[:2]
        if self.K.shape != (V, 3, 3) or self.T_cam_world.shape != (T, V, 4, 4):
            raise ValueError(
                f"cameras and frames disagree: {V} views x {T} frames need K [{V}, 3, 3] and T_cam_world "
                f"[{T}, {V}, 4, 4], got {self.K.shape} and {self.T_cam_world.shape}"
            )
        if self.depth is not None and self.depth.shape != self.rgb.shape[:4]:
            raise ValueError(f"depth {self.depth.shape} does not match the frames {self.rgb.shape[:4]}")
        flat = self.rgb.reshape(T, V, -1).max(axis=(0, 2)) == 0
        if flat.any():
            raise ValueError(f"view(s) {np.flatnonzero(flat).tolist()} are all black in every frame")

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(T, V, H, W)."""
        return tuple(self.rgb.shape[:4])  # type: ignore[return-value]

    def time(self, f: int) -> float:
        """Frame ``f``'s time in [-1, 1]."""
        if self.times is not None:
            return float(self.times[f])
        T = self.shape[0]
        return 0.0 if T == 1 else 2.0 * f / (T - 1) - 1.0


@dataclass
class FitSettings:
    coarse_steps: int = 300
    fine_steps: int = 600
    n_init: int = 4000
    lr_means: float = 1.6e-4
    """x the scene extent"""
    lr_quats: float = 1e-3
    lr_scales: float = 5e-3
    lr_opacity: float = 5e-2
    lr_sh: float = 2.5e-3
    lr_grid: float = 1.6e-3
    lr_mlp: float = 1.6e-4
    ssim_weight: float = 0.2
    depth_weight: float = 0.0
    plane_weight: float = 2e-4
    time_weight: float = 1e-3
    l1_time_weight: float = 1e-4
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)
    densify: DensifySettings = field(default_factory=DensifySettings)
    backend: str = "auto"
    seed: int = 0


class Scene4D(nn.Module):
    """Canonical Gaussians + deformation field: renders any camera at any time in [-1, 1]."""

    def __init__(self, gaussians: Gaussians, deformation: Deformation) -> None:
        super().__init__()
        self.gaussians, self.deformation = gaussians, deformation

    def render(
        self, t: float, viewmats: Tensor, Ks: Tensor, width: int, height: int, deform: bool = True,
        background: tuple[float, float, float] = (0.0, 0.0, 0.0), backend: str = "auto",
    ) -> tuple[Tensor, Tensor, Tensor, dict]:  # fmt: skip
        """(rgb [C, H, W, 3] in [0, 1], expected depth [C, H, W], alpha [C, H, W], meta) at time ``t``."""
        g = self.gaussians
        act = g.activated()
        means, quats, scales = act["means"], act["quats"], act["scales"]
        if deform:
            means, quats, log_scales = self.deformation(g.means, g.quats, g.log_scales, t)
            scales = log_scales.exp()
        bg = torch.tensor(background, dtype=means.dtype).expand(viewmats.shape[0], 3)
        out, alpha, meta = rasterize(
            means, quats, scales, act["opacities"], g.colors(viewmats, means), viewmats, Ks, width, height,
            backgrounds=bg, render_mode="RGB+ED", backend=backend,
        )  # fmt: skip
        return out[..., :3], out[..., 3], alpha[..., 0], meta


def scene_box(points: Tensor, margin: float = 0.1) -> tuple[Tensor, float]:
    """Axis-aligned box [2, 3] around ``points`` [N, 3] (robust: 1st-99th percentile, + margin) and the
    scene extent (its diagonal)."""
    lo = torch.quantile(points, 0.01, dim=0)
    hi = torch.quantile(points, 0.99, dim=0)
    pad = (hi - lo) * margin + 1e-3
    box = torch.stack([lo - pad, hi + pad])
    return box, float((box[1] - box[0]).norm())


def _optimizer(scene: Scene4D, cfg: FitSettings, extent: float) -> torch.optim.Adam:
    g = scene.gaussians
    groups = [
        {"params": [g.means], "lr": cfg.lr_means * extent, "name": "means"},
        {"params": [g.quats], "lr": cfg.lr_quats, "name": "quats"},
        {"params": [g.log_scales], "lr": cfg.lr_scales, "name": "log_scales"},
        {"params": [g.logit_opacities], "lr": cfg.lr_opacity, "name": "logit_opacities"},
        {"params": [g.sh], "lr": cfg.lr_sh, "name": "sh"},
        {"params": list(scene.deformation.field.parameters()), "lr": cfg.lr_grid, "name": "grid"},
        {"params": scene.deformation.mlp_parameters(), "lr": cfg.lr_mlp, "name": "mlp"},
    ]
    return torch.optim.Adam(groups, eps=1e-15)


def _cameras(clip: Clip, f: int) -> tuple[Tensor, Tensor]:
    return torch.from_numpy(clip.T_cam_world[f]).float(), torch.from_numpy(clip.K).float()


def _loss(scene: Scene4D, clip: Clip, f: int, cfg: FitSettings, deform: bool) -> tuple[Tensor, dict, dict]:
    """Photometric (+ depth) loss of frame ``f`` over every view."""
    T, V, H, W = clip.shape
    viewmats, Ks = _cameras(clip, f)
    rgb, depth, _, meta = scene.render(clip.time(f), viewmats, Ks, W, H, deform, cfg.background, cfg.backend)
    meta["means2d"].retain_grad()
    target = torch.from_numpy(clip.rgb[f]).float() / 255.0  # [V, H, W, 3]
    w = torch.ones(V) if clip.weights is None else torch.from_numpy(clip.weights).float()
    l1 = ((rgb - target).abs().mean(dim=(1, 2, 3)) * w).sum() / w.sum()
    x, y = rgb.permute(0, 3, 1, 2) * 2 - 1, target.permute(0, 3, 1, 2) * 2 - 1
    loss = l1 + cfg.ssim_weight * ((1 - ssim(x, y)) * w).sum() / w.sum() if cfg.ssim_weight else l1
    logs = {"l1": float(l1.detach())}
    if cfg.depth_weight and clip.depth is not None:
        d = torch.from_numpy(clip.depth[f]).float()
        ok = torch.isfinite(d) & (d > 0)
        dl = (depth - torch.nan_to_num(d, posinf=0.0))[ok].abs().mean() if ok.any() else depth.sum() * 0
        loss = loss + cfg.depth_weight * dl
        logs["depth_l1"] = float(dl.detach())
    if deform:
        reg = scene.deformation.field.regularisers()
        loss = loss + cfg.plane_weight * reg["plane"] + cfg.time_weight * reg["time"]
        loss = loss + cfg.l1_time_weight * reg["l1_time"]
    return loss, logs, meta


def initial_gaussians(clip: Clip, n: int, seed: int = 0) -> Gaussians:
    """Gaussians unprojected from the clip's first frame (every view); ValueError without depth."""
    if clip.depth is None:
        raise ValueError("depth initialisation needs a clip with depth (collect with ev-collect depth=true)")
    return init_from_rgbd(clip.rgb[0], clip.depth[0], clip.K, clip.T_cam_world[0], n=n, seed=seed)


def fit_4dgs(
    clip: Clip,
    cfg: FitSettings | None = None,
    gaussians: Gaussians | None = None,
    out: str | Path | None = None,
    show_progress: bool = True,
) -> tuple[Scene4D, list[dict]]:
    """Fit a :class:`Scene4D` to ``clip`` (see module docstring); ``gaussians``: the start (default:
    unprojected from the first frame's depth). Writes the scene to ``out`` when given. Returns the
    scene and per-step logs."""
    cfg = cfg or FitSettings()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    g = gaussians if gaussians is not None else initial_gaussians(clip, cfg.n_init, cfg.seed)
    box, extent = scene_box(g.means.detach())
    scene = Scene4D(g, Deformation(box))
    opt = _optimizer(scene, cfg, extent)
    stats = GradientStats(len(g))
    T, V, H, W = clip.shape
    logs: list[dict] = []
    total = cfg.coarse_steps + cfg.fine_steps
    bar = progress(range(total), desc="fit 4dgs", unit="step", disable=None if show_progress else True)
    for step in bar:
        deform = step >= cfg.coarse_steps
        f = int(rng.integers(T))
        loss, log, meta = _loss(scene, clip, f, cfg, deform)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        stats.add(meta["means2d"], meta["radii"], W, H)
        opt.step()
        d = cfg.densify
        if d.start <= step < d.stop and step > 0 and step % d.every == 0:
            log.update(densify_and_prune(g, opt, stats, d, extent))
        value = float(loss.detach())
        logs.append({"step": step, "stage": "fine" if deform else "coarse", "loss": value, **log})
        if hasattr(bar, "set_postfix") and step % 20 == 0:
            bar.set_postfix(loss=f"{value:.4f}", n=len(g))
    if out is not None:
        save_scene(scene, out, {"fit": _plain(asdict(cfg)), "steps": total})
    return scene, logs


def _plain(x):
    return json.loads(json.dumps(x, default=str))


@torch.no_grad()
def render_clip(
    scene: Scene4D, clip: Clip, frames: list[int] | None = None, deform: bool = True,
    background: tuple[float, float, float] = (0.0, 0.0, 0.0), backend: str = "auto",
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """The scene at the clip's cameras and times: rgb [F, V, H, W, 3] in [0, 1] and expected depth
    [F, V, H, W] (inf where alpha < 0.5), for ``frames`` (every frame by default)."""
    T, V, H, W = clip.shape
    rgbs, depths = [], []
    for f in frames if frames is not None else range(T):
        viewmats, Ks = _cameras(clip, f)
        rgb, depth, alpha, _ = scene.render(clip.time(f), viewmats, Ks, W, H, deform, background, backend)
        rgbs.append(rgb.clamp(0, 1))
        depths.append(torch.where(alpha > 0.5, depth, torch.full_like(depth, float("inf"))))
    return torch.stack(rgbs), torch.stack(depths)


def render_psnr(
    scene: Scene4D, clip: Clip, frames: list[int] | None = None, deform: bool = True,
    background: tuple[float, float, float] = (0.0, 0.0, 0.0), backend: str = "auto",
    mask: np.ndarray | None = None,
) -> dict[str, float]:  # fmt: skip
    """Mean PSNR and SSIM (dB, [0, 1]) of the scene's renders against ``clip`` (every frame by default);
    with ``mask`` [F, V, H, W] bool (the chosen frames) also ``masked_psnr`` over the set pixels."""
    idx = list(frames) if frames is not None else list(range(clip.shape[0]))
    rgb, _ = render_clip(scene, clip, idx, deform, background, backend)
    x = rgb.flatten(0, 1).permute(0, 3, 1, 2) * 2 - 1  # [F * V, 3, H, W]
    y = to_model(clip.rgb[idx]).flatten(0, 1)  # [F * V, 3, H, W]
    out = {"psnr": float(psnr(x, y).mean()), "ssim": float(ssim(x, y).mean())}  # per image, averaged
    if mask is not None:
        m = torch.from_numpy(np.asarray(mask, dtype=bool)).flatten(0, 1)  # [F * V, H, W]
        out["masked_psnr"] = float(masked_psnr(x, y, m).nanmean())
    return out


def save_scene(scene: Scene4D, folder: str | Path, extra: dict | None = None) -> Path:
    """``scene.safetensors`` + ``scene.json`` (sizes, SH degree, box) in ``folder``, atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    g, d = scene.gaussians, scene.deformation
    tmp = folder / "scene.safetensors.tmp"
    save_file({k: v.detach().contiguous() for k, v in scene.state_dict().items()}, str(tmp))
    tmp.replace(folder / "scene.safetensors")
    meta = {"format": "enerverse-4dgs", "version": 1, "n": len(g), "sh_degree": g.sh_degree,
            "channels": d.field.channels, "levels": d.field.levels, **(extra or {})}  # fmt: skip
    write_json_atomic(folder / "scene.json", meta)
    return folder


def load_scene(folder: str | Path) -> Scene4D:
    """The :class:`Scene4D` written by :func:`save_scene`."""
    folder = Path(folder)
    meta = json.loads((folder / "scene.json").read_text())
    if meta.get("format") != "enerverse-4dgs":
        raise ValueError(f"{folder} is not a 4DGS scene (scene.json format {meta.get('format')!r})")
    state = load_file(str(folder / "scene.safetensors"))
    n = meta["n"]
    g = Gaussians(torch.zeros(n, 3), torch.zeros(n, 3), torch.ones(n), sh_degree=meta["sh_degree"])
    scene = Scene4D(g, Deformation(state["deformation.field.aabb"], channels=meta["channels"]))
    scene.load_state_dict(state)
    return scene
