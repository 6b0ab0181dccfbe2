"""Who may ask what of the local control socket.

Owns the rule, from `[control]` and the peer's credentials (gateway.commands.control.Peer, read
by the kernel, never what the client says): reading (`status`, `alarms`) is open to whoever can
open the socket (its file mode already limits that to root and the service's group); `reset`
needs `reset_group` (when it is not set: whoever can open the socket, as before the setting
existed); `command` (move a bollard, unlock a door, lock down, drive a lamp) needs the narrower
`device_group` (when it is not set: nobody but root and the service user). Root (uid 0) and the
daemon's own uid may do everything. Membership is the user's primary group, the group's member
list (/etc/group), or the peer process's own gid, looked up at each request, so a change of
groups needs no restart. Which op needs which right is declared with the op, in
gateway.commands.registry. It does not carry requests out: that is gateway.commands.local_ops.
"""

from __future__ import annotations

import grp
import os
import pwd
from dataclasses import dataclass

from gateway.commands.control import Peer, RequestError
from gateway.commands.registry import ops_needing

READ_OPS = ops_needing("read")
RESET_OPS = ops_needing("reset")
DEVICE_OPS = ops_needing("device")


class Refused(RequestError):
    """The peer may not do this; the message says why and what would allow it."""


def member_of(peer: Peer, group: str) -> bool:
    """Whether the peer belongs to `group`. Refused when no such group exists here."""
    try:
        entry = grp.getgrnam(group)
    except KeyError:
        raise Refused(f"group {group!r} of [control] does not exist on this machine") from None
    gid, members = entry.gr_gid, entry.gr_mem
    if peer.gid == gid:
        return True
    try:
        user = pwd.getpwuid(peer.uid)
    except KeyError:
        return False
    return user.pw_gid == gid or user.pw_name in members


@dataclass(frozen=True, slots=True)
class ControlAccess:
    reset_group: str | None = None
    device_group: str | None = None
    daemon_uid: int = os.getuid()

    def check(self, peer: Peer, op: object) -> None:
        """Return when `peer` may ask for `op`; raise Refused with the reason otherwise. An op
        this rule does not know is left to the handler (which refuses it as unknown)."""
        if peer.uid in (0, self.daemon_uid) or op in READ_OPS:
            return
        if op in RESET_OPS:
            if self.reset_group is None or member_of(peer, self.reset_group):
                return
            raise Refused(
                f"user {peer.user} (uid {peer.uid}) may not reset alarms or run the walk test: "
                f"not in the group {self.reset_group!r} ([control] reset_group)"
            )
        if op in DEVICE_OPS:
            if self.device_group is not None and member_of(peer, self.device_group):
                return
            needs = (
                "[control] device_group is not set, so only root and the service user may"
                if self.device_group is None
                else f"not in the group {self.device_group!r} ([control] device_group)"
            )
            raise Refused(f"user {peer.user} (uid {peer.uid}) may not command devices: {needs}")
