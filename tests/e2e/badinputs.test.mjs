// Inputs that have broken face recognition services
// (../shared/cases/bad-inputs.md), one test per row this API owns:
// A1-A6, F3-F6, I3, I6, I7, plus the API key rules of the face API.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, test } from 'node:test';
import {
  client, detect, faceFixtures, newTenant, part, startServer, tempDir,
} from './lib/faceenv.mjs';

let dataDir;
let srv;
let call;
let tenant;
let fx;
let work;
let good; // a frontal face crop that enrolls
let other; // another person's crop that enrolls

before(async () => {
  dataDir = tempDir();
  work = tempDir('frapi-bad-');
  tenant = newTenant(dataDir, 'Bad inputs');
  fx = faceFixtures();
  srv = await startServer(dataDir);
  call = client(srv.base, tenant.key);

  // Two crops of different people that the engine accepts.
  const probe = newTenant(dataDir, 'probe');
  const pcall = client(srv.base, probe.key);
  for (const f of fx.faces) {
    const r = await pcall('POST', '/api/v1/faces',
      { form: { image: part(f.file), name: 'probe' } });
    if (r.status !== 201) continue;
    if (!good) good = f;
    else if (f.sample !== good.sample) { other = f; break; }
  }
  assert.ok(good && other, 'no usable face crops');
});

after(async () => {
  await srv?.stop();
});

// Makes an image with ImageMagick into the work folder.
function magick(name, ...args) {
  const out = path.join(work, name);
  execFileSync('convert', [...args, out]);
  return out;
}

async function enroll(form, c = call) {
  return c('POST', '/api/v1/faces', { form });
}

async function count(c = call) {
  const r = await c('GET', '/api/v1/faces?limit=500');
  assert.equal(r.status, 200, r.text);
  return r.body.data.faces.length;
}

function isError(r, status, code, param) {
  assert.equal(r.status, status, r.text);
  assert.equal(r.body.success, false, r.text);
  if (code) assert.equal(r.body.error.code, code, r.text);
  if (param !== undefined) assert.equal(r.body.error.param, param, r.text);
  assert.equal(typeof r.body.error.message, 'string');
  assert.equal(r.body.error.request_id, r.headers.get('x-request-id'));
}

test('A1: bad names get 400 naming the field; no empty selector deletes',
  async () => {
    const img = fs.readFileSync(good.file).toString('base64');
    const before = await count();
    for (const name of ['', '   ', 42, ['a', 'b'], { a: 1 }, true]) {
      const r = await call('POST', '/api/v1/faces',
        { json: { image: img, name } });
      isError(r, 400, 'INVALID_PARAMETER', 'name');
    }
    const missing = await call('POST', '/api/v1/faces', { json: { image: img } });
    isError(missing, 400, 'MISSING_PARAMETER', 'name');
    const nul = await call('POST', '/api/v1/faces',
      { json: { image: img, name: null } });
    isError(nul, 400, 'MISSING_PARAMETER', 'name');
    const blankForm = await enroll({ image: part(good.file), name: ' \t ' });
    isError(blankForm, 400, 'INVALID_PARAMETER', 'name');
    const badExt = await call('POST', '/api/v1/faces',
      { json: { image: img, name: 'n', external_id: 7 } });
    isError(badExt, 400, 'INVALID_PARAMETER', 'external_id');
    const badMeta = await call('POST', '/api/v1/faces',
      { json: { image: img, name: 'n', metadata: [1, 2] } });
    isError(badMeta, 400, 'INVALID_PARAMETER', 'metadata');
    const bigMeta = await call('POST', '/api/v1/faces',
      { json: { image: img, name: 'n', metadata: { x: 'y'.repeat(17000) } } });
    isError(bigMeta, 400, 'INVALID_PARAMETER', 'metadata');

    // An enrolled face survives every empty delete selector.  The one
    // route that takes a selector (batch delete) answers exactly 400
    // EMPTY_SELECTOR; a DELETE without a face id is not a route: 405 on
    // the collection, 404 otherwise.
    const ok = await enroll({ image: part(good.file), name: 'Keep me' });
    assert.equal(ok.status, 201, ok.text);
    for (const json of [{}, { ids: [] }, { external_ids: [] },
      { ids: [], external_ids: [] }, { ids: null, external_ids: null }]) {
      const d = await call('POST', '/api/v1/faces/batch-delete', { json });
      isError(d, 400, 'EMPTY_SELECTOR', 'ids');
    }
    for (const [sel, param] of [[{ ids: [''] }, 'ids[0]'],
      [{ external_ids: [''] }, 'external_ids[0]']]) {
      const d = await call('POST', '/api/v1/faces/batch-delete', { json: sel });
      isError(d, 400, 'INVALID_PARAMETER', param);
    }
    const col = await call('DELETE', '/api/v1/faces');
    isError(col, 405, 'METHOD_NOT_ALLOWED', null);
    assert.doesNotMatch(col.headers.get('allow'), /DELETE/);
    isError(await call('DELETE', '/api/v1/faces/'), 404, 'NOT_FOUND', null);
    isError(await call('DELETE', '/api/v1/faces/%20'), 404, 'FACE_NOT_FOUND',
      'id');
    assert.equal(await count(), before + 1);
  });

test('A2: names in any script come back byte-identical; bad UTF-8 is 400',
  async () => {
    const names = ['张伟', 'Zo\u00eb', 'Zoe\u0308', '😀🎉 Party', 'שלום עליכם',
      'مرحبا', '../../etc/passwd', 'Robert\'); DROP TABLE faces;--'];
    for (const name of names) {
      const r = await enroll({ image: part(good.file), name, external_id: name });
      assert.equal(r.status, 201, r.text);
      assert.equal(r.body.data.name, name);
      const g = await call('GET', `/api/v1/faces/${r.body.data.id}`);
      assert.equal(Buffer.compare(Buffer.from(g.body.data.name),
        Buffer.from(name)), 0);
      assert.equal(g.body.data.external_id, name);
    }
    // NFC and NFD stay different strings.
    assert.notEqual('Zo\u00eb', 'Zoe\u0308');

    // Invalid UTF-8 in a form field, and in a JSON body.
    const fd = new FormData();
    fd.append('image', new Blob([fs.readFileSync(good.file)]), 'a.jpg');
    fd.append('name', new Blob([Buffer.from([0x5a, 0x6f, 0xc3, 0x28])]));
    const r1 = await fetch(`${srv.base}/api/v1/faces`, {
      method: 'POST', headers: { 'X-API-Key': tenant.key }, body: fd,
    });
    const b1 = await r1.json();
    assert.equal(r1.status, 400);
    assert.equal(b1.error.param, 'name');
    const raw = Buffer.concat([Buffer.from('{"name":"Zo'),
      Buffer.from([0xc3, 0x28]), Buffer.from('","image":"x"}')]);
    const r2 = await call('POST', '/api/v1/faces',
      { raw, contentType: 'application/json' });
    assert.equal(r2.status, 400, r2.text);
  });

test('A3: identify after a delete, and on an unused collection: 200, no match',
  async () => {
    const r = await enroll({ image: part(other.file), name: 'Gone soon' });
    assert.equal(r.status, 201, r.text);
    const del = await call('DELETE', `/api/v1/faces/${r.body.data.id}`);
    assert.equal(del.status, 200);
    const id = await call('POST', '/api/v1/identify',
      { form: { image: part(other.file) } });
    assert.equal(id.status, 200, id.text);
    assert.ok(id.body.data.faces.length >= 1);
    for (const f of id.body.data.faces) {
      assert.ok(!f.candidates.some((c) => c.face_id === r.body.data.id));
    }

    const empty = newTenant(dataDir, 'never used');
    const ecall = client(srv.base, empty.key);
    const e = await ecall('POST', '/api/v1/identify',
      { form: { image: part(good.file) } });
    assert.equal(e.status, 200, e.text);
    assert.ok(e.body.data.faces.length >= 1);
    for (const f of e.body.data.faces) assert.deepEqual(f.candidates, []);
  });

test('A4: cursor past the end is an empty page; bad limits are 400, big capped',
  async () => {
    // Walk to the last page, then ask past it.
    let r = await call('GET', '/api/v1/faces?limit=1');
    let last = r.body.data.faces[0].id;
    for (;;) {
      if (!r.body.data.next_cursor) break;
      r = await call('GET',
        `/api/v1/faces?limit=1&cursor=${r.body.data.next_cursor}`);
      last = r.body.data.faces[0]?.id ?? last;
    }
    const past = Buffer.from(last).toString('base64url');
    const p = await call('GET', `/api/v1/faces?cursor=${past}`);
    assert.equal(p.status, 200, p.text);
    assert.deepEqual(p.body.data.faces, []);
    assert.equal(p.body.data.next_cursor, null);

    for (const bad of ['-1', '0', 'abc', '', '1.5', '10abc']) {
      const b = await call('GET', `/api/v1/faces?limit=${bad}`);
      isError(b, 400, 'INVALID_PARAMETER', 'limit');
    }
    const big = await call('GET', '/api/v1/faces?limit=1000000000');
    assert.equal(big.status, 200);
    assert.ok(big.body.data.faces.length <= 500);
    for (const c of ['zzz', '!!!', Buffer.from('col_x').toString('base64url')]) {
      const b = await call('GET', `/api/v1/faces?cursor=${c}`);
      isError(b, 400, 'INVALID_CURSOR', 'cursor');
    }
  });

test('A5: two concurrent deletes: one 200, one 404; identify never sees it',
  async () => {
    for (let round = 0; round < 3; round++) {
      const r = await enroll({ image: part(other.file), name: 'Race' });
      assert.equal(r.status, 201, r.text);
      const id = r.body.data.id;
      const [a, b, idf] = await Promise.all([
        call('DELETE', `/api/v1/faces/${id}`),
        call('DELETE', `/api/v1/faces/${id}`),
        call('POST', '/api/v1/identify', { form: { image: part(other.file) } }),
      ]);
      assert.deepEqual([a.status, b.status].sort(), [200, 404]);
      const after = await call('POST', '/api/v1/identify',
        { form: { image: part(other.file) } });
      for (const f of after.body.data.faces) {
        assert.ok(!f.candidates.some((c) => c.face_id === id));
      }
      assert.equal(idf.status, 200);
    }
  });

// Sends a POST of body with key over a plain socket, without waiting for
// 100-continue, and resolves with the status line and JSON body of the
// answer as soon as it arrives, whether or not the server read the body.
function postEarly(key, body, { expect = false } = {}) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(srv.port, '127.0.0.1');
    let got = '';
    let done = false;
    const finish = () => {
      const m = /^HTTP\/1\.1 (\d{3})/.exec(got);
      const at = got.indexOf('\r\n\r\n');
      const len = /content-length: *(\d+)/i.exec(got);
      if (!m || at < 0 || !len || got.length < at + 4 + Number(len[1])) {
        return false;
      }
      done = true;
      sock.destroy();
      resolve({ status: Number(m[1]),
        body: JSON.parse(got.slice(at + 4, at + 4 + Number(len[1]))) });
      return true;
    };
    sock.on('data', (d) => { got += d; finish(); });
    sock.on('error', () => { /* the server may stop reading: fine */ });
    sock.on('close', () => {
      if (!done && !finish()) resolve({ status: null, closed: true });
    });
    sock.on('connect', () => {
      const keyLine = key === null ? '' : `X-API-Key: ${key}\r\n`;
      sock.write(`POST /api/v1/faces HTTP/1.1\r\nHost: x\r\n${keyLine}` +
        'Content-Type: application/json\r\n' +
        `${expect ? 'Expect: 100-continue\r\n' : ''}` +
        `Content-Length: ${body.length}\r\n\r\n`);
      if (expect) return; // a good server answers 401 instead of 100
      // Write in pieces, stopping once the answer is in.
      let off = 0;
      const pump = () => {
        while (!done && off < body.length) {
          const chunk = body.subarray(off, off + 65536);
          off += chunk.length;
          if (!sock.write(chunk)) { sock.once('drain', pump); return; }
        }
      };
      pump();
    });
  });
}

test('A6: a multi-megabyte body with a bad key gets a prompt 401', async () => {
  const big = Buffer.alloc(8 << 20, 0x41);
  for (const key of ['not-a-key', `fr_live_${'A'.repeat(28)}`, '', null]) {
    const t0 = Date.now();
    // A client that waits for 100-continue gets the 401 instead, and
    // never sends the body.
    const r = await postEarly(key, big, { expect: true });
    assert.equal(r.status, 401, JSON.stringify(r.body));
    assert.equal(r.body.error.code,
      key ? 'INVALID_API_KEY' : 'MISSING_API_KEY');

    // One that sends at once gets the 401 or, when the server's close
    // of the unread body resets the connection first, a closed socket:
    // never a wait for the whole body to be processed.
    const early = await postEarly(key, big, { expect: false });
    if (early.status !== null) assert.equal(early.status, 401);
    const ms = Date.now() - t0;
    assert.ok(ms < 5000, `took ${ms} ms`);
  }
  // The server still answers.
  const ok = await call('GET', '/api/v1/faces?limit=1');
  assert.equal(ok.status, 200);
});

test('keys: a key sees only its own collection', async () => {
  const mine = await enroll({ image: part(good.file), name: 'Mine' });
  assert.equal(mine.status, 201);
  const other = newTenant(dataDir, 'other tenant');
  const ocall = client(srv.base, other.key);
  const id = mine.body.data.id;
  isError(await ocall('GET', `/api/v1/faces/${id}`), 404, 'FACE_NOT_FOUND');
  isError(await ocall('PATCH', `/api/v1/faces/${id}`, { json: { name: 'x' } }),
    404, 'FACE_NOT_FOUND');
  isError(await ocall('DELETE', `/api/v1/faces/${id}`), 404, 'FACE_NOT_FOUND');
  const v = await ocall('POST', '/api/v1/verify',
    { form: { image_a: part(good.file), face_id: id } });
  isError(v, 404, 'FACE_NOT_FOUND');
  assert.equal((await call('GET', `/api/v1/faces/${id}`)).status, 200);
  isError(await client(srv.base, null)('GET', '/api/v1/faces'), 401,
    'MISSING_API_KEY', 'X-API-Key');
  const flipped = tenant.key.slice(0, -1) +
    (tenant.key.endsWith('a') ? 'b' : 'a');
  isError(await client(srv.base, flipped)('GET', '/api/v1/faces'), 401,
    'INVALID_API_KEY');
});

test('F3: a face against a blank, a wall, a cartoon: 422 naming the image',
  async () => {
    const white = magick('white.png', '-size', '640x480', 'xc:white');
    const wall = magick('wall.jpg', '-seed', '3', '-size', '640x480',
      'plasma:tan-tan', '-blur', '0x4');
    // A smiley: a yellow disc, two dots and an arc.  Too little of a face
    // for the detector.
    const cartoon = magick('cartoon.png', '-size', '400x400', 'xc:skyblue',
      '-fill', 'yellow', '-draw', 'circle 200,200 200,60',
      '-fill', 'black', '-draw', 'circle 150,160 150,175',
      '-draw', 'circle 250,160 250,175',
      '-fill', 'none', '-stroke', 'black', '-strokewidth', '8',
      '-draw', 'arc 120,180 280,300 20,160');
    for (const img of [white, wall, cartoon]) {
      const r = await call('POST', '/api/v1/verify',
        { form: { image_a: part(good.file), image_b: part(img, 'b') } });
      isError(r, 422, 'NO_FACE_DETECTED', 'image_b');
      assert.match(r.body.error.message, /image_b/);
      const swapped = await call('POST', '/api/v1/verify',
        { form: { image_a: part(img, 'a'), image_b: part(good.file) } });
      isError(swapped, 422, 'NO_FACE_DETECTED', 'image_a');
      assert.match(swapped.body.error.message, /image_a/);
      // In JSON too, and with no face on either side the first is named.
      const b64 = fs.readFileSync(img).toString('base64');
      const j = await call('POST', '/api/v1/verify', { json: {
        image_a: fs.readFileSync(good.file).toString('base64'),
        image_b: b64 } });
      isError(j, 422, 'NO_FACE_DETECTED', 'image_b');
      const both = await call('POST', '/api/v1/verify',
        { json: { image_a: b64, image_b: b64 } });
      isError(both, 422, 'NO_FACE_DETECTED', 'image_a');
    }

    // A drawn face with skin, eyes, brows, nose and mouth is a face to
    // the detector (as to a person); it is found, and it matches nobody.
    const drawn = magick('drawn.png', '-size', '400x400', 'xc:#6a8caf',
      '-fill', '#e0b090', '-draw', 'ellipse 200,210 110,145 0,360',
      '-fill', 'white', '-draw', 'ellipse 155,180 24,13 0,360',
      '-draw', 'ellipse 245,180 24,13 0,360',
      '-fill', '#3a2a1a', '-draw', 'circle 155,180 155,190',
      '-draw', 'circle 245,180 245,190',
      '-stroke', '#3a2a1a', '-strokewidth', '7',
      '-draw', 'line 125,150 185,145', '-draw', 'line 215,145 275,150',
      '-fill', 'none', '-stroke', '#a06040', '-strokewidth', '5',
      '-draw', 'line 200,195 190,245', '-draw', 'line 190,245 210,248',
      '-stroke', '#b03030', '-strokewidth', '9',
      '-draw', 'arc 160,255 240,295 20,160',
      '-fill', '#3a2a1a', '-stroke', 'none',
      '-draw', 'ellipse 200,90 115,50 180,360');
    for (const person of [good, other]) {
      for (const [a, b] of [[person.file, drawn], [drawn, person.file]]) {
        const r = await call('POST', '/api/v1/verify',
          { form: { image_a: part(a), image_b: part(b) } });
        assert.equal(r.status, 200, r.text);
        assert.equal(r.body.data.match, false, r.text);
        assert.ok(r.body.data.similarity < r.body.data.threshold - 0.2,
          r.text);
      }
    }
  });

test('F4: one face against a group photo: the largest face is used, and said',
  async () => {
    const photo = good.photo;
    const faces = detect(photo).faces; // largest first
    const largest = fx.faces.find((f) => f.photo === photo &&
      Math.abs(f.box.x1 - faces[0].box.x1) < 1);
    const smaller = fx.faces.find((f) => f.photo === photo && f !== largest);
    const a = await call('POST', '/api/v1/verify',
      { form: { image_a: part(largest.file), image_b: part(photo) } });
    assert.equal(a.status, 200, a.text);
    assert.equal(a.body.data.face_b.faces_detected, faces.length);
    assert.equal(a.body.data.face_b.largest_used, true);
    assert.equal(a.body.data.match, true, a.text);
    const b = await call('POST', '/api/v1/verify',
      { form: { image_a: part(smaller.file), image_b: part(photo) } });
    assert.equal(b.status, 200);
    assert.equal(b.body.data.match, false, b.text);

    // Identify reports every face, up to max_faces.
    const idf = await call('POST', '/api/v1/identify',
      { form: { image: part(photo) } });
    assert.equal(idf.body.data.faces.length, faces.length);
    const capped = await call('POST', '/api/v1/identify',
      { form: { image: part(photo), max_faces: '1' } });
    assert.equal(capped.body.data.faces.length, 1);

    // The largest face's box is the one compared, on either side.
    const near = (box, d) => Math.abs(box.x - d.x1) <= 1 &&
      Math.abs(box.y - d.y1) <= 1 && Math.abs(box.width - (d.x2 - d.x1)) <= 1;
    assert.ok(near(a.body.data.face_b.box, faces[0].box), a.text);
    const ba = await call('POST', '/api/v1/verify',
      { form: { image_a: part(photo), image_b: part(largest.file) } });
    assert.equal(ba.status, 200, ba.text);
    assert.equal(ba.body.data.face_a.largest_used, true);
    assert.equal(ba.body.data.face_a.faces_detected, faces.length);
    assert.equal(ba.body.data.face_b.largest_used, false);
    assert.equal(ba.body.data.similarity, a.body.data.similarity);
    assert.equal(ba.body.data.match, true);
  });

test('F4: one face against a group photo without that person: the largest ' +
  'face is used, said, and does not match', async () => {
    for (let n = 1; n <= 6; n++) {
      const photo = path.join(path.dirname(good.photo), `sample${n}.jpg`);
      const faces = detect(photo).faces;
      assert.ok(faces.length >= 2, `sample${n}: ${faces.length} faces`);
      const stranger = good.sample === n ? other : good;
      for (const [a, b, side] of [[stranger.file, photo, 'face_b'],
        [photo, stranger.file, 'face_a']]) {
        const r = await call('POST', '/api/v1/verify',
          { form: { image_a: part(a), image_b: part(b) } });
        assert.equal(r.status, 200, `sample${n}: ${r.text}`);
        assert.equal(r.body.data.match, false, `sample${n}: ${r.text}`);
        assert.ok(r.body.data.similarity < r.body.data.threshold, r.text);
        assert.equal(r.body.data[side].largest_used, true, r.text);
        assert.equal(r.body.data[side].faces_detected, faces.length, r.text);
        const box = r.body.data[side].box;
        assert.ok(Math.abs(box.x - faces[0].box.x1) <= 1 &&
          Math.abs(box.y - faces[0].box.y1) <= 1, `sample${n}: ${r.text}`);
      }
    }
  });

test('F4: enrolling a group photo follows the documented rule, photo by photo',
  async () => {
    // Of the faces the engine finds, the largest must pass the quality
    // gate and be the only one that does; face_selection=largest waives
    // the second condition, never the first.  Nothing else is stored.
    const t = newTenant(dataDir, 'F4 enroll');
    const c = client(srv.base, t.key);
    let stored = 0;
    const seen = new Set();
    for (let n = 1; n <= 6; n++) {
      const photo = path.join(path.dirname(good.photo), `sample${n}.jpg`);
      const faces = detect(photo).faces;
      const passing = faces.filter((f) => f.quality.passes).length;
      const single = await enroll({ image: part(photo), name: 'Group' }, c);
      const largest = await enroll({ image: part(photo), name: 'Largest',
        face_selection: 'largest' }, c);
      if (!faces[0].quality.passes) {
        for (const r of [single, largest]) {
          isError(r, 422, 'FACE_QUALITY_TOO_LOW', 'image');
          assert.deepEqual(r.body.error.reasons, faces[0].quality.reasons);
          assert.ok(Math.abs(r.body.error.box.x - faces[0].box.x1) <= 1);
        }
        seen.add('largest fails');
        continue;
      }
      if (passing >= 2) {
        isError(single, 422, 'MULTIPLE_FACES', 'image');
        assert.equal(single.body.error.faces.length, faces.length);
        single.body.error.faces.forEach((f, i) => {
          assert.ok(Math.abs(f.box.x - faces[i].box.x1) <= 1, single.text);
          assert.deepEqual(f.quality_reasons, faces[i].quality.reasons);
        });
        seen.add('several pass');
      } else {
        assert.equal(single.status, 201, single.text);
        stored++;
      }
      assert.equal(largest.status, 201, largest.text);
      assert.equal(largest.body.data.faces_detected, faces.length);
      assert.ok(Math.abs(largest.body.data.box.x - faces[0].box.x1) <= 1);
      stored++;
    }
    // The sample photos show both refusals.
    assert.deepEqual([...seen].sort(), ['largest fails', 'several pass']);
    assert.equal(await count(c), stored);
  });

test('F5: A vs A is the top similarity; A/B equals B/A; boxes stay with images',
  async () => {
    const aa = await call('POST', '/api/v1/verify',
      { form: { image_a: part(good.file), image_b: part(good.file) } });
    assert.equal(aa.status, 200);
    assert.ok(aa.body.data.similarity >= 0.999, aa.text);
    assert.equal(aa.body.data.match, true);
    const ab = await call('POST', '/api/v1/verify',
      { form: { image_a: part(good.file), image_b: part(other.file2) } });
    const ba = await call('POST', '/api/v1/verify',
      { form: { image_a: part(other.file2), image_b: part(good.file) } });
    assert.equal(ab.body.data.similarity, ba.body.data.similarity);
    assert.deepEqual(ab.body.data.face_a.box, ba.body.data.face_b.box);
    assert.deepEqual(ab.body.data.face_b.box, ba.body.data.face_a.box);
    assert.notDeepEqual(ab.body.data.face_a.box, ab.body.data.face_b.box);
  });

test('F6: the same photo twice is reported; under a second person, flagged',
  async () => {
    const t = newTenant(dataDir, 'F6');
    const c = client(srv.base, t.key);
    const first = await enroll({ image: part(good.file), name: 'Ann',
      external_id: 'ann' }, c);
    assert.equal(first.status, 201);
    const again = await enroll({ image: part(good.file), name: 'Ann',
      external_id: 'ann' }, c);
    assert.equal(again.status, 201);
    assert.deepEqual(again.body.data.near_identical_to.map((d) => d.face_id),
      [first.body.data.id]);
    assert.deepEqual(again.body.data.possible_duplicate_of, []);
    const second = await enroll({ image: part(good.file), name: 'Bea',
      external_id: 'bea' }, c);
    assert.equal(second.status, 201);
    const dups = second.body.data.possible_duplicate_of;
    assert.ok(dups.length >= 1 && dups.every((d) => d.external_id === 'ann'));

    // With an Idempotency-Key a retry returns the first answer.
    const headers = { 'Idempotency-Key': 'enroll-ann-3' };
    const form = { image: part(good.file), name: 'Ann', external_id: 'ann' };
    const i1 = await c('POST', '/api/v1/faces', { form, headers });
    const i2 = await c('POST', '/api/v1/faces', { form, headers });
    assert.equal(i1.status, 201);
    assert.equal(i2.status, 201);
    assert.equal(i2.body.data.id, i1.body.data.id);
    assert.equal(i2.headers.get('idempotent-replayed'), 'true');
    const i3 = await c('POST', '/api/v1/faces',
      { form: { ...form, name: 'Other' }, headers });
    isError(i3, 409, 'IDEMPOTENCY_KEY_REUSED', 'Idempotency-Key');
    const list = await c('GET', '/api/v1/faces');
    assert.equal(list.body.data.faces.length, 4);
  });

test('I3: cut JPEGs, zero bytes, no file part: 400, nothing stored',
  async () => {
    const bytes = fs.readFileSync(good.file);
    const half = bytes.subarray(0, bytes.length >> 1);
    // The end of the header: the first start-of-scan marker.
    const sos = bytes.indexOf(Buffer.from([0xff, 0xda]));
    const header = bytes.subarray(0, sos + 2);
    const before = await count();
    for (const [label, data] of [['half', half], ['header', header],
      ['empty', Buffer.alloc(0)]]) {
      const r = await enroll({ image: { data, filename: 'x.jpg',
        type: 'image/jpeg' }, name: label });
      assert.equal(r.status, 400, `${label}: ${r.text}`);
      assert.equal(r.body.error.param, 'image');
      assert.ok(['INVALID_IMAGE', 'EMPTY_IMAGE'].includes(r.body.error.code));
      const v = await call('POST', '/api/v1/verify',
        { form: { image_a: { data, filename: 'x.jpg' }, image_b: part(good.file) } });
      assert.equal(v.status, 400, `${label}: ${v.text}`);
    }
    const nofile = await enroll({ name: 'No file' });
    isError(nofile, 400, 'MISSING_IMAGE', 'image');
    const empty = await call('POST', '/api/v1/identify', { form: { x: 'y' } });
    isError(empty, 400, 'MISSING_IMAGE', 'image');
    assert.equal(await count(), before);
  });

test('I6: the image type comes from the bytes, not names or headers',
  async () => {
    const jpeg = fs.readFileSync(good.file);
    const png = fs.readFileSync(magick('face.png', good.file));
    const variants = [
      { data: jpeg, filename: 'x.JPG', type: 'image/jpeg' },
      { data: jpeg, filename: 'x.png', type: 'image/png' },
      { data: jpeg, filename: null, type: 'application/octet-stream' },
      { data: jpeg, filename: 'photo', type: 'text/plain' },
      { data: png, filename: 'x.jpg', type: 'image/jpeg' },
    ];
    let first;
    for (const v of variants) {
      const r = await call('POST', '/api/v1/detect', { form: { image: v } });
      assert.equal(r.status, 200, r.text);
      assert.equal(r.body.data.faces_detected, 1);
      first ??= r.body.data.faces[0].box;
      const b = r.body.data.faces[0].box;
      assert.ok(Math.abs(b.x - first.x) < 2 && Math.abs(b.width - first.width) < 2);
    }
    // Same bytes, same answer.
    const again = await call('POST', '/api/v1/detect',
      { form: { image: variants[2] } });
    assert.deepEqual(again.body.data.faces[0].box, first);
    // Bytes of no image type at all.
    const txt = await call('POST', '/api/v1/detect',
      { form: { image: { data: Buffer.from('hello, not an image'),
        filename: 'x.jpg', type: 'image/jpeg' } } });
    isError(txt, 415, 'UNSUPPORTED_IMAGE_FORMAT', 'image');
    // A known format we refuse is named in the message.
    const pdf = await call('POST', '/api/v1/detect',
      { form: { image: { data: Buffer.from('%PDF-1.4\n%\xe2\xe3\n1 0 obj\n'),
        filename: 'x.jpg', type: 'image/jpeg' } } });
    isError(pdf, 415, 'UNSUPPORTED_IMAGE_FORMAT', 'image');
    assert.match(pdf.body.error.message, /PDF/);
  });

test('I7: base64 with or without a data: prefix; malformed base64 is 400',
  async () => {
    const b64 = fs.readFileSync(good.file).toString('base64');
    const plain = await call('POST', '/api/v1/detect', { json: { image: b64 } });
    assert.equal(plain.status, 200, plain.text);
    const url = await call('POST', '/api/v1/detect',
      { json: { image: `data:image/jpeg;base64,${b64}` } });
    assert.equal(url.status, 200, url.text);
    assert.deepEqual(url.body.data.faces[0].box, plain.body.data.faces[0].box);
    const noPad = await call('POST', '/api/v1/detect',
      { json: { image: b64.replace(/=+$/, '') } });
    assert.equal(noPad.status, 200, noPad.text);
    const wrapped = await call('POST', '/api/v1/detect',
      { json: { image: b64.replace(/(.{76})/g, '$1\n') } });
    assert.equal(wrapped.status, 200, wrapped.text);

    for (const bad of ['@@@@', `${b64.slice(0, 100)}!${b64.slice(100)}`,
      'data:image/jpeg,notbase64', 'data:image/jpeg;base64,%%%']) {
      const r = await call('POST', '/api/v1/detect', { json: { image: bad } });
      isError(r, 400, 'INVALID_BASE64', 'image');
    }
    const num = await call('POST', '/api/v1/detect', { json: { image: 12 } });
    isError(num, 400, 'INVALID_PARAMETER', 'image');
    const enrolled = await call('POST', '/api/v1/faces',
      { json: { image: `data:image/jpeg;base64,${b64}`, name: 'Base64' } });
    assert.equal(enrolled.status, 201, enrolled.text);
  });

test('N1: an encoded NUL in the path or the query is 400 before routing',
  async () => {
    const e = await enroll({ image: part(good.file), name: 'Nul',
      external_id: 'nul-ext' });
    assert.equal(e.status, 201, e.text);
    const id = e.body.data.id;
    const whole = await call('GET', `/api/v1/faces/${id}`);
    assert.equal(whole.status, 200, whole.text);

    for (const p of [`/api/v1/faces/${id}%00anything`,
      '/api/v1/faces/export%00zzz', '/api/v1/faces%00']) {
      const r = await call('GET', p);
      isError(r, 400, 'INVALID_REQUEST', 'path');
    }
    const lim = await call('GET', '/api/v1/faces?limit=5%00abc');
    isError(lim, 400, 'INVALID_REQUEST', 'limit');
    const ext = await call('GET', '/api/v1/faces?external_id=nul-ext%00xyz');
    isError(ext, 400, 'INVALID_REQUEST', 'external_id');
    const key = await call('GET', '/api/v1/faces?a%00b=1');
    isError(key, 400, 'INVALID_REQUEST', 'query');
    // The same connection goes on with a clean request.
    const again = await call('GET', `/api/v1/faces/${id}`);
    assert.equal(again.status, 200, again.text);
  });

test('N2: names blank in Unicode, or with control characters, are 400',
  async () => {
    const img = fs.readFileSync(good.file).toString('base64');
    const before = await count();
    const blanks = ['\u00a0', '\u3000', '\u200b', ' \u00a0\u2003\ufeff'];
    const controls = ['a\rb', 'a\nb', 'a\u001b[31mb', 'a\u0007', 'a\u007f',
      'a\u0085b', '\u009bx', 'a\tb'];
    for (const name of [...blanks, ...controls]) {
      const r = await call('POST', '/api/v1/faces',
        { json: { image: img, name } });
      isError(r, 400, 'INVALID_PARAMETER', 'name');
    }
    for (const external_id of ['e\r\nx', '\u3000', 'e\u0001x']) {
      const r = await call('POST', '/api/v1/faces',
        { json: { image: img, name: 'Ok', external_id } });
      isError(r, 400, 'INVALID_PARAMETER', 'external_id');
    }
    const form = await enroll({ image: part(good.file), name: 'x\u001by' });
    isError(form, 400, 'INVALID_PARAMETER', 'name');
    assert.equal(await count(), before);

    // PATCH, batch items and import lines follow the same rule.
    const e = await enroll({ image: part(good.file), name: 'Kept' });
    assert.equal(e.status, 201, e.text);
    for (const name of ['\u3000', 'a\nb']) {
      const p = await call('PATCH', `/api/v1/faces/${e.body.data.id}`,
        { json: { name } });
      isError(p, 400, 'INVALID_PARAMETER', 'name');
    }
    const b = await call('POST', '/api/v1/faces/batch', { json: { items: [
      { image: img, name: '\u200b' }, { image: img, name: 'a\u001b' },
      { image: img, name: 'Fine', external_id: 'x\ny' }] } });
    assert.equal(b.status, 200, b.text);
    assert.deepEqual(b.body.data.results.map((x) => x.error?.param),
      ['name', 'name', 'external_id']);
    assert.equal(b.body.data.succeeded, 0);

    const ex = await call('GET', '/api/v1/faces/export');
    assert.equal(ex.status, 200, ex.text);
    const line = JSON.parse(ex.text.trimEnd().split('\n')[0]);
    const lines = ['\u00a0', 'a\rb'].map((name) => JSON.stringify({
      name, model_version: line.model_version, embedding: line.embedding }));
    const im = await call('POST', '/api/v1/faces/import',
      { raw: lines.join('\n'), contentType: 'application/x-ndjson' });
    assert.equal(im.status, 200, im.text);
    assert.equal(im.body.data.imported, 0, im.text);
    assert.deepEqual(im.body.data.results.map((x) => x.error?.param),
      ['name', 'name']);
  });

// Sends raw request head text over a socket; resolves with the status.
function rawStatus(head) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(srv.port, '127.0.0.1');
    let got = '';
    sock.on('data', (d) => {
      got += d;
      const m = /^HTTP\/1\.1 (\d{3})/.exec(got);
      if (m && got.includes('\r\n\r\n')) {
        sock.destroy();
        resolve({ status: Number(m[1]), text: got });
      }
    });
    sock.on('error', reject);
    sock.on('connect', () => sock.write(head));
  });
}

test('N3: white space around the API key value is not part of it',
  async () => {
    for (const [pre, post] of [['', ' '], ['', '\t'], ['  ', ' \t '],
      ['\t', '']]) {
      const r = await rawStatus('GET /api/v1/faces?limit=1 HTTP/1.1\r\n' +
        `Host: x\r\nX-API-Key:${pre}${tenant.key}${post}\r\n` +
        'Connection: close\r\n\r\n');
      assert.equal(r.status, 200, JSON.stringify([pre, post, r.text]));
    }
    const bad = await rawStatus('GET /api/v1/faces HTTP/1.1\r\n' +
      `Host: x\r\nX-API-Key: ${tenant.key}x \r\nConnection: close\r\n\r\n`);
    assert.equal(bad.status, 401);
  });

test('N5: verify against an unknown or deleted face_id names face_id',
  async () => {
    const e = await enroll({ image: part(good.file), name: 'Gone' });
    assert.equal(e.status, 201, e.text);
    const id = e.body.data.id;
    const d = await call('DELETE', `/api/v1/faces/${id}`);
    assert.equal(d.status, 200, d.text);
    for (const face_id of [id, 'face_doesnotexist']) {
      const r = await call('POST', '/api/v1/verify',
        { form: { image_a: part(good.file), face_id } });
      isError(r, 404, 'FACE_NOT_FOUND', 'face_id');
    }
  });

test('N8: a missing image is reported in plain words', async () => {
  const r = await enroll({ name: 'No image' });
  isError(r, 400, 'MISSING_IMAGE', 'image');
  assert.match(r.body.error.message, /^The field image is missing: send /);
  const j = await call('POST', '/api/v1/detect', { json: {} });
  isError(j, 400, 'MISSING_IMAGE', 'image');
  assert.doesNotMatch(j.body.error.message, /image image/);
  const u = await call('POST', '/api/v1/detect',
    { form: { image: { data: Buffer.from('not an image at all') } } });
  isError(u, 415, 'UNSUPPORTED_IMAGE_FORMAT', 'image');
  assert.match(u.body.error.message, /^The field image holds an image /);
});

test('N9: faces_detected counts the faces found, not the ones listed',
  async () => {
    const photo = good.photo;
    const n = detect(photo).faces.length;
    assert.ok(n >= 2, 'the sample photo shows one face');
    const r = await call('POST', '/api/v1/identify',
      { form: { image: part(photo), max_faces: '1' } });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.data.faces.length, 1);
    assert.equal(r.body.data.faces_detected, n);
    const all = await call('POST', '/api/v1/identify',
      { form: { image: part(photo) } });
    assert.equal(all.body.data.faces_detected, n);
  });

test('N4: a multipart batch item naming no part is MISSING_IMAGE', async () => {
  const before = await count();
  const r = await call('POST', '/api/v1/faces/batch', { form: {
    items: JSON.stringify([{ image: 'nope', name: 'x' },
      { image: 'abcd', name: 'y' }, { image: 'items', name: 'z' }]),
  } });
  assert.equal(r.status, 200, r.text);
  for (const [i, p] of ['nope', 'abcd', 'items'].entries()) {
    const e = r.body.data.results[i].error;
    assert.equal(e.code, 'MISSING_IMAGE', r.text);
    assert.equal(e.param, 'image');
    assert.ok(e.message.includes(`'${p}'`), e.message);
  }
  assert.equal(await count(), before);
});

test('N7: one rule for bodies, numbers, unknown fields and repeated parts',
  async () => {
    // A JSON body that is not an object: INVALID_JSON on every route.
    for (const p of ['/api/v1/faces', '/api/v1/detect', '/api/v1/identify',
      '/api/v1/faces/batch-delete']) {
      for (const json of ['', '[]', '"x"', '3', 'null']) {
        const r = await call('POST', p, { json });
        isError(r, 400, 'INVALID_JSON', 'body');
      }
    }
    const arr = await call('POST', '/api/v1/faces/batch', { json: '"x"' });
    isError(arr, 400, 'INVALID_JSON', 'body');

    // Numbers in forms and queries: plain decimal only.
    for (const bad of ['0x1p-2', '+0.5', ' 0.5', '0.5 ', '1e-1', 'nan',
      'inf', '.5', '5.']) {
      const r = await call('POST', '/api/v1/identify',
        { form: { image: part(good.file), threshold: bad } });
      isError(r, 400, 'INVALID_PARAMETER', 'threshold');
    }
    for (const bad of ['+5', '%2010', '10%20', '0x10', '5.0']) {
      const r = await call('GET', `/api/v1/faces?limit=${bad}`);
      isError(r, 400, 'INVALID_PARAMETER', 'limit');
      const m = await call('POST', '/api/v1/identify',
        { form: { image: part(good.file), max_faces: bad } });
      isError(m, 400, 'INVALID_PARAMETER', 'max_faces');
    }
    const ok = await call('POST', '/api/v1/identify',
      { form: { image: part(good.file), threshold: '0.5', max_faces: '2' } });
    assert.equal(ok.status, 200, ok.text);

    // Enroll refuses fields it does not know, as PATCH does.
    const img = fs.readFileSync(good.file).toString('base64');
    const before = await count();
    const unk = await call('POST', '/api/v1/faces',
      { json: { image: img, name: 'X', nmae: 'typo' } });
    isError(unk, 400, 'INVALID_PARAMETER', 'nmae');

    // A field sent twice in a form is refused, as duplicate JSON keys are.
    const fd = new FormData();
    fd.append('name', 'A');
    fd.append('name', 'B');
    fd.append('image', new Blob([fs.readFileSync(good.file)]), 'a.jpg');
    const twice = await fetch(`${srv.base}/api/v1/faces`,
      { method: 'POST', headers: { 'X-API-Key': tenant.key }, body: fd });
    const tb = await twice.json();
    assert.equal(twice.status, 400);
    assert.equal(tb.error.code, 'INVALID_MULTIPART');
    assert.equal(tb.error.param, 'name');
    assert.equal(await count(), before);
  });

test('N6: a one-character multipart boundary: quoted it works, bare it is ' +
  'refused with a message that says how to fix it', async () => {
  const body = (b) => Buffer.concat([
    Buffer.from(`--${b}\r\nContent-Disposition: form-data; name="image"; ` +
      'filename="a.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'),
    fs.readFileSync(good.file), Buffer.from(`\r\n--${b}--\r\n`)]);
  const quoted = await call('POST', '/api/v1/detect', { raw: body('x'),
    contentType: 'multipart/form-data; boundary="x"' });
  assert.equal(quoted.status, 200, quoted.text);
  const two = await call('POST', '/api/v1/detect', { raw: body('xy'),
    contentType: 'multipart/form-data; boundary=xy' });
  assert.equal(two.status, 200, two.text);
  const bare = await call('POST', '/api/v1/detect', { raw: body('x'),
    contentType: 'multipart/form-data; boundary=x' });
  isError(bare, 400, 'INVALID_MULTIPART', 'body');
  assert.match(bare.body.error.message, /boundary="x"/);
});
