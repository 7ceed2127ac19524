"""`llmos keygen DIR`: CurveZMQ keys for a kernel that listens on TCP."""

import argparse

from llmos.kernel.security import keygen


def add_parser(sub) -> None:
    """Add `llmos keygen`."""
    p = sub.add_parser(
        "keygen",
        help="make CurveZMQ keys for TCP",
        description="Write a server key pair, a client key pair, an authorized/ folder of client public keys, a "
        "host key pair and a hosts/ folder of host public keys to DIR. Boot with `llmos boot --tcp HOST:PORT --keys "
        "DIR`; clients connect with keys_dir=DIR, remote driver hosts with `llmos host --keys DIR` (copy DIR to that "
        "machine; it needs server.key and host.key_secret). Add more "
        "clients by copying their public .key files into DIR/authorized/.",
    )
    p.add_argument("dir", help="folder for the keys (created 0700)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Make the keys and say where they are."""
    paths = keygen(args.dir)
    print(f"server public key: {paths['server']}\nclient public key: {paths['client']}\nauthorized keys:   {paths['authorized']}/\n"
          f"host public key:   {paths['host']}\nhost keys:         {paths['hosts']}/")  # fmt: skip
    return 0
