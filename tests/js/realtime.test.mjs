// Drives pgstack's Supabase Realtime endpoint with the real, unpatched
// @supabase/supabase-js `channel()` API. Run by tests/tests/supabase_realtime.rs,
// which starts a cluster with the fixture and the gateway and passes PGSTACK_URL,
// ANON_KEY, SERVICE_ROLE_KEY, USER_A / USER_B (user JWTs) and USER_A_ID / USER_B_ID.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import ws from 'ws';
import { createClient } from '@supabase/supabase-js';

const URL = process.env.PGSTACK_URL;
const ANON = process.env.ANON_KEY;
const SERVICE = process.env.SERVICE_ROLE_KEY;
const A = process.env.USER_A;
const B = process.env.USER_B;
const A_ID = process.env.USER_A_ID;
const B_ID = process.env.USER_B_ID;
const B2 = process.env.USER_B_SHORT; // B's token that expires within seconds

const options = { auth: { persistSession: false, autoRefreshToken: false }, realtime: { transport: ws } };
const clients = [];
function client(token) {
  const c = createClient(URL, ANON, options);
  if (token) c.realtime.setAuth(token);
  clients.push(c);
  return c;
}
const service = createClient(URL, SERVICE, options);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Resolves when the channel reports `want`; rejects on another final status.
function subscribed(channel, want = 'SUBSCRIBED') {
  return new Promise((resolve, reject) => {
    channel.subscribe((status, err) => {
      if (status === want) resolve(status);
      else if (want === 'SUBSCRIBED' && (status === 'CHANNEL_ERROR' || status === 'TIMED_OUT')) reject(new Error(`${status}: ${err?.message}`));
    });
  });
}

// Collects events pushed to a callback.
function sink() {
  const got = [];
  const fn = (e) => got.push(e);
  fn.got = got;
  fn.until = async (pred, ms = 5000) => {
    for (let i = 0; i < ms / 20; i++) {
      const hit = got.find(pred);
      if (hit) return hit;
      await sleep(20);
    }
    throw new Error(`timed out; got ${JSON.stringify(got)}`);
  };
  return fn;
}

// Waits for the "Subscribed to PostgreSQL" system message of a channel.
function pgReady(channel) {
  return new Promise((resolve, reject) => {
    channel.on('system', {}, (m) => (m.status === 'ok' ? resolve(m) : reject(new Error(m.message))));
  });
}

async function insert(row) {
  const { data, error } = await service.from('todos').insert(row).select().single();
  assert.equal(error, null);
  return data;
}

test.after(async () => {
  for (const c of clients) await c.removeAllChannels();
  await service.removeAllChannels();
});

test('postgres_changes: every event, filters, and each subscriber only sees what its RLS lets it select', { timeout: 30000 }, async () => {
  const a = client(A), b = client(B), anon = client();
  const [aAll, aIns, aUpd, aDel, aFiltered, bAll, anonAll] = [sink(), sink(), sink(), sink(), sink(), sink(), sink()];
  const ca = a.channel('todos-a')
    .on('postgres_changes', { event: '*', schema: 'public', table: 'todos' }, aAll)
    .on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'todos' }, aIns)
    .on('postgres_changes', { event: 'UPDATE', schema: 'public', table: 'todos' }, aUpd)
    .on('postgres_changes', { event: 'DELETE', schema: 'public', table: 'todos' }, aDel)
    .on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'todos', filter: 'title=eq.filtered' }, aFiltered);
  const cb = b.channel('todos-b').on('postgres_changes', { event: '*', schema: 'public', table: 'todos' }, bAll);
  const cn = anon.channel('todos-anon').on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'todos' }, anonAll);
  const ready = [pgReady(ca), pgReady(cb), pgReady(cn)];
  await Promise.all([subscribed(ca), subscribed(cb), subscribed(cn)]);
  await Promise.all(ready);

  const mine = await insert({ owner: A_ID, title: 'a1' });
  const filtered = await insert({ owner: A_ID, title: 'filtered' });
  const theirs = await insert({ owner: B_ID, title: 'b1' });
  const pub = await insert({ owner: null, title: 'public' });
  await service.from('todos').update({ done: true }).eq('id', mine.id);
  await service.from('todos').delete().eq('id', filtered.id);

  const ins = await aIns.until((e) => e.new.id === mine.id);
  assert.equal(ins.eventType, 'INSERT');
  assert.equal(ins.schema, 'public');
  assert.equal(ins.table, 'todos');
  assert.equal(ins.new.title, 'a1');
  assert.equal(ins.new.owner, A_ID);
  assert.equal(ins.new.done, false);
  assert.ok(Date.parse(ins.commit_timestamp) > 0, ins.commit_timestamp);
  assert.deepEqual(ins.old, {});
  const upd = await aUpd.until((e) => e.new.id === mine.id);
  assert.equal(upd.new.done, true);
  assert.deepEqual(upd.old, { id: mine.id }, 'old carries only the primary key (replica identity default)');
  const del = await aDel.until((e) => e.old.id === filtered.id);
  assert.deepEqual(del.old, { id: filtered.id });
  await aFiltered.until((e) => e.new.id === filtered.id);
  await aAll.until((e) => e.eventType === 'DELETE');
  await bAll.until((e) => e.new?.id === theirs.id);
  await anonAll.until((e) => e.new.id === pub.id);
  await sleep(300);
  // Order: the * listener saw A's insert before its update, and the delete last.
  const seq = aAll.got.map((e) => `${e.eventType}:${e.new?.id ?? e.old?.id}`);
  assert.ok(seq.indexOf(`INSERT:${mine.id}`) < seq.indexOf(`UPDATE:${mine.id}`), seq.join(' '));
  // RLS: nobody sees rows its policy hides.
  assert.ok(!aAll.got.some((e) => e.new?.id === theirs.id || e.new?.id === pub.id), 'A saw a row that is not its own');
  assert.ok(!bAll.got.some((e) => e.new?.id === mine.id || e.new?.id === filtered.id), 'B saw A\'s rows');
  assert.ok(!anonAll.got.some((e) => e.new.id !== pub.id), 'anon saw a user row');
  assert.equal(aFiltered.got.length, 1, 'the filter let another row through');
  assert.ok(!aIns.got.some((e) => e.eventType !== 'INSERT'));
});

test('postgres_changes: a policy change takes effect without reconnecting, setAuth switches the viewer', { timeout: 30000 }, async () => {
  const b = client(B);
  const got = sink();
  const ch = b.channel('policy').on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'todos' }, got);
  const ready = pgReady(ch);
  await subscribed(ch);
  await ready;
  const hidden = await insert({ owner: A_ID, title: 'before' });
  await sleep(300);
  assert.ok(!got.got.some((e) => e.new.id === hidden.id));
  const { error } = await service.rpc('rt_share_titles', { title: 'shared' });
  assert.equal(error, null);
  const shared = await insert({ owner: A_ID, title: 'shared' });
  await got.until((e) => e.new.id === shared.id);

  // The same channel, now as A: A's rows arrive, B's no longer do.
  b.realtime.setAuth(A);
  await sleep(300);
  const mineNow = await insert({ owner: A_ID, title: 'as-a' });
  const bRow = await insert({ owner: B_ID, title: 'b-row' });
  await got.until((e) => e.new.id === mineNow.id);
  await sleep(300);
  assert.ok(!got.got.some((e) => e.new.id === bRow.id), 'still received as B after setAuth');
});

test('broadcast: self and ack, over the socket, over REST and from SQL', { timeout: 30000 }, async () => {
  const a = client(A), b = client(B);
  const [gotA, gotB] = [sink(), sink()];
  const ca = a.channel('room1', { config: { broadcast: { self: true, ack: true } } }).on('broadcast', { event: 'msg' }, gotA);
  const cb = b.channel('room1').on('broadcast', { event: 'msg' }, gotB);
  await Promise.all([subscribed(ca), subscribed(cb)]);
  assert.equal(await ca.send({ type: 'broadcast', event: 'msg', payload: { n: 1 } }), 'ok');
  await gotA.until((m) => m.payload.n === 1);
  await gotB.until((m) => m.payload.n === 1);
  // Without self, the sender does not get its own.
  assert.equal(await cb.send({ type: 'broadcast', event: 'msg', payload: { n: 2 } }), 'ok');
  await gotA.until((m) => m.payload.n === 2);
  await sleep(200);
  assert.ok(!gotB.got.some((m) => m.payload.n === 2));

  // REST: a channel that is not joined sends over POST /realtime/v1/api/broadcast.
  const rest = client(A).channel('room1');
  assert.equal(await rest.send({ type: 'broadcast', event: 'msg', payload: { n: 3 } }), 'ok');
  await gotB.until((m) => m.payload.n === 3);
  const raw = await fetch(`${URL}/realtime/v1/api/broadcast`, {
    method: 'POST',
    headers: { apikey: ANON, 'content-type': 'application/json' },
    body: JSON.stringify({ messages: [{ topic: 'room1', event: 'msg', payload: { n: 4 } }] }),
  });
  assert.equal(raw.status, 202);
  await gotB.until((m) => m.payload.n === 4);
  const bad = await fetch(`${URL}/realtime/v1/api/broadcast`, { method: 'POST', headers: { apikey: ANON }, body: '{"messages": 1}' });
  assert.equal(bad.status, 422);
  const noKey = await fetch(`${URL}/realtime/v1/api/broadcast`, { method: 'POST', body: '{"messages": []}' });
  assert.equal(noKey.status, 401);

  // From SQL: realtime.send (a public message) reaches the channel.
  const { error } = await service.rpc('rt_send', { topic: 'room1', body: 'from sql' });
  assert.equal(error, null);
  const sql = await gotB.until((m) => m.event === 'msg' && m.payload.text === 'from sql');
  assert.ok(sql.payload.id, 'realtime.send adds an id');
});

test('presence: state, join and leave across two clients', { timeout: 30000 }, async () => {
  const a = client(A), b = client(B);
  const ca = a.channel('lobby', { config: { presence: { key: 'alice' } } });
  const cb = b.channel('lobby', { config: { presence: { key: 'bob' } } });
  const joins = sink(), leaves = sink();
  ca.on('presence', { event: 'join' }, joins).on('presence', { event: 'leave' }, leaves).on('presence', { event: 'sync' }, () => {});
  cb.on('presence', { event: 'sync' }, () => {});
  await subscribed(ca);
  assert.equal(await ca.track({ status: 'online' }), 'ok');
  await subscribed(cb);
  assert.equal(await cb.track({ status: 'away' }), 'ok');
  await joins.until((j) => j.key === 'bob');
  for (let i = 0; i < 100 && Object.keys(cb.presenceState()).length < 2; i++) await sleep(20);
  const state = cb.presenceState();
  assert.deepEqual(Object.keys(state).sort(), ['alice', 'bob']);
  assert.equal(state.alice[0].status, 'online');
  assert.ok(state.alice[0].presence_ref);
  await b.removeChannel(cb);
  await leaves.until((l) => l.key === 'bob');
  assert.deepEqual(Object.keys(ca.presenceState()), ['alice']);
});

test('private channels: refused until a policy on realtime.messages allows, then broadcast as the policy says', { timeout: 30000 }, async () => {
  const a = client(A);
  const statuses = [];
  const got = sink();
  const ch = a.channel('secret-room', { config: { private: true, broadcast: { self: true, ack: true } } }).on('broadcast', { event: 'x' }, got);
  const ok = new Promise((resolve) => ch.subscribe((s) => { statuses.push(s); if (s === 'SUBSCRIBED') resolve(); }));
  for (let i = 0; i < 100 && !statuses.includes('CHANNEL_ERROR'); i++) await sleep(20);
  assert.ok(statuses.includes('CHANNEL_ERROR'), `no refusal: ${statuses}`);
  const { error } = await service.rpc('rt_allow_room', { room: 'secret-room' });
  assert.equal(error, null);
  await ok; // realtime-js rejoins by itself; the policy now admits it
  assert.equal(await ch.send({ type: 'broadcast', event: 'x', payload: { hi: 1 } }), 'ok');
  await got.until((m) => m.payload.hi === 1);
  // B is still refused (the policy names A).
  const b = client(B);
  const chb = b.channel('secret-room', { config: { private: true } });
  await subscribed(chb, 'CHANNEL_ERROR');
  await b.removeChannel(chb);
  // A public channel of the same name is another topic.
  const pub = client(A).channel('secret-room');
  const gotPub = sink();
  pub.on('broadcast', { event: 'x' }, gotPub);
  await subscribed(pub);
  await ch.send({ type: 'broadcast', event: 'x', payload: { hi: 2 } });
  await got.until((m) => m.payload.hi === 2);
  await sleep(200);
  assert.equal(gotPub.got.length, 0, 'a private broadcast reached the public channel');
});

test('removeChannel stops delivery; an expired token closes the channel', { timeout: 30000 }, async () => {
  const a = client(A);
  const got = sink();
  const ch = a.channel('bye').on('broadcast', { event: 'e' }, got);
  await subscribed(ch);
  assert.equal(await a.removeChannel(ch), 'ok');
  await service.channel('bye').send({ type: 'broadcast', event: 'e', payload: {} });
  await sleep(300);
  assert.equal(got.got.length, 0);

  const short = client(B2);
  const sys = sink();
  const closing = short.channel('short').on('system', {}, sys);
  const closed = new Promise((resolve) => closing.subscribe((s) => s === 'CLOSED' && resolve()));
  await closed;
  assert.ok(sys.got.some((m) => m.status === 'error' && /Token has expired/.test(m.message)), JSON.stringify(sys.got));
});
