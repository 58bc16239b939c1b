// Subjects and watchlists: browsing and searching a watchlist's subjects, one subject's record and enrolled faces,
// editing them, enrolling a photo with the quality verdict and its reasons; watchlists and their thresholds.

import { get, send, upload, call } from './api.js';
import { h, fill, when, rate } from './dom.js';
import { fetched, thumbnailPath, figure } from './faces.js';

const PER_PAGE = 25;

function error(message) {
  return h('p', { class: 'error', role: 'alert' }, message);
}

export async function render(view, { me, rest, query }) {
  if (rest[0]) return renderSubject(view, Number(rest[0]), me);
  const { items: lists } = await get('/v1/watchlists');
  const watchlist = query.get('watchlist') || '';
  const q = query.get('q') || '';
  const page = Number(query.get('page') || 1);
  const found = await get('/v1/subjects', { watchlist, q, page, per_page: PER_PAGE });
  const form = h('form', { class: 'inline card', id: 'subject-filter' },
    h('label', {}, 'Watchlist ', h('select', { name: 'watchlist' }, h('option', { value: '' }, 'all'),
      lists.map((w) => h('option', { value: w.name, selected: w.name === watchlist }, w.name)))),
    h('label', {}, 'Name or reference ', h('input', { name: 'q', value: q })),
    h('button', { type: 'submit' }, 'Find'));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    location.hash = `#/subjects?${new URLSearchParams({ watchlist: form.watchlist.value, q: form.q.value.trim() })}`;
  });
  const pages = Math.max(1, Math.ceil(found.total / PER_PAGE));
  const link = (n, text) => h('a', { href: `#/subjects?${new URLSearchParams({ watchlist, q, page: n })}` }, text);
  fill(view, h('h1', {}, 'Subjects'), form,
    me.permissions.includes('edit_subjects') ? createForm(lists) : null,
    h('table', { id: 'subjects' }, h('thead', {}, h('tr', {}, ['id', 'name', 'reference', 'watchlist', 'faces', 'changed'].map((t) => h('th', {}, t)))),
      h('tbody', {}, found.items.map((s) => h('tr', {},
        h('td', {}, h('a', { href: `#/subjects/${s.id}` }, String(s.id))), h('td', {}, s.display_name), h('td', {}, s.external_ref ?? '—'),
        h('td', {}, s.watchlist), h('td', {}, String(s.template_count)), h('td', {}, when(s.updated_at)))))),
    h('p', {}, page > 1 ? link(page - 1, '← previous') : null, ` page ${page} of ${pages} (${found.total} subjects) `,
      page < pages ? link(page + 1, 'next →') : null));
}

function createForm(lists) {
  const message = h('p', { role: 'alert' });
  const form = h('form', { class: 'inline card', id: 'subject-create' },
    h('label', {}, 'Watchlist ', h('select', { name: 'watchlist', required: true }, lists.map((w) => h('option', { value: w.name }, w.name)))),
    h('label', {}, 'Name ', h('input', { name: 'display_name', required: true, maxlength: 200 })),
    h('label', {}, 'Reference ', h('input', { name: 'external_ref', maxlength: 100 })),
    h('button', { type: 'submit' }, 'Create subject'), message);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    try {
      const subject = await send('POST', '/v1/subjects', {
        watchlist: form.watchlist.value, display_name: form.display_name.value.trim(), external_ref: form.external_ref.value.trim() || null,
      });
      location.hash = `#/subjects/${subject.id}`;
    } catch (e) {
      fill(message, error(`${e.message} (${e.code})`));
    }
  });
  return form;
}

async function renderSubject(view, id, me) {
  const subject = await get(`/v1/subjects/${id}`);
  const { items: faces } = await get(`/v1/subjects/${id}/faces`);
  const edits = me.permissions.includes('edit_subjects');
  const message = h('div', { id: 'enroll-result', role: 'status' });
  const edit = h('form', { class: 'card', id: 'subject-edit' },
    h('label', {}, 'Name ', h('input', { name: 'display_name', value: subject.display_name, required: true, disabled: !edits })),
    h('label', {}, 'Reference ', h('input', { name: 'external_ref', value: subject.external_ref ?? '', disabled: !edits })),
    edits ? h('button', { type: 'submit' }, 'Save') : null);
  edit.addEventListener('submit', async (event) => {
    event.preventDefault();
    try {
      await send('PATCH', `/v1/subjects/${id}`, { display_name: edit.display_name.value.trim(), external_ref: edit.external_ref.value.trim() || null });
      renderSubject(view, id, me);
    } catch (e) {
      edit.append(error(`${e.message} (${e.code})`));
    }
  });
  const enroll = h('form', { class: 'inline card', id: 'enroll-form' },
    h('label', {}, 'Enroll a photo ', h('input', { type: 'file', name: 'photo', accept: 'image/*', required: true, id: 'enroll-photo' })),
    h('button', { type: 'submit' }, 'Enroll'));
  enroll.addEventListener('submit', async (event) => {
    event.preventDefault();
    const data = new FormData();
    data.append('photo', enroll.photo.files[0]);
    fill(message, h('p', { class: 'muted' }, 'Checking the photo…'));
    try {
      const outcome = await upload(`/v1/subjects/${id}/faces`, data);
      await renderSubject(view, id, me);
      fill(document.getElementById('enroll-result'), h('p', { class: 'good' }, 'Enrolled: quality accepted.'), qualityFacts(outcome.quality));
    } catch (e) {
      // A refusal for quality names every shortfall: the enroller sees what to fix in the photo.
      fill(message, error(`Refused (${e.code}): ${e.message}`));
    }
  });
  const removeFace = async (face) => {
    if (!confirm(`Delete enrolled face ${face.id}? This cannot be undone.`)) return;
    await call('DELETE', `/v1/subjects/${id}/faces/${face.id}`);
    renderSubject(view, id, me);
  };
  const removeSubject = async () => {
    if (!confirm(`Delete subject ${id} and all enrolled faces? This cannot be undone.`)) return;
    await call('DELETE', `/v1/subjects/${id}`);
    location.hash = '#/subjects';
  };
  fill(view, h('a', { href: '#/subjects' }, '← all subjects'),
    h('h1', {}, subject.display_name, h('span', { class: 'muted' }, ` · ${subject.watchlist} · subject ${id}`)),
    edit,
    h('h2', {}, `Enrolled faces (${faces.length})`),
    h('div', { class: 'grid', id: 'faces' }, faces.map((face) => h('div', { class: 'card' },
      figure(fetched(thumbnailPath(id, face.id), `enrolled face ${face.id}`, { allowed: face.has_thumbnail && me.permissions.includes('view_photos'), missing: 'no thumbnail kept' }),
        `face ${face.id} · ${when(face.enrolled_at)} by ${face.enrolled_by}`),
      edits ? h('button', { class: 'secondary', onclick: () => removeFace(face) }, 'Delete face') : null))),
    edits ? [enroll, message, h('p', {}, h('button', { class: 'danger', onclick: removeSubject }, 'Delete subject'))] : null);
}

function qualityFacts(q) {
  return h('dl', { class: 'facts' },
    h('dt', {}, 'detector score'), h('dd', {}, q.detector_score.toFixed(2)),
    h('dt', {}, 'eyes apart'), h('dd', {}, `${q.inter_eye_px.toFixed(0)} px`),
    h('dt', {}, 'roll / yaw'), h('dd', {}, `${q.roll_deg.toFixed(0)}° / ${q.yaw_deg.toFixed(0)}°`),
    h('dt', {}, 'sharpness'), h('dd', {}, q.sharpness.toFixed(0)),
    h('dt', {}, 'brightness'), h('dd', {}, q.brightness.toFixed(2)));
}

/** Watchlists: thresholds and retention, changed by admins. */
export const watchlists = {
  async render(view, { me }) {
    const { items } = await get('/v1/watchlists');
    const manages = me.permissions.includes('manage_watchlists');
    const rows = items.map((w) => {
      const form = h('form', { class: 'inline' },
        h('label', {}, 'alert FPIR ', h('input', { name: 'alert_fpir', type: 'number', step: 'any', min: 0, max: 1, value: w.alert_fpir, disabled: !manages })),
        h('label', {}, 'retention days ', h('input', { name: 'retention_days', type: 'number', min: 1, value: w.retention_days ?? '', disabled: !manages })),
        manages ? h('button', { type: 'submit' }, 'Save') : null);
      form.addEventListener('submit', async (event) => {
        event.preventDefault();
        try {
          await send('PATCH', `/v1/watchlists/${encodeURIComponent(w.name)}`, {
            alert_fpir: Number(form.alert_fpir.value), retention_days: form.retention_days.value ? Number(form.retention_days.value) : null,
          });
          form.append(h('span', { class: 'good' }, ' saved'));
        } catch (e) {
          form.append(error(`${e.message} (${e.code})`));
        }
      });
      return h('div', { class: 'card' }, h('h2', {}, w.name), h('p', { class: 'muted' }, w.description || '',
        ` alerts at FPIR ${rate(w.alert_fpir)}; created ${when(w.created_at)}`), form,
      me.permissions.includes('read_subjects') ? h('a', { href: `#/subjects?watchlist=${encodeURIComponent(w.name)}` }, 'its subjects') : null);
    });
    const create = h('form', { class: 'inline card', id: 'watchlist-create' },
      h('label', {}, 'Name ', h('input', { name: 'name', required: true, pattern: '[a-z0-9][a-z0-9_-]*' })),
      h('label', {}, 'Alert FPIR ', h('input', { name: 'alert_fpir', type: 'number', step: 'any', value: 0.003 })),
      h('button', { type: 'submit' }, 'Create watchlist'));
    create.addEventListener('submit', async (event) => {
      event.preventDefault();
      try {
        await send('POST', '/v1/watchlists', { name: create.name.value.trim(), alert_fpir: Number(create.alert_fpir.value) });
        watchlists.render(view, { me });
      } catch (e) {
        create.append(error(`${e.message} (${e.code})`));
      }
    });
    fill(view, h('h1', {}, 'Watchlists'), manages ? create : null, rows);
  },
};
