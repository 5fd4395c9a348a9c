"""The EnerVerse-D flywheel on one episode: generate the missing views, fit 4DGS, render, regenerate.

Input: an episode whose ``observed`` views are real (e.g. only the main camera); the other views
are to be made. On the generator's frame grid:

1. the generator (sparse-view mode) fills in the missing views (:func:`data_engine.fill.fill_views`);
2. 4D Gaussians are fitted to the observed views (weight 1, with their depth) and the generated views
   (weight ``gen_weight``), initialised by unprojecting the observed views' depth;
3. the scene renders every view;
4. the renders of the missing views are re-noised (``strengths[r]`` of the schedule) and regenerated;
5. repeat until ``rounds`` or until the render-vs-generated agreement gains less than ``stop_db``.

Real frames are never overwritten: only the missing views change. Per round the metrics are the
missing views' PSNR/SSIM against the truth when the episode recorded it (the simulator renders every
view), the render-vs-generated PSNR, and the depth-warp error between views (rendered depth).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from data_engine.fit import Clip, FitSettings, fit_4dgs, render_clip
from data_engine.gaussians import init_from_rgbd
from enerverse.core.config import ConfigError
from enerverse.core.frames import to_model, to_uint8
from enerverse.metrics import depth_warp_error, psnr, ssim


@dataclass
class FlywheelSettings:
    observed: list[str] = field(default_factory=lambda: ["main"])
    """views treated as real; every other view of the episode is made"""
    rounds: int = 2
    strengths: list[float] = field(default_factory=lambda: [0.5, 0.35, 0.25])
    """re-noise strength per round (the last repeats)"""
    gen_weight: float = 0.5
    """4DGS loss weight of generated views (observed views: 1)"""
    stop_db: float = 0.1
    """stop when the render-vs-generated PSNR gains less than this many dB in a round"""
    max_frames: int | None = None
    """grid frames used per episode (None: all)"""
    steps: int | None = None
    """generator sampling steps (None: its config's)"""
    n_init: int = 3000
    fit: FitSettings = field(default_factory=lambda: FitSettings(coarse_steps=150, fine_steps=150))
    seed: int = 0

    def validate(self) -> None:
        if self.rounds < 0 or not self.strengths or not all(0 < s <= 1 for s in self.strengths):
            raise ConfigError(
                f"flywheel.rounds must be >= 0 and flywheel.strengths in (0, 1]; got {self.rounds}, "
                f"{self.strengths}"
            )
        if not self.observed:
            raise ConfigError("flywheel.observed must name at least one view")

    def check_views(self, views: list[str]) -> None:
        """ConfigError unless ``observed`` is a proper subset of ``views`` and the settings validate."""
        unknown = [v for v in self.observed if v not in views]
        if unknown or not self.observed:
            raise ConfigError(
                f"flywheel.observed must be a non-empty subset of the views {views}; got {self.observed}"
            )
        if len(self.observed) == len(views):
            raise ConfigError(f"every view ({views}) is observed: nothing for the flywheel to make")
        self.validate()


@dataclass
class EpisodeData:
    """One episode's grid frames: ``rgb`` [T, V, H, W, 3] uint8, ``depth`` [T, V, H, W] or None,
    ``K`` [V, 3, 3], ``T_cam_world`` [T, V, 4, 4], ``frames`` [T] recorded indices, ``views``."""

    rgb: np.ndarray
    depth: np.ndarray | None
    K: np.ndarray
    T_cam_world: np.ndarray
    frames: np.ndarray
    views: list[str]
    instruction: str
    length: int
    """recorded frames of the episode"""

    @classmethod
    def load(cls, ep, stride: int, max_frames: int | None = None) -> EpisodeData:
        idx = np.arange(0, ep.attrs["length"], stride)[:max_frames]
        depth = ep.load("depth", idx).astype(np.float32) if ep.has("depth") else None
        cams = ep.load("T_cam_world", idx).astype(np.float64)
        attrs = ep.attrs
        return cls(ep.load("rgb", idx), depth, ep.load("K").astype(np.float64), cams, idx,
                   list(attrs["view_names"]), str(attrs["instruction"]), int(attrs["length"]))  # fmt: skip


def _view_metrics(made: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """PSNR / SSIM of frames [T, v, H, W, 3] uint8 against the truth."""
    x = to_model(made.reshape(-1, *made.shape[2:]))
    y = to_model(truth.reshape(-1, *truth.shape[2:]))
    return {"psnr": float(psnr(x, y).mean()), "ssim": float(ssim(x, y).mean())}


def render_frames(scene, clip: Clip) -> tuple[np.ndarray, np.ndarray]:
    """The scene's renders [T, V, H, W, 3] uint8 and expected depth [T, V, H, W] at the clip's frames."""
    rgb, depth = render_clip(scene, clip)
    return (rgb * 255).round().byte().numpy(), depth.numpy()


def _sheet(
    truth: np.ndarray, made: np.ndarray, renders: np.ndarray, obs: list[int], missing: list[int]
) -> np.ndarray:
    """One round's picture at the middle frame: observed view(s) | generated | 4DGS renders | truth
    (the last three over the missing views), side by side [H, W', 3]."""
    f = len(truth) // 2
    cols = [truth[f, v] for v in obs] + [made[f, v] for v in missing]
    cols += [renders[f, v] for v in missing] + [truth[f, v] for v in missing]
    return np.concatenate(cols, axis=1)


class Flywheel:
    """Runs the flywheel with one generator (see module docstring)."""

    def __init__(self, generator, cfg: FlywheelSettings) -> None:
        self.gen, self.cfg = generator, cfg

    def encode(self, rgb: np.ndarray) -> torch.Tensor:
        """Frames [T, V, H, W, 3] uint8 -> latents [C, V, T, h, w]."""
        frames = to_model(rgb).permute(1, 0, 2, 3, 4)[None]  # [1, V, T, 3, H, W]
        return self.gen.encode(frames.to(self.gen.device))[0].cpu().float()

    def decode(self, z: torch.Tensor) -> np.ndarray:
        """Latents [C, V, T, h, w] -> frames [T, V, H, W, 3] uint8."""
        frames = self.gen.decode(z[None].to(self.gen.device))[0].cpu()  # [V, T, 3, H, W]
        return to_uint8(frames.permute(1, 0, 2, 3, 4))

    def generate(self, ep: EpisodeData, obs: list[int], init: np.ndarray | None = None, strength: float = 1.0,
                 seed: int = 0) -> np.ndarray:  # fmt: skip
        """All views [T, V, H, W, 3]: observed views as given, the others generated (from ``init``
        re-noised to ``strength`` when given)."""
        from data_engine.fill import fill_views

        z = self.encode(ep.rgb if init is None else init)
        given = z.clone()
        missing = [v for v in range(len(ep.views)) if v not in obs]
        given[:, missing] = float("nan")
        out = fill_views(self.gen, given, obs, ep.K, ep.T_cam_world, ep.instruction, self.cfg.steps, seed,
                         strength, z if init is not None else None)  # fmt: skip
        frames = self.decode(out)
        frames[:, obs] = ep.rgb[:, obs]  # real frames are never overwritten (not even by a codec round trip)
        return frames

    def fit(self, ep: EpisodeData, frames: np.ndarray, obs: list[int], seed: int):
        """4DGS fitted to ``frames`` (observed views weighted 1, with depth; generated ``gen_weight``)."""
        if ep.depth is None:
            raise ValueError(
                "the flywheel's 4DGS starts from the observed views' depth: collect with depth=true"
            )
        V = len(ep.views)
        weights = np.full(V, self.cfg.gen_weight, np.float32)
        weights[obs] = 1.0
        depth = np.full_like(ep.depth, np.inf)
        depth[:, obs] = ep.depth[:, obs]
        times = 2.0 * ep.frames / max(1, ep.length - 1) - 1.0
        clip = Clip(frames, ep.K.astype(np.float32), ep.T_cam_world.astype(np.float32), depth, weights, times)
        g = init_from_rgbd(
            ep.rgb[0, obs], ep.depth[0, obs], ep.K[obs], ep.T_cam_world[0, obs], n=self.cfg.n_init, seed=seed
        )
        scene, _ = fit_4dgs(clip, self.cfg.fit, gaussians=g, show_progress=False)
        return scene, clip

    def run(self, ep: EpisodeData) -> dict:
        """Rounds of the flywheel on ``ep``: the final views ``frames`` [T, V, H, W, 3], per-round
        ``rounds`` metrics and pictures (``sheets``)."""
        cfg = self.cfg
        cfg.check_views(ep.views)
        obs = [ep.views.index(v) for v in cfg.observed]
        missing = [v for v in range(len(ep.views)) if v not in obs]
        truth = ep.rgb[:, missing]  # what the simulator recorded (ground truth for the metrics)
        frames = self.generate(ep, obs, seed=cfg.seed)
        rounds = [{"round": 0, "generated": _view_metrics(frames[:, missing], truth)}]
        prev = -np.inf
        sheets: list[np.ndarray] = []
        for r in range(cfg.rounds):
            scene, clip = self.fit(ep, frames, obs, cfg.seed + r)
            renders, depth = render_frames(scene, clip)
            renders[:, obs] = ep.rgb[:, obs]
            agreement = _view_metrics(renders[:, missing], frames[:, missing])["psnr"]
            views = to_model(renders).permute(1, 0, 2, 3, 4)  # [V, T, 3, H, W]
            warp = depth_warp_error(views, torch.from_numpy(depth), ep.K, ep.T_cam_world[0])
            rounds[-1].update(
                {"render": _view_metrics(renders[:, missing], truth), "render_vs_generated_psnr": agreement,
                 "depth_warp_error": warp}
            )  # fmt: skip
            sheets.append(_sheet(ep.rgb, frames, renders, obs, missing))
            if agreement - prev < cfg.stop_db:
                break
            prev = agreement
            strength = cfg.strengths[min(r, len(cfg.strengths) - 1)]
            frames = self.generate(ep, obs, init=renders, strength=strength, seed=cfg.seed + 100 * (r + 1))
            made = _view_metrics(frames[:, missing], truth)
            rounds.append({"round": r + 1, "strength": strength, "generated": made})
        return {"frames": frames, "rounds": rounds, "observed": obs, "missing": missing, "sheets": sheets}


def summarise_rounds(per_episode: list[dict]) -> dict:
    """Means over episodes of the made views' PSNR against the truth: the generator alone (round 0),
    the flywheel's final views (each episode's last round) and their difference, plus the per-round
    render PSNR and render-vs-generated agreement. ``per_episode``: items with a ``rounds`` list."""
    eps = [e["rounds"] for e in per_episode if e.get("rounds")]
    if not eps:
        return {}
    alone = float(np.mean([r[0]["generated"]["psnr"] for r in eps]))
    final = float(np.mean([r[-1]["generated"]["psnr"] for r in eps]))
    by_round = []
    for k in range(max(len(r) for r in eps)):
        rows = [r[k] for r in eps if len(r) > k]
        row = {"round": k, "episodes": len(rows),
               "generated_psnr": float(np.mean([x["generated"]["psnr"] for x in rows]))}  # fmt: skip
        fitted = [x for x in rows if "render" in x]
        if fitted:
            row["render_psnr"] = float(np.mean([x["render"]["psnr"] for x in fitted]))
            row["render_vs_generated_psnr"] = float(np.mean([x["render_vs_generated_psnr"] for x in fitted]))
        by_round.append(row)
    return {"episodes": len(eps), "generator_alone_psnr": alone, "final_psnr": final,
            "gain_db": final - alone, "by_round": by_round}  # fmt: skip
