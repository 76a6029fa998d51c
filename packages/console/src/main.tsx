import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import '@xterm/xterm/css/xterm.css';
import './style.css';
import { get, raw, session, setUnauthorizedHandler } from './api.js';
import { HostsPage } from './hosts.js';
import { LineagePage } from './lineage.js';
import { SandboxPage } from './sandbox.js';
import { SandboxesPage } from './sandboxes.js';
import { TemplatesPage, VolumesPage } from './resources.js';
import { ConfirmDialog, ErrorLine, errorText, useRoute } from './ui.js';

function SignIn({ onDone, notice }: { onDone: () => void; notice: string | null }) {
  const [key, setKey] = useState('');
  const [error, setError] = useState<string | null>(notice);
  const [busy, setBusy] = useState(false);
  return (
    <main class="signin">
      <h1>nullspace</h1>
      <form
        onSubmit={async (e) => {
          e.preventDefault();
          setBusy(true);
          setError(null);
          try {
            // checked before it is kept: a wrong key is the server's own answer (401 unauthorized)
            await raw('GET', '/health', { key });
            session.set(key);
            onDone();
          } catch (err) {
            setError(errorText(err));
          } finally {
            setBusy(false);
          }
        }}
      >
        <label for="apikey">API key</label>
        <input id="apikey" name="apikey" type="password" autoComplete="current-password" autoFocus required value={key} onInput={(e) => setKey(e.currentTarget.value)} />
        <button type="submit" disabled={busy}>
          Sign in
        </button>
        <ErrorLine error={error} />
        <p class="hint">The key is kept in this tab's session storage until the tab closes, and sent only as an Authorization header.</p>
      </form>
    </main>
  );
}

const PAGES: Array<[string, string]> = [
  ['sandboxes', 'Sandboxes'],
  ['snapshots', 'Snapshots'],
  ['templates', 'Templates'],
  ['volumes', 'Volumes'],
  ['hosts', 'Hosts'],
];

function App() {
  const [signedIn, setSignedIn] = useState(session.key() !== null);
  const [notice, setNotice] = useState<string | null>(null);
  const [version, setVersion] = useState('');
  const route = useRoute();
  useEffect(() => {
    setUnauthorizedHandler(() => {
      session.clear();
      setNotice('unauthorized: the API key was refused; sign in again');
      setSignedIn(false);
    });
  }, []);
  useEffect(() => {
    if (signedIn) get<{ version: string }>('/health').then((h) => setVersion(h.version), () => {});
  }, [signedIn]);
  if (!signedIn) return <SignIn notice={notice} onDone={() => (setNotice(null), setSignedIn(true))} />;
  const [page = 'sandboxes', id] = route;
  let body;
  if (page === 'sandboxes' && id) body = <SandboxPage key={id} id={id} />;
  else if (page === 'snapshots') body = <LineagePage />;
  else if (page === 'templates') body = <TemplatesPage />;
  else if (page === 'volumes') body = <VolumesPage />;
  else if (page === 'hosts') body = <HostsPage />;
  else body = <SandboxesPage />;
  return (
    <>
      <header class="top">
        <a class="brand" href="#/sandboxes">
          nullspace
        </a>
        <nav aria-label="Pages">
          {PAGES.map(([p, label]) => (
            <a href={`#/${p}`} aria-current={page === p ? 'page' : undefined}>
              {label}
            </a>
          ))}
        </nav>
        <span class="muted">{version && `server ${version}`}</span>
        <button
          type="button"
          onClick={() => {
            session.clear();
            setSignedIn(false);
          }}
        >
          Sign out
        </button>
      </header>
      <main class="page">{body}</main>
      <ConfirmDialog />
    </>
  );
}

render(<App />, document.getElementById('app')!);
