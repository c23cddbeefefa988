//! Issue 2: `pgstack serve` refuses to start without a usable secret, and never logs one.

use pgstack_tests::{pgstack_bin, Gateway, TestCluster, JWT_SECRET, PASSWORD};

async fn serve_with(env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(pgstack_bin().unwrap());
    cmd.arg("serve");
    for k in ["DATABASE_URL", "JWT_SECRET", "ANON_KEY", "SERVICE_ROLE_KEY", "PGSTACK_CONFIG"] {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::time::timeout(std::time::Duration::from_secs(30), cmd.output()).await.unwrap().unwrap()
}

#[tokio::test]
async fn refuses_to_start_without_or_with_a_weak_secret() {
    let db = "postgres://authenticator:x@127.0.0.1:1/postgres";
    let out = serve_with(&[("DATABASE_URL", db)]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("JWT_SECRET is required"), "{err}");

    let out = serve_with(&[("DATABASE_URL", db), ("JWT_SECRET", "tooshort")]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("JWT_SECRET is invalid") && err.contains("at least 32"), "{err}");

    let out = serve_with(&[("JWT_SECRET", JWT_SECRET)]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("DATABASE_URL is required"));

    let out = serve_with(&[("DATABASE_URL", db), ("JWT_SECRET", JWT_SECRET), ("ANON_KEY", "not-a-jwt")]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ANON_KEY is invalid"));
}

#[tokio::test]
async fn config_file_is_read_and_environment_wins() {
    let tc = TestCluster::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pgstack.env");
    std::fs::write(&file, format!("DATABASE_URL={}\nJWT_SECRET={JWT_SECRET}\nLISTEN_ADDR=127.0.0.1:1\n", tc.authenticator_url())).unwrap();
    let gw = Gateway::spawn(&["serve", "--config", file.to_str().unwrap()], &[("LISTEN_ADDR", "127.0.0.1:0".to_owned())]).await.unwrap();
    let r = reqwest::get(gw.url("/health")).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let logs = gw.stderr() + &gw.stdout();
    assert!(!logs.contains(JWT_SECRET), "secret leaked into output");
    assert!(!logs.contains(PASSWORD), "database password leaked into output");
}
