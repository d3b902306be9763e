// The routes the server knows (`frapi routes`) and the paths of
// docs/openapi.yaml agree, both ways; a running server answers each
// documented route (not 404), and refuses undocumented methods with 405;
// and /readyz asks the store, not only whether it was opened once.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import {
  frapi, photosDir, root, startServer, tempDir,
} from './lib/faceenv.mjs';

const METHODS = ['get', 'put', 'post', 'delete', 'patch', 'head', 'options'];

// "METHOD /path" for every operation under `paths:` of the YAML file,
// read by indentation (paths at two spaces, operations at four).
function documented() {
  const text = fs.readFileSync(path.join(root, 'docs', 'openapi.yaml'), 'utf8');
  assert.match(text, /^openapi: 3\.1\.\d+$/m);
  const ops = [];
  let inPaths = false;
  let current = null;
  for (const line of text.split('\n')) {
    if (/^\S/.test(line)) {
      inPaths = line.startsWith('paths:');
      continue;
    }
    if (!inPaths) continue;
    let m = /^ {2}(['"]?)(\/[^'":]*)\1:\s*$/.exec(line);
    if (m) { current = m[2]; continue; }
    m = /^ {4}([a-z]+):\s*$/.exec(line);
    if (m && current && METHODS.includes(m[1])) {
      ops.push(`${m[1].toUpperCase()} ${current}`);
    }
  }
  return ops.sort();
}

function served() {
  return execFileSync(frapi, ['routes'], { cwd: root }).toString('utf8')
    .split('\n').filter(Boolean).sort();
}

test('frapi routes and docs/openapi.yaml list the same operations', () => {
  const doc = documented();
  const srv = served();
  assert.ok(srv.length >= 12);
  const missing = srv.filter((r) => !doc.includes(r));
  const extra = doc.filter((r) => !srv.includes(r));
  assert.deepEqual(missing, [], `served but not documented: ${missing}`);
  assert.deepEqual(extra, [], `documented but not served: ${extra}`);
});

test('every documented route is routed; other methods get 405 with Allow',
  async () => {
    const server = await startServer(tempDir());
    try {
      for (const r of documented()) {
        const [method, p] = r.split(' ');
        const url = server.base + p.replace(/\{[^}]+\}/g, 'face_x');
        const res = await fetch(url, { method });
        await res.arrayBuffer();
        assert.notEqual(res.status, 404, `${r} answered 404`);
        assert.notEqual(res.status, 405, `${r} answered 405`);
      }
      const res = await fetch(`${server.base}/api/v1/verify`, { method: 'GET' });
      const body = await res.json();
      assert.equal(res.status, 405);
      assert.match(res.headers.get('allow'), /POST/);
      assert.equal(body.success, false);
      const unknown = await fetch(`${server.base}/api/v1/nothing-here`);
      assert.equal(unknown.status, 404);
    } finally {
      await server.stop();
    }
  });

test('/readyz is 503 while the database file is gone, 200 once it is back',
  async () => {
    const dataDir = tempDir();
    const server = await startServer(dataDir);
    const db = path.join(dataDir, 'frapi.db');
    const away = path.join(dataDir, 'frapi.db.away');
    const get = async (p) => {
      const res = await fetch(server.base + p);
      return { status: res.status, body: await res.json() };
    };
    try {
      const ok = await get('/readyz');
      assert.equal(ok.status, 200, JSON.stringify(ok.body));
      assert.deepEqual(ok.body, { success: true, data: { status: 'ready' } });

      // Moved away under the running server: SQLite would go on writing
      // to the old file, and all of it would be lost at the next start.
      fs.renameSync(db, away);
      const gone = await get('/readyz');
      assert.equal(gone.status, 503, JSON.stringify(gone.body));
      assert.equal(gone.body.success, false);
      assert.equal(gone.body.error.code, 'NOT_READY');
      assert.match(gone.body.error.message,
        /^The service is not ready: the database file was deleted, moved /);
      // The process itself is alive.
      assert.equal((await get('/healthz')).status, 200);

      fs.renameSync(away, db);
      const back = await get('/readyz');
      assert.equal(back.status, 200, JSON.stringify(back.body));

      // One log line per change, not one per probe.
      await get('/readyz');
      const log = server.log();
      assert.equal(log.match(/The service is not ready/g)?.length, 1, log);
    } finally {
      await server.stop();
    }
  });

test('frapi finds the models of its checkout from any working directory',
  () => {
    const env = { ...process.env };
    delete env.FRAPI_MODEL_DIR;
    const elsewhere = tempDir('frapi-cwd-');
    const out = execFileSync(frapi, ['detect',
      path.join(photosDir, 'sample3.jpg')], { cwd: elsewhere, env,
      stdio: ['ignore', 'pipe', 'ignore'] });
    assert.equal(JSON.parse(out.toString('utf8')).count, 3);
  });
