// Investigators' bulk jobs: submitting photos or a zip archive for a case, watching each job's progress (done of
// total, faces, hits, time left), the members refused and why, cancelling, and downloading the results.

import { get, post, upload, download } from './api.js';
import { h, fill, when, duration, badge } from './dom.js';

const POLL_MS = 1000;
const RUNNING = new Set(['queued', 'running']);

export async function render(view, { rest }) {
  if (rest[0]) return renderJob(view, Number(rest[0]));
  const message = h('p', { role: 'alert' });
  const form = h('form', { class: 'card', id: 'job-form' },
    h('h2', {}, 'New job'),
    h('label', {}, 'Case reference (required) ', h('input', { name: 'case', required: true, maxlength: 100 })),
    h('label', {}, 'Photos or zip archives ', h('input', { type: 'file', name: 'files', id: 'job-files', multiple: true, required: true, accept: 'image/*,.zip,application/zip' })),
    h('div', { class: 'inline' },
      h('label', {}, 'Hit threshold, FPIR (blank: each watchlist\'s alert FPIR) ', h('input', { name: 'threshold_fpir', type: 'number', step: 'any', min: 0, max: 1 })),
      h('label', {}, 'Candidates kept per face ', h('input', { name: 'k', type: 'number', min: 1, max: 50, value: 5 }))),
    h('button', { type: 'submit', id: 'job-submit' }, 'Submit job'), message);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const data = new FormData();
    data.append('case', form.case.value.trim());
    if (form.threshold_fpir.value) data.append('threshold_fpir', form.threshold_fpir.value);
    if (form.k.value) data.append('k', form.k.value);
    for (const file of form.files.files) {
      const archive = file.name.toLowerCase().endsWith('.zip') || file.type === 'application/zip';
      data.append(archive ? 'archive' : 'photo', file, file.name);
    }
    message.className = 'muted';
    message.textContent = 'Uploading…';
    try {
      const job = await upload('/v1/jobs', data);
      location.hash = `#/jobs/${job.id}`;
    } catch (error) {
      message.className = 'error';
      message.textContent = `${error.message} (${error.code})`;
    }
  });
  const body = h('tbody');
  fill(view, h('h1', {}, 'Jobs'), form, h('h2', {}, 'Recent jobs'),
    h('table', { id: 'jobs' }, h('thead', {}, h('tr', {}, ['job', 'case', 'state', 'progress', 'faces', 'hits', 'submitted'].map((t) => h('th', {}, t)))), body));
  const refresh = async () => {
    if (!body.isConnected) return;
    const page = await get('/v1/jobs', { limit: 50 });
    fill(body, page.items.map((job) => h('tr', {},
      h('td', {}, h('a', { href: `#/jobs/${job.id}` }, String(job.id))), h('td', {}, job.case), h('td', {}, badge(job.state)),
      h('td', {}, bar(job)), h('td', {}, String(job.faces)), h('td', {}, String(job.hits)), h('td', {}, when(job.created_at)))));
    sizeBars(body);
    if (page.items.some((job) => RUNNING.has(job.state))) setTimeout(refresh, POLL_MS);
  };
  await refresh();
}

function bar(job) {
  const share = job.total ? (job.done + job.refused) / job.total : 0;
  return h('div', {}, h('div', { class: 'progress', role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': job.total, 'aria-valuenow': job.done + job.refused },
    h('div', { dataset: { share: share.toFixed(3) } })), `${job.done + job.refused} / ${job.total}`);
}

/** Widths are set from script, not inline styles (the policy forbids those in markup). */
function sizeBars(root) {
  for (const inner of root.querySelectorAll('.progress > div')) inner.style.width = `${Number(inner.dataset.share) * 100}%`;
}

async function renderJob(view, id) {
  const job = await get(`/v1/jobs/${id}`);
  const running = RUNNING.has(job.state);
  const cancel = async (event) => {
    event.target.disabled = true;
    await post(`/v1/jobs/${id}/cancel`).catch(() => {});
    if (view.isConnected) renderJob(view, id);
  };
  const save = (format) => download(`/v1/jobs/${id}/results`, { format, sort: 'best_score' }, `job-${id}-results.${format === 'csv' ? 'csv' : 'jsonl'}`);
  fill(view, h('a', { href: '#/jobs' }, '← all jobs'),
    h('h1', {}, `Job ${job.id} · ${job.case} `, badge(job.state, `job-${job.state}`)),
    h('div', { class: 'card', id: 'job-progress' }, bar(job),
      h('dl', { class: 'facts' },
        h('dt', {}, 'photos done'), h('dd', { id: 'job-done' }, `${job.done} of ${job.total}`),
        h('dt', {}, 'refused'), h('dd', {}, String(job.refused)),
        h('dt', {}, 'faces found'), h('dd', { id: 'job-faces' }, String(job.faces)),
        h('dt', {}, 'hits'), h('dd', { id: 'job-hits' }, String(job.hits)),
        h('dt', {}, 'time left'), h('dd', {}, running ? duration(job.eta_s) : '—'),
        h('dt', {}, 'submitted'), h('dd', {}, `${when(job.created_at)} by ${job.submitted_by?.name ?? '—'}`),
        h('dt', {}, 'kept until'), h('dd', {}, when(job.expires_at))),
      running ? h('button', { class: 'danger', onclick: cancel, id: 'job-cancel' }, 'Cancel job') : null),
    h('div', { class: 'card' },
      h('button', { onclick: () => save('jsonl'), id: 'job-results-jsonl' }, 'Results, JSON lines'), ' ',
      h('button', { class: 'secondary', onclick: () => save('csv'), id: 'job-results-csv' }, 'Results, CSV'), ' ',
      h('a', { href: `#/review?state=undecided&job=${id}`, id: 'job-hits-link' }, 'Review this job\'s hits')),
    job.refusals?.length ? [h('h2', {}, 'Refused'), h('ul', { id: 'job-refusals' },
      job.refusals.map((r) => h('li', {}, h('code', {}, r.photo), `: ${r.message} (${r.code})`)))] : null);
  sizeBars(view);
  if (running) setTimeout(() => { if (view.isConnected && location.hash.startsWith(`#/jobs/${id}`)) renderJob(view, id); }, POLL_MS);
}
