"""MuJoCo tabletop simulation: 7-DoF arm, multi-view cameras with Free Anchor Views, six tasks,
scripted experts, gymnasium registration (``enerverse/<Task>-v0``) and vectorised construction.

Importing ``sim`` never imports torch. Headless rendering defaults to EGL (``MUJOCO_GL=egl``) and
to single-threaded llvmpipe rasterisation (``LP_NUM_THREADS=0``), which is fastest for the small
images used here; set either variable before importing to override.
"""

from __future__ import annotations

from enerverse.core.device import headless_gl_defaults

headless_gl_defaults()

from sim.registration import GYM_IDS, make_env, make_vec_env, register_envs  # noqa: E402

register_envs()

__all__ = ["GYM_IDS", "make_env", "make_vec_env", "register_envs"]
