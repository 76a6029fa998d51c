#!/usr/bin/env node
// The TypeScript types of the agent protocol, generated from spec/agent.json: every op's request,
// result and events, and the types they name (Entry, ProcessInfo), with the spec's prose as doc
// comments. The fields are strings of the spec's small grammar (spec/agent.json "fieldTypes"), which
// agent/spec_test.go parses the same way to check the Go agent's types.
//   node scripts/agent-types.mjs           writes packages/runtime/src/agent/ops.generated.ts
//   node scripts/agent-types.mjs --check   exits 1 when that file is not what the spec makes
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const SPEC_FILE = path.join(repo, 'spec/agent.json');
export const OUTPUT_FILE = path.join(repo, 'packages/runtime/src/agent/ops.generated.ts');

const PRIMITIVES = ['string', 'number', 'boolean', 'null'];

/**
 * Parses one field string: TYPE [(NOTES)] [: DESCRIPTION]. TYPE is string, number, boolean, null,
 * a "literal", a name of `typeNames`, T[], object string->T, or alternatives joined by " | ".
 * Returns { type, optional, notes, description }; `type` is a tree of { kind, ... } nodes.
 * Throws on anything else.
 */
export function parseField(text, typeNames) {
  let i = 0;
  const fail = (what) => {
    throw new Error(`${JSON.stringify(text)}: ${what} at offset ${i}`);
  };
  const spaces = () => {
    while (text[i] === ' ') i++;
  };
  const word = () => {
    const m = /^[A-Za-z][A-Za-z0-9]*/.exec(text.slice(i));
    if (!m) fail('a type expected');
    i += m[0].length;
    return m[0];
  };
  const base = () => {
    spaces();
    if (text[i] === '"') {
      const end = text.indexOf('"', i + 1);
      if (end < 0) fail('unterminated literal');
      const value = text.slice(i + 1, end);
      i = end + 1;
      return { kind: 'literal', value };
    }
    const w = word();
    if (PRIMITIVES.includes(w)) return { kind: w };
    if (w === 'object') {
      spaces();
      if (word() !== 'string' || !text.startsWith('->', i)) fail('object string->T expected');
      i += 2;
      return { kind: 'map', of: item() };
    }
    if (!typeNames.includes(w)) fail(`unknown type ${w}`);
    return { kind: 'ref', name: w };
  };
  const item = () => {
    let t = base();
    while (text.startsWith('[]', i)) {
      i += 2;
      t = { kind: 'array', of: t };
    }
    return t;
  };
  const alternatives = [item()];
  for (;;) {
    const at = i;
    spaces();
    if (text[i] !== '|') {
      i = at;
      break;
    }
    i++;
    alternatives.push(item());
  }
  const rest = /^(?: \(([^()]*)\))?(?:: (.*))?$/s.exec(text.slice(i));
  if (!rest) fail('expected " (NOTES)", ": DESCRIPTION" or the end');
  const notes = rest[1] ?? '';
  return {
    type: alternatives.length === 1 ? alternatives[0] : { kind: 'union', of: alternatives },
    optional: notes.split(',')[0].trim() === 'optional',
    notes,
    description: rest[2] ?? '',
  };
}

/** The fields of an object of the spec (keys that begin with $ are comments). */
function fieldsOf(obj, typeNames) {
  return Object.entries(obj)
    .filter(([name]) => !name.startsWith('$'))
    .map(([name, text]) => {
      if (typeof text !== 'string') throw new Error(`field ${name}: a string expected`);
      return { name, ...parseField(text, typeNames) };
    });
}

/** The spec's ops, types and events in a form to generate from and to check against. */
export function readSpec(spec) {
  const typeNames = Object.keys(spec.types);
  const shape = (v, where) => {
    if (typeof v === 'string') return { kind: 'type', ...parseField(v, typeNames) };
    if (v && typeof v === 'object' && !Array.isArray(v)) return { kind: 'fields', fields: fieldsOf(v, typeNames) };
    throw new Error(`${where}: an object of fields or a type expected`);
  };
  const eventNames = Object.keys(spec.events).filter((n) => !n.startsWith('$'));
  const ops = Object.entries(spec.ops).map(([name, op]) => {
    for (const e of op.events ?? []) if (!eventNames.includes(e)) throw new Error(`${name}: unknown event ${e}`);
    return { name, comment: op.$comment ?? '', request: shape(op.request, `${name}.request`), result: shape(op.result, `${name}.result`), events: op.events ?? [] };
  });
  return {
    types: typeNames.map((name) => ({ name, fields: fieldsOf(spec.types[name], typeNames) })),
    events: eventNames.map((name) => ({ name, fields: fieldsOf(spec.events[name], typeNames) })),
    ops,
  };
}

function tsType(t) {
  switch (t.kind) {
    case 'literal':
      return `'${t.value.replace(/[\\']/g, '\\$&')}'`;
    case 'ref':
      return t.name;
    case 'array':
      return t.of.kind === 'union' ? `Array<${tsType(t.of)}>` : `${tsType(t.of)}[]`;
    case 'map':
      return `Record<string, ${tsType(t.of)}>`;
    case 'union':
      return t.of.map(tsType).join(' | ');
    default:
      return t.kind;
  }
}

const doc = (text, indent = '') => (text ? `${indent}/** ${text.replace(/\*\//g, '*\\/')} */\n` : '');
const fieldDoc = (f) => [f.notes && `(${f.notes})`, f.description].filter(Boolean).join(' ');
const pascal = (op) => op.replace(/(^|\.)([a-z])/g, (_, _dot, c) => c.toUpperCase());
const eventType = (name) => `${pascal(name)}Event`;

function declare(name, comment, shape, extra = []) {
  if (shape.kind === 'type') return `${doc([comment, fieldDoc(shape)].filter(Boolean).join(' '))}export type ${name} = ${tsType(shape.type)};\n`;
  const lines = [...extra, ...shape.fields.map((f) => `${doc(fieldDoc(f), '  ')}  ${f.name}${f.optional ? '?' : ''}: ${tsType(f.type)};\n`)];
  if (!lines.length) return `${doc(comment)}export type ${name} = Record<string, never>;\n`;
  return `${doc(comment)}export interface ${name} {\n${lines.join('')}}\n`;
}

/** The TypeScript module for `spec` (the parsed spec/agent.json). */
export function generate(spec) {
  const s = readSpec(spec);
  const out = [
    '// Generated from spec/agent.json by scripts/agent-types.mjs: do not edit; run `node scripts/agent-types.mjs`.\n',
    '// packages/runtime/test/protocol.test.ts fails when this file is not what the script makes of the spec.\n',
  ];
  for (const t of s.types) out.push('\n', declare(t.name, `spec/agent.json types.${t.name}`, { kind: 'fields', fields: t.fields }));
  for (const e of s.events) {
    out.push('\n', declare(eventType(e.name), `EVENT ${e.name} (spec/agent.json events.${e.name})`, { kind: 'fields', fields: e.fields }, [`  type: '${e.name}';\n`]));
  }
  for (const op of s.ops) {
    out.push('\n', declare(`${pascal(op.name)}Request`, [`${op.name} request.`, op.comment].filter(Boolean).join(' '), op.request));
    out.push(declare(`${pascal(op.name)}Result`, `${op.name} result.`, op.result));
  }
  out.push('\n/** Every op of the protocol: its request, its result and the events it sends. */\nexport interface AgentOps {\n');
  for (const op of s.ops) {
    const p = pascal(op.name);
    out.push(`  '${op.name}': { request: ${p}Request; result: ${p}Result; event: ${op.events.map(eventType).join(' | ') || 'never'} };\n`);
  }
  out.push('}\n\n/** The ops in the order of the spec. */\nexport const AGENT_OPS = [\n');
  for (const op of s.ops) out.push(`  '${op.name}',\n`);
  out.push('] as const satisfies ReadonlyArray<keyof AgentOps>;\n');
  return out.join('');
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const text = generate(JSON.parse(fs.readFileSync(SPEC_FILE, 'utf8')));
  const rel = path.relative(process.cwd(), OUTPUT_FILE);
  if (process.argv.includes('--check')) {
    const current = fs.existsSync(OUTPUT_FILE) ? fs.readFileSync(OUTPUT_FILE, 'utf8') : '';
    if (current !== text) {
      console.error(`${rel} is not what spec/agent.json makes: run node scripts/agent-types.mjs`);
      process.exit(1);
    }
  } else {
    fs.writeFileSync(OUTPUT_FILE, text);
    console.log(`wrote ${rel}`);
  }
}
