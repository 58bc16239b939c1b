// Review with two people: the queues (undecided, awaiting a second reviewer, disputed, confirmed, rejected) with
// their filters, one hit with the traveller's crop and the enrolled face side by side, every decision recorded so
// far, the decision form, and the export of a case's confirmed hits.

import { get, post, download } from './api.js';
import { h, fill, score, rate, when, badge, typing, announce } from './dom.js';
import { fetched, thumbnailPath, figure } from './faces.js';

const STATES = ['undecided', 'awaiting_second', 'disputed', 'confirmed', 'rejected'];
const FILTERS = ['watchlist', 'case', 'checkpoint', 'job', 'source'];
const DECISIONS = [
  { value: 'potential_match', label: 'Potential match', key: 'p' },
  { value: 'no_candidate', label: 'No candidate', key: 'n' },
  { value: 'inconclusive', label: 'Inconclusive', key: 'i' },
];

export async function render(view, { me, rest, query }) {
  if (rest[0]) return renderHit(view, Number(rest[0]), me, query);
  return renderQueue(view, query);
}

async function renderQueue(view, query) {
  const state = query.get('state') || 'undecided';
  const filters = Object.fromEntries(FILTERS.map((name) => [name, query.get(name) || '']));
  const go = (changes) => {
    const next = new URLSearchParams({ state, ...filters, ...changes });
    for (const [name, value] of [...next]) if (!value) next.delete(name);
    location.hash = `#/review?${next}`;
  };
  const tabs = h('div', { class: 'tabs', role: 'group', 'aria-label': 'Queue' }, STATES.map((s) =>
    h('button', { class: 'secondary', 'aria-pressed': String(s === state), id: `queue-${s}`, onclick: () => go({ state: s }) }, s.replace('_', ' '))));
  const form = h('form', { class: 'inline card', id: 'queue-filters' },
    FILTERS.map((name) => h('label', {}, `${name} `, h('input', { name, value: filters[name], size: name === 'job' ? 5 : 12 }))),
    h('button', { type: 'submit' }, 'Filter'));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    go(Object.fromEntries(FILTERS.map((name) => [name, form[name].value.trim()])));
  });
  const exporter = h('form', { class: 'inline card', id: 'export-form' },
    h('label', {}, 'Case ', h('input', { name: 'case', required: true, value: filters.case, maxlength: 100 })),
    h('button', { type: 'submit' }, 'Export confirmed hits (JSON lines)'));
  exporter.addEventListener('submit', async (event) => {
    event.preventDefault();
    const kase = exporter.case.value.trim();
    try {
      await download(`/v1/cases/${encodeURIComponent(kase)}/confirmed`, null, `confirmed-${kase.replace(/[^\w.-]+/g, '_')}.jsonl`);
    } catch (error) {
      exporter.append(h('p', { class: 'error' }, error.message));
    }
  });
  const body = h('tbody');
  const more = h('button', { class: 'secondary', hidden: true }, 'More');
  const table = h('table', { id: 'queue' }, h('thead', {}, h('tr', {},
    ['hit', 'found', 'source', 'watchlist', 'candidate', 'similarity', 'FPIR', 'case / checkpoint', 'decisions'].map((t) => h('th', {}, t)))), body);
  fill(view, h('h1', {}, 'Review'), tabs, form, table, more, h('p', { class: 'note' },
    'Keys: ', h('kbd', {}, 'j'), '/', h('kbd', {}, 'k'), ' move, ', h('kbd', {}, 'Enter'), ' opens.'), exporter);
  let after = null;
  const load = async () => {
    const page = await get('/v1/hits', { state, ...filters, after, limit: 50 });
    for (const hit of page.items) body.append(row(hit, query));
    after = page.next_after;
    more.hidden = after == null;
    if (!body.children.length) body.append(h('tr', {}, h('td', { colspan: 9, class: 'muted' }, 'Nothing in this queue.')));
  };
  more.addEventListener('click', load);
  view.onkeydown = (event) => {
    if (typing(event)) return;
    const rows = [...body.querySelectorAll('tr.selectable')];
    const at = rows.indexOf(document.activeElement);
    if (event.key === 'j' || event.key === 'k') {
      event.preventDefault();
      rows[Math.max(0, Math.min(rows.length - 1, at + (event.key === 'j' ? 1 : -1)))]?.focus();
    }
  };
  await load();
}

function row(hit, query) {
  const open = () => { location.hash = `#/review/${hit.id}?${query}`; };
  return h('tr', { class: 'selectable', tabindex: 0, dataset: { hit: hit.id }, onclick: open,
    onkeydown: (event) => { if (event.key === 'Enter') open(); } },
  h('td', {}, h('a', { href: `#/review/${hit.id}` }, String(hit.id))),
  h('td', {}, when(hit.created_at)),
  h('td', {}, hit.source, hit.job_id ? ` ${hit.job_id}` : ''),
  h('td', {}, hit.watchlist),
  h('td', {}, hit.display_name ?? `subject ${hit.subject_id}`),
  h('td', {}, score(hit.similarity)),
  h('td', {}, rate(hit.fpir)),
  h('td', {}, [hit.case, hit.checkpoint].filter(Boolean).join(' / ') || '—'),
  h('td', {}, String(hit.reviews.length)));
}

async function renderHit(view, id, me, query) {
  const hit = await get(`/v1/hits/${id}`);
  const back = h('a', { href: `#/review?${query}` }, '← back to the queue');
  const decisions = hit.reviews.length ? h('ol', { class: 'decisions', id: 'decisions' }, hit.reviews.map((r) =>
    h('li', {}, h('strong', {}, r.decision.replace('_', ' ')), ` by ${r.reviewer.name} (${r.reviewer.key_id}), ${when(r.at)}: `, h('q', {}, r.comment))))
    : h('p', { class: 'muted', id: 'decisions' }, 'No decision yet.');
  const mine = hit.reviews.some((r) => r.reviewer.key_id === me.key_id || r.reviewer.name === me.name);
  const closed = hit.state === 'confirmed' || hit.state === 'rejected';
  fill(view, back,
    h('h1', {}, `Hit ${hit.id} `, badge(hit.state)),
    h('div', { class: 'card' },
      h('div', { class: 'pair' },
        figure(fetched(`/v1/hits/${hit.id}/probe.jpg`, 'probe face', { allowed: hit.has_probe, missing: 'probe crop no longer kept' }), 'probe (searched)'),
        figure(fetched(thumbnailPath(hit.subject_id, hit.template_id), 'enrolled face', { allowed: me.permissions.includes('view_photos') && hit.display_name != null, missing: 'enrolled face removed' }), 'enrolled')),
      h('dl', { class: 'facts' },
        h('dt', {}, 'candidate'), h('dd', {}, hit.display_name ?? `subject ${hit.subject_id} (deleted)`, hit.external_ref ? ` · ${hit.external_ref}` : ''),
        h('dt', {}, 'watchlist'), h('dd', {}, hit.watchlist),
        h('dt', {}, 'similarity'), h('dd', {}, score(hit.similarity), hit.decision_score != null ? ` (decision score ${score(hit.decision_score)})` : ''),
        h('dt', {}, 'FPIR'), h('dd', {}, rate(hit.fpir), hit.fpir_extrapolated ? [' ', badge('extrapolated')] : null),
        h('dt', {}, 'found'), h('dd', {}, `${when(hit.created_at)} by ${hit.searched_by.name}, ${hit.source}${hit.job_id ? ` ${hit.job_id}` : ''}`),
        h('dt', {}, 'case / checkpoint'), h('dd', {}, [hit.case, hit.checkpoint].filter(Boolean).join(' / ') || '—'))),
    h('h2', {}, 'Decisions'), decisions,
    closed ? h('p', { class: 'good' }, `Review closed: ${hit.state}.`)
      : mine ? h('p', { class: 'muted', id: 'own-decision' }, 'You decided on this hit already; a different reviewer must decide next.')
        : decisionForm(hit, view, me, query));
}

function decisionForm(hit, view, me, query) {
  const message = h('p', { role: 'alert' });
  const form = h('form', { class: 'card', id: 'decision-form' },
    h('fieldset', {}, h('legend', {}, 'Your decision'), DECISIONS.map((d) => h('label', {},
      h('input', { type: 'radio', name: 'decision', value: d.value, required: true }), ` ${d.label} `, h('kbd', {}, d.key)))),
    h('label', {}, 'Comment (required; what you compared and why) ',
      h('textarea', { name: 'comment', rows: 3, required: true, maxlength: 2000, id: 'decision-comment' })),
    h('button', { type: 'submit', id: 'decision-submit' }, 'Record decision'), message);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const body = { decision: form.decision.value, comment: form.comment.value };
    try {
      const updated = await post(`/v1/hits/${hit.id}/decisions`, body);
      announce(`Decision recorded; the hit is ${updated.state.replace('_', ' ')}`);
      await renderHit(view, hit.id, me, query);
    } catch (error) {
      message.className = 'error';
      message.textContent = `${error.message} (${error.code})`;
    }
  });
  view.onkeydown = (event) => {
    if (typing(event)) return;
    const choice = DECISIONS.find((d) => d.key === event.key);
    if (!choice) return;
    form.querySelector(`input[value="${choice.value}"]`).checked = true;
    form.comment.focus();
    event.preventDefault();
  };
  return form;
}
