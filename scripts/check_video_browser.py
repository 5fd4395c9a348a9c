"""Check that videos play in a browser: headless Chromium loads each one in a page, seeks to its middle
and reports the decoded size and duration (or the media error).

    python scripts/check_video_browser.py outputs/eval/<run>/pick_place.mp4 [more.mp4 ...]

Prints one JSON object per video and exits 1 when any does not play. Needs a ``chromium`` binary
(Debian: ``apt-get install chromium``); the videos are served over a local HTTP server, since Chromium
does not decode media of ``file://`` pages in headless mode.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from enerverse.core.config import ConfigError
from enerverse.core.errors import user_errors

PAGE = """<html><body><video id="v" src="{name}" muted preload="auto"></video><div id="r">pending</div>
<script>
const v = document.getElementById("v"), r = document.getElementById("r");
v.addEventListener("loadeddata", () => {{ v.currentTime = v.duration / 2; }});
v.addEventListener("seeked", () => {{
  r.textContent = `ok ${{v.videoWidth}} ${{v.videoHeight}} ${{v.duration}}`;
}});
v.addEventListener("error", () => {{ r.textContent = `error ${{v.error ? v.error.code : "?"}}`; }});
</script></body></html>"""
MEDIA_ERRORS = {"1": "aborted", "2": "network", "3": "decode", "4": "format not supported"}


def browser() -> str:
    """The Chromium executable, or a ConfigError naming what to install."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    raise ConfigError("no chromium on PATH; expected one (apt-get install chromium)")


def serve(folder: Path) -> tuple[http.server.ThreadingHTTPServer, int]:
    """A quiet HTTP server on a free local port serving ``folder``, running in a daemon thread."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:  # noqa: ANN002
            pass

    handler = functools.partial(Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def check(video: Path, exe: str, timeout: float = 60.0) -> dict:
    """{"video", "plays", and "width", "height", "seconds" or "error"} for one video file."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copy(video, root / "video.mp4")
        (root / "index.html").write_text(PAGE.format(name="video.mp4"))
        server, port = serve(root)
        try:
            cmd = [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=20000",
                   "--dump-dom", f"http://127.0.0.1:{port}/index.html"]  # fmt: skip
            dom = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout).stdout
        finally:
            server.shutdown()
    m = re.search(r'<div id="r">([^<]*)</div>', dom)
    status = m.group(1).split() if m else ["no-page"]
    if status[0] == "ok":
        w, h, s = status[1:]
        return {"video": str(video), "plays": True, "width": int(w), "height": int(h), "seconds": float(s)}
    why = MEDIA_ERRORS.get(status[-1], status[-1]) if status[0] == "error" else "never loaded"
    return {"video": str(video), "plays": False, "error": why}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("videos", nargs="+", type=Path, help="mp4 files")
    a = ap.parse_args()
    missing = [str(v) for v in a.videos if not v.is_file()]
    if missing:
        raise ConfigError(f"no such file {missing[0]}; expected mp4 files")
    exe = browser()
    results = [check(v, exe) for v in a.videos]
    for r in results:
        print(json.dumps(r))
    sys.exit(0 if all(r["plays"] for r in results) else 1)


if __name__ == "__main__":
    with user_errors():
        main()
