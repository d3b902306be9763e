// API keys in force over real HTTP: rate limits (case S5 and the exact
// 429 answer, which costs no engine time), IP allowlists with IPv4 and
// IPv6 (case S3, a server on [::1]), chains of trusted proxies,
// revocation of a key while the server runs, allowlists checked when a
// key is made, and no key ever written to the server's logs.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { after, before, test } from 'node:test';
import {
  admin, client, freePort, frapi, newTenant as makeTenant, part, photosDir,
  root, startServer, tempDir,
} from './lib/faceenv.mjs';

let dataDir;
let srv;

// Every key made here, so that the last test can look for them in the
// main server's logs.
const keysMade = [];
function newTenant(...args) {
  const t = makeTenant(...args);
  keysMade.push(t.key);
  return t;
}

before(async () => {
  dataDir = tempDir();
  // Every event at debug level and the access log, both captured, so
  // that the logs the keys could leak into are as full as they get.
  srv = await startServer(dataDir, {
    env: { FRAPI_TRUSTED_PROXIES: '10.0.0.0/8', FRAPI_LOG_LEVEL: 'debug' },
    args: ['--access-log', '-'],
  });
});

after(async () => {
  await srv?.stop();
});

// Waits, if needed, so that the next few seconds stay inside one minute:
// the sliding window counts by minute.
async function awayFromMinuteEnd() {
  const s = new Date().getUTCSeconds();
  if (s >= 55) await new Promise((r) => setTimeout(r, (61 - s) * 1000));
}

test('S5: 10 x N concurrent requests on one key let exactly N through',
  async () => {
    const N = 10;
    const t = newTenant(dataDir, 's5', ['--rpm', String(N)]);
    const call = client(srv.base, t.key);
    await awayFromMinuteEnd();
    const sentAt = Date.now();
    const answers = await Promise.all(Array.from({ length: 10 * N },
      () => call('GET', '/api/v1/faces')));
    const ok = answers.filter((a) => a.status === 200);
    const refused = answers.filter((a) => a.status === 429);
    assert.equal(ok.length, N);
    assert.equal(refused.length, 9 * N);
    for (const a of refused) {
      const n = Number(a.headers.get('retry-after'));
      // All N were counted in this minute: one more fits once this minute
      // has ended and its N, now the previous minute's, have decayed to
      // N - 1, i.e. 60/N seconds into the next minute.  That can be more
      // than 60 seconds away.
      const e = (sentAt % 60000) / 1000;
      const expected = (60 - e) + 60 / N;
      assert.ok(Number.isInteger(n) && Math.abs(n - expected) <= 2,
        `Retry-After ${n}, expected about ${expected.toFixed(1)}`);
      assert.deepEqual(Object.keys(a.body).sort(), ['error', 'success']);
      assert.equal(a.body.success, false);
      assert.equal(a.body.error.code, 'RATE_LIMIT_EXCEEDED');
      assert.equal(a.body.error.message,
        `Rate limit exceeded. Try again in ${n} seconds.`);
      // Exactly the documented answer: nothing more in the error object,
      // the members in the documented order; the request id is a header.
      const documented = { success: false, error: {
        code: 'RATE_LIMIT_EXCEEDED',
        message: `Rate limit exceeded. Try again in ${n} seconds.` } };
      assert.deepEqual(a.body, documented);
      assert.equal(a.text, JSON.stringify(documented));
      assert.match(a.headers.get('x-request-id') ?? '', /^[0-9A-Z]{26}$/);
      assert.equal(a.headers.get('x-ratelimit-limit'), String(N));
      assert.equal(a.headers.get('x-ratelimit-remaining'), '0');
    }
  });

// The number of engine stages run so far, from /metrics.
async function engineStages() {
  const text = await (await fetch(`${srv.base}/metrics`)).text();
  let n = 0;
  for (const m of text.matchAll(
    /^frapi_engine_stage_seconds_count\{[^}]*\} (\d+)$/gm)) {
    n += Number(m[1]);
  }
  return n;
}

// POSTs photo as the multipart field image with Expect: 100-continue,
// sending the photo only when the server asks for it.  Resolves with the
// status, headers and text of the answer, and whether the photo was sent.
function postPhotoExpecting(key, p, photo) {
  const boundary = 'frapi-e2e-5b2f0c';
  const body = Buffer.concat([
    Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; ` +
      'name="image"; filename="photo.jpg"\r\n' +
      'Content-Type: image/jpeg\r\n\r\n'),
    fs.readFileSync(photo),
    Buffer.from(`\r\n--${boundary}--\r\n`),
  ]);
  return new Promise((resolve, reject) => {
    const req = http.request(srv.base + p, { method: 'POST', headers: {
      'X-API-Key': key, Expect: '100-continue',
      'Content-Type': `multipart/form-data; boundary=${boundary}`,
      'Content-Length': body.length,
    } });
    let sent = false;
    req.on('continue', () => { sent = true; req.end(body); });
    req.on('response', (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { text += d; });
      res.on('end', () => {
        resolve({ status: res.statusCode, headers: res.headers, text, sent });
        req.destroy();
      });
    });
    req.on('error', reject);
    req.flushHeaders();
  });
}

test('a request refused by the rate limit costs no engine time', async () => {
  const t = newTenant(dataDir, 'no-engine', ['--rpm', '1']);
  const call = client(srv.base, t.key);
  const photo = path.join(photosDir, 'sample1.jpg');
  await awayFromMinuteEnd();

  const start = await engineStages();
  const ok = await call('POST', '/api/v1/detect',
    { form: { image: part(photo) } });
  assert.equal(ok.status, 200, ok.text);
  assert.ok(ok.body.data.faces.length >= 1);
  const afterOk = await engineStages();
  assert.ok(afterOk > start, `engine stages ${start} -> ${afterOk}`);

  // Refused before the photo is even sent...
  const refused = await postPhotoExpecting(t.key, '/api/v1/detect', photo);
  assert.equal(refused.status, 429, refused.text);
  assert.equal(refused.sent, false);
  assert.equal(JSON.parse(refused.text).error.code, 'RATE_LIMIT_EXCEEDED');
  assert.ok(Number(refused.headers['retry-after']) >= 1);

  // ...and, from a client that sends it at once, read and dropped unseen:
  // the client gets its 429 and Retry-After (never a reset connection),
  // photo after photo.
  for (let n = 1; n <= 6; n++) {
    const sentAnyway = await call('POST', '/api/v1/detect',
      { form: { image: part(path.join(photosDir, `sample${n}.jpg`)) } });
    assert.equal(sentAnyway.status, 429, sentAnyway.text);
    assert.equal(sentAnyway.body.error.code, 'RATE_LIMIT_EXCEEDED');
    assert.ok(Number(sentAnyway.headers.get('retry-after')) >= 1);
  }
  assert.equal(await engineStages(), afterOk);
});

// One raw request over its own connection; resolves with the status
// and the body.
function rawRequest(text) {
  const url = new URL(srv.base);
  return new Promise((resolve, reject) => {
    const sock = net.connect(Number(url.port), url.hostname, () =>
      sock.end(text));
    let got = '';
    sock.on('data', (d) => { got += d; });
    sock.on('error', reject);
    sock.on('close', () => {
      const status = Number(got.split(' ')[1]);
      const body = got.slice(got.indexOf('\r\n\r\n') + 4);
      resolve({ status, body });
    });
  });
}

test('two X-API-Key headers are refused, whichever is valid', async () => {
  const a = newTenant(dataDir, 'dup-a');
  const b = newTenant(dataDir, 'dup-b');
  for (const pair of [[a.key, b.key], [a.key, 'fr_live_nope'],
    ['fr_live_nope', a.key], [a.key, a.key]]) {
    const r = await rawRequest('GET /api/v1/faces HTTP/1.1\r\nHost: x\r\n' +
      `X-API-Key: ${pair[0]}\r\nX-API-Key: ${pair[1]}\r\n` +
      'Connection: close\r\n\r\n');
    assert.equal(r.status, 401, r.body);
    const e = JSON.parse(r.body).error;
    assert.equal(e.code, 'INVALID_API_KEY');
    assert.equal(e.param, 'X-API-Key');
    assert.match(e.message, /exactly one/);
  }
  // One header still works.
  const one = await rawRequest('GET /api/v1/faces HTTP/1.1\r\nHost: x\r\n' +
    `X-API-Key: ${a.key}\r\nConnection: close\r\n\r\n`);
  assert.equal(one.status, 200, one.body);
});

test('every keyed answer carries the X-RateLimit headers', async () => {
  const t = newTenant(dataDir, 'headers', ['--rpm', '50']);
  const call = client(srv.base, t.key);
  await awayFromMinuteEnd();
  const seen = [];
  for (const p of ['/api/v1/faces', '/api/v1/faces/face_01M8YNOSUCHFACE0000000000',
    '/api/v1/faces?limit=abc']) {
    const a = await call('GET', p);
    seen.push(a.status);
    assert.equal(a.headers.get('x-ratelimit-limit'), '50');
    const reset = Number(a.headers.get('x-ratelimit-reset'));
    assert.ok(reset * 1000 > Date.now() && reset % 60 === 0, `reset ${reset}`);
  }
  assert.deepEqual(seen, [200, 404, 400]);
  const remaining = Number((await call('GET', '/api/v1/faces'))
    .headers.get('x-ratelimit-remaining'));
  assert.equal(remaining, 50 - 4);

  // Another key's budget is its own; no key, no headers.
  const other = client(srv.base, newTenant(dataDir, 'h2', ['--rpm', '7']).key);
  assert.equal((await other('GET', '/api/v1/faces'))
    .headers.get('x-ratelimit-remaining'), '6');
  const none = await client(srv.base, null)('GET', '/api/v1/faces');
  assert.equal(none.status, 401);
  assert.equal(none.headers.get('x-ratelimit-limit'), null);
});

test('S3: forwarded headers from an untrusted peer do not pass an allowlist',
  async () => {
    const t = newTenant(dataDir, 's3', ['--allow', '203.0.113.0/24',
      '--allow', '2001:db8::/32']);
    const call = client(srv.base, t.key);
    for (const headers of [
      { 'X-Forwarded-For': '203.0.113.5' },
      { 'X-Real-IP': '203.0.113.5' },
      { Forwarded: 'for=203.0.113.5' },
      { 'X-Forwarded-For': '203.0.113.5', 'X-Real-IP': '203.0.113.5',
        Forwarded: 'for="[2001:db8::1]"' },
    ]) {
      const a = await call('GET', '/api/v1/faces', { headers });
      assert.equal(a.status, 403, JSON.stringify(headers));
      assert.equal(a.body.error.code, 'IP_NOT_ALLOWED');
      assert.match(a.body.error.message, /127\.0\.0\.1/);
    }

    // The same server lets the key in from an allowed address.
    const local = newTenant(dataDir, 's3b', ['--allow', '127.0.0.0/8']);
    assert.equal((await client(srv.base, local.key)('GET', '/api/v1/faces'))
      .status, 200);
  });

test('a chain of trusted proxies: the right-most untrusted address counts',
  async () => {
    // This server trusts 127.0.0.1 (the test itself) and 10.0.0.0/8.
    const dir = tempDir();
    const t = newTenant(dir, 'chain', ['--allow', '203.0.113.0/24',
      '--allow', '2001:db8::/32']);
    const px = await startServer(dir, {
      env: { FRAPI_TRUSTED_PROXIES: '127.0.0.1, 10.0.0.0/8' },
    });
    try {
      const call = client(px.base, t.key);
      const cases = [
        [{}, 403],
        [{ 'X-Forwarded-For': '203.0.113.7' }, 200],
        [{ 'X-Forwarded-For': '198.51.100.1, 203.0.113.7, 10.2.3.4' }, 200],
        [{ 'X-Forwarded-For': '203.0.113.7, 198.51.100.1, 10.2.3.4' }, 403],
        [{ 'X-Forwarded-For': '203.0.113.7:4711' }, 200],
        [{ 'X-Forwarded-For': '[2001:db8::9]:443, 10.0.0.1' }, 200],
        [{ Forwarded: 'for="[2001:db8:cafe::17]:4711";proto=https' }, 200],
        [{ Forwarded: 'for=198.51.100.1, for=203.0.113.9' }, 200],
        [{ Forwarded: 'for=unknown' }, 403],
        [{ 'X-Forwarded-For': 'garbage, 10.0.0.1' }, 403],
        [{ 'X-Forwarded-For': '203.0.113.7', Forwarded: 'for=198.51.100.1' },
          403],
        [{ 'X-Real-IP': '203.0.113.7' }, 403],
      ];
      for (const [headers, want] of cases) {
        const a = await call('GET', '/api/v1/faces', { headers });
        assert.equal(a.status, want, `${JSON.stringify(headers)}: ${a.text}`);
        if (want === 403) assert.equal(a.body.error.code, 'IP_NOT_ALLOWED');
      }
    } finally {
      await px.stop();
    }
  });

// Starts the server on [::1]; resolves once it answers.
async function startOnIPv6(dir) {
  const port = await freePort();
  const proc = spawn(frapi, ['serve', '--listen', `[::1]:${port}`,
    '--data-dir', dir, '--access-log', ''], {
    cwd: root, env: { ...process.env, FRAPI_LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  proc.stderr.on('data', (d) => { log += d; });
  const base = `http://[::1]:${port}`;
  const deadline = Date.now() + 30000;
  for (;;) {
    try {
      if ((await fetch(`${base}/readyz`)).status === 200) break;
    } catch { /* not yet */ }
    if (proc.exitCode !== null || Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw new Error(`no server on [::1]:\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const exited = new Promise((r) => proc.once('exit', r));
  return {
    base,
    async stop() { proc.kill('SIGTERM'); await exited; },
  };
}

test('IPv6 allowlists on a server listening on [::1]', async () => {
  const dir = tempDir();
  const exact = newTenant(dir, 'v6a', ['--allow', '::1/128']);
  const range = newTenant(dir, 'v6b', ['--allow', '::/127']);
  const other = newTenant(dir, 'v6c', ['--allow', '2001:db8::/32']);
  const v4only = newTenant(dir, 'v6d', ['--allow', '127.0.0.0/8']);
  const open = newTenant(dir, 'v6e');
  const s6 = await startOnIPv6(dir);
  try {
    const get = async (t) => client(s6.base, t.key)('GET', '/api/v1/faces');
    assert.equal((await get(exact)).status, 200);
    assert.equal((await get(range)).status, 200);
    assert.equal((await get(open)).status, 200);
    const refused = await get(other);
    assert.equal(refused.status, 403);
    assert.equal(refused.body.error.code, 'IP_NOT_ALLOWED');
    assert.match(refused.body.error.message, /::1/);
    assert.equal((await get(v4only)).status, 403);
  } finally {
    await s6.stop();
  }
});

test('a revoked key fails at once, on the running server', async () => {
  const t = newTenant(dataDir, 'revoke');
  const call = client(srv.base, t.key);
  assert.equal((await call('GET', '/api/v1/faces')).status, 200);
  const out = admin(dataDir, 'keys', 'revoke', t.keyId);
  assert.equal(out.revoked, true);
  assert.equal(out.revoked_before, false);
  const a = await call('GET', '/api/v1/faces');
  assert.equal(a.status, 401);
  assert.equal(a.body.error.code, 'API_KEY_REVOKED');
  assert.equal(admin(dataDir, 'keys', 'revoke', t.keyId).revoked_before, true);
  assert.throws(() => admin(dataDir, 'keys', 'revoke', 'key_nosuchkey'),
    (e) => e.status === 3);
});

test('malformed allowlist entries are refused when the key is made',
  async () => {
    const col = admin(dataDir, 'collections', 'create', 'bad-allow');
    for (const entry of ['10.0.0.0/33', '1.2.3', '::g', '', '10.0.0.1/8']) {
      let err;
      try {
        execFileSync(frapi, ['keys', 'create', '--collection', col.id,
          '--allow', entry, '--data-dir', dataDir],
        { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
      } catch (e) {
        err = e;
      }
      assert.ok(err, `entry "${entry}" was accepted`);
      assert.equal(err.status, 2);
      assert.ok(err.stderr.toString().includes(`"${entry}"`),
        err.stderr.toString());
    }
  });

test('last use is kept in memory and written at shutdown', async () => {
  const dir = tempDir();
  const t = newTenant(dir, 'last-use', ['--rpm', '30',
    '--allow', '127.0.0.1']);
  const fresh = admin(dir, 'keys', 'show', t.keyId);
  assert.equal(fresh.last_used_ms, 0);
  assert.equal(fresh.last_used_ip, null);
  assert.equal(fresh.rpm, 30);
  assert.deepEqual(fresh.allowed_ips, ['127.0.0.1']);

  // Without --rpm, create and show both name the default limit.
  const plain = admin(dir, 'keys', 'create', '--collection',
    t.collection.id);
  assert.equal(plain.rpm, 600);
  assert.equal(admin(dir, 'keys', 'show', plain.id).rpm, 600);
  // Thresholds print as the short decimals they are.
  const made = execFileSync(frapi, ['collections', 'create', 'Printed',
    '--threshold', '0.45', '--data-dir', dir], { cwd: root }).toString();
  assert.match(made, /"match_threshold": 0\.45,/);
  assert.equal(fresh.key, undefined);

  const s = await startServer(dir);
  const t0 = Date.now();
  const call = client(s.base, t.key);
  for (let i = 0; i < 3; i++) {
    assert.equal((await call('GET', '/api/v1/faces')).status, 200);
  }
  await s.stop();
  const used = admin(dir, 'keys', 'show', t.keyId);
  assert.equal(used.last_used_ip, '127.0.0.1');
  assert.ok(used.last_used_ms >= t0 - 1000 && used.last_used_ms <= Date.now(),
    `${used.last_used_ms}`);
  assert.equal(used.revoked_ms, 0);
});

test('no API key is ever written to the server\'s logs', async () => {
  // Besides the requests above (admitted, refused by the limit, by the
  // allowlist, revoked), keys the server cannot accept: a wrong secret
  // behind a real prefix, and a key of the wrong shape.
  const t = newTenant(dataDir, 'log-check');
  const wrong = `${t.key.slice(0, -4)}${t.key.slice(-4) === 'AAAA'
    ? 'BBBB' : 'AAAA'}`;
  keysMade.push(wrong);
  for (const k of [wrong, `${t.key}x`, t.key.slice(0, -1)]) {
    const a = await client(srv.base, k)('GET', '/api/v1/faces');
    assert.equal(a.status, 401, a.text);
  }
  assert.equal((await client(srv.base, t.key)('GET', '/api/v1/faces'))
    .status, 200);

  // The access log and the debug events reached the capture.
  const log = srv.log();
  assert.match(log, / route=\/api\/v1\/faces .*status=401/);
  assert.match(log, / debug /);
  assert.ok(keysMade.length >= 8, `${keysMade.length} keys`);
  for (const key of keysMade) {
    const secret = key.slice('fr_live_'.length + 8);
    assert.equal(secret.length, 20);
    assert.ok(!log.includes(key), `the key ${key} is in the log`);
    assert.ok(!log.includes(secret), `the secret of ${key} is in the log`);
  }
  assert.doesNotMatch(log, /fr_live_[0-9A-Za-z]{20,}/);
});
