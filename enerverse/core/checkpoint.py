"""Checkpoint folders: ``config.json`` + ``model.safetensors`` + ``train_state.pt``, written atomically.

``train_state.pt`` holds only tensors, numbers, strings, None and lists/tuples/dicts of them
(optimizer and scheduler state dicts, the step, RNG states) and is read with
``torch.load(weights_only=True)``: no pickled objects are ever loaded. Training runs keep their
checkpoints as ``<run_dir>/step_{n:08d}/``; :func:`latest_checkpoint` finds the newest complete one.
torch is imported inside the functions so that ``enerverse.core`` stays importable without it.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import EnerVerseError
from .fsutil import fsync_tree, replace_dir_atomic, write_bytes_atomic

CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
TRAIN_STATE_FILE = "train_state.pt"
REQUIRED_FILES = (CONFIG_FILE, MODEL_FILE)
_STEP_RE = re.compile(r"^step_(\d{8,})$")


class CheckpointError(EnerVerseError, RuntimeError):
    """A folder is missing, incomplete, not a checkpoint, or holds data that may not be loaded."""


@dataclass
class Checkpoint:
    """A loaded checkpoint: resolved config, model weights and (optional) training state."""

    path: Path
    config: dict
    state_dict: dict[str, Any]
    train_state: dict | None = field(default=None)


def checkpoint_dir(run_dir: str | Path, step: int) -> Path:
    """The folder name a run uses for the checkpoint at ``step``: ``run_dir/step_{step:08d}``."""
    return Path(run_dir) / f"step_{int(step):08d}"


def _check_state_dict(state_dict: dict) -> dict:
    import torch

    out: dict[str, Any] = {}
    seen: set[int] = set()
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise TypeError(f"state_dict keys must be strings, got {key!r}")
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"state_dict[{key!r}] is a {type(value).__name__}, not a torch.Tensor")
        t = value.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen and t.numel() > 0:
            t = t.clone()  # safetensors refuses tensors that share memory (tied weights)
        seen.add(ptr)
        out[key] = t
    return out


def _check_plain(obj: Any, where: str = "train_state") -> None:
    """Raise TypeError unless ``obj`` is made of tensors, numbers, strings, None, lists and dicts."""
    import torch

    if obj is None or isinstance(obj, (bool, int, float, str, torch.Tensor)):
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise TypeError(
                    f"{where} has a key of type {type(k).__name__}; only str/int keys are allowed"
                )
            _check_plain(v, f"{where}[{k!r}]")
        return
    raise TypeError(
        f"{where} is a {type(obj).__name__}; train_state may only hold tensors, numbers, strings, "
        "None, lists and dicts (store .state_dict() of optimizers/schedulers, not the objects)"
    )


def save_checkpoint(
    folder: str | Path, config: Any, state_dict: dict, train_state: dict | None = None
) -> Path:
    """Write a checkpoint folder atomically and return its path.

    Everything is written into a hidden temp folder ``.<name>.tmp-*`` next to ``folder`` and fsynced.
    Only then does it take ``folder``'s place, with :func:`enerverse.core.fsutil.replace_dir_atomic`:

    * ``folder`` absent: one rename;
    * ``folder`` present: one ``renameat2(RENAME_EXCHANGE)`` swap (Linux >= 3.15 on file systems that
      support it, e.g. ext4, xfs, btrfs, tmpfs), after which the old checkpoint is deleted. At every
      moment, also across a SIGKILL, ``folder`` is the complete old or the complete new checkpoint
      (after a power cut as well, since files and the parent folder are fsynced). A crash right after
      the swap can leave the old checkpoint in the hidden temp folder, which nothing reads.
    * fallback where the exchange is unsupported: the old folder is renamed aside to
      ``.<name>.old-<hex>``, the new one renamed in, and the old one deleted. A crash between these
      two renames leaves no ``folder``, but the complete old checkpoint in the ``.old-`` folder.

    A failure before the swap (bad inputs, a full disk) leaves the previous checkpoint untouched and
    removes the temp folder. ``config`` is a dict (or a dataclass, converted with
    :func:`enerverse.core.config.config_to_dict`). ``train_state`` ``None`` is stored as an empty dict.
    """
    import torch
    from safetensors.torch import save_file

    from .outputs import to_jsonable

    folder = Path(folder)
    if not isinstance(config, dict):
        from .config import config_to_dict

        config = config_to_dict(config)
    config_text = json.dumps(to_jsonable(config), indent=2) + "\n"
    tensors = _check_state_dict(state_dict)
    train_state = {} if train_state is None else train_state
    _check_plain(train_state)

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        (tmp / CONFIG_FILE).write_text(config_text, encoding="utf-8")
        save_file(tensors, str(tmp / MODEL_FILE), metadata={"format": "pt"})
        torch.save(train_state, tmp / TRAIN_STATE_FILE)
        fsync_tree(tmp)
        replace_dir_atomic(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def resolve_folder(folder: str | Path) -> Path:
    """A checkpoint folder, or the snapshot a local Hugging Face Hub cache folder points at
    (``models--<org>--<name>/``: ``refs/main`` names the snapshot under ``snapshots/``; a folder with a
    single snapshot needs no ref). Nothing is downloaded. Other paths come back unchanged."""
    folder = Path(folder)
    snapshots = folder / "snapshots"
    if (folder / CONFIG_FILE).is_file() or not snapshots.is_dir():
        return folder
    ref = folder / "refs" / "main"
    if ref.is_file():
        return snapshots / ref.read_text().strip()
    found = sorted(p for p in snapshots.iterdir() if p.is_dir())
    if len(found) == 1:
        return found[0]
    raise CheckpointError(
        f"{folder} is a Hub cache folder with {len(found)} snapshots and no refs/main: "
        "pass one snapshots/<revision> folder"
    )


def _diagnose(folder: Path) -> None:
    if not folder.exists():
        raise CheckpointError(f"checkpoint folder {folder} does not exist")
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is a file, not a checkpoint folder")
    present = sorted(p.name for p in folder.iterdir())
    missing = [name for name in REQUIRED_FILES if name not in present]
    if not missing:
        return
    expected = ", ".join((*REQUIRED_FILES, TRAIN_STATE_FILE))
    if len(missing) == len(REQUIRED_FILES):
        pickles = [n for n in present if n.endswith((".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin"))]
        note = f"; pickled files ({', '.join(pickles)}) are never loaded" if pickles else ""
        raise CheckpointError(
            f"{folder} is not a checkpoint folder: expected {expected}; "
            f"found {', '.join(present) or 'nothing'}{note}"
        )
    raise CheckpointError(f"checkpoint {folder} is incomplete: missing {', '.join(missing)}")


def load_checkpoint(folder: str | Path, map_location: Any = "cpu") -> Checkpoint:
    """Load a checkpoint folder; tensors go to ``map_location``.

    ``train_state`` is None when the folder has no ``train_state.pt`` (weights-only export).
    Raises :class:`CheckpointError` naming the missing file, or when the folder is not a checkpoint.
    """
    import torch
    from safetensors.torch import load_file

    folder = resolve_folder(folder)
    _diagnose(folder)
    try:
        config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{folder / CONFIG_FILE} is not valid JSON: {e}") from e
    try:
        state_dict = load_file(str(folder / MODEL_FILE), device=str(map_location))
    except Exception as e:
        raise CheckpointError(f"cannot read {folder / MODEL_FILE}: {e}") from e
    train_state = None
    if (folder / TRAIN_STATE_FILE).exists():
        try:
            train_state = torch.load(folder / TRAIN_STATE_FILE, map_location=map_location, weights_only=True)
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(
                f"cannot load {folder / TRAIN_STATE_FILE} with weights_only=True (it may contain pickled "
                f"objects, which are never loaded): {first}"
            ) from e
    return Checkpoint(path=folder, config=config, state_dict=state_dict, train_state=train_state)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The complete ``step_{n:08d}`` folder with the highest step in ``run_dir``, or None."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return None
    best: tuple[int, Path] | None = None
    for p in run_dir.iterdir():
        m = _STEP_RE.match(p.name)
        if m and p.is_dir() and all((p / name).is_file() for name in REQUIRED_FILES):
            step = int(m.group(1))
            if best is None or step > best[0]:
                best = (step, p)
    return None if best is None else best[1]


def capture_rng_state() -> dict:
    """RNG states of python, numpy (global) and torch (CPU and CUDA) in a ``weights_only``-safe form."""
    import torch

    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "key": [int(x) for x in np_state["state"]["key"]],
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    """Restore RNG states captured by :func:`capture_rng_state` (missing parts are skipped)."""
    import torch

    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        s = state["numpy"]
        key = np.asarray(s["key"], dtype=np.uint32)
        np.random.set_state(("MT19937", key, s["pos"], s["has_gauss"], s["gauss"]))
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([t.cpu() for t in state["cuda"]])


def check_format(config: dict, fmt: str, version: int, folder: str | Path, what: str) -> None:
    """CheckpointError unless a checkpoint's config.json declares ``format`` ``fmt`` at ``version``."""
    if config.get("format") != fmt or config.get("version") != version:
        raise CheckpointError(
            f"{folder} is not {what} checkpoint of version {version} "
            f"(found format={config.get('format')!r}, version={config.get('version')!r})"
        )


CARD_NOTES = "notes.md"  # hand-written paragraphs of a shipped checkpoint's model card


@contextmanager
def keeping_card_notes(folder: str | Path) -> Iterator[None]:
    """Re-export into ``folder`` without losing its hand-written ``notes.md`` (the export replaces the
    whole folder; the card scripts read the notes to write README.md)."""
    path = Path(folder) / CARD_NOTES
    notes = path.read_bytes() if path.is_file() else None
    yield
    if notes is not None and not path.exists():
        write_bytes_atomic(path, notes)


def read_card_notes(folder: str | Path, path: str | Path | None = None) -> str:
    """The hand-written card paragraphs: ``path`` if given, else ``<folder>/notes.md``; "" when absent."""
    p = Path(path) if path is not None else Path(folder) / CARD_NOTES
    return p.read_text() if p.is_file() else ""


def hub_front_matter(tags: list[str]) -> list[str]:
    """The YAML header of a model card (README.md) that the Hugging Face Hub reads as metadata."""
    header = ["library_name: enerverse", "pipeline_tag: robotics", f"tags: [{', '.join(tags)}]"]
    return ["---", *header, "---", ""]
