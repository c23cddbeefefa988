// pgstack's Deno worker. The gateway starts one long-lived process with this script
// and forwards invocations to it on loopback. Function modules are files in the folder
// given as the first argument, named <name>-<version>.ts; each is imported once per
// version. Modules written for Supabase call Deno.serve(handler): that call is captured
// here instead of listening. `export default handler` and `export default { fetch }`
// work too.
import { AsyncLocalStorage } from "node:async_hooks";

const FN_DIR = Deno.args[0];

// The gateway holds our stdin open and never writes to it: end of input means the
// gateway is gone (even by SIGKILL), and the worker must not outlive it.
(async () => {
  try {
    for await (const _ of Deno.stdin.readable) { /* nothing is ever sent */ }
  } catch { /* closed */ }
  Deno.exit(0);
})();
// Per-function env vars (pgr.functions.env): Deno.env.get sees the current
// function's values first, then the worker's environment — which the gateway
// reduces to PATH, HOME and the like (never its own secrets).
const fnEnv = new AsyncLocalStorage<Record<string, string>>();
const realGet = Deno.env.get.bind(Deno.env);
const realToObject = Deno.env.toObject.bind(Deno.env);
Deno.env.get = (key: string) => {
  const env = fnEnv.getStore();
  return env && Object.hasOwn(env, key) ? env[key] : realGet(key);
};
Deno.env.has = (key: string) => Deno.env.get(key) !== undefined;
Deno.env.toObject = () => ({ ...realToObject(), ...(fnEnv.getStore() ?? {}) });
const originalServe = Deno.serve.bind(Deno);
type Handler = (req: Request) => Response | Promise<Response>;
let capture: ((h: Handler) => void) | null = null;

// deno-lint-ignore no-explicit-any
(Deno as any).serve = (a: any, b?: any) => {
  const handler: Handler = typeof a === "function" ? a : (b ?? a?.handler);
  if (capture) {
    capture(handler);
    return { finished: Promise.resolve(), shutdown: () => Promise.resolve(), ref() {}, unref() {}, addr: null };
  }
  return originalServe(a, b);
};

const handlers = new Map<string, Handler>();
let loading: Promise<unknown> = Promise.resolve();

function load(name: string, version: string): Promise<Handler> {
  const key = `${name}@${version}`;
  const known = handlers.get(key);
  if (known) return Promise.resolve(known);
  // Imports run one at a time so each Deno.serve call is attributed to its module.
  const next = loading.then(async () => {
    const again = handlers.get(key);
    if (again) return again;
    let captured: Handler | null = null;
    capture = (h) => { captured = h; };
    try {
      const mod = await import(`file://${FN_DIR}/${name}-${version}.ts`);
      const d = mod.default;
      const handler = captured ?? (typeof d === "function" ? d : d && typeof d.fetch === "function" ? d.fetch.bind(d) : null);
      if (!handler) throw new Error(`function ${name} has no handler: call Deno.serve(handler) or export default`);
      handlers.set(key, handler);
      return handler;
    } finally {
      capture = null;
    }
  });
  loading = next.catch(() => undefined);
  return next as Promise<Handler>;
}

originalServe({ hostname: "127.0.0.1", port: 0, onListen: ({ port }) => console.log(`ready ${port}`) }, async (req) => {
  const name = req.headers.get("x-pgstack-function") ?? "";
  const version = req.headers.get("x-pgstack-version") ?? "";
  const path = req.headers.get("x-pgstack-path") ?? "/";
  let env: Record<string, string> = {};
  try {
    env = JSON.parse(req.headers.get("x-pgstack-env") ?? "{}");
  } catch { /* keep empty */ }
  return await fnEnv.run(env, () => invoke(req, name, version, path));
});

async function invoke(req: Request, name: string, version: string, path: string): Promise<Response> {
  try {
    const handler = await load(name, version);
    const headers = new Headers(req.headers);
    for (const h of ["x-pgstack-function", "x-pgstack-version", "x-pgstack-path", "x-pgstack-env"]) headers.delete(h);
    const hasBody = req.method !== "GET" && req.method !== "HEAD";
    const inner = new Request(new URL(path, "http://localhost"), {
      method: req.method,
      headers,
      body: hasBody ? req.body : undefined,
      // deno-lint-ignore no-explicit-any
      duplex: "half" as any,
    } as RequestInit);
    return await handler(inner);
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    return new Response(JSON.stringify({ error: message }), {
      status: 500,
      headers: { "content-type": "application/json", "x-pgstack-function-error": "true" },
    });
  }
}
