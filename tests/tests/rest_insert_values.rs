//! Issue 16 (speed): a single object's insert binds its values as parameters
//! (`VALUES ($1::text::int, ...)`) instead of sending the body as a JSON document
//! for Postgres's record conversion. It must store and refuse exactly what the
//! record conversion does: every case below is written once as a single object and
//! once inside a two-object array (always the record conversion), and the two
//! answers — status, stored value, error code and message — must be equal.

use pgstack_gateway::config::Secret;
use pgstack_gateway::keys;
use pgstack_shared::Role;
use pgstack_tests::{Gateway, TestCluster, JWT_SECRET};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

const FIXTURE: &str = r#"
CREATE TYPE public.mood AS ENUM ('sad', 'happy');
CREATE DOMAIN public.posint AS int CHECK (VALUE > 0);
CREATE TABLE public.vals (
    id serial PRIMARY KEY,
    t text, vc varchar(3), ch char(3), n numeric(5,2), i int, b bool, j jsonb, js json,
    ts timestamp(0), m public.mood, u uuid, by bytea, arr int[], d public.posint, nm name,
    f float8, dflt text DEFAULT 'dflt', iv interval, r int4range, ivy interval year, rc regclass
);
GRANT ALL ON public.vals TO anon, service_role;
GRANT USAGE ON SEQUENCE public.vals_id_seq TO anon, service_role;
CREATE VIEW public.vals_view AS SELECT id, t, i FROM public.vals;
GRANT ALL ON public.vals_view TO service_role;
"#;

struct Env {
    http: Client,
    gw: Gateway,
    service: String,
    _tc: TestCluster,
}

impl Env {
    async fn post(&self, path: &str, prefer: &str, body: &Value) -> (StatusCode, Value) {
        self.post_text(path, prefer, body.to_string()).await
    }

    async fn post_text(&self, path: &str, prefer: &str, body: String) -> (StatusCode, Value) {
        let res = self
            .http
            .post(self.gw.url(&format!("/rest/v1{path}")))
            .header("apikey", &self.service)
            .bearer_auth(&self.service)
            .header("Prefer", prefer)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let st = res.status();
        let text = res.text().await.unwrap();
        (st, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) })
    }
}

/// The answer to one object written alone, and to the same object as the first of
/// two (the second a copy): the stored row's columns (id left out) or the error.
async fn both(env: &Env, path: &str, prefer: &str, obj: Value) -> ((StatusCode, Value), (StatusCode, Value)) {
    both_text(env, path, prefer, &obj.to_string()).await
}

/// [`both`] for an object's exact text (numbers as written, repeated keys).
async fn both_text(env: &Env, path: &str, prefer: &str, obj: &str) -> ((StatusCode, Value), (StatusCode, Value)) {
    let strip = |(st, v): (StatusCode, Value)| -> (StatusCode, Value) {
        let v = match v {
            Value::Array(rows) => rows.into_iter().next().map(|mut r| {
                r.as_object_mut().unwrap().remove("id");
                r
            }),
            other => Some(other),
        };
        (st, v.unwrap_or(Value::Null))
    };
    let one = strip(env.post_text(path, prefer, obj.to_owned()).await);
    let two = strip(env.post_text(path, prefer, format!("[{obj}, {obj}]")).await);
    (one, two)
}

#[tokio::test]
async fn a_single_object_is_stored_and_refused_as_the_record_conversion_does() {
    let tc = TestCluster::start().await.unwrap();
    tc.superuser().await.unwrap().batch_execute(FIXTURE).await.unwrap();
    let service = keys::mint(Role::ServiceRole, &Secret::new(JWT_SECRET)).unwrap();
    let gw = Gateway::serve(&tc, &[("SERVICE_ROLE_KEY", &service)]).await.unwrap();
    let env = Env { http: Client::new(), gw, service, _tc: tc };
    let rep = "return=representation";

    let cases: Vec<(Value, StatusCode)> = vec![
        // text from every JSON kind (numbers as numeric_out prints them)
        (json!({"t": "plain"}), StatusCode::CREATED),
        (json!({"t": 5}), StatusCode::CREATED),
        (json!({"t": 1.50}), StatusCode::CREATED),
        (json!({"t": true}), StatusCode::CREATED),
        (json!({"t": {"a": [1, 2]}}), StatusCode::CREATED),
        (json!({"t": null}), StatusCode::CREATED),
        (json!({"t": "tab\tquote\"slash\\ é 🎉"}), StatusCode::CREATED),
        // length and precision modifiers: errors and rounding as the column type's
        (json!({"vc": "abc"}), StatusCode::CREATED),
        (json!({"vc": "abcd"}), StatusCode::BAD_REQUEST),
        (json!({"vc": "ab   "}), StatusCode::CREATED),
        (json!({"ch": "a"}), StatusCode::CREATED),
        (json!({"ch": "abcd"}), StatusCode::BAD_REQUEST),
        (json!({"n": 1.005}), StatusCode::CREATED),
        (json!({"n": "2.5"}), StatusCode::CREATED),
        (json!({"n": 123456}), StatusCode::BAD_REQUEST),
        (json!({"ts": "2020-01-01 10:00:00.6"}), StatusCode::CREATED),
        (json!({"nm": "x".repeat(70)}), StatusCode::CREATED),
        // numbers and booleans from strings and the other way round
        (json!({"i": "5"}), StatusCode::CREATED),
        (json!({"i": 5}), StatusCode::CREATED),
        (json!({"i": 5.5}), StatusCode::BAD_REQUEST),
        (json!({"i": true}), StatusCode::BAD_REQUEST),
        (json!({"i": "x"}), StatusCode::BAD_REQUEST),
        (json!({"i": 99999999999i64}), StatusCode::BAD_REQUEST),
        (json!({"b": true}), StatusCode::CREATED),
        (json!({"b": "t"}), StatusCode::CREATED),
        (json!({"b": 1}), StatusCode::CREATED),
        (json!({"f": 1.5}), StatusCode::CREATED),
        (json!({"f": "NaN"}), StatusCode::CREATED),
        // jsonb takes any JSON; json and arrays, domains go to the record conversion
        (json!({"j": "s"}), StatusCode::CREATED),
        (json!({"j": 1}), StatusCode::CREATED),
        (json!({"j": {"a": [1, {"b": null}]}}), StatusCode::CREATED),
        (json!({"j": null}), StatusCode::CREATED),
        (json!({"js": {"a": 1}}), StatusCode::CREATED),
        (json!({"arr": [1, 2]}), StatusCode::CREATED),
        (json!({"d": 0}), StatusCode::BAD_REQUEST),
        (json!({"d": 3}), StatusCode::CREATED),
        // enums, uuids, bytea, intervals, ranges: their input functions
        (json!({"m": "happy"}), StatusCode::CREATED),
        (json!({"m": "angry"}), StatusCode::BAD_REQUEST),
        (json!({"u": "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"}), StatusCode::CREATED),
        (json!({"u": "not-a-uuid"}), StatusCode::BAD_REQUEST),
        (json!({"by": "\\x0102ff"}), StatusCode::CREATED),
        (json!({"iv": "1 day 2 hours"}), StatusCode::CREATED),
        (json!({"r": "[1,5)"}), StatusCode::CREATED),
        (json!({"r": 3}), StatusCode::BAD_REQUEST),
        // a modifier the input reads by, a cast from text that is not the input
        (json!({"ivy": 5}), StatusCode::CREATED),
        (json!({"ivy": "5"}), StatusCode::CREATED),
        (json!({"rc": "1259"}), StatusCode::CREATED),
        (json!({"rc": "-"}), StatusCode::CREATED),
        (json!({"rc": "pg_class"}), StatusCode::CREATED),
        // several columns at once, the default left alone
        (json!({"t": "x", "i": 2, "j": [1], "m": "sad", "b": false}), StatusCode::CREATED),
        // no such column
        (json!({"nope": 1}), StatusCode::BAD_REQUEST),
    ];
    for (obj, status) in cases {
        let (one, two) = both(&env, "/vals", rep, obj.clone()).await;
        assert_eq!(one.0, status, "{obj}: {}", one.1);
        assert_eq!(one, two, "{obj}: single object and array differ");
        if status == StatusCode::CREATED {
            assert_eq!(one.1["dflt"], "dflt", "{obj}: the default was replaced: {}", one.1);
        } else {
            assert!(one.1["code"].is_string() && one.1["message"].is_string(), "{obj}: {}", one.1);
        }
    }

    // Numbers the way numeric_out prints them, and a NUL the record conversion refuses.
    let (one, two) = both_text(&env, "/vals", rep, r#"{"t": 1e2}"#).await;
    assert_eq!(one, two);
    assert_eq!(one.1["t"], "100");
    let (one, two) = both_text(&env, "/vals", rep, r#"{"t": -0}"#).await;
    assert_eq!(one, two);
    assert_eq!(one.1["t"], "0");
    let (one, two) = both_text(&env, "/vals", rep, r#"{"t": 12345678901234567890.123456789}"#).await;
    assert_eq!(one, two);
    assert_eq!(one.1["t"], "12345678901234567890.123456789");
    let (one, _) = both(&env, "/vals", rep, json!({"ivy": 5})).await;
    assert_eq!(one.1["ivy"], "5 years");
    let (one, two) = both_text(&env, "/vals", rep, &format!(r#"{{"t": 0.{}1}}"#, "0".repeat(16400))).await;
    assert_eq!(one.0, StatusCode::BAD_REQUEST, "more digits after the point than numeric takes");
    assert_eq!(one, two);
    let (one, two) = both_text(&env, "/vals", rep, r#"{"t": "a\u0000b"}"#).await;
    assert_eq!(one.0, StatusCode::BAD_REQUEST, "{}", one.1);
    assert_eq!(one, two);
    let (one, _) = both_text(&env, "/vals", rep, r#"{"j": {"k": "a\u0000b"}}"#).await;
    assert_eq!(one.0, StatusCode::BAD_REQUEST, "{}", one.1);
    // The last of a repeated key, as jsonb keeps it.
    let (one, two) = both_text(&env, "/vals", rep, r#"{"t": "first", "t": "last"}"#).await;
    assert_eq!(one, two);
    assert_eq!(one.1["t"], "last");

    // columns=: a key the object lacks is NULL, or with missing=default the default.
    let (st, rows) = env.post("/vals?columns=t,dflt", rep, &json!({"t": "c"})).await;
    assert_eq!(st, StatusCode::CREATED);
    assert_eq!((rows[0]["t"].clone(), rows[0]["dflt"].clone()), (json!("c"), Value::Null));
    let (st, rows) = env.post("/vals?columns=t,dflt", &format!("{rep}, missing=default"), &json!({"t": "d"})).await;
    assert_eq!(st, StatusCode::CREATED);
    assert_eq!((rows[0]["t"].clone(), rows[0]["dflt"].clone()), (json!("d"), json!("dflt")));
    let (st, rows) = env.post("/vals?columns=t,dflt", &format!("{rep}, missing=default"), &json!({"t": "e", "dflt": null})).await;
    assert_eq!(st, StatusCode::CREATED);
    assert_eq!(rows[0]["dflt"], Value::Null, "an explicit null is written as null");

    // Upserts, views, a single object asked for as one (the sequential path), and
    // headers-only answers.
    let (st, _) = env.post("/vals", "resolution=merge-duplicates", &json!({"id": 1000, "t": "first"})).await;
    assert_eq!(st, StatusCode::CREATED);
    let (st, rows) = env.post("/vals", &format!("{rep}, resolution=merge-duplicates"), &json!({"id": 1000, "t": "second"})).await;
    assert_eq!((st, rows[0]["t"].clone()), (StatusCode::OK, json!("second")), "updated, none created");
    let (st, rows) = env.post("/vals", &format!("{rep}, resolution=ignore-duplicates"), &json!({"id": 1000, "t": "third"})).await;
    assert_eq!((st, rows), (StatusCode::CREATED, json!([])));
    let (st, rows) = env.post("/vals_view", rep, &json!({"t": "via view", "i": "7"})).await;
    assert_eq!((st, rows[0]["t"].clone(), rows[0]["i"].clone()), (StatusCode::CREATED, json!("via view"), json!(7)));
    let res = env
        .http
        .post(env.gw.url("/rest/v1/vals?select=t,vc"))
        .header("apikey", &env.service)
        .bearer_auth(&env.service)
        .header("Prefer", rep)
        .header("Accept", "application/vnd.pgrst.object+json")
        .json(&json!({"t": "alone", "vc": "abcd"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST, "too long on the sequential path too");
    let res = env
        .http
        .post(env.gw.url("/rest/v1/vals?select=t,n"))
        .header("apikey", &env.service)
        .bearer_auth(&env.service)
        .header("Prefer", rep)
        .header("Accept", "application/vnd.pgrst.object+json")
        .json(&json!({"t": "alone", "n": 1.005}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"t": "alone", "n": 1.01}));
    let (st, body) = env.post("/vals", "return=minimal", &json!({"t": "minimal", "i": 1})).await;
    assert_eq!((st, body), (StatusCode::CREATED, Value::Null));
}
