//! Issue 17: the Supabase Realtime protocol. The real, unpatched supabase-js
//! `channel()` API (tests/js/realtime.test.mjs) against a real cluster and the real
//! gateway: postgres_changes under each subscriber's RLS, broadcast, presence,
//! private channels, setAuth, removeChannel, token expiry.

use std::path::PathBuf;

use pgstack_gateway::config::Secret;
use pgstack_gateway::keys;
use pgstack_shared::Role;
use pgstack_tests::{Gateway, TestCluster, JWT_SECRET};
use serde_json::{json, Value};

pub const FIXTURE: &str = r#"
CREATE TABLE public.todos (id bigserial PRIMARY KEY, owner uuid, title text, done boolean NOT NULL DEFAULT false);
ALTER TABLE public.todos ENABLE ROW LEVEL SECURITY;
CREATE POLICY own ON public.todos FOR SELECT TO authenticated USING (owner = auth.uid());
CREATE POLICY public_rows ON public.todos FOR SELECT TO anon USING (owner IS NULL);
GRANT SELECT ON public.todos TO anon, authenticated;
GRANT ALL ON public.todos TO service_role;
GRANT USAGE ON SEQUENCE public.todos_id_seq TO service_role;
ALTER PUBLICATION supabase_realtime ADD TABLE public.todos;
-- What the tests change while clients stay connected (as the owner of the objects).
CREATE FUNCTION public.rt_share_titles(title text) RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
  EXECUTE format('CREATE POLICY shared ON public.todos FOR SELECT TO authenticated USING (title = %L)', title);
END $$;
CREATE FUNCTION public.rt_allow_room(room text) RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
  EXECUTE format('CREATE POLICY room_read ON realtime.messages FOR SELECT TO authenticated USING (realtime.topic() = %L AND auth.uid() = %L::uuid)', room, '00000000-0000-0000-0000-00000000000a');
  EXECUTE format('CREATE POLICY room_write ON realtime.messages FOR INSERT TO authenticated WITH CHECK (realtime.topic() = %L AND auth.uid() = %L::uuid)', room, '00000000-0000-0000-0000-00000000000a');
END $$;
CREATE FUNCTION public.rt_send(topic text, body text) RETURNS void LANGUAGE sql AS $$
  SELECT realtime.send(jsonb_build_object('text', body), 'msg', topic, false)
$$;
REVOKE EXECUTE ON FUNCTION public.rt_share_titles(text), public.rt_allow_room(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.rt_share_titles(text), public.rt_allow_room(text), public.rt_send(text, text) TO service_role;
"#;

pub const USER_A: &str = "00000000-0000-0000-0000-00000000000a";
pub const USER_B: &str = "00000000-0000-0000-0000-00000000000b";

pub fn user_token(sub: &str, ttl: i64) -> String {
    let claims = json!({"sub": sub, "role": "authenticated", "aud": "authenticated", "exp": keys::now() + ttl});
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes())).unwrap()
}

#[tokio::test]
async fn supabase_js_realtime() {
    let tc = TestCluster::start().await.unwrap();
    tc.superuser().await.unwrap().batch_execute(FIXTURE).await.unwrap();
    let secret = Secret::new(JWT_SECRET);
    let anon = keys::mint(Role::Anon, &secret).unwrap();
    let service = keys::mint(Role::ServiceRole, &secret).unwrap();
    let env = [("ANON_KEY", anon.as_str()), ("SERVICE_ROLE_KEY", service.as_str())];
    let gw = Gateway::serve(&tc, &env).await.unwrap();

    let js = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("js");
    assert!(js.join("node_modules/@supabase/supabase-js").exists(), "run scripts/install-deps.sh (npm ci in tests/js)");
    let out = tokio::process::Command::new("node")
        .args(["--test", "--test-reporter=spec", "--test-concurrency=1", "realtime.test.mjs"])
        .current_dir(&js)
        .env("PGSTACK_URL", &gw.base)
        .env("ANON_KEY", &anon)
        .env("SERVICE_ROLE_KEY", &service)
        .env("USER_A", user_token(USER_A, 3600))
        .env("USER_B", user_token(USER_B, 3600))
        .env("USER_B_SHORT", user_token(USER_B, 3))
        .env("USER_A_ID", USER_A)
        .env("USER_B_ID", USER_B)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "realtime tests failed:\n{stdout}\n{stderr}\ngateway log:\n{}", gw.stderr());
    let _: Value = json!(null);
}
