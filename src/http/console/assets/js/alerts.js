// The live alert queue: checkpoint alerts arrive over the server's event stream while the console is open, stay
// listed (and counted in the menu) until an officer acknowledges them, and are announced as they come.

import { get, post, events } from './api.js';
import { h, fill, score, rate, when, badge, announce } from './dom.js';
import { fetched, thumbnailPath, figure } from './faces.js';

const RETRY_MS = [1000, 2000, 5000, 10000];

function isOpenAlert(hit) {
  return hit.source === 'checkpoint' && !hit.acknowledged_at;
}

export const alerts = {
  open: new Map(),
  controller: null,
  cursor: null,
  me: null,
  view: null,

  /** Loads the open alerts, then follows the stream from the newest hit seen, reconnecting after a failure. */
  async start(context) {
    this.stop();
    this.me = context.me;
    this.controller = new AbortController();
    const { signal } = this.controller;
    try {
      const page = await get('/v1/hits', { source: 'checkpoint', open: 'true', limit: 500 });
      for (const hit of page.items) if (isOpenAlert(hit)) this.open.set(hit.id, hit);
    } catch { /* the stream below still delivers new ones */ }
    this.changed(null);
    for (let attempt = 0; !signal.aborted; attempt += 1) {
      try {
        for await (const message of events('/v1/alerts/stream', { after: this.cursor ?? undefined }, signal)) {
          attempt = 0;
          this.receive(message);
        }
      } catch (error) {
        if (signal.aborted || error.status === 401 || error.status === 403) return;
      }
      await new Promise((done) => setTimeout(done, RETRY_MS[Math.min(attempt, RETRY_MS.length - 1)]));
    }
  },

  stop() {
    this.controller?.abort();
    this.controller = null;
    this.open.clear();
    this.cursor = null;
  },

  receive(message) {
    let hit;
    try { hit = JSON.parse(message.data); } catch { return; }
    if (message.event === 'hit' && message.id) this.cursor = message.id;
    const fresh = message.event === 'hit' && isOpenAlert(hit) && !this.open.has(hit.id);
    if (isOpenAlert(hit)) this.open.set(hit.id, hit);
    else this.open.delete(hit.id);
    this.changed(fresh ? hit : null);
  },

  /** Updates the count, the banner and, when it is shown, the queue; `fresh` is a new alert to announce. */
  changed(fresh) {
    const count = document.getElementById('alert-count');
    if (count) {
      count.textContent = String(this.open.size);
      count.hidden = this.open.size === 0;
    }
    const banner = document.getElementById('alert-banner');
    if (fresh) {
      const where = fresh.checkpoint ? ` at ${fresh.checkpoint}` : '';
      fill(banner, `Alert${where}: possible match with ${fresh.display_name ?? `subject ${fresh.subject_id}`} (${fresh.watchlist}) — `,
        h('a', { href: '#/alerts' }, 'open the alert queue'));
      banner.hidden = false;
      announce(`New alert${where}`);
    }
    if (this.open.size === 0) banner.hidden = true;
    if (this.view?.isConnected) this.draw();
  },

  async render(view, { me }) {
    this.view = view;
    this.me = me;
    this.draw();
  },

  draw() {
    const me = this.me;
    const items = [...this.open.values()].sort((a, b) => b.id - a.id);
    fill(this.view, h('h1', {}, 'Open alerts'),
      h('p', { class: 'note' }, 'Live: alerts appear as checkpoints raise them and stay until acknowledged. An alert is a candidate for review, not an identification.'),
      items.length ? h('div', { class: 'grid', id: 'alert-list' }, items.map((hit) => this.card(hit, me)))
        : h('p', { id: 'no-alerts' }, 'No open alert.'));
  },

  card(hit, me) {
    const acknowledge = async (event) => {
      event.target.disabled = true;
      try {
        this.receive({ event: 'hit_updated', data: JSON.stringify(await post(`/v1/hits/${hit.id}/acknowledge`)) });
      } catch (error) {
        event.target.disabled = false;
        event.target.after(h('p', { class: 'error' }, error.message));
      }
    };
    return h('article', { class: 'card alert-card', dataset: { hit: hit.id } },
      h('h3', {}, hit.display_name ?? `subject ${hit.subject_id}`, ' ', badge('alert')),
      // Faces only for keys that may see them (an officer's key sees names and scores; reviewers compare faces).
      me.permissions.includes('review_hits') ? h('div', { class: 'pair' },
        figure(fetched(`/v1/hits/${hit.id}/probe.jpg`, 'the traveller', { allowed: hit.has_probe, missing: 'no probe crop kept' }), 'traveller'),
        figure(fetched(thumbnailPath(hit.subject_id, hit.template_id), 'enrolled face', { allowed: me.permissions.includes('view_photos'), missing: 'enrolled face not shown' }), 'enrolled')) : null,
      h('dl', { class: 'facts' },
        h('dt', {}, 'when'), h('dd', {}, when(hit.created_at)),
        h('dt', {}, 'checkpoint'), h('dd', {}, hit.checkpoint ?? '—'),
        h('dt', {}, 'watchlist'), h('dd', {}, hit.watchlist),
        h('dt', {}, 'reference'), h('dd', {}, hit.external_ref ?? '—'),
        h('dt', {}, 'similarity'), h('dd', {}, score(hit.similarity)),
        h('dt', {}, 'FPIR'), h('dd', {}, rate(hit.fpir), hit.fpir_extrapolated ? [' ', badge('extrapolated')] : null),
        h('dt', {}, 'searched by'), h('dd', {}, hit.searched_by.name)),
      me.permissions.includes('acknowledge_hits') ? h('button', { onclick: acknowledge, class: 'ack' }, 'Acknowledge') : null,
      me.permissions.includes('review_hits') ? [' ', h('a', { href: `#/review/${hit.id}` }, 'Review')] : null);
  },
};

export const render = alerts.render.bind(alerts);
