import { Type, type Static } from '@sinclair/typebox';
import { MAX_DURATION_MS } from '../config.js';
import { STATES } from '../sandbox/lifecycle.js';
import { MAX_APT_PACKAGES, MAX_CMD_BYTES as MAX_STEP_CMD_BYTES, MAX_DOCKERFILE_BYTES, MAX_READY_TIMEOUT_MS, MAX_STEPS, MIN_READY_TIMEOUT_MS } from '../templates/spec.js';

/** A sandbox timeout: at least 1 s, at most a year (the server's NULLSPACE_MAX_TIMEOUT_MS is checked after). */
const SandboxTimeoutMs = (description: string) => Type.Integer({ minimum: 1000, maximum: MAX_DURATION_MS, description });

/** The highest process id Linux hands out (PID_MAX_LIMIT). */
export const MAX_PID = 4_194_304;

/**
 * A body for POST routes that take none: absent, or an empty JSON object (`{}`, what the SDKs send).
 * Anything else is refused like any body: unknown fields with validation_failed.
 */
export const EmptyBody = Type.Object({}, { additionalProperties: false });

/** The query string of routes that take none (unknown parameters are refused). */
export const NoQuery = Type.Object({}, { additionalProperties: false });

export const ErrorBody = Type.Object(
  {
    error: Type.Object({
      code: Type.String({ description: 'Stable machine-readable error code' }),
      message: Type.String(),
      details: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
    }),
  },
  { $id: 'Error' },
);

export const Metadata = Type.Record(Type.String({ pattern: '^[A-Za-z0-9_.:/-]{1,128}$' }), Type.String({ maxLength: 1024 }), {
  maxProperties: 64,
  additionalProperties: false,
  description: 'Flat map of string keys (1-128 chars of A-Za-z0-9_.:/-) to string values (<= 1024 chars), at most 64 entries',
});

export const Envs = Type.Record(Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]{0,255}$' }), Type.String({ maxLength: 32768 }), {
  maxProperties: 256,
  additionalProperties: false,
});

export const SandboxId = Type.String({ description: 'sbx_ + 16 lowercase alphanumerics' });
export const SandboxState = Type.Union(STATES.map((s) => Type.Literal(s)));
/** A sandbox's state as shown: its lifecycle state, or `lost` while its host is lost (the fleet). */
export const ShownState = Type.Union([...STATES.map((s) => Type.Literal(s)), Type.Literal('lost')], {
  description: 'Lifecycle state; "lost": it ran on a host that stopped heartbeating (unknown until the host is back)',
});

export const Sandbox = Type.Object(
  {
    sandboxId: SandboxId,
    template: Type.String(),
    snapshotId: Type.Union([Type.String(), Type.Null()], { description: 'The snapshot it was created from' }),
    forkedFrom: Type.Union([Type.String(), Type.Null()], { description: 'The sandbox it was forked from' }),
    state: ShownState,
    metadata: Metadata,
    memoryMiB: Type.Integer(),
    vcpus: Type.Integer(),
    allowInternetAccess: Type.Boolean(),
    timeoutMs: Type.Integer(),
    createdAt: Type.String({ format: 'date-time' }),
    startedAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
    expiresAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()], { description: 'When the sandbox times out (running sandboxes)' }),
    endedAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
    endReason: Type.Union([Type.String(), Type.Null()]),
    errorCode: Type.Union([Type.String(), Type.Null()]),
    lifecycle: Type.Object({
      onTimeout: Type.Union([Type.Literal('kill'), Type.Literal('hibernate')]),
      autoResume: Type.Boolean({ description: 'A request to one of its preview URLs resumes it when hibernated' }),
    }),
    network: Type.Object({
      allowPublicTraffic: Type.Boolean({ description: 'Its preview URLs are served without the traffic token' }),
      trafficAccessToken: Type.String({ description: 'The secret of its preview URLs: header X-Nullspace-Traffic-Token, or the key of signed URLs' }),
      previewDomain: Type.String({ description: 'Preview URLs are <port>-<sandboxId>.<previewDomain>' }),
      previewScheme: Type.Union([Type.Literal('http'), Type.Literal('https')]),
      allowOut: Type.Array(Type.String(), { description: 'Egress allow rules (empty: every destination not denied)' }),
      denyOut: Type.Array(Type.String(), { description: 'Egress deny rules (win over allow rules)' }),
    }),
    volumes: Type.Record(Type.String(), Type.String(), { description: 'Mounted volumes: guest path -> volume name' }),
    pausedAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
    remainingTimeoutMs: Type.Union([Type.Integer(), Type.Null()], { description: 'While paused: the timeout it resumes with' }),
    hostId: Type.String({ description: 'The runtime host it runs on (GET /v1/hosts); "local": the control plane\'s own' }),
  },
  { $id: 'Sandbox' },
);
export type SandboxT = Static<typeof Sandbox>;

export const SnapshotId = Type.String({ description: 'snap_ + 16 lowercase alphanumerics', maxLength: 64 });

function EgressRuleList(description: string) {
  return Type.Array(Type.String({ minLength: 1, maxLength: 260 }), { maxItems: 256, description });
}

export const NetworkRulesBody = Type.Object(
  {
    allowOut: Type.Optional(EgressRuleList('Egress allow rules (absent: none); the whole set is replaced')),
    denyOut: Type.Optional(EgressRuleList('Egress deny rules (absent: none); the whole set is replaced')),
  },
  { additionalProperties: false },
);

export const NetworkRules = Type.Object(
  {
    allowOut: Type.Array(Type.String()),
    denyOut: Type.Array(Type.String()),
    refusedConnections: Type.Integer({ description: 'Connections its egress rules refused over its whole life' }),
  },
  { $id: 'NetworkRules' },
);

export const CreateSandboxBody = Type.Object(
  {
    template: Type.Optional(Type.String({ minLength: 1, maxLength: 63, description: 'Template name; default "base". Not with snapshotId.' })),
    snapshotId: Type.Optional(Type.String({ minLength: 1, maxLength: 64, description: 'Start from this reusable snapshot instead of a template' })),
    metadata: Type.Optional(Metadata),
    envs: Type.Optional(Envs),
    timeoutMs: Type.Optional(SandboxTimeoutMs('Lifetime without activity before the sandbox is killed; default 300000, at most NULLSPACE_MAX_TIMEOUT_MS')),
    allowInternetAccess: Type.Optional(Type.Boolean({ default: true })),
    lifecycle: Type.Optional(
      Type.Object(
        {
          onTimeout: Type.Optional(Type.Union([Type.Literal('kill'), Type.Literal('hibernate')], { description: 'What the timeout does; default kill' })),
          autoResume: Type.Optional(Type.Boolean({ description: 'A request to one of its preview URLs resumes it when hibernated; default false' })),
        },
        { additionalProperties: false },
      ),
    ),
    network: Type.Optional(
      Type.Object(
        {
          allowPublicTraffic: Type.Optional(Type.Boolean({ description: 'Serve its preview URLs without the traffic token; default false' })),
          allowOut: Type.Optional(EgressRuleList('Egress allow rules: IPs, CIDRs, domain names, *.domain names; when not empty, every other destination is refused')),
          denyOut: Type.Optional(EgressRuleList('Egress deny rules: IPs, CIDRs, domain names, *.domain names; a match wins over any allow rule')),
        },
        { additionalProperties: false },
      ),
    ),
    volumes: Type.Optional(
      Type.Record(Type.String({ pattern: '^/.{0,1023}$' }), Type.String({ maxLength: 63 }), {
        maxProperties: 8,
        additionalProperties: false,
        description: 'Shared volumes to mount: absolute guest path -> volume name',
      }),
    ),
    allowMissingVolumes: Type.Optional(Type.Boolean({ description: "From a snapshot: start even if one of its volumes was deleted (an empty placeholder is exported, not mounted)" })),
  },
  { additionalProperties: false },
);

export const ListSandboxesQuery = Type.Object(
  {
    state: Type.Optional(Type.String({ maxLength: 256, description: 'Comma-separated states; default: every live state (not killed/failed)' })),
    metadata: Type.Optional(Type.Union([Type.String(), Type.Array(Type.String())], { description: 'key=value, repeatable; all must match' })),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, default: 100 })),
    nextToken: Type.Optional(Type.String({ maxLength: 512 })),
  },
  { additionalProperties: false },
);

export const SandboxList = Type.Object({
  sandboxes: Type.Array(Sandbox),
  nextToken: Type.Union([Type.String(), Type.Null()]),
});

export const IdParams = Type.Object({ id: Type.String({ maxLength: 64 }) });

export const TimeoutBody = Type.Object({ timeoutMs: SandboxTimeoutMs('From now; at most NULLSPACE_MAX_TIMEOUT_MS') }, { additionalProperties: false });

export const PathQuery = Type.Object({ path: Type.String({ minLength: 1, maxLength: 4096 }) }, { additionalProperties: false });

export const WriteQuery = Type.Object(
  {
    path: Type.String({ minLength: 1, maxLength: 4096 }),
    mode: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: 0o7777,
        'x-mode': true,
        description: 'Permission bits of a new file: decimal digits (420) or octal digits with a leading 0 (0644); default 0644',
      }),
    ),
    append: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);

export const ListQuery = Type.Object(
  { path: Type.String({ minLength: 1, maxLength: 4096 }), depth: Type.Optional(Type.Integer({ minimum: 1, maximum: 32, default: 1 })) },
  { additionalProperties: false },
);

export const RemoveQuery = Type.Object(
  { path: Type.String({ minLength: 1, maxLength: 4096 }), recursive: Type.Optional(Type.Boolean()) },
  { additionalProperties: false },
);

export const Entry = Type.Object(
  {
    name: Type.String(),
    path: Type.String(),
    type: Type.Union([Type.Literal('file'), Type.Literal('dir'), Type.Literal('symlink'), Type.Literal('other')]),
    size: Type.Integer(),
    mode: Type.Integer(),
    mtimeMs: Type.Number(),
    symlinkTarget: Type.Optional(Type.String()),
  },
  { $id: 'Entry' },
);

export const MkdirBody = Type.Object(
  { path: Type.String({ minLength: 1, maxLength: 4096 }), parents: Type.Optional(Type.Boolean()), mode: Type.Optional(Type.Integer({ minimum: 0, maximum: 0o7777 })) },
  { additionalProperties: false },
);

export const RenameBody = Type.Object(
  { from: Type.String({ minLength: 1, maxLength: 4096 }), to: Type.String({ minLength: 1, maxLength: 4096 }), overwrite: Type.Optional(Type.Boolean()) },
  { additionalProperties: false },
);

/** The longest command line: what exec takes as one argument (MAX_ARG_STRLEN, 128 KiB, with its NUL). */
export const MAX_CMD_BYTES = 131071;

export const CommandBody = Type.Object(
  {
    cmd: Type.String({ minLength: 1, maxLength: MAX_CMD_BYTES, description: 'Run with /bin/bash -c (at most 128 KiB: the kernel takes no longer single argument)' }),
    cwd: Type.Optional(Type.String({ minLength: 1, maxLength: 4096 })),
    envs: Type.Optional(Envs),
    user: Type.Optional(Type.String({ pattern: '^[a-z_][a-z0-9_-]{0,31}$' })),
    timeoutMs: Type.Optional(Type.Integer({ minimum: 0, maximum: MAX_DURATION_MS, description: '0 = no limit; default 60000; at most a year' })),
    background: Type.Optional(Type.Boolean()),
    stdin: Type.Optional(Type.Boolean({ description: 'Keep stdin open for POST .../stdin' })),
    input: Type.Optional(Type.String({ maxLength: 1048576, description: 'Text written to stdin before it is closed (unless stdin is true)' })),
    tag: Type.Optional(Type.String({ maxLength: 256 })),
  },
  { additionalProperties: false },
);

export const PidParams = Type.Object({ id: Type.String({ maxLength: 64 }), pid: Type.Integer({ minimum: 1, maximum: MAX_PID }) });

export const ProcessInfo = Type.Object(
  {
    pid: Type.Integer(),
    cmd: Type.String(),
    cwd: Type.String(),
    tag: Type.String(),
    startedAtMs: Type.Number(),
    running: Type.Boolean(),
    exitCode: Type.Union([Type.Integer(), Type.Null()]),
    signal: Type.Union([Type.String(), Type.Null()]),
    timedOut: Type.Boolean(),
  },
  { $id: 'ProcessInfo' },
);

export const StdinBody = Type.Object(
  { data: Type.Optional(Type.String({ maxLength: 1048576 })), close: Type.Optional(Type.Boolean()) },
  { additionalProperties: false },
);

export const SignalBody = Type.Object(
  {
    signal: Type.Optional(
      Type.Union(['SIGKILL', 'SIGTERM', 'SIGINT', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2', 'SIGSTOP', 'SIGCONT'].map((s) => Type.Literal(s))),
    ),
  },
  { additionalProperties: false },
);

export const Template = Type.Object(
  {
    name: Type.String(),
    memoryMiB: Type.Integer(),
    vcpus: Type.Integer(),
    diskSizeMiB: Type.Integer(),
    kernelRelease: Type.String(),
    agentVersion: Type.String(),
    builtAt: Type.String({ format: 'date-time' }),
    compatible: Type.Boolean({ description: 'Whether this host can start sandboxes from it' }),
  },
  { $id: 'Template' },
);

export const NameParams = Type.Object({ name: Type.String({ maxLength: 64 }) });

export const TemplateNameParams = Type.Object({ name: Type.String({ maxLength: 64 }) });
export const TemplateRefParams = Type.Object({ ref: Type.String({ maxLength: 80, description: 'name, or name:version' }) });

export const Snapshot = Type.Object(
  {
    snapshotId: SnapshotId,
    sandboxId: SandboxId,
    kind: Type.Union([Type.Literal('reusable'), Type.Literal('hibernate'), Type.Literal('fork')]),
    template: Type.String(),
    metadata: Metadata,
    createdAt: Type.String({ format: 'date-time' }),
    pauseMs: Type.Union([Type.Integer(), Type.Null()], { description: 'How long the source was paused for the capture' }),
    volumes: Type.Record(Type.String(), Type.String(), { description: 'Volumes it expects (never copied into it): guest path -> volume name' }),
    sizeBytes: Type.Integer({ description: 'Bytes allocated by its layers (shared blocks counted in each)' }),
  },
  { $id: 'Snapshot' },
);

export const CreateSnapshotBody = Type.Object({ metadata: Type.Optional(Metadata) }, { additionalProperties: false });

export const ListSnapshotsQuery = Type.Object(
  {
    sandboxId: Type.Optional(Type.String({ maxLength: 64 })),
    kind: Type.Optional(Type.String({ maxLength: 256, description: 'Comma-separated kinds; default reusable,hibernate' })),
    metadata: Type.Optional(Type.Union([Type.String(), Type.Array(Type.String())], { description: 'key=value, repeatable' })),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, default: 100 })),
    nextToken: Type.Optional(Type.String({ maxLength: 512 })),
  },
  { additionalProperties: false },
);

export const SnapshotParams = Type.Object({ id: Type.String({ maxLength: 64 }) });

const Mismatches = Type.Array(
  Type.Object({ field: Type.String(), snapshot: Type.Union([Type.String(), Type.Number()]), host: Type.Union([Type.String(), Type.Number()]) }),
);
export const Compatibility = Type.Object({
  snapshotId: SnapshotId,
  compatible: Type.Boolean(),
  mismatches: Mismatches,
  requirements: Type.Record(Type.String(), Type.Union([Type.String(), Type.Number()])),
  hosts: Type.Array(Type.Object({ hostId: Type.String(), state: Type.String(), compatible: Type.Boolean(), mismatches: Mismatches }), {
    description: 'Each runtime host (GET /v1/hosts) compared by its fingerprint: where the snapshot could be restored once placement exists',
  }),
});

const GcLayer = Type.Object({ layerId: Type.String(), kind: Type.String(), bytes: Type.Integer() });
export const GcReport = Type.Object({
  dryRun: Type.Boolean(),
  freed: Type.Array(GcLayer),
  freedBytes: Type.Integer(),
  orphanFiles: Type.Array(Type.String()),
  retained: Type.Array(Type.Object({ layerId: Type.String(), kind: Type.String(), bytes: Type.Integer(), heldBy: Type.Array(Type.String()) })),
  retainedBytes: Type.Integer(),
});

export const ForkBody = Type.Object(
  {
    metadata: Type.Optional(Metadata),
    envs: Type.Optional(Envs),
    timeoutMs: Type.Optional(SandboxTimeoutMs("Default: the source's timeout; at most NULLSPACE_MAX_TIMEOUT_MS")),
    count: Type.Optional(
      Type.Integer({ minimum: 1, maximum: 32, description: 'Children from one capture of the source (1-32). Given: the answer is {sandboxes, pauseMs}; absent: the one child itself' }),
    ),
  },
  { additionalProperties: false },
);

// (the fork's answer is one of two shapes, one holding sandboxes: a schema id may appear only once in it)
const { $id: _sandboxId, ...SandboxItem } = Sandbox;

/** The answer of a fork with `count`. */
export const ForkResult = Type.Object({
  sandboxes: Type.Array(SandboxItem as unknown as typeof Sandbox),
  pauseMs: Type.Union([Type.Integer(), Type.Null()], { description: 'How long the source was paused for its one capture' }),
});

export const ResumeBody = Type.Object(
  { snapshotId: Type.Optional(Type.String({ maxLength: 64, description: 'Must be its latest hibernation snapshot; default that one' })) },
  { additionalProperties: false },
);

export const Volume = Type.Object(
  {
    name: Type.String(),
    volumeId: Type.String(),
    createdAt: Type.String({ format: 'date-time' }),
    sizeBytes: Type.Integer(),
    mountedBy: Type.Array(Type.String(), { description: 'Sandboxes (running or paused) that mount it' }),
    hostId: Type.String({ description: 'The runtime host it lives on: sandboxes that mount it are placed there ("local": the control plane\'s own)' }),
  },
  { $id: 'Volume' },
);

export const CreateVolumeBody = Type.Object({ name: Type.String({ maxLength: 300 }) }, { additionalProperties: false });
export const VolumeParams = Type.Object({ name: Type.String({ maxLength: 300 }) });

// Templates built from a spec (docs/api.md, "Templates"). The JSON schema checks the shape and types
// (400 validation_failed); the rules between fields and of values (exactly one start, which fields a
// step of each type has, context and guest paths, names, ranges) are validateSpec's
// (packages/server/src/templates/spec.ts: 400 invalid_build_spec), so that one place holds them for
// every front end. Steps are one object type with a `type` rather than a union: a union's first
// failing branch would be what a client is told.

const RegistryAuth = Type.Object({ username: Type.String({ maxLength: 256 }), password: Type.String({ maxLength: 4096 }) }, { additionalProperties: false });

const BuildFrom = Type.Object(
  {
    template: Type.Optional(Type.String({ maxLength: 80, description: 'A template: "name" or "name:VERSION"' })),
    image: Type.Optional(Type.String({ maxLength: 512, description: 'An image reference: [registry[:port]/]name[:tag][@digest]' })),
    auth: Type.Optional(RegistryAuth),
    archive: Type.Optional(Type.String({ maxLength: 4100, description: 'A docker-save or OCI-layout tar in the build context: "ctx:" + its path' })),
  },
  { additionalProperties: false, description: 'Where the build starts: exactly one of template, image (auth optional), archive' },
);

const BuildStep = Type.Object(
  {
    type: Type.Union(['run', 'copy', 'env', 'workdir', 'user', 'expose', 'apt'].map((t) => Type.Literal(t))),
    cmd: Type.Optional(Type.String({ maxLength: MAX_STEP_CMD_BYTES, description: 'run: the shell command' })),
    src: Type.Optional(Type.String({ maxLength: 4096, description: 'copy: a path inside the build context (globs * ? [...] allowed)' })),
    dest: Type.Optional(Type.String({ maxLength: 4096, description: 'copy: the guest path (a directory when it ends with /)' })),
    chown: Type.Optional(Type.String({ maxLength: 65, description: 'copy: owner, user[:group] or uid[:gid]' })),
    mode: Type.Optional(Type.String({ maxLength: 4, description: 'copy: permission bits in octal, e.g. "0755"' })),
    envs: Type.Optional(Envs),
    path: Type.Optional(Type.String({ maxLength: 4096, description: 'workdir: the directory' })),
    name: Type.Optional(Type.String({ maxLength: 32, description: 'user: the user name' })),
    port: Type.Optional(Type.Integer({ minimum: 1, maximum: 65535, description: 'expose: a TCP port' })),
    packages: Type.Optional(Type.Array(Type.String({ maxLength: 256 }), { minItems: 1, maxItems: MAX_APT_PACKAGES, description: 'apt: Debian packages' })),
  },
  {
    additionalProperties: false,
    description:
      'One step, by type: run {cmd}, copy {src, dest, chown?, mode?}, env {envs}, workdir {path}, user {name}, expose {port}, apt {packages}',
  },
);

const ReadyCheck = Type.Object(
  {
    port: Type.Optional(Type.Integer({ minimum: 1, maximum: 65535, description: 'a TCP port in the guest accepts connections' })),
    cmd: Type.Optional(Type.String({ maxLength: MAX_STEP_CMD_BYTES, description: 'a command exits 0' })),
    file: Type.Optional(Type.String({ maxLength: 4096, description: 'a file exists (absolute path)' })),
  },
  { additionalProperties: false, description: 'Exactly one of port, cmd, file' },
);

const BuildSpec = Type.Object(
  {
    from: Type.Optional(BuildFrom),
    dockerfile: Type.Optional(Type.String({ maxLength: MAX_DOCKERFILE_BYTES, description: "A Dockerfile (text): its FROM is the start, its steps come before the spec's" })),
    steps: Type.Optional(Type.Array(BuildStep, { maxItems: MAX_STEPS })),
    start: Type.Optional(
      Type.Object(
        {
          cmd: Type.String({ minLength: 1, maxLength: MAX_STEP_CMD_BYTES, description: "The process running in the template's memory snapshot" }),
          ready: Type.Optional(ReadyCheck),
          timeoutMs: Type.Optional(Type.Integer({ minimum: MIN_READY_TIMEOUT_MS, maximum: MAX_READY_TIMEOUT_MS, description: 'Limit of the ready check; default 60000' })),
        },
        { additionalProperties: false },
      ),
    ),
  },
  { additionalProperties: false, description: 'from or dockerfile (one of them), then steps, then the start command' },
);

export const TemplateBuildBody = Type.Object(
  {
    name: Type.String({ minLength: 1, maxLength: 64, description: 'The template to build (a new version when it exists): [a-z0-9][a-z0-9-]{0,62}, not "base"' }),
    spec: BuildSpec,
    contextId: Type.Optional(Type.String({ maxLength: 64, description: 'A build context uploaded with POST /v1/templates/contexts' })),
    buildArgs: Type.Optional(Envs),
    cpuCount: Type.Optional(Type.Integer({ minimum: 1, maximum: 64, description: "vCPUs of the template's sandboxes; default 1" })),
    memoryMiB: Type.Optional(Type.Integer({ minimum: 128, maximum: 1048576, description: 'RAM of its sandboxes; default 512' })),
    diskSizeMiB: Type.Optional(Type.Integer({ minimum: 512, maximum: 4194304, description: 'Root disk size; default 4096' })),
    noCache: Type.Optional(Type.Boolean({ description: 'Build every step again' })),
  },
  { additionalProperties: false },
);

export const TemplateView = Type.Object(
  {
    name: Type.String(),
    version: Type.Integer({ minimum: 1 }),
    ref: Type.String({ description: 'name:version' }),
    cpuCount: Type.Integer(),
    memoryMiB: Type.Integer(),
    diskSizeMiB: Type.Integer(),
    createdAt: Type.String({ format: 'date-time' }),
    from: Type.String({ description: 'Where it started: "template base:1", "image registry/app:1", "archive ctx:..."' }),
    startCmd: Type.Union([Type.String(), Type.Null()]),
    ready: Type.Union([ReadyCheck, Type.Null()]),
    envs: Type.Record(Type.String(), Type.String(), { description: "Its sandboxes' default environment" }),
    user: Type.Union([Type.String(), Type.Null()], { description: 'Default user of commands in its sandboxes (null: root)' }),
    workdir: Type.Union([Type.String(), Type.Null()], { description: 'Default cwd of commands in its sandboxes (null: /workspace)' }),
    exposedPorts: Type.Array(Type.Integer()),
    buildMs: Type.Union([Type.Integer(), Type.Null()]),
    steps: Type.Integer({ description: 'How many steps built it' }),
    compatible: Type.Boolean({ description: 'Whether this host can start sandboxes from it' }),
    accel: Type.String(),
    cpuModel: Type.String(),
  },
  { $id: 'TemplateView' },
);

export const TemplateList = Type.Object({ templates: Type.Array(TemplateView) });

export const TemplateContext = Type.Object({
  contextId: Type.String({ description: 'ctx_ + 16 lowercase alphanumerics' }),
  files: Type.Integer(),
  bytes: Type.Integer(),
  sha256: Type.String(),
});

export const EventsQuery = Type.Object(
  {
    sandboxId: Type.Optional(Type.String({ maxLength: 64, description: 'Only the events of this sandbox' })),
    type: Type.Optional(Type.String({ maxLength: 256, description: 'Comma-separated event types; default every type' })),
    after: Type.Optional(Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER, description: 'Replay the events after this id (as the Last-Event-ID header does; the header wins); default: only new events' })),
  },
  { additionalProperties: false },
);

export const WebhookBody = Type.Object(
  {
    url: Type.String({ minLength: 1, maxLength: 2048, description: 'http or https' }),
    events: Type.Optional(Type.Array(Type.String({ maxLength: 32 }), { maxItems: 16, description: 'Event types to deliver; default (or empty) every type' })),
    secret: Type.Optional(Type.String({ minLength: 16, maxLength: 256, description: 'The signing secret; default: one is generated (returned only now)' })),
  },
  { additionalProperties: false },
);

export const Webhook = Type.Object(
  {
    id: Type.String(),
    url: Type.String(),
    events: Type.Array(Type.String(), { description: 'Empty: every type' }),
    createdAt: Type.String({ format: 'date-time' }),
    secret: Type.Optional(Type.String({ description: 'Only in the answer of the create' })),
  },
  { $id: 'Webhook' },
);

export const WebhookDelivery = Type.Object({
  id: Type.Integer(),
  eventId: Type.Integer(),
  eventType: Type.String(),
  status: Type.Union([Type.Literal('pending'), Type.Literal('delivered'), Type.Literal('failed')]),
  attempts: Type.Integer(),
  lastAttemptAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
  nextAttemptAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()], { description: 'Pending: when it is tried next' }),
  responseStatus: Type.Union([Type.Integer(), Type.Null()]),
  error: Type.Union([Type.String(), Type.Null()]),
  createdAt: Type.String({ format: 'date-time' }),
  finishedAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
});

export const DeliveriesQuery = Type.Object(
  {
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, default: 100 })),
    before: Type.Optional(Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER, description: 'Deliveries older than this delivery id (the next page)' })),
  },
  { additionalProperties: false },
);

export const MetricsQuery = Type.Object(
  {
    start: Type.Optional(Type.String({ maxLength: 64, description: 'ISO 8601 time or ms since the epoch; default the oldest sample kept' })),
    end: Type.Optional(Type.String({ maxLength: 64, description: 'ISO 8601 time or ms since the epoch; default now' })),
  },
  { additionalProperties: false },
);

export const MetricsSample = Type.Object({
  timestamp: Type.String({ format: 'date-time' }),
  cpuUsedPct: Type.Number({ description: 'CPU use since the previous sample, % of all its vCPUs (0-100)' }),
  cpuCount: Type.Integer(),
  memUsedBytes: Type.Integer({ description: 'Guest view: MemTotal - MemAvailable' }),
  memTotalBytes: Type.Integer(),
  hostMemBytes: Type.Union([Type.Integer(), Type.Null()], { description: 'Host memory of its VM: the QEMU process PSS' }),
  diskUsedBytes: Type.Integer({ description: 'Guest view of the root file system' }),
  diskTotalBytes: Type.Integer(),
});
