// Export and import over real HTTP: 10,000 synthetic faces imported, then
// exported as NDJSON and CSV while the server's peak memory is watched;
// import refusals reported per line; and the round trip: export a
// collection of real faces, import it into a new collection, identify the
// same photos, get the same answers.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, test } from 'node:test';
import {
  client, faceFixtures, newTenant, part, startServer, tempDir,
} from './lib/faceenv.mjs';

const DIM = 512;
const MODEL = 'faceplugin-0.0.1/fr_feature';
let dataDir;
let srv;
let big;   // the tenant with 10,000 synthetic faces

// A random unit vector as base64 of float32 little-endian.
function randomEmbedding(seed) {
  let s = seed >>> 0;
  const rnd = () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
  const v = new Float64Array(DIM);
  let n = 0;
  for (let i = 0; i < DIM; i++) {
    v[i] = Math.sqrt(-2 * Math.log(rnd() + 1e-12)) * Math.cos(2 * Math.PI * rnd());
    n += v[i] * v[i];
  }
  const f = new Float32Array(DIM);
  for (let i = 0; i < DIM; i++) f[i] = v[i] / Math.sqrt(n);
  return Buffer.from(f.buffer).toString('base64');
}

// Peak and current resident memory of a process, in kB.
function memory(pid) {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k) => Number(status.match(new RegExp(`${k}:\\s+(\\d+)`))[1]);
  return { peak: kb('VmHWM'), now: kb('VmRSS') };
}

// Reads a streamed body, calling onChunk per piece; returns the text.
async function readStream(res, onChunk) {
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  let text = '';
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    text += dec.decode(value, { stream: true });
    onChunk?.(text.length);
  }
  return text + dec.decode();
}

before(async () => {
  dataDir = tempDir();
  big = newTenant(dataDir, 'big', ['--rpm', '100000']);
  srv = await startServer(dataDir);
});

after(async () => {
  await srv?.stop();
});

test('import 10,000 synthetic faces, each line reported', async () => {
  const lines = [];
  for (let i = 0; i < 10000; i++) {
    lines.push(JSON.stringify({
      name: `Synthetic ${i}`, external_id: `syn-${i}`,
      metadata: { i, tag: i % 2 ? 'odd' : 'even' },
      model_version: MODEL, embedding: randomEmbedding(i + 1),
    }));
  }
  const call = client(srv.base, big.key);
  const r = await call('POST', '/api/v1/faces/import', {
    raw: `${lines.join('\n')}\n`, contentType: 'application/x-ndjson',
  });
  assert.equal(r.status, 200, r.text.slice(0, 500));
  assert.equal(r.body.data.imported, 10000);
  assert.equal(r.body.data.failed, 0);
  assert.equal(r.body.data.results.length, 10000);
  assert.equal(r.body.data.results[9999].line, 10000);
  assert.match(r.body.data.results[0].face_id, /^face_/);
});

test('export of 10,000 faces streams with flat server memory', async (t) => {
  // A fresh process, so that its peak memory is the index's, not the
  // import's.
  await srv.stop();
  srv = await startServer(dataDir);
  const call = client(srv.base, big.key);
  assert.equal((await call('GET', '/api/v1/faces?limit=1')).status, 200);
  const pid = srv.proc.pid;
  const before = memory(pid);

  const res = await fetch(`${srv.base}/api/v1/faces/export?include_embeddings=true`,
    { headers: { 'X-API-Key': big.key } });
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /^application\/x-ndjson/);
  assert.match(res.headers.get('content-disposition'),
    new RegExp(`^attachment; filename="faces-${big.collection.id}-\\d{8}T\\d{6}Z\\.ndjson"$`));
  let during = 0;
  const text = await readStream(res, () => {
    during = Math.max(during, memory(pid).now);
  });
  const afterMem = memory(pid);
  const lines = text.trimEnd().split('\n');
  assert.equal(lines.length, 10000);
  assert.ok(text.length > 25e6, `only ${text.length} bytes`);

  // Every face once, with its metadata and a 2048-byte embedding.
  const ids = new Set();
  const first = JSON.parse(lines[0]);
  assert.equal(first.external_id, 'syn-9999');   // newest first
  assert.deepEqual(first.metadata, { i: 9999, tag: 'odd' });
  for (const l of lines) {
    const o = JSON.parse(l);
    ids.add(o.id);
    assert.equal(Buffer.from(o.embedding, 'base64').length, DIM * 4);
  }
  assert.equal(ids.size, 10000);

  // The body was ~30 MB; the server's resident memory, sampled at every
  // chunk received, grew by far less (its start-up peak, when the models
  // load, is higher than either and says nothing).
  const grew = during - before.now;
  t.diagnostic(`export: ${text.length} bytes; server RSS ${before.now} kB `
    + `before, at most ${during} kB during (+${grew} kB), ${afterMem.now} kB after`);
  assert.ok(grew < 16 * 1024, `RSS grew by ${grew} kB during the export`);
});

test('CSV export: a header and one record per face', async () => {
  const res = await fetch(`${srv.base}/api/v1/faces/export?format=csv`,
    { headers: { 'X-API-Key': big.key } });
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /^text\/csv/);
  assert.match(res.headers.get('content-disposition'), /\.csv"$/);
  const text = await res.text();
  const rows = text.trimEnd().split('\r\n');
  assert.equal(rows[0], 'id,external_id,name,metadata,model_version,box_x,'
    + 'box_y,box_width,box_height,quality,created_at,updated_at');
  assert.equal(rows.length, 10001);
  assert.match(rows[1], /^face_\w+,syn-9999,Synthetic 9999,"\{""i"":9999,""tag"":""odd""\}",/);
  // The box in whole pixels and the quality to three decimals, as the
  // JSON answers give them.
  for (const row of rows.slice(1, 50)) {
    assert.match(row, /,-?\d+,-?\d+,\d+,\d+,\d+\.\d{3},\d{4}-\d\d-\d\dT/, row);
  }

  const call = client(srv.base, big.key);
  for (const q of ['format=xml', 'include_embeddings=maybe',
    'embedding_encoding=hex', 'format=csv&include_embeddings=true&embedding_encoding=array']) {
    const r = await call('GET', `/api/v1/faces/export?${q}`);
    assert.equal(r.status, 400, q);
    assert.equal(r.body.error.code, 'INVALID_PARAMETER');
  }
});

test('CSV export: names that start like formulas cannot run', async () => {
  const t = newTenant(dataDir, 'formulas');
  const call = client(srv.base, t.key);
  const names = ['=HYPERLINK("http://x","y")', '+1', '-2', '@SUM(A1)',
    'Plain', 'Dash-in-the-middle'];
  const lines = names.map((name, i) => JSON.stringify({ name,
    external_id: i === 0 ? '=cmd|x' : `p${i}`, model_version: MODEL,
    embedding: randomEmbedding(100 + i) }));
  const imp = await call('POST', '/api/v1/faces/import',
    { raw: lines.join('\n') });
  assert.equal(imp.body.data.imported, names.length, imp.text);
  const res = await fetch(`${srv.base}/api/v1/faces/export?format=csv`,
    { headers: { 'X-API-Key': t.key } });
  const rows = (await res.text()).trimEnd().split('\r\n').slice(1);
  // The raw external_id and name fields of each record, by external_id.
  const raw = new Map(rows.map((r) => r.match(
    /^face_\w+,([^,"]*|"[^"]*(?:""[^"]*)*"),([^,"]*|"[^"]*(?:""[^"]*)*"),/)
    .slice(1, 3)));
  assert.equal(raw.size, names.length);
  assert.equal(raw.get('"\'=cmd|x"'), '"\'=HYPERLINK(""http://x"",""y"")"');
  const want = ['"\'+1"', '"\'-2"', '"\'@SUM(A1)"', 'Plain',
    'Dash-in-the-middle'];
  want.forEach((w, i) => assert.equal(raw.get(`p${i + 1}`), w, names[i + 1]));
  // NDJSON keeps the text exactly as stored.
  const nd = await fetch(`${srv.base}/api/v1/faces/export`,
    { headers: { 'X-API-Key': t.key } });
  const stored = (await nd.text()).trim().split('\n')
    .map((l) => JSON.parse(l).name);
  assert.deepEqual(stored.sort(), [...names].sort());
});

test('import reports bad lines one by one and keeps the good ones',
  async () => {
    const t = newTenant(dataDir, 'lines');
    const call = client(srv.base, t.key);
    const emb = randomEmbedding(7);
    const raw = Buffer.from(randomEmbedding(8), 'base64');
    const arr = Array.from(new Float32Array(raw.buffer, raw.byteOffset, DIM));
    const lines = [
      JSON.stringify({ name: 'Good', model_version: MODEL, embedding: emb }),
      JSON.stringify({ name: 'Other model', model_version: 'arcface-r100',
        embedding: emb }),
      JSON.stringify({ name: 'Short', model_version: MODEL,
        embedding: Buffer.alloc(100).toString('base64') }),
      JSON.stringify({ name: 'Zero', model_version: MODEL,
        embedding: Buffer.alloc(2048).toString('base64') }),
      '{"name": "broken", ',
      JSON.stringify({ model_version: MODEL, embedding: emb }),
      '',
      JSON.stringify({ name: 'No embedding', model_version: MODEL }),
      JSON.stringify({ name: 'Array', model_version: MODEL, embedding: arr,
        metadata: { a: 1 } }),
      '[1, 2]',
      JSON.stringify({ name: 'Meta', model_version: MODEL, embedding: emb,
        metadata: 'x' }),
    ];
    const r = await call('POST', '/api/v1/faces/import',
      { raw: lines.join('\r\n') });
    assert.equal(r.status, 200, r.text);
    const d = r.body.data;
    assert.equal(d.imported, 2, r.text);
    assert.equal(d.failed, 8);
    const got = d.results.map((x) => [x.line,
      x.success ? 'ok' : x.error.code]);
    assert.deepEqual(got, [[1, 'ok'], [2, 'MODEL_VERSION_MISMATCH'],
      [3, 'INVALID_EMBEDDING'], [4, 'INVALID_EMBEDDING'], [5, 'INVALID_JSON'],
      [6, 'MISSING_PARAMETER'], [8, 'MISSING_PARAMETER'], [9, 'ok'],
      [10, 'INVALID_LINE'], [11, 'INVALID_PARAMETER']]);
    assert.match(d.results[1].error.message, /arcface-r100/);

    const empty = await call('POST', '/api/v1/faces/import', { raw: '\n \n' });
    assert.equal(empty.status, 400);
    assert.equal(empty.body.error.code, 'EMPTY_BODY');
  });

test('round trip: export, import into a new collection, identify the same',
  async () => {
    const fx = faceFixtures();
    const a = newTenant(dataDir, 'source');
    const b = newTenant(dataDir, 'copy');
    const callA = client(srv.base, a.key);
    const callB = client(srv.base, b.key);

    // Real faces into A, in one batch.
    const items = fx.faces.slice(0, 24).map((f) => ({
      image: fs.readFileSync(f.file).toString('base64'),
      name: `Person ${f.sample}.${f.index}`, external_id: `p${f.sample}-${f.index}`,
      metadata: { sample: f.sample },
    }));
    const enrolled = await callA('POST', '/api/v1/faces/batch', { json: { items } });
    assert.equal(enrolled.status, 200);
    assert.ok(enrolled.body.data.succeeded >= 8, enrolled.text.slice(0, 300));

    // Export A, import into B.
    const exp = await callA('GET', '/api/v1/faces/export?include_embeddings=true');
    assert.equal(exp.status, 200);
    const imp = await callB('POST', '/api/v1/faces/import', { raw: exp.text });
    assert.equal(imp.status, 200);
    assert.equal(imp.body.data.imported, enrolled.body.data.succeeded);
    assert.equal(imp.body.data.failed, 0);

    // The same people come back with the same similarities.
    const view = (r) => r.body.data.faces.map((f) => f.candidates.map(
      (c) => [c.external_id, c.name, c.similarity]));
    for (const n of [1, 2, 3, 4, 5, 6]) {
      const photo = fx.faces.find((f) => f.sample === n).photo;
      const ra = await callA('POST', '/api/v1/identify', { form: { image: part(photo) } });
      const rb = await callB('POST', '/api/v1/identify', { form: { image: part(photo) } });
      assert.equal(ra.status, 200);
      assert.deepEqual(view(rb), view(ra), `sample ${n}`);
    }
    const someMatch = (await callB('POST', '/api/v1/identify',
      { form: { image: part(fx.faces[0].photo) } })).body.data.faces
      .some((f) => f.candidates.length > 0);
    assert.ok(someMatch);

    // And the exports agree on everything but ids and times.
    const strip = (t) => t.trimEnd().split('\n').map((l) => {
      const o = JSON.parse(l);
      return [o.external_id, o.name, o.metadata, o.embedding, o.box];
    }).sort((x, y) => x[0].localeCompare(y[0]));
    const expB = await callB('GET', '/api/v1/faces/export?include_embeddings=true');
    assert.deepEqual(strip(expB.text), strip(exp.text));
  });
