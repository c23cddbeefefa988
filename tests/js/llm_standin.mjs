// A STAND-IN for the paid LLM providers (not a model): a local HTTP server that
// speaks the exact wire formats pgstack's LLM proxy uses — OpenAI's
// /v1/chat/completions and /v1/models, Anthropic's /v1/messages and /v1/models
// (x-api-key, anthropic-version), Ollama's /api/chat and /api/tags — with scripted
// answers: a question gets one ```sql block counting the notes table; a request that
// offers tools gets a tool call to execute_sql instead (whole or streamed, in each
// provider's framing: OpenAI's argument pieces by index, Anthropic's tool_use block
// with input_json_delta pieces, Ollama's whole call); a request whose last message
// is a tool result (checked against the call it answers, in the provider's own
// shape, else 400) gets `Tool said: <the result>`. Keys are checked
// (sk-openai-test, sk-ant-test) so the tests see they are sent.
//
//   node tests/js/llm_standin.mjs   → prints `READY <port>`
import http from 'node:http';

const SQL = 'SELECT count(*) AS n FROM notes';
const answerText = '```sql\n' + SQL + '\n```';

const ARGS = JSON.stringify({ sql: SQL });

// The result a request hands back, checked against the call it answers: `undefined`
// when the last message is not a tool result, `null` when it is malformed.
function toolResult(kind, messages) {
  const last = messages[messages.length - 1] || {};
  const prev = messages[messages.length - 2] || {};
  if (kind === 'openai') {
    if (last.role !== 'tool') return undefined;
    const call = (prev.tool_calls || []).find((c) => c.id === last.tool_call_id);
    if (prev.role !== 'assistant' || !call || call.type !== 'function' || typeof call.function.arguments !== 'string') return null;
    return typeof last.content === 'string' ? last.content : null;
  }
  if (kind === 'anthropic') {
    if (last.role !== 'user' || !Array.isArray(last.content) || last.content[0]?.type !== 'tool_result') return undefined;
    const use = Array.isArray(prev.content) && prev.content.find((b) => b.type === 'tool_use' && b.id === last.content[0].tool_use_id);
    if (prev.role !== 'assistant' || !use || typeof use.input !== 'object') return null;
    return typeof last.content[0].content === 'string' ? last.content[0].content : null;
  }
  if (last.role !== 'tool') return undefined;
  if (prev.role !== 'assistant' || !Array.isArray(prev.tool_calls) || typeof prev.tool_calls[0]?.function?.arguments !== 'object') return null;
  return typeof last.content === 'string' ? last.content : null;
}

// A streamed tool call in each provider's framing.
function streamCall(res, kind, model) {
  const ndjson = kind === 'ollama';
  res.writeHead(200, { 'content-type': ndjson ? 'application/x-ndjson' : 'text/event-stream' });
  const halves = [ARGS.slice(0, 7), ARGS.slice(7)];
  if (kind === 'openai') {
    res.write(`data: ${JSON.stringify({ id: 'c1', object: 'chat.completion.chunk', model, choices: [{ index: 0, delta: { role: 'assistant', tool_calls: [{ index: 0, id: 'call_9', type: 'function', function: { name: 'execute_sql', arguments: '' } }] } }] })}\n\n`);
    for (const h of halves) res.write(`data: ${JSON.stringify({ id: 'c1', object: 'chat.completion.chunk', model, choices: [{ index: 0, delta: { tool_calls: [{ index: 0, function: { arguments: h } }] } }] })}\n\n`);
    res.write(`data: ${JSON.stringify({ id: 'c1', object: 'chat.completion.chunk', model, choices: [{ index: 0, delta: {}, finish_reason: 'tool_calls' }] })}\n\n`);
    res.write('data: [DONE]\n\n');
  }
  if (kind === 'anthropic') {
    const ev = (type, data) => res.write(`event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`);
    ev('message_start', { message: { id: 'msg_2', type: 'message', role: 'assistant', model, content: [], usage: { input_tokens: 10, output_tokens: 1 } } });
    ev('content_block_start', { index: 0, content_block: { type: 'tool_use', id: 'toolu_9', name: 'execute_sql', input: {} } });
    for (const h of halves) ev('content_block_delta', { index: 0, delta: { type: 'input_json_delta', partial_json: h } });
    ev('content_block_stop', { index: 0 });
    ev('message_delta', { delta: { stop_reason: 'tool_use' }, usage: { output_tokens: 5 } });
    ev('message_stop', {});
  }
  if (ndjson) {
    res.write(JSON.stringify({ model, message: { role: 'assistant', content: '', tool_calls: [{ function: { name: 'execute_sql', arguments: { sql: SQL } } }] }, done: false }) + '\n');
    res.write(JSON.stringify({ model, message: { role: 'assistant', content: '' }, done: true, prompt_eval_count: 10, eval_count: 5 }) + '\n');
  }
  res.end();
}

// Streamed answers: the text in three pieces, in each provider's framing.
function stream(res, kind, model, text = answerText) {
  const ndjson = kind === 'ollama';
  const pieces = [text.slice(0, 5), text.slice(5, 20), text.slice(20)];
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
      const result = toolResult('openai', body.messages || []);
      if (result === null) return reply(res, 400, { error: { message: 'messages with tool results are malformed', type: 'invalid_request_error' } });
      if (result !== undefined) {
        if (body.stream) return stream(res, 'openai', body.model, `Tool said: ${result}`);
        return reply(res, 200, { id: 'chatcmpl-2', object: 'chat.completion', created: 0, model: body.model, choices: [{ index: 0, message: { role: 'assistant', content: `Tool said: ${result}` }, finish_reason: 'stop' }], usage: { prompt_tokens: 20, completion_tokens: 5, total_tokens: 25 } });
      }
      if (body.stream) return wantsTools ? streamCall(res, 'openai', body.model) : stream(res, 'openai', body.model);
      const message = wantsTools
        ? { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'execute_sql', arguments: JSON.stringify({ sql: SQL }) } }] }
        : { role: 'assistant', content: answerText };
      return reply(res, 200, { id: 'chatcmpl-1', object: 'chat.completion', created: 0, model: body.model, choices: [{ index: 0, message, finish_reason: wantsTools ? 'tool_calls' : 'stop' }], usage: { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 } });
    }
    // Anthropic
    if (req.url === '/v1/messages' || req.url.startsWith('/v1/models')) {
      if (req.headers['x-api-key'] !== 'sk-ant-test' || !req.headers['anthropic-version']) return reply(res, 401, { type: 'error', error: { type: 'authentication_error', message: 'invalid x-api-key' } });
      if (req.method === 'GET') return reply(res, 200, { data: [{ type: 'model', id: 'claude-standin', display_name: 'Claude stand-in' }], has_more: false });
      const result = toolResult('anthropic', body.messages || []);
      if (result === null) return reply(res, 400, { type: 'error', error: { type: 'invalid_request_error', message: 'tool_result does not answer a tool_use' } });
      if (result !== undefined) {
        if (body.stream) return stream(res, 'anthropic', body.model, `Tool said: ${result}`);
        return reply(res, 200, { id: 'msg_3', type: 'message', role: 'assistant', model: body.model, content: [{ type: 'text', text: `Tool said: ${result}` }], stop_reason: 'end_turn', usage: { input_tokens: 20, output_tokens: 5 } });
      }
      if (body.stream) return wantsTools ? streamCall(res, 'anthropic', body.model) : stream(res, 'anthropic', body.model);
      const content = wantsTools
        ? [{ type: 'tool_use', id: 'toolu_1', name: 'execute_sql', input: { sql: SQL } }]
        : [{ type: 'text', text: answerText }];
      return reply(res, 200, { id: 'msg_1', type: 'message', role: 'assistant', model: body.model, content, stop_reason: wantsTools ? 'tool_use' : 'end_turn', usage: { input_tokens: 10, output_tokens: 5 } });
    }
    // Ollama
    if (req.url === '/api/tags') return reply(res, 200, { models: [{ name: 'llama-standin:latest', model: 'llama-standin:latest' }] });
    if (req.url === '/api/chat') {
      const result = toolResult('ollama', body.messages || []);
      if (result === null) return reply(res, 400, { error: 'tool message does not follow a tool call' });
      if (result !== undefined) {
        if (body.stream) return stream(res, 'ollama', body.model, `Tool said: ${result}`);
        return reply(res, 200, { model: body.model, created_at: '2026-01-01T00:00:00Z', message: { role: 'assistant', content: `Tool said: ${result}` }, done: true, prompt_eval_count: 20, eval_count: 5 });
      }
      if (body.stream) return wantsTools ? streamCall(res, 'ollama', body.model) : stream(res, 'ollama', body.model);
      const message = wantsTools
        ? { role: 'assistant', content: '', tool_calls: [{ function: { name: 'execute_sql', arguments: { sql: SQL } } }] }
        : { role: 'assistant', content: answerText };
      return reply(res, 200, { model: body.model, created_at: '2026-01-01T00:00:00Z', message, done: true, prompt_eval_count: 10, eval_count: 5 });
    }
    reply(res, 404, { error: 'not found' });
  });
});
server.listen(0, '127.0.0.1', () => console.log(`READY ${server.address().port}`));
