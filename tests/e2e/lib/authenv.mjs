// Test environment of the accounts end-to-end tests: a real SMTP server
// on loopback (smtp-server) that keeps every message it receives, in the
// clear or with STARTTLS and AUTH required, a self-signed certificate for
// it, the real `build/frapi serve` on a throwaway data directory and a
// free port with its SMTP settings pointed at it, a look into its
// database, and RFC 6238 codes computed with node's crypto.
import { execFileSync, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SMTPServer } from 'smtp-server';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)),
  '..', '..', '..');

// A TCP port nobody listens on right now.
export async function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

// Decodes a quoted-printable body (soft breaks, =XX escapes).
function unQuotedPrintable(s) {
  const bytes = [];
  const flat = s.replace(/=\r?\n/g, '');
  for (let i = 0; i < flat.length; i++) {
    if (flat[i] === '=' && /^[0-9A-F]{2}$/i.test(flat.slice(i + 1, i + 3))) {
      bytes.push(parseInt(flat.slice(i + 1, i + 3), 16));
      i += 2;
    } else {
      bytes.push(...Buffer.from(flat[i], 'utf8'));
    }
  }
  return Buffer.from(bytes).toString('utf8');
}

// A self-signed certificate for localhost and 127.0.0.1 (openssl), in a
// new temporary folder: { dir, keyFile, certFile, key, cert }.
export function makeCertificate() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'frapi-smtp-tls-'));
  const keyFile = path.join(dir, 'key.pem');
  const certFile = path.join(dir, 'cert.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec',
    '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
    '-keyout', keyFile, '-out', certFile, '-subj', '/CN=localhost',
    '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1'],
  { stdio: ['ignore', 'ignore', 'pipe'] });
  return { dir, keyFile, certFile,
    key: fs.readFileSync(keyFile), cert: fs.readFileSync(certFile) };
}

// The loopback mail server: every message kept with its envelope, and
// whether it came over TLS and from which authenticated user.  Plain
// (no STARTTLS, no AUTH) by default; with tls ({ key, cert }) and auth
// ({ user, pass }) it offers STARTTLS, refuses AUTH before it, and
// refuses mail without a successful AUTH.  Every AUTH attempt is kept in
// auths as { username, ok, secure }, connection errors (a client refusing
// the certificate) in errors.
export async function startMailServer({ tls, auth } = {}) {
  const port = await freePort();
  const messages = [];
  const auths = [];
  const waiters = [];
  const secured = tls ? { key: tls.key, cert: tls.cert } : {};
  const server = new SMTPServer({
    ...secured,
    authOptional: !auth,
    disabledCommands: [...(tls ? [] : ['STARTTLS']), ...(auth ? [] : ['AUTH'])],
    logger: false,
    onAuth(a, session, done) {
      const ok = !!auth && a.username === auth.user && a.password === auth.pass;
      auths.push({ username: a.username, ok, secure: session.secure });
      if (!ok) return done(new Error('Invalid username or password'));
      return done(null, { user: a.username });
    },
    onData(stream, session, done) {
      const chunks = [];
      stream.on('data', (c) => chunks.push(c));
      stream.on('end', () => {
        const raw = Buffer.concat(chunks).toString('utf8');
        const msg = {
          to: session.envelope.rcptTo.map((r) => r.address),
          from: session.envelope.mailFrom.address,
          secure: session.secure,
          cipher: session.tlsOptions || null,
          user: session.user || null,
          raw,
          decoded: unQuotedPrintable(raw),
        };
        messages.push(msg);
        for (const w of waiters.splice(0)) w();
        done();
      });
    },
  });
  // A client that refuses our certificate ends in an error event; keep it.
  const errors = [];
  server.on('error', (e) => errors.push(e));
  await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));

  // Waits for the next message to `to` after `after` messages were seen.
  async function waitFor(to, { after = 0, timeoutMs = 10000 } = {}) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const mine = messages.filter((m) => m.to.includes(to));
      if (mine.length > after) return mine[after];
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no mail for ${to} within ${timeoutMs} ms`);
      await new Promise((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 200));
        waiters.push(() => { clearTimeout(t); resolve(); });
      });
    }
  }
  const count = (to) => messages.filter((m) => m.to.includes(to)).length;
  return { port, messages, auths, errors, waitFor, count,
    stop: () => new Promise((resolve) => server.close(resolve)) };
}

// Starts `build/frapi serve` (or $FRAPI_BIN, e.g. the sanitizer build
// build-san/frapi) with env added; resolves once /healthz answers.
// Returns { base, dataDir, stop, log }.  With $FRAPI_E2E_SERVER_LOG set,
// the server's output is appended to that file when it stops.
export async function startServer(env = {}) {
  const port = await freePort();
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'frapi-auth-'));
  const base = `http://127.0.0.1:${port}`;
  let log = '';
  const bin = process.env.FRAPI_BIN || path.join(root, 'build', 'frapi');
  const child = spawn(bin, ['serve'], {
    cwd: root,
    env: {
      ...process.env,
      FRAPI_LISTEN: `127.0.0.1:${port}`,
      FRAPI_DATA_DIR: dataDir,
      FRAPI_PUBLIC_URL: base,
      FRAPI_ACCESS_LOG: '',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout.on('data', (d) => { log += d; });
  child.stderr.on('data', (d) => { log += d; });
  const exited = new Promise((resolve) => child.once('exit', resolve));

  const deadline = Date.now() + 120000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`frapi exited:\n${log}`);
    try {
      const r = await fetch(`${base}/healthz`);
      if (r.ok) break;
    } catch { /* not listening yet */ }
    if (Date.now() > deadline) throw new Error(`frapi did not start:\n${log}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  async function stop() {
    if (child.exitCode === null) child.kill('SIGTERM');
    await exited;
    if (process.env.FRAPI_E2E_SERVER_LOG) {
      fs.appendFileSync(process.env.FRAPI_E2E_SERVER_LOG, log);
    }
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
  return { base, dataDir, stop, log: () => log };
}

// Rows of one query against the server's database (the sqlite3 command),
// as objects.
export function dbQuery(dataDir, sql) {
  const out = execFileSync('sqlite3', ['-json', path.join(dataDir, 'frapi.db'), sql],
    { encoding: 'utf8' });
  return out.trim() ? JSON.parse(out) : [];
}

// The server's database files (frapi.db and its -wal and -shm).
export function dbFiles(dataDir) {
  return fs.readdirSync(dataDir).filter((n) => n.startsWith('frapi.db'))
    .map((n) => path.join(dataDir, n));
}

// RFC 4648 base32 decoding of a TOTP secret.
function base32(s) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = 0;
  let value = 0;
  const out = [];
  for (const ch of s.replace(/=+$/, '').toUpperCase()) {
    value = (value << 5) | alphabet.indexOf(ch);
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Buffer.from(out);
}

// The RFC 6238 code (HMAC-SHA-1, 30 s, 6 digits) of step.
export function totpAt(secret, step) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(step));
  const mac = crypto.createHmac('sha1', base32(secret)).update(counter).digest();
  const off = mac[mac.length - 1] & 0x0f;
  const n = (mac.readUInt32BE(off) & 0x7fffffff) % 1000000;
  return String(n).padStart(6, '0');
}

export const stepNow = () => Math.floor(Date.now() / 1000 / 30);

// A JWT signed with HMAC key (Buffer) and alg, or unsigned for "none".
export function forgeJwt(header, payload, key) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const head = `${b64(header)}.${b64(payload)}`;
  if (header.alg === 'none') return `${head}.`;
  const algo = { HS256: 'sha256', HS384: 'sha384', HS512: 'sha512' }[header.alg];
  const sig = crypto.createHmac(algo, key).update(head).digest('base64url');
  return `${head}.${sig}`;
}

// The server's token secret, from its data directory.
export function serverSecret(dataDir) {
  const hex = fs.readFileSync(path.join(dataDir, 'jwt.secret'), 'utf8').trim();
  return Buffer.from(hex, 'hex');
}
