"""The testbed's one exception, in a module of its own so that every testbed module can raise it."""


class TestbedError(RuntimeError):
    """The box could not be booted or entered; the message says which step failed and why."""
