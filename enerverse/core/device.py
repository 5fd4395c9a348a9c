"""Device selection and a capability report (torch, CUDA, gsplat, rclpy, MuJoCo rendering).

Nothing here imports torch, gsplat, rclpy or mujoco at module import time; every probe catches its
own errors so :func:`capabilities` never raises.
"""

from __future__ import annotations

import contextlib
import gc
import os
import platform
import sys
import warnings
from typing import Any

from .config import ConfigError

_TINY_MJCF = """
<mujoco>
  <worldbody>
    <light pos="0 0 1"/>
    <camera name="cam" pos="0 0 1"/>
    <geom type="sphere" size="0.2" rgba="1 0 0 1"/>
  </worldbody>
</mujoco>
"""


_RENDER_CACHE: dict[str, Any] = {}  # the GL backend is fixed per process: probe it once


def headless_gl_defaults() -> None:
    """Default to headless EGL rendering and single-threaded llvmpipe, unless the user chose otherwise.

    Must run before mujoco creates a GL context. ``LP_NUM_THREADS=0`` rasterises in the calling thread,
    which is fastest for the small (64-128 px) images the stack renders on CPU (see bench/).
    """
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("LP_NUM_THREADS", "0")


def channels_last_on_cpu(x: Any) -> Any:
    """A 4-D tensor [N, C, H, W] in channels-last memory order when it is on the CPU, else unchanged.

    The same values; PyTorch's CPU convs and GroupNorms run this order faster, with autograd too (2
    cores, measured: the codec encoder x0.7, the policy's image CNN forward + backward x0.75). Outputs
    differ from the default order by about 1e-4 (other conv algorithms)."""
    import torch

    if x.device.type != "cpu" or x.ndim != 4:
        return x
    return x.contiguous(memory_format=torch.channels_last)


def pick_device(pref: str = "auto") -> str:
    """Resolve a device preference to a torch device string.

    ``auto`` gives ``cuda`` when CUDA is available and ``cpu`` otherwise (also when torch is missing);
    ``cpu``, ``cuda`` and ``cuda:N`` are checked and returned; an unavailable or unknown one is a
    ConfigError (a ValueError) naming the valid choices.
    """
    pref = (pref or "auto").strip().lower()
    if pref == "cpu":
        return "cpu"
    try:
        import torch
    except ImportError:
        if pref == "auto":
            return "cpu"
        raise ConfigError(f"device {pref!r} requested but torch is not installed") from None
    if pref == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if pref == "cuda" or (pref.startswith("cuda:") and pref[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {pref!r} requested but CUDA is not available (use device=cpu or auto)")
        if ":" in pref:
            index = int(pref.split(":", 1)[1])
            if index >= torch.cuda.device_count():
                raise ConfigError(
                    f"device {pref!r} requested but only {torch.cuda.device_count()} GPU(s) exist"
                )
        return pref
    raise ConfigError(f"unknown device {pref!r}; use auto, cpu, cuda or cuda:N")


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _probe_gsplat(torch: Any) -> tuple[bool, str]:
    """Import gsplat and rasterise one Gaussian on the GPU."""
    try:
        import gsplat
    except Exception as e:
        return False, f"unavailable: {_short(e)}"
    try:
        dev = "cuda"
        means = torch.zeros(1, 3, device=dev)
        quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]], device=dev)
        scales = torch.full((1, 3), 0.1, device=dev)
        opacities = torch.ones(1, device=dev)
        colors = torch.ones(1, 3, device=dev)
        viewmat = torch.eye(4, device=dev)
        viewmat[2, 3] = 2.0
        K = torch.tensor([[8.0, 0.0, 4.0], [0.0, 8.0, 4.0], [0.0, 0.0, 1.0]], device=dev)
        img, _, _ = gsplat.rasterization(
            means, quats, scales, opacities, colors, viewmat[None], K[None], 8, 8
        )
        torch.cuda.synchronize()
        if not bool(torch.isfinite(img).all()) or float(img.max()) <= 0.0:
            return False, f"unusable: gsplat {gsplat.__version__} rendered an empty image"
        return True, f"ok ({gsplat.__version__})"
    except Exception as e:
        return False, f"unusable: {_short(e)}"


def _probe_torch(info: dict[str, Any], check_gsplat: bool) -> None:
    info.update(torch=None, cuda_available=False, cuda_device=None, cuda_version=None, cuda_bf16=False)
    info.update(gsplat_usable=False, gsplat="unavailable: no CUDA")
    try:
        import torch
    except Exception as e:
        info["gsplat"] = "unavailable: no torch"
        info["torch_error"] = _short(e)
        return
    info["torch"] = torch.__version__
    try:
        if not torch.cuda.is_available():
            return
        info["cuda_available"] = True
        info["cuda_device"] = torch.cuda.get_device_name(0)
        info["cuda_version"] = torch.version.cuda
        info["cuda_bf16"] = bool(torch.cuda.is_bf16_supported())
    except Exception as e:
        info["cuda_error"] = _short(e)
        return
    if check_gsplat:
        info["gsplat_usable"], info["gsplat"] = _probe_gsplat(torch)
    else:
        info["gsplat"] = "not checked"


def _probe_rclpy() -> tuple[bool, str]:
    try:
        import rclpy  # noqa: F401
    except Exception as e:
        return False, f"unavailable: {_short(e)}"
    return True, "ok"


def _probe_mujoco(info: dict[str, Any], check_render: bool) -> None:
    """MuJoCo version, MUJOCO_GL, and whether an 8x8 offscreen render works in this process.

    The render is attempted at most once per process (the result is cached); glfw on a headless Linux
    machine is reported as failing without trying, because a retried glfw failure aborts Python.
    """
    info.update(mujoco=None, mujoco_gl=os.environ.get("MUJOCO_GL"), mujoco_render_ok=False)
    try:
        import mujoco
    except Exception as e:  # e.g. MUJOCO_GL=osmesa without libOSMesa fails inside the import
        info["mujoco_render"] = f"unavailable: {_short(e)}"
        return
    info["mujoco"] = mujoco.__version__
    if not check_render:
        info["mujoco_render"] = "not checked"
        return
    gl = (os.environ.get("MUJOCO_GL") or "").lower()
    headless = not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    if sys.platform.startswith("linux") and gl in ("", "glfw") and headless:
        # glfw without a display fails, and a second failed attempt aborts the whole process
        info["mujoco_render"] = "failed: glfw backend without a display (set MUJOCO_GL=egl or osmesa)"
        return
    if _RENDER_CACHE:
        info.update(_RENDER_CACHE)
        return
    old_hook = sys.unraisablehook
    sys.unraisablehook = lambda _args: None  # a half-built Renderer complains in __del__
    renderer = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = mujoco.MjModel.from_xml_string(_TINY_MJCF)
            data = mujoco.MjData(model)
            mujoco.mj_forward(model, data)
            renderer = mujoco.Renderer(model, 8, 8)
            renderer.update_scene(data, camera="cam")
            img = renderer.render()
        ok = img.shape == (8, 8, 3) and int(img.max()) > 0
        info["mujoco_render_ok"] = ok
        info["mujoco_render"] = "ok" if ok else "failed: rendered an all-black image"
    except Exception as e:
        info["mujoco_render"] = f"failed: {_short(e)}"
    finally:
        if renderer is not None:
            with contextlib.suppress(Exception):
                renderer.close()
        renderer = None
        gc.collect()
        sys.unraisablehook = old_hook
        _RENDER_CACHE.update(mujoco_render_ok=info["mujoco_render_ok"], mujoco_render=info["mujoco_render"])


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def capabilities(check_render: bool = True, check_gsplat: bool = True) -> dict[str, Any]:
    """What this machine and environment can do; never raises.

    Keys: python, platform, cpu_count, torch (version or None), cuda_available, cuda_device,
    cuda_version, cuda_bf16, gsplat (status text; gsplat is only imported when CUDA is available),
    gsplat_usable, rclpy (status text), rclpy_importable, mujoco (version or None), mujoco_gl
    (the MUJOCO_GL value or None), mujoco_render (status text), mujoco_render_ok. Extra ``*_error``
    keys appear when a probe itself failed.
    """
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": _cpu_count(),
    }
    _probe_torch(info, check_gsplat)
    info["rclpy_importable"], info["rclpy"] = _probe_rclpy()
    _probe_mujoco(info, check_render)
    return info
