"""CurveZMQ for TCP: the kernel's keys and who may connect.

`llmos keygen DIR` writes a server key pair, a client key pair,
DIR/authorized/ holding the public keys of clients allowed in, a host key
pair and DIR/hosts/ holding the public keys of remote driver hosts allowed
to join with their devices (`llmos host`). A client key lets a program make
syscalls, never join as a device; a host key lets a node join. Only the TCP
endpoint is CurveZMQ: the kernel's own driver hosts, the programs it spawns
and local commands use its ipc socket, which only its user can reach. Every
refused key is logged.
"""

import glob
import os

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator


def keygen(path: str) -> dict[str, str]:
    """Write server and client key pairs and the authorized folder under `path`."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    authorized = os.path.join(path, "authorized")
    os.makedirs(authorized, mode=0o700, exist_ok=True)
    hosts = os.path.join(path, "hosts")
    os.makedirs(hosts, mode=0o700, exist_ok=True)
    server_public, server_secret = zmq.auth.create_certificates(path, "server")
    client_public, client_secret = zmq.auth.create_certificates(path, "client")
    host_public, host_secret = zmq.auth.create_certificates(path, "host")
    for public, folder, name in ((client_public, authorized, "client.key"), (host_public, hosts, "host.key")):
        with open(public) as src, open(os.path.join(folder, name), "w") as dst:
            dst.write(src.read())
    for secret in (server_secret, client_secret, host_secret):
        os.chmod(secret, 0o600)
    return {"server": server_public, "client": client_public, "authorized": authorized, "host": host_public,
            "hosts": hosts}  # fmt: skip


def public_keys(folder: str) -> set[bytes]:
    """The z85 public keys of the *.key certificates in `folder`."""
    return {zmq.auth.load_certificate(path)[0] for path in glob.glob(os.path.join(folder, "*.key"))}


def curve_server(ctx: zmq.Context, sock: zmq.Socket, keys_dir: str, on_refused,
                 on_admitted=None) -> tuple[ThreadAuthenticator, set[bytes]]:  # fmt: skip
    """Make the endpoints `sock` binds from now on CurveZMQ servers that admit the authorized client keys
    and the host keys; return the authenticator and the host keys. `on_refused(key)` is told every key
    refused, `on_admitted(key)` every key admitted (z85 text)."""
    server_public, server_secret = zmq.auth.load_certificate(os.path.join(keys_dir, "server.key_secret"))
    hosts = public_keys(os.path.join(keys_dir, "hosts"))
    allowed = public_keys(os.path.join(keys_dir, "authorized")) | hosts
    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve_callback(domain="*", credentials_provider=_Allowed(allowed, on_refused, on_admitted))
    sock.curve_secretkey = server_secret
    sock.curve_publickey = server_public
    sock.curve_server = True
    return auth, hosts


class _Allowed:
    """ZAP credentials provider: a peer is admitted if its public key is known; a refusal is reported."""

    def __init__(self, keys: set[bytes], on_refused, on_admitted=None):
        self.keys = keys
        self.on_refused = on_refused
        self.on_admitted = on_admitted

    def callback(self, domain: str, key: bytes) -> bool:
        """Admit a known key (raw or z85); report any other."""
        text = key if len(key) == 40 else zmq.utils.z85.encode(key)
        if text in self.keys:
            if self.on_admitted is not None:
                self.on_admitted(text.decode())
            return True
        self.on_refused(text.decode())
        return False
