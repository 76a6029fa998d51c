export { Sandbox, SandboxPaginator, previewHost, signedPreviewUrl } from './sandbox/index.js';
export type { EgressRules, NetworkRules } from './sandbox/index.js';
export type { ForkOpts, SandboxInfo, SandboxMetrics, SandboxNetwork, SandboxOpts, SandboxListOpts, SandboxState } from './sandbox/index.js';
export type { EventStreamOpts, SandboxEvent, SandboxEventType } from './events.js';
export { Paginator } from './paginator.js';
export { Snapshot, SnapshotPaginator } from './snapshot.js';
export { Volume } from './volume.js';
export { Template, waitForCommand, waitForFile, waitForPort } from './template.js';
export type { BuildFrom, BuildSpec, BuildStep, ReadyCheck, TemplateBuildOpts, TemplateInfo } from './template.js';
export type { SnapshotKind, SnapshotListOpts, Compatibility } from './snapshot.js';
export { Filesystem } from './sandbox/filesystem.js';
export { WatchHandle } from './sandbox/filesystem.js';
export type { EntryInfo, EntryType, FileData, FilesystemEvent, WriteInfo } from './sandbox/filesystem.js';
export { Pty, PtyHandle } from './sandbox/pty.js';
export type { PtyCreateOpts, PtySize } from './sandbox/pty.js';
export { Commands, CommandHandle } from './sandbox/commands.js';
export type { CommandResult, CommandStartOpts, ProcessInfo } from './sandbox/commands.js';
// ApiClient: the low-level client (auth, timeouts, errors) for routes no class wraps, e.g. operator ones
export { ApiClient, ConnectionConfig, DEFAULT_API_URL } from './connection.js';
export type { ConnectionOpts } from './connection.js';
export {
  SandboxError,
  AuthenticationError,
  InvalidArgumentError,
  NotFoundError,
  SandboxNotFoundError,
  TemplateNotFoundError,
  FileNotFoundError,
  ProcessNotFoundError,
  SnapshotNotFoundError,
  VolumeNotFoundError,
  ConflictError,
  SandboxNotRunningError,
  PermissionDeniedError,
  PayloadTooLargeError,
  RateLimitError,
  ServiceUnavailableError,
  NotEnoughSpaceError,
  TimeoutError,
  TemplateBuildError,
  errorFromResponse,
} from './errors.js';
