import type { Config } from '../config.js';
import type { EventLog } from '../events/log.js';
import type { WebhookService } from '../events/webhooks.js';
import type { FleetRouter } from '../fleet/router.js';
import type { Artifacts } from '../fleet/artifacts.js';
import type { TemplateArtifacts } from '../fleet/templates.js';
import type { FleetService } from '../fleet/service.js';
import type { Gc } from '../gc.js';
import type { HostContext } from '../hostctx.js';
import type { Logger } from '../log.js';
import type { Preview } from '../preview/proxy.js';
import type { SandboxManager } from '../sandbox/manager.js';
import type { TemplateService } from '../templates/service.js';
import type { VolumeService } from '../volumes.js';

/** What the routes are given (by index.ts, through buildApp): the manager and services, never the store. */
export interface AppDeps {
  config: Config;
  apiKey: string;
  sandboxes: SandboxManager;
  volumes: VolumeService;
  templates: TemplateService;
  gc: Gc;
  events: EventLog;
  webhooks: WebhookService;
  host: HostContext;
  log: Logger;
  version: string;
  /** Preview URLs: matched by Host before the routes (app.ts), shown in sandbox views. */
  preview: Preview;
  /** Runtime hosts: joins, heartbeats, `GET /v1/hosts`, drains. */
  fleet: FleetService;
  /** On a control plane with a fleet: placement and routing to joined hosts. */
  router?: FleetRouter | undefined;
  /**
   * On a runtime host (`nullspace host`): every route needs the control plane's credential, whose
   * sha256 (hex) this gives (undefined before the host joined: nothing answers); no E2B surface, no
   * console.
   */
  hostMode?: { keyDigest(): string | undefined; controlUrl?: string } | undefined;
  /** A snapshot's artifacts: exported to, and imported from, other servers. */
  artifacts: Artifacts;
  /** Templates of this server's cache: exported to, and imported from, other servers. */
  templateArtifacts: TemplateArtifacts;
}
