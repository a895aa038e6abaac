"""The web page: HTML shells with no data in them. Their script takes the token from the URL
fragment (`#token=...`, which browsers never send to a server), keeps it in sessionStorage, and
calls the API with it as a bearer header. Plotly's JavaScript is served by the same process, so
the page works offline."""

from __future__ import annotations

import functools
import html
import json

_STYLE = """body{font-family:sans-serif;margin:1.5em;max-width:1250px}
table{border-collapse:collapse;font-size:13px}td,th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}
th.l,td.l{text-align:left}.grid{display:grid;grid-template-columns:2fr 1fr;gap:1em}
#detail{border:1px solid #ccc;padding:.8em;font-size:13px;min-height:8em}.err{color:#b00}.muted{color:#777}
#detail-examples td{text-align:left;vertical-align:top;white-space:pre-wrap;font-family:monospace}"""

_COMMON = """
const TOKEN_KEY = 'recycler-token';
(function takeToken() {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) { sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1])); history.replaceState(null, '', location.pathname + location.search); }
})();
async function api(path, options = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) throw new Error('no token: open the link printed by `recycler serve` (it ends in #token=...)');
  const headers = Object.assign({'Authorization': 'Bearer ' + token}, options.body ? {'Content-Type': 'application/json'} : {});
  const response = await fetch('/api' + path, Object.assign({}, options, {headers}));
  const body = await response.json();
  if (!response.ok) throw new Error(body.detail || response.statusText);
  return body;
}
function el(tag, text, cls) { const e = document.createElement(tag); if (text !== undefined) e.textContent = text; if (cls) e.className = cls; return e; }
function fmt(v) { return typeof v === 'number' ? v.toFixed(3) : (v ?? ''); }
function showError(e) { const box = document.getElementById('error'); box.textContent = e.message; }
"""

_INDEX_SCRIPT = """
async function refresh() {
  try {
    const studies = await api('/studies');
    const body = document.querySelector('#studies tbody');
    body.replaceChildren();
    for (const s of studies) {
      const row = el('tr'); const link = el('a', s.name); link.href = '/studies/' + encodeURIComponent(s.id);
      const name = el('td', undefined, 'l'); name.append(link); row.append(name, el('td', s.id, 'l'), el('td', s.state, 'l'),
        el('td', s.finished + ' / ' + s.budget), el('td', s.error || '', 'l err'));
      body.append(row);
    }
    document.getElementById('error').textContent = '';
  } catch (e) { showError(e); }
}
refresh(); setInterval(refresh, 3000);
"""

_STUDY_SCRIPT = """
let trialsDoc = null;
function kind(r) { return r.baseline ? 'baseline ' + r.baseline_name : (r.on_front ? 'front' : 'merge'); }
function key(r) { return r.trial === null ? r.baseline_name : r.trial; }
function showTrial(k) {
  const r = trialsDoc.trials.find(t => key(t) === k); if (!r) return;
  const title = r.trial === null ? 'Baseline ' + r.baseline_name + ' (' + r.method + ', scored beside the search)' : 'Trial ' + r.trial + ' (' + kind(r) + ')';
  const box = document.getElementById('detail'); box.replaceChildren(el('h3', title));
  const table = el('table'); table.id = 'detail-table';
  const add = (k, v, note) => { const row = el('tr'); row.append(el('td', k, 'l'), el('td', fmt(v)), el('td', note || '', 'l muted')); table.append(row); };
  for (const [k, v] of Object.entries(r.weights)) add('w:' + k, v, 'weight');
  for (const o of trialsDoc.objectives) add(o, r.scores[o], 'held-in');
  for (const o of trialsDoc.held_out) add(o, r.scores[o], 'held-out');
  for (const [k, v] of Object.entries(r.settings)) add(k, v, r.method);
  const examples = el('div'); examples.id = 'detail-examples';
  showExamples(r, examples);
  if (r.trial === null) { box.append(table, examples); return; }
  const out = el('input'); out.id = 'export-out'; out.size = 40; out.placeholder = 'export folder (under an allowed root)';
  const button = el('button', 'Export'); button.id = 'export-button';
  const status = el('div', '', 'muted'); status.id = 'export-status';
  button.onclick = async () => {
    try {
      let job = await api('/studies/' + STUDY + '/exports', {method: 'POST', body: JSON.stringify({trial: r.trial, out: out.value})});
      while (job.state === 'queued' || job.state === 'running') {
        status.textContent = 'export ' + job.state + '...'; await new Promise(ok => setTimeout(ok, 1000));
        job = await api('/studies/' + STUDY + '/exports/' + job.id);
      }
      status.textContent = job.state === 'done' ? 'exported to ' + job.out + ' (' + Object.keys(job.manifest.sha256 || {}).length + ' files in manifest)' : 'failed: ' + job.error;
    } catch (e) { status.textContent = e.message; }
  };
  box.append(table, examples, el('p'), out, button, status);
}
async function showExamples(r, into) {  // into is detached if another point is clicked meanwhile
  const query = r.trial === null ? 'baseline=' + encodeURIComponent(r.baseline_name) : 'trial=' + r.trial;
  let c;
  try { c = await api('/studies/' + STUDY + '/examples?count=3&' + query); } catch (e) { into.append(el('p', e.message, 'err')); return; }
  if (!c.kept) { into.append(el('p', 'No per-example results kept for this candidate.', 'muted')); return; }
  for (const [task, t] of Object.entries(c.tasks)) {
    const paired = t.differ !== null;
    into.append(el('h4', task + (paired ? ': ' + t.differ + ' of ' + t.total + ' answers differ from ' + c.beside : '')));
    const table = el('table'); const head = el('tr');
    for (const h of ['#', 'prompt', 'target', 'answer'].concat(paired ? [c.beside] : [])) head.append(el('th', h));
    table.append(head);
    for (const x of t.examples) {
      const row = el('tr');
      row.append(el('td', x.index), el('td', x.prompt), el('td', x.target), el('td', x.answer + ' (' + fmt(x.score) + ')'));
      if (paired) row.append(el('td', x.beside_answer + ' (' + fmt(x.beside_score) + ')'));
      table.append(row);
    }
    into.append(table);
  }
}
function narrowing() {
  const params = new URLSearchParams();
  for (const c of document.getElementById('where').value.split(',')) if (c.trim()) params.append('where', c.trim());
  const rank = document.getElementById('rank').value.trim(); if (rank) params.set('rank', rank);
  const limit = document.getElementById('limit').value.trim(); if (limit) params.set('limit', limit);
  return params.toString();
}
async function showFront() {
  const query = narrowing();
  frontTable(query ? await api('/studies/' + STUDY + '/front?' + query) : trialsDoc);
}
function frontTable(doc) {
  const head = el('tr'); const cols = ['trial', 'kind'];
  const weights = Object.keys((doc.trials[0] || {weights: {}}).weights);
  for (const c of cols.concat(weights.map(w => 'w:' + w), doc.objectives, doc.held_out.map(h => h + ' (held-out)'))) head.append(el('th', c));
  const rows = doc.trials.filter(r => r.on_front || r.baseline).map(r => {
    const row = el('tr'); row.append(el('td', r.trial === null ? '-' : r.trial), el('td', kind(r), 'l'));
    for (const w of weights) row.append(el('td', fmt(r.weights[w])));
    for (const o of doc.objectives.concat(doc.held_out)) row.append(el('td', fmt(r.scores[o])));
    row.onclick = () => showTrial(key(r)); return row;
  });
  document.getElementById('front-table').replaceChildren(head, ...rows);
}
async function refresh() {
  try {
    const s = await api('/studies/' + STUDY);
    document.getElementById('state').textContent = s.name + ': ' + s.state + ', ' + s.finished + ' / ' + s.budget + ' trials' + (s.error ? ' (' + s.error + ')' : '');
    if (s.finished > 0 || s.state === 'done') {
      const [plots, doc] = await Promise.all([api('/studies/' + STUDY + '/plots'), api('/studies/' + STUDY + '/trials')]);
      trialsDoc = doc;
      const plot = document.getElementById('front-plot'); const first = !plot.data;
      await Plotly.react(plot, plots.front.data, plots.front.layout);
      if (first) plot.on('plotly_click', ev => showTrial(ev.points[0].customdata));
      await Plotly.react('tradeoff-plot', plots.tradeoffs.data, plots.tradeoffs.layout);
      await Plotly.react('hv-plot', plots.hypervolume.data, plots.hypervolume.layout);
      await showFront();
      document.body.dataset.finished = String(s.finished);
    }
    document.body.dataset.state = s.state;
    if (!['queued', 'running', 'elsewhere'].includes(s.state)) clearInterval(timer);
    document.getElementById('error').textContent = '';
  } catch (e) { showError(e); }
}
document.getElementById('narrow').onsubmit = async ev => {
  ev.preventDefault();
  try { await showFront(); document.getElementById('error').textContent = ''; } catch (e) { showError(e); }
};
const timer = setInterval(refresh, 3000); refresh();
"""


def _document(title: str, body: str, script: str, plotly: bool = False) -> str:
    head_script = '<script src="/static/plotly.js"></script>' if plotly else ""
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{_STYLE}</style>{head_script}</head>
<body>{body}<p id="error" class="err"></p><script>{_COMMON}{script}</script></body></html>
"""


def index_html() -> str:
    body = """<h1>recycler studies</h1>
<table id="studies"><thead><tr><th class="l">study</th><th class="l">id</th><th class="l">state</th><th>trials</th><th class="l"></th></tr></thead><tbody></tbody></table>"""
    return _document("recycler studies", body, _INDEX_SCRIPT)


def study_html(study_id: str) -> str:
    body = """<p><a href="/">all studies</a></p><h1 id="state">study</h1>
<div class="grid"><div id="front-plot"></div><div id="detail" class="muted">Click a point to see its weights and scores and export it.</div></div>
<div id="tradeoff-plot"></div>
<div id="hv-plot"></div>
<h2>Front and baselines: held-in beside held-out scores</h2>
<form id="narrow">Keep front members meeting <input id="where" size="28" placeholder="reverse>=0.9, sums>=0.5">
ranked by <input id="rank" size="22" placeholder="balanced or sums=2,pick=1"> at most <input id="limit" type="number" min="1" size="4">
<button id="narrow-button">Apply</button></form>
<table id="front-table"></table>"""
    literal = json.dumps(study_id).replace("<", "\\u003c")
    return _document(f"recycler study {study_id}", body, f"const STUDY = {literal};\n{_STUDY_SCRIPT}", plotly=True)


@functools.cache
def plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()
