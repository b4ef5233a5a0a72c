import type { Logger } from 'pino';
import type { DataSource } from 'typeorm';
import type { Config } from '../config';
import type { JobEvents } from '../jobs/events';
import type { Queue } from '../jobs/queue';
import type { Viewer } from '../services/viewer';
import type { ObjectStore } from '../storage/object-store';

/** The long-lived parts every request uses, built once by main.ts. */
export interface Services {
  config: Config;
  log: Logger;
  db: DataSource;
  store: ObjectStore;
  queue: Queue;
  /** Job changes from every process, for this process's subscribers. */
  events: JobEvents;
}

/** Per request (HTTP) or per connection (WebSocket). */
export interface Context {
  viewer: Viewer;
  services: Services;
}
