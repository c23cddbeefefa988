// A supabase-js client that outlives a gateway restart (driven by
// tests/tests/supabase_realtime.rs): it subscribes to postgres_changes, says
// SUBSCRIBED, waits for the harness to restart the gateway on the same address
// (RESTARTED on stdin), waits until realtime-js has reconnected and rejoined by itself
// (REJOINED), then expects the change the harness makes next and exits 0.
import { createInterface } from 'node:readline';
import ws from 'ws';
import { createClient } from '@supabase/supabase-js';

const sb = createClient(process.env.PGSTACK_URL, process.env.ANON_KEY, {
  auth: { persistSession: false, autoRefreshToken: false },
  realtime: { transport: ws },
});
sb.realtime.setAuth(process.env.SERVICE_ROLE_KEY);
const fail = (why) => { console.error(why); process.exit(1); };
setTimeout(() => fail('timed out'), 60_000).unref();

let subscribedToPg = 0;
let onSubscribed = () => {};
const changes = [];
let onChange = () => {};
const ch = sb.channel('restart')
  .on('system', {}, (m) => { if (m.status === 'ok' && m.extension === 'postgres_changes') { subscribedToPg++; onSubscribed(); } })
  .on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'todos' }, (e) => { changes.push(e); onChange(); });
ch.subscribe();
await new Promise((r) => { onSubscribed = r; if (subscribedToPg) r(); });
console.log('SUBSCRIBED');

const lines = createInterface({ input: process.stdin });
for await (const line of lines) if (line.trim() === 'RESTARTED') break;
// realtime-js notices the dropped socket, reconnects with backoff and rejoins.
await new Promise((r) => { onSubscribed = () => subscribedToPg >= 2 && r(); onSubscribed(); });
console.log('REJOINED');
await new Promise((r) => { onChange = () => changes.some((e) => e.new.title === 'after restart') && r(); onChange(); });
console.log('OK');
process.exit(0);
