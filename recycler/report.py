"""A self-contained HTML report of a study: the front with its baselines, hypervolume by trial,
each front member's weights with held-in and held-out scores, and a few example answers of one
front member beside a baseline's. Plotly's JavaScript is inlined, so the file works offline."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from recycler.compare import candidate_name, compare, default_beside
from recycler.files import write_text_atomic
from recycler.front import front_records, front_table, hypervolume_history
from recycler.ledger import examples_spent
from recycler.records import FrontEntry, entry_key
from recycler.selection import most_balanced, narrow
from recycler.study import StudyInfo, load_study

EXAMPLES_SHOWN = 3  # answers per generation task in the report

_STYLE = {
    "merge": dict(color="#9aa5b1", size=7, symbol="circle"),
    "front": dict(color="#d1495b", size=11, symbol="diamond"),
    "baseline": dict(color="#00798c", size=11, symbol="square"),
    "screened": dict(color="#d9d9d9", size=6, symbol="x"),
}


def _kind(r: dict) -> str:
    if r.get("screened_out"):
        return "screened"
    return "baseline" if r["baseline"] else ("front" if r["on_front"] else "merge")


def _hover(r: dict) -> str:
    weights = ", ".join(f"{k}={v:.3f}" for k, v in r["weights"].items())
    settings = ", ".join(f"{k}={v}" for k, v in r["settings"].items())
    scores = ", ".join(f"{k}={v:.3f}" for k, v in r["scores"].items())
    where = f"trial {r['trial']}" if r["trial"] is not None else "scored beside the search"
    if r.get("dominated_by") is not None:
        where += f" (dropped at screening stage {r['dropped_at_stage']}: trial {r['dominated_by']} dominated it)"
    return f"{where} {r['baseline_name'] or ''} ({r['method']}{', ' + settings if settings else ''})<br>{weights}<br>{scores}"


def front_figure(records: list[dict], objectives: list[str]) -> go.Figure:
    """A scatter for two objectives, a scatter matrix for more; baselines and front marked."""
    figure = go.Figure()
    for kind in ("screened", "merge", "front", "baseline"):
        group = [r for r in records if _kind(r) == kind]
        if not group:
            continue
        label = {"screened": "dropped at screening (subset scores)", "merge": "dominated merges", "front": "Pareto front",
                 "baseline": "baselines"}[kind]
        text = [_hover(r) for r in group]
        if len(objectives) == 2:
            figure.add_trace(go.Scatter(
                x=[r["scores"][objectives[0]] for r in group], y=[r["scores"][objectives[1]] for r in group],
                mode="markers+text" if kind == "baseline" else "markers", name=label, marker=_STYLE[kind],
                text=[r["baseline_name"] or "" for r in group] if kind == "baseline" else None,
                textposition="top center", hovertext=text, hoverinfo="text", customdata=[entry_key(r) for r in group],
            ))
        else:
            figure.add_trace(go.Splom(
                dimensions=[{"label": o, "values": [r["scores"][o] for r in group]} for o in objectives],
                name=label, marker=_STYLE[kind], hovertext=text, hoverinfo="text", customdata=[entry_key(r) for r in group],
                diagonal_visible=False,
            ))
    if len(objectives) == 2:
        figure.update_layout(xaxis_title=objectives[0], yaxis_title=objectives[1])
    figure.update_layout(title="Pareto front of held-in objectives", height=560, template="plotly_white")
    return figure


def tradeoff_figure(records: list[dict], objectives: list[str], held_out: list[str]) -> go.Figure:
    """Parallel coordinates, one line per front member and baseline, an axis per task (held-in, then
    held-out): how a many-objective front trades its tasks off. Baselines are drawn in teal, front
    members in red; drag along an axis to keep the lines within a range."""
    shown = [r for r in records if r["on_front"] or r["baseline"]]
    axes = [{"label": task, "values": [r["scores"][task] for r in shown]} for task in objectives]
    axes += [{"label": f"{task} (held-out)", "values": [r["scores"][task] for r in shown]} for task in held_out]
    colors = [0.0 if r["baseline"] else 1.0 for r in shown]
    figure = go.Figure(go.Parcoords(
        dimensions=axes,
        line={"color": colors, "colorscale": [[0, _STYLE["baseline"]["color"]], [1, _STYLE["front"]["color"]]], "cmin": 0, "cmax": 1},
    ))
    figure.update_layout(title="Trade-offs of the front (red) and the baselines (teal), task by task", height=460,
                         template="plotly_white")
    return figure


def hypervolume_figure(history: list[tuple[int, float]]) -> go.Figure:
    figure = make_subplots()
    figure.add_trace(go.Scatter(x=[n for n, _ in history], y=[v for _, v in history], mode="lines+markers", name="hypervolume"))
    figure.update_layout(title="Hypervolume over the worst baseline, by trial", xaxis_title="trial", yaxis_title="hypervolume",
                         height=360, template="plotly_white")
    return figure


def render_report(study_dir: Path, *, where: list[str] = (), preference: str | None = None, limit: int | None = None) -> str:
    """The report's HTML; `where`, `preference` and `limit` narrow the front members its table and
    trade-off plot show, as they narrow `recycler front` (the scatter keeps every trial)."""
    study, info = load_study(study_dir)
    records = front_records(study, info, include_all=True)
    shown = narrow([r for r in records if r["on_front"] or r["baseline"]], info, where=list(where), preference=preference,
                   limit=limit)
    table = front_table(shown, info, wide=True).to_html(index=False, float_format=lambda v: f"{v:.3f}", border=0, classes="front")
    parts = [
        front_figure(records, info.objectives).to_html(full_html=False, include_plotlyjs=True, div_id="front-plot"),
        tradeoff_figure(shown, info.objectives, info.held_out).to_html(full_html=False, include_plotlyjs=False,
                                                                       div_id="tradeoff-plot"),
        hypervolume_figure(hypervolume_history(study, info)).to_html(full_html=False, include_plotlyjs=False, div_id="hv-plot"),
    ]
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>recycler: {html.escape(info.name)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}} table.front{{border-collapse:collapse;font-size:13px}}
table.front td,table.front th{{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}}
table.examples{{border-collapse:collapse;font-size:13px}} table.examples td,table.examples th{{padding:3px 8px;border-bottom:1px solid #ddd;vertical-align:top}}
td.text{{white-space:pre-wrap;font-family:monospace;max-width:32em}}</style></head>
<body><h1>Study {html.escape(info.name)}</h1>
<p>Pool fingerprint <code>{info.fingerprint[:16]}</code>; {sum(not r.get("screened_out") for r in records)} completed trials; objectives (held-in):
{", ".join(map(html.escape, info.objectives))}; held-out: {", ".join(map(html.escape, info.held_out)) or "none"}.
{_cost_note(study)}</p>
{parts[0]}
{_narrowing_note(where, preference, limit)}
{parts[1]}
{parts[2]}
<h2>Front members and baselines</h2>
<p>Weights per checkpoint (<code>w:</code>), held-in scores, and held-out scores (never optimized). <code>*</code> marks the front.</p>
{table}
{_examples_section(study_dir, records, shown, info, preference)}
</body></html>
"""


def _examples_section(study_dir: Path, records: list[FrontEntry], shown: list[FrontEntry], info: StudyInfo,
                      preference: str | None) -> str:
    """A few answers per generation task of one front member (the first by the preference, else the
    most balanced) beside the best other baseline's; nothing for a study that kept no examples."""
    members = [r for r in shown if r["on_front"]]
    if not members:
        return ""
    chosen = members[0] if preference else most_balanced(members, info)
    beside = default_beside(study_dir, records, info, chosen)
    comparison = compare(study_dir, records, chosen, beside, EXAMPLES_SHOWN)
    if not comparison["tasks"]:
        return ""
    name = candidate_name(chosen)
    why = f"the first ranked by {html.escape(preference)}" if preference else "the most balanced front member"
    against = f"baseline {html.escape(beside)}" if beside else "no baseline (none kept its examples)"
    parts = [(f'<h2 id="examples">Example answers</h2>\n<p>{html.escape(name)}, {why}, beside {against}: '
              f"up to {EXAMPLES_SHOWN} examples per generation task, those where the answers differ first. Each "
              "answer is what the metric compared (after the task's filters), with its score.</p>")]
    for task, comparison_task in comparison["tasks"].items():
        paired = comparison_task["differ"] is not None
        title = html.escape(task) + (f": {comparison_task['differ']} of {comparison_task['total']} answers differ" if paired else "")
        columns = ["#", "prompt", "target", name] + ([beside] if paired else [])
        rows = []
        for row in comparison_task["examples"]:
            cells = [str(row["index"]), html.escape(row["prompt"]), html.escape(row["target"]),
                     f"{html.escape(row['answer'])} ({row['score']:.3g})"]
            if paired:
                cells.append(f"{html.escape(row['beside_answer'])} ({row['beside_score']:.3g})")
            rows.append("<tr>" + "".join(f'<td class="text">{cell}</td>' for cell in cells) + "</tr>")
        head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
        parts.append(f'<h3>{title}</h3>\n<table class="examples"><tr>{head}</tr>{"".join(rows)}</table>')
    return "\n".join(parts)


def _cost_note(study) -> str:
    """Examples scored in all (and the token positions run, where counted), and how many examples
    screening saved (a dropped trial skipped the rest of its examples)."""
    spent = examples_spent(study)
    if spent is None:
        return ""
    note = f"{spent.scored:,} examples scored"
    if spent.forward_tokens is not None:
        note += f" ({spent.forward_tokens:,} forward tokens)"
    if spent.dropped:
        note += (f"; {spent.dropped} trials dropped at screening saved {spent.saved:,} "
                 f"({spent.saved / (spent.scored + spent.saved):.0%})")
    return note + "."


def _narrowing_note(where: list[str], preference: str | None, limit: int | None) -> str:
    """Says which front members the trade-offs and the table keep, when they do not keep them all."""
    parts = [f"meeting {html.escape(' and '.join(where))}"] if where else []
    parts += [f"ranked by {html.escape(preference)}"] if preference else []
    parts += [f"at most {limit}"] if limit is not None else []
    if not parts:
        return ""
    return f'<p id="narrowing">Front members shown below: {", ".join(parts)} (baselines always shown).</p>'


def write_report(study_dir: Path, out: Path | None = None, **narrowing: Any) -> Path:
    """Write the report (default STUDY/report.html) atomically; `narrowing` as for render_report."""
    out = Path(out or Path(study_dir) / "report.html")
    write_text_atomic(out, render_report(Path(study_dir), **narrowing))
    return out
