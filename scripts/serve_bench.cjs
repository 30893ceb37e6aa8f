// Second-turn TTFT of a two-turn image conversation against `vtprune serve`, with its caches on and off
// (scripts/serve_bench.sh starts the two servers and passes their URLs).
//
//   node scripts/serve_bench.cjs --on URL --off URL --image FILE [--repeat 3] [--method hiprune --budget 64]
//
// Each repeat is a new conversation (its own image: the file's bytes plus a varying PNG comment chunk, so no cache
// knows it; its own system prompt): turn 1 asks about the image, turn 2 sends the whole history back with the
// answer and a new question, as chat UIs do. The two servers take turns (on, off, on, off, ...), one request at a
// time. TTFT is the server's own (vtprune.timings in the stream's last chunk: queue + request start to the first
// sampled token); the client's time to the first non-empty content chunk is kept as clientTtft (random weights
// often sample tokens without visible text first, which makes it a poor TTFT).
'use strict';

const fs = require('node:fs');

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : fallback;
}
const urls = { on: arg('on'), off: arg('off') };
const repeat = Number(arg('repeat', '3'));
const method = arg('method', 'hiprune');
const budget = arg('budget', '64');
const maxTokens = Number(arg('max-tokens', '16'));
const png = fs.readFileSync(arg('image'));

function crc32(bytes) {
  let c = ~0;
  for (const b of bytes) {
    c ^= b;
    for (let i = 0; i < 8; ++i) c = (c >>> 1) ^ (0xEDB88320 & -(c & 1));
  }
  return ~c >>> 0;
}

// The PNG with a tEXt chunk after IHDR: other bytes (another digest), the same pixels.
function variant(k) {
  const data = Buffer.concat([Buffer.from('tEXt', 'latin1'), Buffer.from(`Comment\0conversation ${k} ${Date.now()}`, 'latin1')]);
  const chunk = Buffer.alloc(8 + data.length);
  chunk.writeUInt32BE(data.length - 4, 0);
  data.copy(chunk, 4);
  chunk.writeUInt32BE(crc32(data), 4 + data.length);
  return Buffer.concat([png.subarray(0, 33), chunk, png.subarray(33)]);
}

async function ask(url, messages) {
  const body = {
    model: 'bench', messages, max_tokens: maxTokens, stream: true, stream_options: { include_usage: true },
    vtprune: { method, budget: Number.isNaN(Number(budget)) ? budget : Number(budget) },
  };
  const t0 = performance.now();
  const res = await fetch(`${url}/v1/chat/completions`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
  });
  if (res.status !== 200) throw new Error(`${url}: HTTP ${res.status} ${await res.text()}`);
  let ttft = null;
  let serverTtft = null;
  let answer = '';
  let usage = null;
  let images = null;
  let buffer = '';
  const decoder = new TextDecoder();
  for await (const bytes of res.body) {
    buffer += decoder.decode(bytes, { stream: true });
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      if (!event.startsWith('data: ') || event === 'data: [DONE]') continue;
      const chunk = JSON.parse(event.slice(6));
      if (chunk.usage) usage = chunk.usage;
      if (chunk.vtprune) {
        images = chunk.vtprune.images;
        if (chunk.vtprune.timings) serverTtft = chunk.vtprune.timings.ttft_ms + (chunk.vtprune.timings.queue_ms ?? 0);
      }
      for (const choice of chunk.choices ?? []) {
        if (choice.delta?.content) {
          if (ttft === null) ttft = performance.now() - t0;
          answer += choice.delta.content;
        }
      }
    }
  }
  // TTFT: the server's own (queue + request start to the first sampled token; random weights often sample
  // tokens with no visible text first, so the first content chunk can come many tokens later: `client_ttft`).
  return { ttft: serverTtft ?? ttft, clientTtft: ttft, answer, usage, images };
}

const median = (v) => {
  const s = [...v].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

(async () => {
  const runs = { on: { t1: [], t2: [], cached: [], prompt: [] }, off: { t1: [], t2: [], cached: [], prompt: [] } };
  for (let k = 0; k < repeat; ++k) {
    for (const mode of ['on', 'off']) {
      const image = `data:image/png;base64,${variant(`${mode}-${k}`).toString('base64')}`;
      const messages = [
        { role: 'system', content: `Conversation ${k} (${mode}): you describe images briefly.` },
        { role: 'user', content: [{ type: 'image_url', image_url: { url: image } }, { type: 'text', text: 'What is in the image?' }] },
      ];
      const first = await ask(urls[mode], messages);
      messages.push({ role: 'assistant', content: first.answer });
      messages.push({ role: 'user', content: 'What colours does it have?' });
      const second = await ask(urls[mode], messages);
      const r = runs[mode];
      r.t1.push(first.ttft);
      r.t2.push(second.ttft);
      r.cached.push(second.usage?.prompt_tokens_details?.cached_tokens ?? 0);
      r.prompt.push(second.usage?.prompt_tokens ?? 0);
      console.error(`repeat ${k} caching ${mode}: turn 1 ${first.ttft.toFixed(0)} ms, turn 2 ${second.ttft.toFixed(0)} ms ` +
        `(${r.cached.at(-1)} of ${r.prompt.at(-1)} prompt tokens cached, image cached: ${second.images?.[0]?.cached})`);
    }
  }
  const result = {};
  for (const mode of ['on', 'off']) {
    const r = runs[mode];
    result[mode] = {
      turn1_ttft_ms: r.t1, turn2_ttft_ms: r.t2, turn1_median_ms: median(r.t1), turn2_median_ms: median(r.t2),
      ratio: median(r.t2) / median(r.t1), turn2_cached_tokens: r.cached, turn2_prompt_tokens: r.prompt,
    };
  }
  console.log(JSON.stringify({ method, budget, repeat, max_tokens: maxTokens, ...result }, null, 1));
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
