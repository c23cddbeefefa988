// Refresh-token load for bench/auth.sh: W workers, each with its own session,
// rotate their refresh token back to back for D seconds (every refresh must use the
// newest token, so this cannot be a fixed-body wrk run). Prints
// `req_per_s p50_ms p99_ms errors`.
//
//   node bench/auth_refresh.mjs <api> <anon key> <workers> <seconds> <email> <password>
const [api, anon, workers, seconds, email, password] = process.argv.slice(2);
const headers = { apikey: anon, 'content-type': 'application/json' };
const post = (path, body) => fetch(api + path, { method: 'POST', headers, body: JSON.stringify(body) });

const lat = [];
let errors = 0;
const until = Date.now() + Number(seconds) * 1000;
async function worker() {
  const r = await post('/auth/v1/token?grant_type=password', { email, password });
  let token = (await r.json()).refresh_token;
  while (Date.now() < until) {
    const t = performance.now();
    const res = await post('/auth/v1/token?grant_type=refresh_token', { refresh_token: token });
    const body = await res.json();
    lat.push(performance.now() - t);
    if (res.status !== 200) { errors++; continue; }
    token = body.refresh_token;
  }
}
const start = performance.now();
await Promise.all(Array.from({ length: Number(workers) }, worker));
const secs = (performance.now() - start) / 1000;
lat.sort((a, b) => a - b);
const pct = (p) => lat[Math.min(lat.length - 1, Math.floor(lat.length * p))].toFixed(1);
console.log(`${(lat.length / secs).toFixed(0)} ${pct(0.5)} ${pct(0.99)} ${errors}`);
