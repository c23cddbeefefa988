//! Issues 3 and 7: the real, unpatched @supabase/supabase-js (tests/js/) against a real
//! cluster and the real gateway: auth flows and postgrest-js calls.

use std::path::PathBuf;

use pgstack_gateway::config::Secret;
use pgstack_gateway::keys;
use pgstack_shared::Role;
use pgstack_tests::{Gateway, SmtpSink, TestCluster, JWT_SECRET};

const FIXTURE: &str = r#"
CREATE TABLE public.items (id int PRIMARY KEY, name text NOT NULL, price numeric(10,2));
GRANT ALL ON public.items TO anon, authenticated, service_role;
INSERT INTO public.items VALUES (1, 'Laptop', 999.00), (2, 'Mouse', 19.99), (3, 'Desk', 250.00);
CREATE FUNCTION public.add(a int, b int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT a + b';
CREATE FUNCTION public.search_items(term text) RETURNS SETOF public.items LANGUAGE sql STABLE
    AS $$ SELECT * FROM public.items WHERE name ILIKE '%' || term || '%' $$;
CREATE TABLE public.reviews (id int PRIMARY KEY, item_id int NOT NULL REFERENCES public.items (id) ON DELETE CASCADE, stars int NOT NULL);
GRANT ALL ON public.reviews TO anon, authenticated, service_role;
INSERT INTO public.reviews VALUES (1, 1, 5), (2, 1, 3), (3, 2, 4);
INSERT INTO pgr.functions (name, source) VALUES
 ('echo', 'Deno.serve(async (req) => Response.json({ method: req.method, body: await req.json() }));'),
 ('plain', 'Deno.serve(() => new Response("hello world", { headers: { "content-type": "text/plain" } }));'),
 ('bytes', 'Deno.serve(async (req) => new Response(new Uint8Array(await req.arrayBuffer()).reverse(), { headers: { "content-type": "application/octet-stream" } }));'),
 ('boom', 'Deno.serve(() => { throw new Error("boom"); });');
CREATE TABLE public.notes (id bigserial PRIMARY KEY, body text, owner uuid NOT NULL DEFAULT auth.uid());
ALTER TABLE public.notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY own ON public.notes FOR ALL TO authenticated USING (owner = auth.uid()) WITH CHECK (owner = auth.uid());
GRANT ALL ON public.notes TO anon, authenticated, service_role;
GRANT USAGE ON SEQUENCE public.notes_id_seq TO authenticated, service_role;
"#;

#[tokio::test]
async fn supabase_js_auth_and_rest() {
    let tc = TestCluster::start().await.unwrap();
    tc.superuser().await.unwrap().batch_execute(FIXTURE).await.unwrap();
    let secret = Secret::new(JWT_SECRET);
    let anon = keys::mint(Role::Anon, &secret).unwrap();
    let service = keys::mint(Role::ServiceRole, &secret).unwrap();
    let smtp = SmtpSink::start().await.unwrap();
    let mut env: Vec<(&str, String)> = smtp.env();
    env.extend([
        ("ANON_KEY", anon.clone()),
        ("SERVICE_ROLE_KEY", service.clone()),
        ("ALLOW_ANONYMOUS_SIGNIN", "true".to_owned()),
        ("SITE_URL", "http://app.test".to_owned()),
        ("EMAIL_MIN_INTERVAL", "0".to_owned()),
        ("DENO_PATH", PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("js/node_modules/@deno/linux-x64-glibc/deno").display().to_string()),
    ]);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let gw = Gateway::serve(&tc, &env).await.unwrap();

    let js = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("js");
    assert!(js.join("node_modules/@supabase/supabase-js").exists(), "run scripts/install-deps.sh (npm ci in tests/js)");
    let out = tokio::process::Command::new("node")
        .args(["--test", "--test-reporter=spec", "supabase.test.mjs"])
        .current_dir(&js)
        .env("PGSTACK_URL", &gw.base)
        .env("ANON_KEY", &anon)
        .env("SERVICE_ROLE_KEY", &service)
        .env("SMTP_SINK_DIR", smtp.dir())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "supabase-js tests failed:\n{stdout}\n{stderr}\ngateway log:\n{}", gw.stderr());
}
