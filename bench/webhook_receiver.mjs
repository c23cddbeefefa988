// Webhook receiver for bench/webhooks.sh: answers 204, records commit-to-delivery
// latency from the record's `sent_at` (set with clock_timestamp() by the writer),
// and prints a summary line as JSON on SIGTERM.
import http from 'node:http';

const lat = [];
let first = 0, last = 0;
const server = http.createServer((req, res) => {
  let body = '';
  req.on('data', (c) => { body += c; });
  req.on('end', () => {
    const now = Date.now();
    try {
      const sent = Date.parse(JSON.parse(body).record.sent_at);
      lat.push(now - sent);
      if (!first) first = now;
      last = now;
    } catch { /* not a bench event */ }
    res.writeHead(204).end();
  });
});
server.listen(0, '127.0.0.1', () => console.log(`ready ${server.address().port}`));
process.on('SIGTERM', () => {
  lat.sort((a, b) => a - b);
  const q = (p) => lat.length ? lat[Math.min(lat.length - 1, Math.floor(p * lat.length))] : null;
  const secs = (last - first) / 1000;
  console.log(JSON.stringify({ delivered: lat.length, per_sec: secs > 0 ? +(lat.length / secs).toFixed(1) : null, p50_ms: q(0.5), p99_ms: q(0.99), max_ms: lat.at(-1) ?? null }));
  process.exit(0);
});
