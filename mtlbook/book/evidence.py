"""Tie a chapter's prose to its outputs: numbers glued into the text, claims checked by the build.

* :func:`glue` stores a value computed on the page under a name; the chapter's Markdown shows
  it with myst-nb's ``{glue:text}`name:.3f``` role, so the sentence and the output cannot
  disagree. Outside a book build (Colab, a plain Jupyter) it only returns the value.
* :func:`claim` states a qualitative sentence of the prose as a condition. When it no longer
  holds, the book build and the tests fail (:class:`ClaimError`); a reader who changed a knob
  and re-ran the notebook gets a warning instead, since their run may rightly disagree.

"Strict" means the environment variable ``MTLBOOK_STRICT_CLAIMS`` is ``1`` (``tools/build_book.sh``
and ``tools/run_tests.sh`` set it) or ``CI`` is ``true``.

Example:
    >>> from mtlbook.book.evidence import claim
    >>> claim(0.05 < 0.11, "the mixtures beat linear regression")
    True
"""

from __future__ import annotations

import numbers
import os
import warnings
from typing import Any

__all__ = ["ClaimError", "ClaimWarning", "claim", "glue", "strict"]


class ClaimError(AssertionError):
    """A sentence of the chapter no longer matches its outputs (in a strict run)."""


class ClaimWarning(UserWarning):
    """A sentence of the chapter does not match this (interactive) run's outputs."""


def strict() -> bool:
    """Whether a failed :func:`claim` raises: in CI and in the book's build and tests."""
    if os.environ.get("MTLBOOK_STRICT_CLAIMS", "").strip() == "1":
        return True
    return os.environ.get("CI", "").strip().lower() in ("1", "true")


def claim(condition: Any, text: str) -> bool:
    """Check that ``condition`` holds, the claim ``text`` that the prose around it makes.

    Args:
        condition: anything with a truth value (a bool, a NumPy bool).
        text: the claim as the prose states it (shown in the error or warning).

    Returns:
        ``bool(condition)``.

    Raises:
        ClaimError: when the claim fails in a strict run (:func:`strict`).
        TypeError: when ``text`` is not a non-empty string.
    """
    if not isinstance(text, str) or not text.strip():
        raise TypeError(f"text must be the claim as a non-empty string, got {text!r}")
    holds = bool(condition)
    if not holds:
        message = f"the chapter claims {text!r}, but this run's outputs do not support it"
        if strict():
            raise ClaimError(message + "; update the prose or find what changed")
        warnings.warn(message + " (the text describes the default settings)", ClaimWarning, 2)
    return holds


def glue(name: str, value: Any) -> Any:
    """Make ``value`` available to the page's text as ``{glue:text}`name```, display nothing.

    Uses myst-nb's ``glue`` where it is installed (the book build); elsewhere it does nothing.
    NumPy numbers are glued as Python numbers, so that a format such as ``:.3f`` applies.

    Returns:
        ``value``, so that a cell can glue and keep a number in one line.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"name must be an identifier-like string, got {name!r}")
    try:
        from myst_nb import glue as myst_glue
    except ImportError:  # Colab or a plain Jupyter: nothing reads the glued values
        return value
    shown = value
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        shown = int(value)  # NumPy scalars print as np.int64(…), which the role cannot format
    elif isinstance(value, numbers.Real):
        shown = float(value)
    myst_glue(name, shown, display=False)
    return value
