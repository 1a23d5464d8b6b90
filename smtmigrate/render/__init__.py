"""Everything smtmigrate shows a person: rich tables on a terminal, plain lines elsewhere,
JSON on request. The library returns data; the commands hand it here.

`console` is the one place of markup safety (it never reads rich markup) and
`write_json` the one JSON writer. One module per command family: `audit` (and widen),
`copy` (and verify), `stores` (createdb, drop-recreate, switch, move), `stress`, `pooler` (and the
connection headroom).

`merge`, `protect` and `stress` are imported when one of their names is first asked for
(`__getattr__`): they import their library packages (merge/, protect, stress/), which a
`move` or `copy` never needs at start-up.
"""

from typing import TYPE_CHECKING, Any

from .audit import (
    audit_json,
    audit_verdict,
    findings_table,
    render_applied,
    render_audit,
    render_plan,
    render_project,
    render_sql,
    render_sql_head,
    render_still_failing,
    render_widening_start,
    render_written,
)
from .console import console, render_snapshot, say, write_json, write_lines
from .copy import (
    PlainCopyEvents,
    RichCopyEvents,
    copy_events,
    copy_json,
    render_copy_plan,
    render_copy_result,
    render_quiet_refusal,
    render_refusal,
    render_verification,
    verification_json,
    verification_summary,
)
from .pooler import (
    headroom_lines,
    render_headroom,
    render_pooler_paused,
    render_pooler_started,
    render_pooler_status,
    render_pooler_stopped,
)
from .stores import (
    RecreateEvents,
    move_json,
    move_plan_json,
    render_backing_up,
    render_backup,
    render_created,
    render_database,
    render_dropped,
    render_label_fix,
    render_mariadb_created,
    render_mariadb_database,
    render_mariadb_recreated,
    render_move_plan,
    render_move_result,
    render_move_step,
    render_ready,
    render_recreated,
    render_restored,
    render_switched,
    switch_lines,
)

if TYPE_CHECKING:  # for mypy; imported at run time by __getattr__ below
    from .merge import render_conflicts, render_merge
    from .protect import render_protect
    from .stress import (
        render_stress,
        render_stress_interrupted,
        render_stress_phase,
        stress_json,
        stress_verdict,
    )

_LAZY = {
    "render_conflicts": "merge",
    "render_merge": "merge",
    "render_protect": "protect",
    "render_stress": "stress",
    "render_stress_interrupted": "stress",
    "render_stress_phase": "stress",
    "stress_json": "stress",
    "stress_verdict": "stress",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "PlainCopyEvents",
    "RecreateEvents",
    "RichCopyEvents",
    "audit_json",
    "audit_verdict",
    "console",
    "copy_events",
    "copy_json",
    "findings_table",
    "headroom_lines",
    "move_json",
    "move_plan_json",
    "render_applied",
    "render_audit",
    "render_backing_up",
    "render_backup",
    "render_conflicts",
    "render_copy_plan",
    "render_copy_result",
    "render_created",
    "render_database",
    "render_dropped",
    "render_headroom",
    "render_label_fix",
    "render_mariadb_created",
    "render_mariadb_database",
    "render_mariadb_recreated",
    "render_merge",
    "render_move_plan",
    "render_move_result",
    "render_move_step",
    "render_plan",
    "render_pooler_paused",
    "render_pooler_started",
    "render_pooler_status",
    "render_pooler_stopped",
    "render_project",
    "render_protect",
    "render_quiet_refusal",
    "render_ready",
    "render_recreated",
    "render_refusal",
    "render_restored",
    "render_snapshot",
    "render_sql",
    "render_sql_head",
    "render_still_failing",
    "render_stress",
    "render_stress_interrupted",
    "render_stress_phase",
    "render_switched",
    "render_verification",
    "render_widening_start",
    "render_written",
    "say",
    "stress_json",
    "stress_verdict",
    "switch_lines",
    "verification_json",
    "verification_summary",
    "write_json",
    "write_lines",
]
