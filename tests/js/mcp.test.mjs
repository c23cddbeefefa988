// Drives pgstack's MCP endpoint (/mcp/v1) with the official MCP TypeScript SDK
// (@modelcontextprotocol/sdk, Streamable HTTP transport). Run by tests/tests/agent.rs,
// which starts a cluster with the fixture (notes with RLS on owner_id) and the
// gateway and passes PGSTACK_URL, USER_A / USER_B (user JWTs), USER_A_ID, USER_B_ID.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

const URL_ = process.env.PGSTACK_URL;
const A = process.env.USER_A;
const B = process.env.USER_B;

async function connect(token) {
  const client = new Client({ name: 'pgstack-test', version: '1.0.0' });
  const transport = new StreamableHTTPClientTransport(new URL(`${URL_}/mcp/v1`), {
    requestInit: { headers: { Authorization: `Bearer ${token}` } },
  });
  await client.connect(transport);
  return client;
}

const rowsOf = (result) => {
  assert.equal(result.isError, false, JSON.stringify(result));
  return result.structuredContent.rows;
};

test('the official SDK connects, lists and calls every tool and resource', async () => {
  const c = await connect(A);
  assert.equal(c.getServerVersion().name, 'pgstack');
  const tools = (await c.listTools()).tools.map((t) => t.name).sort();
  assert.deepEqual(tools, ['execute_sql', 'explain_query', 'get_schema_info', 'query_database']);

  const rows = rowsOf(await c.callTool({ name: 'execute_sql', arguments: { sql: 'select id, body from notes order by id' } }));
  assert.deepEqual(rows.map((r) => r.body), ['a1', 'a2']);

  const explained = await c.callTool({ name: 'explain_query', arguments: { sql: 'select * from notes where id = 1' } });
  assert.equal(explained.isError, false, JSON.stringify(explained));
  assert.ok(Array.isArray(explained.structuredContent.plan));

  const schema = await c.callTool({ name: 'get_schema_info', arguments: { schema: 'public' } });
  assert.equal(schema.isError, false);
  const tables = schema.structuredContent.schemas[0].tables.map((t) => t.name);
  assert.ok(tables.includes('notes'), JSON.stringify(tables));
  assert.ok(!tables.includes('secrets'), 'a table the role cannot read is not shown');

  const nl = await c.callTool({ name: 'query_database', arguments: { query: 'how many notes?' } });
  assert.equal(nl.isError, true, 'no LLM configured: a clear tool error');
  assert.match(nl.content[0].text, /LLM/);

  const writes = await c.callTool({ name: 'execute_sql', arguments: { sql: 'delete from notes' } });
  assert.equal(writes.isError, true);
  const smuggled = await c.callTool({ name: 'execute_sql', arguments: { sql: 'select 1; delete from notes' } });
  assert.equal(smuggled.isError, true);

  const resources = (await c.listResources()).resources.map((r) => r.uri).sort();
  assert.deepEqual(resources, ['pg://settings', 'pg://system_info']);
  const info = JSON.parse((await c.readResource({ uri: 'pg://system_info' })).contents[0].text);
  assert.equal(info.role, 'authenticated');
  assert.match(info.server_version, /^15/);
  const settings = JSON.parse((await c.readResource({ uri: 'pg://settings' })).contents[0].text);
  assert.ok(settings.some((s) => s.name === 'work_mem'));
  const publicSchema = JSON.parse((await c.readResource({ uri: 'pg://schema/public' })).contents[0].text);
  assert.ok(publicSchema.schemas[0].tables.some((t) => t.name === 'notes'));
  await assert.rejects(c.readResource({ uri: 'pg://nope' }));
  await c.ping();
  await c.close();
});

test('RLS decides what each user reads through MCP', async () => {
  const b = await connect(B);
  const rows = rowsOf(await b.callTool({ name: 'execute_sql', arguments: { sql: 'select body from notes order by id' } }));
  assert.deepEqual(rows.map((r) => r.body), ['b1']);
  const sneaky = rowsOf(await b.callTool({ name: 'execute_sql', arguments: { sql: "select body from notes where owner_id = $1", params: [process.env.USER_A_ID] } }));
  assert.deepEqual(sneaky, [], "user B never sees user A's rows");
  const forced = await b.callTool({ name: 'execute_sql', arguments: { sql: "select set_config('role', 'service_role', false), (select count(*) from notes)" } });
  // The login is a member of every API role: switching the role (or the claims) is refused.
  assert.equal(forced.isError, true, JSON.stringify(forced));
  assert.match(forced.content[0].text, /set_config/);
  await b.close();
});
