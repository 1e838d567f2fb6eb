"""Skip, or fail under CI: one rule for tests whose tool ``scripts/setup`` installs.

Why: a test that skips because its emulator, browser or vectors are missing passes silently,
so a CI machine where setup broke would report green while testing nothing. On a user's
clone a skip (with its reason, shown by ``-rs``) is right; under CI (``CI`` set, as CI
services and ``.ci/run`` do) the same absence is a failure that names what is missing.

Only for what setup provides. Tests of external services (``live``) still skip everywhere.
"""
import os

import pytest


def in_ci() -> bool:
    """True when the environment says this is CI (``CI`` set and not ``0``/``false``)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing(reason: str) -> None:
    """Skip this test with ``reason``, or fail it under CI (CI must run every such test)."""
    if in_ci():
        pytest.fail(f"{reason} (a failure under CI, where every test must run)", pytrace=False)
    try:  # reported at the test's line by -rs, not at this helper's (pytest's own skip does that)
        skip = pytest.skip.Exception(reason, _use_item_location=True)
    except TypeError:  # a pytest without that keyword
        pytest.skip(reason)
    raise skip


def need(ok: bool, reason: str) -> None:
    """``missing(reason)`` unless ``ok``."""
    if not ok:
        missing(reason)
