//! Schema discovery of a target, in one catalog query run read-only: schemas, their
//! tables (columns, primary key, indexes, foreign keys, estimated rows) and views.
//! Every API renders its own shape from this one answer.

use serde_json::Value;
use tokio_postgres::Client;

use super::error::WbError;

/// Schemas (all but the system ones, or those named), tables and views.
const SCHEMA_SQL: &str = r#"
with rels as (
  select c.oid, n.nspname as schema, c.relname as name, c.relkind, c.reltuples
  from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
  where c.relkind in ('r', 'p', 'v', 'm', 'f')
    and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname not like 'pg\_toast%' and n.nspname not like 'pg\_temp%'
    and ($1::text[] is null or n.nspname = any($1))
    and ($2::bool is not true or pg_catalog.has_table_privilege(c.oid, 'SELECT'))
), cols as (
  select a.attrelid, json_agg(json_build_object('name', a.attname, 'type', pg_catalog.format_type(a.atttypid, a.atttypmod),
           'nullable', not a.attnotnull, 'default', pg_catalog.pg_get_expr(d.adbin, d.adrelid), 'position', a.attnum) order by a.attnum) as columns
  from pg_catalog.pg_attribute a join rels r on r.oid = a.attrelid
  left join pg_catalog.pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
  where a.attnum > 0 and not a.attisdropped group by a.attrelid
), idx as (
  select i.indrelid, json_agg(json_build_object('name', ic.relname,
           'columns', (select coalesce(json_agg(a.attname order by k.ord), '[]') from unnest(i.indkey::int2[]) with ordinality k(attnum, ord)
                       join pg_catalog.pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum),
           'unique', i.indisunique, 'primary', i.indisprimary, 'definition', pg_catalog.pg_get_indexdef(i.indexrelid)) order by ic.relname) as indexes
  from pg_catalog.pg_index i join pg_catalog.pg_class ic on ic.oid = i.indexrelid join rels r on r.oid = i.indrelid group by i.indrelid
), keys as (
  select con.conrelid,
         json_agg(json_build_object('name', con.conname,
           'columns', (select json_agg(a.attname order by k.ord) from unnest(con.conkey) with ordinality k(attnum, ord)
                       join pg_catalog.pg_attribute a on a.attrelid = con.conrelid and a.attnum = k.attnum),
           'referenced_schema', fn.nspname, 'referenced_table', fc.relname,
           'referenced_columns', (select json_agg(a.attname order by k.ord) from unnest(con.confkey) with ordinality k(attnum, ord)
                       join pg_catalog.pg_attribute a on a.attrelid = con.confrelid and a.attnum = k.attnum)) order by con.conname)
           filter (where con.contype = 'f') as fks,
         (array_agg((select json_agg(a.attname order by k.ord) from unnest(con.conkey) with ordinality k(attnum, ord)
                       join pg_catalog.pg_attribute a on a.attrelid = con.conrelid and a.attnum = k.attnum)) filter (where con.contype = 'p'))[1] as pk
  from pg_catalog.pg_constraint con join rels r on r.oid = con.conrelid
  left join pg_catalog.pg_class fc on fc.oid = con.confrelid left join pg_catalog.pg_namespace fn on fn.oid = fc.relnamespace
  where con.contype in ('f', 'p') group by con.conrelid
)
select json_build_object('schemas', coalesce((select json_agg(s order by s.name) from (
  select n.nspname as name,
    coalesce((select json_agg(json_build_object('name', r.name, 'schema', r.schema,
        'kind', case r.relkind when 'p' then 'partitioned table' when 'f' then 'foreign table' else 'table' end,
        'columns', coalesce(c.columns, '[]'), 'primary_key', coalesce(k.pk, '[]'), 'indexes', coalesce(i.indexes, '[]'),
        'foreign_keys', coalesce(k.fks, '[]'), 'row_estimate', case when r.reltuples < 0 then null else r.reltuples::bigint end) order by r.name)
      from rels r left join cols c on c.attrelid = r.oid left join idx i on i.indrelid = r.oid left join keys k on k.conrelid = r.oid
      where r.schema = n.nspname and r.relkind in ('r', 'p', 'f')), '[]') as tables,
    coalesce((select json_agg(json_build_object('name', r.name, 'schema', r.schema,
        'kind', case r.relkind when 'm' then 'materialized view' else 'view' end, 'columns', coalesce(c.columns, '[]'),
        'definition', pg_catalog.pg_get_viewdef(r.oid)) order by r.name)
      from rels r left join cols c on c.attrelid = r.oid where r.schema = n.nspname and r.relkind in ('v', 'm')), '[]') as views
  from pg_catalog.pg_namespace n
  where n.nspname not in ('pg_catalog', 'information_schema') and n.nspname not like 'pg\_toast%' and n.nspname not like 'pg\_temp%'
    and ($1::text[] is null or n.nspname = any($1))
) s), '[]'))::text
"#;

/// Discovers the schema of the connected database (only `schemas` when given).
pub async fn discover(client: &deadpool_postgres::ClientWrapper, schemas: Option<Vec<String>>, timeout_ms: u64) -> Result<Value, WbError> {
    discover_as(client, schemas, timeout_ms, None).await
}

/// [`discover`] after a prelude (the caller's role): only the relations it may read.
pub async fn discover_as(
    client: &deadpool_postgres::ClientWrapper,
    schemas: Option<Vec<String>>,
    timeout_ms: u64,
    prelude: Option<&super::run::Prelude>,
) -> Result<Value, WbError> {
    client.batch_execute(&format!("BEGIN READ ONLY; SET LOCAL statement_timeout = {timeout_ms}")).await.map_err(|e| WbError::from_pg(&e))?;
    let visible_only = prelude.is_some();
    let row = async {
        if let Some(p) = prelude {
            p.run(client).await?;
        }
        client.query_one(SCHEMA_SQL, &[&schemas, &visible_only]).await.map_err(|e| WbError::from_pg(&e))
    }
    .await;
    let _ = client.batch_execute("ROLLBACK").await;
    let text: String = row?.get(0);
    serde_json::from_str(&text).map_err(|e| WbError::invalid(format!("schema answer: {e}")))
}

/// The server's version string and the session's user and database.
pub async fn server_info(client: &Client) -> Result<(String, String, String), WbError> {
    let row = client.query_one("select current_setting('server_version'), current_user::text, current_database()::text", &[]).await.map_err(|e| WbError::from_pg(&e))?;
    Ok((row.get(0), row.get(1), row.get(2)))
}
