"""The seed example: a pool whose workers are nobody, get 20 % of a CPU, no network, a read-only
file system and a private /tmp.

    python -m concurrentd.testbed --auto -- python examples/seed.py
"""
import os
import socket

from concurrentd.transient import TransientUnitPoolExecutor


def whoami(n):
    import pwd
    return n, pwd.getpwuid(os.getuid()).pw_name, [name for _, name in socket.if_nameindex()]


if __name__ == "__main__":
    with TransientUnitPoolExecutor(max_workers=2, ns_options={
        "User": "nobody",
        "CPUQuota": 0.2,
        "PrivateNetwork": True,
        "ProtectSystem": "strict",
        "PrivateTmp": True,
    }) as pool:
        print("unit:", pool.unit.Id.decode())
        for n, user, interfaces in pool.map(whoami, range(3)):
            print(f"task {n}: user {user}, interfaces {interfaces}")
        print("squares:", list(pool.map(lambda x: x * x, range(10))))
