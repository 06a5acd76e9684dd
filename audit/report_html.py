"""The compliance report as one self-contained HTML document: inline CSS and inline SVG charts,
no scripts and no external resources, so it opens offline and prints cleanly."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

from audit.actions import CATEGORIES
from audit.report import Report, verification_steps

_CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1d2430;max-width:960px;
margin:2rem auto;padding:0 1.25rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2.2rem;
border-bottom:2px solid #d8dee8;padding-bottom:.25rem}
.sub{color:#5a6475;margin-top:0}table{border-collapse:collapse;width:100%;margin:.6rem 0}
th,td{text-align:left;padding:.3rem .55rem;border-bottom:1px solid #e4e8ef;vertical-align:top}
td.brk{overflow-wrap:anywhere}.wide{overflow-x:auto;max-width:100%}
th{background:#f3f5f9;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}
code,.mono{font-family:ui-monospace,"SFMono-Regular",Menlo,monospace;font-size:.85em;
word-break:break-all}.cards{display:flex;gap:.8rem;flex-wrap:wrap}
.card{flex:1 1 150px;border:1px solid #d8dee8;border-radius:6px;padding:.6rem .8rem}
.card b{display:block;font-size:1.5rem}.ok{color:#17693a}.note{color:#5a6475;font-size:.9em}
pre{background:#f3f5f9;padding:.7rem;border-radius:4px;white-space:pre-wrap;
word-break:break-all;font-size:.8em}ol li{margin:.3rem 0}
@media print{body{margin:0;max-width:none}h2{break-after:avoid}}
"""


def _cell(value: str, *, numeric: bool) -> str:
    if numeric:
        return f'<td class="n">{escape(value)}</td>'
    # Serials, fingerprints and identity paths are long unbroken strings: such a cell may
    # break anywhere, so the certificate table fits a laptop window; words stay whole.
    long_token = len(value) > 24 and " " not in value
    return f'<td class="brk">{escape(value)}</td>' if long_token else f"<td>{escape(value)}</td>"


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], numeric: int = -1) -> str:
    if not rows:
        return '<p class="note">None in this period.</p>'
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(_cell(str(v), numeric=i == numeric) for i, v in enumerate(row)) + "</tr>"
        for row in rows
    )
    # A table that still cannot fit scrolls inside its box, not the page.
    return f'<div class="wide"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def timeline_svg(points: Sequence[tuple[str, int]], title: str) -> str:
    """Vertical bars, one per time bucket, with the peak labelled."""
    width, height, left, bottom = 900, 220, 48, 40
    peak = max((c for _, c in points), default=0) or 1
    n = max(len(points), 1)
    bar = (width - left - 10) / n
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{escape(title)}" width="100%">',
        f"<title>{escape(title)}</title>",
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - 5}" y2="{height - bottom}" '
        'stroke="#8a94a6"/>',
        f'<text x="{left - 6}" y="16" text-anchor="end" font-size="11" fill="#5a6475">'
        f"{peak}</text>",
        f'<text x="{left - 6}" y="{height - bottom}" text-anchor="end" font-size="11" '
        'fill="#5a6475">0</text>',
    ]
    usable = height - bottom - 12
    # Axis labels: month-day hour:minute, or hour:minute:second for sub-minute buckets.
    sub_minute = any(label[17:19] not in ("", "00") for label, _ in points)
    for i, (label, count) in enumerate(points):
        h = usable * count / peak
        x = left + i * bar
        parts.append(
            f'<rect x="{x + 1:.1f}" y="{height - bottom - h:.1f}" width="{max(bar - 2, 1):.1f}" '
            f'height="{h:.1f}" fill="#2f6fb3"><title>{escape(label)}: {count}</title></rect>'
        )
        if i % max(1, n // 6) == 0:
            parts.append(
                f'<text x="{x + bar / 2:.1f}" y="{height - bottom + 16}" font-size="10" '
                f'text-anchor="middle" fill="#5a6475">'
                f"{escape(label[11:19] if sub_minute else label[5:16].replace('T', ' '))}</text>"
            )
    parts.append("</svg>")
    return "".join(parts)


def bars_svg(items: Sequence[tuple[str, int]], title: str, color: str = "#b3412f") -> str:
    """Horizontal bars with labels and counts (top items only)."""
    items = list(items)[:10]
    row, label_w, width = 26, 330, 900
    height = row * max(len(items), 1) + 10
    peak = max((c for _, c in items), default=0) or 1
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}" width="100%"><title>{escape(title)}</title>'
    ]
    for i, (label, count) in enumerate(items):
        y = 5 + i * row
        w = (width - label_w - 60) * count / peak
        short = label if len(label) <= 48 else label[:47] + "…"
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 16}" text-anchor="end" font-size="12" '
            f'fill="#1d2430">{escape(short)}</text>'
            f'<rect x="{label_w}" y="{y + 3}" width="{max(w, 1):.1f}" height="{row - 8}" '
            f'fill="{color}"><title>{escape(label)}: {count}</title></rect>'
            f'<text x="{label_w + w + 6:.1f}" y="{y + 16}" font-size="12" fill="#1d2430">'
            f"{count}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _span(seconds: float) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            n = int(seconds // size)
            return unit if n == 1 else f"{n} {unit}s"
    return f"{seconds:g} seconds"


def _when(stamp: object) -> str:
    """``2026-11-20T00:17:10.000000Z`` -> ``2026-11-20 00:17:10`` (all times are UTC)."""
    return str(stamp)[:19].replace("T", " ")


CERT_HEADERS = ("serial", "subject", "profile", "not after (UTC)", "event", "actor", "time (UTC)",
                "reason")  # fmt: skip


def _certificate_row(r: dict[str, Any]) -> list[Any]:
    when = _when(r["not_after"]) if r["not_after"] else ""
    return [r["serial"], r["subject"], r["profile"], when, r["event"], r["actor"],
            _when(r["time"]), r["reason"]]  # fmt: skip


def _release_cell(details: dict[str, Any]) -> str:
    """Release number, stage, digest prefix and what a rollback replaced, when recorded."""
    parts = [f"{k} {details[k]}" for k in ("release", "stage", "rollback_of") if k in details]
    if "sha256" in details:
        parts.append(f"sha256 {str(details['sha256'])[:16]}...")
    if details.get("canary"):
        parts.append(f"canary {details['canary']}")
    return ", ".join(parts)


def _timeline_points(report: Report) -> list[tuple[str, int]]:
    points: list[tuple[str, int]] = []
    t = report.start
    while t < report.end and len(points) < 500:
        label = report.bucket_of(t)
        points.append((label, report.timeline.get(label, 0)))
        t += report.bucket
    return points


def render_html(report: Report) -> str:
    cp = report.verified.checkpoint.checkpoint
    period = f"{report.start:%Y-%m-%d %H:%M} to {report.end:%Y-%m-%d %H:%M} UTC"
    denied = report.by_outcome.get("denied", 0)
    witnessed = report.verified.witnessed
    cosign = ", ".join(f"{n} (at {t})" for n, t in report.cosigners) or (
        "none verified (submit checkpoints to a witness; pass its key with --witness-key)"
    )
    if witnessed is not None:
        cosign += f" on the witnessed checkpoint of size {witnessed.checkpoint.size}"
    seqs = (
        f"entries {report.first_seq} to {report.last_seq}"
        if report.first_seq is not None
        else "no entries"
    )
    sections = [
        f"<h1>Audit report: {escape(cp.origin)}</h1>",
        f'<p class="sub">{escape(period)} · generated {report.generated:%Y-%m-%d %H:%M} UTC</p>',
        '<div class="cards">',
        f'<div class="card"><b>{report.total}</b>events in period</div>',
        f'<div class="card"><b>{denied}</b>refusals</div>',
        f'<div class="card"><b>{len(report.certificates)}</b>certificate events</div>',
        f'<div class="card"><b class="ok">verified</b>{report.verified.size} entries</div>',
        "</div>",
        "<h2>1. Integrity of this report</h2>",
        f"<p>Before this report was written, every entry of the log was re-hashed and the "
        f"Merkle root was recomputed; the log matched its signed checkpoint. The report covers "
        f"{escape(seqs)} of a log whose checkpoint is:</p>",
        _table(
            ["field", "value"],
            [
                ["origin", cp.origin],
                ["tree size", cp.size],
                ["root hash (hex)", cp.root_hash.hex()],
                ["log verifier key", report.vkey],
                ["witness cosignatures", cosign],
            ],
        ),
        f"<pre>{escape(report.verified.checkpoint.note)}</pre>",
        "<h2>2. Events by category (IEC 62443-3-3 SR 2.8)</h2>",
        _table(
            ["category", "events"],
            [[c, report.by_category.get(c, 0)] for c in CATEGORIES],
            numeric=1,
        ),
        "<h2>3. Events over time</h2>",
        timeline_svg(_timeline_points(report), "Events over time"),
        f'<p class="note">One bar per {_span(report.bucket.total_seconds())}; hover a bar for '
        "its count.</p>",
        "<h2>4. Refusals</h2>",
        bars_svg(report.refusal_reasons.most_common(), "Refusals by reason"),
        _table(
            ["device / actor", "reason", "count"],
            [[d, r, n] for (d, r), n in report.refusals.most_common(200)],
            numeric=2,
        ),
        "<h2>5. Certificate lifecycle</h2>",
        _table(CERT_HEADERS, [_certificate_row(r) for r in report.certificates[:2000]]),
        "<h2>6. Manual operator actions</h2>",
        _table(
            ["seq", "time (UTC)", "operator", "action", "resource", "reason given"],
            [
                [r["seq"], _when(r["time"]), r["actor"], r["action"], r["resource"], r["reason"]]
                for r in report.operator_actions[:2000]
            ],
        ),
        "<h2>7. Change control: releases to the plant</h2>",
        _table(
            ["seq", "time (UTC)", "who", "action", "what", "release", "reason"],
            [
                [
                    r["seq"],
                    _when(r["time"]),
                    r["actor"],
                    r["action"],
                    r["resource"],
                    _release_cell(r["details"]),
                    r["reason"],
                ]
                for r in report.changes[:2000]
            ],
        ),
        "<h2>8. Sparkplug B edge nodes</h2>",
        _table(
            ["node", "identity", "online", "births", "deaths", "sequence gaps", "missing"],
            [
                [
                    name,
                    n["identity"],
                    "yes" if n["online"] else "no",
                    n["births"],
                    n["deaths"],
                    n["gaps"],
                    n["missing"],
                ]
                for name, n in sorted(report.sparkplug.nodes.items())[:2000]
            ],
            numeric=3,
        ),
        "<h2>9. Verify this report yourself</h2><ol>",
        *(f"<li>{escape(step)}</li>" for step in verification_steps(report)),
        "</ol>",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Audit report {escape(cp.origin)} {escape(period)}</title>"
        f"<style>{_CSS}</style></head><body>\n" + "\n".join(sections) + "\n</body></html>\n"
    )
