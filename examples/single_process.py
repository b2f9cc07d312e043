"""One process in a unit of its own, with the multiprocessing.Process API; and concurrentd.run()
for a single call.

    python -m concurrentd.testbed --auto -- python examples/single_process.py
"""
import os

import concurrentd


def report():
    print(f"in the unit: uid {os.getuid()}, /tmp holds {os.listdir('/tmp')}", flush=True)


def main():
    p = concurrentd.TransientUnitProcess(target=report,
                                         properties={"User": "nobody", "PrivateTmp": True})
    p.start()
    p.join()
    print("exit code:", p.exitcode)
    uid = concurrentd.run(os.getuid, properties={"DynamicUser": True})
    print("concurrentd.run with DynamicUser=yes ran as uid", uid)
    return p.exitcode, uid


if __name__ == "__main__":
    main()
