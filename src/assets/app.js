// fvtt-relay owner UI: /admin (admin.html) and /pair/<code> (pair.html). Plain JS, no build.
// The pages run under a CSP without 'unsafe-inline' scripts, so every handler is bound here.
// Server data only ever reaches the DOM as text (textContent / Text nodes / input.value),
// never as markup: a world title or an event payload cannot inject HTML.
'use strict';
(function () {
const $ = (id) => document.getElementById(id);
const PAGE = document.body.dataset.page;
let csrf = '';
let signedIn = false;
let timers = [];

// -- DOM helpers
// el('li', {class: 'x', onclick: fn}, 'text', child…): strings become Text nodes.
function el(tag, props, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'checked' || k === 'value' || k === 'disabled') e[k] = v;
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of kids.flat(3)) {
    if (c !== undefined && c !== null && c !== false) e.append(c);
  }
  return e;
}
function fill(list, items, empty) {
  list.replaceChildren(...items);
  if (!items.length) list.append(el('li', { class: 'empty' }, empty));
}
function setMsg(id, text, kind) {
  const m = $(id);
  if (!m) return;
  m.textContent = text || '';
  // Only the kind changes: other classes (the notice's full-width placement) stay.
  m.classList.add('msg');
  m.classList.remove('err', 'ok');
  if (text && kind) m.classList.add(kind);
}
function badge(text, kind) {
  return el('span', { class: 'badge ' + (kind || '') }, text);
}
function str(v) {
  return typeof v === 'string' ? v : v === undefined || v === null ? '' : String(v);
}

// -- Time
// Rounded to the nearest unit: a key made to expire in 30 days reads "in 30 d", not "29 d".
function span(s) {
  s = Math.max(0, Math.round(s));
  if (s < 60) return s + ' s';
  if (s < 3570) return Math.round(s / 60) + ' min';
  if (s < 84600) return Math.round(s / 3600) + ' h';
  return Math.round(s / 86400) + ' d';
}
function clock(s) {
  s = Math.max(0, Math.ceil(s));
  return Math.floor(s / 60) + ':' + String(s % 60).padStart(2, '0');
}
// A <time> saying "3 min ago" / "in 2 h", the full date in its tooltip.
// Panels redraw only when their data changes, so every such <time> carries its instant
// (data-ms) and ageTimes() rewrites the words each second.
function ago(ms) {
  const s = (Date.now() - ms) / 1000;
  return s >= 0 ? span(s) + ' ago' : 'in ' + span(-s);
}
function when(ms, never) {
  if (typeof ms !== 'number' || !ms) return never || 'never';
  const d = new Date(ms);
  return el('time', { datetime: d.toISOString(), title: d.toLocaleString(), 'data-ms': ms }, ago(ms));
}
function ageTimes() {
  for (const t of document.querySelectorAll('time[data-ms]')) {
    const text = ago(Number(t.dataset.ms));
    if (t.textContent !== text) t.textContent = text;
  }
}
function every(ms, fn) {
  timers.push(setInterval(() => { if (!document.hidden) fn(); }, ms));
}
function stopTimers() {
  timers.forEach(clearInterval);
  timers = [];
}

// -- API
class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}
// Same-origin JSON call; state-changing ones carry the CSRF token next to the cookie.
async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (method !== 'GET' && csrf) headers['X-CSRF-Token'] = csrf;
  const opt = { method, headers, credentials: 'same-origin', cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    opt.body = JSON.stringify(body);
  }
  let r;
  try {
    r = await fetch(path, opt);
  } catch (_) {
    throw new ApiError(0, 'The relay cannot be reached.');
  }
  const text = await r.text().catch(() => '');
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
  if (!r.ok) {
    if (r.status === 401 && signedIn) sessionLost();
    const msg = data && typeof data.error === 'string' && data.error
      ? data.error : 'HTTP ' + r.status + (r.statusText ? ' ' + r.statusText : '');
    throw new ApiError(r.status, msg);
  }
  return data && typeof data === 'object' ? data : {};
}
const enc = encodeURIComponent;

// -- Session
function showLogin(msg) {
  signedIn = false;
  stopTimers();
  closeEvents();
  if ($('new-key')) onKeyDone(); // a shown-once key does not outlive the session
  $('app').hidden = true;
  $('logout').hidden = true;
  if ($('nav')) $('nav').hidden = true;
  $('login').hidden = false;
  setMsg('login-msg', msg, 'err');
  $('login-key').focus();
}
function sessionLost() {
  showLogin('Your session has ended. Sign in again.');
}
function enter() {
  signedIn = true;
  $('login').hidden = true;
  $('app').hidden = false;
  $('logout').hidden = false;
  if ($('nav')) $('nav').hidden = false;
  setMsg('login-msg', '');
  if (PAGE === 'pair') pairStart(); else adminStart();
}
async function onLogin(ev) {
  ev.preventDefault();
  const input = $('login-key');
  const key = input.value.trim();
  if (!key) return;
  const btn = ev.target.querySelector('button');
  btn.disabled = true;
  setMsg('login-msg', 'Signing in…');
  try {
    const s = await api('POST', '/admin/api/login', { key });
    csrf = str(s.csrfToken);
    input.value = '';
    enter();
  } catch (e) {
    setMsg('login-msg', e.message, 'err');
    input.select();
  } finally {
    btn.disabled = false;
  }
}
async function onLogout() {
  try { await api('POST', '/admin/api/logout'); } catch (_) { /* signed out either way */ }
  csrf = '';
  showLogin('Signed out.');
}
async function boot() {
  $('login-form').addEventListener('submit', onLogin);
  $('logout').addEventListener('click', onLogout);
  try {
    const s = await api('GET', '/admin/api/session');
    if (s.signedIn) {
      csrf = str(s.csrfToken);
      enter();
    } else {
      showLogin(str(s.reason));
    }
  } catch (e) {
    showLogin(e.message);
  }
}

// -- Admin page
const A = { worlds: [], scopes: null, seen: {}, data: {}, bound: false, code: null };

// Load one panel; errors show in the notice line instead of breaking the others.
async function load(name, path, render) {
  try {
    const data = await api('GET', path);
    const json = JSON.stringify(data);
    // Reachable again: a failure notice about this panel goes.
    if ($('notice').textContent.startsWith(PANEL[name] + ' ')) setMsg('notice', '');
    if (A.seen[name] === json) return; // unchanged: keep focus and open <details>
    A.seen[name] = json;
    A.data[name] = data;
    render(data);
  } catch (e) {
    if (e.status !== 401) setMsg('notice', PANEL[name] + ' could not be loaded: ' + e.message, 'err');
  }
}
const PANEL = { worlds: 'Worlds', requests: 'Pair requests', keys: 'API keys', tokens: 'Connection tokens', scopes: 'Scopes' };
const loadWorlds = () => load('worlds', '/admin/api/worlds', renderWorlds);
const loadRequests = () => load('requests', '/admin/api/pair-requests', renderRequests);
const loadKeys = () => load('keys', '/admin/api/keys', renderKeys);
const loadTokens = () => load('tokens', '/admin/api/tokens', renderTokens);
const loadScopes = () => load('scopes', '/admin/api/scopes', renderScopes);

// Run a state-changing call from a button; refresh what it changed.
async function act(btn, method, path, body, after) {
  btn.disabled = true;
  try {
    await api(method, path, body);
    setMsg('notice', '');
    await Promise.all(after.map((f) => f()));
  } catch (e) {
    setMsg('notice', e.message, 'err');
  } finally {
    btn.disabled = false;
  }
}
function worldName(clientId) {
  const w = A.worlds.find((x) => x.clientId === clientId);
  return w ? str(w.customName || w.worldTitle || w.worldId) || clientId : clientId;
}
function system(o) {
  const name = str(o.systemTitle || o.systemId);
  return name ? name + (o.systemVersion ? ' ' + str(o.systemVersion) : '') : 'unknown system';
}
function count(id, n) {
  $(id).textContent = n ? String(n) : '';
}

// -- Cross-world permissions (relay-protocol.md §5.8): targets (clientIds or *) and scopes.
function csv(v) {
  return Array.isArray(v) ? v.map(str).join(', ') : str(v);
}
// Two inputs (targets, scopes) that say exactly what they grant; `vals()` reads them.
function grantFields(idp, targets, scopes) {
  const t = el('input', { id: idp + '-targets', type: 'text', value: csv(targets), spellcheck: 'false',
    placeholder: 'clientIds, comma-separated, or *' });
  const s = el('input', { id: idp + '-scopes', type: 'text', value: csv(scopes), spellcheck: 'false',
    placeholder: 'e.g. roll:execute, entity:read' });
  const box = el('div', { class: 'grant' },
    el('label', { for: idp + '-targets' }, 'May send requests to'), t,
    el('label', { for: idp + '-scopes' }, 'With scopes'), s);
  return { box, vals: () => ({ allowedTargets: t.value, remoteScopes: s.value }) };
}

function renderWorlds(d) {
  A.worlds = Array.isArray(d.worlds) ? d.worlds : [];
  count('world-count', A.worlds.length);
  fill($('world-list'), A.worlds.map((w) => {
    const name = worldName(w.clientId);
    return el('li', { class: 'item' },
      el('div', { class: 'grow' },
        el('div', { class: 'title' }, w.isOnline ? badge('online', 'ok') : badge('offline', 'off'), ' ', el('strong', {}, name)),
        el('div', { class: 'meta' }, system(w), ' · Foundry ', str(w.foundryVersion) || '?'),
        el('div', { class: 'meta' }, w.isOnline ? ['connected ', when(w.connectedSince)] : ['last seen ', when(w.lastSeen)],
          ' · paired ', when(w.pairedAt, 'unknown')),
        Array.isArray(w.users) && w.users.length ? el('div', { class: 'meta' }, 'players: ',
          w.users.map((u) => str(u.name) + (u.role >= 4 ? ' (GM)' : '') + (u.active ? ' ●' : '')).join(', ')) : null,
        el('div', { class: 'meta mono' }, str(w.clientId), w.serverOrigin ? ' · ' + str(w.serverOrigin) : ''),
        worldWhy(w),
        crossWorld(w)),
      el('div', { class: 'actions' },
        el('button', { type: 'button', class: 'danger small', onclick: (ev) => {
          if (!confirm('Unpair "' + name + '"? Its connection tokens stop working and it disconnects.')) return;
          act(ev.currentTarget, 'DELETE', '/admin/api/worlds/' + enc(w.clientId), undefined, [loadWorlds, loadTokens]);
        } }, 'Unpair')));
  }), 'No worlds yet: approve a pair request or use a pairing code.');
  renderKeyWorlds();
  // Event rows named by clientId before the world was known get its name.
  for (const b of document.querySelectorAll('#ev-list strong[data-client]')) {
    const n = worldName(b.dataset.client);
    if (n !== b.dataset.client) b.textContent = n;
  }
  // Keys and tokens show world names: redraw them with the new ones.
  if (A.data.keys) renderKeys(A.data.keys);
  if (A.data.tokens) renderTokens(A.data.tokens);
}

// "Why is my world offline?": the last link event in words (and a refusal while online,
// e.g. another browser holding the slot), then the world's recent link events.
function worldWhy(w) {
  const hist = Array.isArray(w.history) ? w.history : [];
  const last = hist.length ? hist[hist.length - 1] : null;
  let line = null;
  if (last && last.kind !== 'connected' && (!w.isOnline || last.kind === 'refused')) {
    line = [str(last.text), ' · ', when(last.at)];
  } else if (!w.isOnline && w.offlineReason) {
    line = str(w.offlineReason);
  }
  const notice = w.lastNotice && typeof w.lastNotice === 'object' && w.lastNotice.text
    ? el('p', { class: 'meta' }, 'Module notice: ', str(w.lastNotice.text), ' · ', when(w.lastNotice.at)) : null;
  return [
    line ? el('p', { class: 'why' + (w.isOnline ? ' warn' : '') }, line) : null,
    notice,
    hist.length ? el('details', { class: 'meta history' },
      el('summary', {}, 'Connection history (' + hist.length + ')'),
      el('ul', {}, hist.slice().reverse().map((e) => el('li', {}, when(e.at), ': ', str(e.text))))) : null,
  ];
}

function crossWorld(w) {
  const t = Array.isArray(w.allowedTargets) ? w.allowedTargets : [];
  const sc = Array.isArray(w.remoteScopes) ? w.remoteScopes : [];
  const f = grantFields('cw-' + str(w.clientId), t, sc);
  const summary = t.length && sc.length
    ? 'cross-world: to ' + t.map((x) => x === '*' ? 'every other world' : worldName(str(x))).join(', ') + ' · ' + sc.map(str).join(', ')
    : 'cross-world: not allowed';
  return el('details', { class: 'meta' }, el('summary', {}, summary), f.box,
    el('button', { type: 'button', class: 'small', onclick: (ev) =>
      act(ev.currentTarget, 'PATCH', '/admin/api/worlds/' + enc(w.clientId), f.vals(), [loadWorlds]) }, 'Save'));
}

function renderRequests(d) {
  const reqs = Array.isArray(d.requests) ? d.requests : [];
  const pending = reqs.filter((q) => q.status === 'pending').length;
  count('req-count', pending);
  fill($('req-list'), reqs.map((q) => {
    const code = str(q.code);
    const open = q.status === 'pending';
    // An upgrade asks for cross-world permission: approving grants exactly these fields.
    const cur = A.worlds.find((x) => x.clientId === q.clientId) || {};
    const g = q.upgradeOnly && open ? grantFields('rq-' + code,
      (q.requestedTargetClients || []).length ? q.requestedTargetClients : cur.allowedTargets || [],
      (q.requestedRemoteScopes || []).length ? q.requestedRemoteScopes : cur.remoteScopes || []) : null;
    return el('li', { class: 'item' + (open ? ' attention' : '') },
      el('div', { class: 'grow' },
        el('div', { class: 'title' }, badge(str(q.status) || '?', open ? 'warn' : 'off'), ' ',
          el('strong', {}, str(q.worldTitle || q.worldId) || 'untitled world'),
          q.upgradeOnly ? [' ', badge('upgrade')] : null),
        el('div', { class: 'meta' }, system(q), ' · Foundry ', str(q.foundryVersion) || '?'),
        el('div', { class: 'meta' }, 'asked ', when(q.createdAt, '?'), ' · expires ', when(q.expiresAt, '?'),
          ' · ', el('a', { href: '/pair/' + enc(code) }, 'open')),
        g ? g.box : null),
      open ? el('div', { class: 'actions' },
        el('button', { type: 'button', class: 'small', onclick: (ev) =>
          act(ev.currentTarget, 'POST', '/admin/api/pair-requests/' + enc(code) + '/approve', g ? g.vals() : {}, [loadRequests, loadWorlds, loadTokens]) }, 'Approve'),
        el('button', { type: 'button', class: 'danger small', onclick: (ev) =>
          act(ev.currentTarget, 'POST', '/admin/api/pair-requests/' + enc(code) + '/deny', {}, [loadRequests]) }, 'Deny'))
        : null);
  }), 'Nothing waiting.');
}

function renderKeys(d) {
  const keys = Array.isArray(d.keys) ? d.keys : [];
  count('key-count', keys.length);
  fill($('key-list'), keys.map((k) => {
    const scopes = Array.isArray(k.scopes) ? k.scopes.map(str) : [];
    const ids = Array.isArray(k.clientIds) ? k.clientIds.map(str) : [];
    const expired = typeof k.expiresAt === 'number' && k.expiresAt && k.expiresAt < Date.now();
    return el('li', { class: 'item' },
      el('div', { class: 'grow' },
        el('div', { class: 'title' }, el('strong', {}, str(k.name) || '(no name)'), ' ',
          el('span', { class: 'mono muted' }, str(k.prefix) + '…'), expired ? [' ', badge('expired', 'bad')] : null),
        el('details', { class: 'meta' }, el('summary', {}, scopes.length + ' scope' + (scopes.length === 1 ? '' : 's')),
          el('div', { class: 'mono small' }, scopes.join(' '))),
        el('div', { class: 'meta' }, ids.length ? 'worlds: ' + ids.map(worldName).join(', ') : 'every world',
          k.userId ? ' · user ' + str(k.userId) : '',
          k.rateLimitPerMinute ? ' · ' + str(k.rateLimitPerMinute) + '/min' : ''),
        el('div', { class: 'meta' }, 'created ', when(k.createdAt, '?'), ' · used ', when(k.lastUsedAt),
          ' · ', k.expiresAt ? [expired ? 'expired ' : 'expires ', when(k.expiresAt)] : 'no expiry')),
      el('div', { class: 'actions' },
        el('button', { type: 'button', class: 'danger small', onclick: (ev) => {
          if (!confirm('Revoke the key "' + str(k.name) + '"? Apps using it stop working at once.')) return;
          act(ev.currentTarget, 'DELETE', '/admin/api/keys/' + enc(str(k.id)), undefined, [loadKeys]);
        } }, 'Revoke')));
  }), 'No API keys yet.');
}

function renderTokens(d) {
  const toks = Array.isArray(d.tokens) ? d.tokens : [];
  count('token-count', toks.length);
  fill($('token-list'), toks.map((t) => {
    const ips = Array.isArray(t.allowedIps) ? t.allowedIps.map(str) : [];
    return el('li', { class: 'item' },
      el('div', { class: 'grow' },
        el('div', { class: 'title' }, el('strong', {}, worldName(str(t.clientId))), ' ',
          el('span', { class: 'mono muted' }, str(t.prefix) + '…')),
        el('div', { class: 'meta mono' }, str(t.clientId)),
        el('div', { class: 'meta' }, ips.length ? 'from ' + ips.join(', ') : 'from any address',
          ' · created ', when(t.createdAt, '?'), ' · used ', when(t.lastUsedAt))),
      el('div', { class: 'actions' },
        el('button', { type: 'button', class: 'danger small', onclick: (ev) => {
          if (!confirm('Revoke this connection token? ' + worldName(str(t.clientId)) + ' disconnects until it pairs again.')) return;
          act(ev.currentTarget, 'DELETE', '/admin/api/tokens/' + enc(str(t.id)), undefined, [loadTokens, loadWorlds]);
        } }, 'Revoke')));
  }), 'No connection tokens.');
}

// Scope checkboxes; the read-only defaults start checked, like a key created without scopes.
function renderScopes(d) {
  const all = Array.isArray(d.all) ? d.all.map(str) : [];
  A.scopes = { all, def: Array.isArray(d.default) ? d.default.map(str) : [] };
  $('key-scopes').replaceChildren(...all.map((s) => el('label', { class: 'check' },
    el('input', { type: 'checkbox', name: 'scope', value: s, checked: A.scopes.def.includes(s) }), ' ', s)));
}
function setScopes(pick) {
  for (const c of $('key-scopes').querySelectorAll('input')) c.checked = pick(c.value);
}
// World checkboxes for a new key, keeping what was already checked.
function renderKeyWorlds() {
  const box = $('key-worlds');
  const was = new Set([...box.querySelectorAll('input:checked')].map((c) => c.value));
  box.replaceChildren(...A.worlds.map((w) => el('label', { class: 'check' },
    el('input', { type: 'checkbox', name: 'world', value: str(w.clientId), checked: was.has(w.clientId) }), ' ', worldName(w.clientId))));
  if (!A.worlds.length) box.append(el('span', { class: 'muted small' }, 'No worlds paired yet.'));
}

async function onCreateKey(ev) {
  ev.preventDefault();
  const name = $('key-name').value.trim();
  const scopes = [...$('key-scopes').querySelectorAll('input:checked')].map((c) => c.value);
  if (!name) return setMsg('key-msg', 'Give the key a name.', 'err');
  if (!scopes.length) return setMsg('key-msg', 'Pick at least one scope.', 'err');
  const body = { name, scopes, clientIds: [...$('key-worlds').querySelectorAll('input:checked')].map((c) => c.value) };
  const user = $('key-user').value.trim();
  if (user) body.userId = user;
  const days = parseInt($('key-days').value, 10);
  if (days > 0) body.expiresInDays = days;
  const rate = parseInt($('key-rate').value, 10);
  if (rate > 0) body.rateLimitPerMinute = rate;
  const btn = $('key-submit');
  btn.disabled = true;
  setMsg('key-msg', 'Creating…');
  try {
    const r = await api('POST', '/admin/api/keys', body);
    $('new-key-name').textContent = str(r.name) || name;
    $('new-key-value').value = str(r.key);
    $('new-key').hidden = false;
    fitKey();
    $('key-form').reset();
    if (A.scopes) setScopes((s) => A.scopes.def.includes(s));
    $('key-create').open = false;
    setMsg('key-msg', '');
    $('new-key').scrollIntoView({ block: 'nearest' });
    $('new-key-value').select();
    await loadKeys();
  } catch (e) {
    setMsg('key-msg', e.message, 'err');
  } finally {
    btn.disabled = false;
  }
}
// Clipboard API needs a secure context (https or localhost); else fall back to a selection.
async function onCopy() {
  const input = $('new-key-value');
  const btn = $('new-key-copy');
  let ok = false;
  try {
    if (navigator.clipboard && window.isSecureContext) { await navigator.clipboard.writeText(input.value); ok = true; }
  } catch (_) { ok = false; }
  if (!ok) {
    input.focus();
    input.select();
    try { ok = document.execCommand('copy'); } catch (_) { ok = false; }
  }
  btn.textContent = ok ? 'Copied' : 'Press Ctrl+C';
  setTimeout(() => { btn.textContent = 'Copy'; }, 2500);
}
// The key is shown whole, wrapped: the box grows to its lines.
function fitKey() {
  const t = $('new-key-value');
  t.style.height = 'auto';
  t.style.height = t.scrollHeight + 2 + 'px';
}
function onKeyDone() {
  $('new-key-value').value = '';
  $('new-key').hidden = true;
}

async function onNewCode() {
  const btn = $('code-new');
  btn.disabled = true;
  try {
    const r = await api('POST', '/admin/api/pairing-codes', {});
    // Count down from the relative expiresIn so a skewed browser clock does not matter.
    const ttl = typeof r.expiresIn === 'number' ? r.expiresIn * 1000 : (r.expiresAt || 0) - Date.now();
    A.code = { code: str(r.code), until: Date.now() + ttl };
    $('code-value').textContent = A.code.code;
    $('code-box').hidden = false;
    tickCode();
    btn.textContent = 'Another code';
  } catch (e) {
    setMsg('notice', e.message, 'err');
  } finally {
    btn.disabled = false;
  }
}
function tickCode() {
  if (!A.code) return;
  const left = (A.code.until - Date.now()) / 1000;
  $('code-box').classList.toggle('expired', left <= 0);
  $('code-timer').textContent = left > 0 ? 'valid for ' + clock(left) : 'expired';
}

// -- Live events over /ws/events (the session cookie authenticates the upgrade)
const EV = { ws: null, retry: 0, timer: 0, paused: false, held: [], max: 100 };
function evStatus(text, kind) {
  const b = $('ev-status');
  if (!b) return;
  b.textContent = text;
  b.className = 'badge ' + kind;
}
function openEvents() {
  if (!signedIn || EV.ws || PAGE !== 'admin') return;
  const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws/events';
  let ws;
  try { ws = new WebSocket(url); } catch (_) { evStatus('unavailable', 'bad'); return; }
  EV.ws = ws;
  evStatus('connecting', 'warn');
  let opened = false;
  ws.onopen = () => {
    opened = true;
    $('ev-why').hidden = true;
    EV.retry = 0;
    ws.send(JSON.stringify({ type: 'subscribe', events: ['all'] }));
    evStatus('live', 'ok');
  };
  ws.onmessage = (m) => {
    let msg;
    try { msg = JSON.parse(m.data); } catch (_) { return; }
    if (msg && typeof msg === 'object') onEvent(msg);
  };
  ws.onclose = (c) => {
    if (EV.ws !== ws) return;
    EV.ws = null;
    evStatus(c.reason ? 'closed: ' + c.reason : 'reconnecting', 'off');
    if (!opened) {
      // The upgrade was refused (a browser is told nothing more): say what usually causes it.
      evStatus('cannot connect', 'bad');
      const why = $('ev-why');
      why.textContent = 'The relay refused the live view\'s WebSocket. It accepts its own origin ' +
        '(the Host this page was loaded from, and --public-url); a reverse proxy that rewrites ' +
        'Host breaks that: pass Host through, set --public-url, or add ' + location.origin +
        ' to --allowed-ws-origins (or sign in again if the session expired). The relay logs each refused origin. Retrying…';
      why.hidden = false;
    }
    if (!signedIn) return;
    // Back off 1, 2, 4 … 30 s; a 401 on the upgrade also lands here.
    EV.timer = setTimeout(openEvents, Math.min(30000, 1000 * 2 ** EV.retry++));
  };
}
function closeEvents() {
  clearTimeout(EV.timer);
  const ws = EV.ws;
  EV.ws = null;
  if (ws) ws.close(1000);
  evStatus('off', 'off');
}
let worldsSoon = 0;
function onEvent(msg) {
  const type = str(msg.type) || '?';
  if (type === 'world-connected' || type === 'world-disconnected') {
    clearTimeout(worldsSoon);
    worldsSoon = setTimeout(() => { loadWorlds(); loadTokens(); }, 300);
  }
  let data = msg.data;
  let summary = '';
  if (type === 'snapshot') {
    data = msg.state;
    const w = data && Array.isArray(data.worlds) ? data.worlds.length : null;
    summary = w === null ? 'current state' : w + ' world' + (w === 1 ? '' : 's') + ' online';
  } else if (type === 'error') {
    summary = str(msg.error || msg.message);
  } else if (type === 'module-notify' && data && typeof data === 'object') {
    summary = str(data.details) + (data.actor ? ' (by ' + str(data.actor) + ')' : '');
  }
  const cid = str(msg.clientId);
  // A world's first world-connected comes before the worlds panel knows it: its title is
  // in the event.
  const title = data && typeof data === 'object' ? str(data.customName || data.worldTitle) : '';
  const known = cid && worldName(cid) !== cid;
  const row = { type, ts: typeof msg.timestamp === 'number' ? msg.timestamp : Date.now(),
    cid, who: cid ? (known ? worldName(cid) : title || cid) : '', summary, data };
  if (EV.paused) {
    EV.held.push(row);
    if (EV.held.length > EV.max) EV.held.shift();
    $('ev-held').textContent = EV.held.length + ' held';
  } else {
    addEvent(row);
  }
}
function addEvent(row) {
  let json = '';
  try { json = row.data === undefined ? '' : JSON.stringify(row.data); } catch (_) { json = ''; }
  const brief = row.summary || (json.length > 160 ? json.slice(0, 160) + '…' : json);
  const t = new Date(row.ts);
  const kind = row.type === 'error' ? ' bad' : row.type.startsWith('world-') ? ' ok' : '';
  const li = el('li', {},
    el('details', {},
      el('summary', {},
        el('time', { datetime: t.toISOString() }, t.toLocaleTimeString()), ' ',
        el('span', { class: 'badge' + kind }, row.type), ' ',
        row.who ? el('strong', { 'data-client': row.cid }, row.who) : null, ' ',
        el('span', { class: 'mono muted' }, brief)),
      // tabindex: a scrollable region keyboard users can reach and scroll (axe
      // scrollable-region-focusable).
      json ? el('pre', { tabindex: 0, 'aria-label': row.type + ' event data' }, JSON.stringify(row.data, null, 2)) : null));
  const list = $('ev-list');
  list.prepend(li);
  while (list.children.length > EV.max) list.lastElementChild.remove();
}
function onPause() {
  EV.paused = !EV.paused;
  $('ev-pause').textContent = EV.paused ? 'Resume' : 'Pause';
  $('ev-pause').setAttribute('aria-pressed', String(EV.paused));
  if (!EV.paused) {
    EV.held.splice(0).forEach(addEvent);
    $('ev-held').textContent = '';
  }
}

function adminStart() {
  if (!A.bound) {
    A.bound = true;
    $('key-form').addEventListener('submit', onCreateKey);
    $('new-key-copy').addEventListener('click', onCopy);
    $('new-key-done').addEventListener('click', onKeyDone);
    $('code-new').addEventListener('click', onNewCode);
    $('scopes-default').addEventListener('click', () => setScopes((s) => A.scopes && A.scopes.def.includes(s)));
    $('scopes-all').addEventListener('click', () => setScopes(() => true));
    $('scopes-none').addEventListener('click', () => setScopes(() => false));
    $('ev-pause').addEventListener('click', onPause);
    $('ev-clear').addEventListener('click', () => {
      $('ev-list').replaceChildren();
      EV.held = [];
      $('ev-held').textContent = '';
    });
  }
  A.seen = {};
  A.data = {};
  setMsg('notice', '');
  // Worlds first: the other panels show world names.
  loadWorlds().then(() => Promise.all([loadRequests(), loadKeys(), loadTokens(), loadScopes()]));
  every(3000, loadRequests);
  every(15000, () => { loadWorlds(); loadTokens(); loadKeys(); });
  every(1000, tickCode);
  every(1000, ageTimes);
  openEvents();
}

// -- Pair page
const P = { code: '', until: 0, status: '', busy: false, bound: false, last: {}, grant: null };
const PAIR_TEXT = {
  approved: 'Paired: return to Foundry. The module finishes pairing within a few seconds.',
  upgraded: 'Approved: the world may now make the cross-world requests you granted. Return to Foundry.',
  exchanged: 'Paired. The world has its connection token.',
  denied: 'Denied. The module has been told no.',
  expired: 'This request has expired. Start pairing again from the module.',
};
function pairText(id, text) {
  $(id).textContent = text;
}
async function pairLoad() {
  if (P.busy) return;
  try {
    const r = await api('GET', '/admin/api/pair-requests/' + enc(P.code));
    renderPair(r.request && typeof r.request === 'object' ? r.request : r);
  } catch (e) {
    if (e.status === 401) return;
    if ((e.status === 404 || e.status === 410) && P.status && P.status !== 'pending') {
      stopTimers(); // answered here, then removed by the relay: keep the answer shown
    } else if (e.status === 404 || e.status === 410) {
      // Only the error: no "this world asks to connect" for a request that is not there.
      $('pair-intro').hidden = true;
      $('pair-info').hidden = true;
      $('pair-upgrade').hidden = true;
      $('pair-actions').hidden = true;
      setMsg('pair-status', 'There is no pending request with this code: it expired or was already answered. Start pairing again from the module.', 'err');
      stopTimers();
    } else {
      setMsg('pair-status', e.message, 'err');
    }
  }
}
function renderPair(q) {
  P.last = q;
  $('pair-info').hidden = false;
  pairText('pi-title', str(q.worldTitle) || 'untitled world');
  pairText('pi-world', str(q.worldId) || '?');
  pairText('pi-system', system(q));
  pairText('pi-foundry', str(q.foundryVersion) || '?');
  $('pair-upgrade').hidden = !q.upgradeOnly;
  pairGrant(q);
  if (typeof q.expiresIn === 'number') P.until = Date.now() + q.expiresIn * 1000;
  else if (typeof q.expiresAt === 'number') P.until = q.expiresAt;
  P.status = str(q.status) || 'pending';
  const open = P.status === 'pending';
  const expired = P.status === 'expired';
  $('pair-intro').hidden = !open;
  // Expired: the buttons stay in place, disabled, so the page says plainly it is too late.
  $('pair-actions').hidden = !open && !expired;
  if (expired) $('pair-approve').disabled = $('pair-deny').disabled = true;
  if (open) setMsg('pair-status', '');
  else {
    const key = P.status === 'approved' && q.upgradeOnly ? 'upgraded' : P.status;
    setMsg('pair-status', PAIR_TEXT[key] || 'Status: ' + P.status, P.status === 'denied' || P.status === 'expired' ? 'err' : 'ok');
  }
  if (!open) stopTimers();
  tickPair();
}
// An upgrade asks for cross-world permission: the fields say exactly what approving grants.
async function pairGrant(q) {
  const box = $('pair-grant');
  if (!q.upgradeOnly || str(q.status) !== 'pending') { box.hidden = true; P.grant = null; return; }
  if (P.grant) return;
  let worlds = [];
  try { worlds = (await api('GET', '/admin/api/worlds')).worlds || []; } catch (_) { /* shown without names */ }
  const cur = worlds.find((w) => w.clientId === q.clientId) || {};
  const req = (k) => Array.isArray(q[k]) && q[k].length ? q[k] : null;
  P.grant = grantFields('pg', req('requestedTargetClients') || cur.allowedTargets || [],
    req('requestedRemoteScopes') || cur.remoteScopes || []);
  const others = worlds.filter((w) => w.clientId !== q.clientId)
    .map((w) => str(w.worldTitle || w.worldId) + ' (' + str(w.clientId) + ')').join(', ');
  box.replaceChildren(P.grant.box, el('p', { class: 'muted small' }, 'Other worlds: ' + (others || 'none')));
  box.hidden = false;
}
function tickPair() {
  if (!P.until) return;
  const left = (P.until - Date.now()) / 1000;
  pairText('pi-expires', P.status === 'expired' ? 'expired' : P.status !== 'pending' ? '—' : left > 0 ? 'in ' + clock(left) : 'expired');
  // At zero the relay refuses an answer: the buttons go, and the page says why.
  if (P.status === 'pending' && left <= 0 && !P.busy) {
    $('pair-approve').disabled = $('pair-deny').disabled = true;
    setMsg('pair-status', PAIR_TEXT.expired, 'err');
  }
}
async function answer(verb) {
  const yes = $('pair-approve');
  const no = $('pair-deny');
  yes.disabled = no.disabled = true;
  P.busy = true;
  setMsg('pair-status', verb === 'approve' ? 'Approving…' : 'Denying…');
  try {
    const body = verb === 'approve' && P.grant ? P.grant.vals() : {};
    await api('POST', '/admin/api/pair-requests/' + enc(P.code) + '/' + verb, body);
    P.busy = false;
    // Show the answer at once: it is final, so nothing is fetched again.
    renderPair(Object.assign({}, P.last, { status: verb === 'approve' ? 'approved' : 'denied' }));
    $('pair-status').focus();
  } catch (e) {
    setMsg('pair-status', e.message, 'err');
    yes.disabled = no.disabled = false;
  } finally {
    P.busy = false;
  }
}
function pairStart() {
  // /pair/<code>: the code is the last path segment.
  const seg = location.pathname.replace(/\/+$/, '').split('/').pop() || '';
  try { P.code = decodeURIComponent(seg); } catch (_) { P.code = seg; }
  $('pi-code').textContent = P.code;
  if (!P.bound) {
    P.bound = true;
    $('pair-approve').addEventListener('click', () => answer('approve'));
    $('pair-deny').addEventListener('click', () => answer('deny'));
  }
  if (!P.code || P.code === 'pair') {
    setMsg('pair-status', 'This address has no pairing code in it.', 'err');
    return;
  }
  pairLoad();
  every(4000, pairLoad);
  every(1000, tickPair);
}

// The MCP panel: the endpoint URL and client configurations for a pasted key. Nothing is
// sent anywhere; the key only fills the text below.
function mcpPanel() {
  const url = $('mcp-url'), key = $('mcp-key'), out = $('mcp-config');
  if (!url || !key || !out) return;
  const endpoint = location.origin + '/mcp';
  url.textContent = endpoint;
  const render = () => {
    const k = key.value.trim() || '<API key>';
    const http = { mcpServers: { foundry: { type: 'http', url: endpoint,
      headers: { Authorization: 'Bearer ' + k } } } };
    const desktop = { mcpServers: { foundry: { command: 'npx',
      args: ['-y', 'mcp-remote', endpoint, '--header', 'Authorization: Bearer ' + k] } } };
    out.textContent =
      '# Claude Code\nclaude mcp add --transport http foundry ' + endpoint +
      " --header 'Authorization: Bearer " + k + "'\n\n" +
      '# .mcp.json (Claude Code), mcp.json (LM Studio, Cursor, ...)\n' +
      JSON.stringify(http, null, 2) + '\n\n' +
      '# Claude Desktop: claude_desktop_config.json (needs Node.js for mcp-remote)\n' +
      JSON.stringify(desktop, null, 2);
  };
  key.addEventListener('input', render);
  render();
}

if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
else boot();
if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', mcpPanel);
else mcpPanel();
})();
