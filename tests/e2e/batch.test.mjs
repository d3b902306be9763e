// Batch calls over real HTTP: a batch enroll mixing good and bad images
// (JSON and multipart), its answers in order and its status codes,
// Idempotency-Key on each of the three batch calls, identify in several
// images at once, and batch delete by ids and by external ids (an empty
// selector is a 400).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import {
  admin, client, faceFixtures, newTenant, part, startServer, tempDir,
} from './lib/faceenv.mjs';

let dataDir;
let srv;
let call;
let fx;
let good;        // face crops the engine enrolls
let white;       // a blank image: no face
let corrupt;     // a JPEG cut at half its length
let group;       // a group photo: several faces
const b64 = (file) => fs.readFileSync(file).toString('base64');

before(async () => {
  dataDir = tempDir();
  call = client(undefined, undefined);
  const t = newTenant(dataDir, 'batch');
  fx = faceFixtures();
  const dir = tempDir('frapi-batch-');
  white = path.join(dir, 'white.jpg');
  execFileSync('convert', ['-size', '400x400', 'xc:white', white]);
  const bytes = fs.readFileSync(fx.faces[0].file);
  corrupt = path.join(dir, 'cut.jpg');
  fs.writeFileSync(corrupt, bytes.subarray(0, bytes.length >> 1));
  group = fx.faces.find((f) => f.sample === 5).photo;
  srv = await startServer(dataDir);
  call = client(srv.base, t.key);

  // Crops that enroll one at a time; the batch must agree with them.
  good = [];
  for (const f of fx.faces) {
    if (good.length === 4) break;
    const r = await call('POST', '/api/v1/faces/batch', {
      json: { items: [{ image: b64(f.file), name: 'probe' }] },
    });
    const res = r.body.data.results[0];
    if (res.success) {
      good.push(f);
      await call('POST', '/api/v1/faces/batch-delete',
        { json: { ids: [res.face.id] } });
    }
  }
  assert.equal(good.length, 4, 'four enrollable crops');
});

after(async () => {
  await srv?.stop();
});

test('a batch mixing good and bad images: one result per item, in order',
  async () => {
    const items = [
      { image: b64(good[0].file), name: 'Ann', external_id: 'ext-a',
        metadata: { team: 'blue' } },
      { image: b64(corrupt), name: 'Cut' },
      { image: b64(white), name: 'Wall' },
      { image: b64(good[1].file) },
      { image: `data:image/jpeg;base64,${b64(good[1].file)}`, name: 'Bob',
        external_id: 'ext-b' },
      { image: 'not base64 at all!', name: 'Junk' },
      { image: b64(group), name: 'Crowd' },
      { image: b64(good[2].file), name: '   ' },
      'not an object',
      { name: 'No image' },
      { image: b64(group), name: 'Largest', face_selection: 'largest',
        external_id: 'ext-c' },
    ];
    const r = await call('POST', '/api/v1/faces/batch', { json: { items } });
    assert.equal(r.status, 200, r.text);
    const d = r.body.data;
    assert.equal(d.results.length, items.length);
    d.results.forEach((x, i) => assert.equal(x.index, i));
    const codes = d.results.map((x) => (x.success ? 'ok' : x.error.code));
    assert.deepEqual(codes, ['ok', 'INVALID_IMAGE', 'NO_FACE_DETECTED',
      'MISSING_PARAMETER', 'ok', 'INVALID_BASE64', 'MULTIPLE_FACES',
      'INVALID_PARAMETER', 'INVALID_ITEM', 'MISSING_IMAGE', 'ok']);
    assert.equal(d.succeeded, 3);
    assert.equal(d.failed, items.length - 3);
    assert.equal(d.results[0].status, 201);
    assert.equal(d.results[1].status, 400);
    assert.equal(d.results[2].status, 422);
    assert.equal(d.results[3].error.param, 'name');
    assert.equal(d.results[7].error.param, 'name');

    // The faces stored are the three, with what each item said.
    const a = d.results[0].face;
    assert.match(a.id, /^face_/);
    assert.equal(a.external_id, 'ext-a');
    assert.deepEqual(a.metadata, { team: 'blue' });
    const list = await call('GET', '/api/v1/faces');
    const ids = list.body.data.faces.map((f) => f.id).sort();
    assert.deepEqual(ids, [a.id, d.results[4].face.id,
      d.results[10].face.id].sort());
    const one = await call('GET', `/api/v1/faces/${d.results[4].face.id}`);
    assert.equal(one.body.data.name, 'Bob');
  });

test('batch items follow the rules of a single enroll', async () => {
  // The same photo enrolled singly and in a batch is refused alike,
  // with the same details.
  const single = await call('POST', '/api/v1/faces',
    { json: { image: b64(group), name: 'Crowd' } });
  assert.equal(single.status, 422, single.text);
  const r = await call('POST', '/api/v1/faces/batch', { json: { items: [
    { image: b64(group), name: 'Crowd' },
    { image: b64(good[3].file), name: 'x', check_liveness: 'maybe' },
  ] } });
  assert.equal(r.status, 200, r.text);
  const [crowd, maybe] = r.body.data.results;
  assert.equal(crowd.status, 422);
  assert.equal(crowd.error.code, single.body.error.code);
  assert.equal(crowd.error.param, 'image');
  for (const k of ['faces', 'reasons', 'box']) {
    assert.deepEqual(crowd.error[k], single.body.error[k], k);
  }
  assert.equal(maybe.status, 400);
  assert.equal(maybe.error.code, 'INVALID_PARAMETER');
  assert.equal(maybe.error.param, 'check_liveness');

  // check_liveness: the verdict of POST /liveness decides the outcome.
  const probe = await call('POST', '/api/v1/liveness',
    { json: { image: b64(good[3].file) } });
  assert.equal(probe.status, 200, probe.text);
  const verdict = probe.body.data.faces[0];
  const lr = await call('POST', '/api/v1/faces/batch', { json: { items: [
    { image: b64(good[3].file), name: 'Live', external_id: 'ext-live',
      check_liveness: true },
    { image: b64(good[3].file), name: 'Unchecked', external_id: 'ext-live' },
    { image: b64(good[3].file), name: 'Again', external_id: 'ext-live' },
  ] } });
  assert.equal(lr.status, 200, lr.text);
  const [checked, plain, again] = lr.body.data.results;
  if (verdict.live) {
    assert.equal(checked.status, 201, JSON.stringify(checked));
    assert.equal(checked.face.liveness.live, true);
    assert.ok(Math.abs(checked.face.liveness.score -
      verdict.liveness_score) < 1e-4);
  } else {
    assert.equal(checked.status, 422, JSON.stringify(checked));
    assert.equal(checked.error.code, 'LIVENESS_CHECK_FAILED');
    assert.ok(checked.error.liveness_score < checked.error.threshold);
  }
  assert.equal(plain.status, 201);
  assert.equal(plain.face.liveness, undefined);
  // The same photo twice under one external_id: near-identical, not a
  // possible duplicate of someone else.
  assert.equal(again.status, 201);
  const twins = [plain, checked].filter((x) => x.success)
    .map((x) => x.face.id);
  const ordered = lr.body.data.results.filter((x) => x.success);
  assert.equal(ordered.length, twins.length + 1);
  const seen = again.face.near_identical_to.map((d) => d.face_id);
  // Items run in parallel: the third item saw those committed before it.
  for (const id of seen) assert.ok(twins.includes(id), id);
  assert.deepEqual(again.face.possible_duplicate_of, []);
  const ids = ordered.map((x) => x.face.id);
  const del = await call('POST', '/api/v1/faces/batch-delete',
    { json: { ids } });
  assert.equal(del.status, 200, del.text);
});

test('a batch keeps original photos when the collection asks', async () => {
  const keep = admin(dataDir, 'collections', 'create', 'Batch keeps',
    '--keep-originals');
  const kcall = client(srv.base, admin(dataDir, 'keys', 'create',
    '--collection', keep.id, '--rpm', '100000').key);
  const r = await kcall('POST', '/api/v1/faces/batch', { json: { items: [
    { image: b64(good[0].file), name: 'Kept' },
  ] } });
  assert.equal(r.body.data.results[0].status, 201, r.text);
  const id = r.body.data.results[0].face.id;
  const db = path.join(dataDir, 'frapi.db');
  const len = execFileSync('sqlite3', [db,
    `SELECT length(bytes) FROM originals WHERE face_id = '${id}'`])
    .toString().trim();
  assert.equal(len, String(fs.statSync(good[0].file).size));
});

test('a multipart batch: an items part naming file parts', async () => {
  const r = await call('POST', '/api/v1/faces/batch', {
    form: {
      items: JSON.stringify([
        { image: 'p1', name: 'Cy', external_id: 'ext-mp' },
        { image: 'p2', name: 'Wall' },
        { image: 'p3', name: 'Missing part' },
      ]),
      p1: part(good[3].file),
      p2: part(white, 'white.png', 'application/octet-stream'),
    },
  });
  assert.equal(r.status, 200, r.text);
  const codes = r.body.data.results.map((x) => (x.success ? 'ok'
    : x.error.code));
  assert.deepEqual(codes, ['ok', 'NO_FACE_DETECTED', 'MISSING_IMAGE']);
  assert.match(r.body.data.results[2].error.message, /'p3'/);
});

test('a malformed batch as a whole is a 400', async () => {
  const cases = [
    [{}, 'INVALID_PARAMETER'],
    [{ items: [] }, 'EMPTY_BATCH'],
    [{ items: 'x' }, 'INVALID_PARAMETER'],
    [{ items: Array.from({ length: 101 }, () => ({ name: 'x' })) },
      'TOO_MANY_ITEMS'],
  ];
  for (const [json, code] of cases) {
    const r = await call('POST', '/api/v1/faces/batch', { json });
    assert.equal(r.status, 400, r.text);
    assert.equal(r.body.error.code, code);
  }
  const bad = await call('POST', '/api/v1/faces/batch', { json: '{"items": [' });
  assert.equal(bad.status, 400);
  const none = await call('POST', '/api/v1/faces/batch', { form: { x: 'y' } });
  assert.equal(none.status, 400);
});

// Sends a request again until the first one with its Idempotency-Key has
// released its claim on the key, which happens just after its answer is
// sent: a retry that fast is told to retry in a moment.
async function retried(method, p, opts) {
  let again;
  for (let i = 0; i < 50; i++) {
    again = await call(method, p, opts);
    if (again.body?.error?.code !== 'IDEMPOTENCY_KEY_IN_USE') break;
    await new Promise((r) => setTimeout(r, 20));
  }
  return again;
}

test('Idempotency-Key on a batch: the retry gets the first answer',
  async () => {
    const body = { items: [{ image: b64(good[0].file), name: 'Idem',
      external_id: 'ext-idem' }, { image: b64(white), name: 'W' }] };
    const headers = { 'Idempotency-Key': 'batch-retry-1' };
    const first = await call('POST', '/api/v1/faces/batch',
      { json: body, headers });
    assert.equal(first.status, 200);
    // The first request's claim on the key is released just after its
    // answer is sent: a retry that fast is told to retry in a moment.
    let again;
    for (let i = 0; i < 50; i++) {
      again = await call('POST', '/api/v1/faces/batch',
        { json: body, headers });
      if (again.body?.error?.code !== 'IDEMPOTENCY_KEY_IN_USE') break;
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(again.status, 200, again.text);
    assert.equal(again.headers.get('idempotent-replayed'), 'true');
    assert.deepEqual(again.body.data, first.body.data);
    const list = await call('GET', '/api/v1/faces?external_id=ext-idem');
    assert.equal(list.body.data.faces.length, 1);
    const other = await call('POST', '/api/v1/faces/batch',
      { json: { items: [{ image: b64(white), name: 'X' }] }, headers });
    assert.equal(other.status, 409);
  });

test('identify in several images at once', async () => {
  const r = await call('POST', '/api/v1/identify/batch', {
    json: { items: [{ image: b64(good[0].file) }, { image: b64(white) },
      { image: b64(corrupt) }, { image: b64(group) }], top_k: 3 },
  });
  assert.equal(r.status, 200, r.text);
  const [a, w, c, g] = r.body.data.results;
  assert.equal(a.success, true);
  assert.equal(a.faces_detected, 1);
  assert.equal(a.faces[0].candidates[0].external_id, 'ext-a');
  assert.ok(a.faces[0].candidates.length <= 3);
  assert.equal(w.success, true);
  assert.equal(w.faces_detected, 0);
  assert.equal(c.success, false);
  assert.equal(c.error.code, 'INVALID_IMAGE');
  assert.ok(g.faces_detected >= 4);
  assert.equal(r.body.data.succeeded, 3);

  const many = await call('POST', '/api/v1/identify/batch', {
    json: { items: Array.from({ length: 21 }, () => ({ image: 'x' })) },
  });
  assert.equal(many.status, 400);
  assert.equal(many.body.error.code, 'TOO_MANY_ITEMS');
});

test('Idempotency-Key on identify in several images: the retry gets the '
  + 'first answer', async () => {
  const json = { items: [{ image: b64(good[0].file) }, { image: b64(white) }],
    top_k: 2 };
  const headers = { 'Idempotency-Key': 'identify-batch-retry-1' };
  const first = await call('POST', '/api/v1/identify/batch',
    { json, headers });
  assert.equal(first.status, 200, first.text);
  assert.equal(first.headers.get('idempotent-replayed'), null);
  assert.equal(first.body.data.results.length, 2);
  const again = await retried('POST', '/api/v1/identify/batch',
    { json, headers });
  assert.equal(again.status, 200, again.text);
  assert.equal(again.headers.get('idempotent-replayed'), 'true');
  assert.deepEqual(again.body.data, first.body.data);

  // The same key with other images is a conflict, not a new identify.
  const other = await retried('POST', '/api/v1/identify/batch',
    { json: { items: [{ image: b64(white) }] }, headers });
  assert.equal(other.status, 409, other.text);
  assert.equal(other.body.error.code, 'IDEMPOTENCY_KEY_REUSED');
});

test('batch delete by ids and external ids; an empty selector is a 400',
  async () => {
    for (const json of [{}, { ids: [] }, { ids: [], external_ids: [] },
      { ids: null }]) {
      const r = await call('POST', '/api/v1/faces/batch-delete', { json });
      assert.equal(r.status, 400, JSON.stringify(json));
      assert.equal(r.body.error.code, 'EMPTY_SELECTOR');
    }
    const typed = await call('POST', '/api/v1/faces/batch-delete',
      { json: { ids: ['face_x', 5] } });
    assert.equal(typed.status, 400);
    assert.equal(typed.body.error.param, 'ids[1]');
    const before = (await call('GET', '/api/v1/faces')).body.data.faces;
    assert.ok(before.length >= 4);

    const a = before.find((f) => f.external_id === 'ext-a');
    const fake = 'face_01M8YNOSUCHFACE000000000';
    const r = await call('POST', '/api/v1/faces/batch-delete', {
      json: { ids: [a.id, fake, a.id], external_ids: ['ext-b', 'nobody'] },
    });
    assert.equal(r.status, 200, r.text);
    const d = r.body.data;
    const b = before.find((f) => f.external_id === 'ext-b');
    assert.deepEqual(d.deleted.sort(), [a.id, b.id].sort());
    assert.equal(d.deleted_count, 2);
    assert.deepEqual(d.not_found, { ids: [fake], external_ids: ['nobody'] });

    // Gone from the list and from identify; the rest stays.
    const after = (await call('GET', '/api/v1/faces')).body.data.faces;
    assert.equal(after.length, before.length - 2);
    const id = await call('POST', '/api/v1/identify',
      { form: { image: part(good[0].file) } });
    for (const f of id.body.data.faces) {
      for (const c of f.candidates) assert.notEqual(c.face_id, a.id);
    }
    const again = await call('POST', '/api/v1/faces/batch-delete',
      { json: { ids: [a.id] } });
    assert.deepEqual(again.body.data.deleted, []);
    assert.deepEqual(again.body.data.not_found.ids, [a.id]);
  });

test('Idempotency-Key on batch delete: the retry gets the first answer, '
  + 'not "not found"', async () => {
  const r = await call('POST', '/api/v1/faces/batch', { json: { items: [
    { image: b64(good[0].file), name: 'Del 1', external_id: 'ext-del-idem' },
    { image: b64(good[1].file), name: 'Del 2' },
  ] } });
  assert.equal(r.body.data.succeeded, 2, r.text);
  const byExt = r.body.data.results[0].face.id;
  const byId = r.body.data.results[1].face.id;

  const json = { ids: [byId, 'face_01M8YNOSUCHFACE000000000'],
    external_ids: ['ext-del-idem'] };
  const headers = { 'Idempotency-Key': 'batch-delete-retry-1' };
  const first = await call('POST', '/api/v1/faces/batch-delete',
    { json, headers });
  assert.equal(first.status, 200, first.text);
  // What went by id first, then what went by external id.
  assert.deepEqual(first.body.data.deleted, [byId, byExt]);
  assert.equal(first.body.data.deleted_count, 2);

  // The faces are gone, yet the retry reports what the first call did.
  const again = await retried('POST', '/api/v1/faces/batch-delete',
    { json, headers });
  assert.equal(again.status, 200, again.text);
  assert.equal(again.headers.get('idempotent-replayed'), 'true');
  assert.deepEqual(again.body.data, first.body.data);
  assert.deepEqual(again.body.data.not_found,
    { ids: ['face_01M8YNOSUCHFACE000000000'], external_ids: [] });
  for (const id of [byExt, byId]) {
    assert.equal((await call('GET', `/api/v1/faces/${id}`)).status, 404);
  }

  // Without the key the same request finds nothing left to delete; with
  // the key and another selector it is a conflict.
  const plain = await call('POST', '/api/v1/faces/batch-delete', { json });
  assert.deepEqual(plain.body.data.deleted, []);
  const other = await retried('POST', '/api/v1/faces/batch-delete',
    { json: { ids: [byId] }, headers });
  assert.equal(other.status, 409, other.text);
  assert.equal(other.body.error.code, 'IDEMPOTENCY_KEY_REUSED');
});
