"""Where systemd listens, and one blocking D-Bus connection to it.

An :class:`Address` is a socket path plus whether a message bus daemon sits behind it (``bus``:
say Hello, address systemd by its well-known name, AddMatch for signals) or systemd itself
(``p2p``: systemd's private socket — no Hello, no destination, signals arrive unasked once
subscribed). The system bus, systemd's private socket and, later, a user manager's bus are all
just addresses; :class:`Connection` does not care which.

The connection is not fork-safe by design: a forked child must never talk over its parent's
socket (it would steal replies), so every use checks the pid that opened it.
"""

from __future__ import annotations

import os
import socket
import time
from collections import deque
from dataclasses import dataclass
from itertools import count
from typing import Any, Callable

from jeepney.auth import BEGIN, make_auth_external
from jeepney.bus import get_connectable_addresses
from jeepney.low_level import HeaderFields, Message, MessageType, Parser

from . import messages
from .errors import ROOT_HINT, SystemdError, SystemdPermissionError, SystemdUnreachable

SYSTEM_BUS_DEFAULT = "unix:path=/run/dbus/system_bus_socket"
SYSTEMD_PRIVATE = "/run/systemd/private"
TESTBED_HINT = ("is systemd PID 1? `python -m concurrentd.testbed -- …` runs a throwaway one")


@dataclass(frozen=True)
class Address:
    """A socket systemd can be reached at.

    Attributes:
        path: the AF_UNIX path (a leading NUL means the abstract namespace).
        p2p: True when systemd itself listens there (no bus daemon).
    """

    path: str
    p2p: bool = False

    def describe(self) -> str:
        return f"{'systemd socket' if self.p2p else 'bus'} at {self.path}"


def parse_address(address: "str | Address") -> Address:
    """Turn a D-Bus address string (``unix:path=…``) or a plain path into an :class:`Address`.

    systemd's private socket is recognised by its path and marked peer-to-peer.
    """
    if isinstance(address, Address):
        return address
    if address.startswith("/"):
        path = address
    else:
        try:
            path = next(get_connectable_addresses(address))
        except (RuntimeError, ValueError, StopIteration) as e:
            raise ValueError(f"unsupported D-Bus address {address!r}: {e}") from None
    return Address(path, p2p=os.path.basename(path) == "private" and "/systemd/" in path)


def default_addresses() -> list[Address]:
    """The system bus (``$DBUS_SYSTEM_BUS_ADDRESS`` honoured), then systemd's private socket."""
    system = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") or SYSTEM_BUS_DEFAULT
    return [parse_address(system), Address(SYSTEMD_PRIVATE, p2p=True)]


class Connection:
    """One authenticated, blocking D-Bus connection.

    Replies are matched by serial; signals received meanwhile are kept if ``keep_signal`` says
    so (bounded), so that a caller can wait for a signal that arrived during an unrelated call.
    """

    def __init__(self, sock: socket.socket, address: Address):
        self.sock: socket.socket | None = sock   # None once closed
        self.address = address
        self.destination = None if address.p2p else messages.SYSTEMD_NAME
        self.unique_name: str | None = None
        self._parser = Parser()
        self._serials = count(1)
        self._pid = os.getpid()
        self.signals: deque[Message] = deque(maxlen=4096)
        self.keep_signal: Callable[[Message], bool] = lambda msg: False

    # -- opening ------------------------------------------------------------------------------

    @classmethod
    def open(cls, address: Address, timeout: float = 5.0) -> "Connection":
        """Connect and authenticate (EXTERNAL); say Hello on a bus.

        Raises:
            OSError: the socket cannot be connected (FileNotFoundError, ConnectionRefusedError,
                PermissionError …), with the address in the message.
            SystemdError: the bus refused Hello.
        """
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        conn = cls(sock, address)
        try:
            sock.settimeout(timeout)
            try:
                sock.connect(address.path)
            except OSError as e:
                raise type(e)(e.errno, f"connect to {address.describe()}: {e.strerror}") from None
            # One write for the whole handshake, as sd-bus does: the server reads it in order,
            # so BEGIN and Hello need not wait for the OK of AUTH (one round trip, not three).
            hello = None if address.p2p else conn._next_serial()
            sock.sendall(b"\0" + make_auth_external() + BEGIN
                         + (messages.hello().serialise(serial=hello) if hello else b""))
            conn._read_auth_reply(timeout)
            if hello:
                (reply,) = conn._replies([hello], ["Hello"], timeout)
                if isinstance(reply, SystemdError):
                    raise reply
                conn.unique_name = reply[0]
            sock.settimeout(None)
        except BaseException:
            conn.close()
            raise
        return conn

    def _read_auth_reply(self, timeout: float) -> None:
        """Reads the server's answer to AUTH (``OK <guid>``); what follows it is D-Bus messages.
        The errors it raises are prefixed with the address by connect_first()."""
        data = b""
        deadline = time.monotonic() + timeout
        while b"\r\n" not in data:
            sock = self._open_sock()
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            try:
                chunk = sock.recv(4096)
            except socket.timeout:
                raise TimeoutError(f"no answer to AUTH in {timeout:g} s") from None
            if not chunk:
                raise ConnectionError("the connection was closed during AUTH")
            data += chunk
        line, _, rest = data.partition(b"\r\n")
        if not line.startswith(b"OK"):
            raise ConnectionError(f"AUTH EXTERNAL refused: {line.decode('ascii', 'replace')}")
        self._parser.add_data(rest)

    # -- I/O ----------------------------------------------------------------------------------

    def _open_sock(self) -> socket.socket:
        if self.sock is None:
            raise ValueError("the systemd connection is closed")
        return self.sock

    def _check_owner(self) -> None:
        self._open_sock()
        if os.getpid() != self._pid:
            raise RuntimeError("a systemd connection cannot be used from a forked child; "
                               "open a new one with Systemd.connect()")

    def _next_serial(self) -> int:
        return next(self._serials)

    def send(self, *msgs: Message) -> list[int]:
        """Send ``msgs`` in one write, in order, each with a fresh serial; return the serials."""
        self._check_owner()
        serials = [self._next_serial() for _ in msgs]
        self._open_sock().sendall(b"".join(msg.serialise(serial=serial)
                                   for msg, serial in zip(msgs, serials, strict=True)))
        return serials

    def _receive(self, deadline: float | None) -> Message:
        while True:
            msg = self._parser.get_next_message()
            if msg is not None:
                return msg
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("no message from systemd in time")
                self._open_sock().settimeout(remaining)
            else:
                self._open_sock().settimeout(None)
            try:
                data = self._open_sock().recv(65536)
            except socket.timeout:
                raise TimeoutError("no message from systemd in time") from None
            if not data:
                raise ConnectionResetError(f"{self.address.describe()} closed the connection")
            self._parser.add_data(data)

    def _dispatch(self, msg: Message) -> None:
        """Keep a signal the caller may wait for; drop everything else unasked."""
        if msg.header.message_type == MessageType.signal and self.keep_signal(msg):
            self.signals.append(msg)

    def call(self, msg: Message, *, step: str = "", timeout: float | None = 30.0) -> tuple[Any, ...]:
        """Send a method call and return its reply body.

        Raises:
            SystemdError: on an error reply (``.name`` is the D-Bus error name).
            TimeoutError: no reply within ``timeout`` seconds.
        """
        (reply,) = self.call_all([(msg, step)], timeout=timeout)
        if isinstance(reply, SystemdError):
            raise reply
        return reply

    def call_all(self, calls: list[tuple[Message, str]], *,
                 timeout: float | None = 30.0) -> list[tuple[Any, ...] | SystemdError]:
        """Send every (method call, step name) at once, then wait for all their replies: one
        round trip instead of one per call. The bus delivers one sender's messages in order, so
        each call still takes effect after the ones before it.

        Returns:
            per call, its reply body, or the SystemdError of its error reply (not raised: the
            caller decides, knowing which of the others took effect).

        Raises:
            TimeoutError: not every reply came within ``timeout`` seconds.
        """
        serials = self.send(*(msg for msg, _ in calls))
        return self._replies(serials, [step or msg.header.fields.get(HeaderFields.member, "")
                                       for msg, step in calls], timeout)

    def _replies(self, serials: list[int], steps: list[str],
                 timeout: float | None) -> list[tuple[Any, ...] | SystemdError]:
        """Waits for the replies to the calls sent with ``serials`` (see call_all)."""
        waiting = {serial: i for i, serial in enumerate(serials)}
        replies: dict[int, tuple[Any, ...] | SystemdError] = {}
        deadline = None if timeout is None else time.monotonic() + timeout
        while waiting:
            reply = self._receive(deadline)
            i = waiting.pop(reply.header.fields.get(HeaderFields.reply_serial), None)
            if i is None:
                self._dispatch(reply)
                continue
            if reply.header.message_type == MessageType.error:
                name = reply.header.fields.get(HeaderFields.error_name, "?")
                text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
                replies[i] = SystemdError.from_reply(name, text, steps[i])
            else:
                replies[i] = reply.body
        return [replies[i] for i in range(len(serials))]

    def wait_signal(self, match: Callable[[Message], bool], *, timeout: float | None = None) -> Message:
        """Return (and remove) the first kept signal for which ``match`` is true, reading more
        messages from the socket until one arrives."""
        self._check_owner()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            for msg in self.signals:
                if match(msg):
                    self.signals.remove(msg)
                    return msg
            self._dispatch(self._receive(deadline))

    def close(self) -> None:
        """Close the socket; closing twice is harmless."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def connect_first(addresses: list[Address], timeout: float = 5.0) -> Connection:
    """Open a connection to the first address that answers.

    Raises:
        SystemdUnreachable: none of them answered; says where it looked and how to fix it.
        SystemdPermissionError: a socket exists but we may not use it (not root).
    """
    failures: list[str] = []
    denied: list[str] = []
    for address in addresses:
        try:
            return Connection.open(address, timeout)
        except PermissionError as e:
            denied.append(f"{address.describe()}: {e.strerror or e}")
        except (FileNotFoundError, ConnectionRefusedError, ConnectionResetError,
                NotADirectoryError) as e:
            failures.append(f"no {address.describe()}" if isinstance(e, FileNotFoundError)
                            else f"{address.describe()}: {e.strerror or e}")
        except (TimeoutError, ConnectionError, ValueError) as e:
            failures.append(f"{address.describe()}: {e}")
    if denied:
        raise SystemdPermissionError("org.freedesktop.DBus.Error.AccessDenied",
                                     f"{'; '.join(denied)} ({ROOT_HINT})", "connect")
    raise SystemdUnreachable(f"systemd is not reachable ({', '.join(failures)}): {TESTBED_HINT}")
