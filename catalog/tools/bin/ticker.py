"""ticker tool: prints `tick i` once per `interval` seconds, `count` times, flushing each line."""

import json
import sys
import time


def main() -> None:
    arguments = json.load(sys.stdin)
    count = int(arguments.get("count", 3))
    interval = float(arguments.get("interval", 1.0))
    for i in range(1, count + 1):
        if i > 1:
            time.sleep(interval)
        print(f"tick {i}", flush=True)


if __name__ == "__main__":
    main()
