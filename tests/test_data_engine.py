"""EnerVerse-D: the rasteriser contract, the deformation field and 4DGS fitting (tiny scenes, CPU)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from data_engine.deform import Deformation
from data_engine.fit import Clip, FitSettings, fit_4dgs, load_scene, render_psnr, save_scene
from data_engine.gaussians import Gaussians, init_from_rgbd
from data_engine.raster import rasterize


def look_at(eye, target=(0.0, 0.0, 0.0)) -> torch.Tensor:
    """World->camera [4, 4] (OpenCV: x right, y down, z forward) of a camera at ``eye``."""
    eye, target = torch.tensor(eye, dtype=torch.float64), torch.tensor(target, dtype=torch.float64)
    f = (target - eye) / (target - eye).norm()
    r = torch.linalg.cross(f, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    r = r / r.norm()
    d = torch.linalg.cross(f, r)
    T = torch.eye(4, dtype=torch.float64)
    T[:3, :3] = torch.stack([r, d, f])
    T[:3, 3] = -T[:3, :3] @ eye
    return T


def rig(n: int = 4, size: int = 32, dist: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    vm = torch.stack(
        [
            look_at([dist * math.cos(a), dist * math.sin(a), 0.8])
            for a in np.linspace(0, 2 * math.pi, n, endpoint=False)
        ]
    )
    K = torch.tensor([[size * 1.2, 0, size / 2], [0, size * 1.2, size / 2], [0, 0, 1]], dtype=torch.float64)
    return vm, K.expand(n, 3, 3).clone()


def scene(n: int = 40, seed: int = 0, dtype=torch.float64) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "means": (torch.randn(n, 3, generator=g) * 0.3).to(dtype),
        "quats": torch.randn(n, 4, generator=g).to(dtype),
        "scales": (torch.rand(n, 3, generator=g) * 0.08 + 0.04).to(dtype),
        "opacities": (torch.rand(n, generator=g) * 0.7 + 0.2).to(dtype),
        "colors": torch.rand(n, 3, generator=g).to(dtype),
    }


def render(s: dict, backend: str, size: int = 32, mode: str = "RGB+ED", **kw):
    vm, K = rig(size=size)
    bg = torch.full((4, 3), 0.25, dtype=s["means"].dtype)
    dt = s["means"].dtype
    args = [s[k] for k in ("means", "quats", "scales", "opacities", "colors")]
    return rasterize(
        *args, vm.to(dt), K.to(dt), size, size, backgrounds=bg, render_mode=mode, backend=backend, **kw
    )


@pytest.mark.parametrize("size", [32, 40])  # 40: tiles overhang the image edge
def test_the_tile_rasteriser_matches_the_reference(size: int) -> None:
    s = scene(200, dtype=torch.float32)
    ref, ref_alpha, _ = render(s, "reference", size)
    out, alpha, meta = render(s, "torch", size)
    assert out.shape == (4, size, size, 4) and alpha.shape == (4, size, size, 1)
    assert meta["backend"] == "torch" and 0.05 < float(alpha.mean()) < 0.99
    assert torch.allclose(out[..., :3], ref[..., :3], atol=1e-4) and torch.allclose(
        alpha, ref_alpha, atol=1e-4
    )
    hit = ref_alpha[..., 0] > 0.5
    assert torch.allclose(out[..., 3][hit], ref[..., 3][hit], atol=1e-3)  # expected depth where covered


def test_gradients_match_finite_differences_in_float64() -> None:
    s = scene(6, seed=1)
    vm, K = rig(n=2, size=16)
    bg = torch.full((2, 3), 0.25, dtype=torch.float64)

    def f(means, scales, opacities, colors):
        out, alpha, _ = rasterize(means, s["quats"], scales, opacities, colors, vm, K, 16, 16, backgrounds=bg,
                                  render_mode="RGB+D", backend="torch")  # fmt: skip
        return out.sum(dim=(1, 2)), alpha.sum()

    inputs = [s[k].clone().requires_grad_(True) for k in ("means", "scales", "opacities", "colors")]
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-4, rtol=1e-3)


def test_a_single_gaussian_lands_where_the_camera_projects_its_centre() -> None:
    vm, K = rig(n=1, size=32)
    p = torch.tensor([0.1, -0.05, 0.12], dtype=torch.float64)
    cam = vm[0, :3, :3] @ p + vm[0, :3, 3]
    u, v = (
        (K[0, 0, 0] * cam[0] / cam[2] + K[0, 0, 2]).item(),
        (K[0, 1, 1] * cam[1] / cam[2] + K[0, 1, 2]).item(),
    )
    f64 = torch.float64
    one = {"means": p[None], "quats": torch.tensor([[1.0, 0, 0, 0]], dtype=f64),
           "scales": torch.full((1, 3), 0.01, dtype=f64), "opacities": torch.tensor([0.9], dtype=f64),
           "colors": torch.ones(1, 3, dtype=f64)}  # fmt: skip
    out, alpha, _ = rasterize(**one, viewmats=vm, Ks=K, width=32, height=32, backend="torch")
    row, col = divmod(int(alpha[0, ..., 0].argmax()), 32)
    assert (col, row) == (int(u), int(v))


def test_the_nearer_gaussian_hides_the_one_behind_it() -> None:
    vm, K = rig(n=1, size=16)
    centre = torch.zeros(3, dtype=torch.float64)
    cam_pos = -vm[0, :3, :3].T @ vm[0, :3, 3]
    toward = (cam_pos - centre) / (cam_pos - centre).norm()
    f64 = torch.float64
    s = {"means": torch.stack([centre + 0.3 * toward, centre]),  # red in front, blue behind
         "quats": torch.tensor([[1.0, 0, 0, 0]] * 2, dtype=f64),
         "scales": torch.full((2, 3), 0.2, dtype=f64), "opacities": torch.tensor([0.98, 0.98], dtype=f64),
         "colors": torch.tensor([[1.0, 0, 0], [0, 0, 1.0]], dtype=f64)}  # fmt: skip
    for order in ([0, 1], [1, 0]):  # the order of the arrays must not matter
        out, *_ = rasterize(
            **{k: v[order] for k, v in s.items()}, viewmats=vm, Ks=K, width=16, height=16, backend="torch"
        )
        px = out[0, 8, 8]
        assert px[0] > 0.85 and px[2] < 0.1  # the front Gaussian's alpha there is ~0.93


def test_an_empty_view_is_the_background() -> None:
    s = scene(10)
    s["means"] = s["means"] + torch.tensor([0.0, 0.0, 50.0], dtype=torch.float64)  # far above every camera
    for backend in ("torch", "reference"):
        out, alpha, _ = render(s, backend, 16, mode="RGB")
        assert torch.allclose(out, torch.full_like(out, 0.25)) and float(alpha.abs().max()) == 0.0


def test_bad_arguments_are_one_clear_error() -> None:
    s = scene(4)
    with pytest.raises(ValueError, match="render_mode must be one of"):
        render(s, "torch", mode="RGBD")
    with pytest.raises(ValueError, match="backend must be one of"):
        render(s, "cuda")
    s["colors"] = s["colors"][:3]
    with pytest.raises(ValueError, match=r"expected colours \[N=4, D\]"):
        render(s, "torch")


def test_the_deformation_is_the_identity_at_init_and_moves_once_trained() -> None:
    box = torch.tensor([[-1.0, -1, -1], [1, 1, 1]])
    torch.manual_seed(0)  # the field's spatial planes start random
    d = Deformation(box, channels=4, resolution=(8, 8, 8, 4), multires=(1,))
    m, q, s = torch.randn(20, 3) * 0.5, torch.randn(20, 4), torch.randn(20, 3)
    for t in (-1.0, 0.3, 1.0):
        m2, q2, s2 = d(m, q, s, t)
        assert torch.equal(m2, m) and torch.equal(q2, q) and torch.equal(s2, s)
    opt = torch.optim.Adam(d.parameters(), lr=1e-2)
    for _ in range(100):  # learn to move points at t = 1 only
        loss = (d(m, q, s, 1.0)[0] - (m + 0.1)).square().mean() + (d(m, q, s, -1.0)[0] - m).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (
        float((d(m, q, s, 1.0)[0] - m).mean()) > 0.03 and float((d(m, q, s, -1.0)[0] - m).abs().mean()) < 0.03
    )
    reg = d.field.regularisers()
    assert set(reg) == {"plane", "time", "l1_time"} and all(torch.isfinite(v) for v in reg.values())


BG = (0.25, 0.25, 0.25)


def _clip_of(s: dict, frames: int = 2, size: int = 24) -> Clip:
    vm, K = rig(size=size)
    out, alpha, _ = render({k: v.float() for k, v in s.items()}, "torch", size)
    rgb = (out[..., :3].clamp(0, 1) * 255).round().byte().numpy()
    depth = torch.where(alpha[..., 0] > 0.5, out[..., 3], torch.full_like(out[..., 3], float("inf"))).numpy()
    return Clip(
        rgb=np.repeat(rgb[None], frames, 0),
        K=K.float().numpy(),
        T_cam_world=np.repeat(vm.float().numpy()[None], frames, 0),
        depth=np.repeat(depth[None], frames, 0),
    )


def test_fitting_a_tiny_static_scene_improves_psnr_and_round_trips(tmp_path) -> None:
    clip = _clip_of(scene(60, seed=3), frames=1)
    start = init_from_rgbd(clip.rgb[0], clip.depth[0], clip.K, clip.T_cam_world[0], n=300, seed=0)
    from data_engine.fit import Scene4D, scene_box

    before = render_psnr(
        Scene4D(start, Deformation(scene_box(start.means.detach())[0])), clip, deform=False, background=BG
    )
    cfg = FitSettings(coarse_steps=80, fine_steps=0, background=BG)
    cfg.densify.start = 40
    fitted, logs = fit_4dgs(clip, cfg, gaussians=start, show_progress=False)
    after = render_psnr(fitted, clip, deform=False, background=BG)
    assert after["psnr"] > before["psnr"] + 2.0, (before, after)
    save_scene(fitted, tmp_path / "scene")
    again = load_scene(tmp_path / "scene")
    assert render_psnr(again, clip, deform=False, background=BG)["psnr"] == pytest.approx(
        after["psnr"], abs=1e-4
    )


def test_clips_that_disagree_with_their_cameras_are_refused() -> None:
    rgb = np.full((2, 3, 8, 8, 3), 100, np.uint8)
    with pytest.raises(ValueError, match="cameras and frames disagree"):
        Clip(rgb, np.eye(3)[None].repeat(2, 0), np.eye(4)[None, None].repeat(2, 0).repeat(3, 1))
    black = rgb.copy()
    black[:, 1] = 0
    with pytest.raises(ValueError, match=r"view\(s\) \[1\] are all black"):
        Clip(black, np.eye(3)[None].repeat(3, 0), np.eye(4)[None, None].repeat(2, 0).repeat(3, 1))
    with pytest.raises(ValueError, match="no pixel has a valid depth"):
        init_from_rgbd(
            rgb[0], np.zeros((3, 8, 8)), np.eye(3)[None].repeat(3, 0), np.eye(4)[None].repeat(3, 0)
        )
    g = Gaussians(torch.zeros(2, 3), torch.ones(2, 3) * 0.5, torch.ones(2) * 0.1)
    assert torch.allclose(g.colors(), torch.full((2, 3), 0.5))


def test_the_generator_fills_missing_views_and_never_touches_observed_ones() -> None:
    from data_engine.fill import fill_views
    from enerverse.core.camera import intrinsics_from_fovy, look_at, rotate_about_z
    from enerverse.generator import EnerVerseGenerator
    from enerverse.presets import get_preset

    torch.manual_seed(0)
    gen = EnerVerseGenerator(get_preset("tiny")).eval()
    cfg = gen.cfg
    V, R, T = cfg.num_views, cfg.resolution, 7  # 7 grid frames: more than one chunk
    main = look_at([1.3, 0.0, 0.75], [0.42, 0.0, 0.08])
    cams = np.stack([np.stack([rotate_about_z(main, 30.0 * v, [0.5, 0.0, 0.0]) for v in range(V)])] * T)
    K = np.stack([intrinsics_from_fovy(50.0, R, R)] * V)
    frames = torch.rand(1, V, T, 3, R, R, generator=torch.Generator().manual_seed(1)) * 2 - 1
    z = gen.encode(frames)[0]  # [C, V, T, h, w]
    given = z.clone()
    given[:, 1:] = float("nan")  # only view 0 observed
    out = fill_views(gen, given, [0], K, cams, "push the cube", steps=2, seed=0)
    assert out.shape == z.shape and torch.isfinite(out).all()
    assert torch.equal(out[:, 0], z[:, 0])
    again = fill_views(gen, given, [0], K, cams, "push the cube", steps=2, seed=0, strength=0.5, init=out)
    assert torch.equal(again[:, 0], z[:, 0]) and torch.isfinite(again).all()
    assert not torch.allclose(again[:, 1:], out[:, 1:])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (gsplat has no CPU path)")
def test_gsplat_and_the_torch_backend_agree_on_cuda() -> None:
    pytest.importorskip("gsplat")
    s = {k: v.float().cuda() for k, v in scene(300, seed=4).items()}
    vm, K = rig(size=48)
    bg = torch.full((4, 3), 0.25, device="cuda")
    args = [s[k] for k in ("means", "quats", "scales", "opacities", "colors")]
    kw = {"backgrounds": bg, "render_mode": "RGB+ED"}
    ours, a1, _ = rasterize(*args, vm.float().cuda(), K.float().cuda(), 48, 48, backend="torch", **kw)
    theirs, a2, _ = rasterize(*args, vm.float().cuda(), K.float().cuda(), 48, 48, backend="gsplat", **kw)
    assert (ours[..., :3] - theirs[..., :3]).abs().mean() < 2e-3 and (a1 - a2).abs().mean() < 2e-3
    assert (ours[..., :3] - theirs[..., :3]).abs().max() < 5e-2


def test_covisible_mask_sees_shared_surface_and_not_occluded_or_outside_points() -> None:
    from data_engine.coverage import covisible_mask
    from enerverse.core.camera import look_at as cam_look_at

    K = np.array([[40.0, 0, 16], [0, 40.0, 16], [0, 0, 1]])
    A = cam_look_at(np.array([0.0, 0.0, 2.0]), np.zeros(3), up=np.array([0.0, 1.0, 0.0]))
    plane = np.full((32, 32), 2.0)  # a wall at z = 0 seen head-on from 2 m
    same = covisible_mask(plane, K, A, plane[None], K[None], A[None])
    assert same.all()
    B = cam_look_at(np.array([0.8, 0.0, 2.0]), np.array([0.8, 0.0, 0.0]), up=np.array([0.0, 1.0, 0.0]))
    shifted = covisible_mask(plane, K, A, plane[None], K[None], B[None])  # B sees x in [0.0, 1.6]
    edges = (shifted[:, 0].all() and not shifted[:, -1].any()) or (
        shifted[:, -1].all() and not shifted[:, 0].any()
    )
    assert 0.2 < shifted.mean() < 0.8 and edges
    blocked = covisible_mask(plane, K, A, np.full((1, 32, 32), 1.0), K[None], A[None])  # occluder at 1 m
    assert not blocked.any()
    holes = covisible_mask(np.full((32, 32), np.inf), K, A, plane[None], K[None], A[None])
    assert not holes.any()


def test_plane_fill_covers_the_unseen_table_and_only_it() -> None:
    from data_engine.plane import fit_plane, plane_fill

    rng = np.random.default_rng(0)
    xy = rng.uniform(-0.3, 0.3, (6000, 2))
    hole = (xy[:, 0] > 0.1) & (xy[:, 0] < 0.2) & (np.abs(xy[:, 1]) < 0.1)  # table no camera saw
    table = np.column_stack([xy[~hole], np.full((~hole).sum(), 0.75)])
    block = rng.uniform([-0.05, -0.05, 0.75], [0.05, 0.05, 0.85], (300, 3))  # an object on it
    points = np.concatenate([table, block])
    colors = np.concatenate([np.full((len(table), 3), 200), np.full((300, 3), 30)]).astype(np.uint8)
    n, d, inliers = fit_plane(points)
    assert abs(abs(n[2]) - 1) < 1e-4 and abs(abs(d) - 0.75) < 1e-3 and inliers[: len(table)].all()
    new, new_cols = plane_fill(points, colors, spacing=0.02, margin=0.0)
    assert len(new) > 0 and np.allclose(new[:, 2], 0.75, atol=2e-3) and (new_cols == 200).all()
    inside = (new[:, 0] > 0.1 - 0.02) & (new[:, 0] < 0.2 + 0.02) & (np.abs(new[:, 1]) < 0.1 + 0.02)
    assert inside.all()  # only where nothing was seen ...
    assert np.ptp(new[:, 0]) > 0.04 and np.ptp(new[:, 1]) > 0.12  # ... across the whole hole
    wider, _ = plane_fill(points, colors, spacing=0.02, margin=0.25)
    assert np.abs(wider[:, :2]).max() > 0.4  # the margin extends the table past what was seen
    ball = rng.normal(size=(2000, 3))
    ball = 0.1 * ball / np.linalg.norm(ball, axis=1, keepdims=True)  # no support plane in view
    assert len(plane_fill(ball, np.zeros((2000, 3), dtype=np.uint8))[0]) == 0
    line = np.outer(np.linspace(0, 1, 50), [1.0, 2.0, 3.0])  # degenerate: no plane, no error
    assert len(plane_fill(line, np.zeros((50, 3), dtype=np.uint8))[0]) == 0
