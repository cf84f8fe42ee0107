"""Loads ``impls`` (and with it torchvision) before any test module imports tensorflow: torchvision loaded after
tensorflow crashes in its roi_align kernel (see impls/backends/peers/).

Under ``IMPLS_GPU_RUN=1`` (``make gpu``) the tests of peers that are not installed are skipped with the reason
(tests/optional_deps.py); otherwise, as in ``make test``, an unavailable peer fails its tests."""

import optional_deps
import pytest

import impls  # noqa: F401


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "needs_peers(*names): the test calls these peer backends directly; under IMPLS_GPU_RUN=1 it is skipped "
        "when one of them is unavailable",
    )


def pytest_report_header(config):
    if not optional_deps.MISSING_PEERS_SKIP:
        return None
    missing = optional_deps.unavailable_peers()
    listing = "; ".join(f"{name}: {reason}" for name, reason in missing.items()) or "none"
    return f"{optional_deps.ENV_VAR}=1: tests of unavailable peers are skipped. Unavailable peers: {listing}"


def pytest_collection_modifyitems(config, items):
    if not optional_deps.MISSING_PEERS_SKIP:
        return
    missing = optional_deps.unavailable_peers()
    for item in items:
        unavailable = sorted(optional_deps.peers_needed(item) & missing.keys())
        if unavailable:
            peer = unavailable[0]
            item.add_marker(pytest.mark.skip(
                reason=f"peer {peer!r} unavailable ({optional_deps.ENV_VAR}=1: missing peers skip): {missing[peer]}"
            ))
