// Drives pgstack with the real, unpatched @supabase/supabase-js (auth + REST).
// Run by tests/tests/supabase_js.rs, which starts a cluster, loads the fixture and
// the gateway, and passes PGSTACK_URL, ANON_KEY and SERVICE_ROLE_KEY.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import ws from 'ws';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createClient } from '@supabase/supabase-js';
import * as tus from 'tus-js-client';

const URL = process.env.PGSTACK_URL;
const ANON = process.env.ANON_KEY;
const SERVICE = process.env.SERVICE_ROLE_KEY;
const options = { auth: { persistSession: false, autoRefreshToken: false }, realtime: { transport: ws } };
const client = (key = ANON) => createClient(URL, key, options);

// The n-th e-mail received by `to` on the test SMTP server (tests/smtp/sink.py).
async function mail(to, n = 1) {
  const dir = process.env.SMTP_SINK_DIR;
  for (let i = 0; i < 150; i++) {
    const found = readdirSync(dir)
      .filter((f) => /^\d+\.json$/.test(f))
      .sort((a, b) => parseInt(a) - parseInt(b))
      .map((f) => JSON.parse(readFileSync(join(dir, f), 'utf8')))
      .filter((m) => m.to.includes(to));
    if (found.length >= n) return found[n - 1];
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`no e-mail #${n} for ${to}`);
}

// Follows the link of an e-mail like a browser and returns the session in the fragment.
async function landing(message) {
  const link = message.text.match(/https?:\/\/\S+/)[0];
  const res = await fetch(link, { redirect: 'manual' });
  assert.equal(res.status, 302);
  const location = res.headers.get('location');
  return Object.fromEntries(new URLSearchParams(location.split('#')[1]));
}

test('auth: sign up, sign in, user, update, refresh, sign out', async () => {
  const sb = client();
  const email = `jane.${Date.now()}@example.com`;
  const up = await sb.auth.signUp({ email, password: 'strongpassword123', options: { data: { full_name: 'Jane' } } });
  assert.equal(up.error, null);
  assert.ok(up.data.session?.access_token);
  assert.equal(up.data.user.email, email);
  assert.equal(up.data.user.user_metadata.full_name, 'Jane');

  const dup = await client().auth.signUp({ email, password: 'strongpassword123' });
  assert.ok(dup.error, 'duplicate signup must fail');
  assert.equal(dup.error.status, 409);

  const bad = await client().auth.signInWithPassword({ email, password: 'wrong-password' });
  assert.ok(bad.error);
  assert.equal(bad.error.message, 'invalid email or password');
  assert.equal(bad.error.code, 'invalid_credentials');

  const sb2 = client();
  const signed = await sb2.auth.signInWithPassword({ email, password: 'strongpassword123' });
  assert.equal(signed.error, null);
  assert.equal(signed.data.user.email, email);

  const me = await sb2.auth.getUser();
  assert.equal(me.error, null);
  assert.equal(me.data.user.id, signed.data.user.id);

  const upd = await sb2.auth.updateUser({ data: { full_name: 'Jane Smith' }, password: 'newpassword456' });
  assert.equal(upd.error, null);
  assert.equal(upd.data.user.user_metadata.full_name, 'Jane Smith');

  const before = (await sb2.auth.getSession()).data.session;
  const ref = await sb2.auth.refreshSession();
  assert.equal(ref.error, null);
  assert.notEqual(ref.data.session.refresh_token, before.refresh_token);

  const out = await sb2.auth.signOut();
  assert.equal(out.error, null);
  assert.equal((await sb2.auth.getSession()).data.session, null);

  const again = await client().auth.signInWithPassword({ email, password: 'newpassword456' });
  assert.equal(again.error, null);
});

test('auth: password reset by e-mail link, then updateUser', async () => {
  const email = `reset.${Date.now()}@example.com`;
  await client().auth.signUp({ email, password: 'firstpassword1' });
  const sb = client();
  const { error } = await sb.auth.resetPasswordForEmail(email, { redirectTo: 'http://app.test/reset' });
  assert.equal(error, null);
  const fragment = await landing(await mail(email));
  assert.equal(fragment.type, 'recovery');
  const set = await sb.auth.setSession({ access_token: fragment.access_token, refresh_token: fragment.refresh_token });
  assert.equal(set.error, null);
  const upd = await sb.auth.updateUser({ password: 'secondpassword2' });
  assert.equal(upd.error, null);
  const signed = await client().auth.signInWithPassword({ email, password: 'secondpassword2' });
  assert.equal(signed.error, null);
});

test('auth: signInWithOtp by e-mail link and by code', async () => {
  const email = `otp.${Date.now()}@example.com`;
  const sb = client();
  const sent = await sb.auth.signInWithOtp({ email, options: { emailRedirectTo: 'http://app.test/home' } });
  assert.equal(sent.error, null);
  const fragment = await landing(await mail(email));
  const set = await sb.auth.setSession({ access_token: fragment.access_token, refresh_token: fragment.refresh_token });
  assert.equal(set.error, null);
  assert.equal((await sb.auth.getUser()).data.user.email, email);

  await client().auth.signInWithOtp({ email });
  const code = (await mail(email, 2)).html.match(/code: (\d{6})/)[1];
  const sb2 = client();
  const verified = await sb2.auth.verifyOtp({ email, token: code, type: 'email' });
  assert.equal(verified.error, null);
  assert.equal(verified.data.user.email, email);
  assert.ok(verified.data.session.access_token);
});

test('auth: anonymous sign-in', async () => {
  const sb = client();
  const { data, error } = await sb.auth.signInAnonymously();
  assert.equal(error, null);
  assert.equal(data.user.is_anonymous, true);
  assert.ok(data.session.access_token);
});

test('auth: admin create, list, delete', async () => {
  const admin = client(SERVICE).auth.admin;
  const email = `made.${Date.now()}@example.com`;
  const created = await admin.createUser({ email, password: 'initialpassword', email_confirm: true, user_metadata: { k: 'v' } });
  assert.equal(created.error, null);
  assert.equal(created.data.user.email, email);
  const list = await admin.listUsers({ page: 1, perPage: 100 });
  assert.equal(list.error, null);
  assert.ok(list.data.users.some((u) => u.email === email));
  const del = await admin.deleteUser(created.data.user.id);
  assert.equal(del.error, null);
  const list2 = await admin.listUsers();
  assert.ok(!list2.data.users.some((u) => u.email === email));
});

test('rest: select with filters, order, range, count, single', async () => {
  const sb = client();
  const all = await sb.from('items').select('id, name, price').order('id');
  assert.equal(all.error, null);
  assert.deepEqual(all.data.map((r) => r.id), [1, 2, 3]);

  const filtered = await sb.from('items').select('name').gte('price', 20).lt('price', 1000).ilike('name', '%a%').order('name', { ascending: false });
  assert.equal(filtered.error, null);
  assert.deepEqual(filtered.data, [{ name: 'Laptop' }]);
  const words = await sb.from('items').select('name').ilike('name', '%S%').order('name');
  assert.deepEqual(words.data, [{ name: 'Desk' }, { name: 'Mouse' }]);

  const ranged = await sb.from('items').select('id', { count: 'exact' }).order('id').range(1, 2);
  assert.equal(ranged.error, null);
  assert.equal(ranged.count, 3);
  assert.deepEqual(ranged.data, [{ id: 2 }, { id: 3 }]);

  const head = await sb.from('items').select('*', { count: 'exact', head: true }).in('id', [1, 2]);
  assert.equal(head.error, null);
  assert.equal(head.count, 2);
  assert.equal(head.data, null);

  const single = await sb.from('items').select('name').eq('id', 2).single();
  assert.equal(single.error, null);
  assert.deepEqual(single.data, { name: 'Mouse' });
  const notSingle = await sb.from('items').select('name').single();
  assert.equal(notSingle.error.code, 'PGRST116');
  const maybe = await sb.from('items').select('name').eq('id', 99).maybeSingle();
  assert.equal(maybe.error, null);
  assert.equal(maybe.data, null);

  const or = await sb.from('items').select('id').or('id.eq.1,name.eq.Desk').order('id');
  assert.deepEqual(or.data, [{ id: 1 }, { id: 3 }]);
  const missing = await sb.from('nope').select();
  assert.equal(missing.error.code, 'PGRST205');
  assert.ok(missing.error.message.length > 0);
});

test('rest: insert, update, upsert, delete with and without select', async () => {
  const sb = client(SERVICE);
  const ins = await sb.from('items').insert({ id: 100, name: 'Lamp', price: 30 });
  assert.equal(ins.error, null);
  assert.equal(ins.status, 201);
  const insSel = await sb.from('items').insert([{ id: 101, name: 'Chair' }, { id: 102, name: 'Rug', price: 80 }]).select('id, name, price');
  assert.equal(insSel.error, null);
  assert.deepEqual(insSel.data, [{ id: 101, name: 'Chair', price: null }, { id: 102, name: 'Rug', price: 80 }]);
  const dup = await sb.from('items').insert({ id: 100, name: 'again' });
  assert.equal(dup.error.code, '23505');

  const upd = await sb.from('items').update({ price: 35 }).eq('id', 100);
  assert.equal(upd.error, null);
  assert.equal(upd.status, 204);
  const updSel = await sb.from('items').update({ name: 'Lamp XL' }).eq('id', 100).select();
  assert.equal(updSel.data[0].name, 'Lamp XL');
  assert.equal(updSel.data[0].price, 35);

  const ups = await sb.from('items').upsert([{ id: 100, name: 'Lamp 2' }, { id: 103, name: 'Vase' }]).select('id, name');
  assert.equal(ups.error, null);
  assert.deepEqual(ups.data, [{ id: 100, name: 'Lamp 2' }, { id: 103, name: 'Vase' }]);
  const ign = await sb.from('items').upsert({ id: 103, name: 'ignored' }, { ignoreDuplicates: true }).select();
  assert.deepEqual(ign.data, []);

  const del = await sb.from('items').delete().in('id', [101, 102]);
  assert.equal(del.error, null);
  const delSel = await sb.from('items').delete().gte('id', 100).select('id');
  assert.deepEqual(delSel.data.map((r) => r.id).sort(), [100, 103]);
  const left = await sb.from('items').select('id').order('id');
  assert.deepEqual(left.data, [{ id: 1 }, { id: 2 }, { id: 3 }]);
});

test('rest: embedding in both directions', async () => {
  const sb = client();
  const many = await sb.from('items').select('name, reviews(stars)').order('id').order('stars', { referencedTable: 'reviews', ascending: false });
  assert.equal(many.error, null);
  assert.deepEqual(many.data, [
    { name: 'Laptop', reviews: [{ stars: 5 }, { stars: 3 }] },
    { name: 'Mouse', reviews: [{ stars: 4 }] },
    { name: 'Desk', reviews: [] },
  ]);
  const one = await sb.from('reviews').select('stars, item:items(name)').eq('id', 3).single();
  assert.equal(one.error, null);
  assert.deepEqual(one.data, { stars: 4, item: { name: 'Mouse' } });
  const inner = await sb.from('items').select('name, reviews!inner(stars)').gte('reviews.stars', 4).order('id');
  assert.deepEqual(inner.data.map((r) => r.name), ['Laptop', 'Mouse']);
});

test('rest: rpc', async () => {
  const sb = client();
  const sum = await sb.rpc('add', { a: 2, b: 40 });
  assert.equal(sum.error, null);
  assert.equal(sum.data, 42);
  const viaGet = await sb.rpc('add', { a: 1, b: 1 }, { get: true });
  assert.equal(viaGet.data, 2);
  const set = await sb.rpc('search_items', { term: 's' }).select('name').order('name', { ascending: false });
  assert.deepEqual(set.data, [{ name: 'Mouse' }, { name: 'Desk' }]);
  const missing = await sb.rpc('nope');
  assert.equal(missing.error.code, 'PGRST202');
});

test('functions: invoke with JSON, text, binary and an error', async () => {
  const sb = client();
  const json = await sb.functions.invoke('echo', { body: { a: 1 } });
  assert.equal(json.error, null);
  assert.deepEqual(json.data, { method: 'POST', body: { a: 1 } });
  const text = await sb.functions.invoke('plain', { method: 'GET' });
  assert.equal(text.error, null);
  assert.equal(text.data, 'hello world');
  const bin = await sb.functions.invoke('bytes', { body: new Blob([new Uint8Array([1, 2, 3])]) });
  assert.equal(bin.error, null);
  assert.deepEqual(new Uint8Array(await bin.data.arrayBuffer()), new Uint8Array([3, 2, 1]));
  const bad = await sb.functions.invoke('boom');
  assert.ok(bad.error);
  assert.equal(bad.error.name, 'FunctionsHttpError');
  assert.equal(bad.error.context.status, 500);
  assert.equal((await bad.error.context.json()).error, 'boom');
});

test('storage: buckets and objects through storage-js', async () => {
  const admin = client(SERVICE);
  const made = await admin.storage.createBucket('js-files', { public: false, fileSizeLimit: 1024 * 1024 });
  assert.equal(made.error, null);
  assert.equal(made.data.name, 'js-files');
  assert.equal((await admin.storage.getBucket('js-files')).data.public, false);
  assert.ok((await admin.storage.listBuckets()).data.some((b) => b.id === 'js-files'));
  assert.equal((await admin.storage.updateBucket('js-files', { public: false, allowedMimeTypes: ['text/*'] })).error, null);

  const sb = client();
  await sb.auth.signUp({ email: `files.${Date.now()}@example.com`, password: 'strongpassword123' });
  const files = sb.storage.from('js-files');
  const up = await files.upload('me/hello.txt', new Blob(['hello storage'], { type: 'text/plain' }));
  assert.equal(up.error, null);
  assert.equal(up.data.path, 'me/hello.txt');
  const dup = await files.upload('me/hello.txt', new Blob(['again'], { type: 'text/plain' }));
  assert.ok(dup.error, 'a second upload without upsert fails');
  const upd = await files.update('me/hello.txt', Buffer.from('hello again'), { contentType: 'text/plain' });
  assert.equal(upd.error, null);
  const refused = await files.upload('me/pic.png', new Blob([new Uint8Array([1, 2])], { type: 'image/png' }));
  assert.ok(refused.error, 'image/png is not in allowedMimeTypes');

  const dl = await files.download('me/hello.txt');
  assert.equal(dl.error, null);
  assert.equal(await dl.data.text(), 'hello again');
  const listed = await files.list('me');
  assert.equal(listed.error, null);
  assert.deepEqual(listed.data.map((f) => f.name), ['hello.txt']);
  const signed = await files.createSignedUrl('me/hello.txt', 60);
  assert.equal(signed.error, null);
  const viaUrl = await fetch(signed.data.signedUrl);
  assert.equal(viaUrl.status, 200);
  assert.equal(await viaUrl.text(), 'hello again');
  const anon = await client().storage.from('js-files').download('me/hello.txt');
  assert.ok(anon.error, 'anon cannot read a private object');

  // move / copy (storage-js), then the byte range a media player would ask for.
  const mv = await files.move('me/hello.txt', 'me/renamed.txt');
  assert.equal(mv.error, null);
  assert.ok((await files.download('me/hello.txt')).error, 'the old name is gone');
  const cp = await files.copy('me/renamed.txt', 'me/hello.txt');
  assert.equal(cp.error, null);
  assert.equal(cp.data.path, 'js-files/me/hello.txt');
  assert.equal(await (await files.download('me/renamed.txt')).data.text(), 'hello again');
  const rangeUrl = (await files.createSignedUrl('me/hello.txt', 60)).data.signedUrl;
  const part = await fetch(rangeUrl, { headers: { Range: 'bytes=6-10' } });
  assert.equal(part.status, 206);
  assert.equal(await part.text(), 'again');
  assert.equal((await files.remove(['me/renamed.txt'])).error, null);

  const rm = await files.remove(['me/hello.txt']);
  assert.equal(rm.error, null);
  assert.equal(rm.data.length, 1);
  assert.ok((await files.download('me/hello.txt')).error);

  const pub = await admin.storage.createBucket('js-public', { public: true });
  assert.equal(pub.error, null);
  await admin.storage.from('js-public').upload('logo.txt', Buffer.from('public bytes'), { contentType: 'text/plain' });
  const { data: { publicUrl } } = sb.storage.from('js-public').getPublicUrl('logo.txt');
  assert.equal(await (await fetch(publicUrl)).text(), 'public bytes');
  assert.equal((await admin.storage.emptyBucket('js-public')).error, null);
  assert.equal((await admin.storage.deleteBucket('js-public')).error, null);
});

test('rest: RLS through a signed-in user', async () => {
  const sb = client();
  const email = `rls.${Date.now()}@example.com`;
  const { data } = await sb.auth.signUp({ email, password: 'strongpassword123' });
  const ins = await sb.from('notes').insert({ body: 'mine' }).select('body, owner');
  assert.equal(ins.error, null);
  assert.deepEqual(ins.data, [{ body: 'mine', owner: data.user.id }]);
  const anon = await client().from('notes').select('body');
  assert.deepEqual(anon.data, []);
  const own = await sb.from('notes').select('body');
  assert.deepEqual(own.data, [{ body: 'mine' }]);
});

test('storage: resumable uploads through tus-js-client, with a resume', async () => {
  const admin = client(SERVICE);
  assert.equal((await admin.storage.createBucket('js-tus', { public: false })).error, null);
  const data = Buffer.alloc(3 * 1024 * 1024 + 123);
  for (let i = 0; i < data.length; i++) data[i] = i % 251;
  const endpoint = `${URL}/storage/v1/upload/resumable`;
  const headers = { authorization: `Bearer ${SERVICE}`, apikey: SERVICE };
  const metadata = { bucketName: 'js-tus', objectName: 'big/resume.bin', contentType: 'application/octet-stream', cacheControl: '3600' };
  const chunkSize = 1024 * 1024;

  // First attempt: stopped after the first chunk (as a dropped connection would).
  let uploadUrl;
  await new Promise((resolve, reject) => {
    const up = new tus.Upload(data, {
      endpoint, headers, metadata, chunkSize, retryDelays: [],
      onChunkComplete: (_size, accepted) => {
        if (accepted >= chunkSize && !uploadUrl) {
          uploadUrl = up.url;
          up.abort().then(resolve, reject);
        }
      },
      onError: reject,
      onSuccess: () => reject(new Error('the first attempt should have been stopped')),
    });
    up.start();
  });
  assert.ok(uploadUrl.startsWith(`${endpoint}/`), uploadUrl);
  const head = await fetch(uploadUrl, { method: 'HEAD', headers: { ...headers, 'tus-resumable': '1.0.0' } });
  assert.equal(head.status, 200);
  assert.equal(head.headers.get('upload-offset'), String(chunkSize));
  assert.equal(head.headers.get('upload-length'), String(data.length));
  assert.ok((await admin.storage.from('js-tus').download('big/resume.bin')).error, 'nothing visible before the last byte');

  // A second upload to the same path is refused while this one is in progress.
  const clash = await fetch(endpoint, { method: 'POST', headers: { ...headers, 'tus-resumable': '1.0.0', 'upload-length': '10',
    'upload-metadata': `bucketName ${Buffer.from('js-tus').toString('base64')},objectName ${Buffer.from('big/resume.bin').toString('base64')}` } });
  assert.equal(clash.status, 409);

  // Resume from the stored offset with a new client on the same URL.
  let resumedFrom;
  await new Promise((resolve, reject) => {
    const up = new tus.Upload(data, {
      endpoint, uploadUrl, headers, metadata, chunkSize, retryDelays: [],
      onProgress: (sent) => { if (resumedFrom === undefined) resumedFrom = sent; },
      onError: reject, onSuccess: resolve,
    });
    up.start();
  });
  assert.ok(resumedFrom >= chunkSize, `resumed at ${resumedFrom}, not from 0`);
  const dl = await admin.storage.from('js-tus').download('big/resume.bin');
  assert.equal(dl.error, null);
  assert.ok(Buffer.from(await dl.data.arrayBuffer()).equals(data), 'the object is the bytes sent');
  const gone = await fetch(uploadUrl, { method: 'HEAD', headers: { ...headers, 'tus-resumable': '1.0.0' } });
  assert.equal(gone.status, 404, 'a finished upload is gone');
  assert.equal((await admin.storage.emptyBucket('js-tus')).error, null);
  assert.equal((await admin.storage.deleteBucket('js-tus')).error, null);
});
