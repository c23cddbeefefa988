// A real OpenID Connect provider (npm `oidc-provider` 9.x) on loopback, for
// automated OAuth tests. No browser and no JS needed to log in.
//
//   node tests/js/oidc_provider.mjs --port <port> --client-id <id> \
//        --client-secret <secret> --redirect-uri <uri> [--email user@example.com]
//
// Prints `READY http://127.0.0.1:<port>` on stdout once listening; exits 0 on
// SIGTERM/SIGINT. Issuer is exactly `http://127.0.0.1:<port>`.
//
// Endpoints (also in /.well-known/openid-configuration):
//   /authorize  /token  /userinfo  /jwks  (+ /interaction/<uid>, see below)
//
// Client: one confidential `web` client (http loopback redirect_uri is fine
// for web + code flow), grant authorization_code, response type code,
// registered with token_endpoint_auth_method `client_secret_basic`;
// oidc-provider treats basic and post as interchangeable, so the token
// endpoint accepts the secret either in HTTP Basic or as client_secret in the
// form body. PKCE S256 is optional: verified if code_challenge was sent, not
// required (confidential client).
//
// Account: sub "oidc-user-1", email (--email, default oidc.user@example.com),
// email_verified true, name "OIDC User". Scopes: openid email profile.
// ID tokens are RS256 and carry the scope's claims (conformIdTokenClaims off).
// Access tokens are opaque (no `resource` => no JWT audience) and work at
// /userinfo; `openid` must be among the scopes for userinfo. nonce is
// optional for the code flow (echoed in the id_token if sent).
//
// Login flow, with a cookie jar, just following redirects:
//   GET /authorize?...            -> 303 /interaction/<uid>  (sets _interaction cookies)
//   GET /interaction/<uid>        -> 303 /authorize/<uid>    (auto login + consent)
//   GET /authorize/<uid>          -> 303 <redirect_uri>?code=...&state=...&iss=...
// The interaction route logs the single account in and grants every requested
// scope in one step, so there is no HTML form to submit.

import http from 'node:http';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import Provider from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string' },
    'client-id': { type: 'string' },
    'client-secret': { type: 'string' },
    'redirect-uri': { type: 'string' },
    email: { type: 'string', default: 'oidc.user@example.com' },
  },
});
for (const k of ['port', 'client-id', 'client-secret', 'redirect-uri']) {
  if (!args[k]) { console.error(`missing --${k}`); process.exit(2); }
}

const issuer = `http://127.0.0.1:${args.port}`;
const stage = (what) => console.error(`oidc_provider: ${what} after ${Math.round(performance.now())} ms`);
stage('modules loaded');
const ACCOUNT_ID = 'oidc-user-1';
const accountClaims = {
  sub: ACCOUNT_ID,
  email: args.email,
  email_verified: true,
  name: 'OIDC User',
};

// A fresh RS256 signing key per run (avoids the dev-keys warning).
const signingKey = {
  ...generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' }),
  kid: 'test-rs256', alg: 'RS256', use: 'sig',
};

stage('signing key generated');
const provider = new Provider(issuer, {
  clients: [{
    client_id: args['client-id'],
    client_secret: args['client-secret'],
    redirect_uris: [args['redirect-uri']],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    application_type: 'web',
  }],
  jwks: { keys: [signingKey] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  scopes: ['openid', 'email', 'profile'],
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
  conformIdTokenClaims: false, // put scope claims in the id_token too
  pkce: { required: (_ctx, client) => client.clientAuthMethod === 'none' },
  features: { devInteractions: { enabled: false } },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  routes: { authorization: '/authorize', userinfo: '/userinfo' },
  async findAccount(_ctx, sub) {
    if (sub !== ACCOUNT_ID) return undefined;
    return { accountId: ACCOUNT_ID, claims: () => ({ ...accountClaims }) };
  },
});

// GET /interaction/<uid>: finish login and consent at once, then redirect
// (303) back to the authorization resume endpoint.
async function interaction(req, res) {
  const { prompt, params, session } = await provider.interactionDetails(req, res);
  const accountId = session?.accountId ?? ACCOUNT_ID;
  const grant = new provider.Grant({ accountId, clientId: params.client_id });
  grant.addOIDCScope(String(params.scope ?? 'openid'));
  const missing = prompt.details ?? {};
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  const result = { login: { accountId }, consent: { grantId: await grant.save() } };
  await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
}

const oidc = provider.callback();
const server = http.createServer((req, res) => {
  if (req.method === 'GET' && req.url.startsWith('/interaction/')) {
    interaction(req, res).catch((err) => {
      res.writeHead(400, { 'content-type': 'text/plain' });
      res.end(`interaction failed: ${err.message}\n`);
    });
    return;
  }
  oidc(req, res);
});

server.listen(Number(args.port), '127.0.0.1', () => {
  console.log(`READY ${issuer}`);
});

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  });
}
