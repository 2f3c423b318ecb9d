"""MkDocs hook: render the reST roles in docstrings (``:class:`~pkg.Name```) as cross-references.

The docstrings are written for ``help()`` and IDEs, in reST-flavoured prose; mkdocstrings renders them as Markdown,
which leaves ``:class:`` in front of a code span. This turns each role into an optional autorefs link (plain code
when the target is not in the reference), so the API pages read cleanly and link where they can.
"""

from __future__ import annotations

import re
from typing import Any

PACKAGE = "nacos_token_client"
_ROLE = re.compile(r":(?:class|meth|func|attr|mod|data|exc|obj):<code>(~?)([\w.]+)(\(\))?</code>")


def _link(match: re.Match[str]) -> str:
    tilde, target, call = match.group(1), match.group(2), match.group(3) or ""
    shown = target.rsplit(".", 1)[-1] if tilde else target
    identifier = target if target.startswith(PACKAGE + ".") or target == PACKAGE else f"{PACKAGE}.{target}"
    return f'<autoref optional identifier="{identifier}"><code>{shown}{call}</code></autoref>'


def on_page_content(html: str, **_kwargs: Any) -> str:
    """Replace every reST role left in the rendered page."""
    return _ROLE.sub(_link, html)
