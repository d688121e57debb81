"""The run report's per-segment champion decision, score distribution and partner sizes, and the run section."""

from __future__ import annotations

import re

from jobs.model.report import champion_section, render_page

METRICS = {"segment": "buyers", "kind": "ecommerce_buyers", "status": "trained", "model": {}, "rfm_baseline": {}}
CARD = {
    "champion": {
        "primary_metric": "pr_auc",
        "margin": 0.02,
        "chosen": "rfm",
        "reason": "rfm beats xgboost by 0.031 PR-AUC",
        "candidates": {
            "xgboost": {"pr_auc": 0.31, "roc_auc": 0.80, "alarms": []},
            "rfm": {"pr_auc": 0.341, "roc_auc": 0.82, "alarms": []},
        },
        "fits": {"evaluation": {"as_of": "2026-01-01"}, "production": {"as_of": "2026-02-01"}},
    }
}
RUN = {
    "personas": 100,
    "identifiers_linked": 250,
    "identifiers_by_type": {"devices": 120, "emails": 80},
    "identifiers_per_persona": {"1": 30, "2": 50, "3": 20, "4": 0, "5-9": 0, "10+": 0},
    "refused_by_rule": {"blocklist": 7, "fan_out": 3},
}


def page(**kwargs) -> str:
    return render_page("run r", [METRICS], scoring={"buyers": {"scored": 10, "members": 1}}, **kwargs)


def test_champion_decision_candidates_and_fits():
    text = champion_section(CARD)
    assert "champion: <b>rfm</b>" in text and "rfm beats xgboost" in text
    assert re.search(r"<td>rfm ✔</td><td>0\.341</td>", text) and "<td>xgboost</td><td>0.310</td>" in text
    assert "production fit as of 2026-02-01" in text
    # the primary metric is one column (derived from primary_metric), not a PR-AUC column beside a pr_auc one
    assert text.count("<th>PR-AUC") == 1 and "<th>PR-AUC (primary)</th><th>ROC-AUC</th>" in text


def test_a_rejected_segment_and_a_card_without_a_decision():
    rejected = {"champion": {**CARD["champion"], "chosen": None, "reason": "every candidate carries an alarm"}}
    assert 'class="alarm">rejected' in champion_section(rejected)
    assert "no decision recorded" in champion_section({}) and "no decision recorded" in champion_section(None)


def test_run_page_has_distribution_partner_sizes_and_run_section_self_contained():
    html = page(
        cards={"buyers": CARD},
        distributions={"buyers": [5, 3, 2] + [0] * 17},
        partner_sizes={"buyers": {"p1": {"scored": 8, "members": 1}, "p2": {"scored": 4, "members": 0}}},
        run_stats=RUN,
    )
    assert "Score distribution" in html and "50.0%" in html  # 5 of 10 in the first bin
    assert "<tr><td>p1</td><td>8</td><td>1</td></tr>" in html
    assert "<th>identifiers per persona (mean)</th><td>2.50</td>" in html
    assert "<tr><td>blocklist</td><td>7</td></tr>" in html and "<tr><td>fan_out</td><td>3</td></tr>" in html
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "") and "<script" not in html


def test_without_run_figures_the_page_is_as_before():
    assert page() == render_page("run r", [METRICS], scoring={"buyers": {"scored": 10, "members": 1}})
    assert "Score distribution" not in page() and 'id="run"' not in page()


def test_run_figures_on_ray(ray_cluster):
    """Partner sizes from members x the partners that saw them, identifier counts, refusals per rule: per-block
    partial counts over several blocks, equal to counting by hand."""
    import pyarrow as pa
    import ray.data

    from jobs.identity.junk import AUDIT_SCHEMA
    from jobs.identity.personas import PERSONA_SCHEMA
    from jobs.model.run_figures import partner_sizes, persona_figures, refused_by_rule

    people = [
        {"persona_id": "a", "n_devices": 2, "n_emails": 1, "partners": ["p1", "p2"]},
        {"persona_id": "b", "n_devices": 1, "partners": ["p1"]},
        {"persona_id": "c", "n_devices": 6, "n_emails": 5, "n_phones": 1, "partners": ["p2"]},
    ]
    personas = pa.Table.from_pylist(
        [{**{n: 0 for n in ("n_emails", "n_phones", "n_customers", "n_subscribers")}, **p} for p in people],
        schema=PERSONA_SCHEMA,
    )
    scores = pa.table(
        {"persona_id": ["a", "b", "c", "a"], "segment": ["s", "s", "s", "t"], "member": [True, False, True, False]}
    )
    blocks = lambda t: ray.data.from_arrow([t.slice(i, 1) for i in range(t.num_rows)])  # noqa: E731
    assert partner_sizes(blocks(scores), blocks(personas), 2) == {
        "s": {"p1": {"scored": 2, "members": 1}, "p2": {"scored": 2, "members": 2}},
        "t": {"p1": {"scored": 1, "members": 0}, "p2": {"scored": 1, "members": 0}},
    }
    figures = persona_figures(blocks(personas))
    assert figures["personas"] == 3
    assert figures["identifiers_by_type"] == {"devices": 9, "emails": 6, "phones": 1, "customers": 0, "subscribers": 0}
    assert figures["identifiers_per_persona"] == {"1": 1, "2": 0, "3": 1, "4": 0, "5-9": 0, "10+": 1}
    audit = pa.Table.from_pylist(
        [{"rule": "blocklist"}, {"rule": "fan_out"}, {"rule": "blocklist"}], schema=AUDIT_SCHEMA
    )
    assert refused_by_rule(blocks(audit)) == {"blocklist": 2, "fan_out": 1}
