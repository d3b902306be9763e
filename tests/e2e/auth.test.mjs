// Accounts and dashboard sign-in over real HTTP against `frapi serve`,
// with a real SMTP server on loopback catching the mail and the tests
// following its links: register, verify, login, 2FA (case S2), refresh
// rotation and reuse (case S4), logout, sessions, password reset (replay,
// voiding, expiry), verification link expiry, same answers for known and
// unknown emails, forged tokens (case S1), throttling (also of parallel
// guesses), the audit trail, tokens stored only as digests, and mail
// through STARTTLS with credentials.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  dbFiles, dbQuery, forgeJwt, makeCertificate, serverSecret, startMailServer,
  startServer, stepNow, totpAt,
} from './lib/authenv.mjs';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const RESET_TTL_S = 4;
const WINDOW_S = 5;
const MAX_ACCOUNT = 4;
const MAX_ADDRESS = 12;
const PASSWORD = 'correct horse battery';

let mail;
let srv;
// Every secret the tests saw; none may appear in the server's logs.
const secrets = new Set([PASSWORD, 'a brand new password']);

before(async () => {
  mail = await startMailServer();
  srv = await startServer({
    FRAPI_SMTP_HOST: '127.0.0.1',
    FRAPI_SMTP_PORT: String(mail.port),
    FRAPI_SMTP_STARTTLS: 'false',
    FRAPI_SMTP_FROM: 'FR-APIaaS <noreply@frapi.test>',
    FRAPI_RESET_TOKEN_TTL_S: String(RESET_TTL_S),
    FRAPI_LOGIN_WINDOW_S: String(WINDOW_S),
    FRAPI_LOGIN_MAX_PER_ACCOUNT: String(MAX_ACCOUNT),
    FRAPI_LOGIN_MAX_PER_ADDRESS: String(MAX_ADDRESS),
    FRAPI_ACCESS_LOG: '-',
    FRAPI_LOG_LEVEL: 'debug',
  });
});

after(async () => {
  if (srv) await srv.stop();
  if (mail) await mail.stop();
});

// One call: JSON in, { status, body, headers } out.
async function call(method, url, { body, token, raw, headers = {} } = {}) {
  const h = { 'User-Agent': 'auth-e2e/1.0', ...headers };
  if (token) h.Authorization = `Bearer ${token}`;
  let payload;
  if (raw !== undefined) {
    payload = raw;
    h['Content-Type'] = 'application/json';
  } else if (body !== undefined) {
    payload = JSON.stringify(body);
    h['Content-Type'] = 'application/json';
  }
  const target = url.startsWith('http') ? url : `${srv.base}/api/v1/auth${url}`;
  const r = await fetch(target, { method, headers: h, body: payload });
  const text = await r.text();
  let parsed;
  try { parsed = JSON.parse(text); } catch { parsed = text; }
  return { status: r.status, body: parsed, headers: r.headers };
}

const post = (url, body, opts = {}) => call('POST', url, { body, ...opts });
const get = (url, opts = {}) => call('GET', url, opts);

// The token of the link in a mail (after quoted-printable decoding).
function linkOf(msg) {
  const m = msg.decoded.match(/https?:\/\/[^\s"<]+token=([A-Za-z0-9_-]{43})/);
  assert.ok(m, `no link in the mail:\n${msg.decoded}`);
  secrets.add(m[1]);
  return { url: m[0], token: m[1] };
}

let seq = 0;
const newEmail = (tag) => `${tag}.${process.pid}.${++seq}@example.com`;

// Registers email and follows its verification link.
async function registerVerified(email, name = 'Test User') {
  const before = mail.count(email);
  const r = await post('/register', { email, password: PASSWORD, name });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  const msg = await mail.waitFor(email, { after: before });
  const v = await get(linkOf(msg).url);
  assert.equal(v.status, 200, JSON.stringify(v.body));
  return r.body.data;
}

async function login(email, password = PASSWORD) {
  const r = await post('/login', { email, password });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  secrets.add(r.body.data.access_token);
  secrets.add(r.body.data.refresh_token);
  return r.body.data;
}

test('register, verification mail, verify once, then login', async () => {
  const email = newEmail('ann');
  const r = await post('/register', { email, password: PASSWORD, name: 'Ann Zoë' });
  assert.equal(r.status, 201);
  assert.equal(r.body.success, true);
  const u = r.body.data;
  assert.match(u.id, /^usr_/);
  assert.equal(u.email, email);
  assert.equal(u.name, 'Ann Zoë');
  assert.equal(u.email_verified, false);
  assert.match(u.organization.id, /^org_/);
  assert.equal(u.organization.role, 'owner');

  // The mail: plain text and HTML alternatives, a link with the token.
  const first = await mail.waitFor(email);
  assert.match(first.raw, /multipart\/alternative/);
  assert.match(first.raw, /text\/plain; charset=utf-8/);
  assert.match(first.raw, /text\/html; charset=utf-8/);
  assert.match(first.raw, /^Subject: Confirm your email address/m);
  assert.equal(first.from, 'noreply@frapi.test');

  // Login before verifying: refused with its own code.
  const early = await post('/login', { email, password: PASSWORD });
  assert.equal(early.status, 403);
  assert.equal(early.body.error.code, 'EMAIL_NOT_VERIFIED');

  // Resend: a new link, the old one voided.
  const again = await post('/resend-verification', { email });
  assert.equal(again.status, 202);
  const second = await mail.waitFor(email, { after: 1 });
  const oldLink = linkOf(first);
  const newLink = linkOf(second);
  assert.notEqual(oldLink.token, newLink.token);
  const stale = await get(oldLink.url);
  assert.equal(stale.status, 400);
  assert.equal(stale.body.error.code, 'INVALID_VERIFICATION_TOKEN');

  const ok = await get(newLink.url);
  assert.equal(ok.status, 200);
  assert.equal(ok.body.data.email_verified, true);
  const replay = await get(newLink.url);
  assert.equal(replay.status, 400);
  assert.equal(replay.body.error.code, 'INVALID_VERIFICATION_TOKEN');

  // Now the login answers the contract's shape.
  const t = await login(email);
  assert.equal(t.token_type, 'Bearer');
  assert.equal(t.expires_in, 3600);
  assert.equal(t.access_token.split('.').length, 3);
  assert.ok(t.refresh_token.length >= 43);
  const me = await get('/me', { token: t.access_token });
  assert.equal(me.status, 200);
  assert.equal(me.body.data.id, u.id);
  assert.equal(me.body.data.email_verified, true);

  // The server's token secret is readable by its owner only.
  const mode = fs.statSync(path.join(srv.dataDir, 'jwt.secret')).mode & 0o777;
  assert.equal(mode, 0o600);
});

test('registration input is checked field by field', async () => {
  const email = newEmail('dup');
  await registerVerified(email);
  const dup = await post('/register', {
    email: email.toUpperCase(), password: PASSWORD, name: 'Other' });
  assert.equal(dup.status, 409);
  assert.equal(dup.body.error.code, 'EMAIL_ALREADY_REGISTERED');

  const cases = [
    [{ email: newEmail('w'), password: '123456789', name: 'A' }, 'password', 'WEAK_PASSWORD'],
    [{ password: PASSWORD, name: 'A' }, 'email', 'INVALID_PARAMETER'],
    [{ email: 42, password: PASSWORD, name: 'A' }, 'email', 'INVALID_PARAMETER'],
    [{ email: 'not-an-address', password: PASSWORD, name: 'A' }, 'email', 'INVALID_PARAMETER'],
    [{ email: 'a@b.c\r\nBcc: x@y.z', password: PASSWORD, name: 'A' }, 'email', 'INVALID_PARAMETER'],
    [{ email: newEmail('n'), password: PASSWORD, name: '   ' }, 'name', 'INVALID_PARAMETER'],
    [{ email: newEmail('n'), password: PASSWORD }, 'name', 'INVALID_PARAMETER'],
    [{ email: newEmail('n'), password: PASSWORD, name: ['x'] }, 'name', 'INVALID_PARAMETER'],
    [{ email: newEmail('p'), password: 1234567890, name: 'A' }, 'password', 'INVALID_PARAMETER'],
  ];
  for (const [body, param, code] of cases) {
    const r = await post('/register', body);
    assert.equal(r.status, 400, JSON.stringify(body));
    assert.equal(r.body.error.code, code, JSON.stringify(body));
    assert.equal(r.body.error.param, param, JSON.stringify(body));
  }
  const bad = await call('POST', '/register', { raw: '{"email": ' });
  assert.equal(bad.status, 400);
  assert.equal(bad.body.error.code, 'INVALID_JSON');
});

test('wrong email and wrong password get the same answer', async () => {
  const email = newEmail('same');
  await registerVerified(email);
  const wrongPw = await post('/login', { email, password: 'not the password' });
  const noUser = await post('/login', { email: newEmail('ghost'), password: 'not the password' });
  assert.equal(wrongPw.status, 401);
  assert.equal(noUser.status, wrongPw.status);
  assert.equal(noUser.body.error.code, 'INVALID_CREDENTIALS');
  assert.equal(noUser.body.error.code, wrongPw.body.error.code);
  assert.equal(noUser.body.error.message, wrongPw.body.error.message);
  assert.equal(noUser.body.error.param, wrongPw.body.error.param);
});

test('S1: forged and broken access tokens get 401', async () => {
  const email = newEmail('s1');
  await registerVerified(email);
  const t = await login(email);
  const claims = JSON.parse(Buffer.from(t.access_token.split('.')[1], 'base64url'));
  assert.ok(claims.sub && claims.org && claims.sid && claims.jti);
  assert.equal(typeof claims.exp, 'number');

  // Control: a token we sign with the server's own key is accepted, so
  // every refusal below is about the one thing changed.
  const key = serverSecret(srv.dataDir);
  const now = Math.floor(Date.now() / 1000);
  const good = forgeJwt({ alg: 'HS256', typ: 'JWT' }, { ...claims, exp: now + 600 }, key);
  assert.equal((await get('/me', { token: good })).status, 200);

  const wrongKey = Buffer.alloc(32, 7);
  const forged = {
    'alg none': forgeJwt({ alg: 'none', typ: 'JWT' }, { ...claims, exp: now + 600 }),
    'wrong key': forgeJwt({ alg: 'HS256', typ: 'JWT' }, { ...claims, exp: now + 600 }, wrongKey),
    'past exp': forgeJwt({ alg: 'HS256', typ: 'JWT' }, { ...claims, exp: now - 10 }, key),
    'no exp': forgeJwt({ alg: 'HS256', typ: 'JWT' }, { ...claims, exp: undefined }, key),
    'exp as string': forgeJwt({ alg: 'HS256', typ: 'JWT' }, { ...claims, exp: String(now + 600) }, key),
    'HS512 with the key': forgeJwt({ alg: 'HS512', typ: 'JWT' }, { ...claims, exp: now + 600 }, key),
    'no session': forgeJwt({ alg: 'HS256', typ: 'JWT' }, { ...claims, sid: 'ses_none', exp: now + 600 }, key),
    garbage: 'not.a.jwt',
  };
  for (const [name, tok] of Object.entries(forged)) {
    const r = await get('/me', { token: tok });
    assert.equal(r.status, 401, name);
    assert.equal(r.body.success, false, name);
  }
  const none = await get('/me');
  assert.equal(none.status, 401);
  assert.equal(none.body.error.code, 'MISSING_TOKEN');
  const basic = await get('/me', { headers: { Authorization: 'Basic eDp5' } });
  assert.equal(basic.status, 401);
});

test('S4: refresh rotates, reuse revokes the whole session', async () => {
  const email = newEmail('s4');
  await registerVerified(email);
  const t0 = await login(email);

  const r1 = await post('/refresh', { refresh_token: t0.refresh_token });
  assert.equal(r1.status, 200);
  assert.notEqual(r1.body.data.refresh_token, t0.refresh_token);
  secrets.add(r1.body.data.refresh_token);
  secrets.add(r1.body.data.access_token);
  assert.equal(r1.body.data.expires_in, 3600);
  assert.equal((await get('/me', { token: r1.body.data.access_token })).status, 200);

  // The spent token again: refused, and the session is over for all.
  const reuse = await post('/refresh', { refresh_token: t0.refresh_token });
  assert.equal(reuse.status, 401);
  assert.equal(reuse.body.error.code, 'REFRESH_TOKEN_REUSED');
  const newest = await post('/refresh', { refresh_token: r1.body.data.refresh_token });
  assert.equal(newest.status, 401);
  assert.equal(newest.body.error.code, 'SESSION_REVOKED');
  const access = await get('/me', { token: r1.body.data.access_token });
  assert.equal(access.status, 401);
  assert.equal(access.body.error.code, 'SESSION_REVOKED');

  const junk = await post('/refresh', { refresh_token: 'x'.repeat(43) });
  assert.equal(junk.status, 401);
  assert.equal(junk.body.error.code, 'INVALID_REFRESH_TOKEN');
  const missing = await post('/refresh', {});
  assert.equal(missing.status, 400);
  assert.equal(missing.body.error.param, 'refresh_token');
});

test('S4: logout ends the session at once', async () => {
  const email = newEmail('logout');
  await registerVerified(email);
  const t = await login(email);
  const out = await post('/logout', undefined, { token: t.access_token });
  assert.equal(out.status, 200, JSON.stringify(out.body));
  const me = await get('/me', { token: t.access_token });
  assert.equal(me.status, 401);
  assert.equal(me.body.error.code, 'SESSION_REVOKED');
  const r = await post('/refresh', { refresh_token: t.refresh_token });
  assert.equal(r.status, 401);

  // Logout by refresh token works too.
  const t2 = await login(email);
  assert.equal((await post('/logout', { refresh_token: t2.refresh_token })).status, 200);
  assert.equal((await get('/me', { token: t2.access_token })).status, 401);
});

test('sessions: list signed-in devices and end one', async () => {
  const email = newEmail('dev');
  await registerVerified(email);
  const a = await login(email);
  // No trusted proxy is configured: a forwarded address is not believed.
  const b = (await post('/login', { email, password: PASSWORD },
    { headers: { 'X-Forwarded-For': '203.0.113.9' } })).body.data;
  const list = await get('/sessions', { token: a.access_token });
  assert.equal(list.status, 200);
  assert.equal(list.body.data.length, 2);
  for (const s of list.body.data) {
    assert.match(s.id, /^ses_/);
    assert.equal(s.address, '127.0.0.1');
    assert.equal(s.user_agent, 'auth-e2e/1.0');
    assert.equal(typeof s.last_seen_at, 'number');
  }
  const current = list.body.data.filter((s) => s.current);
  assert.equal(current.length, 1);
  const other = list.body.data.find((s) => !s.current);

  // Another user cannot end it.
  const eve = newEmail('eve');
  await registerVerified(eve);
  const e = await login(eve);
  const steal = await call('DELETE', `/sessions/${other.id}`, { token: e.access_token });
  assert.equal(steal.status, 404);
  assert.equal((await get('/me', { token: b.access_token })).status, 200);

  const del = await call('DELETE', `/sessions/${other.id}`, { token: a.access_token });
  assert.equal(del.status, 200);
  assert.equal((await get('/me', { token: b.access_token })).status, 401);
  assert.equal((await get('/me', { token: a.access_token })).status, 200);
  const gone = await call('DELETE', `/sessions/${other.id}`, { token: a.access_token });
  assert.equal(gone.status, 404);
});

test('two-factor: setup, enable, login with codes (S2), recovery, disable', async () => {
  const email = newEmail('totp');
  await registerVerified(email);
  const t = await login(email);
  const tok = t.access_token;

  // Setup needs the password again.
  assert.equal((await post('/2fa/setup', {}, { token: tok })).status, 400);
  const wrong = await post('/2fa/setup', { password: 'wrong password' }, { token: tok });
  assert.equal(wrong.status, 401);
  const setup = await post('/2fa/setup', { password: PASSWORD }, { token: tok });
  assert.equal(setup.status, 200);
  const { secret, otpauth_uri: uri, qr_svg: svg } = setup.body.data;
  assert.match(secret, /^[A-Z2-7]{32}$/);
  secrets.add(secret);
  assert.ok(uri.startsWith('otpauth://totp/FR-APIaaS:'));
  assert.ok(uri.includes(`secret=${secret}`));
  assert.ok(uri.includes('algorithm=SHA1&digits=6&period=30'));
  assert.ok(svg.startsWith('<svg ') && svg.endsWith('</svg>'));

  // Enable: a wrong code is refused, a right one answers 10 codes.
  const step = stepNow();
  const badCode = totpAt(secret, step + 5);
  const refused = await post('/2fa/enable', { code: badCode }, { token: tok });
  assert.equal(refused.status, 401);
  assert.equal(refused.body.error.code, 'INVALID_TOTP_CODE');
  const en = await post('/2fa/enable', { code: totpAt(secret, step) }, { token: tok });
  assert.equal(en.status, 200, JSON.stringify(en.body));
  const codes = en.body.data.recovery_codes;
  assert.equal(codes.length, 10);
  assert.equal(new Set(codes).size, 10);
  codes.forEach((c) => secrets.add(c));

  // Neither the secret nor a recovery code is in the database files.
  for (const f of fs.readdirSync(srv.dataDir).filter((n) => n.startsWith('frapi.db'))) {
    const bytes = fs.readFileSync(path.join(srv.dataDir, f)).toString('latin1');
    assert.ok(!bytes.includes(secret), `secret in ${f}`);
    assert.ok(!bytes.includes(codes[0]), `recovery code in ${f}`);
  }

  // Login now asks for the second factor.
  const l1 = await post('/login', { email, password: PASSWORD });
  assert.equal(l1.status, 200);
  assert.equal(l1.body.data.requires_2fa, true);
  assert.equal(l1.body.data.access_token, undefined);
  const ch1 = l1.body.data.challenge;
  secrets.add(ch1);

  // S2: the code already used to enable is refused; the next step's
  // code (within the tolerance) passes.
  const same = await post('/2fa/verify', { challenge: ch1, code: totpAt(secret, step) });
  assert.equal(same.status, 401);
  assert.equal(same.body.error.code, 'TOTP_CODE_ALREADY_USED');
  const next = totpAt(secret, step + 1);
  const v1 = await post('/2fa/verify', { challenge: ch1, code: next });
  assert.equal(v1.status, 200, JSON.stringify(v1.body));
  assert.equal(v1.body.data.token_type, 'Bearer');
  assert.equal((await get('/me', { token: v1.body.data.access_token })).status, 200);

  // The challenge is spent; a new login cannot reuse the code, nor the
  // previous step's one.
  const spent = await post('/2fa/verify', { challenge: ch1, code: next });
  assert.equal(spent.status, 401);
  assert.equal(spent.body.error.code, 'INVALID_CHALLENGE');
  const ch2 = (await post('/login', { email, password: PASSWORD })).body.data.challenge;
  const twice = await post('/2fa/verify', { challenge: ch2, code: next });
  assert.equal(twice.body.error.code, 'TOTP_CODE_ALREADY_USED');
  const older = await post('/2fa/verify', { challenge: ch2, code: totpAt(secret, step) });
  assert.equal(older.status, 401);
  const malformed = await post('/2fa/verify', { challenge: ch2, code: '12ab56' });
  assert.equal(malformed.status, 400);
  assert.equal(malformed.body.error.param, 'code');

  // A recovery code works once.
  const rec = await post('/2fa/verify', { challenge: ch2, recovery_code: codes[0] });
  assert.equal(rec.status, 200, JSON.stringify(rec.body));
  const ch3 = (await post('/login', { email, password: PASSWORD })).body.data.challenge;
  const recAgain = await post('/2fa/verify', { challenge: ch3, recovery_code: codes[0] });
  assert.equal(recAgain.status, 401);
  assert.equal(recAgain.body.error.code, 'INVALID_RECOVERY_CODE');

  // Disable needs the password and a code; then login is one step.
  const noPw = await post('/2fa/disable', { recovery_code: codes[1] }, { token: tok });
  assert.equal(noPw.status, 400);
  const off = await post('/2fa/disable', { password: PASSWORD, recovery_code: codes[1] }, { token: tok });
  assert.equal(off.status, 200, JSON.stringify(off.body));
  const plain = await login(email);
  assert.ok(plain.access_token);
});

test('forgot and reset password: same answer, single use, newest wins, sessions end', async () => {
  const email = newEmail('reset');
  await registerVerified(email);
  const t = await login(email);

  // Known and unknown addresses: the same answer; mail only for one.
  const ghost = newEmail('ghost');
  const known = await post('/forgot-password', { email });
  const unknown = await post('/forgot-password', { email: ghost });
  assert.equal(known.status, 202);
  assert.equal(unknown.status, known.status);
  assert.deepEqual(unknown.body.data, known.body.data);
  const m1 = await mail.waitFor(email, { after: 1 });
  assert.match(m1.raw, /^Subject: Reset your password/m);

  // A newer request voids the older link.
  assert.equal((await post('/forgot-password', { email })).status, 202);
  const m2 = await mail.waitFor(email, { after: 2 });
  const old = linkOf(m1).token;
  const fresh = linkOf(m2).token;
  const voided = await post('/reset-password', { token: old, password: 'a brand new password' });
  assert.equal(voided.status, 400);
  assert.equal(voided.body.error.code, 'INVALID_RESET_TOKEN');

  // A weak password is refused without spending the token.
  const weak = await post('/reset-password', { token: fresh, password: 'short' });
  assert.equal(weak.status, 400);
  assert.equal(weak.body.error.code, 'WEAK_PASSWORD');
  const ok = await post('/reset-password', { token: fresh, password: 'a brand new password' });
  assert.equal(ok.status, 200, JSON.stringify(ok.body));
  const replay = await post('/reset-password', { token: fresh, password: 'another new password' });
  assert.equal(replay.status, 400);
  assert.equal(replay.body.error.code, 'INVALID_RESET_TOKEN');

  // Every session ended; only the new password works.
  assert.equal((await get('/me', { token: t.access_token })).status, 401);
  assert.equal((await post('/refresh', { refresh_token: t.refresh_token })).status, 401);
  assert.equal((await post('/login', { email, password: PASSWORD })).status, 401);
  await login(email, 'a brand new password');

  // No mail ever went to the unknown address.
  assert.equal(mail.count(ghost), 0);
});

test('reset link expires', async () => {
  const email = newEmail('expire');
  await registerVerified(email);
  await post('/forgot-password', { email });
  const m = await mail.waitFor(email, { after: 1 });
  await new Promise((resolve) => setTimeout(resolve, (RESET_TTL_S + 1) * 1000));
  const r = await post('/reset-password', { token: linkOf(m).token, password: 'too late password' });
  assert.equal(r.status, 400);
  assert.equal(r.body.error.code, 'RESET_TOKEN_EXPIRED');
  await login(email);
});

test('repeated failures are throttled per account, then per address', async () => {
  const email = newEmail('throttle');
  await registerVerified(email);
  await new Promise((resolve) => setTimeout(resolve, WINDOW_S * 1000));

  for (let i = 0; i < MAX_ACCOUNT; i++) {
    const r = await post('/login', { email, password: 'wrong password!' });
    assert.equal(r.status, 401);
  }
  // Over the limit even the right password waits.
  const limited = await post('/login', { email, password: PASSWORD });
  assert.equal(limited.status, 429);
  assert.equal(limited.body.error.code, 'TOO_MANY_ATTEMPTS');
  const retry = Number(limited.headers.get('retry-after'));
  assert.ok(Number.isInteger(retry) && retry >= 1 && retry <= WINDOW_S, String(retry));
  await new Promise((resolve) => setTimeout(resolve, retry * 1000 + 200));
  await login(email);

  // Per address: failures spread over many unknown accounts.
  await new Promise((resolve) => setTimeout(resolve, WINDOW_S * 1000));
  let hit = 0;
  for (let i = 1; i <= MAX_ADDRESS + 1; i++) {
    const r = await post('/login', { email: newEmail('spray'), password: 'wrong password!' });
    if (r.status === 429) { hit = i; break; }
    assert.equal(r.status, 401);
  }
  assert.equal(hit, MAX_ADDRESS + 1);
  await new Promise((resolve) => setTimeout(resolve, WINDOW_S * 1000 + 200));
  await login(email);
});

test('without SMTP the mail goes to the outbox that `frapi outbox` prints', async () => {
  const bare = await startServer({ FRAPI_SMTP_HOST: '' });
  try {
    const email = newEmail('outbox');
    const r = await fetch(`${bare.base}/api/v1/auth/register`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ email, password: PASSWORD, name: 'Offline' }),
    });
    assert.equal(r.status, 201);
    const out = execFileSync(process.env.FRAPI_BIN ||
      path.join(repoRoot, 'build', 'frapi'),
      ['outbox', '--data-dir', bare.dataDir],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    assert.match(out, new RegExp(`To: ${email.replace(/\./g, '\\.')}`));
    assert.match(out, /Subject: Confirm your email address/);
    const link = out.match(/http:\/\/\S+verify-email\?token=[A-Za-z0-9_-]{43}/);
    assert.ok(link, out);
    assert.equal((await fetch(link[0])).status, 200);
    assert.match(bare.log(), /written to the outbox/);
    assert.equal(mail.count(email), 0);
  } finally {
    await bare.stop();
  }
});

test('concurrent uses of one refresh token or one TOTP code: exactly one wins', async () => {
  const email = newEmail('race');
  await registerVerified(email);
  const t = await login(email);

  // Eight refreshes with the same token at once.
  const rs = await Promise.all(Array.from({ length: 8 },
    () => post('/refresh', { refresh_token: t.refresh_token })));
  assert.equal(rs.filter((r) => r.status === 200).length, 1);
  assert.equal(rs.filter((r) => r.status === 401).length, 7);

  // Two challenges, the same fresh code on both at once.
  const t2 = await login(email);
  const setup = await post('/2fa/setup', { password: PASSWORD }, { token: t2.access_token });
  const { secret } = setup.body.data;
  const step = stepNow();
  assert.equal((await post('/2fa/enable', { code: totpAt(secret, step) },
    { token: t2.access_token })).status, 200);
  const chs = await Promise.all([0, 1, 2, 3].map(async () =>
    (await post('/login', { email, password: PASSWORD })).body.data.challenge));
  const code = totpAt(secret, step + 1);
  const vs = await Promise.all(chs.map((challenge) =>
    post('/2fa/verify', { challenge, code })));
  assert.equal(vs.filter((r) => r.status === 200).length, 1);
  for (const r of vs.filter((x) => x.status !== 200)) {
    assert.equal(r.body.error.code, 'TOTP_CODE_ALREADY_USED');
  }
});

test('mail requests for one address are capped, with the same answer', async () => {
  const email = newEmail('flood');
  await registerVerified(email);
  const answers = [];
  for (let i = 0; i < 7; i++) answers.push(await post('/forgot-password', { email }));
  for (const a of answers) {
    assert.equal(a.status, 202);
    assert.deepEqual(a.body.data, answers[0].body.data);
  }
  // One verification mail, then five reset mails and no more.
  await mail.waitFor(email, { after: 5 });
  await new Promise((resolve) => setTimeout(resolve, 1500));
  assert.equal(mail.count(email), 6);
});

test('wrong codes and passwords behind a session are throttled too', async () => {
  const email = newEmail('guess');
  await registerVerified(email);
  const t = await login(email);
  const setup = await post('/2fa/setup', { password: PASSWORD }, { token: t.access_token });
  const { secret } = setup.body.data;
  secrets.add(secret);
  const step = stepNow();
  for (let i = 0; i < MAX_ACCOUNT; i++) {
    const r = await post('/2fa/enable', { code: totpAt(secret, step + 10 + i) },
      { token: t.access_token });
    assert.equal(r.status, 401);
  }
  // Over the limit even the right code waits.
  const limited = await post('/2fa/enable', { code: totpAt(secret, step) },
    { token: t.access_token });
  assert.equal(limited.status, 429);
  assert.ok(Number(limited.headers.get('retry-after')) >= 1);

  // Guessing the password through 2FA setup counts as failed logins.
  for (let i = 0; i < MAX_ACCOUNT; i++) {
    const r = await post('/2fa/setup', { password: `wrong guess ${i}` }, { token: t.access_token });
    assert.equal(r.status, 401);
  }
  const locked = await post('/login', { email, password: PASSWORD });
  assert.equal(locked.status, 429);
});

test('two-factor disable: a wrong code is refused and 2FA stays on; a TOTP code turns it off', async () => {
  const email = newEmail('totpoff');
  await registerVerified(email);
  const t = await login(email);
  const tok = t.access_token;
  const { secret } = (await post('/2fa/setup', { password: PASSWORD }, { token: tok })).body.data;
  secrets.add(secret);
  const step = stepNow();
  assert.equal((await post('/2fa/enable', { code: totpAt(secret, step) }, { token: tok })).status, 200);

  // A wrong code (far from now) with the right password: refused.
  const wrong = await post('/2fa/disable',
    { password: PASSWORD, code: totpAt(secret, step + 7) }, { token: tok });
  assert.equal(wrong.status, 401);
  assert.equal(wrong.body.error.code, 'INVALID_TOTP_CODE');
  assert.equal(wrong.body.error.param, 'code');
  const still = await get('/me', { token: tok });
  assert.equal(still.body.data.two_factor_enabled, true);
  const asks = await post('/login', { email, password: PASSWORD });
  assert.equal(asks.body.data.requires_2fa, true);

  // The code of the enabling step is spent (S2); the next one works.
  const replay = await post('/2fa/disable',
    { password: PASSWORD, code: totpAt(secret, step) }, { token: tok });
  assert.equal(replay.status, 401);
  assert.equal(replay.body.error.code, 'TOTP_CODE_ALREADY_USED');
  const off = await post('/2fa/disable',
    { password: PASSWORD, code: totpAt(secret, step + 1) }, { token: tok });
  assert.equal(off.status, 200, JSON.stringify(off.body));
  assert.equal(off.body.data.two_factor_enabled, false);
  assert.equal((await get('/me', { token: tok })).body.data.two_factor_enabled, false);
  assert.ok((await login(email)).access_token);
});

test('resend-verification answers an unknown address as a known one, and mails only the known', async () => {
  const known = newEmail('unverified');
  const r = await post('/register', { email: known, password: PASSWORD, name: 'Una' });
  assert.equal(r.status, 201);
  await mail.waitFor(known);
  const ghost = newEmail('nobody');
  const a = await post('/resend-verification', { email: known });
  const b = await post('/resend-verification', { email: ghost });
  assert.equal(a.status, 202);
  assert.equal(b.status, a.status);
  assert.equal(b.body.success, true);
  assert.deepEqual(b.body, a.body);
  assert.deepEqual([...b.headers.keys()].sort(), [...a.headers.keys()].sort());
  linkOf(await mail.waitFor(known, { after: 1 }));
  await new Promise((resolve) => setTimeout(resolve, 1000));
  assert.equal(mail.count(ghost), 0);
});

test('a verification link followed after its lifetime: VERIFICATION_TOKEN_EXPIRED', async () => {
  const short = await startServer({
    FRAPI_SMTP_HOST: '127.0.0.1',
    FRAPI_SMTP_PORT: String(mail.port),
    FRAPI_SMTP_STARTTLS: 'false',
    FRAPI_VERIFY_TOKEN_TTL_S: '2',
  });
  try {
    const email = newEmail('late');
    const reg = await fetch(`${short.base}/api/v1/auth/register`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ email, password: PASSWORD, name: 'Late' }),
    });
    assert.equal(reg.status, 201);
    const { url } = linkOf(await mail.waitFor(email));
    assert.ok(url.startsWith(short.base), url);
    await new Promise((resolve) => setTimeout(resolve, 3000));
    const r = await fetch(url);
    const body = await r.json();
    assert.equal(r.status, 400);
    assert.equal(body.success, false);
    assert.equal(body.error.code, 'VERIFICATION_TOKEN_EXPIRED');
    assert.equal(body.error.param, 'token');

    // Still unverified: the login says so.
    const l = await fetch(`${short.base}/api/v1/auth/login`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ email, password: PASSWORD }),
    });
    assert.equal(l.status, 403);
    assert.equal((await l.json()).error.code, 'EMAIL_NOT_VERIFIED');
  } finally {
    await short.stop();
  }
});

test('parallel wrong logins: no more failures than the limit get a 401', async () => {
  const limitAccount = 4;
  const limitAddress = 12;
  const own = await startServer({
    FRAPI_SMTP_HOST: '',
    FRAPI_LOGIN_WINDOW_S: '120',
    FRAPI_LOGIN_MAX_PER_ACCOUNT: String(limitAccount),
    FRAPI_LOGIN_MAX_PER_ADDRESS: String(limitAddress),
  });
  const loginOn = async (email) => {
    const r = await fetch(`${own.base}/api/v1/auth/login`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ email, password: 'wrong password!' }),
    });
    const body = await r.json();
    return { status: r.status, body, retry: r.headers.get('retry-after') };
  };
  const tally = (rs) => ({
    unauthorized: rs.filter((r) => r.status === 401).length,
    throttled: rs.filter((r) => r.status === 429).length,
  });
  try {
    // One account, three times its limit at once.
    const email = newEmail('burst');
    const rs = await Promise.all(Array.from({ length: limitAccount * 3 },
      () => loginOn(email)));
    assert.deepEqual(tally(rs), { unauthorized: limitAccount, throttled: limitAccount * 2 });
    for (const r of rs.filter((x) => x.status === 429)) {
      assert.equal(r.body.error.code, 'TOO_MANY_ATTEMPTS');
      assert.ok(Number.isInteger(Number(r.retry)) && Number(r.retry) >= 1, String(r.retry));
      assert.equal(r.body.error.message,
        `Too many failed attempts. Try again in ${r.retry} seconds.`);
      assert.equal(r.body.error.param, null);
      assert.match(r.body.error.request_id, /./);
    }

    // One address, many accounts: the address limit holds the same way
    // (the burst above already spent limitAccount of it).
    const spray = await Promise.all(Array.from({ length: limitAddress * 3 },
      () => loginOn(newEmail('sprayed'))));
    assert.deepEqual(tally(spray), {
      unauthorized: limitAddress - limitAccount,
      throttled: limitAddress * 3 - (limitAddress - limitAccount),
    });

    // The store agrees: each counted failure is one row.
    const rows = dbQuery(own.dataDir,
      "SELECT count(*) AS n FROM auth_failures WHERE subject LIKE 'addr:%'");
    assert.equal(rows[0].n, limitAddress);
  } finally {
    await own.stop();
  }
});

test('every auth flow writes the audit log: user, organization, address, user agent, outcome', async () => {
  const ua = `audit-e2e/${process.pid}`;
  const as = { headers: { 'User-Agent': ua } };
  const email = newEmail('audit');
  const reg = await post('/register', { email, password: PASSWORD, name: 'Audrey' }, as);
  assert.equal(reg.status, 201);
  const uid = reg.body.data.id;
  const org = reg.body.data.organization.id;
  assert.equal((await get(linkOf(await mail.waitFor(email)).url, as)).status, 200);
  assert.equal((await post('/login', { email, password: 'not the password' }, as)).status, 401);
  const t = (await post('/login', { email, password: PASSWORD }, as)).body.data;
  secrets.add(t.access_token);
  secrets.add(t.refresh_token);

  // Two-factor on, a login through it, a bad challenge, then off.
  const { secret } = (await post('/2fa/setup', { password: PASSWORD },
    { token: t.access_token, ...as })).body.data;
  secrets.add(secret);
  const step = stepNow();
  const en = await post('/2fa/enable', { code: totpAt(secret, step) },
    { token: t.access_token, ...as });
  assert.equal(en.status, 200);
  const recovery = en.body.data.recovery_codes;
  recovery.forEach((c) => secrets.add(c));
  const ch = (await post('/login', { email, password: PASSWORD }, as)).body.data.challenge;
  secrets.add(ch);
  const bad = await post('/2fa/verify', { challenge: 'y'.repeat(43), code: '123456' }, as);
  assert.equal(bad.status, 401);
  assert.equal(bad.body.error.code, 'INVALID_CHALLENGE');
  const v = await post('/2fa/verify', { challenge: ch, code: totpAt(secret, step + 1) }, as);
  assert.equal(v.status, 200);
  secrets.add(v.body.data.access_token);
  secrets.add(v.body.data.refresh_token);
  assert.equal((await post('/2fa/disable', { password: PASSWORD, recovery_code: recovery[0] },
    { token: t.access_token, ...as })).status, 200);

  // Logout by Bearer and by refresh token, then a reset.
  assert.equal((await post('/logout', undefined, { token: t.access_token, ...as })).status, 200);
  assert.equal((await post('/logout', { refresh_token: v.body.data.refresh_token }, as)).status, 200);
  const before = mail.count(email);
  assert.equal((await post('/forgot-password', { email }, as)).status, 202);
  const { token } = linkOf(await mail.waitFor(email, { after: before }));
  assert.equal((await post('/reset-password', { token, password: 'a brand new password' }, as)).status, 200);

  const rows = dbQuery(srv.dataDir,
    'SELECT event, outcome, user_id, org_id, address, user_agent, detail ' +
    `FROM audit_events WHERE user_agent = '${ua}' ORDER BY id`);
  const mine = { user_id: uid, org_id: org, address: '127.0.0.1', user_agent: ua };
  const expect = [
    ['register', 'ok', mine],
    ['verify_email', 'ok', mine],
    ['login', 'wrong_password', mine],
    ['login', 'ok', mine],
    ['2fa_setup', 'ok', mine],
    ['2fa_enable', 'ok', mine],
    ['login', '2fa_required', mine],
    ['login_2fa', 'invalid_challenge', { ...mine, user_id: null, org_id: null }],
    ['login_2fa', 'ok', mine],
    ['2fa_disable', 'ok', mine],
    ['logout', 'ok', mine],
    ['logout', 'ok', mine],
    ['password_reset_requested', 'mail_queued', mine],
    ['password_reset', 'ok', mine],
  ];
  const seen = rows.map((r) => `${r.event}/${r.outcome}`);
  assert.deepEqual(seen, expect.map(([e, o]) => `${e}/${o}`));
  expect.forEach(([event, , who], i) => {
    for (const [k, want] of Object.entries(who)) {
      assert.equal(rows[i][k], want, `${event} row ${i}: ${k}`);
    }
  });

  // No secret is in the audit trail.
  const all = JSON.stringify(dbQuery(srv.dataDir, 'SELECT * FROM audit_events'));
  for (const s of [PASSWORD, 'not the password', secret, ch, t.refresh_token, token]) {
    assert.ok(!all.includes(s), `a secret is in audit_events: ${s.slice(0, 6)}...`);
  }
});

// A server sending through a mail server that requires STARTTLS and AUTH,
// trusting its self-signed certificate through smtp_ca_file.
async function startTlsPair(cert, { pass, env = {} } = {}) {
  const tlsMail = await startMailServer({
    tls: cert, auth: { user: 'frapi-mailer', pass: 'mail server secret' } });
  const server = await startServer({
    FRAPI_SMTP_HOST: '127.0.0.1',
    FRAPI_SMTP_PORT: String(tlsMail.port),
    FRAPI_SMTP_STARTTLS: 'true',
    FRAPI_SMTP_USER: 'frapi-mailer',
    FRAPI_SMTP_PASSWORD: pass,
    FRAPI_SMTP_CA_FILE: cert.certFile,
    FRAPI_SMTP_FROM: 'FR-APIaaS <noreply@frapi.test>',
    ...env,
  });
  return { tlsMail, server };
}

// A register call on base, timed.
async function timedRegister(base, email) {
  const t0 = performance.now();
  const r = await fetch(`${base}/api/v1/auth/register`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ email, password: PASSWORD, name: 'Tess' }),
  });
  await r.arrayBuffer();
  return { status: r.status, ms: performance.now() - t0 };
}

test('mail goes out through STARTTLS with credentials, trusting smtp_ca_file', async () => {
  const cert = makeCertificate();
  const { tlsMail, server } = await startTlsPair(cert, { pass: 'mail server secret' });
  try {
    const email = newEmail('tls');
    const r = await timedRegister(server.base, email);
    assert.equal(r.status, 201);
    const msg = await tlsMail.waitFor(email);
    assert.equal(msg.secure, true);
    assert.ok(msg.cipher && /TLS/.test(msg.cipher.version), JSON.stringify(msg.cipher));
    assert.equal(msg.user, 'frapi-mailer');
    assert.match(msg.raw, /^Subject: Confirm your email address/m);
    assert.deepEqual(tlsMail.auths, [{ username: 'frapi-mailer', ok: true, secure: true }]);

    // The link works, and the mail server's password is in no log.
    const { url, token } = linkOf(msg);
    assert.equal((await fetch(url)).status, 200);
    assert.match(server.log(), /with STARTTLS/);
    assert.ok(!server.log().includes('mail server secret'));
    assert.ok(!server.log().includes(token));
  } finally {
    await server.stop();
    await tlsMail.stop();
    fs.rmSync(cert.dir, { recursive: true, force: true });
  }
});

test('wrong mail credentials: the mail is retried, never delivered, and no request waits', async () => {
  const cert = makeCertificate();
  const { tlsMail, server } = await startTlsPair(cert, {
    pass: 'not the mail password',
    env: { FRAPI_MAIL_RETRY_S: '1', FRAPI_MAIL_MAX_ATTEMPTS: '3' },
  });
  try {
    const email = newEmail('badauth');
    const r = await timedRegister(server.base, email);
    assert.equal(r.status, 201);
    // The answer does not wait for the mail server (argon2id is the cost).
    assert.ok(r.ms < 2000, `register took ${r.ms} ms`);

    // Three refused logins over TLS (1 s, then 2 s apart), then given up.
    let row;
    const deadline = Date.now() + 20000;
    for (;;) {
      [row] = dbQuery(server.dataDir,
        'SELECT status, attempts, last_error, length(text_body) AS body FROM mail_queue');
      if (row && row.status === 'failed') break;
      assert.ok(Date.now() < deadline, JSON.stringify(row));
      // Requests stay fast while the sender keeps failing.
      const again = await timedRegister(server.base, newEmail('meanwhile'));
      assert.equal(again.status, 201);
      assert.ok(again.ms < 2000, `register took ${again.ms} ms`);
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
    assert.equal(row.attempts, 3);
    assert.match(row.last_error, /login|auth/i);
    assert.equal(row.body, 0);
    const mine = tlsMail.auths.filter((a) => a.username === 'frapi-mailer');
    assert.ok(mine.length >= 3, JSON.stringify(mine));
    assert.ok(mine.every((a) => !a.ok && a.secure));
    assert.equal(tlsMail.count(email), 0);
    assert.match(server.log(), /could not be sent .*retry in 1 s/);
    assert.match(server.log(), /failed 3 times and is given up/);
    assert.ok(!server.log().includes('not the mail password'));
  } finally {
    await server.stop();
    await tlsMail.stop();
    fs.rmSync(cert.dir, { recursive: true, force: true });
  }
});

test('without smtp_ca_file a self-signed mail server is refused before any credentials', async () => {
  const cert = makeCertificate();
  const { tlsMail, server } = await startTlsPair(cert, {
    pass: 'mail server secret',
    env: { FRAPI_SMTP_CA_FILE: '', FRAPI_MAIL_RETRY_S: '60' },
  });
  try {
    const email = newEmail('untrusted');
    assert.equal((await timedRegister(server.base, email)).status, 201);
    const deadline = Date.now() + 10000;
    let row;
    for (;;) {
      [row] = dbQuery(server.dataDir, 'SELECT status, attempts, last_error FROM mail_queue');
      if (row && row.attempts >= 1) break;
      assert.ok(Date.now() < deadline, JSON.stringify(row));
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    assert.equal(row.status, 'queued');
    assert.match(row.last_error, /certificate|SSL/i);
    assert.ok(tlsMail.errors.some((e) => /UNKNOWN_CA/.test(e.code)),
      tlsMail.errors.map((e) => e.code).join(', '));
    assert.deepEqual(tlsMail.auths, []);
    assert.equal(tlsMail.count(email), 0);
  } finally {
    await server.stop();
    await tlsMail.stop();
    fs.rmSync(cert.dir, { recursive: true, force: true });
  }
});

test('verification, reset and refresh tokens are stored only as digests', async () => {
  // Every mail link token (verification, reset), refresh token, access
  // token, challenge, password and code the tests saw: none is in the
  // database or its write-ahead log.
  const files = dbFiles(srv.dataDir);
  assert.ok(files.some((f) => f.endsWith('-wal')), files.join(', '));
  const links = [...secrets].filter((x) => /^[A-Za-z0-9_-]{43}$/.test(x));
  assert.ok(links.length >= 4, String(links.length));
  for (const f of files) {
    const bytes = fs.readFileSync(f).toString('latin1');
    for (const secret of secrets) {
      assert.ok(!bytes.includes(secret), `${secret.slice(0, 6)}... in ${path.basename(f)}`);
    }
  }
});

test('no password or token ever reaches the event or access log', async () => {
  const log = srv.log();
  assert.match(log, /method=POST route=\/api\/v1\/auth\/login/);
  assert.ok(secrets.size > 20);
  for (const secret of secrets) {
    assert.ok(!log.includes(secret), `a secret is in the log: ${secret.slice(0, 6)}...`);
  }
});
