"""The worker: runs, their step journal and event stream, executed durably under a lease."""
