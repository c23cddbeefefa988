// Verifies webhook signatures with the contract's own Node snippet.
// stdin: JSON [{"body": "...", "signature": "sha256=..."}]; argv[2]: the secret.
// Exits 0 when every signature verifies.
import crypto from 'node:crypto';

function verifyWebhook(body, signature, secret) {
  const expected = 'sha256=' + crypto
    .createHmac('sha256', secret)
    .update(body)
    .digest('hex');
  return crypto.timingSafeEqual(
    Buffer.from(signature),
    Buffer.from(expected),
  );
}

let input = '';
process.stdin.on('data', (c) => { input += c; });
process.stdin.on('end', () => {
  const deliveries = JSON.parse(input);
  const ok = deliveries.length > 0 && deliveries.every((d) => d.signature.length === 71 && verifyWebhook(d.body, d.signature, process.argv[2]));
  console.log(ok ? `verified ${deliveries.length}` : 'signature mismatch');
  process.exit(ok ? 0 : 1);
});
