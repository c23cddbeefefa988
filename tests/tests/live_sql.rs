//! Issue 4, extension side: pgr.subscribe registration checks, and the deltas the
//! statement triggers send on NOTIFY 'pgr' from inside the writing transaction.

use std::time::Duration;

use futures_util::StreamExt;
use pgstack_tests::TestCluster;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls};

const FIXTURE: &str = r#"
CREATE TABLE public.orders (id int PRIMARY KEY, status text NOT NULL, amount numeric(10,2), customer_id int);
CREATE TABLE public.customers (id int PRIMARY KEY, name text);
INSERT INTO public.customers VALUES (1, 'Ada'), (2, 'Bob');
INSERT INTO public.orders VALUES (1, 'pending', 10, 1), (2, 'shipped', 20, 2);
"#;

/// A LISTEN connection collecting payloads of channel 'pgr'.
async fn listen(tc: &TestCluster) -> (Client, mpsc::UnboundedReceiver<Value>) {
    let (client, mut conn) = tokio_postgres::connect(&tc.superuser_url(), NoTls).await.unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(m)) = stream.next().await {
            if let AsyncMessage::Notification(n) = m {
                let _ = tx.send(serde_json::from_str(n.payload()).unwrap());
            }
        }
    });
    client.batch_execute("LISTEN pgr").await.unwrap();
    (client, rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Value>) -> Value {
    tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("a notification").unwrap()
}

async fn none(rx: &mut mpsc::UnboundedReceiver<Value>) {
    if let Ok(Some(v)) = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {
        panic!("unexpected notification {v}");
    }
}

async fn setup() -> (TestCluster, Client) {
    let tc = TestCluster::start().await.unwrap();
    let db = tc.superuser().await.unwrap();
    db.batch_execute(FIXTURE).await.unwrap();
    (tc, db)
}

#[tokio::test]
async fn deltas_for_inserts_updates_deletes_with_gapless_seq() {
    let (tc, db) = setup().await;
    db.batch_execute("SELECT pgr.subscribe('active_orders', 'SELECT id, status, amount FROM orders WHERE status = ''pending''')").await.unwrap();
    let (_l, mut rx) = listen(&tc).await;

    db.batch_execute("INSERT INTO orders VALUES (3, 'pending', 30, 1)").await.unwrap();
    assert_eq!(next(&mut rx).await, json!({"query_id": "active_orders", "seq": 1, "inserted": [{"id": 3, "status": "pending", "amount": 30.00}], "deleted": []}));
    db.batch_execute("UPDATE orders SET amount = 31 WHERE id = 3").await.unwrap();
    assert_eq!(
        next(&mut rx).await,
        json!({"query_id": "active_orders", "seq": 2,
        "inserted": [{"id": 3, "status": "pending", "amount": 31.00}], "deleted": [{"id": 3, "status": "pending", "amount": 30.00}]})
    );
    // Leaving the filter is a delete; a change outside the result sends nothing.
    db.batch_execute("UPDATE orders SET status = 'shipped' WHERE id = 1").await.unwrap();
    assert_eq!(next(&mut rx).await, json!({"query_id": "active_orders", "seq": 3, "inserted": [], "deleted": [{"id": 1, "status": "pending", "amount": 10.00}]}));
    db.batch_execute("UPDATE orders SET amount = 99 WHERE id = 2").await.unwrap();
    none(&mut rx).await;
    // Entering the filter is an insert.
    db.batch_execute("UPDATE orders SET status = 'pending' WHERE id = 2").await.unwrap();
    assert_eq!(next(&mut rx).await["inserted"], json!([{"id": 2, "status": "pending", "amount": 99.00}]));
    db.batch_execute("DELETE FROM orders WHERE id = 3").await.unwrap();
    let m = next(&mut rx).await;
    assert_eq!((m["seq"].as_i64(), m["deleted"][0]["id"].as_i64()), (Some(5), Some(3)));
    // A rolled-back write sends nothing and leaves the snapshot alone.
    db.batch_execute("BEGIN; INSERT INTO orders VALUES (9, 'pending', 1, 1); ROLLBACK;").await.unwrap();
    none(&mut rx).await;
    db.batch_execute("TRUNCATE orders").await.unwrap();
    let m = next(&mut rx).await;
    assert_eq!((m["seq"].as_i64(), m["deleted"].as_array().unwrap().len()), (Some(6), 1));
    let seq: i64 = db.query_one("SELECT seq FROM pgr.subscriptions WHERE query_id = 'active_orders'", &[]).await.unwrap().get(0);
    assert_eq!(seq, 6);
}

#[tokio::test]
async fn single_table_filters_take_the_fast_path_and_do_not_block_other_writers() {
    let (tc, db) = setup().await;
    db.batch_execute(
        "SELECT pgr.subscribe('pending', 'SELECT id, status, amount FROM orders WHERE status = ''pending'' AND amount > 5');
         SELECT pgr.subscribe('joined', 'SELECT o.id, c.name FROM orders o JOIN customers c ON c.id = o.customer_id');",
    )
    .await
    .unwrap();
    let fast: Vec<(String, bool)> =
        db.query("SELECT query_id, fast_path FROM pgr.subscriptions ORDER BY query_id", &[]).await.unwrap().iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(fast, vec![("joined".to_owned(), false), ("pending".to_owned(), true)]);
    db.batch_execute("SELECT pgr.unsubscribe('joined')").await.unwrap();
    let (_l, mut rx) = listen(&tc).await;

    // Writer 1 changes the result and holds its transaction open ...
    let w1 = tc.superuser().await.unwrap();
    w1.batch_execute("BEGIN; INSERT INTO orders VALUES (10, 'pending', 50, 1)").await.unwrap();
    // ... writer 2 touches only rows outside the filter (before and after): it does
    // not wait for writer 1 (no subscription lock on the fast path).
    let w2 = tc.superuser().await.unwrap();
    w2.batch_execute("SET statement_timeout = '2s'").await.unwrap();
    w2.batch_execute("UPDATE orders SET amount = 3 WHERE id = 2; INSERT INTO orders VALUES (11, 'pending', 1, 1)").await.unwrap();
    none(&mut rx).await;
    w1.batch_execute("COMMIT").await.unwrap();
    assert_eq!(next(&mut rx).await, json!({"query_id": "pending", "seq": 1, "inserted": [{"id": 10, "status": "pending", "amount": 50.00}], "deleted": []}));

    // Multi-row statements: several rows enter and leave at once; keys of old and new rows both count.
    db.batch_execute("UPDATE orders SET amount = amount + 10 WHERE id IN (1, 11)").await.unwrap();
    let m = next(&mut rx).await;
    assert_eq!(m["seq"], 2);
    let mut ins: Vec<i64> = m["inserted"].as_array().unwrap().iter().map(|r| r["id"].as_i64().unwrap()).collect();
    ins.sort();
    assert_eq!(ins, vec![1, 11], "{m}");
    assert_eq!(m["deleted"], json!([{"id": 1, "status": "pending", "amount": 10.00}]));
    db.batch_execute("UPDATE orders SET id = 12 WHERE id = 11").await.unwrap();
    let m = next(&mut rx).await;
    assert_eq!((m["inserted"][0]["id"].as_i64(), m["deleted"][0]["id"].as_i64()), (Some(12), Some(11)), "a key change is a delete plus an insert");
    db.batch_execute("DELETE FROM orders WHERE status = 'pending'").await.unwrap();
    let m = next(&mut rx).await;
    assert_eq!(m["deleted"].as_array().unwrap().len(), 3, "{m}");
    // The snapshot matches a full recomputation.
    db.batch_execute("INSERT INTO orders VALUES (20, 'pending', 9, 1), (21, 'pending', 2, 1)").await.unwrap();
    let m = next(&mut rx).await;
    assert_eq!(m["inserted"], json!([{"id": 20, "status": "pending", "amount": 9.00}]));
    let same: bool = db
        .query_one(
            "SELECT (SELECT array_agg(row_key ORDER BY row_key) FROM pgr.live_rows WHERE query_id = 'pending')
                  = (SELECT array_agg(jsonb_build_array(id)::text ORDER BY jsonb_build_array(id)::text) FROM orders WHERE status = 'pending' AND amount > 5)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(same);
    // Unsubscribing removes the transition-table triggers with the last fast subscription.
    db.batch_execute("SELECT pgr.unsubscribe('pending')").await.unwrap();
    let left: i64 = db.query_one("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'pgr_live_%'", &[]).await.unwrap().get(0);
    assert_eq!(left, 0);
}

/// The fast path evaluates the query's own (deparsed) definition over the written
/// rows and over the touched keys: it must hold for names that need quoting, tables
/// outside `public`, aliases and functions of the table's schema in the predicate —
/// and its cost must not depend on the planner's statistics (the rows of the result
/// are all new to ANALYZE here).
#[tokio::test]
async fn the_fast_path_handles_quoted_names_schemas_aliases_and_stale_statistics() {
    let (tc, db) = setup().await;
    db.batch_execute(
        r#"CREATE SCHEMA "App Data";
           CREATE TABLE "App Data"."Line Items" ("Id" int PRIMARY KEY, "Kind" text NOT NULL, qty int NOT NULL);
           CREATE INDEX ON "App Data"."Line Items" ("Kind");
           INSERT INTO "App Data"."Line Items" SELECT g, 'other', 1 FROM generate_series(1, 20000) g;
           ANALYZE "App Data"."Line Items";
           CREATE FUNCTION "App Data".big(n int) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT n >= 10';
           SELECT pgr.subscribe('big_watched', 'SELECT li."Id", li.qty FROM "App Data"."Line Items" li WHERE li."Kind" = ''watched'' AND "App Data".big(li.qty)', key_columns => ARRAY['Id']);"#,
    )
    .await
    .unwrap();
    let fast: bool = db.query_one("SELECT fast_path FROM pgr.subscriptions WHERE query_id = 'big_watched'", &[]).await.unwrap().get(0);
    assert!(fast, "a single-table filter takes the fast path");
    let (_l, mut rx) = listen(&tc).await;

    db.batch_execute(r#"INSERT INTO "App Data"."Line Items" VALUES (20001, 'watched', 50), (20002, 'watched', 5), (20003, 'other', 50)"#).await.unwrap();
    assert_eq!(next(&mut rx).await, json!({"query_id": "big_watched", "seq": 1, "inserted": [{"Id": 20001, "qty": 50}], "deleted": []}));
    db.batch_execute(r#"UPDATE "App Data"."Line Items" SET qty = 12 WHERE "Id" IN (20001, 20002)"#).await.unwrap();
    let m = next(&mut rx).await;
    assert_eq!((&m["seq"], &m["deleted"]), (&json!(2), &json!([{"Id": 20001, "qty": 50}])), "{m}");
    let mut ins: Vec<(i64, i64)> = m["inserted"].as_array().unwrap().iter().map(|r| (r["Id"].as_i64().unwrap(), r["qty"].as_i64().unwrap())).collect();
    ins.sort();
    assert_eq!(ins, vec![(20001, 12), (20002, 12)]);
    db.batch_execute(r#"UPDATE "App Data"."Line Items" SET "Kind" = 'other' WHERE "Id" = 20002; UPDATE "App Data"."Line Items" SET qty = 2 WHERE "Id" = 5"#).await.unwrap();
    assert_eq!(next(&mut rx).await, json!({"query_id": "big_watched", "seq": 3, "inserted": [], "deleted": [{"Id": 20002, "qty": 12}]}));
    none(&mut rx).await;

    // Many rows enter the result after ANALYZE saw none: each further write still
    // reads only its own rows, by key — not the result through the "Kind" index the
    // stale statistics make look empty. Counted in tuples read from the table.
    db.batch_execute(r#"INSERT INTO "App Data"."Line Items" SELECT g, 'watched', 10 FROM generate_series(30001, 45000) g"#).await.unwrap();
    let m = next(&mut rx).await;
    assert_eq!(m["type"], "overflow", "15k rows exceed one NOTIFY");
    let tuples_read = || async {
        db.batch_execute("SELECT pg_stat_force_next_flush()").await.unwrap();
        db.batch_execute("SELECT pg_stat_clear_snapshot()").await.unwrap();
        db.query_one(r#"SELECT (coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0))::bigint FROM pg_stat_user_tables WHERE relid = '"App Data"."Line Items"'::regclass"#, &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    let before = tuples_read().await;
    for i in 0..100 {
        db.execute(r#"INSERT INTO "App Data"."Line Items" VALUES ($1, 'watched', 10)"#, &[&(50000 + i)]).await.unwrap();
        assert_eq!(next(&mut rx).await["inserted"][0]["Id"], 50000 + i);
    }
    let read = tuples_read().await - before;
    assert!(read <= 100 * 4, "100 single-row writes into a 15k-row result read {read} tuples");
    let snapshot: i64 = db.query_one("SELECT count(*) FROM pgr.live_rows WHERE query_id = 'big_watched'", &[]).await.unwrap().get(0);
    assert_eq!(snapshot, 15101);
}

#[tokio::test]
async fn joins_notify_mode_and_overflow() {
    let (tc, db) = setup().await;
    db.batch_execute(
        "SELECT pgr.subscribe('orders_with_names', 'SELECT o.id, o.status, c.name FROM orders o JOIN customers c ON c.id = o.customer_id');
         SELECT pgr.subscribe('order_ping', 'SELECT id FROM orders', 'notify');",
    )
    .await
    .unwrap();
    let tables: Vec<String> = db.query_one("SELECT tables::text[] FROM pgr.subscriptions WHERE query_id = 'orders_with_names'", &[]).await.unwrap().get(0);
    assert_eq!(tables.len(), 2, "{tables:?}");
    let (_l, mut rx) = listen(&tc).await;

    // A change on the joined table changes the join's rows.
    db.batch_execute("UPDATE customers SET name = 'Ada L.' WHERE id = 1").await.unwrap();
    let m = next(&mut rx).await;
    assert_eq!(m["query_id"], "orders_with_names");
    assert_eq!(m["inserted"], json!([{"id": 1, "status": "pending", "name": "Ada L."}]));

    db.batch_execute("INSERT INTO orders VALUES (5, 'new', 1, 2)").await.unwrap();
    let mut got = [next(&mut rx).await, next(&mut rx).await];
    got.sort_by_key(|m| m["query_id"].as_str().unwrap().to_owned());
    assert_eq!(got[0], json!({"type": "invalidated", "query_id": "order_ping", "seq": 1}));
    assert_eq!(got[1]["inserted"], json!([{"id": 5, "status": "new", "name": "Bob"}]));

    // A change too large for one NOTIFY becomes an overflow.
    db.batch_execute("INSERT INTO orders SELECT g, repeat('x', 100), 1, 1 FROM generate_series(100, 300) g").await.unwrap();
    let mut got = [next(&mut rx).await, next(&mut rx).await];
    got.sort_by_key(|m| m["query_id"].as_str().unwrap().to_owned());
    assert_eq!(got[1], json!({"type": "overflow", "query_id": "orders_with_names", "seq": 3, "fetch": true}));
}

#[tokio::test]
async fn registration_refuses_what_it_cannot_serve() {
    let (_tc, db) = setup().await;
    let err = |sql: &str| {
        let (db, sql) = (&db, sql.to_owned());
        async move { db.batch_execute(&sql).await.expect_err(&sql).as_db_error().map(|e| e.message().to_owned()).unwrap_or_default() }
    };
    assert!(err("SELECT pgr.subscribe('a', 'DELETE FROM orders RETURNING id')").await.contains("only SELECT"));
    assert!(err("SELECT pgr.subscribe('a', 'SELECT id FROM orders; DROP TABLE orders')").await.contains("one statement"));
    assert!(err("SELECT pgr.subscribe('a', 'WITH d AS (DELETE FROM orders RETURNING id) SELECT id FROM d')").await.contains("data-modifying"));
    assert!(err("SELECT pgr.subscribe('a', 'SELECT id INTO x FROM orders')").await.contains("SELECT INTO"));
    assert!(err("SELECT pgr.subscribe('a', 'SELECT id FROM orders FOR UPDATE')").await.contains("FOR UPDATE"));
    assert!(err("SELECT pgr.subscribe('a', 'SELECT status FROM orders')").await.contains("key column"));
    assert!(err("SELECT pgr.subscribe('a', 'SELECT 1 AS id, status FROM orders')").await.contains("duplicate keys"));
    assert!(err("SELECT pgr.subscribe('a', 'SELECT id FROM orders WHERE customer_id::text = auth.uid()::text')").await.contains("depends on the viewer (auth.uid())"));
    // Found in the parse tree: quoting, spacing, comments and nesting cannot hide a call.
    for q in [
        r#"SELECT id FROM orders WHERE customer_id::text = "auth" . "uid" ()::text"#,
        "SELECT id FROM orders WHERE customer_id::text = AUTH.UID/**/()::text",
        "SELECT id FROM orders WHERE status = (SELECT current_setting('request.jwt.claims', true))",
        "SELECT id FROM orders WHERE status IN (SELECT s FROM (SELECT CURRENT_USER::text AS s) x)",
        "SELECT id, session_user AS who FROM orders",
        "SELECT id FROM orders WHERE EXISTS (SELECT 1 WHERE auth.jwt() ->> 'role' = 'admin')",
    ] {
        let q = q.replace('\'', "''");
        assert!(err(&format!("SELECT pgr.subscribe('a', '{q}')")).await.contains("depends on the viewer"), "{q}");
    }
    // The same words as data are not calls (a regex refused these).
    let v: Option<String> =
        db.query_one("SELECT pgr.live_query_viewer_dependency($1)", &[&"SELECT id FROM orders WHERE status <> 'current_user' -- auth.uid()"]).await.unwrap().get(0);
    assert_eq!(v, None);
    assert!(err("SELECT pgr.subscribe('_channel_x', 'SELECT id FROM orders')").await.contains("invalid query_id"));
    assert!(err("SELECT pgr.subscribe('a', 'SELECT 1 AS id')").await.contains("reads no table"));
    assert!(err("SELECT pgr.subscribe('a', 'SELECT id FROM orders', 'sometimes')").await.contains("mode"));
    let n: i64 = db.query_one("SELECT count(*) FROM pgr.subscriptions", &[]).await.unwrap().get(0);
    assert_eq!(n, 0);
    let triggers: i64 = db.query_one("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'pgr_live_%'", &[]).await.unwrap().get(0);
    assert_eq!(triggers, 0, "failed registrations leave no trigger behind");

    // Triggers are shared and removed with the last subscription of a table.
    db.batch_execute("SELECT pgr.subscribe('x', 'SELECT id FROM orders'); SELECT pgr.subscribe('y', 'SELECT id, status FROM orders')").await.unwrap();
    let count = || async { db.query_one("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'orders'::regclass AND tgname LIKE 'pgr_live_%'", &[]).await.unwrap().get::<_, i64>(0) };
    // truncate (shared) and three transition-table triggers per fast-path subscription.
    assert_eq!(count().await, 7);
    db.batch_execute("SELECT pgr.unsubscribe('x')").await.unwrap();
    assert_eq!(count().await, 4);
    let gone: bool = db.query_one("SELECT pgr.unsubscribe('y')", &[]).await.unwrap().get(0);
    assert!(gone);
    assert_eq!(count().await, 0);
    let again: bool = db.query_one("SELECT pgr.unsubscribe('y')", &[]).await.unwrap().get(0);
    assert!(!again);
}
