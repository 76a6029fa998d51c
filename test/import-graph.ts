import { builtinModules } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';
import ts from 'typescript';

/**
 * The import graph of the TypeScript sources (packages/NAME/src), read with the TypeScript parser
 * (no type checker: ~0.1 s for the whole tree). Every import counts, `import type` included: static
 * imports, re-exports, `import('x')` (calls and types), `import x = require('x')`. A relative
 * specifier `./x.js` is the source `./x.ts`. A named import from a workspace package
 * (`@nullspace/runtime`, `nullspace`, ...) is an import of the module that defines the name (the
 * package's index only re-exports): `import { Vm } from '@nullspace/runtime'` is an edge to
 * packages/runtime/src/vm.ts. Anything else is external, as `npm:NAME` or `node:NAME`.
 */

export interface Edge {
  /** repo-relative source file */
  from: string;
  /** repo-relative source file, or `npm:NAME` / `node:NAME` */
  to: string;
  line: number;
  specifier: string;
  /** the imported name, `*` for the whole module */
  name: string;
  /** `import type`, or a name that is only a type (interface, type alias) where it is defined */
  typeOnly: boolean;
}

export interface Graph {
  files: string[];
  edges: Edge[];
}

interface RawImport {
  specifier: string;
  name: string;
  typeOnly: boolean;
  line: number;
}

interface Module {
  file: string;
  imports: RawImport[];
  /** names this module declares and exports, with whether each is only a type */
  declares: Map<string, 'type' | 'value'>;
  /** `export { a as b } from 'x'` (exported b -> specifier, name a), `export * from 'x'` (name `*`) */
  reexports: Array<{ exported: string; specifier: string; name: string }>;
  /** `export { a as b }` of a name that this module imports: exported b -> local a */
  exportLists: Map<string, string>;
  /** local name -> the import it came from */
  importedAs: Map<string, RawImport>;
}

const hasExport = (n: ts.Node): boolean =>
  ts.canHaveModifiers(n) && (ts.getModifiers(n) ?? []).some((m) => m.kind === ts.SyntaxKind.ExportKeyword);

function bindingNames(b: ts.BindingName, out: string[]): void {
  if (ts.isIdentifier(b)) out.push(b.text);
  else for (const e of b.elements) if (!ts.isOmittedExpression(e)) bindingNames(e.name, out);
}

function parse(root: string, file: string): Module {
  const sf = ts.createSourceFile(file, fs.readFileSync(path.join(root, file), 'utf8'), ts.ScriptTarget.Latest, true);
  const m: Module = { file, imports: [], declares: new Map(), reexports: [], exportLists: new Map(), importedAs: new Map() };
  const lineOf = (n: ts.Node) => sf.getLineAndCharacterOfPosition(n.getStart(sf)).line + 1;
  const add = (spec: ts.Expression | undefined, name: string, typeOnly: boolean, at: ts.Node, local?: string): void => {
    if (!spec || !ts.isStringLiteralLike(spec)) return;
    const imp = { specifier: spec.text, name, typeOnly, line: lineOf(at) };
    m.imports.push(imp);
    if (local) m.importedAs.set(local, imp);
  };
  for (const st of sf.statements) {
    if (ts.isImportDeclaration(st)) {
      const c = st.importClause;
      if (!c) add(st.moduleSpecifier, '*', false, st);
      else {
        if (c.name) add(st.moduleSpecifier, 'default', c.isTypeOnly, st, c.name.text);
        const nb = c.namedBindings;
        if (nb && ts.isNamespaceImport(nb)) add(st.moduleSpecifier, '*', c.isTypeOnly, st);
        if (nb && ts.isNamedImports(nb)) {
          for (const e of nb.elements) add(st.moduleSpecifier, (e.propertyName ?? e.name).text, c.isTypeOnly || e.isTypeOnly, st, e.name.text);
        }
      }
    } else if (ts.isExportDeclaration(st)) {
      const c = st.exportClause;
      if (st.moduleSpecifier && ts.isStringLiteralLike(st.moduleSpecifier)) {
        const specifier = st.moduleSpecifier.text;
        if (!c || ts.isNamespaceExport(c)) {
          add(st.moduleSpecifier, '*', st.isTypeOnly, st);
          m.reexports.push({ exported: c ? c.name.text : '*', specifier, name: '*' });
        } else {
          for (const e of c.elements) {
            const name = (e.propertyName ?? e.name).text;
            add(st.moduleSpecifier, name, st.isTypeOnly || e.isTypeOnly, st);
            m.reexports.push({ exported: e.name.text, specifier, name });
          }
        }
      } else if (c && ts.isNamedExports(c)) {
        for (const e of c.elements) m.exportLists.set(e.name.text, (e.propertyName ?? e.name).text);
      }
    } else if (ts.isImportEqualsDeclaration(st) && ts.isExternalModuleReference(st.moduleReference)) {
      add(st.moduleReference.expression, '*', st.isTypeOnly, st, st.name.text);
    } else if (ts.isExportAssignment(st)) {
      m.declares.set('default', 'value');
    } else if (hasExport(st)) {
      const isDefault = (ts.getModifiers(st as ts.HasModifiers) ?? []).some((x) => x.kind === ts.SyntaxKind.DefaultKeyword);
      const kind = ts.isInterfaceDeclaration(st) || ts.isTypeAliasDeclaration(st) ? 'type' : 'value';
      const names: string[] = [];
      if (ts.isVariableStatement(st)) for (const d of st.declarationList.declarations) bindingNames(d.name, names);
      else if ('name' in st && st.name && ts.isIdentifier(st.name as ts.Node)) names.push((st.name as ts.Identifier).text);
      for (const n of isDefault ? ['default'] : names) m.declares.set(n, kind);
    }
  }
  // import('x') anywhere: dynamic imports (values) and import types (`import('x').T`)
  const walk = (n: ts.Node): void => {
    if (ts.isCallExpression(n) && n.expression.kind === ts.SyntaxKind.ImportKeyword) add(n.arguments[0], '*', false, n);
    if (ts.isImportTypeNode(n) && ts.isLiteralTypeNode(n.argument)) {
      let q: ts.EntityName | undefined = n.qualifier;
      while (q && ts.isQualifiedName(q)) q = q.left;
      add(n.argument.literal as ts.Expression, q ? q.text : '*', true, n);
    }
    ts.forEachChild(n, walk);
  };
  walk(sf);
  return m;
}

function listSources(root: string): string[] {
  const out: string[] = [];
  const visit = (dir: string): void => {
    for (const e of fs.readdirSync(path.join(root, dir), { withFileTypes: true })) {
      const rel = path.posix.join(dir, e.name);
      if (e.isDirectory()) visit(rel);
      else if (/\.(ts|tsx|mts)$/.test(e.name) && !e.name.endsWith('.d.ts')) out.push(rel);
    }
  };
  for (const pkg of fs.readdirSync(path.join(root, 'packages')).sort()) {
    if (fs.existsSync(path.join(root, 'packages', pkg, 'src'))) visit(`packages/${pkg}/src`);
  }
  return out.sort();
}

/** Reads the graph; throws on an import of a source or workspace name that does not resolve. */
export function importGraph(root: string): Graph {
  const files = listSources(root);
  const modules = new Map(files.map((f) => [f, parse(root, f)] as const));
  // workspace packages: name -> directory
  const workspace = new Map<string, string>();
  for (const pkg of fs.readdirSync(path.join(root, 'packages'))) {
    const pj = path.join(root, 'packages', pkg, 'package.json');
    if (fs.existsSync(pj)) workspace.set((JSON.parse(fs.readFileSync(pj, 'utf8')) as { name: string }).name, `packages/${pkg}`);
  }
  const problems: string[] = [];

  const resolve = (from: string, spec: string): string => {
    // `./x.js` is the source `./x.ts` (or .tsx; `.mjs`: `.mts`), `./x` is `./x.ts` or `./x/index.ts`
    const source = (base: string): string | undefined => {
      const cands = /\.m?js$/.test(base) ? [base.replace(/js$/, 'ts'), base.replace(/\.js$/, '.tsx')] : [base, `${base}.ts`, `${base}/index.ts`];
      return cands.find((c) => modules.has(c));
    };
    if (spec.startsWith('.')) {
      const base = path.posix.normalize(path.posix.join(path.posix.dirname(from), spec));
      const f = source(base);
      if (f) return f;
      // (JSON, and the console's style sheets, which its bundler takes in: no code)
      if (/\.(json|css)$/.test(spec) && fs.existsSync(path.join(root, base))) return `json:${base}`;
      throw new Error(`${from}: '${spec}' resolves to no source file`);
    }
    const pkgName = spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]!;
    const dir = workspace.get(pkgName);
    if (dir) {
      const sub = spec.slice(pkgName.length).replace(/^\//, '');
      const f = source(sub ? `${dir}/src/${sub.replace(/^(dist|src)\//, '')}` : `${dir}/src/index`);
      if (f) return f;
      throw new Error(`${from}: '${spec}' resolves to no source file of ${dir}`);
    }
    if (spec.startsWith('node:') || builtinModules.includes(pkgName)) return `node:${spec.replace(/^node:/, '')}`;
    return `npm:${pkgName}`;
  };

  /** the module that defines `name` exported by `file` (following re-exports), and whether it is a type */
  const defining = (file: string, name: string, seen = new Set<string>()): { file: string; type: boolean } | undefined => {
    const m = modules.get(file);
    if (!m || seen.has(`${file}#${name}`)) return undefined;
    seen.add(`${file}#${name}`);
    const kind = m.declares.get(name);
    if (kind) return { file, type: kind === 'type' };
    const local = m.exportLists.get(name);
    if (local !== undefined) {
      const imp = m.importedAs.get(local);
      if (!imp) return { file, type: false };
      const target = resolve(file, imp.specifier);
      return (imp.name !== '*' && defining(target, imp.name, seen)) || { file: target, type: imp.typeOnly };
    }
    for (const r of m.reexports) {
      if (r.name === '*' && r.exported !== '*') {
        if (r.exported === name) return { file: resolve(file, r.specifier), type: false };
      } else if (r.exported === name) {
        return defining(resolve(file, r.specifier), r.name, seen);
      }
    }
    for (const r of m.reexports) {
      if (r.exported !== '*') continue;
      const found = defining(resolve(file, r.specifier), name, seen);
      if (found) return found;
    }
    return undefined;
  };

  const edges: Edge[] = [];
  for (const m of modules.values()) {
    for (const imp of m.imports) {
      let to: string;
      try {
        to = resolve(m.file, imp.specifier);
      } catch (err) {
        problems.push((err as Error).message);
        continue;
      }
      let typeOnly = imp.typeOnly;
      // a named import from a workspace package: an import of the module that defines the name
      if (!imp.specifier.startsWith('.') && modules.has(to) && imp.name !== '*') {
        const d = defining(to, imp.name);
        if (!d) {
          problems.push(`${m.file}:${imp.line}: '${imp.specifier}' exports no '${imp.name}'`);
          continue;
        }
        to = d.file;
        typeOnly ||= d.type;
      } else if (modules.has(to) && imp.name !== '*' && imp.name !== 'default') {
        typeOnly ||= modules.get(to)!.declares.get(imp.name) === 'type';
      }
      if (to.startsWith('json:')) continue;
      edges.push({ from: m.file, to, line: imp.line, specifier: imp.specifier, name: imp.name, typeOnly });
    }
  }
  if (problems.length) throw new Error(`import graph: ${problems.join('; ')}`);
  return { files, edges };
}

/**
 * The import cycles between source files, each as the edges that make it: for every strongly
 * connected component (files that all reach one another), shortest cycles until each of its edges is
 * in one. An empty list means that the graph is acyclic.
 */
export function findCycles(g: Graph): Edge[][] {
  const out = new Map<string, Edge[]>();
  for (const f of g.files) out.set(f, []);
  for (const e of g.edges) if (out.has(e.to)) out.get(e.from)!.push(e);
  // Tarjan's strongly connected components
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const sccOf = new Map<string, number>();
  let next = 0;
  let sccs = 0;
  const strong = (v: string): void => {
    index.set(v, next);
    low.set(v, next++);
    stack.push(v);
    for (const e of out.get(v)!) {
      if (!index.has(e.to)) {
        strong(e.to);
        low.set(v, Math.min(low.get(v)!, low.get(e.to)!));
      } else if (!sccOf.has(e.to)) low.set(v, Math.min(low.get(v)!, index.get(e.to)!));
    }
    if (low.get(v) === index.get(v)) {
      let w: string;
      do sccOf.set((w = stack.pop()!), sccs);
      while (w !== v);
      sccs++;
    }
  };
  for (const f of g.files) if (!index.has(f)) strong(f);

  const inner = (e: Edge) => sccOf.get(e.from) === sccOf.get(e.to);
  /** the shortest path of edges inside one component from `a` to `b` */
  const shortest = (a: string, b: string): Edge[] => {
    const via = new Map<string, Edge>();
    const queue = [a];
    while (queue.length && !via.has(b)) {
      for (const e of out.get(queue.shift()!)!) {
        if (inner(e) && !via.has(e.to) && e.to !== a) {
          via.set(e.to, e);
          queue.push(e.to);
        }
      }
    }
    const path: Edge[] = [];
    for (let v = b; v !== a; v = via.get(v)!.from) path.unshift(via.get(v)!);
    return path;
  };
  const cycles: Edge[][] = [];
  // (several imports between the same two files: one cycle for them all)
  const covered = new Set<string>();
  for (const f of g.files) {
    for (const e of out.get(f)!) {
      if (!inner(e) || covered.has(`${e.from} ${e.to}`)) continue;
      const cycle = e.to === e.from ? [e] : [e, ...shortest(e.to, e.from)];
      for (const c of cycle) covered.add(`${c.from} ${c.to}`);
      cycles.push(cycle);
    }
  }
  return cycles;
}

export const showEdge = (e: Edge): string =>
  `${e.from}:${e.line} imports ${e.name === '*' ? '' : `${e.typeOnly ? 'type ' : ''}${e.name} from `}'${e.specifier}'`;
