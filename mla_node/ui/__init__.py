"""The clerk's and the auditor's web interface, server-rendered, at /ui/ on the clerk address
(docs/ui.md)."""

from mla_node.ui.core import UI_POLICY, add_ui, is_ui_request

__all__ = ["UI_POLICY", "add_ui", "is_ui_request"]
