"""CurveZMQ for TCP: the kernel's keys and who may connect.

`llmos keygen DIR` writes a server key pair, a client key pair and
DIR/authorized/ holding the public keys allowed in. The kernel also makes a
fresh key pair at boot for its own driver hosts and spawned programs, which
it hands them in the environment.
"""

import glob
import json
import os

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator


def keygen(path: str) -> dict[str, str]:
    """Write server and client key pairs and the authorized folder under `path`."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    authorized = os.path.join(path, "authorized")
    os.makedirs(authorized, mode=0o700, exist_ok=True)
    server_public, server_secret = zmq.auth.create_certificates(path, "server")
    client_public, client_secret = zmq.auth.create_certificates(path, "client")
    with open(client_public) as src, open(os.path.join(authorized, "client.key"), "w") as dst:
        dst.write(src.read())
    for secret in (server_secret, client_secret):
        os.chmod(secret, 0o600)
    return {"server": server_public, "client": client_public, "authorized": authorized}


def curve_server(ctx: zmq.Context, sock: zmq.Socket, keys_dir: str) -> tuple[ThreadAuthenticator, str]:
    """Make `sock` a CurveZMQ server that admits the authorized keys; return the
    authenticator and the JSON key triple for the kernel's own children."""
    server_public, server_secret = zmq.auth.load_certificate(os.path.join(keys_dir, "server.key_secret"))
    allowed = set()
    for path in glob.glob(os.path.join(keys_dir, "authorized", "*.key")):
        public, _ = zmq.auth.load_certificate(path)
        allowed.add(public)
    inner_public, inner_secret = zmq.curve_keypair()
    allowed.add(inner_public)
    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve_callback(domain="*", credentials_provider=_Allowed(allowed))
    sock.curve_secretkey = server_secret
    sock.curve_publickey = server_public
    sock.curve_server = True
    children = json.dumps([server_public.decode(), inner_public.decode(), inner_secret.decode()])
    return auth, children


class _Allowed:
    """ZAP credentials provider: a client is admitted if its public key is known."""

    def __init__(self, keys: set[bytes]):
        self.keys = keys

    def callback(self, domain: str, key: bytes) -> bool:
        return zmq.utils.z85.encode(key) in self.keys or key in self.keys
