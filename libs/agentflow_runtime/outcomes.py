"""What an audited decision or call came to; the audit service accepts exactly these."""

from __future__ import annotations

OUTCOMES = frozenset({"ok", "denied", "failed", "cancelled", "error"})
