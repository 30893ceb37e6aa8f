// The official OpenAI SDK for Node (npm `openai`, pinned in scripts/setup.sh) against `vtprune serve` on the
// random-weight `tiny` model, as a real client uses it: models.list, a single turn with an image, a stream with
// usage, a three-turn conversation with a system prompt and an image in the first turn, stop strings, penalties,
// seeds, and errors surfacing as the SDK's typed errors (BadRequestError; APIError with status 503 when the queue
// is full).
//
// Run by run.sh (ctest: ServerOpenAiSdk): VTPRUNE_BIN, VTPRUNE_SDK_DIR (the folder holding node_modules/openai) and
// VTPRUNE_MODEL_DIR (llm.gguf + mmproj.gguf + image.png) come from there.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const OpenAI = require(path.join(process.env.VTPRUNE_SDK_DIR, 'node_modules', 'openai'));
const BIN = process.env.VTPRUNE_BIN;
const MODEL = process.env.VTPRUNE_MODEL_DIR;
const PNG = fs.readFileSync(path.join(MODEL, 'image.png'));
const IMAGE = `data:image/png;base64,${PNG.toString('base64')}`;

function crc32(bytes) {
  let c = ~0;
  for (const b of bytes) {
    c ^= b;
    for (let i = 0; i < 8; ++i) c = (c >>> 1) ^ (0xEDB88320 & -(c & 1));
  }
  return ~c >>> 0;
}

// The same picture as other bytes (a PNG tEXt chunk after IHDR): an image no cache has seen.
function freshImage(tag) {
  const data = Buffer.from(`tEXtComment\0${tag}`, 'latin1');
  const chunk = Buffer.alloc(8 + data.length);
  chunk.writeUInt32BE(data.length - 4, 0);
  data.copy(chunk, 4);
  chunk.writeUInt32BE(crc32(data), 4 + data.length);
  return `data:image/png;base64,${Buffer.concat([PNG.subarray(0, 33), chunk, PNG.subarray(33)]).toString('base64')}`;
}

// `vtprune serve` on a port the OS picks; resolves once it answers.
function startServer(args) {
  return new Promise((resolve, reject) => {
    const child = spawn(BIN, ['serve', '-m', path.join(MODEL, 'llm.gguf'), '--mmproj', path.join(MODEL, 'mmproj.gguf'),
      '--host', '127.0.0.1', '--port', '0', '-t', '1', '--quiet', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    const onData = (data) => {
      log += data.toString();
      const m = log.match(/listening on (http:\/\/127\.0\.0\.1:\d+)/);
      if (m) resolve({ child, url: m[1], log: () => log });
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', (d) => { log += d.toString(); });
    child.on('exit', (code) => reject(new Error(`vtprune serve exited (${code}) during startup:\n${log}`)));
  });
}

function stopServer(server) {
  return new Promise((resolve) => {
    server.child.removeAllListeners('exit');
    server.child.on('exit', (code, signal) => resolve({ code, signal }));
    server.child.kill('SIGTERM');
  });
}

let server;
let client;

before(async () => {
  server = await startServer(['--parallel', '2', '--queue', '8', '-c', '2048', '--method', 'hiprune', '--budget', '64',
    '--max-images', '2']);
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'not-needed', maxRetries: 0, timeout: 120_000 });
});

after(async () => {
  const { code } = await stopServer(server);
  assert.equal(code, 0, `the server did not exit 0 on SIGTERM:\n${server.log()}`);
});

const imageTurn = (text, url = IMAGE) => ({
  role: 'user',
  content: [{ type: 'image_url', image_url: { url } }, { type: 'text', text }],
});

test('models.list names the model file', async () => {
  const ids = [];
  for await (const model of client.models.list()) ids.push(model.id);
  assert.deepEqual(ids, ['llm.gguf']);
});

test('a single turn with an image', async () => {
  const r = await client.chat.completions.create({ model: 'llm.gguf', messages: [imageTurn('What is in the image?')], max_tokens: 8 });
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices.length, 1);
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.equal(typeof r.choices[0].message.content, 'string');
  assert.ok(['stop', 'length'].includes(r.choices[0].finish_reason));
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
  assert.equal(typeof r.usage.prompt_tokens_details.cached_tokens, 'number');
  assert.equal(r.usage.visual_tokens_kept, 64);
});

test('streaming with usage gives the answer of the same request unstreamed', async () => {
  const request = { model: 'llm.gguf', messages: [imageTurn('Describe it.')], max_completion_tokens: 12, seed: 1 };
  const plain = await client.chat.completions.create(request);
  const stream = await client.chat.completions.create({ ...request, stream: true, stream_options: { include_usage: true } });
  let content = '';
  let finish = null;
  let usage = null;
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    if (chunk.usage) usage = chunk.usage;
    for (const choice of chunk.choices) {
      content += choice.delta.content ?? '';
      finish = choice.finish_reason ?? finish;
    }
  }
  assert.equal(content, plain.choices[0].message.content);
  assert.equal(finish, plain.choices[0].finish_reason);
  assert.ok(usage, 'no usage chunk');
  assert.equal(usage.completion_tokens, plain.usage.completion_tokens);
  assert.equal(usage.prompt_tokens, plain.usage.prompt_tokens);
});

test('a three-turn conversation with a system prompt and an image in the first turn', async () => {
  const messages = [
    { role: 'system', content: 'You are a terse assistant.' },
    imageTurn('What is in the image?', freshImage('three turns')),
  ];
  const ask = () => client.chat.completions.create({ model: 'llm.gguf', messages, max_tokens: 6 });
  const r1 = await ask();
  messages.push({ role: 'assistant', content: r1.choices[0].message.content });
  messages.push({ role: 'user', content: 'What colour is it?' });
  const r2 = await ask();
  messages.push(r2.choices[0].message);  // the SDK's own message object goes back as history
  messages.push({ role: 'user', content: [{ type: 'text', text: 'Are you sure?' }] });
  const r3 = await ask();
  for (const r of [r1, r2, r3]) assert.equal(typeof r.choices[0].message.content, 'string');
  assert.equal(r1.vtprune.images[0].cached, false);
  assert.equal(r2.vtprune.images[0].cached, true, 'turn 2 encoded the image again');
  assert.equal(r3.vtprune.images[0].cached, true);
  assert.ok(r2.usage.prompt_tokens > r1.usage.prompt_tokens);
  assert.ok(r2.usage.prompt_tokens_details.cached_tokens >= r1.usage.prompt_tokens - 1,
    `turn 2 prefilled what the KV cache held: ${JSON.stringify(r2.usage)} after ${JSON.stringify(r1.usage)}`);
  assert.ok(r3.usage.prompt_tokens_details.cached_tokens >= r2.usage.prompt_tokens - 1, JSON.stringify(r3.usage));
});

// Two whole characters from the middle of `text`, none of them U+FFFD (which stands for bytes that are not UTF-8).
function middleCharacters(text) {
  const chars = Array.from(text);
  for (let i = Math.floor(chars.length / 2); i + 1 < chars.length; ++i) {
    if (chars[i] !== '\uFFFD' && chars[i + 1] !== '\uFFFD') return chars[i] + chars[i + 1];
  }
  return null;
}

test('stop strings end the answer before them', async (t) => {
  const request = { model: 'llm.gguf', messages: [{ role: 'user', content: 'Tell me a long story.' }], max_tokens: 24 };
  const free = (await client.chat.completions.create(request)).choices[0].message.content;
  const stop = middleCharacters(free);
  if (stop === null) return t.skip(`no two plain characters in ${JSON.stringify(free)}`);
  const cut = await client.chat.completions.create({ ...request, stop: [stop, '\u0001never'] });
  assert.equal(cut.choices[0].message.content, free.slice(0, free.indexOf(stop)));
  assert.equal(cut.choices[0].finish_reason, 'stop');
  let streamed = '';
  for await (const chunk of await client.chat.completions.create({ ...request, stop, stream: true })) {
    for (const choice of chunk.choices) streamed += choice.delta.content ?? '';
  }
  assert.equal(streamed, free.slice(0, free.indexOf(stop)));
});

test('frequency and presence penalties change a repetitive answer; seeds reproduce sampling', async (t) => {
  const request = { model: 'llm.gguf', messages: [{ role: 'user', content: 'Repeat after me.' }], max_tokens: 24, logprobs: true };
  const plain = await client.chat.completions.create(request);
  const tokens = plain.choices[0].logprobs.content.map((x) => x.token);
  assert.equal(tokens.length, plain.usage.completion_tokens);
  const penalised = await client.chat.completions.create({ ...request, frequency_penalty: 2, presence_penalty: 2 });
  const after = penalised.choices[0].logprobs.content.map((x) => x.token);
  const repeats = (list) => list.length - new Set(list).size;
  if (repeats(tokens) === 0) return t.skip('the greedy answer repeats no token: nothing for a penalty to change');
  assert.ok(repeats(after) < repeats(tokens), `penalised ${JSON.stringify(after)} vs ${JSON.stringify(tokens)}`);
  const sampled = { ...request, temperature: 1.0, top_p: 0.9, seed: 1234 };
  const a = await client.chat.completions.create(sampled);
  const b = await client.chat.completions.create(sampled);
  assert.equal(a.choices[0].message.content, b.choices[0].message.content);
});

test('bad requests are BadRequestError naming the field', async () => {
  const cases = [
    [{ messages: [{ role: 'user', content: 'hi' }], n: 2 }, 'n'],
    [{ messages: [{ role: 'user', content: 'hi' }], stop: ['a', 'b', 'c', 'd', 'e'] }, 'stop'],
    [{ messages: [{ role: 'user', content: 'hi' }, { role: 'assistant', content: [{ type: 'image_url', image_url: { url: IMAGE } }] },
      { role: 'user', content: 'and?' }] }, 'messages[1].content[0]'],
    [{ messages: [{ role: 'system', content: [{ type: 'image_url', image_url: { url: IMAGE } }] }, { role: 'user', content: 'hi' }] },
      'messages[0].content[0]'],
    [{ messages: [imageTurn('a'), { role: 'assistant', content: 'b' }, imageTurn('c'), { role: 'assistant', content: 'd' },
      imageTurn('e')], }, 'messages[4].content[0].image_url'],  // --max-images 2 below
    [{ messages: [{ role: 'user', content: 'hi' }], vtprune: { method: 'magic' } }, 'vtprune.method'],
    [{ messages: [{ role: 'user', content: 'hi' }], tools: [{ type: 'function', function: { name: 'f' } }] }, 'tools'],
    [{ messages: [{ role: 'user', content: 'hi' }, { role: 'user', content: 'again' }] }, 'messages[1].role'],
  ];
  for (const [body, param] of cases) {
    await assert.rejects(client.chat.completions.create({ model: 'llm.gguf', max_tokens: 2, ...body }), (err) => {
      assert.ok(err instanceof OpenAI.BadRequestError, `${param}: ${err}`);
      assert.equal(err.status, 400);
      assert.equal(err.param, param, err.message);
      assert.equal(typeof err.code, 'string');
      return true;
    });
  }
});

test('a conversation longer than the context is a 400 naming the message', async () => {
  const essay = 'word '.repeat(3000);
  await assert.rejects(client.chat.completions.create({
    model: 'llm.gguf', max_tokens: 2,
    messages: [imageTurn('What is it?'), { role: 'assistant', content: 'A thing.' }, { role: 'user', content: essay }],
  }), (err) => {
    assert.ok(err instanceof OpenAI.BadRequestError);
    assert.equal(err.code, 'context_length_exceeded');
    assert.equal(err.param, 'messages[2].content');
    return true;
  });
});

test('a full queue is an APIError with status 503', async () => {
  const busy = await startServer(['--parallel', '1', '--queue', '0', '-c', '4096', '--max-tokens', '4000']);
  try {
    const c = new OpenAI({ baseURL: `${busy.url}/v1`, apiKey: 'x', maxRetries: 0 });
    const long = await c.chat.completions.create({
      model: 'llm.gguf', messages: [{ role: 'user', content: 'Tell a very long story.' }], max_tokens: 3900, stream: true,
    });
    const it = long[Symbol.asyncIterator]();
    await it.next();  // the slot is busy once the first token arrives
    await assert.rejects(c.chat.completions.create({ model: 'llm.gguf', messages: [{ role: 'user', content: 'Hi.' }], max_tokens: 2 }),
      (err) => {
        assert.ok(err instanceof OpenAI.APIError, String(err));
        assert.equal(err.status, 503);
        assert.equal(err.code, 'server_busy');
        const retryAfter = typeof err.headers?.get === 'function' ? err.headers.get('retry-after') : err.headers?.['retry-after'];
        assert.equal(retryAfter, '1');
        return true;
      });
    long.controller.abort();  // hang up: the server cancels the generation at its next token
  } finally {
    const { code } = await stopServer(busy);
    assert.equal(code, 0, busy.log());
  }
});
