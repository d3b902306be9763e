// The face API end to end over real HTTP: faces cut out of the sample
// group photos are enrolled, identified in their group photos, verified,
// listed page by page, changed, deleted, and found again after a
// restart of the server.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import {
  admin, centre, client, faceFixtures, newTenant, part, startServer, tempDir,
} from './lib/faceenv.mjs';

let dataDir;
let srv;
let call;
let tenant;
let fx;
const enrolled = [];
const deleted = new Set();

before(async () => {
  dataDir = tempDir();
  tenant = newTenant(dataDir, 'Staff');
  fx = faceFixtures();
  srv = await startServer(dataDir);
  call = client(srv.base, tenant.key);
});

after(async () => {
  await srv?.stop();
});

// The face of an identify answer nearest to box.
function nearest(faces, box) {
  const [cx, cy] = centre(box);
  let best = null;
  let bestD = Infinity;
  for (const f of faces) {
    const [x, y] = centre(f.box);
    const d = (x - cx) ** 2 + (y - cy) ** 2;
    if (d < bestD) { bestD = d; best = f; }
  }
  return best;
}

// Identifies every sample photo and checks each live enrolled face is
// the top candidate of its own face in its photo.
async function identifyAll() {
  for (let n = 1; n <= 6; n++) {
    const mine = enrolled.filter((e) => e.sample === n);
    const r = await call('POST', '/api/v1/identify', {
      form: { image: part(fx.faces.find((f) => f.sample === n).photo) },
    });
    assert.equal(r.status, 200, r.text);
    assert.ok(r.body.data.faces.length >= mine.length);
    for (const e of mine) {
      const face = nearest(r.body.data.faces, e.box);
      const ids = face.candidates.map((c) => c.face_id);
      if (deleted.has(e.id)) {
        assert.ok(!ids.includes(e.id), `deleted ${e.id} came back`);
        continue;
      }
      assert.equal(ids[0], e.id, `sample ${n} face ${e.index}: ${r.text}`);
      assert.equal(face.candidates[0].external_id, e.ext);
      assert.ok(face.candidates[0].similarity >= r.body.data.threshold);
    }
    for (const f of r.body.data.faces) {
      for (const c of f.candidates) assert.ok(!deleted.has(c.face_id));
    }
  }
}

test('enroll every face cut from the group photos', async () => {
  for (const f of fx.faces) {
    const ext = `p${f.sample}-${f.index}`;
    const r = await call('POST', '/api/v1/faces', {
      form: {
        image: part(f.file),
        name: `Person ${f.sample}.${f.index}`,
        external_id: ext,
        metadata: JSON.stringify({ sample: f.sample, index: f.index }),
      },
    });
    if (r.status !== 201) {
      // A crop the engine judges unusable must say why, never fail.
      assert.equal(r.status, 422, r.text);
      assert.ok(['NO_FACE_DETECTED', 'FACE_QUALITY_TOO_LOW',
        'MULTIPLE_FACES'].includes(r.body.error.code), r.text);
      continue;
    }
    const d = r.body.data;
    assert.match(d.id, /^face_[0-9A-HJKMNP-TV-Z]{26}$/);
    assert.equal(d.collection_id, tenant.collection.id);
    assert.equal(d.external_id, ext);
    assert.deepEqual(d.metadata, { sample: f.sample, index: f.index });
    assert.ok(d.faces_detected >= 1); // a neighbour's edge may show
    assert.ok(d.box.width > 100 && d.box.height > 100);
    // Look-alikes already enrolled are reported, never the same person.
    assert.ok(Array.isArray(d.possible_duplicate_of));
    for (const dup of d.possible_duplicate_of) {
      assert.notEqual(dup.external_id, ext);
      assert.ok(dup.similarity >= tenant.collection.match_threshold);
    }
    assert.equal(typeof d.model_version, 'string');
    assert.match(d.created_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    // Where the enrolled face lies in the group photo: the crop may hold
    // the edge of a neighbour's face too, and the box says which it took.
    const box = { x: d.box.x + f.origin.x, y: d.box.y + f.origin.y,
      width: d.box.width, height: d.box.height };
    enrolled.push({ ...f, box, id: d.id, ext });
  }
  // Turned-away heads are refused (profile); most crops are frontal.
  assert.ok(enrolled.length >= Math.ceil(fx.faces.length * 0.5),
    `only ${enrolled.length} of ${fx.faces.length} faces enrolled`);
});

test('identify finds each enrolled face in its group photo', async () => {
  await identifyAll();
});

test('identify reports every face, with a box, up to max_faces', async () => {
  const photo = fx.faces.find((f) => f.sample === 5).photo;
  const all = await call('POST', '/api/v1/identify',
    { form: { image: part(photo) } });
  assert.equal(all.status, 200);
  const n = all.body.data.faces.length;
  assert.ok(n >= 4, all.text);
  const two = await call('POST', '/api/v1/identify',
    { form: { image: part(photo), max_faces: '2' } });
  assert.equal(two.body.data.faces.length, 2);

  // Grouped by person: one entry per external_id, with its face ids.
  const g = await call('POST', '/api/v1/identify',
    { form: { image: part(photo), group_by: 'external_id' } });
  assert.equal(g.status, 200, g.text);
  for (const f of g.body.data.faces) {
    for (const c of f.candidates) {
      assert.ok(Array.isArray(c.face_ids) && c.face_ids.length >= 1);
    }
  }
});

test('verify: the same person matches, different people do not', async () => {
  const [a, b] = enrolled;
  const same = await call('POST', '/api/v1/verify',
    { form: { image_a: part(a.file), image_b: part(a.file2) } });
  assert.equal(same.status, 200, same.text);
  assert.equal(same.body.data.match, true, same.text);
  assert.ok(same.body.data.similarity >= same.body.data.threshold);

  const diff = await call('POST', '/api/v1/verify',
    { form: { image_a: part(a.file), image_b: part(b.file) } });
  assert.equal(diff.status, 200);
  assert.equal(diff.body.data.match, false, diff.text);

  // Against the stored face, by id and by person.
  const byId = await call('POST', '/api/v1/verify',
    { form: { image_a: part(a.file2), face_id: a.id } });
  assert.equal(byId.status, 200, byId.text);
  assert.equal(byId.body.data.match, true);
  assert.equal(byId.body.data.face_b.face_id, a.id);
  const byExt = await call('POST', '/api/v1/verify',
    { json: { image_a: (await import('node:fs')).readFileSync(b.file2)
      .toString('base64'), external_id: b.ext } });
  assert.equal(byExt.status, 200, byExt.text);
  assert.equal(byExt.body.data.match, true);
  assert.equal(byExt.body.data.face_b.face_id, b.id);
});

test('verify: a threshold in the request decides the match, and is echoed',
  async () => {
    // Two crops of one face are near 1; a pair of look-alikes leaves room
    // on both sides of its similarity.  At threshold 0 identify lists the
    // enrolled faces by similarity: take one of them between 0.1 and 0.9.
    const [a, b] = enrolled;
    const all = await call('POST', '/api/v1/identify', { form: {
      image: part(a.file), threshold: '0', top_k: '50' } });
    assert.equal(all.status, 200, all.text);
    const mid = all.body.data.faces[0].candidates.find((c) =>
      c.similarity > 0.1 && c.similarity < 0.9);
    assert.ok(mid, `no pair with room around its similarity: ${all.text}`);
    const x = enrolled.find((e) => e.id === mid.face_id);
    const pair = { image_a: part(a.file), image_b: part(x.file) };
    const dflt = await call('POST', '/api/v1/verify', { form: pair });
    assert.equal(dflt.status, 200, dflt.text);
    assert.equal(dflt.body.data.threshold, tenant.collection.match_threshold);
    const sim = dflt.body.data.similarity;
    assert.ok(sim > 0.1 && sim < 0.9, `no room around ${sim}`);

    // The same pair matches below its similarity and not above it.
    const low = (Math.floor(sim * 100) / 100 - 0.05).toFixed(2);
    const high = (Math.ceil(sim * 100) / 100 + 0.05).toFixed(2);
    for (const [thr, match] of [[low, true], [high, false]]) {
      const r = await call('POST', '/api/v1/verify',
        { form: { ...pair, threshold: thr } });
      assert.equal(r.status, 200, r.text);
      assert.equal(r.body.data.match, match, `threshold ${thr}: ${r.text}`);
      assert.equal(r.body.data.threshold, Number(thr));
      assert.equal(r.body.data.similarity, sim);
    }

    // As a JSON number, against the stored face; and anyone matches at 0.
    const b64 = fs.readFileSync(a.file).toString('base64');
    for (const [thr, match] of [[Number(low), true], [Number(high), false]]) {
      const r = await call('POST', '/api/v1/verify',
        { json: { image_a: b64, face_id: x.id, threshold: thr } });
      assert.equal(r.status, 200, r.text);
      assert.equal(r.body.data.match, match, `threshold ${thr}: ${r.text}`);
      assert.equal(r.body.data.threshold, thr);
    }
    const any = await call('POST', '/api/v1/verify',
      { json: { image_a: b64, face_id: b.id, threshold: 0 } });
    assert.equal(any.body.data.match, true, any.text);
    assert.equal(any.body.data.threshold, 0);

    // Outside 0..1 is refused, naming the field.
    for (const threshold of ['1.5', '-0.1']) {
      const r = await call('POST', '/api/v1/verify',
        { form: { ...pair, threshold } });
      assert.equal(r.status, 400, r.text);
      assert.equal(r.body.error.code, 'INVALID_PARAMETER');
      assert.equal(r.body.error.param, 'threshold');
    }
  });

test('identify: top_k limits the candidates of each face', async () => {
  // At threshold 0 every stored face is a candidate, so only top_k limits.
  const photo = fx.faces.find((f) => f.sample === 1).photo;
  const ask = (form) => call('POST', '/api/v1/identify',
    { form: { image: part(photo), threshold: '0', ...form } });
  const dflt = await ask({});
  assert.equal(dflt.status, 200, dflt.text);
  assert.equal(dflt.body.data.threshold, 0);
  assert.ok(enrolled.length >= 7, `${enrolled.length} faces enrolled`);
  for (const k of [1, 3, 7]) {
    const r = await ask({ top_k: String(k) });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.data.faces.length, dflt.body.data.faces.length);
    r.body.data.faces.forEach((f, i) => {
      assert.equal(f.candidates.length, k, r.text);
      // The k best, most similar first: the head of a longer list.
      const sims = f.candidates.map((c) => c.similarity);
      assert.deepEqual(sims, [...sims].sort((x, y) => y - x));
      if (k <= 5) {
        assert.deepEqual(f.candidates,
          dflt.body.data.faces[i].candidates.slice(0, k));
      }
    });
  }
  for (const f of dflt.body.data.faces) assert.equal(f.candidates.length, 5);
  for (const bad of ['0', '51', 'x']) {
    const r = await ask({ top_k: bad });
    assert.equal(r.status, 400, r.text);
    assert.equal(r.body.error.param, 'top_k');
  }
});

test('identify and liveness take the image as JSON base64 too', async () => {
  const photo = fx.faces.find((f) => f.sample === 4).photo;
  const b64 = fs.readFileSync(photo).toString('base64');
  for (const route of ['/api/v1/identify', '/api/v1/liveness']) {
    const form = await call('POST', route, { form: { image: part(photo) } });
    assert.equal(form.status, 200, form.text);
    assert.ok(form.body.data.faces.length >= 2, form.text);
    for (const image of [b64, `data:image/jpeg;base64,${b64}`]) {
      const j = await call('POST', route, { json: { image, max_faces: 2 } });
      assert.equal(j.status, 200, j.text);
      // The same bytes give the same answer, whichever way they came.
      assert.deepEqual(j.body.data.faces,
        form.body.data.faces.slice(0, 2), route);
      assert.equal(j.body.data.faces_detected,
        form.body.data.faces_detected);
    }
    const bad = await call('POST', route, { json: { image: '@@@@' } });
    assert.equal(bad.status, 400, bad.text);
    assert.equal(bad.body.error.code, 'INVALID_BASE64');
    assert.equal(bad.body.error.param, 'image');
  }
});

test('list: newest first, cursor pages cover every face once', async () => {
  const seen = [];
  let cursor = null;
  let pages = 0;
  do {
    const q = cursor ? `&cursor=${encodeURIComponent(cursor)}` : '';
    const r = await call('GET', `/api/v1/faces?limit=5${q}`);
    assert.equal(r.status, 200, r.text);
    assert.ok(r.body.data.faces.length <= 5);
    seen.push(...r.body.data.faces);
    cursor = r.body.data.next_cursor;
    assert.equal(r.body.data.has_more, cursor !== null);
    pages++;
  } while (cursor && pages < 100);
  assert.equal(seen.length, enrolled.length);
  assert.equal(new Set(seen.map((f) => f.id)).size, enrolled.length);
  const expected = enrolled.map((e) => e.id).reverse();
  assert.deepEqual(seen.map((f) => f.id), expected);

  // Default limit, and the external_id filter.
  const all = await call('GET', '/api/v1/faces');
  assert.equal(all.body.data.faces.length, Math.min(50, enrolled.length));
  const one = await call('GET',
    `/api/v1/faces?external_id=${encodeURIComponent(enrolled[2].ext)}`);
  assert.deepEqual(one.body.data.faces.map((f) => f.id), [enrolled[2].id]);
});

test('get and patch a face', async () => {
  const e = enrolled[3];
  const got = await call('GET', `/api/v1/faces/${e.id}`);
  assert.equal(got.status, 200);
  assert.equal(got.body.data.external_id, e.ext);

  const p = await call('PATCH', `/api/v1/faces/${e.id}`, {
    json: { name: 'Renamed', metadata: { role: 'lead' } },
  });
  assert.equal(p.status, 200, p.text);
  assert.equal(p.body.data.name, 'Renamed');
  assert.deepEqual(p.body.data.metadata, { role: 'lead' });
  assert.equal(p.body.data.external_id, e.ext);
  assert.ok(p.body.data.updated_at >= p.body.data.created_at);

  const again = await call('GET', `/api/v1/faces/${e.id}`);
  assert.equal(again.body.data.name, 'Renamed');

  // Re-labelling moves the face to another person.
  const relabel = await call('PATCH', `/api/v1/faces/${e.id}`,
    { json: { external_id: `${e.ext}-new` } });
  assert.equal(relabel.body.data.external_id, `${e.ext}-new`);
  e.ext = `${e.ext}-new`;
});

test('delete: gone from get, list and identify', async () => {
  const victims = [enrolled[0], enrolled[enrolled.length - 1]];
  for (const v of victims) {
    const d = await call('DELETE', `/api/v1/faces/${v.id}`);
    assert.equal(d.status, 200, d.text);
    assert.deepEqual(d.body.data, { id: v.id, deleted: true });
    deleted.add(v.id);
    const g = await call('GET', `/api/v1/faces/${v.id}`);
    assert.equal(g.status, 404);
    assert.equal(g.body.error.code, 'FACE_NOT_FOUND');
  }
  const list = await call('GET', '/api/v1/faces?limit=500');
  assert.equal(list.body.data.faces.length, enrolled.length - deleted.size);
  await identifyAll();
});

test('a restarted server finds every face again', async () => {
  const stopped = await srv.stop();
  assert.equal(stopped.code, 0, srv.log());
  srv = await startServer(dataDir);
  call = client(srv.base, tenant.key);

  const list = await call('GET', '/api/v1/faces?limit=500');
  assert.equal(list.body.data.faces.length, enrolled.length - deleted.size);
  for (const e of enrolled) {
    const g = await call('GET', `/api/v1/faces/${e.id}`);
    assert.equal(g.status, deleted.has(e.id) ? 404 : 200);
  }
  await identifyAll();
});

test('original photos are kept only when the collection asks', async () => {
  const keep = admin(dataDir, 'collections', 'create', 'Keeps photos',
    '--keep-originals');
  assert.equal(keep.keep_originals, true);
  const key = admin(dataDir, 'keys', 'create', '--collection', keep.id,
    '--rpm', '100000').key;
  const kcall = client(srv.base, key);
  const e = enrolled[1];
  const kept = await kcall('POST', '/api/v1/faces',
    { form: { image: part(e.file), name: 'Kept' } });
  assert.equal(kept.status, 201, kept.text);

  const db = path.join(dataDir, 'frapi.db');
  const q = (sql) => execFileSync('sqlite3', [db, sql]).toString().trim();
  assert.equal(q(`SELECT length(bytes) FROM originals WHERE face_id = '${
    kept.body.data.id}'`), String(fs.statSync(e.file).size));
  assert.equal(q(`SELECT count(*) FROM originals o JOIN faces f ON
    f.id = o.face_id WHERE f.collection_id = '${tenant.collection.id}'`), '0');
});

test('liveness and detect answer per face; enroll can require a live face',
  async () => {
    const photo = fx.faces.find((f) => f.sample === 6).photo;
    const live = await call('POST', '/api/v1/liveness',
      { form: { image: part(photo) } });
    assert.equal(live.status, 200, live.text);
    assert.ok(live.body.data.faces.length >= 3);
    for (const f of live.body.data.faces) {
      assert.ok(f.liveness_score >= 0 && f.liveness_score <= 1);
      assert.equal(f.live, f.liveness_score >= f.threshold);
      assert.ok(f.box.width > 0);
    }

    const det = await call('POST', '/api/v1/detect',
      { form: { image: part(photo), max_faces: '2' } });
    assert.equal(det.status, 200, det.text);
    assert.equal(det.body.data.faces.length, 2);
    const f0 = det.body.data.faces[0];
    assert.equal(f0.landmarks.length, 68);
    assert.equal(f0.points5.length, 5);
    assert.equal(typeof f0.quality.passes, 'boolean');
    assert.ok(Array.isArray(f0.quality.reasons));
    assert.ok(['male', 'female'].includes(f0.attributes.gender));
    assert.ok(f0.attributes.age > 0 && f0.attributes.age < 120);
    assert.ok(f0.box.width >= det.body.data.faces[1].box.width);

    // With check_liveness the answer carries the verdict, or refuses.
    const e = enrolled[2];
    const r = await call('POST', '/api/v1/faces', { form: {
      image: part(e.file), name: 'Live check', check_liveness: 'true' } });
    if (r.status === 201) {
      assert.equal(r.body.data.liveness.live, true);
      await call('DELETE', `/api/v1/faces/${r.body.data.id}`);
    } else {
      assert.equal(r.status, 422, r.text);
      assert.equal(r.body.error.code, 'LIVENESS_CHECK_FAILED');
      assert.ok(r.body.error.liveness_score < r.body.error.threshold);
    }
    const bad = await call('POST', '/api/v1/faces', { form: {
      image: part(e.file), name: 'x', check_liveness: 'maybe' } });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.error.param, 'check_liveness');
  });

test('/metrics shows where engine time goes, stage by stage', async () => {
  // The liveness, detect and enroll calls above ran every stage.
  const r = await fetch(`${srv.base}/metrics`);
  assert.equal(r.status, 200);
  const text = await r.text();
  for (const stage of ['decode', 'analyze', 'detect', 'landmarks', 'align',
    'embed', 'liveness', 'attributes']) {
    const m = text.match(new RegExp(
      `^frapi_engine_stage_seconds_count\\{stage="${stage}"\\} (\\d+)$`, 'm'));
    assert.ok(m && Number(m[1]) > 0, `no ${stage} stage in /metrics`);
  }
  assert.match(text, /^frapi_faces_stored(\{[^}]*\})? \d+$/m);
});
