//! The pipeline client (gateway/src/db/pipeline) against a real cluster: a pipeline
//! whose statements and answers are each larger than the socket buffers completes —
//! Postgres answers while the pipeline is still being written and stops reading once
//! its answers are not read (a realtime check for a thousand viewers is such a
//! pipeline; it used to wait forever with the backend in ClientWrite).

use std::time::Duration;

use pgstack_gateway::db::pipeline::{Step, WireConn};
use pgstack_tests::{TestCluster, PASSWORD};

/// 4 000 statements of 8 KiB each way: 32 MiB written, 32 MiB answered.
async fn big_pipeline(url: &str) {
    let config: tokio_postgres::Config = url.parse().unwrap();
    let mut conn = WireConn::connect(&config).await.unwrap();
    let values: Vec<String> = (0..4000).map(|i| format!("{i:08}").repeat(1024)).collect();
    let steps: Vec<Step> = values.iter().map(|v| Step { sql: "SELECT $1::text", params: vec![Some(v.as_str())], text_params: false }).collect();
    let results = tokio::time::timeout(Duration::from_secs(60), conn.pipeline(&steps)).await.expect("the pipeline did not complete in 60 s").unwrap();
    assert_eq!(results.len(), 4000);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.rows.len(), 1);
        assert_eq!(r.rows[0][0].as_deref(), Some(values[i].as_str()), "step {i}");
    }
    // The connection is in step afterwards: the next pipeline answers as usual.
    let one = |sql| vec![Step { sql, params: vec![], text_params: false }];
    let now = conn.pipeline(&one("SELECT clock_timestamp()::text")).await.unwrap()[0].rows[0][0].clone().unwrap();
    // Many steps of one known statement prepare nothing again (the connection's
    // cap on prepared statements counts statements, not steps).
    conn.pipeline(&steps).await.unwrap();
    let since = format!("SELECT count(*) FILTER (WHERE prepare_time < '{now}'), count(*) FROM pg_prepared_statements WHERE statement = 'SELECT $1::text'");
    let kept = conn.pipeline(&one(&since)).await.unwrap();
    assert_eq!(kept[0].rows[0], vec![Some("1".to_owned()), Some("1".to_owned())], "prepared once, before {now}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_larger_than_the_socket_buffers_complete() {
    let tc = TestCluster::start_bare().unwrap();
    big_pipeline(&tc.superuser_url()).await;
    // The gateway's usual path to a local cluster: its Unix socket (smaller buffers).
    let socket = tc.cluster.socket_url(pgstack_gateway::dev::cluster::SUPERUSER, PASSWORD, "postgres").expect("the test cluster has a Unix socket");
    big_pipeline(&socket).await;
}
