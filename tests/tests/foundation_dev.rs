//! Issue 2: `pgstack dev` creates a private cluster, the extension and keys, serves
//! /health, stops the cluster on SIGTERM, and a second run reuses data and keys.

use std::os::unix::fs::PermissionsExt;

use pgstack_tests::{connect, pgstack_bin, Gateway};
use serde_json::json;

fn banner_value(out: &str, label: &str) -> String {
    out.lines().find_map(|l| l.trim().strip_prefix(label).map(|v| v.trim().to_owned())).unwrap_or_else(|| panic!("no {label:?} in:\n{out}"))
}

async fn start_dev(dir: &std::path::Path) -> Gateway {
    Gateway::spawn(&["dev"], &[("PGSTACK_DIR", dir.display().to_string()), ("LISTEN_ADDR", "127.0.0.1:0".to_owned())]).await.unwrap()
}

#[tokio::test]
async fn dev_runs_the_stack_and_a_second_run_keeps_data_and_keys() {
    let project = tempfile::tempdir().unwrap();
    std::fs::set_permissions(project.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = project.path().join(".pgstack");

    // First run: creates everything.
    let mut gw = start_dev(&state).await;
    let out = gw.stdout();
    let anon = banner_value(&out, "anon key:");
    let service = banner_value(&out, "service_role key:");
    let su_url = banner_value(&out, "Superuser URL:");
    let db_url = banner_value(&out, "Database URL:");
    assert!(db_url.starts_with("postgres://authenticator:"), "{db_url}");
    // The gateway reaches its own cluster over the Unix socket in the cluster folder
    // (loopback TCP costs every request two trips through the TCP/IP stack).
    assert!(db_url.contains("@%2F"), "the gateway does not use the cluster's Unix socket: {db_url}");
    let r = reqwest::get(gw.url("/health")).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let h = r.json::<serde_json::Value>().await.unwrap();
    assert_eq!((&h["status"], &h["pg_connected"], &h["server"]), (&json!("ok"), &json!(true), &json!("pgstack")), "{h}");

    let su = connect(&su_url).await.unwrap();
    su.batch_execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('survives restarts')").await.unwrap();
    drop(su);
    // The gateway's own login works with the printed URL.
    connect(&db_url).await.unwrap().query_one("SELECT 1", &[]).await.unwrap();

    let status = gw.terminate().await.unwrap();
    assert!(status.success(), "dev exit status {status:?}\n{}", gw.stderr());
    assert!(gw.stdout().contains("PostgreSQL stopped"), "{}", gw.stdout());
    assert!(connect(&su_url).await.is_err(), "the cluster still accepts connections after dev stopped");

    // `pgstack keys` prints the persisted keys.
    let keys = tokio::process::Command::new(pgstack_bin().unwrap()).args(["keys", "--dir"]).arg(&state).output().await.unwrap();
    let keys = String::from_utf8_lossy(&keys.stdout).to_string();
    assert!(keys.contains(&format!("ANON_KEY={anon}")), "{keys}");

    // Second run: same keys, same data.
    let mut gw = start_dev(&state).await;
    let out = gw.stdout();
    assert_eq!(banner_value(&out, "anon key:"), anon);
    assert_eq!(banner_value(&out, "service_role key:"), service);
    assert!(!out.contains("creating a PostgreSQL cluster"), "second run re-created the cluster:\n{out}");
    let su = connect(&banner_value(&out, "Superuser URL:")).await.unwrap();
    let v: String = su.query_one("SELECT v FROM kept", &[]).await.unwrap().get(0);
    assert_eq!(v, "survives restarts");
    let r = reqwest::get(gw.url("/health")).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(gw.terminate().await.unwrap().success());
}
