"""kcp.snmp's live-session entries (held weakly, so that the compiled build's native KCPSession
need not be weakly referenceable), and kcp.weakrefs' mypyc_attr without mypy."""

from __future__ import annotations

import gc
import subprocess
import sys

from kcp.snmp import session_closed, session_opened, snmp
from kcp.stats import Counters


class _Path:
    connection = None


def test_a_live_entry_counts_until_closed_or_dropped() -> None:
    """A session's entry counts its counters in snmp() while the session holds it: until
    session_closed folds them into SNMP, or until the session is dropped unclosed (the entry
    goes with it)."""
    before = snmp()["retrans_segs"]
    closed_c, dropped_c = Counters(), Counters()
    closed_c.retrans_segs, dropped_c.retrans_segs = 3, 5
    closed = session_opened(closed_c, _Path(), passive=True)
    dropped = session_opened(dropped_c, _Path(), passive=False)
    assert snmp()["retrans_segs"] == before + 8
    session_closed(closed)  # folded into SNMP once: still counted, not twice
    assert snmp()["retrans_segs"] == before + 8
    del dropped
    gc.collect()
    assert snmp()["retrans_segs"] == before + 3


def test_mypyc_attr_without_mypy_returns_the_class_itself() -> None:
    # a pure install has no mypy_extensions: kcp.weakrefs' fallback decorator changes nothing
    code = (
        "import sys; sys.modules['mypy_extensions'] = None\n"
        "from kcp.weakrefs import mypyc_attr\n"
        "class C: pass\n"
        "assert mypyc_attr(allow_interpreted_subclasses=True)(C) is C\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr

