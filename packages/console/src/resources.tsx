import { useEffect, useRef, useState } from 'preact/hooks';
import { api, b64, bytes, get, ndjson, raw, type Template, type Volume } from './api.js';
import { Action, confirmAction, ErrorLine, errorText } from './ui.js';

type BuildEvent =
  | { type: 'step'; step: number; of: number; instruction: string; cached: boolean }
  | { type: 'log'; step: number; stream: string; data: string }
  | { type: 'info'; message: string }
  | { type: 'stepDone'; step: number; ms: number }
  | { type: 'done'; template: Template }
  | { type: 'error'; code: string; message: string; step?: number; exitCode?: number; output?: string };

const EXAMPLE = JSON.stringify({ from: { template: 'base' }, steps: [{ type: 'run', cmd: 'echo built > /etc/motd' }] }, null, 2);

function Build({ onBuilt }: { onBuilt: () => void }) {
  const [name, setName] = useState('');
  const [spec, setSpec] = useState(EXAMPLE);
  const [log, setLog] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const pre = useRef<HTMLPreElement>(null);
  useEffect(() => {
    if (pre.current) pre.current.scrollTop = pre.current.scrollHeight;
  }, [log]);
  return (
    <section class="panel" aria-labelledby="build-h">
      <h2 id="build-h">Build a template</h2>
      <form
        onSubmit={async (e) => {
          e.preventDefault();
          setBusy(true);
          setError(null);
          setLog('');
          try {
            let parsed: unknown;
            try {
              parsed = JSON.parse(spec);
            } catch (err) {
              throw new Error(`the spec is not JSON: ${errorText(err)}`);
            }
            const res = await raw('POST', '/templates', { json: { name, spec: parsed } });
            const dec = new TextDecoder();
            for await (const ev of ndjson<BuildEvent>(res)) {
              const line =
                ev.type === 'step'
                  ? `Step ${ev.step}/${ev.of}: ${ev.instruction}${ev.cached ? ' (cached)' : ''}\n`
                  : ev.type === 'log'
                    ? dec.decode(b64.decode(ev.data), { stream: true })
                    : ev.type === 'info'
                      ? `${ev.message}\n`
                      : ev.type === 'stepDone'
                        ? `Step ${ev.step} done (${(ev.ms / 1000).toFixed(1)} s)\n`
                        : ev.type === 'done'
                          ? `Built ${ev.template.ref}\n`
                          : `${ev.code}: ${ev.message}\n${ev.output ?? ''}`;
              if (ev.type === 'error') setError(`${ev.code}: ${ev.message}`);
              setLog((l) => l + line);
            }
            onBuilt();
          } catch (err) {
            setError(errorText(err));
          } finally {
            setBusy(false);
          }
        }}
      >
        <div class="row">
          <label>
            Name <input required pattern="[a-z0-9][a-z0-9\-]{0,62}" value={name} onInput={(e) => setName(e.currentTarget.value)} />
          </label>
          <button type="submit" disabled={busy} aria-busy={busy}>
            {busy ? 'Building…' : 'Build'}
          </button>
        </div>
        <label class="block">
          Build spec (JSON, docs/api.md "The build spec")
          <textarea class="mono" rows={8} value={spec} onInput={(e) => setSpec(e.currentTarget.value)} spellcheck={false} />
        </label>
      </form>
      <ErrorLine error={error} />
      <pre ref={pre} class="log scroll" tabIndex={0} aria-label="Build log">
        {log}
      </pre>
    </section>
  );
}

export function TemplatesPage() {
  const [templates, setTemplates] = useState<Template[]>([]);
  const [error, setError] = useState<string | null>(null);
  const load = () => get<{ templates: Template[] }>('/templates').then((t) => setTemplates(t.templates), (e) => setError(errorText(e)));
  useEffect(() => void load(), []);
  return (
    <section>
      <h1>Templates</h1>
      <ErrorLine error={error} />
      <table class="grid">
        <thead>
          <tr>
            <th scope="col">Template</th>
            <th scope="col">From</th>
            <th scope="col">Size</th>
            <th scope="col">Start</th>
            <th scope="col">Ports</th>
            <th scope="col">Built</th>
            <th scope="col"></th>
          </tr>
        </thead>
        <tbody>
          {templates.map((t) => (
            <tr key={t.ref} data-template={t.name}>
              <td class="mono">
                {t.ref} {!t.compatible && <span class="badge failed">incompatible</span>}
              </td>
              <td class="mono ellipsis">{t.from}</td>
              <td>
                {t.cpuCount} vCPU, {t.memoryMiB} MiB, disk {t.diskSizeMiB} MiB
              </td>
              <td class="mono ellipsis">{t.startCmd ?? '—'}</td>
              <td>{t.exposedPorts?.join(', ') || '—'}</td>
              <td>
                {new Date(t.createdAt).toLocaleString()}
                {t.buildMs !== null && ` (${(t.buildMs / 1000).toFixed(0)} s, ${t.steps} steps)`}
              </td>
              <td>
                {t.name !== 'base' && (
                  <Action
                    label="Delete"
                    class="danger"
                    onError={setError}
                    run={async () => {
                      if (!(await confirmAction(`Delete template ${t.name} (every version)? Its sandboxes and snapshots keep working.`, 'Delete'))) return;
                      await api('DELETE', `/templates/${t.name}`);
                      await load();
                    }}
                  />
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <Build onBuilt={() => void load()} />
    </section>
  );
}

export function VolumesPage() {
  const [volumes, setVolumes] = useState<Volume[]>([]);
  const [error, setError] = useState<string | null>(null);
  const [name, setName] = useState('');
  const load = () => get<{ volumes: Volume[] }>('/volumes').then((v) => setVolumes(v.volumes), (e) => setError(errorText(e)));
  useEffect(() => void load(), []);
  return (
    <section>
      <h1>Volumes</h1>
      <form
        class="row"
        onSubmit={async (e) => {
          e.preventDefault();
          setError(null);
          try {
            await api('POST', '/volumes', { name });
            setName('');
            await load();
          } catch (err) {
            setError(errorText(err));
          }
        }}
      >
        <label>
          Name <input required value={name} onInput={(e) => setName(e.currentTarget.value)} />
        </label>
        <button type="submit">Create volume</button>
      </form>
      <ErrorLine error={error} />
      <table class="grid">
        <thead>
          <tr>
            <th scope="col">Volume</th>
            <th scope="col" class="num">
              Size
            </th>
            <th scope="col">Created</th>
            <th scope="col">Mounted by</th>
            <th scope="col"></th>
          </tr>
        </thead>
        <tbody>
          {volumes.length === 0 && (
            <tr>
              <td colSpan={5} class="muted">
                No volumes.
              </td>
            </tr>
          )}
          {volumes.map((v) => (
            <tr key={v.name}>
              <td class="mono">{v.name}</td>
              <td class="num">{bytes(v.sizeBytes)}</td>
              <td>{new Date(v.createdAt).toLocaleString()}</td>
              <td class="mono">
                {v.mountedBy.length
                  ? v.mountedBy.map((id) => (
                      <a href={`#/sandboxes/${id}`} class="gap">
                        {id}
                      </a>
                    ))
                  : '—'}
              </td>
              <td>
                <Action
                  label="Delete"
                  class="danger"
                  onError={setError}
                  run={async () => {
                    if (!(await confirmAction(`Delete volume ${v.name} and its data?`, 'Delete'))) return;
                    await api('DELETE', `/volumes/${v.name}`);
                    await load();
                  }}
                />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
