// Searching one photo: every face boxed on it, and beside each face its candidates' enrolled thumbnails with
// similarity and calibrated FPIR, the face and the thumbnails at one size.

import { upload } from './api.js';
import { h, svg, fill, score, rate, badge, announce } from './dom.js';
import { cropFrom, fetched, thumbnailPath, figure } from './faces.js';

export async function render(view, { me }) {
  const investigator = me.permissions.includes('search_investigation');
  const result = h('div', { id: 'search-result' });
  const form = h('form', { class: 'card inline', id: 'search-form' },
    h('label', {}, 'Photo ', h('input', { type: 'file', name: 'photo', id: 'search-photo', accept: 'image/*', required: true })),
    investigator ? h('label', {}, 'Mode ', h('select', { name: 'mode', id: 'search-mode' },
      h('option', { value: 'identification' }, 'identification (alerts only)'),
      h('option', { value: 'investigation' }, 'investigation (top k)'))) : null,
    investigator ? h('label', {}, 'k ', h('input', { name: 'k', type: 'number', min: 1, max: 200, value: 10, size: 4 })) : null,
    h('label', {}, 'Checkpoint ', h('input', { name: 'checkpoint', maxlength: 100, placeholder: 'e.g. gate 3' })),
    h('label', {}, 'Case ', h('input', { name: 'case', maxlength: 100 })),
    h('button', { type: 'submit', id: 'search-submit' }, 'Search'));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const file = form.photo.files[0];
    if (!file) return;
    const data = new FormData();
    data.append('photo', file);
    for (const name of ['mode', 'k', 'checkpoint', 'case']) {
      const value = form[name]?.value?.trim();
      if (value && !(name === 'k' && form.mode?.value !== 'investigation')) data.append(name, value);
    }
    fill(result, h('p', { class: 'muted' }, 'Searching…'));
    try {
      const answer = await upload('/v1/search', data);
      await show(result, file, answer, me);
    } catch (error) {
      fill(result, h('p', { class: 'error', role: 'alert' }, `${error.message} (${error.code ?? 'error'})`));
    }
  });
  fill(view, h('h1', {}, 'Search a photo'),
    h('p', { class: 'note' }, 'Candidates are for a person to review, never a verdict.'), form, result);
}

async function show(result, file, answer, me) {
  const img = h('img', { alt: 'the searched photo', id: 'probe-photo' });
  img.src = URL.createObjectURL(file);
  await img.decode();
  const overlay = svg('svg', { viewBox: `0 0 ${img.naturalWidth} ${img.naturalHeight}`, preserveAspectRatio: 'none' });
  const cards = [];
  answer.faces.forEach((face, index) => {
    if (!face.face) return;
    const box = face.face.box;
    const alerting = face.candidates.some((c) => c.alert);
    overlay.append(svg('rect', { x: box.x, y: box.y, width: box.width, height: box.height, class: alerting ? 'alert' : '' }),
      svg('text', { x: box.x, y: Math.max(14, box.y - 4), 'font-size': Math.max(14, img.naturalWidth / 40) }, String(index + 1)));
    cards.push(faceCard(img, face, index, answer, me));
  });
  const alerts = answer.faces.flatMap((f) => f.candidates).filter((c) => c.alert).length;
  const summary = `${answer.faces_detected} face(s) found${answer.faces_truncated ? ` (the largest ${answer.faces.length} searched)` : ''}; `
    + `${answer.mode} against ${answer.gallery_templates} templates`;
  fill(result,
    h('p', { id: 'search-summary' }, summary, alerts ? h('strong', { class: 'error' }, answer.hits.length ? ` · ${answer.hits.length} alert(s) raised for review by two people` : ` · ${alerts} candidate(s) at an alert threshold`) : ''),
    h('div', { class: 'results' }, h('div', { class: 'photo' }, img, overlay), h('div', {}, cards.length ? cards : h('p', {}, 'No face found.'))));
  announce(alerts ? `${alerts} alert(s)` : summary);
}

function faceCard(img, face, index, answer, me) {
  const probe = figure(cropFrom(img, face.face.box, `face ${index + 1}`), `face ${index + 1}`);
  const canSee = me.permissions.includes('view_photos');
  const candidates = face.candidates.map((c) => h('div', { class: `candidate${c.alert ? ' alert' : ''}`, dataset: { subject: c.subject_id } },
    fetched(thumbnailPath(c.subject_id, c.template_id), `enrolled face of ${c.display_name}`,
      { allowed: canSee, missing: 'thumbnail needs an investigator key' }),
    h('div', { class: 'name' }, `${c.rank}. ${c.display_name}`),
    h('div', { class: 'muted' }, c.external_ref ?? '', ` · ${c.watchlist}`),
    h('div', {}, 'similarity ', h('strong', {}, score(c.similarity))),
    h('div', {}, 'FPIR ', rate(c.fpir), c.fpir_extrapolated ? [' ', badge('extrapolated')] : null),
    c.alert ? badge('alert') : null,
    c.hit_id && me.permissions.includes('review_hits') ? [' ', h('a', { href: `#/review/${c.hit_id}` }, `hit ${c.hit_id}`)] : null));
  const q = face.face.quality;
  return h('section', { class: 'card face-result', 'aria-label': `face ${index + 1}` },
    h('h3', {}, `Face ${index + 1}`, h('span', { class: 'muted' }, ` · detector ${score(q.detector_score)}, eyes ${q.inter_eye_px.toFixed(0)} px apart`)),
    face.searched ? null : h('p', { class: 'muted' }, `not searched: ${face.skipped_reason}`),
    h('div', { class: 'face' }, probe, h('div', { class: 'candidates' },
      candidates.length ? candidates : h('p', { class: 'muted' }, answer.mode === 'identification' ? 'No candidate reaches an alert threshold.' : 'No candidate.'))));
}
