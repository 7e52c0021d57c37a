"""A screenshot of the live console over a lakehouse (how ``docs/console.png`` is made).

Serves the lakehouse of the configuration (``--conf``, ``LAMBDA_SALES__*``) as ``lambda-sales
serve`` does, in this process on a free port, opens the console in a headless Chromium
(:mod:`devtools.browser`), waits for its first refresh and saves the whole page::

    python -m devtools.console_screenshot --out docs/console.png [--conf pipeline.toml] [--window day] [--height 2200]
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

from devtools.browser import headless_chromium, screenshot
from devtools.processes import free_port
from sales_core.config import load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/console.png"))
    parser.add_argument("--conf", type=Path, default=None, help="a configuration file (TOML)")
    parser.add_argument("--window", choices=("hour", "day", "week"), default="hour")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument(
        "--height", type=int, default=0, help="the window's height (default: the whole page)"
    )
    args = parser.parse_args(argv)

    import uvicorn

    from serving_layer.console_series import StreamThresholds, trigger_seconds
    from serving_layer.http import create_app

    config = load_config(args.conf)
    thresholds = StreamThresholds(
        trigger_seconds(config.speed.trigger_interval),
        config.serving.stream_stalled_after_seconds,
        config.serving.stream_stopped_after_seconds,
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config.lakehouse.root, thresholds=thresholds),
            host="127.0.0.1",
            port=port,
            log_level="warning",
        )
    )
    thread = threading.Thread(target=server.run, name="console", daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    driver = headless_chromium(width=args.width, height=args.height or 1000)
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        refreshes = "return Number(document.body.dataset.refreshes || 0)"
        deadline = time.monotonic() + 60
        while driver.execute_script(refreshes) < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        if args.window != "hour":
            driver.find_element("css selector", f"button[data-window={args.window}]").click()
            time.sleep(1.0)
        saved = screenshot(driver, args.out, full_page=not args.height)
    finally:
        driver.quit()
        server.should_exit = True
        thread.join(timeout=30)
    print(f"saved {saved}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
