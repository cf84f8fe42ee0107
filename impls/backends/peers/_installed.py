"""What the peers share: how a peer says it is not installed."""

from __future__ import annotations

import importlib.util


def missing(module: str, extra: str):
    """An ``unavailable_reason`` for a peer that needs ``module``, installed by the project's ``extra``."""

    def reason():
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed; install it with `pip install -e .[{extra}]`"
        return None

    return reason
