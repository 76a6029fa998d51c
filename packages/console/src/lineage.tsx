// The snapshot lineage as a graph: template -> sandboxes -> snapshots -> the sandboxes started from
// them, hibernation chains (each hibernation of a sandbox rests on the one it was resumed from) and
// forks (source -> children, dashed: a fork's capture is internal and gone once the children run); with what holds each artifact and what a gc would
// free (GET /v1/gc, a dry run). Built from the public lists: GET /sandboxes (every state),
// GET /snapshots (every kind), GET /gc.
import { useEffect, useState } from 'preact/hooks';
import { ALL_STATES, all, api, bytes, get, type GcReport, type Sandbox, type Snapshot } from './api.js';
import { Action, confirmAction, ErrorLine, errorText } from './ui.js';

interface GNode {
  key: string;
  kind: 'template' | 'sandbox' | 'snapshot';
  label: string;
  sub: string;
  cls: string;
  children: GNode[];
  parent?: GNode;
  edge?: string;
  sandbox?: Sandbox;
  snapshot?: Snapshot;
  x: number;
  y: number;
}

const NODE_W = 176;
const NODE_H = 38;
const COL = 224;
const ROW = 48;

const ENDED = ['killed', 'failed'];

export function buildGraph(sandboxes: Sandbox[], snapshots: Snapshot[], showEnded: boolean): GNode[] {
  const nodes = new Map<string, GNode>();
  const node = (key: string, n: Omit<GNode, 'key' | 'children' | 'x' | 'y'>): GNode => {
    const made = { key, children: [], x: 0, y: 0, ...n };
    nodes.set(key, made);
    return made;
  };
  const templates = new Map<string, GNode>();
  const template = (name: string) => templates.get(name) ?? (templates.set(name, node(`t:${name}`, { kind: 'template', label: name, sub: 'template', cls: 'template' })), templates.get(name)!);
  for (const s of sandboxes) node(`s:${s.sandboxId}`, { kind: 'sandbox', label: s.sandboxId, sub: s.state, cls: `sandbox ${s.state}`, sandbox: s });
  for (const p of snapshots) node(`p:${p.snapshotId}`, { kind: 'snapshot', label: p.snapshotId, sub: `${p.kind} · ${bytes(p.sizeBytes)}`, cls: `snapshot ${p.kind}`, snapshot: p });
  const link = (parent: GNode, child: GNode, edge: string) => {
    child.parent = parent;
    child.edge = edge;
    parent.children.push(child);
  };
  // hibernations of one sandbox in order: each rests on the one before (the resume it came from)
  const lastHibernation = new Map<string, GNode>();
  for (const p of [...snapshots].sort((a, b) => a.createdAt.localeCompare(b.createdAt))) {
    const me = nodes.get(`p:${p.snapshotId}`)!;
    const owner = nodes.get(`s:${p.sandboxId}`);
    if (p.kind === 'hibernate') {
      const prev = lastHibernation.get(p.sandboxId);
      if (prev) link(prev, me, 'resumed, hibernated');
      else link(owner ?? template(p.template), me, 'hibernated');
      lastHibernation.set(p.sandboxId, me);
    } else link(owner ?? template(p.template), me, p.kind === 'fork' ? 'fork capture' : 'snapshot');
  }
  for (const s of sandboxes) {
    const me = nodes.get(`s:${s.sandboxId}`)!;
    const snap = s.snapshotId ? nodes.get(`p:${s.snapshotId}`) : undefined;
    if (snap) link(snap, me, s.forkedFrom ? 'fork' : 'started from');
    else if (s.forkedFrom && nodes.has(`s:${s.forkedFrom}`)) link(nodes.get(`s:${s.forkedFrom}`)!, me, 'fork');
    else link(template(s.template), me, 'created');
  }
  // ended sandboxes with nothing below them are hidden unless asked for
  const keep = (n: GNode): boolean => {
    n.children = n.children.filter(keep);
    return showEnded || n.kind !== 'sandbox' || !ENDED.includes(n.sandbox!.state) || n.children.length > 0;
  };
  const roots = [...templates.values()].filter(keep).filter((t) => t.children.length > 0 || showEnded);
  // a tidy tree: columns by depth, leaves one row each, a parent at the middle of its children
  let row = 0;
  const place = (n: GNode, depth: number) => {
    n.x = depth * COL + 8;
    n.children.sort((a, b) => (a.sandbox?.createdAt ?? a.snapshot?.createdAt ?? '').localeCompare(b.sandbox?.createdAt ?? b.snapshot?.createdAt ?? ''));
    if (!n.children.length) n.y = row++ * ROW + 8;
    else {
      for (const c of n.children) place(c, depth + 1);
      n.y = (n.children[0]!.y + n.children.at(-1)!.y) / 2;
    }
  };
  for (const r of roots) {
    place(r, 0);
    row += 0.4;
  }
  return roots;
}

function flatten(roots: GNode[]): GNode[] {
  const out: GNode[] = [];
  const walk = (n: GNode) => (out.push(n), n.children.forEach(walk));
  roots.forEach(walk);
  return out;
}

/** The layers a holder keeps (gc's report), with the other holders of each. */
function held(gc: GcReport | null, holder: string) {
  return (gc?.retained ?? []).filter((l) => l.heldBy.some((h) => h.startsWith(`${holder} (`)));
}

function Details({ n, gc, onError, reload }: { n: GNode; gc: GcReport | null; onError: (e: string | null) => void; reload: () => Promise<void> }) {
  const holder = n.kind === 'snapshot' ? `snapshot ${n.snapshot!.snapshotId}` : n.kind === 'sandbox' ? `sandbox ${n.sandbox!.sandboxId}` : null;
  const layers = holder ? held(gc, holder) : [];
  const p = n.snapshot;
  return (
    <aside class="panel details" aria-live="polite" aria-label="Selected artifact">
      <h2 class="mono">{n.label}</h2>
      <p class="muted">
        {n.kind}
        {n.edge && n.parent ? ` · ${n.edge} from ${n.parent.label}` : ''}
      </p>
      {n.sandbox && (
        <p>
          <a href={`#/sandboxes/${n.sandbox.sandboxId}`}>Open the sandbox</a> ({n.sandbox.state})
        </p>
      )}
      {p && (
        <dl class="kv">
          <dt>Taken</dt>
          <dd>{new Date(p.createdAt).toLocaleString()}</dd>
          <dt>Size</dt>
          <dd>{bytes(p.sizeBytes)}</dd>
          <dt>Pause</dt>
          <dd>{p.pauseMs} ms</dd>
          <dt>Volumes</dt>
          <dd class="mono">{Object.entries(p.volumes).map(([path, v]) => `${v} at ${path}`).join(', ') || 'none'}</dd>
        </dl>
      )}
      {p?.kind === 'reusable' && (
        <div class="row">
          <Action label="Start a sandbox from it" onError={onError} run={async () => (await api('POST', '/sandboxes', { snapshotId: p.snapshotId }), await reload())} />
          <Action
            label="Delete"
            class="danger"
            onError={onError}
            run={async () => {
              if (!(await confirmAction(`Delete snapshot ${p.snapshotId}? Its storage is freed once nothing uses it.`, 'Delete'))) return;
              await api('DELETE', `/snapshots/${p.snapshotId}`);
              await reload();
            }}
          />
        </div>
      )}
      {p?.kind === 'hibernate' && n.children.length === 0 && n.parent && (
        <Action label="Resume its sandbox" onError={onError} run={async () => (await api('POST', `/snapshots/${p.snapshotId}/resume`, {}), await reload())} />
      )}
      {holder && (
        <>
          <h3>Layers it holds</h3>
          {layers.length === 0 ? (
            <p class="muted">None (an ended sandbox, or its layers are held by its snapshot).</p>
          ) : (
            <table class="grid small">
              <thead>
                <tr>
                  <th scope="col">Layer</th>
                  <th scope="col">Kind</th>
                  <th scope="col" class="num">
                    Size
                  </th>
                  <th scope="col">Also held by</th>
                </tr>
              </thead>
              <tbody>
                {layers.map((l) => (
                  <tr>
                    <td class="mono ellipsis">{l.layerId}</td>
                    <td>{l.kind}</td>
                    <td class="num">{bytes(l.bytes)}</td>
                    <td class="mono small">{l.heldBy.filter((h) => !h.startsWith(`${holder} (`)).join(', ') || '—'}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </>
      )}
    </aside>
  );
}

export function LineagePage() {
  const [data, setData] = useState<{ sandboxes: Sandbox[]; snapshots: Snapshot[]; gc: GcReport | null } | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [showEnded, setShowEnded] = useState(false);
  const [selected, setSelected] = useState<string | null>(null);
  const load = async () => {
    try {
      const [sandboxes, snapshots, gc] = await Promise.all([
        all<Sandbox>(`/sandboxes?state=${ALL_STATES.join(',')}`, 'sandboxes'),
        all<Snapshot>('/snapshots?kind=reusable,hibernate,fork', 'snapshots'),
        get<GcReport>('/gc').catch(() => null),
      ]);
      setData({ sandboxes, snapshots, gc });
    } catch (err) {
      setError(errorText(err));
    }
  };
  useEffect(() => void load(), []);
  const roots = data ? buildGraph(data.sandboxes, data.snapshots, showEnded) : [];
  const nodes = flatten(roots);
  const width = Math.max(400, ...nodes.map((n) => n.x + NODE_W + 16));
  const height = Math.max(120, ...nodes.map((n) => n.y + NODE_H + 16));
  const sel = nodes.find((n) => n.key === selected);
  const gc = data?.gc ?? null;
  return (
    <section>
      <div class="row between">
        <h1>Snapshots and lineage</h1>
        <span class="row">
          <label>
            <input type="checkbox" checked={showEnded} onChange={(e) => setShowEnded(e.currentTarget.checked)} /> Show ended sandboxes
          </label>
          <button type="button" onClick={() => void load()}>
            Refresh
          </button>
        </span>
      </div>
      <ErrorLine error={error} />
      {gc && (
        <p class="gc" data-testid="gc">
          A garbage collection now would free <strong>{bytes(gc.freedBytes)}</strong> ({gc.freed.length} layers, {gc.orphanFiles.length} orphan files); {bytes(gc.retainedBytes)} in {gc.retained.length} layers are held.{' '}
          <Action
            label="Run gc"
            onError={setError}
            run={async () => {
              if (!(await confirmAction(`Run the garbage collector now? It frees ${bytes(gc.freedBytes)} that nothing uses.`, 'Run gc'))) return;
              await api('POST', '/gc', {});
              await load();
            }}
          />
        </p>
      )}
      <ul class="legend row">
        <li>
          <span class="swatch template" /> template
        </li>
        <li>
          <span class="swatch sandbox" /> sandbox
        </li>
        <li>
          <span class="swatch reusable" /> reusable snapshot
        </li>
        <li>
          <span class="swatch hibernate" /> hibernation
        </li>
        <li>
          <span class="swatch forkedge" /> fork
        </li>
      </ul>
      <div class="lineage">
        <div class="graph scroll">
          {data && nodes.length === 0 && <p class="muted">Nothing yet: create a sandbox.</p>}
          <svg width={width} height={height} role="tree" aria-label="Lineage">
            {nodes
              .filter((n) => n.parent)
              .map((n) => {
                const p = n.parent!;
                const x1 = p.x + NODE_W;
                const y1 = p.y + NODE_H / 2;
                const x2 = n.x;
                const y2 = n.y + NODE_H / 2;
                const mx = (x1 + x2) / 2;
                return (
                  <path class={`edge ${n.edge?.startsWith('fork') ? 'fork' : ''}`} d={`M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`}>
                    <title>{n.edge}</title>
                  </path>
                );
              })}
            {nodes.map((n) => (
              <g
                class={`node ${n.cls} ${selected === n.key ? 'selected' : ''}`}
                data-node={n.key}
                transform={`translate(${n.x},${n.y})`}
                // (an SVG element's attribute is case-sensitive: tabindex, not tabIndex)
                {...{ tabindex: 0 }}
                role="treeitem"
                aria-selected={selected === n.key}
                aria-label={`${n.kind} ${n.label}, ${n.sub}`}
                onClick={() => setSelected(n.key)}
                onKeyDown={(e) => {
                  if (e.key === 'Enter' || e.key === ' ') {
                    e.preventDefault();
                    setSelected(n.key);
                  }
                }}
              >
                <rect width={NODE_W} height={NODE_H} rx={6} />
                <text x={8} y={15} class="mono">
                  {n.label}
                </text>
                <text x={8} y={30} class="sub">
                  {n.sub}
                </text>
              </g>
            ))}
          </svg>
        </div>
        {sel ? <Details n={sel} gc={gc} onError={setError} reload={load} /> : <aside class="panel details muted">Select a node (click, or Tab and Enter) to see what it holds.</aside>}
      </div>
    </section>
  );
}
