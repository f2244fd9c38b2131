"""The one exception type users see: its message is a complete sentence for a person."""


class TradeoffError(Exception):
    """A problem with the user's input (spec, data, arguments), reported without a traceback."""


class OutOfSpace(TradeoffError):
    """A write failed for want of disk space or quota. What was written before is intact and the
    command can be run again (``--resume`` for a run) once space is freed: exit status 75."""
