"""The one exception type users see: its message is a complete sentence for a person."""


class TradeoffError(Exception):
    """A problem with the user's input (spec, data, arguments), reported without a traceback."""
