import type { Services } from '../services/container';
import type { Viewer } from '../services/viewer';
import { Loaders } from './loaders';

/** Per request (HTTP) or per operation (WebSocket). */
export interface Context {
  viewer: Viewer;
  services: Services;
  loaders: Loaders;
}

export function createContext(viewer: Viewer, services: Services): Context {
  return { viewer, services, loaders: new Loaders(services.db) };
}
