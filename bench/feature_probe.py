"""Which observation encoding lets a small net find a small object fast? A localisation probe.

    python bench/feature_probe.py --generator outputs/train_generator/<run>/checkpoint \
        [--task reach] [--scenes 1200] [--steps 1500] [--sources pixels,latents,first,mid]

Renders ``scenes`` initial frames of ``task`` (3 views at the generator's resolution, seeds 20000+)
and trains, for each source, a small net (3 convs, spatial-softmax keypoints + channel means per view,
an MLP; for pixels the image baseline's strided CNN) to regress the target object's position (the
first 3 privileged values: the reach sphere, the pick_place cube) on the first 1000 scenes. Sources:

- ``pixels``: the RGB frames [V, 3, R, R];
- ``latents``: the generator's codec latents [V, C, R/f, R/f];
- ``first`` / ``mid``: the frozen generator's features of the latest memory frame (the frame repeated
  as 4 memory frames + 8 noise frames, one forward at the noisiest timestep), first down level or
  middle block - what EnerVerse-A reads with ``policy.encoder.block``.

Reported per source: mean held-out position error (cm) after the last step, its curve, and the wall
time; the spread of the targets (error of predicting the mean) is the no-learning baseline in the same
run. JSON under outputs/bench/feature_probe/.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_summary, run_metadata, save_results  # noqa: E402

from enerverse.core.camera import ray_maps  # noqa: E402
from enerverse.core.frames import to_model  # noqa: E402
from enerverse.core.store.stats import summarize  # noqa: E402
from enerverse.io import load_generator  # noqa: E402
from policies.config import EncoderConfig  # noqa: E402
from policies.layers import KeypointPool  # noqa: E402
from policies.tokens import ImageTokens  # noqa: E402

VIEWS = ["main", "anchor_left", "anchor_right"]
TRAIN = 1000


def render_scenes(task: str, n: int, R: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """rgb [n, V, R, R, 3] uint8, target position [n, 3], and the (fixed) cameras of the first scene."""
    import sim

    env = sim.make_env(task, views=VIEWS, width=R, height=R)
    rgb, pos, cams = [], [], {}
    for s in range(n):
        obs, _ = env.reset(seed=20000 + s)
        rgb.append(obs["rgb"])
        pos.append(obs["privileged"][:3])
        cams = cams or {"K": obs["K"], "T_cam_world": obs["T_cam_world"]}
    env.close()
    return np.stack(rgb), np.stack(pos).astype(np.float32), cams


@torch.no_grad()
def encode(gen, rgb: np.ndarray, source: str, cams: dict) -> Tensor:
    """Inputs [n, V, C, h, w] of ``source`` for the probe."""
    frames = to_model(rgb)  # [n, V, 3, R, R]
    if source == "pixels":
        return frames
    out = []
    for i in range(0, len(frames), 50):
        z = gen.encode(frames[i : i + 50, :, None])[:, :, :, 0]  # [b, C, V, h, w]
        if source == "latents":
            out.append(z.permute(0, 2, 1, 3, 4))
            continue
        b, m, M = len(z), gen.cfg.memory.n_memory, gen.cfg.memory.chunk
        R, h = rgb.shape[2], z.shape[-1]
        full = np.repeat(cams["T_cam_world"][:, None], m + M, axis=1)
        rays = torch.from_numpy(ray_maps(cams["K"], full, R, h))[None].expand(b, -1, -1, -1, -1, -1)
        pos = torch.tensor([list(range(1 - m, 1)) + list(range(1, M + 1))] * b, dtype=torch.float32)
        memory = z[:, :, :, None].expand(-1, -1, -1, m, -1, -1)
        f = gen.extract_features(memory, rays, pos, ["find the object"] * b, seed=0, block=source)
        out.append(f[:, :, m - 1])  # the latest memory frame [b, V, C, h', w']
    return torch.cat(out).float()


class Probe(nn.Module):
    """Per-view keypoint pooling of [n, V, C, h, w] -> MLP -> position [n, 3]."""

    def __init__(self, channels: int, views: int) -> None:
        super().__init__()
        self.pool = KeypointPool(channels, keypoints=32, hidden=64)
        self.mlp = nn.Sequential(nn.Linear(views * self.pool.out_dim, 128), nn.SiLU(), nn.Linear(128, 3))

    def forward(self, x: Tensor) -> Tensor:
        n, V = x.shape[:2]
        return self.mlp(self.pool(x.flatten(0, 1)).reshape(n, -1))


class PixelProbe(nn.Module):
    """Frames [n, V, 3, R, R] -> the image baseline's own CNN (:class:`ImageTokens`, width 16) -> [n, 3]."""

    def __init__(self, views: int) -> None:
        super().__init__()
        self.cnn = ImageTokens(EncoderConfig(kind="cnn", cnn_width=16, shift=0), views, 1, 128)
        self.out = nn.Linear(128, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.cnn(x[:, :, None])[:, 0])


def probe(x: Tensor, y: np.ndarray, steps: int, seed: int, pixels: bool) -> dict:
    """Train on the first TRAIN scenes, report the held-out error (cm) every 100 steps."""
    torch.manual_seed(seed)
    yt = torch.from_numpy(y)
    st = summarize(y[:TRAIN])  # the project's normalisation statistics (population std, floored)
    mu, sd = torch.as_tensor(st["mean"], dtype=yt.dtype), torch.as_tensor(st["std"], dtype=yt.dtype)
    net = PixelProbe(x.shape[1]) if pixels else Probe(x.shape[2], x.shape[1])
    opt = torch.optim.AdamW(net.parameters(), 1e-3)
    curve, t0 = [], time.perf_counter()
    for step in range(1, steps + 1):
        idx = torch.randint(0, TRAIN, (64,))
        loss = ((net(x[idx]) - (yt[idx] - mu) / sd) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == steps:
            with torch.no_grad():
                pred = net(x[TRAIN:]) * sd + mu
            curve.append([step, float((pred - yt[TRAIN:]).norm(dim=1).mean() * 100)])
    return {"error_cm": curve[-1][1], "curve": curve, "seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--generator", required=True, help="EnerVerse-G checkpoint folder")
    ap.add_argument("--task", default="reach")
    ap.add_argument("--scenes", type=int, default=1200)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--sources", default="pixels,latents,first,mid")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    if a.scenes <= TRAIN:
        ap.error(f"--scenes must be > {TRAIN} (the first {TRAIN} train the probe, the rest test it)")
    sources = a.sources.split(",")
    unknown = set(sources) - {"pixels", "latents", "first", "mid"}
    if unknown:
        ap.error(f"unknown sources {sorted(unknown)}; valid: pixels, latents, first, mid")
    gen = load_generator(a.generator, "cpu")
    rgb, y, cams = render_scenes(a.task, a.scenes, gen.cfg.resolution)
    spread = float(np.linalg.norm(y[TRAIN:] - y[:TRAIN].mean(0), axis=1).mean() * 100)
    results = {
        "meta": run_metadata(vars(a)),
        "predict_the_mean_cm": spread,
        "sources": {},
    }
    for src in sources:
        x = encode(gen, rgb, src, cams)
        r = probe(x, y, a.steps, a.seed, pixels=src == "pixels")
        r["input_shape"] = list(x.shape[1:])
        results["sources"][src] = r
        shape = tuple(x.shape[1:])
        print(f"{src:8s} {shape}: {r['error_cm']:.2f} cm ({r['seconds']:.0f} s)", file=sys.stderr)
    path = save_results("feature_probe", results, a.out)
    print_summary(
        {
            "predict_the_mean_cm": round(spread, 2),
            **{k: round(v["error_cm"], 2) for k, v in results["sources"].items()},
            "results": str(path),
        }
    )


if __name__ == "__main__":
    main()
