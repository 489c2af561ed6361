"""The report page: one self-contained HTML file (styles, script, data and figures inline; no
network). The script draws the embedded payload: sortable leaderboard, runs, a paginated and
searchable sample browser, flipped items side by side with a token diff, figures, ablations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from igpo.atomic import atomic_write_text

if TYPE_CHECKING:
    from harness.check import CheckSettings

PAGE_SIZE = 50
"""Samples drawn per page of the browser (the rest stay data until asked for)."""
VERDICT_VIEW = "flipped"
"""The baseline comparison's view (verdict, forest plot, flipped items): first when there is one."""

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d1d1f;background:#fafafa}
header{background:#22304a;color:#fff;padding:10px 20px}header h1{font-size:18px;margin:0}
nav{display:flex;gap:4px;padding:6px 20px;background:#e8ebf0;position:sticky;top:0}
nav button{border:0;background:none;padding:6px 12px;cursor:pointer;border-radius:4px}
nav button.on{background:#fff;font-weight:600}
section{padding:12px 20px;display:none}section.on{display:block}
table{border-collapse:collapse;margin:8px 0;background:#fff}
th,td{border:1px solid #d6d9de;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f0f2f5;cursor:pointer;user-select:none}
tr.reported td{color:#666;font-style:italic}tr.deviates td:first-child::after{content:" *";color:#b00}
.ok{color:#0a7a2f}.bad{color:#b3261e}.muted{color:#777}
.sample,.flip{background:#fff;border:1px solid #d6d9de;border-radius:6px;margin:8px 0;padding:8px}
.flip .pair{display:grid;grid-template-columns:1fr 1fr;gap:8px}
pre{white-space:pre-wrap;word-break:break-word;margin:4px 0;font:12px/1.4 ui-monospace,monospace}
.tag{color:#7a4cc2;font-weight:600}.ins{background:#d7f5dd}.del{background:#fbd9d6;text-decoration:line-through}
.controls{display:flex;flex-wrap:wrap;gap:10px;align-items:center;margin:6px 0}
.fig svg{max-width:100%;height:auto}img{max-width:100%}
.gate{background:#fff;border:1px solid #d6d9de;border-left:8px solid #777;border-radius:6px;margin:8px 0 14px;padding:8px 14px}
.gate.pass{border-left-color:#0a7a2f}.gate.regression{border-left-color:#b3261e}.gate.cannot-rule-out{border-left-color:#9a5b00}
.verdict{font-size:24px;font-weight:700;margin:2px 0 4px}.verdict .meaning{font-size:15px;font-weight:400;color:#1d1d1f}
.pass .verdict{color:#0a7a2f}.regression .verdict{color:#b3261e}.cannot-rule-out .verdict{color:#9a5b00}
"""

SCRIPT = r"""
const D = JSON.parse(document.getElementById('payload').textContent);
const PAGE = __PAGE__;
const $ = (s, r=document) => r.querySelector(s);
const el = (tag, attrs={}, ...kids) => {const e=document.createElement(tag);
  for (const [k,v] of Object.entries(attrs)) { if (k==='class') e.className=v; else if (k==='html') e.innerHTML=v; else e.setAttribute(k,v); }
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(k ?? '')); return e;};
const pct = v => v==null ? '-' : (100*v).toFixed(1);
const esc = s => String(s ?? '').replace(/[&<>"]/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]));
const marked = s => esc(s).replace(/(&lt;\/?(?:reasoning|answer)&gt;|\\boxed\{)/g, '<span class="tag">$1</span>');

function tabs() {
  const nav = $('nav'); const views = [...document.querySelectorAll('section')];
  for (const v of views) {
    if (v.dataset.empty === '1') continue;
    const b = el('button', {'data-view': v.id}, v.dataset.title);
    b.onclick = () => { views.forEach(x => x.classList.toggle('on', x===v));
      nav.querySelectorAll('button').forEach(x => x.classList.toggle('on', x===b)); };
    nav.append(b);
  }
  nav.querySelector('button')?.click();
}

function sortable(table, rows, columns, draw) {
  let key = null, dir = -1;
  const head = el('tr');
  columns.forEach(c => { const th = el('th', {'data-key': c.key}, c.label);
    th.onclick = () => { dir = key===c.key ? -dir : -1; key = c.key;
      rows.sort((a,b) => { const x=c.value(a), y=c.value(b);
        if (x==null) return 1; if (y==null) return -1;
        return (x<y ? -1 : x>y ? 1 : 0) * dir; }); draw(); };
    head.append(th); });
  table.append(el('thead', {}, head)); table.append(el('tbody'));
  draw();
}

function leaderboard() {
  const L = D.leaderboard; const box = $('#leaderboard');
  if (!L.rows.length) { box.append(el('p', {class:'muted'}, 'No runs.')); return; }
  const cols = [{key:'model', label:'model', value:r=>r.model}, {key:'protocol', label:'protocol', value:r=>r.protocol},
    {key:'result', label:'result', value:r=>r.result},
    ...L.columns.map(c => ({key:c.key, label:c.label, value:r=>r.cells[c.key]?.[0] ?? null})),
    {key:'average', label:'average', value:r=>r.average}, {key:'source', label:'source', value:r=>r.source}];
  const rows = L.rows.slice(); const table = el('table', {id:'board'});
  const draw = () => { const body = table.tBodies[0]; body.replaceChildren();
    for (const r of rows) { const tr = el('tr', {class: (r.result==='reported'?'reported ':'') + (r.deviates?'deviates':'')});
      tr.append(el('td', {}, r.model), el('td', {}, r.protocol), el('td', {}, r.result));
      for (const c of L.columns) { const v = r.cells[c.key];
        tr.append(el('td', {}, v ? v[0].toFixed(1) + (v[1]!=null ? ` [${v[1].toFixed(1)}, ${v[2].toFixed(1)}]` : '') : '-')); }
      tr.append(el('td', {}, r.average==null ? '-' : r.average.toFixed(1)), el('td', {}, r.source)); body.append(tr); } };
  sortable(table, rows, cols, draw); box.append(table);
  for (const n of L.notes) box.append(el('p', {class:'muted'}, n));
}

function runs() {
  const box = $('#runs');
  for (const r of D.runs) {
    const card = el('div', {class:'sample'}); card.append(el('h3', {}, `${r.label} (${r.source})`));
    const m = r.model, p = r.protocol, v = r.provenance;
    card.append(el('pre', {}, [`model: ${m.name_or_path}  hash: ${m.hash}  device: ${m.device ?? '?'}`, m.adapter ? `adapter: ${m.adapter}  hash: ${m.adapter_hash}` : '',
      `protocol: ${p.label}  file hash: ${p.file_hash}  seeds: ${(p.seeds||[]).join(', ')}`,
      r.deviations.length ? `deviations: ${r.deviations.join('; ')}` : '',
      `commit: ${v.git_commit ?? '?'}  wall: ${v.wall_time_s?.toFixed?.(1) ?? '?'} s  tokens/s: ${v.tokens_per_s?.toFixed?.(1) ?? '-'}  NFE/token: ${v.nfe_per_token?.toFixed?.(2) ?? '-'}`,
      `versions: ${JSON.stringify(v.versions ?? {})}`, `command: ${v.command ?? ''}`].filter(Boolean).join('\n')));
    const t = el('table'); t.append(el('tr', {}, ...['task','accuracy %','95% interval','items','samples/item','per level %','decoding','data hash'].map(h => el('th', {}, h))));
    for (const k of r.tasks) t.append(el('tr', {}, el('td', {}, k.key), el('td', {}, pct(k.accuracy)),
      el('td', {}, `[${pct(k.ci95[0])}, ${pct(k.ci95[1])}] ${k.ci_kind}`), el('td', {}, k.n_items), el('td', {}, k.samples_per_item),
      el('td', {}, Object.entries(k.levels).map(([l,a]) => `${l}: ${pct(a)}`).join('  ')),
      el('td', {}, el('pre', {}, Object.entries(k.decoding).map(([a,b]) => `${a}=${JSON.stringify(b)}`).join(' '))),
      el('td', {}, String(k.data?.hash ?? '-').slice(0, 19))));
    card.append(t); box.append(card);
  }
}

function samples() {
  const box = $('#samples'); const S = D.samples; let page = 0;
  const uniq = f => [...new Set(S.map(f))].sort();
  const select = (id, label, values) => { const s = el('select', {id});
    s.append(el('option', {value:''}, `${label}: all`)); values.forEach(v => { const [val, text] = Array.isArray(v) ? v : [v, v];
      s.append(el('option', {value:String(val)}, `${label}: ${text}`)); }); return s; };
  const controls = el('div', {class:'controls'},
    select('f-run', 'run', D.runs.map(r => [r.index, r.source])), select('f-task', 'task', uniq(s => s.task)),
    select('f-verdict', 'verdict', ['correct', 'wrong']), select('f-seed', 'seed', uniq(s => s.seed)),
    el('label', {}, el('input', {type:'checkbox', id:'f-hit'}), ' hit length'),
    el('label', {}, el('input', {type:'checkbox', id:'f-timeout'}), ' timed out'),
    el('input', {type:'search', id:'f-search', placeholder:'search prompt, response, gold', size:'34'}));
  const count = el('span', {id:'sample-count', class:'muted'}); const list = el('div', {id:'sample-list'});
  const pager = el('div', {class:'controls'}); box.append(controls, count, list, pager);
  const shown = () => { const f = id => $('#'+id).value; const q = $('#f-search').value.toLowerCase();
    return S.filter(s => (f('f-run')==='' || String(s.run)===f('f-run')) && (f('f-task')==='' || s.task===f('f-task'))
      && (f('f-verdict')==='' || (s.correct ? 'correct' : 'wrong')===f('f-verdict')) && (f('f-seed')==='' || String(s.seed)===f('f-seed'))
      && (!$('#f-hit').checked || s.hit_length) && (!$('#f-timeout').checked || s.timed_out)
      && (!q || (D.prompts[s.prompt] + '\n' + s.response + '\n' + s.gold).toLowerCase().includes(q))); };
  const draw = () => { const rows = shown(); const pages = Math.max(1, Math.ceil(rows.length / PAGE)); page = Math.min(page, pages-1);
    count.textContent = `${rows.length} of ${S.length} samples`; list.replaceChildren();
    for (const s of rows.slice(page*PAGE, (page+1)*PAGE)) { const c = el('div', {class:'sample', 'data-doc': String(s.doc)});
      c.append(el('div', {}, el('b', {class: s.correct ? 'ok' : 'bad'}, s.correct ? 'correct' : 'wrong'),
        ` ${D.runs[s.run].label} · ${s.task} · doc ${s.doc} · seed ${s.seed} · repeat ${s.repeat}` + (s.hit_length ? ' · hit length' : '') + (s.timed_out ? ' · timed out' : '')),
        el('pre', {class:'muted', html: marked(D.prompts[s.prompt])}), el('pre', {html: marked(s.response)}),
        el('div', {}, `extracted: ${s.extracted ?? '-'}   gold: ${s.gold}`)); list.append(c); }
    pager.replaceChildren(el('span', {}, `page ${page+1} / ${pages}`));
    const prev = el('button', {id:'prev'}, 'previous'); prev.onclick = () => { page = Math.max(0, page-1); draw(); };
    const next = el('button', {id:'next'}, 'next'); next.onclick = () => { page = Math.min(pages-1, page+1); draw(); };
    pager.append(prev, next); };
  controls.querySelectorAll('select,input').forEach(i => i.addEventListener('input', () => { page = 0; draw(); }));
  draw();
}

function gate(c, n) {
  const cand = D.runs[c.candidate], base = D.runs[c.baseline];
  const g = el('div', {class: `gate ${c.verdict}`, id: `gate-${n}`, 'data-verdict': c.verdict});
  g.append(el('div', {class:'verdict', id: `verdict-${n}`}, c.verdict, el('span', {class:'meaning'}, ` \u2014 ${c.headline}`)),
    el('div', {}, `candidate ${cand.label} (${cand.source}) vs baseline ${base.label} (${base.source}) \u00b7 igpo check exit ${c.exit_code} \u00b7 max drop ${c.max_drop} pp \u00b7 alpha ${c.alpha}`),
    el('div', {class:'muted'}, c.reason),
    ...c.notes.map(t => el('div', {class:'muted'}, `note: ${t}`)), ...c.mismatches.map(m => el('div', {class:'muted'}, `mismatch (allowed): ${m}`)),
    el('div', {class:'fig', html: c.forest_svg}));
  return g;
}

function comparisons() {
  const box = $('#flipped');
  for (const [n, c] of D.comparisons.entries()) {
    box.append(gate(c, n));
    const t = el('table', {class:'paired'}); t.append(el('tr', {}, ...['task','items','baseline %','candidate %','diff (pp) [95% CI]','test','p','verdict','broke','fixed'].map(h => el('th', {}, h))));
    for (const k of c.tasks) t.append(el('tr', {}, el('td', {}, k.task), el('td', {}, k.n_items), el('td', {}, pct(k.baseline)), el('td', {}, pct(k.candidate)),
      el('td', {}, `${(100*k.diff).toFixed(2)} [${(100*k.ci95[0]).toFixed(2)}, ${(100*k.ci95[1]).toFixed(2)}]`), el('td', {}, k.test),
      el('td', {}, k.p < 1e-4 ? '<0.0001' : k.p.toFixed(4)), el('td', {}, k.verdict), el('td', {class:'bad'}, k.broke), el('td', {class:'ok'}, k.fixed)));
    box.append(el('details', {class:'tests'}, el('summary', {}, 'the paired test per task (items, accuracies, test, p, flips)'), t));
    for (const dir of ['broke', 'fixed']) {
      const items = c.items.filter(i => i.direction === dir);
      box.append(el('h4', {}, `${items.length} item(s) ${dir === 'broke' ? 'right in the baseline, wrong in the candidate' : 'wrong in the baseline, right in the candidate'}`));
      for (const i of items) { const f = el('div', {class:'flip', 'data-direction': dir, 'data-doc': String(i.doc), 'data-task': i.task});
        const b = D.samples[i.baseline], cs = D.samples[i.candidate];
        const diff = i.diff.map(([op, s]) => op==='=' ? esc(s) : `<span class="${op==='+'?'ins':'del'}">${esc(s)}</span>`).join('');
        f.append(el('div', {}, `${i.task} · doc ${i.doc} · gold ${b.gold}`), el('pre', {class:'muted', html: marked(D.prompts[b.prompt])}),
          el('div', {class:'pair'}, el('div', {}, el('b', {}, `baseline (${b.correct ? 'correct' : 'wrong'}, extracted ${b.extracted ?? '-'})`), el('pre', {html: marked(b.response)})),
            el('div', {}, el('b', {}, `candidate (${cs.correct ? 'correct' : 'wrong'}, extracted ${cs.extracted ?? '-'})`), el('pre', {html: marked(cs.response)}))),
          el('div', {}, el('b', {}, 'token diff'), el('pre', {class:'diff', html: diff})));
        box.append(f); }
    }
  }
}

function figures() {
  const box = $('#figures');
  for (const f of D.figures) { box.append(el('h3', {}, f.title), el('div', {class:'fig', html: f.svg}));
    const levels = Object.entries(f.levels || {});
    if (levels.length) { const steps = [...new Set(levels.flatMap(([,v]) => Object.keys(v)))].sort((a,b)=>a-b);
      const t = el('table'); t.append(el('tr', {}, el('th', {}, 'level'), ...steps.map(s => el('th', {}, `step ${s}`))));
      for (const [l, v] of levels) t.append(el('tr', {}, el('td', {}, l), ...steps.map(s => el('td', {}, pct(v[s])))));
      box.append(t); } }
  for (const a of D.ablations) { const sec = $('#ablations'); sec.append(el('h3', {}, `${a.name} (${a.folder})`));
    for (const [name, src] of Object.entries(a.plots)) sec.append(el('div', {}, el('b', {}, name)), el('img', {src, alt:name}));
    if (a.claims) sec.append(el('pre', {}, JSON.stringify(a.claims, null, 1)));
    sec.append(el('pre', {}, a.markdown)); }
}

tabs(); leaderboard(); runs(); samples(); comparisons(); figures();
document.body.dataset.ready = '1';
"""


def render(payload: dict[str, Any]) -> str:
    """The whole page for a payload (harness.report.data.build_payload)."""
    # every "<" escaped: "</script" would close the data block, "<!--" then "<script" would keep it open
    data = json.dumps(payload, ensure_ascii=False, allow_nan=False).replace("<", "\\u003c")
    views = [
        ("leaderboard", "Leaderboard", bool(payload["leaderboard"]["rows"])),
        ("runs", "Runs", bool(payload["runs"])),
        ("samples", "Samples", bool(payload["samples"])),
        (VERDICT_VIEW, "Verdict", bool(payload["comparisons"])),
        ("figures", "Training", bool(payload["figures"])),
        ("ablations", "Ablations", bool(payload["ablations"])),
    ]
    if payload["comparisons"]:  # a baseline: the page opens on the gate's verdict
        views.sort(key=lambda v: v[0] != VERDICT_VIEW)
    sections = "\n".join(
        f'<section id="{v}" data-title="{t}" data-empty="{0 if has else 1}"><h2>{t}</h2></section>'
        for v, t, has in views
    )
    title = _escape(payload["title"])
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; '
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'\">"
        f"<title>{title}</title><style>{STYLE}</style></head><body>"
        f"<header><h1>{title}</h1></header><nav></nav>{sections}"
        f'<script type="application/json" id="payload">{data}</script>'
        f"<script>{SCRIPT.replace('__PAGE__', str(PAGE_SIZE))}</script></body></html>\n"
    )


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def write_report(
    paths: list[Path],
    out: Path,
    *,
    baseline: Path | None = None,
    title: str | None = None,
    settings: CheckSettings | None = None,
) -> Path:
    """Build the payload for `paths` (+ baseline, compared with `igpo check`'s `settings`, default
    its defaults) and write the page atomically; return its path."""
    from harness.report.data import build_payload, classify

    inputs = classify(list(paths), baseline)
    if not (inputs.runs or inputs.baseline or inputs.training or inputs.series or inputs.ablations):
        from igpo.errors import MissingInput

        raise MissingInput("nothing to report: give run, training, checkpoint-series or ablation folders")
    payload = build_payload(
        inputs, title=title or f"igpo report: {', '.join(Path(p).name for p in paths)}", settings=settings
    )
    atomic_write_text(Path(out), render(payload))
    return Path(out)
