import { useEffect, useRef, useState } from 'preact/hooks';
import { bytes, duration, followEvents, get, raw, type LifecycleEvent, type Sample, type Sandbox } from './api.js';
import { SandboxActions, useNow } from './sandboxes.js';
import { Terminal } from './terminal.js';
import { Action, ErrorLine, errorText, Sparkline, usePoll } from './ui.js';

interface Entry {
  name: string;
  path: string;
  type: 'file' | 'dir' | 'symlink' | 'other';
  size: number;
  mode: number;
  mtimeMs: number;
  symlinkTarget?: string;
}

const VIEW_LIMIT = 256 * 1024;
const q = (path: string) => `path=${encodeURIComponent(path)}`;
const join = (dir: string, name: string) => (dir.endsWith('/') ? dir + name : `${dir}/${name}`);
const parent = (dir: string) => dir.replace(/\/[^/]+\/?$/, '') || '/';

function Files({ id, running }: { id: string; running: boolean }) {
  const [dir, setDir] = useState('/workspace');
  const [typed, setTyped] = useState('/workspace');
  const [entries, setEntries] = useState<Entry[]>([]);
  const [error, setError] = useState<string | null>(null);
  const [status, setStatus] = useState('');
  const [view, setView] = useState<{ path: string; text: string } | null>(null);
  const upload = useRef<HTMLInputElement>(null);

  const list = async (path = dir) => {
    setError(null);
    try {
      const r = await get<{ entries: Entry[] }>(`/sandboxes/${id}/files/list?${q(path)}`);
      setEntries(r.entries);
      setDir(path);
      setTyped(path);
    } catch (err) {
      setError(errorText(err));
    }
  };
  useEffect(() => void (running && list()), [running]);

  const read = async (path: string) => (await raw('GET', `/sandboxes/${id}/files?${q(path)}`)).blob();
  const open = async (e: Entry) => {
    if (e.type === 'dir') return list(e.path);
    setError(null);
    try {
      const blob = await read(e.path);
      const text = await blob.slice(0, VIEW_LIMIT).text();
      setView({ path: e.path, text: blob.size > VIEW_LIMIT ? `${text}\n… (${bytes(blob.size)}: download it for the rest)` : text });
    } catch (err) {
      setError(errorText(err));
    }
  };
  const download = async (e: Entry) => {
    const url = URL.createObjectURL(await read(e.path));
    const a = document.createElement('a');
    a.href = url;
    a.download = e.name;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  };

  return (
    <section class="panel files" aria-labelledby="files-h">
      <h2 id="files-h">Files</h2>
      <form
        class="row"
        onSubmit={(e) => {
          e.preventDefault();
          void list(typed);
        }}
      >
        <button type="button" onClick={() => void list(parent(dir))} disabled={dir === '/'} title="Parent directory">
          ..
        </button>
        <input aria-label="Directory" class="grow mono" value={typed} onInput={(e) => setTyped(e.currentTarget.value)} />
        <button type="submit">List</button>
        <input ref={upload} type="file" multiple aria-label="Files to upload" />
        <Action
          label="Upload"
          onError={setError}
          run={async () => {
            const files = [...(upload.current?.files ?? [])];
            for (const f of files) await raw('PUT', `/sandboxes/${id}/files?${q(join(dir, f.name))}`, { body: f, headers: { 'content-type': 'application/octet-stream' } });
            if (upload.current) upload.current.value = '';
            setStatus(files.length ? `uploaded ${files.map((f) => f.name).join(', ')} to ${dir}` : 'choose files first');
            await list();
          }}
        />
      </form>
      <ErrorLine error={error} />
      <p class="status" role="status">
        {status}
      </p>
      <div class="split">
        <div class="scroll">
          <table class="grid entries">
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col" class="num">
                  Size
                </th>
                <th scope="col">Modified</th>
                <th scope="col"></th>
              </tr>
            </thead>
            <tbody>
              {entries.map((e) => (
                <tr key={e.path} data-path={e.path}>
                  <td class="mono ellipsis">
                    <button type="button" class="link" onClick={() => void open(e)}>
                      {e.type === 'dir' ? `${e.name}/` : e.name}
                    </button>
                    {e.symlinkTarget && <span class="muted"> → {e.symlinkTarget}</span>}
                  </td>
                  <td class="num">{e.type === 'dir' ? '' : bytes(e.size)}</td>
                  <td class="num">{new Date(e.mtimeMs).toLocaleString()}</td>
                  <td>
                    {e.type === 'file' && (
                      <Action label="Download" onError={setError} run={() => download(e)} />
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
        <div class="viewer">
          <div class="muted mono small">{view?.path ?? 'Choose a file to view it'}</div>
          <pre class="scroll" tabIndex={0} aria-label="File content">
            {view?.text ?? ''}
          </pre>
        </div>
      </div>
    </section>
  );
}

function Metrics({ id, running }: { id: string; running: boolean }) {
  const [samples, setSamples] = useState<Sample[]>([]);
  usePoll(
    async () => {
      if (running) setSamples((await get<{ metrics: Sample[] }>(`/sandboxes/${id}/metrics`)).metrics.slice(-120));
    },
    5000,
    [id, running],
  );
  const last = samples.at(-1);
  return (
    <section class="panel" aria-labelledby="metrics-h">
      <h2 id="metrics-h">Metrics</h2>
      <div class="row wrap">
        <Sparkline label="CPU" values={samples.map((s) => s.cpuUsedPct)} max={100} format={(v) => `${v.toFixed(0)}%`} />
        <Sparkline label="Guest memory" values={samples.map((s) => s.memUsedBytes)} max={last?.memTotalBytes ?? 1} format={bytes} />
        <Sparkline label="Host memory (PSS)" values={samples.map((s) => s.hostMemBytes)} max={Math.max(1, ...samples.map((s) => s.hostMemBytes))} format={bytes} />
        <Sparkline label="Disk" values={samples.map((s) => s.diskUsedBytes)} max={last?.diskTotalBytes ?? 1} format={bytes} />
      </div>
      <p class="muted small">{running ? `${samples.length} samples (one every few seconds while it runs)` : 'No samples: the sandbox is not running.'}</p>
    </section>
  );
}

async function signedUrl(s: Sandbox, port: number, expiresInS: number): Promise<string | null> {
  if (!crypto.subtle) return null; // (WebCrypto needs a secure context: https, or localhost)
  const expires = Math.floor(Date.now() / 1000) + expiresInS;
  const key = await crypto.subtle.importKey('raw', new TextEncoder().encode(s.network.trafficAccessToken), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  const mac = new Uint8Array(await crypto.subtle.sign('HMAC', key, new TextEncoder().encode(`${s.sandboxId}:${port}:${expires}`)));
  const sig = btoa(String.fromCharCode(...mac)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  return `${s.network.previewScheme}://${port}-${s.sandboxId}.${s.network.previewDomain}/?ns_token=${sig}&expires=${expires}`;
}

function Preview({ s }: { s: Sandbox }) {
  const [port, setPort] = useState('8000');
  const [signed, setSigned] = useState<string | null>(null);
  const p = Number(port);
  const valid = Number.isInteger(p) && p >= 1 && p <= 65535;
  const url = `${s.network.previewScheme}://${port}-${s.sandboxId}.${s.network.previewDomain}/`;
  useEffect(() => {
    setSigned(null);
    if (valid) void signedUrl(s, p, 3600).then(setSigned, () => setSigned(null));
  }, [port, s.sandboxId]);
  return (
    <section class="panel" aria-labelledby="preview-h">
      <h2 id="preview-h">Preview URLs</h2>
      <label>
        Port <input class="port" type="number" min={1} max={65535} value={port} onInput={(e) => setPort(e.currentTarget.value)} />
      </label>
      <dl class="kv">
        <dt>URL</dt>
        <dd class="mono ellipsis">{valid ? url : '—'}</dd>
        <dt>Access</dt>
        <dd>{s.network.allowPublicTraffic ? 'public (no token needed)' : 'header X-Nullspace-Traffic-Token, or a signed URL'}</dd>
        <dt>Signed (1 h)</dt>
        <dd class="mono ellipsis">
          {signed ? (
            <a href={signed} target="_blank" rel="noopener noreferrer">
              open
            </a>
          ) : (
            'needs https or localhost (WebCrypto)'
          )}
        </dd>
      </dl>
    </section>
  );
}

function Events({ id }: { id: string }) {
  const [events, setEvents] = useState<LifecycleEvent[]>([]);
  useEffect(() => {
    const ctl = new AbortController();
    void followEvents(`?sandboxId=${encodeURIComponent(id)}&after=0`, (e) => setEvents((prev) => (prev.some((p) => p.id === e.id) ? prev : [...prev, e].slice(-200))), () => {}, ctl.signal);
    return () => ctl.abort();
  }, [id]);
  return (
    <section class="panel" aria-labelledby="events-h">
      <h2 id="events-h">Events</h2>
      <ol class="events scroll" tabIndex={0} aria-label="Lifecycle events">
        {events.map((e) => (
          <li key={e.id} data-type={e.type}>
            <time class="mono small">{new Date(e.at).toLocaleTimeString()}</time> <span class={`badge ${e.type}`}>{e.type}</span>{' '}
            <span class="mono small">{Object.keys(e.data).length ? JSON.stringify(e.data) : ''}</span>
          </li>
        ))}
      </ol>
    </section>
  );
}

export function SandboxPage({ id }: { id: string }) {
  const [s, setS] = useState<Sandbox | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [status, setStatus] = useState('');
  const now = useNow();
  const load = () => get<Sandbox>(`/sandboxes/${id}`).then(setS, (e) => setError(errorText(e)));
  useEffect(() => {
    void load();
    const ctl = new AbortController();
    void followEvents(`?sandboxId=${encodeURIComponent(id)}`, () => void load(), () => {}, ctl.signal);
    return () => ctl.abort();
  }, [id]);
  const running = s?.state === 'running';
  return (
    <section>
      <p>
        <a href="#/sandboxes">← Sandboxes</a>
      </p>
      <div class="row between">
        <h1 class="mono">{id}</h1>
        {s && <span class={`badge big ${s.state}`}>{s.state}</span>}
      </div>
      {s && (
        <>
          <dl class="kv wide">
            <dt>Template</dt>
            <dd class="mono">{s.template}</dd>
            <dt>From</dt>
            <dd class="mono">{s.forkedFrom ? `fork of ${s.forkedFrom}` : s.snapshotId ? `snapshot ${s.snapshotId}` : 'template'}</dd>
            <dt>Size</dt>
            <dd>
              {s.vcpus} vCPU, {s.memoryMiB} MiB
            </dd>
            <dt>Age</dt>
            <dd>{duration(now - Date.parse(s.createdAt))}</dd>
            <dt>Ends in</dt>
            <dd>{s.state === 'running' && s.expiresAt ? duration(Date.parse(s.expiresAt) - now) : s.endReason ?? '—'}</dd>
            <dt>Host</dt>
            <dd class="mono">
              <a href="#/hosts">{s.hostId}</a>
            </dd>
            <dt>Volumes</dt>
            <dd class="mono">{Object.entries(s.volumes).map(([p, v]) => `${v} at ${p}`).join(', ') || 'none'}</dd>
          </dl>
          <SandboxActions s={s} onError={setError} onDone={(m) => (setStatus(m), void load())} />
        </>
      )}
      <ErrorLine error={error} />
      <p class="status" role="status">
        {status}
      </p>
      <section class="panel" aria-labelledby="term-h">
        <h2 id="term-h">Terminal</h2>
        {running ? <Terminal id={id} /> : <div class="term-placeholder muted">The terminal needs a running sandbox.</div>}
      </section>
      <Files id={id} running={running} />
      <div class="cols">
        {s && <Preview s={s} />}
        <Metrics id={id} running={running} />
      </div>
      <Events id={id} />
    </section>
  );
}
