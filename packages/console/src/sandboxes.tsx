import { useEffect, useState } from 'preact/hooks';
import { all, api, bytes, duration, followEvents, get, LIVE, type Sample, type Sandbox, type Snapshot, type Template } from './api.js';
import { Action, confirmAction, ErrorLine, errorText, usePoll } from './ui.js';

/** A 1 s clock for ages and remaining timeouts. */
export function useNow(ms = 1000): number {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), ms);
    return () => clearInterval(t);
  }, [ms]);
  return now;
}

/** The actions on a sandbox, shared by the table and the sandbox page. */
export function SandboxActions({ s, onError, onDone, compact }: { s: Sandbox; onError: (e: string | null) => void; onDone: (message: string) => void; compact?: boolean }) {
  const [extend, setExtend] = useState('300000');
  const id = s.sandboxId;
  const running = s.state === 'running';
  const paused = s.state === 'paused';
  const ended = s.state === 'killed' || s.state === 'failed';
  return (
    <div class="actions" role="group" aria-label={`Actions on ${id}`}>
      {compact && (
        <a class="button" href={`#/sandboxes/${id}`}>
          Open
        </a>
      )}
      <Action
        label="Snapshot"
        disabled={!running}
        onError={onError}
        run={async () => {
          const snap = await api<Snapshot>('POST', `/sandboxes/${id}/snapshots`, {});
          onDone(`snapshot ${snap.snapshotId} of ${id} taken`);
        }}
      />
      <Action
        label="Fork"
        disabled={!running}
        onError={onError}
        run={async () => {
          const child = await api<Sandbox>('POST', `/sandboxes/${id}/fork`, {});
          onDone(`forked ${id}: ${child.sandboxId}`);
        }}
      />
      {paused ? (
        <Action label="Resume" onError={onError} run={async () => (await api('POST', `/sandboxes/${id}/resume`, {}), onDone(`resumed ${id}`))} />
      ) : (
        <Action
          label="Hibernate"
          disabled={!running}
          onError={onError}
          run={async () => {
            if (!(await confirmAction(`Hibernate ${id}? Its VM stops; its memory and disk are kept as a snapshot until it is resumed.`, 'Hibernate'))) return;
            await api('POST', `/sandboxes/${id}/hibernate`, {});
            onDone(`hibernated ${id}`);
          }}
        />
      )}
      <span class="extend">
        <select aria-label={`New timeout of ${id}`} value={extend} disabled={ended} onChange={(e) => setExtend(e.currentTarget.value)}>
          <option value="300000">5 min</option>
          <option value="1800000">30 min</option>
          <option value="3600000">1 h</option>
          <option value="14400000">4 h</option>
        </select>
        <Action
          label="Extend"
          title="The sandbox ends this long from now"
          disabled={!running}
          onError={onError}
          run={async () => (await api('POST', `/sandboxes/${id}/timeout`, { timeoutMs: Number(extend) }), onDone(`${id} now ends in ${duration(Number(extend))}`))}
        />
      </span>
      <Action
        label="Kill"
        class="danger"
        disabled={ended || s.state === 'killing'}
        onError={onError}
        run={async () => {
          if (!(await confirmAction(`Kill ${id}? Its VM and its disk are gone for good (its snapshots stay).`, 'Kill'))) return;
          await api('DELETE', `/sandboxes/${id}`);
          onDone(`killed ${id}`);
        }}
      />
    </div>
  );
}

function CreateForm({ onError, onDone }: { onError: (e: string | null) => void; onDone: (m: string) => void }) {
  const [templates, setTemplates] = useState<Template[]>([]);
  const [snapshots, setSnapshots] = useState<Snapshot[]>([]);
  const [source, setSource] = useState('template:base');
  const [timeout, setTimeoutMs] = useState('300000');
  const [busy, setBusy] = useState(false);
  const load = async () => {
    setTemplates((await get<{ templates: Template[] }>('/templates')).templates);
    setSnapshots(await all<Snapshot>('/snapshots?kind=reusable', 'snapshots'));
  };
  useEffect(() => void load().catch(() => {}), []);
  return (
    <form
      class="create row"
      onSubmit={async (e) => {
        e.preventDefault();
        setBusy(true);
        onError(null);
        try {
          const [kind, ref] = [source.slice(0, source.indexOf(':')), source.slice(source.indexOf(':') + 1)];
          const body = kind === 'template' ? { template: ref, timeoutMs: Number(timeout) } : { snapshotId: ref, timeoutMs: Number(timeout) };
          const s = await api<Sandbox>('POST', '/sandboxes', body);
          onDone(`created ${s.sandboxId}`);
        } catch (err) {
          onError(errorText(err));
        } finally {
          setBusy(false);
        }
      }}
    >
      <label>
        From{' '}
        <select name="source" value={source} onChange={(e) => setSource(e.currentTarget.value)} onFocus={() => void load().catch(() => {})}>
          <optgroup label="Templates">
            {templates.map((t) => (
              <option value={`template:${t.name}`}>{t.ref}</option>
            ))}
          </optgroup>
          <optgroup label="Snapshots">
            {snapshots.map((s) => (
              <option value={`snapshot:${s.snapshotId}`}>
                {s.snapshotId} (of {s.sandboxId})
              </option>
            ))}
          </optgroup>
        </select>
      </label>
      <label>
        Timeout{' '}
        <select name="timeout" value={timeout} onChange={(e) => setTimeoutMs(e.currentTarget.value)}>
          <option value="300000">5 min</option>
          <option value="1800000">30 min</option>
          <option value="3600000">1 h</option>
        </select>
      </label>
      <button type="submit" disabled={busy} aria-busy={busy}>
        {busy ? 'Creating…' : 'Create sandbox'}
      </button>
    </form>
  );
}

/** The last metrics sample of each running sandbox, polled every 5 s. */
function useLatestSamples(ids: string[]): Map<string, Sample> {
  const [samples, setSamples] = useState(new Map<string, Sample>());
  usePoll(
    async () => {
      const start = new Date(Date.now() - 30_000).toISOString();
      const got = await Promise.all(ids.map((id) => get<{ metrics: Sample[] }>(`/sandboxes/${id}/metrics?start=${encodeURIComponent(start)}`).then((m) => [id, m.metrics.at(-1)] as const, () => [id, undefined] as const)));
      const next = new Map<string, Sample>();
      for (const [id, s] of got) if (s) next.set(id, s);
      setSamples(next);
    },
    5000,
    [ids.join(',')],
  );
  return samples;
}

export function SandboxesPage() {
  const [rows, setRows] = useState(new Map<string, Sandbox>());
  const [error, setError] = useState<string | null>(null);
  const [status, setStatus] = useState('');
  const [live, setLive] = useState(false);
  const now = useNow();

  const merge = (list: Sandbox[]) =>
    setRows((prev) => {
      const next = new Map(prev);
      for (const s of list) next.set(s.sandboxId, s);
      return next;
    });
  const refresh = async () => {
    const list = await all<Sandbox>(`/sandboxes?state=${LIVE.join(',')}`, 'sandboxes');
    setRows((prev) => {
      // ended sandboxes seen here stay listed (greyed) until the page is left
      const next = new Map<string, Sandbox>();
      for (const s of list) next.set(s.sandboxId, s);
      for (const [id, s] of prev) if (!next.has(id)) next.set(id, s);
      return next;
    });
  };
  usePoll(() => refresh().catch((e) => setError(errorText(e))), 30_000);
  useEffect(() => {
    const ctl = new AbortController();
    void followEvents(
      '',
      (e) => {
        // each event names a sandbox: its view is read again (and a fork's children)
        const ids = [e.sandboxId, ...(((e.data.children as string[] | undefined) ?? []) as string[])];
        for (const id of ids) get<Sandbox>(`/sandboxes/${id}`).then((s) => merge([s]), () => {});
      },
      setLive,
      ctl.signal,
    );
    return () => ctl.abort();
  }, []);

  const list = [...rows.values()].sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  const running = list.filter((s) => s.state === 'running').map((s) => s.sandboxId);
  const samples = useLatestSamples(running);
  const done = (m: string) => {
    setStatus(m);
    void refresh().catch(() => {});
  };

  return (
    <section>
      <div class="row between">
        <h1>Sandboxes</h1>
        <span class={`live ${live ? 'on' : ''}`} title="The event stream (GET /v1/events)">
          {live ? '● live' : '○ reconnecting'}
        </span>
      </div>
      <CreateForm onError={setError} onDone={done} />
      <ErrorLine error={error} />
      <p class="status" role="status" aria-live="polite">
        {status}
      </p>
      <table class="grid sandboxes">
        <colgroup>
          <col class="c-id" />
          <col class="c-state" />
          <col class="c-template" />
          <col class="c-host" />
          <col class="c-num" />
          <col class="c-num" />
          <col class="c-num" />
          <col class="c-mem" />
          <col class="c-actions" />
        </colgroup>
        <thead>
          <tr>
            <th scope="col">Sandbox</th>
            <th scope="col">State</th>
            <th scope="col">Template</th>
            <th scope="col">Host</th>
            <th scope="col">Age</th>
            <th scope="col">Ends in</th>
            <th scope="col">CPU</th>
            <th scope="col">Memory</th>
            <th scope="col">Actions</th>
          </tr>
        </thead>
        <tbody>
          {list.length === 0 && (
            <tr>
              <td colSpan={9} class="muted">
                No sandboxes yet.
              </td>
            </tr>
          )}
          {list.map((s) => {
            const m = samples.get(s.sandboxId);
            const ended = s.state === 'killed' || s.state === 'failed';
            const endsIn = s.state === 'running' && s.expiresAt ? duration(Date.parse(s.expiresAt) - now) : s.state === 'paused' && s.remainingTimeoutMs !== null ? `${duration(s.remainingTimeoutMs)} (paused)` : '—';
            return (
              <tr key={s.sandboxId} data-id={s.sandboxId} class={ended ? 'ended' : ''}>
                <td class="mono">
                  <a href={`#/sandboxes/${s.sandboxId}`}>{s.sandboxId}</a>
                  {s.forkedFrom && <div class="muted small">fork of {s.forkedFrom}</div>}
                </td>
                <td class="state">
                  <span class={`badge ${s.state}`}>{s.state}</span>
                </td>
                <td class="mono ellipsis" title={s.snapshotId ? `from snapshot ${s.snapshotId}` : s.template}>
                  {s.template}
                </td>
                <td class="mono ellipsis host">
                  <a href="#/hosts" title={`${s.sandboxId} runs on ${s.hostId}`}>
                    {s.hostId}
                  </a>
                </td>
                <td class="num">{duration(now - Date.parse(s.createdAt))}</td>
                <td class="num">{endsIn}</td>
                <td class="num cpu">{m ? `${m.cpuUsedPct.toFixed(0)}%` : '—'}</td>
                <td class="num">{m ? `${bytes(m.memUsedBytes)} / ${bytes(m.memTotalBytes)}` : '—'}</td>
                <td>{!ended && <SandboxActions s={s} onError={setError} onDone={done} compact />}</td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </section>
  );
}
