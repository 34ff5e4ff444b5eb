"""Pages for the Kubeflow UI's HTML viewer."""

from __future__ import annotations

import base64
import html
from pathlib import Path


def heatmap_html(png: Path, title: str = "Layer sensitivity") -> str:
    """A self-contained HTML page showing ``png`` (inline, base64) for the Kubeflow UI's HTML viewer."""
    if Path(png).is_file():
        data = base64.b64encode(Path(png).read_bytes()).decode()
        body = f'<img alt="{html.escape(title)}" src="data:image/png;base64,{data}">'
    else:
        body = "<p>No new deletion requests: nothing to probe.</p>"
    head = "<!doctype html><html><head><meta charset='utf-8'></head><body>"
    return f"{head}<h2>{html.escape(title)}</h2>{body}</body></html>\n"
