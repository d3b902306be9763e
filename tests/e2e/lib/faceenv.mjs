// Test environment of the face API end-to-end tests: the real
// `build/frapi serve` on a throwaway data directory and a free port, the
// admin commands that make collections and keys, a small HTTP client,
// and face photos cut out of the sample group photos at test time.
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)),
  '..', '..', '..');
// $FRAPI_BIN runs the suite against another build (the sanitizer one).
export const frapi = process.env.FRAPI_BIN || path.join(root, 'build', 'frapi');
export const photosDir = path.join(root, '.deps', 'photos');

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

// A new empty data directory, removed when the process ends.
export function tempDir(prefix = 'frapi-e2e-') {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

// Runs `frapi ARGS` on dataDir and parses its JSON output.
export function admin(dataDir, ...args) {
  const out = execFileSync(frapi, [...args, '--data-dir', dataDir], {
    cwd: root, stdio: ['ignore', 'pipe', 'pipe'],
  });
  return JSON.parse(out.toString('utf8'));
}

// A collection and a key for it (by default with a rate limit high enough
// that tests never meet it).
export function newTenant(dataDir, name = 'e2e', keyArgs = ['--rpm', '100000']) {
  const col = admin(dataDir, 'collections', 'create', name);
  const key = admin(dataDir, 'keys', 'create', '--collection', col.id,
    ...keyArgs);
  return { collection: col, key: key.key, keyId: key.id };
}

// Starts the server on dataDir; resolves once /readyz answers 200.
export async function startServer(dataDir, { env = {}, args = [] } = {}) {
  const port = await freePort();
  const proc = spawn(frapi, ['serve', '--listen', `127.0.0.1:${port}`,
    '--data-dir', dataDir, '--access-log', '', ...args], {
    cwd: root,
    env: { ...process.env, FRAPI_LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  proc.stdout.on('data', (d) => { log += d; });
  proc.stderr.on('data', (d) => { log += d; });
  const exited = new Promise((resolve) => proc.once('exit',
    (code, sig) => resolve({ code, sig })));
  const base = `http://127.0.0.1:${port}`;

  const deadline = Date.now() + 30000;
  for (;;) {
    if (proc.exitCode !== null) {
      throw new Error(`frapi serve exited early:\n${log}`);
    }
    try {
      const r = await fetch(`${base}/readyz`);
      if (r.status === 200) break;
    } catch { /* not listening yet */ }
    if (Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw new Error(`frapi serve not ready in 30 s:\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }

  return {
    base, port, proc,
    log: () => log,
    // Graceful stop; resolves with the exit code and signal.
    async stop() {
      if (proc.exitCode === null) proc.kill('SIGTERM');
      return exited;
    },
  };
}

// A client for one key: call(method, path, {json, form, headers}).
// form is an object of field -> string | {data: Buffer, filename, type}.
export function client(base, key) {
  return async function call(method, p, { json, form, headers = {},
    raw, contentType } = {}) {
    const h = { ...headers };
    if (key !== undefined && key !== null) h['X-API-Key'] = key;
    let body;
    if (json !== undefined) {
      body = typeof json === 'string' ? json : JSON.stringify(json);
      h['Content-Type'] = 'application/json';
    } else if (form) {
      body = new FormData();
      for (const [k, v] of Object.entries(form)) {
        if (typeof v === 'string') body.append(k, v);
        else if (v.data !== undefined) {
          const blob = new Blob([v.data], { type: v.type ?? '' });
          if (v.filename === null) body.append(k, blob, '');
          else body.append(k, blob, v.filename ?? 'photo.jpg');
        }
      }
    } else if (raw !== undefined) {
      body = raw;
      if (contentType) h['Content-Type'] = contentType;
    }
    const r = await fetch(base + p, { method, headers: h, body });
    const text = await r.text();
    let parsed = null;
    try { parsed = JSON.parse(text); } catch { /* not JSON */ }
    return { status: r.status, body: parsed, text, headers: r.headers };
  };
}

// The faces of a photo as `frapi detect` sees them.
export function detect(file) {
  const out = execFileSync(frapi, ['detect', file], {
    cwd: root, stdio: ['ignore', 'pipe', 'ignore'],
  });
  return JSON.parse(out.toString('utf8'));
}

// Cuts a square around box (margin times its side on each side) out of
// photo into out, optionally scaled.  Returns out; the cut's top-left
// corner in the photo goes into origin when given.
export function cut(photo, box, out, { margin = 0.6, scale = 100,
  origin = {} } = {}) {
  const side = box.x2 - box.x1;
  const pad = Math.round(side * margin);
  const w = Math.round(side) + 2 * pad;
  const x = Math.max(0, Math.round(box.x1) - pad);
  const y = Math.max(0, Math.round(box.y1) - pad);
  origin.x = x;
  origin.y = y;
  execFileSync('convert', [photo, '-crop', `${w}x${w}+${x}+${y}`, '+repage',
    '-resize', `${scale}%`, '-quality', '92', out]);
  return out;
}

let cache = null;

// Every face of the six sample photos cut into its own JPEG, once per
// process: [{photo, index, box, file, origin, file2}], origin being the
// top-left corner of file in the photo, and file2 a second, wider and
// smaller cut of the same face.
export function faceFixtures() {
  if (cache) return cache;
  const dir = tempDir('frapi-faces-');
  const faces = [];
  for (let n = 1; n <= 6; n++) {
    const photo = path.join(photosDir, `sample${n}.jpg`);
    const found = detect(photo);
    found.faces.forEach((f, i) => {
      const origin = {};
      const file = cut(photo, f.box, path.join(dir, `s${n}f${i}.jpg`),
        { origin });
      const file2 = cut(photo, f.box, path.join(dir, `s${n}f${i}b.jpg`),
        { margin: 1.0, scale: 70 });
      faces.push({ photo, sample: n, index: i, box: f.box, file, origin,
        file2 });
    });
  }
  cache = { dir, faces };
  return cache;
}

// A file's bytes as a multipart file part.
export function part(file, filename = path.basename(file), type = 'image/jpeg') {
  return { data: fs.readFileSync(file), filename, type };
}

// The centre of a box given as {x, y, width, height} or {x1, y1, x2, y2}.
export function centre(b) {
  if (b.width !== undefined) return [b.x + b.width / 2, b.y + b.height / 2];
  return [(b.x1 + b.x2) / 2, (b.y1 + b.y2) / 2];
}
