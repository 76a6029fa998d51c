// A terminal into a sandbox: xterm.js over the PTY API (docs/api.md "Terminals"). Output is the
// NDJSON stream of POST /pty (or GET /pty/{pid}/stream to reattach), keystrokes POST .../input in
// order, the window size POST .../resize. The pid is kept for this tab: a reload or a reconnect
// reattaches to the same shell with what it printed meanwhile (replay).
import { FitAddon } from '@xterm/addon-fit';
import { Terminal as XTerm } from '@xterm/xterm';
import { useEffect, useRef, useState } from 'preact/hooks';
import { api, ApiError, b64, ndjson, raw } from './api.js';
import { ErrorLine, errorText } from './ui.js';

type PtyEvent = { type: 'start'; pid: number } | { type: 'data'; data: string } | { type: 'lost'; bytes: number } | { type: 'end'; exitCode: number; signal: string | null } | { type: 'error'; code: string; message: string };

type State = 'connecting' | 'connected' | 'disconnected' | 'ended';

export function Terminal({ id }: { id: string }) {
  const box = useRef<HTMLDivElement>(null);
  const [state, setState] = useState<State>('connecting');
  const [error, setError] = useState<string | null>(null);
  const connect = useRef<(fresh: boolean) => void>(() => {});

  useEffect(() => {
    const storeKey = `nullspace.pty.${id}`;
    const term = new XTerm({ cursorBlink: true, fontSize: 13, scrollback: 5000, fontFamily: 'ui-monospace, "DejaVu Sans Mono", monospace' });
    const fit = new FitAddon();
    term.loadAddon(fit);
    term.open(box.current!);
    fit.fit();
    let pid: number | undefined = Number(sessionStorage.getItem(storeKey)) || undefined;
    let ctl = new AbortController();
    let disposed = false;

    // keystrokes go out in order, those typed while one is sent together
    let pending = '';
    let sending: Promise<void> | null = null;
    const flush = async () => {
      while (pending && pid !== undefined) {
        const data = pending;
        pending = '';
        try {
          await api('POST', `/sandboxes/${id}/pty/${pid}/input`, { data: b64.encode(new TextEncoder().encode(data)) });
        } catch (err) {
          setError(errorText(err));
        }
      }
      sending = null;
    };
    const input = term.onData((d) => {
      pending += d;
      sending ??= flush();
    });
    let resizeTimer: number | undefined;
    const sendSize = () => {
      clearTimeout(resizeTimer);
      resizeTimer = window.setTimeout(() => {
        if (pid !== undefined) api('POST', `/sandboxes/${id}/pty/${pid}/resize`, { cols: term.cols, rows: term.rows }).catch(() => {});
      }, 150);
    };
    const resized = term.onResize(sendSize);
    const observer = new ResizeObserver(() => fit.fit());
    observer.observe(box.current!);

    const attach = async (fresh: boolean) => {
      ctl.abort();
      ctl = new AbortController();
      const signal = ctl.signal;
      setState('connecting');
      setError(null);
      if (fresh) pid = undefined;
      try {
        let res: Response | undefined;
        if (pid !== undefined) {
          try {
            res = await raw('GET', `/sandboxes/${id}/pty/${pid}/stream?replay=true`, { signal });
            term.reset();
            sendSize();
          } catch (err) {
            if (!(err instanceof ApiError && err.code === 'process_not_found')) throw err;
            pid = undefined;
          }
        }
        if (!res) {
          term.reset();
          res = await raw('POST', `/sandboxes/${id}/pty`, { json: { cols: term.cols, rows: term.rows }, signal });
        }
        setState('connected');
        term.focus();
        for await (const ev of ndjson<PtyEvent>(res)) {
          if (ev.type === 'start') {
            pid = ev.pid;
            sessionStorage.setItem(storeKey, String(pid));
          } else if (ev.type === 'data') term.write(b64.decode(ev.data));
          else if (ev.type === 'lost') term.write(`\r\n\x1b[33m[${ev.bytes} bytes of output were lost]\x1b[0m\r\n`);
          else if (ev.type === 'end') {
            term.write(`\r\n\x1b[2m[exited${ev.signal ? ` on ${ev.signal}` : ` with ${ev.exitCode}`}]\x1b[0m\r\n`);
            sessionStorage.removeItem(storeKey);
            pid = undefined;
            setState('ended');
            return;
          } else if (ev.type === 'error') {
            setError(`${ev.code}: ${ev.message}`);
            break;
          }
        }
        if (!disposed) setState('disconnected');
      } catch (err) {
        if (signal.aborted || disposed) return;
        setError(errorText(err));
        setState('disconnected');
      }
    };
    connect.current = (fresh) => void attach(fresh);
    void attach(false);
    return () => {
      disposed = true;
      ctl.abort();
      observer.disconnect();
      input.dispose();
      resized.dispose();
      clearTimeout(resizeTimer);
      term.dispose();
    };
  }, [id]);

  return (
    <div>
      <div class="row between term-bar">
        <span class={`term-state ${state}`} role="status">
          {state}
        </span>
        <span class="row">
          <button type="button" onClick={() => connect.current(false)} disabled={state === 'connected' || state === 'connecting'}>
            Reconnect
          </button>
          <button type="button" onClick={() => connect.current(true)}>
            New shell
          </button>
        </span>
      </div>
      <div class="term" ref={box} data-state={state} />
      <ErrorLine error={error} />
    </div>
  );
}
