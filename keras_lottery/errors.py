"""The exceptions of keras_lottery, under one base.

`except keras_lottery.KerasLotteryError` catches every failure the library
raises on purpose. Each error also keeps the built-in base it had before
(`RuntimeError` or `ValueError`), so existing handlers keep working.
"""

from __future__ import annotations


class KerasLotteryError(Exception):
    """Base class of the errors keras_lottery raises on purpose.

    Example:

    >>> import keras_lottery as kl
    >>> issubclass(kl.SearchError, kl.KerasLotteryError)
    True
    """
