"""The admin socket's client: what the CLI, `list`, `top` and the OTLP
export ask a device's daemon (daemon/admin_server.py answers), one JSON
object per line each way on /run/trueno-ublk/N.sock.
"""
import json
import socket

from trueno_ublk.base.errors import UserError
from trueno_ublk.devices import records


def encode(reply: dict) -> bytes:
    return json.dumps(reply).encode() + b"\n"


def request(dev_id: int, command: str, timeout: float | None = 30.0, **args) -> dict:
    """Ask the daemon of /dev/ublkbN, waiting `timeout` seconds for its
    answer (None: as long as it works on it); raises UserError when it
    cannot answer."""
    path = str(records.socket_path(dev_id))
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(path)
            s.sendall(encode({"command": command, **args}))
            with s.makefile("rb") as f:
                reply = json.loads(f.readline() or b"null")
    except PermissionError:
        raise UserError(f"cannot reach the daemon of /dev/ublkb{dev_id}: permission denied (run as root)") from None
    except (OSError, ValueError):
        raise UserError(f"the daemon of /dev/ublkb{dev_id} is not answering") from None
    if not isinstance(reply, dict) or not reply.get("ok"):
        raise UserError(f"/dev/ublkb{dev_id}: {reply.get('error') if isinstance(reply, dict) else 'bad reply'}")
    return reply


def live_stat(record) -> dict | None:
    """The `stat` reply (base/stats.py) of the device `record` describes, or None
    when its daemon is dead, not live yet, or not answering."""
    if not (record.state is records.State.LIVE and record.daemon_alive()):
        return None
    try:
        return request(record.dev_id, "stat")
    except UserError:
        return None
