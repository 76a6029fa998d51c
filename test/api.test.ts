import { describe, expect, it } from 'vitest';
import { api, apiUrl, sandbox } from './helpers.js';

/** Bad input over real HTTP: each gets a stable code and a 4xx, never a crash or a hang. */
describe('API: authentication and bad input', () => {
  it('requires the API key on every route', async () => {
    for (const [method, path] of [
      ['GET', '/v1/health'],
      ['POST', '/v1/openapi.json'],
      ['GET', '/v1/sandboxes?path=/v1/openapi.json'],
      ['GET', '/v1/sandboxes'],
      ['POST', '/v1/sandboxes'],
      ['DELETE', '/v1/sandboxes/sbx_0000000000000000'],
      ['GET', '/v1/nothing-here'],
    ]) {
      const none = await fetch(apiUrl() + path, { method });
      expect(none.status, `${method} ${path}`).toBe(401);
      expect(((await none.json()) as { error: { code: string } }).error.code).toBe('unauthorized');
      const wrong = await fetch(apiUrl() + path, { method, headers: { authorization: 'Bearer wrong-key-wrong-key' } });
      expect(wrong.status).toBe(401);
    }
  });

  it('serves its OpenAPI document, without the key (an API description is public)', async () => {
    const res = await fetch(apiUrl() + '/v1/openapi.json');
    expect(res.status).toBe(200);
    const doc = (await res.json()) as { openapi: string; paths: Record<string, unknown> };
    expect(doc.openapi).toMatch(/^3\./);
    expect(Object.keys(doc.paths)).toEqual(expect.arrayContaining(['/v1/sandboxes', '/v1/sandboxes/{id}', '/v1/sandboxes/{id}/files', '/v1/sandboxes/{id}/commands']));
  });

  it('answers unknown sandboxes, templates and routes with 404 and a code', async () => {
    const cases: Array<[string, string, unknown, string]> = [
      ['GET', '/v1/sandboxes/sbx_0000000000000000', undefined, 'sandbox_not_found'],
      ['GET', '/v1/sandboxes/..%2F..%2Fetc', undefined, 'sandbox_not_found'],
      ['DELETE', '/v1/sandboxes/nope', undefined, 'sandbox_not_found'],
      ['GET', '/v1/sandboxes/sbx_0000000000000000/files?path=/etc/hostname', undefined, 'sandbox_not_found'],
      ['POST', '/v1/sandboxes', { template: 'no-such-template' }, 'template_not_found'],
      ['POST', '/v1/sandboxes', { template: '../../etc' }, 'template_not_found'],
      ['GET', '/v1/templates/nope', undefined, 'template_not_found'],
      ['GET', '/v1/no/such/route', undefined, 'route_not_found'],
    ];
    for (const [method, path, body, code] of cases) {
      const res = await api(method, path, body);
      expect(res.status, `${method} ${path}`).toBe(404);
      expect(((await res.json()) as { error: { code: string } }).error.code, `${method} ${path}`).toBe(code);
    }
  });

  it('rejects malformed JSON and fields with 400 naming the field', async () => {
    const bad = await api('POST', '/v1/sandboxes', '{"template": ');
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { code: string } }).error.code).toBe('invalid_json');
    const cases: Array<[unknown, string]> = [
      [{ timeoutMs: 'soon' }, 'timeoutMs'],
      [{ timeoutMs: 5 }, 'timeoutMs'],
      [{ metadata: { k: 5 } }, 'metadata'],
      [{ metadata: 'flat' }, 'metadata'],
      [{ envs: { 'BAD-NAME': 'x' } }, 'envs'],
      [{ surprise: true }, 'surprise'],
      [{ allowInternetAccess: 'yes please' }, 'allowInternetAccess'],
    ];
    for (const [body, field] of cases) {
      const res = await api('POST', '/v1/sandboxes', body);
      expect(res.status, JSON.stringify(body)).toBe(400);
      const e = ((await res.json()) as { error: { code: string; message: string; details: { field: string } } }).error;
      expect(e.code).toBe('validation_failed');
      expect(e.details.field, JSON.stringify(body)).toContain(field);
    }
    const tooLong = await api('POST', '/v1/sandboxes', { timeoutMs: 10 * 24 * 3600_000 });
    expect(tooLong.status).toBe(400);
  });

  it('refuses huge JSON bodies with 413', async () => {
    const res = await api('POST', '/v1/sandboxes', { metadata: { big: 'x'.repeat(2 * 1024 * 1024) } });
    expect(res.status).toBe(413);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('payload_too_large');
  });

  it('rejects bad list queries', async () => {
    expect((await api('GET', '/v1/sandboxes?state=sleeping')).status).toBe(400);
    expect((await api('GET', '/v1/sandboxes?limit=0')).status).toBe(400);
    expect((await api('GET', '/v1/sandboxes?nextToken=garbage')).status).toBe(400);
    expect((await api('GET', '/v1/sandboxes?metadata=novalue')).status).toBe(400);
    // an empty list of states is the default filter (live sandboxes), not "every state"
    const ended = await sandbox();
    await ended.kill();
    for (const q of ['state=,', 'state=']) {
      const res = await api('GET', `/v1/sandboxes?${q}&limit=1000`);
      expect(res.status).toBe(200);
      const ids = ((await res.json()) as { sandboxes: Array<{ sandboxId: string }> }).sandboxes.map((x) => x.sandboxId);
      expect(ids, q).not.toContain(ended.sandboxId);
    }
    const all = ((await (await api('GET', '/v1/sandboxes?state=killed&limit=1000')).json()) as { sandboxes: Array<{ sandboxId: string }> }).sandboxes;
    expect(all.map((x) => x.sandboxId)).toContain(ended.sandboxId);
  });

  it('rejects relative and malformed paths in a running sandbox with 400', async () => {
    const sbx = await sandbox();
    for (const path of ['relative/file', '', '../etc/passwd', 'a\u0000b']) {
      const res = await api('GET', `/v1/sandboxes/${sbx.sandboxId}/files?path=${encodeURIComponent(path)}`);
      expect(res.status, JSON.stringify(path)).toBe(400);
    }
    const mk = await api('POST', `/v1/sandboxes/${sbx.sandboxId}/files/mkdir`, { path: 'rel' });
    expect(mk.status).toBe(400);
    expect(((await mk.json()) as { error: { code: string } }).error.code).toBe('invalid_path');
    const cmd = await api('POST', `/v1/sandboxes/${sbx.sandboxId}/commands`, { cmd: 'true', cwd: 'tmp' });
    expect(cmd.status).toBe(400);
    // a command line longer than exec takes (128 KiB, counted in bytes) is refused up front
    for (const long of ['x'.repeat(131_072), 'é'.repeat(70_000)]) {
      const res = await api('POST', `/v1/sandboxes/${sbx.sandboxId}/commands`, { cmd: long });
      expect(res.status).toBe(400);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe('validation_failed');
    }
    // paths the guest's file system refuses are the request's fault too (4xx with a code, not a 500)
    const code = async (res: Response) => [res.status, ((await res.json()) as { error: { code: string } }).error.code];
    expect(await code(await api('GET', `/v1/sandboxes/${sbx.sandboxId}/files?path=/${'n'.repeat(300)}`))).toEqual([400, 'invalid_path']);
    await sbx.commands.run('mkdir -p /workspace/loop && ln -sfn a /workspace/loop/b && ln -sfn b /workspace/loop/a');
    expect(await code(await api('GET', `/v1/sandboxes/${sbx.sandboxId}/files?path=/workspace/loop/a`))).toEqual([400, 'invalid_path']);
    expect(await code(await api('POST', `/v1/sandboxes/${sbx.sandboxId}/files/rename`, { from: '/workspace/loop', to: '/workspace/loop/inside' }))).toEqual([400, 'bad_request']);
    expect(await code(await api('POST', `/v1/sandboxes/${sbx.sandboxId}/files/rename`, { from: '/tmp', to: '/workspace/tmp-moved' }))).toEqual([400, 'bad_request']);
  });
});
