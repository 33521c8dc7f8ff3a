"""Exceptions a user can act on. The CLI prints them as one line and exits 2."""


class ThinktankError(Exception):
    """Base class of every error thinktank raises on purpose."""


class SpecError(ThinktankError, ValueError):
    """A spec string (strategy, model, suite) is malformed or names something unknown."""


class BudgetExhausted(ThinktankError):
    """The budget has no room left for even the smallest model call."""
