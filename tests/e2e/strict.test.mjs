// Fields a route does not take, route by route, over real HTTP: an
// unknown JSON member and an unknown multipart field are 400
// INVALID_PARAMETER naming the field (a refused enroll stores nothing),
// an unknown member of a batch item fails that item alone, batch-delete
// names a misspelt selector, registration refuses a role, the auth
// routes refuse extra members, and the query string of GET /faces is
// read strictly.  Also: threshold -0 is echoed as 0, and the 415 message
// lists HEIF and AVIF exactly when the server reads them.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, test } from 'node:test';
import {
  client, faceFixtures, newTenant, part, startServer, tempDir,
} from './lib/faceenv.mjs';
import * as authenv from './lib/authenv.mjs';

let srv;
let call;
let good; // a face crop that enrolls
let img; // its bytes as base64
let mail;
let asrv;

before(async () => {
  const dataDir = tempDir();
  const tenant = newTenant(dataDir, 'Strict');
  const fx = faceFixtures();
  srv = await startServer(dataDir);
  call = client(srv.base, tenant.key);
  for (const f of fx.faces) {
    const r = await call('POST', '/api/v1/faces',
      { form: { image: part(f.file), name: 'probe' } });
    if (r.status !== 201) continue;
    good = f;
    const d = await call('DELETE', `/api/v1/faces/${r.body.data.id}`);
    assert.equal(d.status, 200, d.text);
    break;
  }
  assert.ok(good, 'no usable face crop');
  img = fs.readFileSync(good.file).toString('base64');

  mail = await authenv.startMailServer();
  asrv = await authenv.startServer({
    FRAPI_SMTP_HOST: '127.0.0.1',
    FRAPI_SMTP_PORT: String(mail.port),
    FRAPI_SMTP_STARTTLS: 'false',
    FRAPI_SMTP_FROM: 'FR-APIaaS <noreply@frapi.test>',
  });
});

after(async () => {
  await srv?.stop();
  await asrv?.stop();
  await mail?.stop();
});

// Asserts an error answer: status, code, param, a message naming param.
function isError(r, status, code, param) {
  assert.equal(r.status, status, r.text);
  assert.equal(r.body.success, false, r.text);
  assert.equal(r.body.error.code, code, r.text);
  assert.equal(r.body.error.param, param, r.text);
  assert.equal(typeof r.body.error.message, 'string');
  assert.equal(r.body.error.request_id, r.headers.get('x-request-id'));
}

// The refusal of an unknown field: named, and the known ones listed.
function isUnknown(r, field, takes) {
  isError(r, 400, 'INVALID_PARAMETER', field);
  assert.ok(r.body.error.message.includes(field), r.body.error.message);
  assert.ok(r.body.error.message.includes(takes), r.body.error.message);
}

async function count() {
  const r = await call('GET', '/api/v1/faces?limit=500');
  assert.equal(r.status, 200, r.text);
  return r.body.data.faces.length;
}

const enrollFields = 'image, name, external_id, metadata, face_selection '
  + 'and check_liveness';

test('enroll: an unknown member or field is refused and nothing is stored',
  async () => {
    const before = await count();
    isUnknown(await call('POST', '/api/v1/faces',
      { json: { image: img, name: 'Ann', foo: 1 } }), 'foo', enrollFields);
    isUnknown(await call('POST', '/api/v1/faces',
      { form: { image: part(good.file), name: 'Ann', foo: '1' } }),
    'foo', enrollFields);
    // A file part of another name is a field too.
    isUnknown(await call('POST', '/api/v1/faces', { form: {
      image: part(good.file), name: 'Ann', photo: part(good.file) } }),
    'photo', enrollFields);
    // A near miss of a real field is not taken for it.
    isUnknown(await call('POST', '/api/v1/faces',
      { form: { image: part(good.file), name: 'Ann', externalid: 'e1' } }),
    'externalid', enrollFields);
    assert.equal(await count(), before);

    // Without its image, the image is what the answer names.
    isError(await call('POST', '/api/v1/faces',
      { form: { name: 'Ann', foo: '1' } }), 400, 'MISSING_IMAGE', 'image');

    // The same requests without the extra field are taken.
    const ok = await call('POST', '/api/v1/faces',
      { form: { image: part(good.file), name: 'Ann', external_id: 'e1' } });
    assert.equal(ok.status, 201, ok.text);
    assert.equal(await count(), before + 1);
    const id = ok.body.data.id;

    // PATCH takes name, external_id and metadata only.
    isUnknown(await call('PATCH', `/api/v1/faces/${id}`,
      { json: { name: 'Bo', image: img } }), 'image',
    'name, external_id and metadata');
    const face = await call('GET', `/api/v1/faces/${id}`);
    assert.equal(face.body.data.name, 'Ann');
    const d = await call('DELETE', `/api/v1/faces/${id}`);
    assert.equal(d.status, 200, d.text);
  });

test('verify, identify, detect, liveness: unknown fields are refused',
  async () => {
    const routes = [
      ['/api/v1/verify', { image_a: true, image_b: true },
        'image_a, image_b, face_id, external_id and threshold'],
      ['/api/v1/identify', { image: true },
        'image, max_faces, top_k, threshold and group_by'],
      ['/api/v1/detect', { image: true }, 'image and max_faces'],
      ['/api/v1/liveness', { image: true }, 'image and max_faces'],
    ];
    for (const [route, images, takes] of routes) {
      const json = {};
      const form = {};
      for (const k of Object.keys(images)) {
        json[k] = img;
        form[k] = part(good.file);
      }
      isUnknown(await call('POST', route, { json: { ...json, foo: 1 } }),
        'foo', takes);
      isUnknown(await call('POST', route, { form: { ...form, foo: '1' } }),
        'foo', takes);
      isUnknown(await call('POST', route,
        { form: { ...form, extra: part(good.file) } }), 'extra', takes);
      const ok = await call('POST', route, { form });
      assert.equal(ok.status, 200, `${route}: ${ok.text}`);
    }

    // The typo topk no longer drops the option silently.
    isUnknown(await call('POST', '/api/v1/identify',
      { form: { image: part(good.file), topk: '1' } }), 'topk',
    'top_k');
    isUnknown(await call('POST', '/api/v1/identify',
      { json: { image: img, topK: 1 } }), 'topK', 'top_k');
  });

test('faces/batch: unknown top-level fields, stray parts and item members',
  async () => {
    const before = await count();
    isUnknown(await call('POST', '/api/v1/faces/batch', { json: {
      items: [{ image: img, name: 'Ann' }], foo: 1 } }), 'foo', 'items');
    // A misspelt items is named, not reported as missing items.
    isUnknown(await call('POST', '/api/v1/faces/batch', { json: {
      itemz: [{ image: img, name: 'Ann' }] } }), 'itemz', 'items');
    const items = JSON.stringify([{ image: 'p1', name: 'Ann' }]);
    isUnknown(await call('POST', '/api/v1/faces/batch', { form: {
      items, p1: part(good.file), foo: '1' } }), 'foo',
    'the file parts its items name');
    isUnknown(await call('POST', '/api/v1/faces/batch', { form: {
      items, p1: part(good.file), p2: part(good.file) } }), 'p2',
    'the file parts its items name');
    assert.equal(await count(), before);

    // An item with an unknown member fails alone; the others go on.
    const r = await call('POST', '/api/v1/faces/batch', { json: { items: [
      { image: img, name: 'Ann', foo: 1 },
      { image: img, name: 'Ann', externalid: 'x' },
      { image: img, name: 'Ann', external_id: 'strict-batch' },
    ] } });
    assert.equal(r.status, 200, r.text);
    const [a, b, c] = r.body.data.results;
    for (const [res, field] of [[a, 'foo'], [b, 'externalid']]) {
      assert.equal(res.success, false, r.text);
      assert.equal(res.status, 400);
      assert.equal(res.error.code, 'INVALID_PARAMETER');
      assert.equal(res.error.param, field);
      assert.ok(res.error.message.includes(field), res.error.message);
      assert.ok(res.error.message.includes(enrollFields), res.error.message);
    }
    assert.equal(c.success, true, r.text);
    assert.equal(r.body.data.succeeded, 1);
    assert.equal(await count(), before + 1);
    const d = await call('POST', '/api/v1/faces/batch-delete',
      { json: { external_ids: ['strict-batch'] } });
    assert.equal(d.body.data.deleted_count, 1, d.text);
  });

test('identify/batch: unknown top-level fields and item members',
  async () => {
    const takes = 'items, max_faces, top_k and threshold';
    isUnknown(await call('POST', '/api/v1/identify/batch', { json: {
      items: [{ image: img }], foo: 1 } }), 'foo', takes);
    // group_by is an option of POST /identify only.
    isUnknown(await call('POST', '/api/v1/identify/batch', { json: {
      items: [{ image: img }], group_by: 'external_id' } }), 'group_by',
    takes);
    isUnknown(await call('POST', '/api/v1/identify/batch', { form: {
      items: JSON.stringify([{ image: 'p1' }]), p1: part(good.file),
      topk: '1' } }), 'topk', takes);
    const r = await call('POST', '/api/v1/identify/batch', { json: {
      items: [{ image: img, top_k: 1 }, { image: img }], top_k: 1 } });
    assert.equal(r.status, 200, r.text);
    const [a, b] = r.body.data.results;
    assert.equal(a.success, false, r.text);
    assert.equal(a.status, 400);
    assert.equal(a.error.code, 'INVALID_PARAMETER');
    assert.equal(a.error.param, 'top_k');
    assert.equal(b.success, true, r.text);
  });

test('batch-delete: an unknown member is named, never an empty selector',
  async () => {
    const e = await call('POST', '/api/v1/faces',
      { form: { image: part(good.file), name: 'Keep', external_id: 'keep' } });
    assert.equal(e.status, 201, e.text);
    const id = e.body.data.id;
    const takes = 'ids and external_ids';
    isUnknown(await call('POST', '/api/v1/faces/batch-delete',
      { json: { ids: [id], foo: 1 } }), 'foo', takes);
    isUnknown(await call('POST', '/api/v1/faces/batch-delete',
      { json: { idz: [id] } }), 'idz', takes);
    isUnknown(await call('POST', '/api/v1/faces/batch-delete',
      { json: { external_id: ['keep'] } }), 'external_id', takes);
    const still = await call('GET', `/api/v1/faces/${id}`);
    assert.equal(still.status, 200, still.text);
    const d = await call('POST', '/api/v1/faces/batch-delete',
      { json: { ids: [id] } });
    assert.deepEqual(d.body.data.deleted, [id]);
  });

test('GET /faces: an empty external_id or cursor is a 400, not "all"',
  async () => {
    const e = await call('POST', '/api/v1/faces',
      { form: { image: part(good.file), name: 'Listed' } });
    assert.equal(e.status, 201, e.text);
    isError(await call('GET', '/api/v1/faces?external_id='), 400,
      'INVALID_PARAMETER', 'external_id');
    isError(await call('GET', '/api/v1/faces?cursor='), 400,
      'INVALID_CURSOR', 'cursor');
    isError(await call('GET', '/api/v1/faces?limit='), 400,
      'INVALID_PARAMETER', 'limit');
    const all = await call('GET', '/api/v1/faces');
    assert.equal(all.status, 200, all.text);
    const d = await call('DELETE', `/api/v1/faces/${e.body.data.id}`);
    assert.equal(d.status, 200, d.text);
  });

test('GET /faces and export: an unknown or repeated query parameter is a 400',
  async () => {
    isError(await call('GET', '/api/v1/faces?limitt=5'), 400,
      'INVALID_PARAMETER', 'limitt');
    isError(await call('GET', '/api/v1/faces?limit=1&limit=2'), 400,
      'INVALID_PARAMETER', 'limit');
    isError(await call('GET', '/api/v1/faces?external_id'), 400,
      'INVALID_PARAMETER', 'external_id');
    isError(await call('GET', '/api/v1/faces/export?fromat=csv'), 400,
      'INVALID_PARAMETER', 'fromat');
    isError(await call('GET', '/api/v1/faces/export?format=csv&format=ndjson'),
      400, 'INVALID_PARAMETER', 'format');
    // The known ones, once each, still work.
    const ok = await call('GET', '/api/v1/faces?limit=5&external_id=x');
    assert.equal(ok.status, 200, ok.text);
    const ex = await call('GET', '/api/v1/faces/export?format=csv');
    assert.equal(ex.status, 200, ex.text);
  });

test('threshold -0 is taken as 0 and echoed as 0', async () => {
  const json = `{"image_a": "${img}", "image_b": "${img}", "threshold": -0.0}`;
  for (const r of [
    await call('POST', '/api/v1/verify', { json }),
    await call('POST', '/api/v1/verify', { form: {
      image_a: part(good.file), image_b: part(good.file), threshold: '-0' } }),
    await call('POST', '/api/v1/identify',
      { form: { image: part(good.file), threshold: '-0' } }),
  ]) {
    assert.equal(r.status, 200, r.text);
    assert.ok(Object.is(r.body.data.threshold, 0), r.text);
    assert.doesNotMatch(r.text, /"threshold":\s*-0/);
  }
});

test('the 415 message lists HEIF and AVIF exactly when they are read',
  async () => {
    // An ISO box that says HEIF: 415 when this server cannot read HEIF,
    // a decoder error when it can.
    const heif = Buffer.concat([Buffer.from([0, 0, 0, 16]),
      Buffer.from('ftypheic'), Buffer.alloc(4), Buffer.alloc(64, 7)]);
    const h = await call('POST', '/api/v1/detect',
      { form: { image: { data: heif, filename: 'x.heic' } } });
    const reads = h.status !== 415;
    const pdf = await call('POST', '/api/v1/detect',
      { form: { image: { data: Buffer.from('%PDF-1.4 not a photo') } } });
    isError(pdf, 415, 'UNSUPPORTED_IMAGE_FORMAT', 'image');
    assert.ok(pdf.body.error.message.endsWith(reads
      ? 'send JPEG, PNG, WebP, GIF, BMP, TIFF, HEIF or AVIF.'
      : 'send JPEG, PNG, WebP, GIF, BMP or TIFF.'), pdf.body.error.message);
  });

// The auth routes, as a dashboard client calls them.
async function auth(method, p, body, token) {
  const headers = {};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (token) headers.Authorization = `Bearer ${token}`;
  const r = await fetch(`${asrv.base}/api/v1/auth${p}`, { method, headers,
    body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  return { status: r.status, body: JSON.parse(text), text, headers: r.headers };
}

const PASSWORD = 'correct horse battery';

test('register refuses a role (or any other member) and creates nothing',
  async () => {
    const email = `strict.${process.pid}@example.com`;
    for (const extra of [{ role: 'admin' }, { organization_id: 'org_x' },
      { email_verified: true }]) {
      const field = Object.keys(extra)[0];
      isUnknown(await auth('POST', '/register',
        { email, password: PASSWORD, name: 'Eve', ...extra }), field,
      'email, password and name');
    }
    // Nothing was created: the address is still free.
    const ok = await auth('POST', '/register',
      { email, password: PASSWORD, name: 'Eve' });
    assert.equal(ok.status, 201, ok.text);
    assert.equal(ok.body.data.organization.role, 'owner');
  });

test('every auth route with a body refuses members it does not take',
  async () => {
    const cases = [
      ['/login', { email: 'a@example.com', password: PASSWORD },
        'email and password'],
      ['/2fa/verify', { challenge: 'c', code: '123456' },
        'challenge, code and recovery_code'],
      ['/refresh', { refresh_token: 'r' }, 'refresh_token'],
      ['/logout', { refresh_token: 'r' }, 'refresh_token'],
      ['/forgot-password', { email: 'a@example.com' }, 'email'],
      ['/resend-verification', { email: 'a@example.com' }, 'email'],
      ['/reset-password', { token: 't', password: PASSWORD },
        'token and password'],
    ];
    for (const [p, body, takes] of cases) {
      isUnknown(await auth('POST', p, { ...body, foo: 1 }), 'foo', takes);
    }

    // The signed-in routes, with a real session.
    const email = `strict2.${process.pid}@example.com`;
    const before = mail.count(email);
    const reg = await auth('POST', '/register',
      { email, password: PASSWORD, name: 'Sam' });
    assert.equal(reg.status, 201, reg.text);
    const msg = await mail.waitFor(email, { after: before });
    const link = msg.decoded.match(/https?:\/\/[^\s"<]+token=[A-Za-z0-9_-]{43}/);
    assert.ok(link, msg.decoded);
    assert.equal((await fetch(link[0])).status, 200);
    const li = await auth('POST', '/login', { email, password: PASSWORD });
    assert.equal(li.status, 200, li.text);
    const token = li.body.data.access_token;
    for (const [p, body, takes] of [
      ['/2fa/setup', { password: PASSWORD }, 'password'],
      ['/2fa/enable', { code: '123456' }, 'code'],
      ['/2fa/disable', { password: PASSWORD, code: '123456' },
        'password, code and recovery_code'],
    ]) {
      isUnknown(await auth('POST', p, { ...body, foo: 1 }, token), 'foo',
        takes);
    }
    // Logout without a body still works.
    const out = await auth('POST', '/logout', undefined, token);
    assert.equal(out.status, 200, out.text);
  });
