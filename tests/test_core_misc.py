"""Outputs, seeding, progress, device helpers and ev-info; plus torch-free import of enerverse.core."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from enerverse.core import fsutil
from enerverse.core.device import capabilities, pick_device
from enerverse.core.info import main as info_main
from enerverse.core.outputs import make_output_dir, print_summary, write_json_atomic
from enerverse.core.progress import progress
from enerverse.core.seeding import episode_seed, seed_everything

REPO = Path(__file__).resolve().parents[1]


def test_output_dir_naming_and_uniqueness(tmp_path: Path) -> None:
    a = make_output_dir("collect", root=tmp_path)
    b = make_output_dir("collect", root=tmp_path)
    assert a.is_dir() and b.is_dir() and a != b
    assert a.parent == tmp_path / "collect"
    assert re.fullmatch(r"\d{8}-\d{6}(-\d+)?", a.name) and re.fullmatch(r"\d{8}-\d{6}(-\d+)?", b.name)
    explicit = make_output_dir("collect", out=tmp_path / "mine" / "run1", root=tmp_path)
    assert explicit == tmp_path / "mine" / "run1" and explicit.is_dir()
    assert make_output_dir("collect", out=explicit) == explicit  # an existing folder is fine
    with pytest.raises(ValueError):
        make_output_dir("a/b", root=tmp_path)


def test_write_json_atomic_numpy(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "result.json"
    obj = {
        "f": np.float32(0.5),
        "i": np.int64(3),
        "b": np.bool_(True),
        "arr": np.arange(3),
        "p": tmp_path,
        "nested": [(1, 2), {"x": np.zeros((2, 2))}],
    }
    write_json_atomic(path, obj)
    data = json.loads(path.read_text())
    assert data == {
        "f": 0.5,
        "i": 3,
        "b": True,
        "arr": [0, 1, 2],
        "p": str(tmp_path),
        "nested": [[1, 2], {"x": [[0.0, 0.0], [0.0, 0.0]]}],
    }
    write_json_atomic(path, {"v": 2})
    assert json.loads(path.read_text()) == {"v": 2}
    with pytest.raises(TypeError):
        write_json_atomic(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"v": 2}  # old content survives a failed write
    assert sorted(p.name for p in path.parent.iterdir()) == ["result.json"]


def test_print_summary_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    line = print_summary({"success": np.float64(0.123456789), "msg": "a\nb", "n": 3})
    out = capsys.readouterr().out
    assert out == line + "\n" and out.count("\n") == 1
    assert json.loads(out) == {"success": 0.123457, "msg": "a\nb", "n": 3}


def test_seeding_determinism() -> None:
    def draw(seed: int) -> tuple:
        rng = seed_everything(seed)
        out = (random.random(), np.random.rand(), rng.random())
        torch = sys.modules.get("torch")
        return out + ((torch.rand(1).item(),) if torch is not None else ())

    assert draw(7) == draw(7)
    assert draw(7) != draw(8)
    assert episode_seed(3, 4) == episode_seed(3, 4) == 3 * 100_003 + 4
    assert len({episode_seed(1, i) for i in range(1000)}) == 1000
    assert 0 <= episode_seed(2**40, 5) < 2**32
    with pytest.raises(ValueError):
        episode_seed(0, -1)


def test_progress_env_disable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EV_NO_PROGRESS", "1")
    bar = progress(range(5), desc="x")
    assert bar.disable and list(bar) == list(range(5))
    monkeypatch.delenv("EV_NO_PROGRESS")
    with progress(total=3, desc="manual", unit="ep", file=open(os.devnull, "w")) as bar2:  # noqa: SIM115
        assert not bar2.disable and bar2.total == 3
        bar2.update(3)


def test_pick_device() -> None:
    assert pick_device("cpu") == "cpu"
    assert pick_device("auto") in ("cpu", "cuda")
    with pytest.raises(ValueError, match="unknown device"):
        pick_device("tpu")


def test_capabilities_keys() -> None:
    info = capabilities()
    keys = (
        "python platform cpu_count torch cuda_available cuda_device cuda_bf16 gsplat gsplat_usable rclpy "
        "rclpy_importable mujoco mujoco_gl mujoco_render mujoco_render_ok"
    )
    for key in keys.split():
        assert key in info, key
    if not info["cuda_available"]:
        assert info["gsplat"] == "unavailable: no CUDA" and info["gsplat_usable"] is False
    json.dumps(info)


def test_info_main_prints_table_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert info_main([]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("python")
    assert json.loads(lines[-1])["python"]
    assert info_main(["--bogus"]) == 2


@pytest.mark.integration
def test_core_imports_without_torch() -> None:
    """enerverse.core (and its non-torch modules) import with torch blocked."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import enerverse.core, enerverse.core.config, enerverse.core.outputs, enerverse.core.seeding\n"
        "import enerverse.core.progress, enerverse.core.device, enerverse.core.checkpoint\n"
        "import enerverse.core.info, enerverse.core.fsutil, enerverse.core.store\n"
        "import tempfile, pathlib\n"
        "from enerverse.core.outputs import write_json_atomic\n"
        "p = write_json_atomic(pathlib.Path(tempfile.mkdtemp()) / 'x.json', {'a': 1})\n"
        "assert p.read_text() == '{\\n  \"a\": 1\\n}\\n'\n"
        "from enerverse.core.device import capabilities, pick_device\n"
        "from enerverse.core.seeding import seed_everything\n"
        "seed_everything(1); assert pick_device('auto') == 'cpu'\n"
        "assert capabilities(check_render=False)['torch'] is None\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr


# --- fsutil ---------------------------------------------------------------------------------------------
def test_write_bytes_atomic_and_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a" / "b.bin"
    assert fsutil.write_bytes_atomic(path, b"one") == path and path.read_bytes() == b"one"
    fsutil.write_bytes_atomic(path, b"two", durable=False)
    assert path.read_bytes() == b"two"

    def fail_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail_replace)
    with pytest.raises(OSError, match="disk full"):
        fsutil.write_bytes_atomic(path, b"three")
    monkeypatch.undo()
    assert path.read_bytes() == b"two" and os.listdir(path.parent) == ["b.bin"]  # temp file removed
    with pytest.raises(ValueError):
        fsutil.write_json_atomic(path, {"x": float("nan")}, allow_nan=False)
    assert path.read_bytes() == b"two"
    fsutil.write_json_atomic(path, {"x": [1, 2]}, indent=None)
    assert path.read_text() == '{"x": [1, 2]}\n'
    (tmp_path / "tree" / "sub").mkdir(parents=True)
    (tmp_path / "tree" / "sub" / "f").write_text("x")
    fsutil.fsync_tree(tmp_path / "tree")
    fsutil.fsync_path(tmp_path / "tree")
    with pytest.raises(FileNotFoundError):
        fsutil.fsync_path(tmp_path / "missing")


def _make_dir(path: Path, content: str) -> Path:
    path.mkdir()
    (path / "data.txt").write_text(content)
    return path


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2-exchange", "fallback"])
def test_replace_dir_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exchange: bool) -> None:
    if not exchange:
        monkeypatch.setattr(fsutil, "_renameat2", lambda *a: False)
    dst = tmp_path / "dst"
    assert fsutil.replace_dir_atomic(_make_dir(tmp_path / "new1", "1"), dst) is True  # dst absent: rename
    assert (dst / "data.txt").read_text() == "1"
    assert fsutil.replace_dir_atomic(_make_dir(tmp_path / "new2", "2"), dst, durable=False) is exchange
    assert (dst / "data.txt").read_text() == "2" and sorted(os.listdir(tmp_path)) == ["dst"]

    def refusing(fn: Any) -> Any:
        def wrapped(src: Any, *args: Any) -> Any:
            if Path(src).name == "new3":
                raise OSError("cannot rename")
            return fn(src, *args)

        return wrapped

    monkeypatch.setattr(os, "rename", refusing(os.rename))
    monkeypatch.setattr(fsutil, "_renameat2", refusing(fsutil._renameat2))
    with pytest.raises(OSError, match="cannot rename"):
        fsutil.replace_dir_atomic(_make_dir(tmp_path / "new3", "3"), dst)
    assert (dst / "data.txt").read_text() == "2"  # the previous directory is in place
    assert sorted(os.listdir(tmp_path)) == ["dst", "new3"]


def test_rename_exchange_swaps_in_one_step(tmp_path: Path) -> None:
    a, b = _make_dir(tmp_path / "a", "A"), _make_dir(tmp_path / "b", "B")
    if not fsutil._renameat2(a, b, fsutil.RENAME_EXCHANGE):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not supported here")
    assert (a / "data.txt").read_text() == "B" and (b / "data.txt").read_text() == "A"


@pytest.mark.parametrize("native", [True, False], ids=["renameat2-noreplace", "fallback"])
def test_rename_noreplace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    if not native:
        monkeypatch.setattr(fsutil, "_renameat2", lambda *a: False)
    src = _make_dir(tmp_path / "src", "s")
    (tmp_path / "empty").mkdir()
    _make_dir(tmp_path / "full", "f")
    for target in ("empty", "full"):
        with pytest.raises(FileExistsError):
            fsutil.rename_noreplace(src, tmp_path / target)
    assert (tmp_path / "full" / "data.txt").read_text() == "f" and (tmp_path / "empty").is_dir()
    fsutil.rename_noreplace(src, tmp_path / "dst")
    assert (tmp_path / "dst" / "data.txt").read_text() == "s" and not src.exists()


def test_videos_are_h264_that_browsers_play_and_round_trip(tmp_path: Path) -> None:
    import imageio_ffmpeg

    from enerverse.core.media import write_png, write_video

    rng = np.random.default_rng(0)
    frames = np.repeat(rng.integers(0, 255, (1, 33, 47, 3), dtype=np.uint8), 6, axis=0)  # odd sizes
    frames[3:] = 200
    path = write_video(tmp_path / "v.mp4", frames, fps=10)
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    back = [np.frombuffer(f, np.uint8).reshape(34, 48, 3) for f in reader]
    assert meta["codec"].startswith("h264") and meta["pix_fmt"].startswith("yuv420p") and meta["fps"] == 10
    assert len(back) == 6 and abs(float(back[-1][:33, :47].mean()) - 200) < 3  # padded to even sizes
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind
    write_video(tmp_path / "v.gif", frames, fps=10)
    assert write_png(tmp_path / "f.png", frames[0]).stat().st_size > 0
    with pytest.raises(ValueError, match=r"uint8 frames \[T>0, H, W, 3\]"):
        write_video(tmp_path / "bad.mp4", frames.astype(np.float32), fps=10)
    assert not (tmp_path / "bad.mp4").exists()


@pytest.mark.integration
@pytest.mark.skipif(
    not any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")),
    reason="needs a headless Chromium (apt-get install chromium)",
)
def test_a_browser_plays_our_videos_and_refuses_mp4v(tmp_path: Path) -> None:
    import imageio.v2 as imageio

    from enerverse.core.media import write_video

    frames = np.repeat(np.arange(0, 250, 25, dtype=np.uint8)[:, None, None, None], 3, axis=3)
    frames = np.ascontiguousarray(np.broadcast_to(frames, (10, 48, 64, 3)))
    ours = write_video(tmp_path / "ours.mp4", frames, fps=10)
    w = imageio.get_writer(tmp_path / "mp4v.mp4", fps=10, codec="mpeg4")  # what OpenCV used to write
    for f in frames:
        w.append_data(f)
    w.close()
    script = REPO / "scripts" / "check_video_browser.py"
    run = subprocess.run(
        [sys.executable, str(script), str(ours), str(tmp_path / "mp4v.mp4")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    good, bad = (json.loads(line) for line in run.stdout.splitlines())
    assert run.returncode == 1
    assert good["plays"] and (good["width"], good["height"]) == (64, 48) and good["seconds"] == 1.0
    assert not bad["plays"] and bad["error"] == "format not supported"


def test_frame_conversions_live_in_one_place() -> None:
    import torch

    from enerverse.core.frames import resize_frames, to_model, to_uint8

    rgb = np.random.default_rng(0).integers(0, 255, (2, 3, 8, 8, 3), dtype=np.uint8)  # [T, V, H, W, 3]
    assert resize_frames(rgb, 8) is rgb
    small = resize_frames(rgb, 4)
    assert small.shape == (2, 3, 4, 4, 3) and small.dtype == np.uint8
    assert abs(int(small[0, 0, 0, 0, 0]) - rgb[0, 0, :2, :2, 0].mean()) <= 1  # area average
    labels = np.zeros((3, 8, 8), np.uint8)
    labels[:, :4] = 2
    assert set(np.unique(resize_frames(labels, 4, nearest=True))) == {0, 2}  # labels are never blended
    x = to_model(rgb)
    assert x.shape == (2, 3, 3, 8, 8) and x.dtype == torch.float32 and -1 <= x.min() and x.max() <= 1
    np.testing.assert_array_equal(to_uint8(x), rgb)
    with pytest.raises(TypeError, match="uint8"):
        to_model(rgb.astype(np.float32))
