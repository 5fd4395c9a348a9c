"""Episode store <-> LeRobotDataset v3.0 folder (written against the format's documented layout).

A v3.0 folder packs many episodes per file:

    meta/info.json                       format version, fps, features, path templates
    meta/stats.json                      per-feature normalisation statistics
    meta/tasks.parquet                   task strings (the pandas index) -> task_index
    meta/episodes/chunk-000/file-000.parquet   one row per episode: length, row range, video spans
    data/chunk-000/file-000.parquet      one row per frame: state, action, cameras, indices
    videos/<key>/chunk-000/file-000.mp4  per camera, every episode's frames back to back (H.264)

Cameras travel as extra per-frame features (``observation.cameras.K`` [V*9] and
``observation.cameras.T_cam_world`` [V*16], view-major, row-major), and the store's episode
attributes as a JSON column of the episodes table, so store -> LeRobot -> store keeps actions,
states, instructions, cameras and attributes exactly, and images within the video codec's error.
Depth and segmentation masks are not exported (the converter says so).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from enerverse.core.errors import EnerVerseError
from enerverse.core.store.format import check_finite, validate_episode_attrs, validate_K

CODEBASE_VERSION = "v3.0"
DATA_FILE = "data/chunk-000/file-000.parquet"
EPISODES_FILE = "meta/episodes/chunk-000/file-000.parquet"
VIDEO_TEMPLATE = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
ATTRS_COLUMN = "enerverse/attrs"
IMAGE_PREFIX = "observation.images."
VECTOR_FEATURES = ("observation.state", "action", "observation.cameras.K", "observation.cameras.T_cam_world")
STORE_KEYS = {
    "state": "observation.state",
    "action": "action",
    "T_cam_world": "observation.cameras.T_cam_world",
    "privileged": "observation.privileged",
}
"""The LeRobot feature of each per-frame store array."""


class LeRobotFormatError(EnerVerseError):
    """A folder is not a LeRobotDataset this code reads (another version, or missing parts)."""


def _pa():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as e:  # the `lerobot` extra
        raise EnerVerseError("LeRobot conversion needs pyarrow: pip install -e '.[lerobot]'") from e
    return pa, pq


def _vector_column(x: np.ndarray) -> Any:
    """[N, D] float32 -> a parquet column of fixed-size float lists."""
    pa, _ = _pa()
    x = np.ascontiguousarray(x, np.float32).reshape(len(x), -1)
    return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])


def _feature(dtype: str, shape: list[int], names: Any = None) -> dict:
    return {"dtype": dtype, "shape": shape, "names": names}


def _video_feature(H: int, W: int, fps: float) -> dict:
    info = {"video.height": H, "video.width": W, "video.codec": "h264", "video.pix_fmt": "yuv420p",
            "video.is_depth_map": False, "video.fps": fps, "video.channels": 3,
            "has_audio": False}  # fmt: skip
    return {"dtype": "video", "shape": [H, W, 3], "names": ["height", "width", "channels"], "info": info}


def _stats(x: np.ndarray) -> dict:
    """LeRobot stats of [N, D] values."""
    from enerverse.core.store.stats import summarize

    return {k: ([v] if k == "count" else v.tolist()) for k, v in summarize(x).items()}


def _image_stats(frames: np.ndarray) -> dict:
    """Per-channel stats [3, 1, 1] of uint8 frames [N, H, W, 3] in [0, 1], as LeRobot keeps them."""
    px = frames.reshape(-1, 3).astype(np.float64) / 255.0
    s = _stats(px)
    return {
        k: (np.asarray(v)[:, None, None].tolist() if k != "count" else [len(frames)]) for k, v in s.items()
    }


def _tasks_table(tasks: list[str]) -> Any:
    """meta/tasks.parquet: task_index with the task strings as the (pandas) index."""
    pa, _ = _pa()
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "task": pa.array(tasks)})
    pandas_meta = {"index_columns": ["task"], "column_indexes": [], "creator": {"library": "enerverse"},
                   "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
                                "numpy_type": "int64", "metadata": None},
                               {"name": "task", "field_name": "task", "pandas_type": "unicode",
                                "numpy_type": "object", "metadata": None}]}  # fmt: skip
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


def _check_source(store: Any, indices: list[int], views: list[str], size: tuple[int, int]) -> None:
    """EnerVerseError unless every episode has ``views`` at ``size`` and finite per-frame arrays."""
    for i in indices:
        ep = store.episode(i)
        if list(ep.attrs["view_names"]) != views or tuple(ep.rgb.shape[2:4]) != size:
            raise EnerVerseError(f"episode {i} has views {ep.attrs['view_names']} at {ep.rgb.shape[2:4]}; "
                                 f"a LeRobot dataset needs {views} at {size} in every episode")  # fmt: skip
        keys = [k for k in ("action", "state", "T_cam_world", "K", "privileged") if ep.has(k)]
        check_finite(f"{store.path} episode {i}", {k: ep.load(k) for k in keys})


def store_to_lerobot(store: Any, out: Path, progress: Callable | None = None) -> dict:
    """Write episode store ``store`` (an :class:`EpisodeStore`) as a LeRobotDataset v3.0 folder at ``out``
    (absent or empty). Returns a summary; ``progress`` wraps the episode iterator (a tqdm-like)."""
    from enerverse.core.media import VideoSink

    _, pq = _pa()
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise EnerVerseError(f"{out} exists and is not empty: pass a new folder for the LeRobot dataset")
    indices = store.indices()
    if not indices:
        raise EnerVerseError(f"{store.path} has no episodes to convert")
    first = store.episode(indices[0])
    views, fps = list(first.attrs["view_names"]), float(first.attrs["fps"])
    H, W = first.rgb.shape[2:4]
    _check_source(store, indices, views, (H, W))  # before any file is written: nothing half-written
    video = {v: VIDEO_TEMPLATE.format(video_key=IMAGE_PREFIX + v, chunk_index=0, file_index=0) for v in views}
    sinks = {v: VideoSink(out / video[v], fps, crf=16) for v in views}
    cols: dict[str, list] = {
        k: [] for k in ("state", "action", "K", "T", "privileged", "ep", "frame", "task")
    }
    episodes, tasks, img_sample, dropped = [], [], [], set()
    start = 0
    for i in progress(indices) if progress else indices:
        ep = store.episode(i)
        rgb = ep.load("rgb")  # [T, V, H, W, 3]
        T = len(rgb)
        action, state = ep.load("action"), ep.load("state")
        dropped |= {k for k in ("depth", "seg") if ep.has(k)}
        for v, name in enumerate(views):
            sinks[name].append(rgb[:, v])
        img_sample.append(rgb[:: max(1, T // 4)])
        instruction = ep.attrs["instruction"]
        if instruction not in tasks:
            tasks.append(instruction)
        cols["state"].append(state)
        cols["action"].append(action)
        cols["K"].append(np.broadcast_to(ep.load("K").reshape(1, -1), (T, len(views) * 9)))
        cols["T"].append(ep.load("T_cam_world").reshape(T, -1))
        if ep.has("privileged"):
            cols["privileged"].append(ep.load("privileged"))
        cols["ep"].append(np.full(T, len(episodes)))
        cols["frame"].append(np.arange(T))
        cols["task"].append(np.full(T, tasks.index(instruction)))
        row = {"episode_index": len(episodes), "tasks": [instruction], "length": T,
               "data/chunk_index": 0, "data/file_index": 0,
               "dataset_from_index": start, "dataset_to_index": start + T,
               "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0,
               ATTRS_COLUMN: json.dumps({**ep.attrs, "store_index": i})}  # fmt: skip
        for v in views:
            key = f"videos/{IMAGE_PREFIX}{v}"
            row |= {f"{key}/chunk_index": 0, f"{key}/file_index": 0,
                    f"{key}/from_timestamp": start / fps,
                    f"{key}/to_timestamp": (start + T) / fps}  # fmt: skip
        episodes.append(row)
        start += T
    for sink in sinks.values():
        sink.close()
    if cols["privileged"] and len(cols["privileged"]) != len(episodes):
        cols["privileged"] = []  # only some episodes have it: not a frame feature
    data = {k: np.concatenate(v) for k, v in cols.items() if v}
    _write_data(out, data, fps)
    extra = {k: v for k, v in store.root_attrs.items() if k not in ("format", "version")}
    _write_meta(out, data, episodes, tasks, views, (H, W), fps, np.concatenate(img_sample), extra)
    return {"episodes": len(episodes), "frames": start, "tasks": len(tasks), "views": views,
            "not_exported": sorted(dropped), "out": str(out)}  # fmt: skip


def _write_data(out: Path, data: dict, fps: float) -> None:
    pa, pq = _pa()
    n = len(data["action"])
    columns = {"observation.state": _vector_column(data["state"]), "action": _vector_column(data["action"]),
               "observation.cameras.K": _vector_column(data["K"]),
               "observation.cameras.T_cam_world": _vector_column(data["T"]),
               "timestamp": pa.array((data["frame"] / fps).astype(np.float32)),
               "frame_index": pa.array(data["frame"].astype(np.int64)),
               "episode_index": pa.array(data["ep"].astype(np.int64)),
               "index": pa.array(np.arange(n, dtype=np.int64)),
               "task_index": pa.array(data["task"].astype(np.int64))}  # fmt: skip
    if "privileged" in data:
        columns["observation.privileged"] = _vector_column(data["privileged"])
    (out / DATA_FILE).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), out / DATA_FILE)


def _write_meta(out: Path, data: dict, episodes: list, tasks: list, views: list, hw: tuple, fps: float,
                images: np.ndarray, store_attrs: dict) -> None:  # fmt: skip
    from enerverse.core.fsutil import write_json_atomic

    pa, pq = _pa()
    V = len(views)
    features = {f"{IMAGE_PREFIX}{v}": _video_feature(*hw, fps) for v in views}
    features |= {
        "observation.state": _feature("float32", [data["state"].shape[1]]),
        "action": _feature("float32", [data["action"].shape[1]]),
        "observation.cameras.K": _feature("float32", [V * 9], {"views": views, "layout": "[V, 3, 3]"}),
        "observation.cameras.T_cam_world": _feature(
            "float32", [V * 16], {"views": views, "layout": "[V, 4, 4] world->camera, OpenCV axes"}
        ),
        **{
            k: _feature(t, [1])
            for k, t in [
                ("timestamp", "float32"),
                ("frame_index", "int64"),
                ("episode_index", "int64"),
                ("index", "int64"),
                ("task_index", "int64"),
            ]
        },  # fmt: skip
    }
    if "privileged" in data:
        features["observation.privileged"] = _feature("float32", [data["privileged"].shape[1]])
    n = len(data["action"])
    info = {"codebase_version": CODEBASE_VERSION, "robot_type": "enerverse_arm",
            "total_episodes": len(episodes),
            "total_frames": n, "total_tasks": len(tasks), "chunks_size": 1000, "data_files_size_in_mb": 100,
            "video_files_size_in_mb": 200, "fps": fps, "splits": {"train": f"0:{len(episodes)}"},
            "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
            "video_path": VIDEO_TEMPLATE, "features": features,
            "enerverse": {"store_attrs": store_attrs}}  # fmt: skip
    stats = {f"{IMAGE_PREFIX}{v}": _image_stats(images[:, i]) for i, v in enumerate(views)}
    stats |= {"observation.state": _stats(data["state"]), "action": _stats(data["action"])}
    (out / EPISODES_FILE).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(episodes), out / EPISODES_FILE)
    pq.write_table(_tasks_table(tasks), out / "meta/tasks.parquet")
    write_json_atomic(out / "meta/stats.json", stats, indent=1)
    write_json_atomic(out / "meta/info.json", info, indent=1)  # last: a folder with info.json is complete


def read_info(folder: Path) -> dict:
    """meta/info.json of a LeRobotDataset v3.0 folder; LeRobotFormatError naming what was found."""
    path = Path(folder) / "meta" / "info.json"
    if not path.is_file():
        raise LeRobotFormatError(
            f"{folder}: expected a LeRobotDataset {CODEBASE_VERSION} folder, found no meta/info.json"
        )
    try:
        info = json.loads(path.read_text())
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise LeRobotFormatError(f"{path}: expected JSON, found unreadable text ({e})") from None
    version = info.get("codebase_version") if isinstance(info, dict) else None
    if version != CODEBASE_VERSION:
        raise LeRobotFormatError(
            f"{folder}: expected a LeRobotDataset {CODEBASE_VERSION} folder, "
            f"found codebase_version {version!r} "
            "(convert it with LeRobot's own converter first)"
        )
    missing = [k for k in ("features", "fps", "video_path") if k not in info]
    if missing:
        raise LeRobotFormatError(f"{path}: expected the keys features, fps and video_path; {missing} missing")
    return info


def _matrix(column: Any) -> np.ndarray:
    """A parquet column of equal-length float lists -> float32 [N, D], without per-row Python objects."""
    flat = column.combine_chunks()
    values = np.asarray(flat.flatten(), np.float32)
    return values.reshape(len(flat), -1) if len(flat) else values.reshape(0, 0)


def _read_tables(folder: Path, pattern: str) -> Any:
    pa, pq = _pa()
    files = sorted(folder.glob(pattern))
    if not files:
        raise LeRobotFormatError(f"{folder}: expected {pattern} files, found none")
    return pa.concat_tables([pq.read_table(f) for f in files])


def _attrs_of(row: dict, views: list[str], fps: float) -> dict:
    """Store episode attributes of an episodes-table row: the exported ones, or defaults for data
    recorded elsewhere (instruction = its task string, provenance ``real``)."""
    if row.get(ATTRS_COLUMN):
        attrs = json.loads(row[ATTRS_COLUMN])
        for key in ("length", "store_index"):
            attrs.pop(key, None)
        return attrs
    task = (row.get("tasks") or [""])[0]
    return {"task": task, "instruction": task, "seed": int(row["episode_index"]), "success": False,
            "view_names": views, "view_kinds": ["real"] * len(views), "fps": fps, "provenance": "real",
            "generator_version": None}  # fmt: skip


def lerobot_to_store(folder: Path, dst: Path, progress: Callable | None = None) -> dict:
    """Read LeRobotDataset v3.0 folder ``folder`` into a new episode store at ``dst`` (absent or
    empty). Needs the camera features ``observation.cameras.K`` / ``T_cam_world`` (the generator and
    the policies need camera geometry); returns a summary."""
    from enerverse.core.media import read_video
    from enerverse.core.store.reader import EpisodeStore

    folder = Path(folder)
    info = read_info(folder)
    feats, fps = info["features"], float(info["fps"])
    views = [
        k[len(IMAGE_PREFIX) :]
        for k, f in feats.items()
        if k.startswith(IMAGE_PREFIX) and f["dtype"] == "video"
    ]
    missing = [k for k in VECTOR_FEATURES if k not in feats]
    if not views or missing:
        raise LeRobotFormatError(f"{folder}: an episode store needs video cameras and {missing}; "
                                 f"found {sorted(feats)}")  # fmt: skip
    data = _read_tables(folder, "data/*/*.parquet").sort_by("index")
    priv = "observation.privileged" in data.column_names
    names = [*VECTOR_FEATURES, *(["observation.privileged"] if priv else [])]
    cols = {k: _matrix(data.column(k)) for k in names}
    episodes = sorted(
        _read_tables(folder, "meta/episodes/*/*.parquet").to_pylist(), key=lambda r: r["episode_index"]
    )
    H, W = feats[IMAGE_PREFIX + views[0]]["shape"][:2]
    _check_episodes(folder, episodes, cols, views, fps)  # before the store exists: nothing half-written
    if Path(dst).exists() and any(Path(dst).iterdir()):
        raise EnerVerseError(f"{dst} exists and is not empty: pass a new folder for the episode store")
    store = EpisodeStore.create(dst, attrs=info.get("enerverse", {}).get("store_attrs", {}))
    readers = {v: _VideoCursor(folder, info, IMAGE_PREFIX + v, read_video) for v in views}
    V, frames = len(views), 0
    for row in progress(episodes) if progress else episodes:
        a, b = int(row["dataset_from_index"]), int(row["dataset_to_index"])
        T = b - a
        rgb = np.stack([readers[v].take(row, T, fps)[:, :H, :W] for v in views], axis=1)  # [T, V, H, W, 3]
        attrs = _attrs_of(row, views, fps)
        K = cols["observation.cameras.K"][a].reshape(V, 3, 3)
        Tcw = cols["observation.cameras.T_cam_world"][a:b].reshape(T, V, 4, 4)
        with store.write_episode(store.next_index(), K=K, **attrs) as w:
            for t in range(T):
                w.add_frame(rgb=rgb[t], state=cols["observation.state"][a + t], action=cols["action"][a + t],
                            T_cam_world=Tcw[t],
                            privileged=cols["observation.privileged"][a + t] if priv else None)  # fmt: skip
        frames += T
    return {"episodes": len(episodes), "frames": frames, "views": views, "store": str(store.path)}


def _check_episodes(folder: Path, episodes: list[dict], cols: dict, views: list[str], fps: float) -> None:
    """Refuse what the store would: an episode with NaN or inf values, bad intrinsics or attributes, or
    rows outside the data table (LeRobotFormatError naming the episode and what was expected)."""
    n, V = len(cols["action"]), len(views)
    for row in episodes:
        a, b = int(row["dataset_from_index"]), int(row["dataset_to_index"])
        where = f"{folder}: episode {row['episode_index']}"
        if not 0 <= a < b <= n:
            raise LeRobotFormatError(f"{where} spans rows {a}..{b}; expected a non-empty range in 0..{n}")
        check_finite(where, {k: cols[c][a:b] for k, c in STORE_KEYS.items() if c in cols}, LeRobotFormatError)
        try:
            validate_K(cols["observation.cameras.K"][a].reshape(V, 3, 3), V)
            validate_episode_attrs(_attrs_of(row, views, fps))
        except ValueError as e:  # the format's own checks of this content (and unreadable JSON attributes)
            raise LeRobotFormatError(f"{where}: {e}") from None


class _VideoCursor:
    """Reads one camera's video files front to back, one episode span at a time."""

    def __init__(self, folder: Path, info: dict, key: str, read_video: Callable) -> None:
        self.folder, self.template, self.key, self.read = folder, info["video_path"], key, read_video
        self.file: tuple | None = None
        self.pos = 0
        self.frames = iter(())

    def take(self, row: dict, T: int, fps: float) -> np.ndarray:
        where = (int(row[f"videos/{self.key}/chunk_index"]), int(row[f"videos/{self.key}/file_index"]))
        start = round(float(row[f"videos/{self.key}/from_timestamp"]) * fps)
        if where != self.file or start < self.pos:  # another file, or going back: reopen
            path = self.folder / self.template.format(
                video_key=self.key, chunk_index=where[0], file_index=where[1]
            )
            if not path.is_file():
                raise LeRobotFormatError(
                    f"{self.folder}: episode {row['episode_index']} needs {path}, which is missing"
                )
            self.file, self.pos, self.frames = where, 0, self.read(path)
        for _ in range(start - self.pos):
            next(self.frames)
        out = [next(self.frames, None) for _ in range(T)]
        if any(f is None for f in out):
            raise LeRobotFormatError(
                f"{self.folder}: the {self.key} video ends before episode {row['episode_index']} does"
            )
        self.pos = start + T
        return np.stack(out)
