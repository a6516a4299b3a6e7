"""Where devise-search keeps what it can recompute or download again."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """`$DEVISE_CACHE`, else `$XDG_CACHE_HOME/devise-search`, else `~/.cache/devise-search`:
    feature caches, downloads (Fashion-MNIST, Imagenette) and CLIP's vocabulary vectors."""
    env = os.environ.get("DEVISE_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "devise-search"
