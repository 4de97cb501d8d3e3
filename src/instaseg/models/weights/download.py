"""Downloads of published weights through torchvision's and timm's own caches, and what a failed one tells the user.

torchvision keeps files in torch hub's ``<TORCH_HOME>/hub/checkpoints``, timm in the Hugging Face cache. Without
network a missing file becomes a UserError that says which file to put where; a corrupt cached file, which file to
delete.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import torch

from instaseg.errors import UserError


def hub_checkpoint_path(url: str) -> Path:
    """Where torch hub looks for (and caches) the file downloaded from `url`."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


@contextlib.contextmanager
def download_guard(url: str) -> Iterator[None]:
    """Turn a failed torch hub download (offline machine) or a corrupt cached file into a UserError."""
    target = hub_checkpoint_path(url)
    try:
        yield
    except OSError as e:  # URLError, socket errors and connection resets are all OSErrors
        raise UserError(
            f"cannot download pretrained weights ({e}); without network, download {url} elsewhere and put it at "
            f"{target} (torch hub cache, $TORCH_HOME/hub/checkpoints), or use --weights none",
            target,
        ) from None
    except (RuntimeError, EOFError) as e:
        if not target.is_file():
            raise
        msg = f"cached pretrained weights are unreadable ({e}); delete the file to download again"
        raise UserError(msg, target) from None


@contextlib.contextmanager
def timm_download_guard(name: str) -> Iterator[None]:
    """Turn a failed timm / Hugging Face download into a UserError naming the repository and the cache."""
    try:
        yield
    except (OSError, RuntimeError) as e:  # huggingface_hub's errors are OSErrors; timm re-raises some as RuntimeError
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(name)
        hf_id = getattr(cfg, "hf_hub_id", None) if cfg else None
        hf_home = os.environ.get("HF_HOME", str(Path.home() / ".cache" / "huggingface"))
        where = f"Hugging Face repo {hf_id}" if hf_id else f"{getattr(cfg, 'url', '') or name}"
        raise UserError(
            f"cannot download pretrained weights for timm model {name} ({type(e).__name__}: {e}); without network, "
            f"fetch {where} elsewhere (e.g. `huggingface-cli download {hf_id}`) and copy it into the Hugging Face "
            f"cache {hf_home}/hub, or use --weights none",
            record=name,
        ) from None
