// Load client for bench/realtime.sh: N WebSocket subscribers on one gateway, each
// with its own JWT (own `sub` and `grp` claims), measuring commit-to-client latency
// from the row's `sent_us` (epoch µs from clock_timestamp() in the writing statement).
//
//   node bench/realtime_clients.mjs <mode> <base-url> <n> <seconds> <secret-or-anon-key>
//     mode channels: Supabase Realtime (vsn 2.0.0 frames), postgres_changes INSERT on
//                    public.feed, one token per subscriber signed with <secret>
//     mode live:     the contract's /ws/feed0 live query, with the anon key
// Prints "ready" once every subscriber is subscribed, then after <seconds> of
// measuring one JSON line: {"delivered", "per_sec", "p50_ms", "p99_ms", "max_ms"}.
import { createHmac, randomUUID } from 'node:crypto';
// ws from the test suite's node_modules (npm ci in tests/js).
const { default: WebSocket } = await import(new URL('../tests/js/node_modules/ws/wrapper.mjs', import.meta.url));

const [mode, base, nArg, secsArg, key] = process.argv.slice(2);
const n = Number(nArg), secs = Number(secsArg);
const wsBase = base.replace(/^http/, 'ws');
const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
function jwt(claims) {
  const head = b64({ alg: 'HS256', typ: 'JWT' }) + '.' + b64(claims);
  return head + '.' + createHmac('sha256', key).update(head).digest('base64url');
}
const nowUs = () => (performance.timeOrigin + performance.now()) * 1000;

let measuring = false, delivered = 0;
const lat = [];
function record(sentUs) {
  if (!measuring) return;
  delivered++;
  if (lat.length < 2_000_000) lat.push((nowUs() - Number(sentUs)) / 1000);
}

let ready = 0;
const sockets = [];
function open(i) {
  return new Promise((resolve, reject) => {
    let url, onOpen, onMessage;
    if (mode === 'channels') {
      const token = jwt({ sub: randomUUID(), role: 'authenticated', grp: i, exp: Math.floor(Date.now() / 1000) + 3600 });
      url = `${wsBase}/realtime/v1/websocket?apikey=${token}&vsn=2.0.0`;
      onOpen = (ws) => ws.send(JSON.stringify(['1', '1', 'realtime:feed', 'phx_join', {
        config: { broadcast: { self: false, ack: false }, presence: { key: '', enabled: false }, private: false,
          postgres_changes: [{ event: 'INSERT', schema: 'public', table: 'feed' }] },
        access_token: token,
      }]));
      onMessage = (text) => {
        const [, , , event, payload] = JSON.parse(text);
        if (event === 'postgres_changes') record(payload.data.record.sent_us);
        else if (event === 'system') {
          if (payload.status === 'ok') resolve();
          else reject(new Error(payload.message));
        } else if (event === 'phx_reply' && payload.status !== 'ok') reject(new Error(JSON.stringify(payload)));
      };
    } else {
      url = `${wsBase}/ws/feed0?apikey=${key}`;
      onOpen = () => resolve();
      onMessage = (text) => {
        const m = JSON.parse(text);
        for (const r of m.inserted ?? []) record(r.sent_us);
      };
    }
    const ws = new WebSocket(url, { perMessageDeflate: false });
    ws.on('open', () => onOpen(ws));
    ws.on('message', (d) => onMessage(d.toString()));
    ws.on('error', reject);
    ws.on('close', (code) => { if (measuring) console.error(`socket ${i} closed: ${code}`); });
    sockets.push(ws);
  });
}

// Open in small waves (the gateway's join rate limit is per socket; this keeps the
// handshakes from piling up on 2 cores).
for (let i = 0; i < n; i += 50) {
  await Promise.all(Array.from({ length: Math.min(50, n - i) }, (_, j) => open(i + j)));
  ready = i + 50;
}
// Heartbeats every 25 s, as realtime-js.
if (mode === 'channels') setInterval(() => sockets.forEach((ws, i) => ws.readyState === 1 && ws.send(JSON.stringify([null, `hb${i}`, 'phoenix', 'heartbeat', {}]))), 25_000).unref();
console.log('ready');
// Measure once the writer has started (the script starts it on "ready").
await new Promise((r) => setTimeout(r, 500));
measuring = true;
const t0 = performance.now();
await new Promise((r) => setTimeout(r, secs * 1000));
measuring = false;
const elapsed = (performance.now() - t0) / 1000;
lat.sort((a, b) => a - b);
const q = (p) => (lat.length ? Math.round(lat[Math.min(lat.length - 1, Math.floor(p * lat.length))] * 10) / 10 : null);
console.log(JSON.stringify({ delivered, per_sec: Math.round(delivered / elapsed), p50_ms: q(0.5), p99_ms: q(0.99), max_ms: q(1) }));
for (const ws of sockets) ws.terminate();
process.exit(0);
