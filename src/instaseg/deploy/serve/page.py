"""The page at ``/``: choose or drop an image, see the overlay and the list of instances.

One self-contained html file (no scripts or fonts from elsewhere), calling ``/predict`` with a multipart upload.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files


@cache
def page_html() -> str:
    return files("instaseg.deploy.serve").joinpath("page.html").read_text(encoding="utf-8")
