"""ev-convert: episode store -> LeRobotDataset v3.0 -> episode store keeps actions, states,
instructions, cameras and attributes exactly, and images within the video codec's error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pq = pytest.importorskip("pyarrow.parquet")

from enerverse.convert import main as convert_main  # noqa: E402
from enerverse.core.store import EpisodeStore  # noqa: E402

pytestmark = pytest.mark.integration


def _convert(capsys, *args: str) -> dict:
    convert_main(list(args))
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_store_to_lerobot_and_back_round_trips(policy_workdir: Path, tmp_path: Path, capsys) -> None:
    src = EpisodeStore.open(policy_workdir / "store")
    out = tmp_path / "lerobot"
    s = _convert(capsys, f"src={src.path}", f"dst={out}")
    assert s["direction"] == "store->lerobot" and s["episodes"] == len(src.indices())
    info = json.loads((out / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["total_episodes"] == len(src.indices())
    views = src.episode(src.indices()[0]).attrs["view_names"]
    for v in views:
        assert info["features"][f"observation.images.{v}"]["info"]["video.codec"] == "h264"
        assert (out / f"videos/observation.images.{v}/chunk-000/file-000.mp4").is_file()
    data = pq.read_table(out / "data/chunk-000/file-000.parquet")
    assert {"observation.state", "action", "observation.cameras.K", "observation.cameras.T_cam_world",
            "timestamp", "frame_index", "episode_index", "index",
            "task_index"} <= set(data.column_names)  # fmt: skip
    assert data.num_rows == info["total_frames"]
    tasks = pq.read_table(out / "meta/tasks.parquet")
    assert b"pandas" in tasks.schema.metadata and "task" in tasks.column_names  # the tasks are the index
    eps = pq.read_table(out / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [e["length"] for e in eps] == [src.episode(i).attrs["length"] for i in src.indices()]
    stats = json.loads((out / "meta/stats.json").read_text())
    assert len(stats["action"]["mean"]) == 7 and np.asarray(
        stats[f"observation.images.{views[0]}"]["mean"]
    ).shape == (3, 1, 1)

    back = tmp_path / "back"
    s2 = _convert(capsys, f"src={out}", f"dst={back}")
    assert s2["direction"] == "lerobot->store" and s2["frames"] == s["frames"]
    dst = EpisodeStore.open(back)
    assert dst.root_attrs == src.root_attrs
    for i, j in zip(src.indices(), dst.indices(), strict=True):
        a, b = src.episode(i), dst.episode(j)
        for key in ("action", "state", "T_cam_world", "K", "privileged"):
            np.testing.assert_array_equal(a.load(key), b.load(key), err_msg=key)
        assert dict(a.attrs) == dict(b.attrs)  # instruction, success, seed, views, provenance, length...
        err = np.abs(a.load("rgb").astype(np.float64) - b.load("rgb").astype(np.float64))
        psnr = 10 * np.log10(255.0**2 / max(float((err**2).mean()), 1e-9))
        assert psnr > 32, f"episode {i}: image PSNR {psnr:.1f} dB after the video codec"


def test_conversion_errors_name_what_was_expected(policy_workdir: Path, tmp_path: Path, capsys) -> None:
    old = tmp_path / "old" / "meta"
    old.mkdir(parents=True)
    (old / "info.json").write_text(json.dumps({"codebase_version": "v2.1", "features": {}}))
    with pytest.raises(SystemExit) as e:
        convert_main([f"src={old.parent}", f"dst={tmp_path / 'x'}"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "expected a LeRobotDataset v3.0 folder, found codebase_version 'v2.1'" in err

    import shutil

    import zarr

    bad = tmp_path / "nan_store"
    shutil.copytree(policy_workdir / "store", bad)
    store = EpisodeStore.open(bad)

    def refused(episode: int, key: str) -> str:  # convert the bad store: exit 2, one line naming it
        with pytest.raises(SystemExit) as e:
            convert_main([f"src={bad}", f"dst={tmp_path / 'y'}"])
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert e.value.code == 2 and f"episode {episode}: {key} has NaN or inf values in 1 of" in err
        return err

    last, first = store.indices()[-1], store.indices()[0]
    arr = zarr.open_array(str(bad / "episodes" / f"episode_{last:06d}" / "action"), mode="r+")
    arr[0, 0] = np.nan
    assert refused(last, "action").endswith("expected finite action values")
    # the privileged object state is checked too, before the first episode's videos are written
    arr[0, 0] = 0.0
    priv = zarr.open_array(str(bad / "episodes" / f"episode_{first:06d}" / "privileged"), mode="r+")
    priv[1, 0] = np.inf
    refused(first, "privileged")
    assert not (tmp_path / "y").exists() or not any((tmp_path / "y").iterdir())  # nothing half-written
    with pytest.raises(SystemExit) as e:
        convert_main([f"src={policy_workdir / 'store'}", f"dst={tmp_path / 'old'}"])  # not empty
    assert e.value.code == 2 and "not empty" in capsys.readouterr().err


def test_a_lerobot_folder_with_nan_actions_is_refused_before_a_store_is_written(
    policy_workdir: Path, tmp_path: Path, capsys
) -> None:
    pa = pytest.importorskip("pyarrow")
    out = tmp_path / "lerobot"
    _convert(capsys, f"src={policy_workdir / 'store'}", f"dst={out}")
    data = pq.read_table(out / "data/chunk-000/file-000.parquet")
    eps = pq.read_table(out / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    action = np.array(data.column("action").combine_chunks().flatten(), np.float32).reshape(data.num_rows, -1)
    action[eps[1]["dataset_from_index"] + 2, 3] = np.nan  # episode 1, its frame 2
    column = pa.FixedSizeListArray.from_arrays(pa.array(action.reshape(-1)), action.shape[1])
    data = data.set_column(data.column_names.index("action"), "action", column)
    pq.write_table(data, out / "data/chunk-000/file-000.parquet")
    with pytest.raises(SystemExit) as e:
        convert_main([f"src={out}", f"dst={tmp_path / 'back'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and not any("Traceback" in line for line in err), err
    assert (
        f"{out}: episode 1: action has NaN or inf values in 1 of {eps[1]['length']} frames (first: frame 2)"
        in err[-1]
    )
    assert err[-1].startswith("error: ") and err[-1].endswith("expected finite action values")
    assert not (tmp_path / "back").exists()  # refused before the store was created
