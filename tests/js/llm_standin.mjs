// A STAND-IN for the paid LLM providers (not a model): a local HTTP server that
// speaks the exact wire formats pgstack's LLM proxy uses — OpenAI's
// /v1/chat/completions and /v1/models, Anthropic's /v1/messages and /v1/models
// (x-api-key, anthropic-version), Ollama's /api/chat and /api/tags — with scripted
// answers: a question gets one ```sql block counting the notes table; a request that
// offers tools gets a tool call to execute_sql instead. Keys are checked
// (sk-openai-test, sk-ant-test) so the tests see they are sent.
//
//   node tests/js/llm_standin.mjs   → prints `READY <port>`
import http from 'node:http';

const SQL = 'SELECT count(*) AS n FROM notes';
const answerText = '```sql\n' + SQL + '\n```';

// Streamed answers: the text in three pieces, in each provider's framing.
const pieces = [answerText.slice(0, 5), answerText.slice(5, 20), answerText.slice(20)];
function stream(res, kind, model) {
  const ndjson = kind === 'ollama';
  res.writeHead(200, { 'content-type': ndjson ? 'application/x-ndjson' : 'text/event-stream' });
  for (const p of pieces) {
    if (kind === 'openai') res.write(`data: ${JSON.stringify({ id: 'c1', object: 'chat.completion.chunk', model, choices: [{ index: 0, delta: { content: p } }] })}\n\n`);
    if (kind === 'anthropic') res.write(`event: content_block_delta\ndata: ${JSON.stringify({ type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: p } })}\n\n`);
    if (ndjson) res.write(JSON.stringify({ model, message: { role: 'assistant', content: p }, done: false }) + '\n');
  }
  if (kind === 'openai') res.write('data: [DONE]\n\n');
  if (kind === 'anthropic') res.write(`event: message_stop\ndata: ${JSON.stringify({ type: 'message_stop' })}\n\n`);
  if (ndjson) res.write(JSON.stringify({ model, done: true }) + '\n');
  res.end();
}

function reply(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

const server = http.createServer((req, res) => {
  let raw = '';
  req.on('data', (c) => { raw += c; });
  req.on('end', () => {
    const body = raw ? JSON.parse(raw) : {};
    const wantsTools = Array.isArray(body.tools) && body.tools.length > 0;
    const anthropic = 'anthropic-version' in req.headers || 'x-api-key' in req.headers;
    // OpenAI (both serve /v1/models: Anthropic's callers send its headers)
    if (!anthropic && (req.url.startsWith('/v1/chat/completions') || req.url === '/v1/models')) {
      if (req.headers.authorization !== 'Bearer sk-openai-test') return reply(res, 401, { error: { message: 'Incorrect API key provided', type: 'invalid_request_error' } });
      if (req.method === 'GET') return reply(res, 200, { object: 'list', data: [{ id: 'gpt-standin', object: 'model', owned_by: 'standin' }] });
      if (body.stream) return stream(res, 'openai', body.model);
      const message = wantsTools
        ? { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'execute_sql', arguments: JSON.stringify({ sql: SQL }) } }] }
        : { role: 'assistant', content: answerText };
      return reply(res, 200, { id: 'chatcmpl-1', object: 'chat.completion', created: 0, model: body.model, choices: [{ index: 0, message, finish_reason: wantsTools ? 'tool_calls' : 'stop' }], usage: { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 } });
    }
    // Anthropic
    if (req.url === '/v1/messages' || req.url.startsWith('/v1/models')) {
      if (req.headers['x-api-key'] !== 'sk-ant-test' || !req.headers['anthropic-version']) return reply(res, 401, { type: 'error', error: { type: 'authentication_error', message: 'invalid x-api-key' } });
      if (req.method === 'GET') return reply(res, 200, { data: [{ type: 'model', id: 'claude-standin', display_name: 'Claude stand-in' }], has_more: false });
      if (body.stream) return stream(res, 'anthropic', body.model);
      const content = wantsTools
        ? [{ type: 'tool_use', id: 'toolu_1', name: 'execute_sql', input: { sql: SQL } }]
        : [{ type: 'text', text: answerText }];
      return reply(res, 200, { id: 'msg_1', type: 'message', role: 'assistant', model: body.model, content, stop_reason: wantsTools ? 'tool_use' : 'end_turn', usage: { input_tokens: 10, output_tokens: 5 } });
    }
    // Ollama
    if (req.url === '/api/tags') return reply(res, 200, { models: [{ name: 'llama-standin:latest', model: 'llama-standin:latest' }] });
    if (req.url === '/api/chat') {
      if (body.stream) return stream(res, 'ollama', body.model);
      const message = wantsTools
        ? { role: 'assistant', content: '', tool_calls: [{ function: { name: 'execute_sql', arguments: { sql: SQL } } }] }
        : { role: 'assistant', content: answerText };
      return reply(res, 200, { model: body.model, created_at: '2026-01-01T00:00:00Z', message, done: true, prompt_eval_count: 10, eval_count: 5 });
    }
    reply(res, 404, { error: 'not found' });
  });
});
server.listen(0, '127.0.0.1', () => console.log(`READY ${server.address().port}`));
