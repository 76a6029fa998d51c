import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';
import { AGENT_ERROR_CODES, INTERNAL_ERROR_CODES, NsError, PUBLIC_ERROR_CODES } from '@nullspace/runtime';
import { errorFromResponse } from 'nullspace';
import { fromAgentError, httpStatusFor, isPublicCode } from '../src/errors.js';

/**
 * The error codes are one contract: every code the server or the runtime throws is either public
 * (one HTTP status, a line in docs/api.md, known to the SDKs) or internal (a client gets 500
 * `internal`), every public code is actually produced, and the guest agent's codes are only carried
 * by AgentError. The throw sites are found by scanning the sources (their syntax, not a regex).
 */
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const SOURCE_DIRS = ['packages/server/src', 'packages/runtime/src'];

interface Site {
  code: string;
  /** `agent`: an AgentError (the guest's codes); `host`: everything else. */
  kind: 'host' | 'agent';
  where: string;
}

/** Object literals that hold names, not codes, in properties named like codes (the store's column map). */
const NOT_CODE_MAPS = new Set(['COLUMN']);
/** Variables, parameters and properties that hold an error code. */
const CODE_NAMES = new Set(['code', 'errorCode', 'fallbackCode']);

function sourceFiles(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return sourceFiles(p);
    return e.name.endsWith('.ts') && !e.name.endsWith('.d.ts') ? [p] : [];
  });
}

function calleeName(e: ts.Expression): string | undefined {
  if (ts.isIdentifier(e)) return e.text;
  if (ts.isPropertyAccessExpression(e)) return e.name.text;
  return undefined;
}

/**
 * The string literals an expression can evaluate to: both branches of a conditional, both sides of
 * `??` and `||`, through parentheses, casts and String(); not conditions or comparisons. A template
 * literal with substitutions is returned as null (its code cannot be known here).
 */
function values(e: ts.Expression): Array<string | null> {
  if (ts.isStringLiteral(e) || ts.isNoSubstitutionTemplateLiteral(e)) return [e.text];
  if (ts.isTemplateExpression(e)) return [null];
  if (ts.isParenthesizedExpression(e) || ts.isAsExpression(e) || ts.isSatisfiesExpression(e) || ts.isNonNullExpression(e)) return values(e.expression);
  if (ts.isConditionalExpression(e)) return [...values(e.whenTrue), ...values(e.whenFalse)];
  if (ts.isBinaryExpression(e)) {
    const op = e.operatorToken.kind;
    if (op === ts.SyntaxKind.QuestionQuestionToken || op === ts.SyntaxKind.BarBarToken) return [...values(e.left), ...values(e.right)];
    if (op === ts.SyntaxKind.AmpersandAmpersandToken) return values(e.right);
    return [];
  }
  if (ts.isCallExpression(e) && calleeName(e.expression) === 'String' && e.arguments[0]) return values(e.arguments[0]);
  return [];
}

/** Every error code written in the sources, with where. */
function scanSources(files: Array<{ name: string; text: string }>): { sites: Site[]; unresolved: string[] } {
  const sites: Site[] = [];
  const unresolved: string[] = [];
  for (const file of files) {
    const sf = ts.createSourceFile(file.name, file.text, ts.ScriptTarget.Latest, true);
    const where = (n: ts.Node) => `${file.name}:${sf.getLineAndCharacterOfPosition(n.getStart(sf)).line + 1}`;
    const add = (e: ts.Expression | undefined, kind: Site['kind'], at: ts.Node, allowTemplate = false) => {
      if (!e) return;
      for (const code of values(e)) {
        if (code !== null) sites.push({ code, kind, where: where(at) });
        else if (!allowTemplate) unresolved.push(`${where(at)}: ${e.getText(sf)}`);
      }
    };
    // the class a node is in, when that class extends NsError (its super() call passes a code)
    const errorClass = (n: ts.Node): string | undefined => {
      for (let p: ts.Node | undefined = n.parent; p; p = p.parent) {
        if (ts.isClassDeclaration(p)) {
          const ext = p.heritageClauses?.some((h) => h.types.some((t) => t.expression.getText(sf) === 'NsError'));
          return ext ? (p.name?.text ?? '') : undefined;
        }
      }
      return undefined;
    };
    const visit = (n: ts.Node): void => {
      if (ts.isNewExpression(n)) {
        const name = calleeName(n.expression);
        // NsError's own template (`${kind}_not_found`) is expanded at notFound's call sites below
        if (name === 'NsError') add(n.arguments?.[0], 'host', n, file.name.endsWith('server/src/errors.ts'));
        if (name === 'AgentError') add(n.arguments?.[0], 'agent', n);
      } else if (ts.isCallExpression(n)) {
        const name = calleeName(n.expression);
        if (n.expression.kind === ts.SyntaxKind.SuperKeyword) {
          const cls = errorClass(n);
          if (cls !== undefined) add(n.arguments[0], cls === 'AgentError' ? 'agent' : 'host', n);
        } else if (name === 'wrapError' || name === 'withContext') {
          add(n.arguments[2], 'host', n);
        } else if (name === 'notFound' && n.arguments[0]) {
          for (const kind of values(n.arguments[0])) {
            if (kind === null) unresolved.push(`${where(n)}: notFound(${n.arguments[0].getText(sf)})`);
            else sites.push({ code: `${kind}_not_found`, kind: 'host', where: where(n) });
          }
        } else if (name === 'badRequest') {
          sites.push({ code: 'bad_request', kind: 'host', where: where(n) });
        }
      } else if (ts.isPropertyAssignment(n) && CODE_NAMES.has(n.name.getText(sf))) {
        const holder = n.parent.parent;
        if (!(ts.isVariableDeclaration(holder) && NOT_CODE_MAPS.has(holder.name.getText(sf)))) add(n.initializer, 'host', n);
      } else if ((ts.isVariableDeclaration(n) || ts.isParameter(n) || ts.isPropertyDeclaration(n)) && n.initializer && CODE_NAMES.has(n.name.getText(sf))) {
        add(n.initializer, 'host', n);
      }
      ts.forEachChild(n, visit);
    };
    visit(sf);
  }
  return { sites, unresolved };
}

function readSources(): Array<{ name: string; text: string }> {
  return SOURCE_DIRS.flatMap((d) => sourceFiles(path.join(ROOT, d))).map((f) => ({ name: path.relative(ROOT, f), text: fs.readFileSync(f, 'utf8') }));
}

const PUBLIC = new Set<string>(PUBLIC_ERROR_CODES);
const INTERNAL = new Set<string>(INTERNAL_ERROR_CODES);
const AGENT = new Set<string>(AGENT_ERROR_CODES);

/** Host sites whose code is neither public nor internal (an agent-only code is not a host code either). */
function unlistedHostCodes(sites: Site[]): string[] {
  return sites.filter((s) => s.kind === 'host' && !PUBLIC.has(s.code) && !INTERNAL.has(s.code)).map((s) => `${s.where}: ${s.code}`);
}

/** Public codes that nothing produces: not thrown, not a result of fromAgentError. */
function unproducedPublicCodes(sites: Site[]): string[] {
  const produced = new Set(sites.filter((s) => s.kind === 'host').map((s) => s.code));
  for (const code of [...AGENT_ERROR_CODES, 'agent_unavailable'] as const) produced.add(fromAgentError(new NsError(code, 'x'), 'subject').code);
  produced.add(fromAgentError(new Error('not an NsError'), 'subject').code);
  return [...PUBLIC].filter((c) => !produced.has(c));
}

/** docs/api.md's error table: code -> status. */
function documentedCodes(): Map<string, { status: number; when: string }> {
  const md = fs.readFileSync(path.join(ROOT, 'docs/api.md'), 'utf8');
  const section = md.slice(md.indexOf('## Errors'), md.indexOf('\n## ', md.indexOf('## Errors') + 1));
  const rows = new Map<string, { status: number; when: string }>();
  for (const m of section.matchAll(/^\| `([a-z_]+)` \| (\d{3}) \| (.*) \|$/gm)) rows.set(m[1]!, { status: Number(m[2]), when: m[3]!.trim() });
  return rows;
}

/** The `code: Class` entries of a map in an SDK's source, between `start` and the next closing brace. */
function sdkCodeMap(file: string, start: string, entry: RegExp): Map<string, string> {
  const text = fs.readFileSync(path.join(ROOT, file), 'utf8');
  const from = text.indexOf(start);
  if (from < 0) throw new Error(`${file}: no ${start}`);
  const block = text.slice(from, text.indexOf('}', from));
  return new Map([...block.matchAll(entry)].map((m) => [m[1]!, m[2]!]));
}

describe('error codes', () => {
  const { sites, unresolved } = scanSources(readSources());

  it('the scan finds the throw sites of every form', () => {
    // one site of each form the scan understands: if one of these is missing, the scan is broken
    const found = (code: string, file: string) => sites.some((s) => s.code === code && s.where.startsWith(file));
    expect(found('snapshot_incompatible', 'packages/server/src/sandbox'), 'new NsError( over lines').toBe(true);
    expect(found('restore_failed', 'packages/runtime/src/vm.ts'), 'wrapError(err, ..., code)').toBe(true);
    expect(found('disk_failed', 'packages/runtime/src/storage.ts'), 'run(..., { errorCode })').toBe(true);
    expect(found('command_failed', 'packages/runtime/src/exec.ts'), "opts.errorCode ?? 'command_failed'").toBe(true);
    expect(found('sandbox_not_found', 'packages/server/src/sandbox'), "notFound('sandbox', id)").toBe(true);
    expect(found('validation_failed', 'packages/server/src/api/app.ts'), '{ error: { code } } bodies').toBe(true);
    expect(found('process_not_found', 'packages/server/src/api/commands.ts'), 'Object.assign(e, { code })').toBe(true);
    expect(found('vm_exited', 'packages/server/src/sandbox'), 'a sandbox record errorCode').toBe(true);
    expect(found('internal', 'packages/runtime/src/errors.ts'), 'a fallbackCode default').toBe(true);
    expect(sites.some((s) => s.kind === 'agent' && s.code === 'cancelled'), 'new AgentError(').toBe(true);
    expect(sites.some((s) => s.code === 'error_code'), 'the store column map is not a code').toBe(false);
    expect(unresolved, 'codes built from templates the scan cannot expand').toEqual([]);
  });

  it('no code is both public and internal', () => {
    expect(PUBLIC_ERROR_CODES.length).toBe(PUBLIC.size);
    expect(INTERNAL_ERROR_CODES.length).toBe(INTERNAL.size);
    expect([...INTERNAL].filter((c) => PUBLIC.has(c))).toEqual([]);
  });

  it('every public code has one HTTP status, every other code is a 500 internal', () => {
    for (const code of PUBLIC) {
      expect(isPublicCode(code), code).toBe(true);
      expect(httpStatusFor(code), code).toBeGreaterThanOrEqual(400);
    }
    for (const code of [...INTERNAL, ...[...AGENT].filter((c) => !PUBLIC.has(c))]) {
      expect(isPublicCode(code), code).toBe(false);
      expect(httpStatusFor(code), code).toBe(500);
    }
  });

  it('every code thrown by the server or the runtime is public or internal', () => {
    expect(unlistedHostCodes(sites)).toEqual([]);
  });

  it("an AgentError carries only the agent's codes (spec/agent.json)", () => {
    expect(sites.filter((s) => s.kind === 'agent' && !AGENT.has(s.code)).map((s) => `${s.where}: ${s.code}`)).toEqual([]);
  });

  it('every public code is produced somewhere (no dead entries in the status map), every internal code is thrown', () => {
    expect(unproducedPublicCodes(sites)).toEqual([]);
    const thrown = new Set(sites.filter((s) => s.kind === 'host').map((s) => s.code));
    expect([...INTERNAL].filter((c) => !thrown.has(c))).toEqual([]);
  });

  it('docs/api.md lists every public code with its status and when it happens, and no other code', () => {
    const docs = documentedCodes();
    expect([...PUBLIC].filter((c) => !docs.has(c)), 'public codes missing from docs/api.md').toEqual([]);
    expect([...docs.keys()].filter((c) => !PUBLIC.has(c)), 'documented codes that are not public').toEqual([]);
    for (const [code, row] of docs) {
      if (!PUBLIC.has(code)) continue;
      expect(row.status, `${code}: the status in docs/api.md`).toBe(httpStatusFor(code));
      expect(row.when.length, `${code}: when it happens`).toBeGreaterThan(5);
    }
  });

  it('the SDKs map the same codes to the same classes, consistent with the status of each', () => {
    const tsByCode = sdkCodeMap('packages/sdk/src/errors.ts', 'const BY_CODE', /^\s*([a-z_]+): (\w+),$/gm);
    const pyByCode = sdkCodeMap('sdk/python/nullspace/errors.py', '_BY_CODE', /^\s*"([a-z_]+)": (\w+),$/gm);
    const tsByStatus = sdkCodeMap('packages/sdk/src/errors.ts', 'const BY_STATUS', /^\s*(\d{3}): (\w+),$/gm);
    const pyByStatus = sdkCodeMap('sdk/python/nullspace/errors.py', '_BY_STATUS', /^\s*(\d{3}): (\w+),$/gm);
    expect(tsByCode.size).toBeGreaterThan(0);
    expect(tsByStatus.size).toBeGreaterThan(0);
    expect(Object.fromEntries(pyByCode), 'the Python SDK maps codes as the TypeScript one').toEqual(Object.fromEntries(tsByCode));
    expect(Object.fromEntries(pyByStatus), 'the Python SDK maps statuses as the TypeScript one').toEqual(Object.fromEntries(tsByStatus));
    expect([...tsByCode.keys()].filter((c) => !PUBLIC.has(c)), 'SDK codes the server never sends').toEqual([]);
    const statuses = new Set([...PUBLIC].map(httpStatusFor));
    expect([...tsByStatus.keys()].map(Number).filter((s) => !statuses.has(s)), 'SDK statuses no public code has').toEqual([]);
    // the class of a code is a subclass of the class of its status (SandboxNotFoundError is a NotFoundError)
    for (const code of PUBLIC) {
      const status = httpStatusFor(code);
      const byCode = errorFromResponse(status, { error: { code, message: 'm' } });
      const byStatus = errorFromResponse(status, { error: { code: 'no_such_code', message: 'm' } });
      expect(byCode, code).toBeInstanceOf(byStatus.constructor);
      expect(byCode.code, code).toBe(code);
    }
  });

  it('fails on an unlisted code, an unproduced public code and a template it cannot expand (the checks can fail)', () => {
    const planted = scanSources([
      {
        name: 'packages/server/src/planted.ts',
        text: [
          "throw new NsError('no_such_code', 'x');",
          "throw wrapError(err, 'ctx', cond ? 'vm_start_failed' : 'another_bogus_code');",
          "throw new NsError(`${kind}_bogus`, 'x');",
          "throw new AgentError('vm_exited', 'x');",
        ].join('\n'),
      },
    ]);
    expect(unlistedHostCodes(planted.sites)).toEqual(['packages/server/src/planted.ts:1: no_such_code', 'packages/server/src/planted.ts:2: another_bogus_code']);
    expect(planted.unresolved).toEqual(['packages/server/src/planted.ts:3: `${kind}_bogus`']);
    expect(planted.sites.filter((s) => s.kind === 'agent').map((s) => s.code)).toEqual(['vm_exited']);
    // with only these sources, most public codes are produced by nothing
    expect(unproducedPublicCodes(planted.sites)).toContain('sandbox_busy');
    expect(unproducedPublicCodes(planted.sites)).not.toContain('vm_start_failed');
  });
});
