"""Runs app.py under uvicorn on 127.0.0.1 and a port the OS picks (or `--port N`).

Prints `seed backend listening on http://127.0.0.1:PORT` once uvicorn serves, so a test
never races for a port, and exits when its parent process is gone. Switches are
environment variables (see app.py).
"""

import argparse
import asyncio
import os
import socket
import sys

import uvicorn


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    parent = os.getppid()

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    port = sock.getsockname()[1]

    config = uvicorn.Config(
        "app:app",
        log_level="warning",
        ws="websockets-sansio",
        # Streams never end by themselves: a stopping process gives them a second.
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)

    async def run() -> None:
        async def announce() -> None:
            while not server.started:
                await asyncio.sleep(0.02)
            print(f"seed backend listening on http://127.0.0.1:{port}", flush=True)

        async def orphaned() -> None:
            # A test that dies without stopping its backend (killed, interrupted) must not
            # leave it running: when the parent is gone, so is the backend.
            while os.getppid() == parent:
                await asyncio.sleep(0.5)
            os._exit(0)

        loop = asyncio.get_running_loop()
        loop.create_task(announce())
        loop.create_task(orphaned())
        await server.serve(sockets=[sock])

    asyncio.run(run())


if __name__ == "__main__":
    main()
