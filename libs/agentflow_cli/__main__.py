"""`python -m agentflow_cli` is `af`."""

from agentflow_cli.main import main

raise SystemExit(main())
