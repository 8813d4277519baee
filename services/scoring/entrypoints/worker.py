"""The scoring consumer alone, without HTTP: `python -m services.scoring.entrypoints.worker`.

Reads the `CHURNSIGNAL_*` settings from the environment, consumes until SIGTERM or SIGINT, and exits
non-zero if the consumer fails (a supervisor restarts it; the committed state tells it where to resume).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from services.scoring.bootstrap import run_consumer, scoring_runtime
from shared.logs import configure_logging
from shared.process import tune_gc
from shared.settings import Settings

log = logging.getLogger("services.scoring.worker")


async def serve(settings: Settings) -> None:
    async with scoring_runtime(settings) as rt:
        tune_gc()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, rt.consumer.stop)
        await run_consumer(rt.consumer, restart=False)


def main() -> int:
    settings = Settings()
    configure_logging(settings.log_level)
    asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
