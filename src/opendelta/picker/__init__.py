"""The interactive module picker: choose `modified_modules` on a web page served from 127.0.0.1.

    names = pick_modules(model, AutoDeltaConfig.from_dict({"delta_type": "lora"}))   # blocks until Submit
    delta = AutoDeltaModel.from_config(cfg, backbone_model=model, interactive_modify=True)   # or a port

The page shows the folded module tree; modules the delta type cannot modify are greyed out (the reason on
hover); a footer gives the delta's exact parameter count for the selection. See `server.py` for the safety
rules (127.0.0.1 only, one-time token, timeout, clean shutdown).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from torch import nn

from ..config import DeltaConfig
from ..errors import DeltaConfigError
from ..providers import provide
from .model import PickerModel, compact_names, meta_copy
from .server import PickerServer

DEFAULT_TIMEOUT = 900.0


def _open_browser(url: str) -> bool:
    """Open `url` in a graphical browser where there is one; never a text browser in this terminal."""
    import webbrowser

    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    try:
        browser = webbrowser.get()
    except webbrowser.Error:
        return False
    if type(browser).__name__ in ("GenericBrowser",) and getattr(browser, "name", "") in (
        "lynx",
        "w3m",
        "links",
        "elinks",
        "www-browser",
    ):
        return False
    return bool(browser.open(url, new=2))


def _announce(url: str, opened: bool, timeout: float | None) -> None:
    how = "opened in your browser" if opened else "open it in a browser on this machine"
    limit = f"; it closes after {timeout:g} s" if timeout else ""
    print(
        f"OpenDelta module picker: {url}\n  ({how}; Submit or Cancel there, Ctrl-C here{limit})",
        file=sys.stderr,
        flush=True,
    )


def pick_modules(
    model: nn.Module,
    config: DeltaConfig | dict,
    port: int | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    open_browser: bool = True,
    on_url: Callable[[str], Any] | None = None,
) -> list[str]:
    """Serve the picker for `model` and the delta `config`; block until Submit; return `modified_modules`.

    port: None / 0 for a random free port. timeout: seconds until PickerTimeoutError (None: no limit).
    Cancel raises PickerCancelledError; Ctrl-C raises KeyboardInterrupt. The server is always shut down (every
    thread joined, the socket closed) before this returns or raises. `model` is never changed.
    on_url: called with the page URL once it is served (default: print it, and open a browser if asked).
    """
    if isinstance(config, dict):
        from ..auto import AutoDeltaConfig

        config = AutoDeltaConfig.from_dict(config)
    server = PickerServer(PickerModel(model, config), port=port)
    try:
        server.start()
        if on_url is not None:
            on_url(server.url)
        else:
            _announce(server.url, open_browser and _open_browser(server.url), timeout)
        return server.wait(timeout)
    finally:
        server.close()


def pick_config(
    model: nn.Module,
    config: DeltaConfig,
    port: int | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    open_browser: bool = True,
    on_url: Callable[[str], Any] | None = None,
) -> DeltaConfig:
    """`config` with `modified_modules` set to what the user picked (exclusions cleared, raw names)."""
    names = pick_modules(model, config, port=port, timeout=timeout, open_browser=open_browser, on_url=on_url)
    changes: dict[str, Any] = {"modified_modules": names, "exclude_modules": None}
    if config.common_structure:
        changes["common_structure"] = False
    return config.replace(**changes)


def _interactive(backbone: nn.Module, config: DeltaConfig, interactive_modify: Any) -> DeltaConfig:
    """What a delta constructor's `interactive_modify=True | PORT` runs (registered with `providers` below)."""
    if isinstance(interactive_modify, bool):
        port = None
    elif isinstance(interactive_modify, int) and 0 <= interactive_modify < 65536:
        port = interactive_modify
    else:
        raise DeltaConfigError(
            f"interactive_modify must be True (a random free port), a port number or False, got {interactive_modify!r}."
        )
    return pick_config(backbone, config, port=port)


provide("pick_modules", _interactive)

__all__ = [
    "PickerModel",
    "PickerServer",
    "compact_names",
    "meta_copy",
    "pick_config",
    "pick_modules",
    "DEFAULT_TIMEOUT",
]
