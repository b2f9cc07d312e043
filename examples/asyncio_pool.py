"""asyncio: loop.run_in_executor with a sandboxed pool.

    python -m concurrentd.testbed --auto -- python examples/asyncio_pool.py
"""
import asyncio
import os

from concurrentd import TransientUnitPoolExecutor


async def main():
    loop = asyncio.get_running_loop()
    with TransientUnitPoolExecutor(2, {"User": "nobody", "PrivateNetwork": True}) as pool:
        uids = await asyncio.gather(*(loop.run_in_executor(pool, os.getuid) for _ in range(4)))
    print("uids of four concurrent calls:", uids)
    return uids


if __name__ == "__main__":
    asyncio.run(main())
