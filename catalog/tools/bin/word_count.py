"""word-count tool: reads {"text": ...} as JSON on stdin, prints {"words": N, "chars": M}."""

import json
import sys


def main() -> None:
    arguments = json.load(sys.stdin)
    text = str(arguments.get("text", ""))
    json.dump({"words": len(text.split()), "chars": len(text)}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
