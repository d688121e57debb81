"""The HTML page of model quality: one or more segments' metrics, charts as inline SVG.

Self-contained: nothing is loaded from the network (no scripts, fonts or style sheets from elsewhere).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jobs.model.quality import TOP_FRACTIONS, pct_label

_COLORS = {"model": "#1f6feb", "rfm": "#d97706", "random": "#8b949e"}
_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:24px;
color:#1f2328;background:#fff}
h1{font-size:22px}h2{font-size:18px;margin-top:36px;border-top:1px solid #d0d7de;padding-top:16px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
td,th{border:1px solid #d0d7de;padding:3px 8px;text-align:right}
th{background:#f6f8fa}td:first-child,th:first-child{text-align:left}
.charts{display:flex;flex-wrap:wrap;gap:16px}.alarm{color:#cf222e;font-weight:600}.ok{color:#1a7f37}
.muted{color:#57606a;font-size:13px}svg text{font-size:11px;fill:#1f2328}
"""


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else "–"
    return html.escape(str(value))


def _svg_chart(
    title: str,
    series: Sequence[dict[str, Any]],
    *,
    x_label: str,
    y_label: str,
    x_max: float = 1.0,
    y_max: float = 1.0,
    width: int = 360,
    height: int = 270,
    points: Sequence[dict[str, Any]] = (),
    legend: str = "br",
) -> str:
    """A line chart: series = [{name, x, y, color, dash?}], optional scatter points [{x, y, r, color}]."""
    left, right, top, bottom = 46, 12, 26, 40
    pw, ph = width - left - right, height - top - bottom
    y_max = y_max if y_max > 0 else 1.0

    def sx(x: float) -> float:
        return left + pw * min(max(x / x_max, 0.0), 1.0)

    def sy(y: float) -> float:
        return top + ph * (1 - min(max(y / y_max, 0.0), 1.0))

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{html.escape(title)}">',
        f'<text x="{left}" y="16" font-weight="600">{html.escape(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#d0d7de"/>',
    ]
    for i in range(5):
        fx, fy = x_max * i / 4, y_max * i / 4
        parts.append(f'<line x1="{sx(fx):.1f}" y1="{top}" x2="{sx(fx):.1f}" y2="{top + ph}" stroke="#eaeef2"/>')
        parts.append(f'<line x1="{left}" y1="{sy(fy):.1f}" x2="{left + pw}" y2="{sy(fy):.1f}" stroke="#eaeef2"/>')
        parts.append(f'<text x="{sx(fx):.1f}" y="{top + ph + 14}" text-anchor="middle">{fx:g}</text>')
        parts.append(f'<text x="{left - 4}" y="{sy(fy) + 4:.1f}" text-anchor="end">{fy:.3g}</text>')
    parts.append(f'<text x="{left + pw / 2}" y="{height - 6}" text-anchor="middle">{html.escape(x_label)}</text>')
    parts.append(
        f'<text x="12" y="{top + ph / 2}" text-anchor="middle" transform="rotate(-90 12 {top + ph / 2})">'
        f"{html.escape(y_label)}</text>"
    )
    for k, s in enumerate(series):
        xs, ys = s["x"], s["y"]
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in zip(xs, ys) if y is not None and math.isfinite(y))
        if not coords:
            continue
        dash = ' stroke-dasharray="5,4"' if s.get("dash") else ""
        parts.append(f'<polyline points="{coords}" fill="none" stroke="{s["color"]}" stroke-width="2"{dash}/>')
        ly = top + 12 + 14 * k if legend[0] == "t" else top + ph - 8 - 14 * (len(series) - 1 - k)
        lx = left + 8 if legend[1] == "l" else left + pw - 110
        parts.append(
            f'<line x1="{lx}" y1="{ly - 4}" x2="{lx + 16}" y2="{ly - 4}" stroke="{s["color"]}" stroke-width="2"{dash}/>'
        )
        parts.append(f'<text x="{lx + 20}" y="{ly}">{html.escape(s["name"])}</text>')
    for p in points:
        parts.append(
            f'<circle cx="{sx(p["x"]):.1f}" cy="{sy(p["y"]):.1f}" r="{p.get("r", 3):.1f}" '
            f'fill="{p.get("color", _COLORS["model"])}" fill-opacity="0.8"/>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _svg_bars(title: str, items: Sequence[tuple[str, float]], width: int = 420, bar: int = 15) -> str:
    left, top = 210, 26
    height = top + bar * len(items) + 10
    vmax = max((v for _, v in items), default=1.0) or 1.0
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{html.escape(title)}">',
        f'<text x="4" y="16" font-weight="600">{html.escape(title)}</text>',
    ]
    for i, (name, value) in enumerate(items):
        y = top + i * bar
        w = (width - left - 50) * value / vmax
        parts.append(f'<text x="{left - 4}" y="{y + bar - 4}" text-anchor="end">{html.escape(name[:34])}</text>')
        parts.append(f'<rect x="{left}" y="{y + 2}" width="{w:.1f}" height="{bar - 4}" fill="{_COLORS["model"]}"/>')
        parts.append(f'<text x="{left + w + 4:.1f}" y="{y + bar - 4}">{value:.1%}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _lift_series(metrics: Mapping[str, Any]) -> tuple[list[float], list[float]]:
    curve = metrics.get("gain_curve") or {}
    xs, ys = [], []
    for share, captured in zip(curve.get("population", []), curve.get("captured", [])):
        if share > 0:
            xs.append(share)
            ys.append(captured / share)
    return xs, ys


def segment_section(metrics: Mapping[str, Any]) -> str:
    """One segment's part of the page: figures, alarms, gain / lift / calibration / importance charts."""
    name = html.escape(str(metrics.get("segment")))
    head = [f'<h2 id="{name}">{name} <span class="muted">({html.escape(str(metrics.get("kind")))})</span></h2>']
    status = metrics.get("status")
    window = (
        f"train cut-off {_fmt(metrics.get('train_as_of'))}, out-of-time evaluation cut-off "
        f"{_fmt(metrics.get('eval_as_of'))}, label horizon {_fmt(metrics.get('horizon_days'))} days"
    )
    head.append(f'<p class="muted">{window}</p>')
    if status != "trained":
        head.append(f'<p class="alarm">skipped: {html.escape(str(metrics.get("reason")))}</p>')
        sizes = metrics.get("sizes") or {}
        if sizes:
            head.append(
                "<table>"
                + "".join(f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in sizes.items())
                + "</table>"
            )
        return "".join(head)
    model, rfm = metrics.get("model") or {}, metrics.get("rfm_baseline") or {}
    rows = [
        ("ROC-AUC", "roc_auc"),
        ("PR-AUC", "pr_auc"),
        ("base rate", "base_rate"),
        ("Brier score", "brier"),
        ("mean predicted", "mean_predicted"),
    ]
    table = ["<table><tr><th>out of time</th><th>model</th><th>RFM baseline</th></tr>"]
    for label, key in rows:
        table.append(f"<tr><td>{label}</td><td>{_fmt(model.get(key))}</td><td>{_fmt(rfm.get(key))}</td></tr>")
    for f in TOP_FRACTIONS:
        k = pct_label(f)
        table.append(
            f"<tr><td>lift / capture top {k}</td><td>{_fmt((model.get('lift') or {}).get(k), 2)} / "
            f"{_fmt((model.get('capture') or {}).get(k))}</td><td>{_fmt((rfm.get('lift') or {}).get(k), 2)} / "
            f"{_fmt((rfm.get('capture') or {}).get(k))}</td></tr>"
        )
    table.append("</table>")
    sizes = metrics.get("sizes") or {}
    size_table = (
        "<table><tr><th>rows</th><th>all</th><th>positives</th></tr>"
        + "".join(
            f"<tr><td>{part}</td><td>{_fmt(sizes.get(part + '_rows'))}</td>"
            f"<td>{_fmt(sizes.get(part + '_positives'))}</td></tr>"
            for part in ("train", "valid", "eval")
        )
        + "</table>"
    )
    leakage = metrics.get("leakage") or {}
    alarms = []
    candidates = (metrics.get("champion") or {}).get("candidates") or {}
    for name, entry in candidates.items():
        chance = entry.get("chance") or {}
        alarms.append(
            f'<li class="{"ok" if chance.get("better") else "alarm"}">{html.escape(name)}: out-of-time PR-AUC '
            f"{_fmt(entry.get('pr_auc'))} against {_fmt(chance.get('null_mean'))} ± {_fmt(chance.get('null_std'), 3)} "
            f"with the evaluation labels permuted (z {_fmt(chance.get('z'), 1)})</li>"
        )
    flagged = leakage.get("flagged") or []
    label_like = [f for f in flagged if f.get("kind", "label_auc") == "label_auc"]
    peeking = [f for f in flagged if f.get("kind") == "future_over_past"]
    if label_like:
        listed = ", ".join(f"{html.escape(f['feature'])} ({f['auc']:.3f})" for f in label_like[:10])
        alarms.append(
            f'<li class="alarm">possible leakage, single-feature AUC beyond {leakage.get("threshold")}: {listed}</li>'
        )
    if peeking:
        listed = ", ".join(
            f"{html.escape(f['feature'])} (AUC {f['auc']:.3f} after the cut-off vs {f['past_auc']:.3f} before, "
            f"z {f['z']})"
            for f in peeking[:10]
        )
        needed = (leakage.get("future_over_past") or {}).get("z_needed")
        alarms.append(
            '<li class="alarm">possible leakage, predicts the label after the cut-off better than the one before '
            f"(z above {needed} against the segment's other features): {listed}</li>"
        )
    if not flagged:
        top = (leakage.get("top_features") or [{}])[0]
        alarms.append(
            f'<li class="ok">no single feature beyond AUC {leakage.get("threshold")} '
            f"(strongest: {html.escape(str(top.get('feature', '–')))} {_fmt(top.get('auc'))})</li>"
        )
    beats = metrics.get("model_beats_rfm")
    alarms.append(
        f'<li class="{"ok" if beats else "alarm"}">model {"beats" if beats else "does not beat"} '
        "the RFM baseline on PR-AUC</li>"
    )

    gm, gr = model.get("gain_curve") or {}, rfm.get("gain_curve") or {}
    gain = _svg_chart(
        "Cumulative gain",
        [
            {"name": "model", "x": gm.get("population", []), "y": gm.get("captured", []), "color": _COLORS["model"]},
            {
                "name": "RFM baseline",
                "x": gr.get("population", []),
                "y": gr.get("captured", []),
                "color": _COLORS["rfm"],
            },
            {"name": "random", "x": [0, 1], "y": [0, 1], "color": _COLORS["random"], "dash": True},
        ],
        x_label="share of population targeted",
        y_label="share of positives captured",
    )
    lx, ly = _lift_series(model)
    rx, ry = _lift_series(rfm)
    lift_max = max([1.0] + [v for v in ly + ry if v is not None and math.isfinite(v)])
    lift = _svg_chart(
        "Lift",
        [
            {"name": "model", "x": lx, "y": ly, "color": _COLORS["model"]},
            {"name": "RFM baseline", "x": rx, "y": ry, "color": _COLORS["rfm"]},
            {"name": "random", "x": [0, 1], "y": [1, 1], "color": _COLORS["random"], "dash": True},
        ],
        x_label="share of population targeted",
        y_label="lift",
        y_max=math.ceil(lift_max),
        legend="tr",
    )
    bins = model.get("reliability") or []
    top_p = max([0.05] + [max(b["mean_predicted"], b["observed"]) for b in bins])
    top_p = min(1.0, math.ceil(top_p * 10) / 10)
    biggest = max([b["rows"] for b in bins] or [1])
    calibration = _svg_chart(
        "Calibration (reliability)",
        [
            {
                "name": "model",
                "x": [b["mean_predicted"] for b in bins],
                "y": [b["observed"] for b in bins],
                "color": _COLORS["model"],
            },
            {"name": "perfect", "x": [0, top_p], "y": [0, top_p], "color": _COLORS["random"], "dash": True},
        ],
        x_label="mean predicted probability",
        y_label="observed rate",
        x_max=top_p,
        y_max=top_p,
        points=[
            {"x": b["mean_predicted"], "y": b["observed"], "r": 2 + 5 * math.sqrt(b["rows"] / biggest)} for b in bins
        ],
    )
    importance = metrics.get("importance") or []
    bars = _svg_bars("Gain importance (share of total gain)", [(i["feature"], i["share"]) for i in importance[:15]])
    return (
        "".join(head)
        + "".join(table)
        + size_table
        + "<ul>"
        + "".join(alarms)
        + "</ul>"
        + (f'<div class="charts">{gain}{lift}{calibration}{bars}</div>')
    )


def _segment_extras(
    segment: str,
    cards: Mapping[str, Mapping[str, Any]] | None,
    distributions: Mapping[str, Sequence[int]] | None,
    partner_sizes: Mapping[str, Mapping[str, Mapping[str, int]]] | None,
) -> str:
    out = []
    if cards is not None:
        out.append(champion_section(cards.get(segment)))
    if distributions and distributions.get(segment):
        out.append(f'<div class="charts">{distribution_chart(distributions[segment])}</div>')
    if partner_sizes is not None:
        out.append(partner_table(partner_sizes.get(segment) or {}))
    return "".join(out)


_CANDIDATE_FIGURES = {"pr_auc": "PR-AUC", "roc_auc": "ROC-AUC"}


def champion_section(card: Mapping[str, Any] | None) -> str:
    """The champion decision of a segment's model card (`champion` block): every candidate's out-of-time
    figures, which one scores and exports, and why; a card without the block says so."""
    champion = (card or {}).get("champion")
    if not champion:
        return '<p class="muted">champion: no decision recorded in the model card.</p>'
    primary = str(champion.get("primary_metric") or "primary metric")
    primary_label = html.escape(_CANDIDATE_FIGURES.get(primary, primary))
    chosen = champion.get("chosen")
    verdict = (
        f'<p class="ok">champion: <b>{_fmt(chosen)}</b> ({primary_label}, margin {_fmt(champion.get("margin"))})'
        if chosen
        else '<p class="alarm">rejected: no candidate may score or export this segment'
    )
    # the primary metric first (marked), then the other figures the card holds: never one metric twice
    columns = [primary] + [key for key in _CANDIDATE_FIGURES if key != primary]
    head = "".join(
        f"<th>{html.escape(_CANDIDATE_FIGURES.get(key, key))}{' (primary)' if key == primary else ''}</th>"
        for key in columns
    )
    rows = [f"<table><tr><th>candidate</th>{head}<th>alarms</th></tr>"]
    for name, figures in (champion.get("candidates") or {}).items():
        alarms = ", ".join(html.escape(str(a)) for a in figures.get("alarms") or []) or "–"
        mark = " ✔" if name == chosen else ""
        cells = "".join(f"<td>{_fmt(figures.get(key))}</td>" for key in columns)
        rows.append(
            f"<tr><td>{html.escape(name)}{mark}</td>{cells}"
            f'<td class="{"alarm" if figures.get("alarms") else "ok"}">{alarms}</td></tr>'
        )
    rows.append("</table>")
    fits = champion.get("fits") or {}
    fitted = ", ".join(f"{html.escape(k)} fit as of {_fmt((v or {}).get('as_of'))}" for k, v in fits.items())
    return (
        verdict
        + f" – {html.escape(str(champion.get('reason') or ''))}</p>"
        + "".join(rows)
        + (f'<p class="muted">{fitted}</p>' if fitted else "")
    )


def distribution_chart(counts: Sequence[int]) -> str:
    """Scored personas per equal-width score bin over [0, 1], as shares (inline SVG bars)."""
    total = sum(counts) or 1
    width = 1.0 / max(len(counts), 1)
    items = [(f"{i * width:.2f} – {(i + 1) * width:.2f}", c / total) for i, c in enumerate(counts)]
    return _svg_bars("Score distribution (share of scored personas)", items)


def partner_table(sizes: Mapping[str, Mapping[str, int]]) -> str:
    """Members and scored personas per partner (a persona counts at every partner that has seen it)."""
    if not sizes:
        return '<p class="muted">segment size per partner: nobody scored.</p>'
    rows = ["<table><tr><th>partner</th><th>scored</th><th>members</th></tr>"]
    for partner, n in sorted(sizes.items()):
        rows.append(
            f"<tr><td>{html.escape(partner)}</td><td>{_fmt(n.get('scored'))}</td><td>{_fmt(n.get('members'))}</td></tr>"
        )
    rows.append("</table>")
    return "<h3>Segment size per partner</h3>" + "".join(rows)


def run_section(stats: Mapping[str, Any]) -> str:
    """The run's identity figures: personas, identifiers per persona, identifiers refused by each junk rule."""
    personas = stats.get("personas") or 0
    linked = stats.get("identifiers_linked") or 0
    per_type = stats.get("identifiers_by_type") or {}
    sizes = stats.get("identifiers_per_persona") or {}
    refused = stats.get("refused_by_rule") or {}
    out = [
        '<h2 id="run">Run: personas and identifiers</h2>',
        f"<table><tr><th>personas</th><td>{_fmt(personas)}</td></tr>"
        f"<tr><th>identifiers linked</th><td>{_fmt(linked)}</td></tr>"
        f"<tr><th>identifiers per persona (mean)</th><td>{_fmt(linked / personas if personas else None, 2)}</td></tr>"
        + "".join(f"<tr><th>{html.escape(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in sorted(per_type.items()))
        + "</table>",
        "<h3>Identifiers refused by each junk rule</h3>",
        "<table><tr><th>rule</th><th>identifiers</th></tr>"
        + "".join(f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in sorted(refused.items()))
        + ("" if refused else '<tr><td colspan="2">none</td></tr>')
        + "</table>",
    ]
    total = sum(sizes.values()) or 1
    out.append(
        '<div class="charts">'
        + _svg_bars("Personas by identifiers they hold (share)", [(k, v / total) for k, v in sizes.items()])
        + "</div>"
    )
    return "".join(out)


def drift_section(drift: Mapping[str, Any]) -> str:
    """PSI against the previous run: alarms first, each segment's scores, the most shifted features."""
    out = ['<h2 id="drift">Drift against the previous run</h2>']
    previous = drift.get("previous_run")
    if not previous or drift.get("note"):
        return out[0] + f'<p class="muted">{html.escape(str(drift.get("note") or "no previous run"))}</p>'
    out.append(
        f'<p class="muted">run {html.escape(str(previous))} (features as of {_fmt(drift.get("previous_as_of"))}); '
        f"PSI above {_fmt(drift.get('threshold'), 2)} and above its sampling noise floor is an alarm; "
        f"{_fmt(drift.get('features_compared'))} features compared; a segment's scores only when both runs' "
        "models are comparable (same procedure, features and configuration)</p>"
    )
    alarms = drift.get("alarms") or []
    out.append(
        "<ul>" + "".join(f'<li class="alarm">{html.escape(a)}</li>' for a in alarms) + "</ul>"
        if alarms
        else '<p class="ok">no feature or score distribution moved past the threshold</p>'
    )
    scores = drift.get("scores") or {}
    floors = drift.get("score_noise_floors") or {}
    other_model = set(drift.get("scores_not_comparable") or [])
    out.append(
        "<table><tr><th>segment scores</th><th>PSI</th><th>noise floor</th><th></th></tr>"
        + "".join(
            f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td><td>{_fmt(floors.get(k))}</td>"
            f"<td>{'model changed: reported, not an alarm' if k in other_model else ''}</td></tr>"
            for k, v in sorted(scores.items())
        )
        + "</table>"
    )
    top = sorted((drift.get("features") or {}).items(), key=lambda kv: -kv[1])[:15]
    out.append(
        "<table><tr><th>feature (largest 15)</th><th>PSI</th></tr>"
        + "".join(f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in top)
        + "</table>"
    )
    return "".join(out)


def render_page(
    title: str,
    sections: Sequence[Mapping[str, Any]],
    scoring: Mapping[str, Mapping[str, int]] | None = None,
    *,
    cards: Mapping[str, Mapping[str, Any]] | None = None,
    distributions: Mapping[str, Sequence[int]] | None = None,
    partner_sizes: Mapping[str, Mapping[str, Mapping[str, int]]] | None = None,
    run_stats: Mapping[str, Any] | None = None,
    drift: Mapping[str, Any] | None = None,
) -> str:
    """A complete, self-contained HTML page for one or more segments' metrics.

    `scoring` (segment -> {"scored", "members"}) adds who was scored and who is a member to the summary; a run's
    page also gets, per segment, the champion decision of its model card (`cards`), its score distribution
    (`distributions`, bins over [0, 1]) and its size per partner (`partner_sizes`), and a run section with the
    identity figures (`run_stats`, `run_section`) and drift against the previous run (`drift`, `drift_section`).
    """
    counts = ["scored", "members"] if scoring is not None else []
    summary = [
        "<table><tr><th>segment</th><th>status</th><th>AUC</th><th>RFM AUC</th><th>PR-AUC</th>"
        "<th>base rate</th><th>lift top 10%</th>" + "".join(f"<th>{c}</th>" for c in counts) + "<th>alarms</th></tr>"
    ]
    for m in sections:
        model, rfm = m.get("model") or {}, m.get("rfm_baseline") or {}
        name = html.escape(str(m.get("segment")))
        alarms = ", ".join(html.escape(a) for a in m.get("alarms") or []) or "–"
        status = m.get("status")
        scored = (scoring or {}).get(str(m.get("segment"))) or {}
        summary.append(
            f'<tr><td><a href="#{name}">{name}</a></td><td>{html.escape(str(status))}</td>'
            f"<td>{_fmt(model.get('roc_auc'))}</td><td>{_fmt(rfm.get('roc_auc'))}</td><td>{_fmt(model.get('pr_auc'))}</td>"
            f"<td>{_fmt(model.get('base_rate'))}</td><td>{_fmt((model.get('lift') or {}).get('10%'), 2)}</td>"
            + "".join(f"<td>{_fmt(scored.get(c))}</td>" for c in counts)
            + f'<td class="{"alarm" if m.get("alarms") else "ok"}">{alarms}</td></tr>'
        )
    summary.append("</table>")
    body = "".join(
        segment_section(m) + _segment_extras(str(m.get("segment")), cards, distributions, partner_sizes)
        for m in sections
    )
    if run_stats is not None:
        body += run_section(run_stats)
    if drift is not None:
        body += drift_section(drift)
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
        '<p class="muted">Out-of-time evaluation: features before the evaluation cut-off, labels in the window '
        "after it; the model was trained at an earlier cut-off.</p>" + "".join(summary) + body + "</body></html>"
    )
