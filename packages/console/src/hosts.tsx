import { useState } from 'preact/hooks';
import { api, bytes, duration, get, type Host } from './api.js';
import { useNow } from './sandboxes.js';
import { Action, confirmAction, ErrorLine, errorText, usePoll } from './ui.js';

const mib = (n: number) => bytes(n * 1024 * 1024);

/**
 * The runtime hosts (`GET /v1/hosts`, polled every 5 s): `local` (the server itself) first, then
 * the hosts that joined; a host is drained with `POST /v1/hosts/{id}/drain`, its row replaced by
 * the answer at once.
 */
export function HostsPage() {
  const [hosts, setHosts] = useState<Host[]>([]);
  const [error, setError] = useState<string | null>(null);
  const [status, setStatus] = useState('');
  const now = useNow();
  const load = async () => {
    setHosts((await get<{ hosts: Host[] }>('/hosts')).hosts);
    setError(null);
  };
  usePoll(() => load().catch((e) => setError(errorText(e))), 5000);
  return (
    <section>
      <h1>Hosts</h1>
      <ErrorLine error={error} />
      <p class="status" role="status" aria-live="polite">
        {status}
      </p>
      <table class="grid hosts">
        <colgroup>
          <col class="c-id" />
          <col class="c-state" />
          <col class="c-accel" />
          <col />
          <col class="c-num" />
          <col class="c-mem" />
          <col class="c-mem" />
          <col class="c-num" />
          <col class="c-num" />
          <col class="c-actions" />
        </colgroup>
        <thead>
          <tr>
            <th scope="col">Host</th>
            <th scope="col">State</th>
            <th scope="col">Accelerator</th>
            <th scope="col">CPU model</th>
            <th scope="col" class="num">
              vCPUs
            </th>
            <th scope="col" class="num">
              Memory available
            </th>
            <th scope="col" class="num">
              Disk free
            </th>
            <th scope="col" class="num">
              Sandboxes
            </th>
            <th scope="col" class="num">
              Heartbeat
            </th>
            <th scope="col">Actions</th>
          </tr>
        </thead>
        <tbody>
          {hosts.map((h) => {
            const local = h.hostId === 'local';
            const f = h.fingerprint;
            return (
              <tr key={h.hostId} data-host={h.hostId}>
                <td class="mono ellipsis" title={h.url ?? 'the server itself'}>
                  {h.hostId}
                  <div class="muted small ellipsis">{h.url ?? 'this server'}</div>
                </td>
                <td class="state">
                  <span class={`badge ${h.state}`}>{h.state}</span>
                  <div class="muted small" title={h.fencedAt ? `fenced ${new Date(h.fencedAt).toLocaleString()}: it was lost and came back` : undefined}>
                    epoch {h.epoch}
                    {h.fencedAt ? ', fenced' : ''}
                  </div>
                </td>
                <td class="mono">{f.accel}</td>
                <td class="mono ellipsis" title={`${f.cpuModel}${f.hostCpu ? ` (host CPU: ${f.hostCpu})` : ''}; QEMU ${f.qemuVersion}, ${f.machine}; kernel ${f.hostKernel}`}>
                  {f.cpuModel}
                  <div class="muted small ellipsis">{f.hostCpu || '\u00a0'}</div>
                </td>
                <td class="num">{h.capacity.vcpus}</td>
                <td class="num">
                  {mib(h.capacity.availableMemoryMiB)} / {mib(h.capacity.memoryMiB)}
                </td>
                <td class="num">
                  {mib(h.capacity.freeDiskMiB)} / {mib(h.capacity.diskMiB)}
                </td>
                <td class="num">{h.counts.sandboxes}</td>
                <td class="num" title={new Date(h.lastHeartbeat).toLocaleString()}>
                  {duration(now - Date.parse(h.lastHeartbeat))} ago
                </td>
                <td>
                  <Action
                    label="Drain"
                    class="danger"
                    title={local ? 'The server itself cannot be drained' : h.state === 'draining' ? 'Already draining' : 'Place no new sandboxes on it (its sandboxes run on)'}
                    disabled={local || h.state === 'draining'}
                    onError={setError}
                    run={async () => {
                      if (!(await confirmAction(`Drain ${h.hostId}? No new sandboxes are placed on it; those it runs go on. The API has no undo.`, 'Drain'))) return;
                      const next = await api<Host>('POST', `/hosts/${encodeURIComponent(h.hostId)}/drain`);
                      setHosts((prev) => prev.map((x) => (x.hostId === next.hostId ? next : x)));
                      setStatus(`${next.hostId} is ${next.state}`);
                    }}
                  />
                </td>
              </tr>
            );
          })}
        </tbody>
      </table>
      <p class="muted small">Sandboxes are placed on the server's own host (local) for now; placing them on joined hosts is not built yet.</p>
    </section>
  );
}
