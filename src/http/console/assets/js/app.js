// The console's frame: signing in with a key, the sections the key's role may use, the hash router between them,
// and the live alert stream that runs while signed in whatever section is open.

import { session, get, whenUnauthorized } from './api.js';
import { h, fill, announce } from './dom.js';
import { alerts } from './alerts.js';
import * as search from './search.js';
import * as review from './review.js';
import * as jobs from './jobs.js';
import * as records from './subjects.js';

/** The sections, each offered only to a key whose role has its permission. */
const SECTIONS = [
  { path: 'search', title: 'Search', needs: 'search_identification', view: search },
  { path: 'alerts', title: 'Alerts', needs: 'read_hits', view: alerts },
  { path: 'review', title: 'Review', needs: 'review_hits', view: review },
  { path: 'jobs', title: 'Jobs', needs: 'submit_jobs', view: jobs },
  { path: 'subjects', title: 'Subjects', needs: 'read_subjects', view: records },
  { path: 'watchlists', title: 'Watchlists', needs: 'read_watchlists', view: records.watchlists },
];

const context = { me: null };

function offered() {
  return SECTIONS.filter((section) => context.me.permissions.includes(section.needs));
}

function showSignIn(message = '') {
  context.me = null;
  alerts.stop();
  document.getElementById('nav').hidden = true;
  document.getElementById('who').hidden = true;
  document.getElementById('alert-banner').hidden = true;
  fill(document.getElementById('view'));
  document.getElementById('signin').hidden = false;
  document.getElementById('signin-error').textContent = message;
  document.getElementById('key').value = '';
  document.getElementById('key').focus();
}

async function signIn(key, purpose) {
  session.signIn(key, purpose);
  try {
    context.me = await get('/v1/me');
  } catch (error) {
    session.signOut();
    showSignIn(`${error.message} (${error.code ?? 'error'})`);
    return;
  }
  document.getElementById('signin').hidden = true;
  renderFrame();
  if (context.me.permissions.includes('read_hits')) alerts.start(context);
  route();
}

function renderFrame() {
  const me = context.me;
  const nav = document.getElementById('nav');
  fill(nav, offered().map((section) => h('a', { href: `#/${section.path}`, id: `nav-${section.path}` },
    section.title, section.path === 'alerts' ? h('span', { class: 'count', id: 'alert-count', hidden: true }) : null)));
  nav.hidden = false;
  const purpose = h('input', {
    id: 'purpose-now', value: session.purpose, maxlength: 200, placeholder: 'purpose (case, reason)',
    'aria-label': 'Purpose recorded with every search', title: 'Recorded in the audit trail with each search',
    onchange: (event) => session.setPurpose(event.target.value),
  });
  const scope = me.watchlists ? ` · ${me.watchlists.join(', ')}` : '';
  fill(document.getElementById('who'),
    h('span', { id: 'whoami' }, `${me.name} · ${me.role}${scope}`), purpose,
    h('button', { class: 'secondary', id: 'signout', onclick: () => { session.signOut(); location.hash = ''; showSignIn(); } }, 'Sign out'));
  document.getElementById('who').hidden = false;
}

/** Shows the section the hash names: `#/section/rest…?query`. */
async function route() {
  if (!context.me) return;
  const sections = offered();
  const [path, query = ''] = location.hash.replace(/^#\/?/, '').split('?');
  const [name, ...rest] = path.split('/');
  const section = sections.find((s) => s.path === name) ?? sections[0];
  for (const link of document.querySelectorAll('#nav a')) {
    if (link.id === `nav-${section?.path}`) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  const view = document.getElementById('view');
  if (!section) {
    fill(view, h('p', { class: 'card' }, 'This key has no section of the console (auditors and admins of keys use the API or the command line).'));
    return;
  }
  fill(view);
  view.onkeydown = null;
  try {
    await section.view.render(view, { me: context.me, rest, query: new URLSearchParams(query) });
  } catch (error) {
    fill(view, h('p', { class: 'error', role: 'alert' }, `${error.message} (${error.code ?? 'error'})`));
  }
  document.getElementById('main').focus({ preventScroll: true });
  announce(`${section.title} shown`);
}

document.getElementById('signin-form').addEventListener('submit', (event) => {
  event.preventDefault();
  signIn(document.getElementById('key').value, document.getElementById('purpose').value);
});
window.addEventListener('hashchange', route);
// A section's shortcuts work wherever the focus is on the page (the view's own keys reach it by bubbling).
document.addEventListener('keydown', (event) => {
  const view = document.getElementById('view');
  if (view.onkeydown && !view.contains(event.target)) view.onkeydown(event);
});
whenUnauthorized((message) => {
  session.signOut();
  showSignIn(`Signed out: ${message}`);
});

if (session.key) signIn(session.key, session.purpose);
else showSignIn();
