// Small shared pieces: the confirmation dialog, the error line, the hash router, polling.
import type { ComponentChildren } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { ApiError } from './api.js';

/** An error as the user sees it: the API's code and message as they are. */
export function errorText(err: unknown): string {
  if (err instanceof ApiError) return `${err.code}: ${err.message}`;
  return err instanceof Error ? err.message : String(err);
}

export function ErrorLine({ error }: { error: string | null }) {
  // the line keeps its place when empty: no layout shift when an error comes and goes
  return (
    <p class="error" role="alert" aria-live="assertive">
      {error ?? ''}
    </p>
  );
}

let openConfirm: ((req: ConfirmRequest) => void) | undefined;
interface ConfirmRequest {
  message: string;
  action: string;
  resolve: (ok: boolean) => void;
}

/** Asks before a destructive action (a modal dialog: Enter confirms, Escape cancels). */
export function confirmAction(message: string, action: string): Promise<boolean> {
  return new Promise((resolve) => (openConfirm ? openConfirm({ message, action, resolve }) : resolve(window.confirm(message))));
}

export function ConfirmDialog() {
  const [req, setReq] = useState<ConfirmRequest | null>(null);
  const ref = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    openConfirm = setReq;
    return () => (openConfirm = undefined);
  }, []);
  useEffect(() => {
    if (req && ref.current && !ref.current.open) ref.current.showModal();
  }, [req]);
  const close = (ok: boolean) => {
    ref.current?.close();
    req?.resolve(ok);
    setReq(null);
  };
  return (
    <dialog ref={ref} class="confirm" onCancel={(e) => (e.preventDefault(), close(false))}>
      <form method="dialog" onSubmit={(e) => (e.preventDefault(), close(true))}>
        <p>{req?.message}</p>
        <div class="row end">
          <button type="button" onClick={() => close(false)}>
            Cancel
          </button>
          <button type="submit" class="danger" autoFocus>
            {req?.action ?? 'OK'}
          </button>
        </div>
      </form>
    </dialog>
  );
}

/** The route: the URL's fragment (#/sandboxes/sbx_...), so the server serves only / and /assets. */
export function useRoute(): string[] {
  const parse = () => location.hash.replace(/^#\/?/, '').split('/').filter(Boolean).map(decodeURIComponent);
  const [route, setRoute] = useState(parse);
  useEffect(() => {
    const on = () => setRoute(parse());
    window.addEventListener('hashchange', on);
    return () => window.removeEventListener('hashchange', on);
  }, []);
  return route;
}

/** Calls `fn` now and every `ms` while mounted (and when `deps` change); not while the tab is hidden. */
export function usePoll(fn: () => Promise<void> | void, ms: number, deps: unknown[] = []): void {
  const saved = useRef(fn);
  saved.current = fn;
  useEffect(() => {
    let stop = false;
    let timer: number | undefined;
    const tick = async () => {
      if (!document.hidden) await Promise.resolve(saved.current()).catch(() => {});
      if (!stop) timer = window.setTimeout(tick, ms);
    };
    void tick();
    return () => {
      stop = true;
      clearTimeout(timer);
    };
  }, deps);
}

/** A button that runs an async action, disabled while it runs, its error reported to `onError`. */
export function Action(props: { label: string; run: () => Promise<unknown>; onError: (e: string | null) => void; class?: string; title?: string; disabled?: boolean; children?: ComponentChildren }) {
  const [busy, setBusy] = useState(false);
  return (
    <button
      type="button"
      class={props.class}
      title={props.title}
      disabled={busy || props.disabled}
      aria-busy={busy}
      onClick={async () => {
        setBusy(true);
        props.onError(null);
        try {
          await props.run();
        } catch (err) {
          props.onError(errorText(err));
        } finally {
          setBusy(false);
        }
      }}
    >
      {props.children ?? props.label}
    </button>
  );
}

export function Sparkline({ values, max, label, format }: { values: number[]; max: number; label: string; format: (v: number) => string }) {
  const w = 240;
  const h = 48;
  const n = values.length;
  const pts = values.map((v, i) => `${n < 2 ? w : (i / (n - 1)) * w},${h - (Math.min(v, max) / (max || 1)) * (h - 2) - 1}`).join(' ');
  const last = values[n - 1];
  return (
    <figure class="spark">
      <figcaption>
        {label} <span class="num">{last === undefined ? '—' : format(last)}</span>
      </figcaption>
      <svg width={w} height={h} viewBox={`0 0 ${w} ${h}`} role="img" aria-label={`${label} over time`}>
        <rect x="0" y="0" width={w} height={h} class="spark-bg" />
        {n > 0 && <polyline points={pts} class="spark-line" />}
      </svg>
    </figure>
  );
}
