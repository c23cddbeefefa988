// Live-query subscribers for bench/live.sh: opens N WebSockets to /ws/{query}, records
// commit-to-frame latency of every delta (from the row's sent_at, set by the writer
// with clock_timestamp()), and on SIGTERM prints JSON: frames, per-message last-arrival
// and all-delivery percentiles.
import WebSocket from 'ws';

const [url, n] = [process.argv[2], parseInt(process.argv[3], 10)];
const perSeq = new Map(); // seq -> max latency
const all = [];
let open = 0, frames = 0, first = 0, last = 0;
for (let i = 0; i < n; i++) {
  const ws = new WebSocket(url);
  ws.on('open', () => { open++; if (open === n) console.log('ready'); });
  ws.on('message', (data) => {
    const now = performance.timeOrigin + performance.now();
    const m = JSON.parse(data.toString());
    if (m.seq === undefined || !m.inserted) return;
    frames++;
    if (!first) first = now;
    last = now;
    for (const row of m.inserted) {
      const l = now - (row.sent_us / 1000);
      all.push(l);
      perSeq.set(m.seq, Math.max(perSeq.get(m.seq) ?? 0, l));
    }
  });
  ws.on('error', (e) => { console.error('ws error', e.message); });
}
const pct = (xs, p) => { if (!xs.length) return null; const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(p * s.length))]; };
process.on('SIGTERM', () => {
  const lastArrival = [...perSeq.values()];
  const secs = (last - first) / 1000;
  console.log(JSON.stringify({
    subscribers: n, messages: perSeq.size, frames, frames_per_sec: secs > 0 ? Math.round(frames / secs) : null,
    p50_ms: pct(all, 0.5), p99_ms: pct(all, 0.99), last_arrival_p50_ms: pct(lastArrival, 0.5), last_arrival_p99_ms: pct(lastArrival, 0.99),
  }));
  process.exit(0);
});
