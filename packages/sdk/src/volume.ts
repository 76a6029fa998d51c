import { ApiClient, ConnectionConfig, type ConnectionOpts } from './connection.js';
import { falseOn } from './paginator.js';

interface RawVolume {
  name: string;
  volumeId: string;
  createdAt: string;
  sizeBytes: number;
  mountedBy: string[];
}

/**
 * A shared volume: durable storage outside any sandbox, mounted read-write into sandboxes at the
 * paths they choose (`Sandbox.create({ volumes: { '/mnt/data': 'myvol' } })`). Several sandboxes may
 * mount it at once and see each other's writes. Snapshots, forks and hibernation never copy it: a
 * restored sandbox sees the volume's current content.
 */
export class Volume {
  readonly name: string;
  readonly id: string;
  readonly createdAt: Date;
  readonly sizeBytes: number;
  /** Sandboxes (running or paused) that mount it. */
  readonly mountedBy: string[];

  private constructor(raw: RawVolume) {
    this.name = raw.name;
    this.id = raw.volumeId;
    this.createdAt = new Date(raw.createdAt);
    this.sizeBytes = raw.sizeBytes;
    this.mountedBy = raw.mountedBy;
  }

  /** Creates a volume. Names: 1-63 of a-z 0-9 _ - (starting with a letter or digit). */
  static async create(name: string, opts: ConnectionOpts = {}): Promise<Volume> {
    const api = new ApiClient(new ConnectionConfig(opts));
    return new Volume(await api.json<RawVolume>('/v1/volumes', { method: 'POST', json: { name } }));
  }

  static async get(name: string, opts: ConnectionOpts = {}): Promise<Volume> {
    const api = new ApiClient(new ConnectionConfig(opts));
    return new Volume(await api.json<RawVolume>(`/v1/volumes/${encodeURIComponent(name)}`));
  }

  static async list(opts: ConnectionOpts = {}): Promise<Volume[]> {
    const api = new ApiClient(new ConnectionConfig(opts));
    return (await api.json<{ volumes: RawVolume[] }>('/v1/volumes')).volumes.map((v) => new Volume(v));
  }

  /** Deletes a volume and its data; 409 `volume_in_use` while a sandbox mounts it. False when there is none. */
  static async delete(name: string, opts: ConnectionOpts = {}): Promise<boolean> {
    const api = new ApiClient(new ConnectionConfig(opts));
    return falseOn('volume_not_found', () => api.json(`/v1/volumes/${encodeURIComponent(name)}`, { method: 'DELETE' }));
  }
}
